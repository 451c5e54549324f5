"""Augmented SBERT (Thakur et al., 2021) behind `neuralir augment`: silver pairs labelled by a cross-encoder.

  neuralir augment --data sts:GOLD.tsv --sampler bm25|MODEL --cross-encoder CE --top-k 3 --output SILVER.tsv
  neuralir train ... --config.data.train=sts:GOLD.tsv,sts:SILVER.tsv

Sample: every distinct sentence of the gold pairs is a query against all of them; its top_k nearest other
sentences (BM25 through bm25s as `neuralir mine` scores, or a bi-encoder's exact cosine search) give
unlabelled pairs. A pair is kept once in whichever order it is first met; a pair the gold data already
labels (either order) is dropped, and counted in the log.
Label: the cross-encoder's `predict` (its activation: sigmoid -> [0, 1]) times 5, the STS-B scale, so a
cross-encoder trained with `ce_pointwise` on score / 5 gives back its own reading of the score.
Write: an STS-B TSV (`sentence1<TAB>sentence2<TAB>score`; gzipped when the name ends in .gz) that an
`sts:` source reads.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
from typing import Any, Sequence

import numpy as np

from neuralir_jax import mine, readers, search as search_lib

BM25 = "bm25"


def distinct_sentences(rows: Sequence[dict]) -> list[str]:
  """The sentences of STS rows, each once, in order of first appearance."""
  return list(dict.fromkeys(t for r in rows for t in (r["sentence1"], r["sentence2"])))


def neighbours(sentences: Sequence[str], sampler: Any, k: int, batch_size: int = 128) -> np.ndarray:
  """[n, k + 1] indices of each sentence's nearest sentences (itself usually first; -1 = none).

  sampler: "bm25" or an `Encoder` (its document side embeds; cosine search).
  """
  if sampler == BM25:
    ids = [str(i) for i in range(len(sentences))]
    data = mine.MiningData(ids, list(sentences), ids, list(sentences), [[i] for i in range(len(sentences))],
                           name="augment sentences")
    return mine.bm25_candidates(data, k + 1).idx_QxK
  emb = np.asarray(sampler.encode_document(list(sentences), batch_size=batch_size), np.float32)
  emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  _, idx = search_lib.exact_search(emb, emb, min(k + 1, len(sentences)))
  return np.asarray(idx)


def sample_pairs(rows: Sequence[dict], sampler: Any, k: int, batch_size: int = 128) -> list[tuple[str, str]]:
  """Unlabelled (sentence1, sentence2) pairs: each distinct gold sentence with its top k other sentences,
  minus the gold pairs and repeats (either order)."""
  if k < 1:
    raise ValueError(f"--top-k {k}: pass 1 or more (neighbours sampled per sentence).")
  sentences = distinct_sentences(rows)
  gold = {frozenset((r["sentence1"], r["sentence2"])) for r in rows}
  idx = neighbours(sentences, sampler, k, batch_size)
  seen, pairs, dropped_gold = set(), [], 0
  for i, row in enumerate(idx):
    taken = 0
    for j in row:
      if j < 0 or j == i or taken == k:
        continue
      taken += 1
      a, b = sentences[i], sentences[int(j)]
      key = frozenset((a, b))
      if key in gold:
        dropped_gold += 1
      elif key not in seen:
        seen.add(key)
        pairs.append((a, b))
  logging.info("augment: %d distinct sentences -> %d silver pairs (top %d each by %s); dropped %d gold pairs, "
               "repeats merged", len(sentences), len(pairs), k, sampler if sampler == BM25 else "the bi-encoder",
               dropped_gold)
  return pairs


def check_labeller(cross_encoder: Any) -> None:
  """A labeller gives one sigmoid score in [0, 1] per pair."""
  if cross_encoder.config.num_labels != 1 or cross_encoder.config.activation != "sigmoid":
    raise ValueError(f"--cross-encoder: a {cross_encoder.config.num_labels}-label model with activation "
                     f"{cross_encoder.config.activation!r}; silver STS labels need one sigmoid score in [0, 1] "
                     "(a cross-encoder trained with objectives.ce_pointwise).")


def label(pairs: Sequence[tuple[str, str]], cross_encoder: Any, batch_size: int = 32) -> np.ndarray:
  """The cross-encoder's score of each pair on the STS scale: predict (in [0, 1]) x 5."""
  check_labeller(cross_encoder)
  scores = np.asarray(cross_encoder.predict(list(pairs), batch_size=batch_size), np.float64)
  return np.clip(scores, 0.0, 1.0) * readers.STS_MAX_SCORE


def write_sts(path: str, pairs: Sequence[tuple[str, str]], scores: np.ndarray) -> None:
  """An STS-B-style TSV: a sentence1 / sentence2 / score header, one pair per line (gzipped for *.gz)."""
  for a, b in pairs:
    for text in (a, b):
      if "\t" in text or "\n" in text or "\r" in text:
        raise ValueError(f"{path}: the sentence {text[:60]!r} holds a tab or line break; a TSV cannot keep it.")
  tmp = f"{path}.tmp"
  with (gzip.open if path.endswith(".gz") else open)(tmp, "wt", encoding="utf-8") as f:
    f.write("sentence1\tsentence2\tscore\n")
    f.writelines(f"{a}\t{b}\t{s:.4f}\n" for (a, b), s in zip(pairs, scores))
  os.replace(tmp, path)


def run_from_cli(args, load_encoder, load_cross_encoder) -> int:
  """`neuralir augment`: checks the inputs before any model loads; returns the number of pairs written."""
  from neuralir_jax import data
  if os.path.exists(args.output):
    raise FileExistsError(f"--output {args.output}: already exists; pass a new path (augment never overwrites).")
  if args.top_k < 1:
    raise ValueError(f"--top-k {args.top_k}: pass 1 or more (neighbours sampled per sentence).")
  source = data.parse_source(args.data)
  if source.kind != "sts":
    raise ValueError(f"--data {args.data}: use an sts:FILE.tsv source (gold sentence pairs with scores).")
  rows = readers.read_sts(source.path)
  teacher = load_cross_encoder(args.cross_encoder)
  check_labeller(teacher)
  sampler = BM25 if args.sampler == BM25 else load_encoder(args.sampler, None)
  tic = time.perf_counter()
  pairs = sample_pairs(rows, sampler, args.top_k)
  sampled = time.perf_counter() - tic
  tic = time.perf_counter()
  scores = label(pairs, teacher, args.batch_size)
  write_sts(args.output, pairs, scores)
  print(f"wrote {args.output}: {len(pairs)} silver pairs from {len(rows)} gold rows (sampled in {sampled:.0f} s, "
        f"labelled in {time.perf_counter() - tic:.0f} s; mean score {scores.mean() if len(scores) else 0:.2f})")
  return len(pairs)
