"""Hard-negative mining: for every query of a training source, the best-scored documents that are not positives.

  data = mine.load_data("beir:data/retrieval/scifact:train")      # or "triples:FILE" / "pairs:FILE"
  rows = mine.mine_hard_negatives(data, encoder, num_negatives=8, range_max=50)  # or model="bm25"
  mine.write_jsonl(rows, "scifact_mined.jsonl")

`mine_hard_negatives` returns one row per query: query_id, query, positive_ids, positives, negative_ids,
negatives, positive_scores, negative_scores (scores of the miner, kept for distillation; negatives best
first). The semantics are those of sentence-transformers 6.3 `util.mine_hard_negatives` (cosine similarity):
the top `range_max + P + 1` documents of each query are retrieved (P: the most positives any query has);
every judged positive, every document whose text equals a positive's (as ST, which keys documents and
queries by text, queries with the same text share their positives) and a document whose text is the
query's own are removed; with `margin` a candidate must
satisfy `score + margin <= p`, with `relative_margin` `score <= p - |p| * r` (p: the lowest positive score
of the query, ST's "harder positive"); the first `range_max` survivors, best first, form the window, its
first `range_min` are skipped, and `sampling="top"` takes the next `num_negatives` while `"random"` draws
them (seeded) and sorts them by score. A query with fewer eligible negatives keeps fewer (as ST's triplet
and labeled-list outputs; its n-tuple output drops the query) and is counted in a log line. Equal scores
rank the lower corpus index first.

Dense mining encodes the corpus `chunk_size` documents at a time (process p of P takes chunks p, p+P, ...)
and keeps a running top-k per query (exact: `search.exact_search` per chunk, merged; `index="scann"`: a ScaNN
index over the process's documents), so no query x corpus matrix is built; the per-process lists are merged
with `process_allgather` (also with one process). BM25 is bm25s (Lucene variant, k1=1.5, b=0.75) over
lower-cased words with English stopwords removed and the Snowball English stemmer (PyStemmer); documents
sharing no term with the query (score 0) are never negatives.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import math
import os
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from neuralir_jax import distributed, readers
from neuralir_jax import search as search_lib

SAMPLING = ("top", "random")
INDEXES = ("exact", "scann")
DATA_SYNTAX = "beir:DIR[:SPLIT] (split default: train), triples:FILE or pairs:FILE"
CHUNK_SIZE = 32_768  # Corpus documents encoded (and searched) per step.
ROW_KEYS = ("query_id", "query", "positive_ids", "positives", "negative_ids", "negatives", "positive_scores",
            "negative_scores")
BM25 = "bm25"


@dataclasses.dataclass
class MiningData:
  """Queries, the corpus, and each query's positives as corpus indices (at least one per query)."""
  query_ids: list[str]
  queries: list[str]
  doc_ids: list[str]
  docs: list[str]
  positives: list[list[int]]
  name: str = "data"

  def __post_init__(self):
    if not (len(self.query_ids) == len(self.queries) == len(self.positives)):
      raise ValueError(f"{self.name}: query_ids, queries and positives differ in length")
    if len(self.doc_ids) != len(self.docs):
      raise ValueError(f"{self.name}: doc_ids and docs differ in length")
    if not self.queries or not self.docs:
      raise ValueError(f"{self.name}: no queries with a positive, or an empty corpus; nothing to mine")
    for i, pos in enumerate(self.positives):
      if not pos or any(not 0 <= d < len(self.docs) for d in pos):
        raise ValueError(f"{self.name}: query {self.query_ids[i]!r} needs positives that index the corpus")


class Candidates(NamedTuple):
  """Top-k retrieved documents per query, and the score of every (query, positive) pair."""
  scores_QxK: np.ndarray  # float32, best first; -inf where fewer than k documents exist.
  idx_QxK: np.ndarray  # int32 corpus indices; -1 with -inf.
  positive_scores_P: np.ndarray  # float32, in the order of `positive_pairs(data)`.
  positive_found_P: np.ndarray  # bool: this process scored the pair (its document was in its chunks).


# --- Data -------------------------------------------------------------------------------------------------


def load_data(spec: str, skip_invalid: bool = False) -> MiningData:
  """`beir:DIR[:SPLIT]` (positives: qrels grade > 0) or `triples:FILE` / `pairs:FILE` (`readers.read_tuples`)."""
  kind, sep, rest = spec.partition(":")
  if not sep or not rest or kind not in ("beir", "triples", "pairs"):
    raise ValueError(f"--data {spec!r}: use {DATA_SYNTAX}.")
  if kind == "beir":
    directory, sep, split = rest.rpartition(":")
    if not (sep and split and "/" not in split):
      directory, split = rest, "train"
    corpus, queries, qrels = readers.load_beir(directory, split, skip_invalid)
    return _from_beir(corpus, queries, qrels, f"{directory}:{split}")
  return _from_tuples(readers.read_tuples(rest, skip_invalid), rest)


def _from_beir(corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
               name: str) -> MiningData:
  doc_ids = list(corpus)
  position = {d: i for i, d in enumerate(doc_ids)}
  query_ids, texts, positives = [], [], []
  for qid, text in queries.items():
    pos = [position[d] for d, grade in qrels[qid].items() if grade > 0]
    if pos:
      query_ids.append(qid), texts.append(text), positives.append(pos)
  if len(query_ids) < len(queries):
    logging.warning("%s: %d of %d queries have no qrels grade > 0 and are not mined.", name,
                    len(queries) - len(query_ids), len(queries))
  return MiningData(query_ids, texts, doc_ids, [corpus[d] for d in doc_ids], positives, name)


def _text_id(text: str) -> str:
  """A stable id for a text that came without one."""
  return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _from_tuples(rows: Sequence[dict], path: str) -> MiningData:
  """Queries grouped by query_id (else by text); documents by id where the row gives one, else by text.

  The corpus is every distinct positive and negative; a query's positives are the union over its rows.
  """
  docs: list[str] = []
  doc_ids: list[str] = []
  by_key: dict[tuple[str, str], int] = {}
  by_text: dict[str, int] = {}

  def add_doc(text, doc_id, line):
    if doc_id is None and text in by_text:
      return by_text[text]
    key = ("id", doc_id) if doc_id is not None else ("text", text)
    if key in by_key:
      if docs[by_key[key]] != text:
        raise ValueError(f"{path}:{line}: document id {doc_id!r} has another text than on an earlier line; "
                         "give each id one text")
      return by_key[key]
    by_key[key] = len(docs)
    by_text.setdefault(text, len(docs))
    docs.append(text), doc_ids.append(doc_id if doc_id is not None else _text_id(text))
    return by_key[key]

  queries: dict[str, int] = {}
  query_ids, texts, positives = [], [], []
  for r in rows:
    qid = r["query_id"]
    key = qid if qid is not None else "\0" + r["query"]
    if key not in queries:
      queries[key] = len(texts)
      query_ids.append(qid if qid is not None else _text_id(r["query"])), texts.append(r["query"])
      positives.append([])
    q = queries[key]
    if texts[q] != r["query"]:
      raise ValueError(f"{path}:{r['line']}: query_id {qid!r} has another query text than on an earlier line; "
                       "give each query id one text")
    ids = r["positive_ids"] or [None] * len(r["positives"])
    for text, doc_id in zip(r["positives"], ids):
      d = add_doc(text, doc_id, r["line"])
      if d not in positives[q]:
        positives[q].append(d)
    for text, doc_id in zip(r["negatives"], r["negative_ids"] or [None] * len(r["negatives"])):
      add_doc(text, doc_id, r["line"])
  return MiningData(query_ids, texts, doc_ids, docs, positives, path)


def positive_pairs(data: MiningData) -> tuple[np.ndarray, np.ndarray]:
  """(query index, corpus index) of every positive, query by query, int64."""
  pair_q = np.array([q for q, pos in enumerate(data.positives) for _ in pos], np.int64)
  pair_d = np.array([d for pos in data.positives for d in pos], np.int64)
  return pair_q, pair_d


def text_groups(docs: Sequence[str]) -> np.ndarray:
  """For each document, the index of the first document with the same text (int64)."""
  first: dict[str, int] = {}
  return np.array([first.setdefault(t, i) for i, t in enumerate(docs)], np.int64)


# --- Options ----------------------------------------------------------------------------------------------


def resolve_range_max(num_negatives: int, range_min: int, range_max: int | None, max_positives: int,
                      filtering: bool) -> int:
  """Checks the window options as ST does; range_max None: range_min + num_negatives (x10 when a margin may
  discard candidates) + max_positives."""
  if not isinstance(num_negatives, int) or num_negatives < 1:
    raise ValueError(f"--num-negatives {num_negatives}: use 1 or more.")
  if range_min < 0:
    raise ValueError(f"--range-min {range_min}: use 0 or more (the best non-positive documents to skip).")
  if range_max is None:
    range_max = range_min + num_negatives * (10 if filtering else 1) + max_positives
  if range_min >= range_max:
    raise ValueError(f"--range-min {range_min} must be smaller than --range-max {range_max}; lower --range-min "
                     "or raise --range-max.")
  if num_negatives > range_max - range_min:
    raise ValueError(f"--num-negatives {num_negatives} does not fit: only {range_max - range_min} candidates "
                     f"remain after skipping --range-min {range_min} of --range-max {range_max}; lower "
                     "--num-negatives or --range-min, or raise --range-max.")
  return range_max


def _check_margins(margin: float | None, relative_margin: float | None) -> None:
  for flag, value in (("--margin", margin), ("--relative-margin", relative_margin)):
    if value is not None and not math.isfinite(value):
      raise ValueError(f"{flag} {value}: give a finite number.")


# --- Candidates -------------------------------------------------------------------------------------------


def merge_top_k(scores_QxM: np.ndarray, idx_QxM: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The k best (score desc, then corpus index asc; -1 padding last) of each row, padded to k columns."""
  q, m = scores_QxM.shape
  if m < k:
    scores_QxM = np.concatenate([scores_QxM, np.full((q, k - m), -np.inf, np.float32)], axis=1)
    idx_QxM = np.concatenate([idx_QxM, np.full((q, k - m), -1, np.int32)], axis=1)
  tie = np.where(idx_QxM < 0, np.iinfo(np.int32).max, idx_QxM)
  order = np.lexsort((tie, -scores_QxM), axis=-1)[:, :k]
  scores = np.take_along_axis(scores_QxM, order, axis=1).astype(np.float32)
  idx = np.take_along_axis(idx_QxM, order, axis=1).astype(np.int32)
  return scores, np.where(np.isneginf(scores), -1, idx).astype(np.int32)


def merge_candidates(parts: Sequence[Candidates], k: int) -> Candidates:
  """Candidates of several processes (disjoint document sets) as one."""
  scores, idx = merge_top_k(np.concatenate([p.scores_QxK for p in parts], axis=1),
                            np.concatenate([p.idx_QxK for p in parts], axis=1), k)
  found = np.stack([p.positive_found_P for p in parts])
  positive = np.where(found, np.stack([p.positive_scores_P for p in parts]), 0).sum(0).astype(np.float32)
  return Candidates(scores, idx, positive, found.any(0))


def gather_candidates(local: Candidates, k: int) -> Candidates:
  """Every process's candidates, all-gathered and merged (the same code with one process)."""
  from jax.experimental import multihost_utils
  fields = [np.asarray(multihost_utils.process_allgather(np.asarray(x))) for x in local]
  parts = [Candidates(*(f[p] for f in fields)) for p in range(fields[0].shape[0])]
  merged = merge_candidates(parts, k)
  if not merged.positive_found_P.all():
    raise RuntimeError("some positives were not scored by any process; the corpus chunks do not cover it")
  return merged


def local_dense_candidates(encode_fn: Callable[[list[str]], np.ndarray], q_QxD: np.ndarray, docs: Sequence[str],
                           pairs: tuple[np.ndarray, np.ndarray], k: int, *, chunk_size: int = CHUNK_SIZE,
                           index: str = "exact", process_index: int = 0, process_count: int = 1) -> Candidates:
  """Candidates among the chunks process_index, process_index + process_count, ... of the corpus.

  `encode_fn(texts)` returns embeddings [n, d] (L2-normalised here); `q_QxD` must be normalised already.
  """
  pair_q, pair_d = pairs
  num_q, num_docs = q_QxD.shape[0], len(docs)
  best = (np.full((num_q, k), -np.inf, np.float32), np.full((num_q, k), -1, np.int32))
  positive_P = np.zeros(len(pair_q), np.float32)
  found_P = np.zeros(len(pair_q), bool)
  kept_emb, kept_idx = [], []  # ScaNN: this process's documents, indexed once after the loop.
  chunks = range(process_index, -(-num_docs // chunk_size), process_count)
  total = sum(min(chunk_size, num_docs - c * chunk_size) for c in chunks)
  done, t0 = 0, time.perf_counter()
  for n, c in enumerate(chunks):
    start = c * chunk_size
    emb_CxD = _l2_normalize(np.asarray(encode_fn(list(docs[start:start + chunk_size])), np.float32))
    in_chunk = (pair_d >= start) & (pair_d < start + len(emb_CxD))
    positive_P[in_chunk] = np.sum(q_QxD[pair_q[in_chunk]] * emb_CxD[pair_d[in_chunk] - start], axis=1)
    found_P |= in_chunk
    if index == "scann":
      kept_emb.append(emb_CxD), kept_idx.append(np.arange(start, start + len(emb_CxD), dtype=np.int32))
    else:
      s, i = search_lib.exact_search(q_QxD, emb_CxD, k)
      best = merge_top_k(np.concatenate([best[0], s], 1), np.concatenate([best[1], i.astype(np.int32) + start], 1), k)
    done += len(emb_CxD)
    elapsed = time.perf_counter() - t0
    logging.info("mine: chunk %d/%d, %d/%d documents of this process, %.0f docs/s, ~%.0f s left", n + 1,
                 len(chunks), done, total, done / elapsed, (total - done) * elapsed / done)
  if index == "scann" and kept_emb:
    built = search_lib.build_scann(np.concatenate(kept_emb), {"num_neighbors": k})
    s, i = search_lib.scann_search(built, q_QxD, k)
    global_i = np.where(i < 0, -1, np.concatenate(kept_idx)[np.maximum(i, 0)])
    best = merge_top_k(s.astype(np.float32), global_i.astype(np.int32), k)
  return Candidates(best[0], best[1], positive_P, found_P)


def dense_candidates(encode_fn: Callable[[list[str]], np.ndarray], data: MiningData, k: int, *,
                     chunk_size: int = CHUNK_SIZE, index: str = "exact") -> Candidates:
  """Queries encoded across processes, the corpus in strided chunks, candidates merged over processes."""
  t0 = time.perf_counter()
  q_QxD = _l2_normalize(np.asarray(distributed.encode_across_processes(encode_fn, data.queries), np.float32))
  logging.info("mine: encoded %d queries in %.1f s", len(data.queries), time.perf_counter() - t0)
  local = local_dense_candidates(encode_fn, q_QxD, data.docs, positive_pairs(data), k, chunk_size=chunk_size,
                                 index=index, process_index=jax.process_index(),
                                 process_count=jax.process_count())
  return gather_candidates(local, k)


def bm25_candidates(data: MiningData, k: int, show_progress: bool = False) -> Candidates:
  """bm25s scores (see the module docstring) of the whole corpus, one query at a time."""
  import bm25s
  import Stemmer  # PyStemmer, bm25s' recommended stemmer (extra bm25s[stem]).

  logging.getLogger("bm25s").setLevel(logging.WARNING)  # It logs each indexing step at DEBUG.
  tokenizer = bm25s.tokenization.Tokenizer(lower=True, stopwords="en", stemmer=Stemmer.Stemmer("english"))
  retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
  retriever.index(tokenizer.tokenize(list(data.docs), return_as="tuple", show_progress=show_progress),
                  show_progress=show_progress)
  query_tokens = tokenizer.tokenize(list(data.queries), update_vocab=False, return_as="ids",
                                    show_progress=show_progress)
  num_docs = len(data.docs)
  scores_QxK = np.full((len(data.queries), k), -np.inf, np.float32)
  idx_QxK = np.full((len(data.queries), k), -1, np.int32)
  positive_P = []
  rows = range(len(data.queries))
  if show_progress:
    import tqdm
    rows = tqdm.tqdm(rows, desc="BM25 queries", unit="query")
  for q in rows:
    ids = query_tokens[q]
    s_N = (np.asarray(retriever.get_scores(list(ids)), np.float32) if ids else np.zeros(num_docs, np.float32))
    positive_P.extend(s_N[data.positives[q]])
    s_N = np.where(s_N > 0, s_N, -np.inf).astype(np.float32)  # No shared term: not a candidate.
    top = _top_k_indices(s_N, k)
    scores_QxK[q, :len(top)], idx_QxK[q, :len(top)] = s_N[top], top
  idx_QxK[np.isneginf(scores_QxK)] = -1
  return Candidates(scores_QxK, idx_QxK, np.asarray(positive_P, np.float32), np.ones(len(positive_P), bool))


def _top_k_indices(s_N: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k best scores, best first, lower index first among equal scores."""
  if k < len(s_N):
    kth = np.partition(s_N, len(s_N) - k)[len(s_N) - k]
    above = np.flatnonzero(s_N > kth)
    idx = np.concatenate([above, np.flatnonzero(s_N == kth)[:k - len(above)]])
  else:
    idx = np.arange(len(s_N))
  return idx[np.lexsort((idx, -s_N[idx]))]


def _l2_normalize(x_NxD: np.ndarray) -> np.ndarray:
  return (x_NxD / np.maximum(np.linalg.norm(x_NxD, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# --- Selection --------------------------------------------------------------------------------------------


def select_negatives(scores_QxK: np.ndarray, idx_QxK: np.ndarray, is_positive_QxK: np.ndarray,
                     min_positive_Q: np.ndarray, *, num_negatives: int, range_min: int, range_max: int,
                     margin: float | None = None, relative_margin: float | None = None,
                     sampling: str = "top", seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
  """ST's selection on retrieved candidates: per query (corpus indices, scores), best first, and counts of
  the candidates each filter removed."""
  s = np.where((idx_QxK < 0) | is_positive_QxK, -np.inf, scores_QxK).astype(np.float32)
  skipped = {}
  if margin is not None:  # Compared as ST does, in float32: removed when score + margin > p.
    removed = np.isfinite(s) & (s + np.float32(margin) > min_positive_Q[:, None])
    s[removed], skipped["margin"] = -np.inf, int(removed.sum())
  if relative_margin is not None:  # ST >= 6.2: p - |p| * r (not p * (1 - r), which flips for p < 0).
    threshold_Q = min_positive_Q - np.abs(min_positive_Q) * np.float32(relative_margin)
    removed = np.isfinite(s) & (s > threshold_Q[:, None])
    s[removed], skipped["relative_margin"] = -np.inf, int(removed.sum())
  order = np.argsort(-s, axis=1, kind="stable")[:, :range_max][:, range_min:]
  window_s = np.take_along_axis(s, order, axis=1)
  window_i = np.take_along_axis(idx_QxK, order, axis=1)
  rng = np.random.default_rng(seed)
  out_i, out_s = [], []
  for w_s, w_i in zip(window_s, window_i):
    options = int(np.isfinite(w_s).sum())  # Finite scores come first: the window is sorted.
    if sampling == "top" or options <= num_negatives:
      pick = np.arange(min(options, num_negatives))
    else:
      pick = np.sort(rng.choice(options, size=num_negatives, replace=False))
    out_i.append(w_i[pick]), out_s.append(w_s[pick])
  return out_i, out_s, skipped


# --- Mining -----------------------------------------------------------------------------------------------


def mine_hard_negatives(data: MiningData, model: Any, *, num_negatives: int, range_min: int = 0,
                        range_max: int | None = None, margin: float | None = None,
                        relative_margin: float | None = None, sampling: str = "top", index: str = "exact",
                        batch_size: int = 64, chunk_size: int = CHUNK_SIZE, seed: int = 0,
                        show_progress: bool = False) -> list[dict]:
  """One row per query (ROW_KEYS) with its hard negatives; see the module docstring for the semantics.

  model: "bm25", an `encoder.Encoder`, or a callable `encode_fn(texts) -> [n, d]` embeddings.
  """
  if sampling not in SAMPLING:
    raise ValueError(f"--sampling {sampling!r}: use one of {SAMPLING}.")
  if index not in INDEXES:
    raise ValueError(f"--index {index!r}: use one of {INDEXES}.")
  if not isinstance(chunk_size, int) or chunk_size < 1 or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"--chunk-size {chunk_size} / --batch-size {batch_size}: use positive integers.")
  _check_margins(margin, relative_margin)
  pair_q, pair_d = positive_pairs(data)
  query_groups = text_groups(data.queries)  # ST identifies queries by text: one text, one set of positives.
  max_positives = int(np.bincount(query_groups[pair_q]).max())
  range_max = resolve_range_max(num_negatives, range_min, range_max, max_positives,
                                margin is not None or relative_margin is not None)
  k = min(range_max + max_positives + 1, len(data.docs))  # + 1: room for the query's own text, excluded.
  t0 = time.perf_counter()
  if isinstance(model, str):
    if model != BM25:
      raise ValueError(f"model {model!r}: pass 'bm25', an Encoder or an encode function.")
    if index != "exact":
      raise ValueError("--index scann applies to dense models; BM25 scores every document: drop --index.")
    cand = bm25_candidates(data, k, show_progress)
  else:
    encode_fn = model
    if hasattr(model, "encode"):
      encode_fn = lambda texts: model.encode(texts, batch_size=batch_size, show_progress=show_progress)  # noqa: E731
    cand = dense_candidates(encode_fn, data, k, chunk_size=chunk_size, index=index)
  logging.info("mine: scored %d queries x %d documents in %.1f s (%s)", len(data.queries), len(data.docs),
               time.perf_counter() - t0, "bm25" if isinstance(model, str) else f"{index} search")
  is_positive, min_positive = _positives_of_candidates(cand, query_groups, text_groups(data.docs), pair_q, pair_d)
  is_positive |= _query_texts_of_candidates(cand, data)
  neg_i, neg_s, skipped = select_negatives(
      cand.scores_QxK, cand.idx_QxK, is_positive, min_positive, num_negatives=num_negatives,
      range_min=range_min, range_max=range_max, margin=margin, relative_margin=relative_margin,
      sampling=sampling, seed=seed)
  rows = _rows(data, cand.positive_scores_P, neg_i, neg_s)
  _log_summary(rows, num_negatives, skipped, data.name)
  return rows


def _rows(data: MiningData, positive_P: np.ndarray, neg_i: list[np.ndarray], neg_s: list[np.ndarray]) -> list[dict]:
  rows, start = [], 0
  for q, pos in enumerate(data.positives):
    rows.append({"query_id": data.query_ids[q], "query": data.queries[q],
                 "positive_ids": [data.doc_ids[d] for d in pos], "positives": [data.docs[d] for d in pos],
                 "negative_ids": [data.doc_ids[d] for d in neg_i[q]], "negatives": [data.docs[d] for d in neg_i[q]],
                 "positive_scores": [float(x) for x in positive_P[start:start + len(pos)]],
                 "negative_scores": [float(x) for x in neg_s[q]]})
    start += len(pos)
  return rows


def _positives_of_candidates(cand: Candidates, query_groups: np.ndarray, doc_groups: np.ndarray,
                             pair_q: np.ndarray, pair_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(is_positive_QxK, min_positive_Q): a candidate is a positive when its text is that of a positive of any
  query with the same text; the margin compares with the lowest positive score over those queries."""
  n = np.int64(len(doc_groups))
  code_QxK = query_groups[:, None] * n + doc_groups[np.maximum(cand.idx_QxK, 0)]
  is_positive = np.isin(code_QxK, query_groups[pair_q] * n + doc_groups[pair_d]) & (cand.idx_QxK >= 0)
  min_positive = np.full(len(query_groups), np.inf, np.float32)
  np.minimum.at(min_positive, query_groups[pair_q], cand.positive_scores_P)
  return is_positive, min_positive[query_groups]


def _query_texts_of_candidates(cand: Candidates, data: MiningData) -> np.ndarray:
  """[Q, K] True where the candidate document's text is the query's own (never its negative, as ST 6.3)."""
  index = {t: i for i, t in enumerate(data.docs)}
  own_Q = np.array([index.get(q, -2) for q in data.queries], np.int64)  # -2: no document has that text.
  groups = text_groups(data.docs)
  own_group_Q = np.where(own_Q >= 0, groups[np.maximum(own_Q, 0)], -2)
  return (cand.idx_QxK >= 0) & (groups[np.maximum(cand.idx_QxK, 0)] == own_group_Q[:, None])


def _log_summary(rows: list[dict], num_negatives: int, skipped: dict, name: str) -> None:
  counts = np.array([len(r["negative_ids"]) for r in rows])
  pos = np.array([s for r in rows for s in r["positive_scores"]])
  neg = np.array([s for r in rows for s in r["negative_scores"]])
  logging.info("mine: %s: %d queries, %d negatives; mean positive score %.4f, mean negative score %s", name,
               len(rows), counts.sum(), pos.mean(), f"{neg.mean():.4f}" if neg.size else "n/a")
  for what, count in skipped.items():
    logging.info("mine: the %s removed %d candidates.", what, count)
  short = int(np.sum(counts < num_negatives))
  if short:
    logging.warning("mine: %d of %d queries have fewer than %d eligible negatives (%d have none); they are kept "
                    "with what was found. Raise --range-max or loosen the margins for more.", short, len(rows),
                    num_negatives, int(np.sum(counts == 0)))


# --- Output and CLI ---------------------------------------------------------------------------------------


def write_jsonl(rows: Sequence[dict], path: str) -> None:
  """One JSON object per line (gzip when the name ends in .gz), written to a temporary file then renamed."""
  import json
  tmp = f"{path}.tmp{os.getpid()}"
  with (gzip.open(tmp, "wt", encoding="utf-8") if path.endswith(".gz") else open(tmp, "w", encoding="utf-8")) as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
  os.replace(tmp, path)


def add_teacher_scores(rows: list[dict], teacher: Any, batch_size: int = 32) -> list[dict]:
  """Copies of mined rows with `teacher_positive_scores` / `teacher_negative_scores`: the cross-encoder's
  logits (not probabilities: MarginMSE distils logit margins) of each (query, positive) and (query, negative)."""
  if teacher.config.num_labels != 1:
    raise ValueError(f"the teacher has {teacher.config.num_labels} labels; teacher scores need a relevance "
                     "cross-encoder with one logit.")
  pairs = [(r["query"], d) for r in rows for d in (*r["positives"], *r["negatives"])]
  logits = teacher.predict_logits(pairs, batch_size=batch_size)[:, 0] if pairs else np.zeros(0, np.float32)
  out, start = [], 0
  for r in rows:
    p, n = len(r["positives"]), len(r["negatives"])
    scores = [float(x) for x in logits[start:start + p + n]]
    out.append(dict(r, teacher_positive_scores=scores[:p], teacher_negative_scores=scores[p:]))
    start += p + n
  return out


def run_from_cli(args, load_encoder: Callable[[str, int | None], Any],
                 load_teacher: Callable[[str], Any] | None = None) -> list[dict]:
  """`neuralir mine`: checks the flags and files before any model is loaded, mines, writes --output."""
  if os.path.exists(args.output):
    raise FileExistsError(f"--output {args.output}: already exists; pass a new path (mine never overwrites).")
  if args.model == BM25 and args.step is not None:
    raise ValueError("--step applies to a training workdir, not to --model bm25: drop --step.")
  _check_margins(args.margin, args.relative_margin)
  resolve_range_max(args.num_negatives, args.range_min, args.range_max, 1, False)  # Early check; final below.
  if args.max_length is not None and args.model == BM25:
    raise ValueError("--max-length applies to dense models; BM25 reads whole texts: drop --max-length.")
  teacher = load_teacher(args.teacher) if getattr(args, "teacher", None) else None  # Fails before mining.
  data = load_data(args.data)
  model = BM25 if args.model == BM25 else load_encoder(args.model, args.step)
  if args.max_length is not None:
    model.max_seq_length = args.max_length
  show_progress = sys.stderr.isatty() or len(data.docs) > 1000
  rows = mine_hard_negatives(data, model, num_negatives=args.num_negatives, range_min=args.range_min,
                             range_max=args.range_max, margin=args.margin, relative_margin=args.relative_margin,
                             sampling=args.sampling, index=args.index, batch_size=args.batch_size,
                             chunk_size=args.chunk_size, seed=args.seed, show_progress=show_progress)
  if teacher is not None:
    rows = add_teacher_scores(rows, teacher, args.batch_size)
  if distributed.is_main_process():
    write_jsonl(rows, args.output)
  print(f"wrote {args.output}: {len(rows)} queries, {sum(len(r['negative_ids']) for r in rows)} negatives")
  return rows
