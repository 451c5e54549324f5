"""Evaluators shared by `neuralir eval`, periodic evaluation inside training, the ablation and the quickstart.

`evaluate_tasks(encoder, tasks)` is the one entry point: it checks every task first (`check_tasks`: task
strings and files, no data read), encodes through `distributed.encode_across_processes` (each process its
slice) and a memo cache (a corpus searched with exact search and ScaNN is encoded once), and returns
`{task: results}` with JSON-safe values (no NaN or inf). `evaluate_task` is its per-task worker and takes a
plain callable `encode_fn(texts: list[str]) -> np.ndarray [n, d]`, so this module does not depend on the
model code. Similarity is the cosine: embeddings are L2-normalised here (a no-op for encoders that already
normalise), after `truncate_dim` (Matryoshka) truncation when asked, as sentence-transformers' evaluators.
Queries are not documents: retrieval encodes queries with the encoder's "query" prompt and the corpus with
its "document" prompt (ST's encode_query / encode_document); STS and NLI sentences get no prompt name.

  * STS: Spearman and Pearson correlation (0-1 scale) of cosine(sentence1, sentence2) with the gold score.
  * Retrieval (BEIR): encode corpus and queries, top-k search (exact or ScaNN, see `search`), trec_eval
    metrics (see `ir_metrics`); with ScaNN also `ann_recall@10`, the overlap of its top 10 with exact search
    (a document whose score ties the exact 10th counts as found).
  * NLI: accuracy of a classifier `predict_fn(premises, hypotheses) -> logits [n, 3]`.

A task string is `sts:FILE`, `beir:DIR[:SPLIT]`, `nli:FILE`, or a `tfds:` STS/NLI source.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import scipy.stats

from neuralir_jax import ir_metrics
from neuralir_jax import readers
from neuralir_jax import search as search_lib

EncodeFn = Callable[[list[str]], np.ndarray]
PredictFn = Callable[[list[str], list[str]], np.ndarray]

RETRIEVAL_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map")
STS_METRICS = ("spearman", "pearson")
PRIMARY_METRIC = {"sts": "spearman", "beir": "ndcg@10", "nli": "accuracy"}
TASK_KINDS = ("sts", "beir", "nli", "tfds")
TASK_SYNTAX = "sts:FILE, beir:DIR[:SPLIT], nli:FILE or a tfds: STS/NLI source"
INDEXES = ("exact", "scann")
_CACHE_OWNER = "encoder"  # Key of the encoder that filled an encode_cache (other keys are tuples of texts).


class TaskEncoder(Protocol):
  """What `evaluate_tasks` needs of an encoder (e.g. `encoder.Encoder`).

  Optional: `encode_query` / `encode_document` (same signature as `encode`; with prompts, as ST's), used
  for retrieval queries and corpora when present; `truncate_dim` (the encoder's own), which keys the cache.
  """
  nli_head: Any  # None, or the trained NLI softmax head's params (then `predict_nli` works).

  def encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray: ...

  def predict_nli(self, premises: list[str], hypotheses: list[str]) -> np.ndarray: ...


def check_truncate_dim(truncate_dim: Any) -> int | None:
  """None, or a positive int (checked against the embeddings' size once they exist)."""
  if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                   or truncate_dim < 1):
    raise ValueError(f"truncate_dim={truncate_dim!r}: pass a positive integer (or None for no truncation)")
  return truncate_dim


def _encode(encode_fn: EncodeFn, texts: list[str], what: str, truncate_dim: int | None = None) -> np.ndarray:
  """Calls the encoder and checks its output: [len(texts), d], finite; then keeps the first truncate_dim."""
  emb = np.asarray(encode_fn(list(texts)), dtype=np.float32)
  if emb.ndim != 2 or emb.shape[0] != len(texts):
    raise ValueError(f"encode_fn returned shape {emb.shape} for {len(texts)} {what}; "
                     f"it must return one embedding per text, [n, d]")
  if not np.all(np.isfinite(emb)):
    raise ValueError(f"encode_fn returned NaN or inf embeddings for {what}; check the model weights")
  if check_truncate_dim(truncate_dim) is not None:
    if truncate_dim > emb.shape[1]:
      raise ValueError(f"truncate_dim={truncate_dim} is larger than the {emb.shape[1]} dimensions of the "
                       f"embeddings of {what}; pass at most {emb.shape[1]}")
    emb = emb[:, :truncate_dim]
  return emb


def memoized(encode_fn: EncodeFn, cache: dict | None = None, key: Any = None) -> EncodeFn:
  """encode_fn that embeds a given list of texts only once (e.g. one corpus searched two ways).

  `cache` (optional) is the dict that keeps the embeddings, so it can outlive this function; entries are
  `(key, texts)`, so encode functions that differ (e.g. by prompt) can share one cache with distinct keys.
  """
  cache = {} if cache is None else cache

  def encode(texts):
    entry = (key, tuple(texts))
    if entry not in cache:
      cache[entry] = encode_fn(list(texts))
    return cache[entry]

  return encode


def l2_normalize(x_NxD: np.ndarray) -> np.ndarray:
  """Rows scaled to unit norm (all-zero rows stay zero)."""
  norms = np.linalg.norm(x_NxD, axis=1, keepdims=True)
  return (x_NxD / np.maximum(norms, 1e-12)).astype(np.float32)


def evaluate_sts(encode_fn: EncodeFn, records: Sequence[Mapping[str, Any]], name: str = "STS records", *,
                 truncate_dim: int | None = None) -> dict:
  """Spearman/Pearson of cosine similarity vs gold `score`; each distinct sentence is encoded once (and
  truncated to `truncate_dim` dimensions when given).

  Raises a ValueError naming `name` when a correlation is undefined (all gold scores, or all cosines,
  equal), so no NaN ever reaches the results.
  """
  if len(records) < 2:
    raise ValueError(f"{name}: STS evaluation needs at least 2 pairs, got {len(records)}")
  for i, r in enumerate(records):
    if not all(key in r for key in ("sentence1", "sentence2", "score")):
      raise ValueError(f"{name}: STS record {i} lacks sentence1/sentence2/score: {dict(r)!r}")
  gold_P = np.asarray([float(r["score"]) for r in records])
  if not np.all(np.isfinite(gold_P)):
    raise ValueError(f"{name}: {int(np.sum(~np.isfinite(gold_P)))} gold scores are NaN or inf; fix them")
  if np.all(gold_P == gold_P[0]):
    raise ValueError(f"{name}: all {len(records)} scores are equal; Spearman is undefined (every gold score is "
                     f"{gold_P[0]:g}); evaluate on pairs with different gold scores")
  sentences = list(dict.fromkeys(s for r in records for s in (r["sentence1"], r["sentence2"])))
  position = {s: i for i, s in enumerate(sentences)}
  emb_NxD = l2_normalize(_encode(encode_fn, sentences, "STS sentences", truncate_dim))
  a_PxD = emb_NxD[[position[r["sentence1"]] for r in records]]
  b_PxD = emb_NxD[[position[r["sentence2"]] for r in records]]
  cosine_P = np.sum(a_PxD * b_PxD, axis=1)
  if np.all(cosine_P == cosine_P[0]):
    raise ValueError(f"{name}: all {len(records)} cosine similarities are equal; Spearman is undefined (the "
                     f"encoder gives every pair the similarity {cosine_P[0]:g}); check the model")
  return {
      "spearman": float(scipy.stats.spearmanr(cosine_P, gold_P).statistic),
      "pearson": float(scipy.stats.pearsonr(cosine_P, gold_P).statistic),
      "num_pairs": len(records),
  }


def evaluate_nli_accuracy(predict_fn: PredictFn, records: Sequence[Mapping[str, Any]],
                          batch_size: int = 512) -> dict:
  """Accuracy of argmax(predict_fn(premises, hypotheses)) against the integer `label`."""
  if not records:
    raise ValueError("NLI evaluation got no records")
  correct = 0
  for start in range(0, len(records), batch_size):
    batch = records[start:start + batch_size]
    logits = np.asarray(predict_fn([r["premise"] for r in batch], [r["hypothesis"] for r in batch]))
    if logits.ndim != 2 or logits.shape[0] != len(batch):
      raise ValueError(f"predict_fn returned shape {logits.shape} for {len(batch)} pairs; it must return [n, 3]")
    correct += int(np.sum(np.argmax(logits, axis=1) == np.asarray([int(r["label"]) for r in batch])))
  return {"accuracy": correct / len(records), "num_pairs": len(records)}


def _to_run(scores_QxK, idx_QxK, query_ids, doc_ids, k, exclude_self) -> dict[str, dict[str, float]]:
  """{qid: {docid: score}} with at most k documents per query, the query's own id dropped if asked."""
  run = {}
  for qid, s_K, i_K in zip(query_ids, scores_QxK, idx_QxK):
    docs = {}
    for score, j in zip(s_K, i_K):
      if j < 0 or (exclude_self and doc_ids[j] == qid):
        continue
      docs[doc_ids[j]] = float(score)
      if len(docs) == k:
        break
    run[qid] = docs
  return run


def _ann_recall(approx_run, exact_run, q_QxD, docs_NxD, doc_ids, k: int = 10) -> float:
  """Mean over queries of the fraction of the approximate top k whose true score reaches the exact k-th
  score (ann-benchmarks' definition: a document tied with the exact k-th one counts as found)."""
  query_pos = {qid: i for i, qid in enumerate(exact_run)}
  doc_pos = {d: i for i, d in enumerate(doc_ids)}
  recalls = []
  for qid, exact_docs in exact_run.items():
    exact_top = ir_metrics.rank_documents(exact_docs)[:k]
    if not exact_top:
      continue
    threshold = min(exact_docs[d] for d in exact_top)
    approx_top = ir_metrics.rank_documents(approx_run.get(qid, {}))[:k]
    true_scores = docs_NxD[[doc_pos[d] for d in approx_top]] @ q_QxD[query_pos[qid]]
    recalls.append(float(np.sum(true_scores >= threshold - 1e-5)) / len(exact_top))
  return float(np.mean(recalls)) if recalls else 0.0


def _excluded_judged(corpus: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]) -> int:
  """How many queries have their own id judged in qrels and in the corpus (exclude_self hides those)."""
  count = sum(1 for qid, judged in qrels.items() if qid in judged and qid in corpus)
  if count:
    logging.warning("exclude_self=True removed %d documents that qrels judge for their own query (document id "
                    "== query id); they can no longer be retrieved. Use exclude_self=False unless the corpus "
                    "holds copies of the queries.", count)
  return count


def evaluate_retrieval(
    encode_fn: EncodeFn,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    index: str = "exact",
    k: int = 100,
    scann_config: Mapping[str, Any] | None = None,
    index_dir: str | None = None,
    exclude_self: bool = False,
    return_run: bool = False,
    query_encode_fn: EncodeFn | None = None,
    truncate_dim: int | None = None,
) -> dict:
  """Encodes, searches the top `k` and scores with trec_eval metrics (see `ir_metrics`).

  `encode_fn` embeds the corpus, and the queries unless `query_encode_fn` is given (e.g. with a query
  prompt). `truncate_dim` keeps the first D dimensions before normalising, so scores are cosines of the
  truncated embeddings (ST's InformationRetrievalEvaluator). Only queries that appear in `qrels` are
  encoded. `exclude_self` (off by default) drops a document whose id equals the query id from that query's
  results, for corpora that contain copies of their queries; the results then hold `excluded_judged`, the
  number of such documents that qrels judge for their query (a warning is logged when it is not 0: ids such
  as Cranfield's are shared by unrelated queries and documents). With `return_run`, the run
  `{qid: {docid: score}}` is returned under "run".
  """
  if index not in INDEXES:
    raise ValueError(f"unknown index {index!r}; use one of {INDEXES}")
  missing = [q for q in qrels if q not in queries]
  if missing:
    raise ValueError(f"{len(missing)} qrels queries have no text in queries (e.g. {missing[0]!r}); "
                     "pass the queries file that matches the qrels")
  if not corpus:
    raise ValueError("the corpus is empty; nothing to retrieve")
  doc_ids, query_ids = list(corpus), list(qrels)
  t0 = time.perf_counter()
  docs_NxD = l2_normalize(_encode(encode_fn, [corpus[d] for d in doc_ids], "documents", truncate_dim))
  q_QxD = l2_normalize(_encode(query_encode_fn or encode_fn, [queries[q] for q in query_ids], "queries",
                               truncate_dim))
  encode_seconds = time.perf_counter() - t0
  # One spare result per query so that dropping the query's own id still leaves k documents.
  k_search = k + int(exclude_self and any(q in corpus for q in query_ids))
  t0 = time.perf_counter()
  scores, idx = search_lib.search(q_QxD, docs_NxD, k_search, index=index, scann_config=scann_config,
                                  index_dir=index_dir)
  search_seconds = time.perf_counter() - t0
  run = _to_run(scores, idx, query_ids, doc_ids, k, exclude_self)
  out = ir_metrics.compute_metrics(run, qrels, RETRIEVAL_METRICS)
  if index == "scann":
    ex_s, ex_i = search_lib.exact_search(q_QxD, docs_NxD, min(10, k) + (k_search - k))
    exact_run = _to_run(ex_s, ex_i, query_ids, doc_ids, min(10, k), exclude_self)
    out["ann_recall@10"] = _ann_recall(run, exact_run, q_QxD, docs_NxD, doc_ids, min(10, k))
  out.update(num_docs=len(doc_ids), encode_seconds=encode_seconds, search_seconds=search_seconds, index=index)
  if exclude_self:
    out["excluded_judged"] = _excluded_judged(corpus, qrels)
  if return_run:
    out["run"] = run
  return out


def evaluate_task(
    encode_fn: EncodeFn,
    task: str,
    *,
    split: str | None = None,
    index: str = "exact",
    k: int = 100,
    scann_config: Mapping[str, Any] | None = None,
    index_dir: str | None = None,
    predict_fn: PredictFn | None = None,
    exclude_self: bool = False,
    tfds_data_dir: str | None = None,
    query_encode_fn: EncodeFn | None = None,
    document_encode_fn: EncodeFn | None = None,
    truncate_dim: int | None = None,
) -> dict:
  """Runs one task string: `sts:FILE.tsv[.gz]`, `beir:DIR[:SPLIT]` (`split` overrides), `nli:FILE.jsonl[.gz]`
  (needs `predict_fn`), or a `tfds:` source of STS pairs (score) or NLI pairs (label).

  Retrieval encodes queries with `query_encode_fn` and the corpus with `document_encode_fn` (each defaults
  to `encode_fn`, which STS uses); embeddings are truncated to `truncate_dim` (STS and retrieval).

  Returns `{"task": task, metric: value, ...}` with JSON-safe values (a NaN or inf raises instead).
  """
  from neuralir_jax import data  # Lazy: the data module pulls in grain and the tokenizer.

  source = data.parse_source(task)
  if source.kind == "beir":
    corpus, queries, qrels = data.load_beir(source.path, split or source.split or "test")
    out = evaluate_retrieval(document_encode_fn or encode_fn, corpus, queries, qrels, index=index, k=k,
                             scann_config=scann_config, index_dir=index_dir, exclude_self=exclude_self,
                             query_encode_fn=query_encode_fn, truncate_dim=truncate_dim)
  elif source.kind == "sts":
    out = evaluate_sts(encode_fn, data.read_sts(source.path), name=source.path, truncate_dim=truncate_dim)
  elif source.kind == "nli":
    out = _nli(predict_fn, lambda: data.read_nli(source.path), task)
  elif source.kind == "tfds":
    rows = data.load_records(task, "pairs", tfds_data_dir=tfds_data_dir)
    if rows and "score" in rows[0]:
      out = evaluate_sts(encode_fn, rows, name=task, truncate_dim=truncate_dim)
    else:
      out = _nli(predict_fn, lambda: rows, task)
  else:
    raise ValueError(f"task {task!r}: {source.kind!r} is not an evaluation task; use {TASK_SYNTAX}")
  return _json_safe({"task": task, **out}, task)


def _nli(predict_fn: PredictFn | None, read_records: Callable[[], list], task: str) -> dict:
  if predict_fn is None:
    raise ValueError(f"task {task!r} is NLI: it needs a model with a classification head (the NLI softmax "
                     "head, trained with objectives.nli > 0); this model has none, so drop the task")
  return evaluate_nli_accuracy(predict_fn, read_records())


def _json_safe(results: dict, task: str) -> dict:
  """numpy scalars as Python numbers; a NaN or inf (invalid in JSON) raises, naming the task."""
  out = {}
  for key, value in results.items():
    if isinstance(value, (np.integer, np.floating)):
      value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"task {task!r}: {key} is {value}, not a finite number; check the data and the model")
    out[key] = value
  return out


def check_tasks(tasks: Sequence[str], *, split: str | None = None, tfds_data_dir: str | None = None,
                has_nli_head: bool | None = None) -> None:
  """Checks each task string and that its files exist, reading no data (an STS header at most).

  Raises a one-line ValueError or FileNotFoundError naming the task; training calls it before step 1.
  `has_nli_head=False` also rejects `nli:` tasks up front (they need the trained softmax head).
  """
  from neuralir_jax import data  # Lazy, as in evaluate_task.

  if isinstance(tasks, str):
    raise TypeError(f"tasks must be a list of task strings, not the string {tasks!r}; write [{tasks!r}]")
  for task in tasks:
    source = data.parse_source(task)
    if source.kind not in TASK_KINDS:
      raise ValueError(f"task {task!r}: {source.kind!r} is not an evaluation task; use {TASK_SYNTAX}")
    if source.kind == "nli" and has_nli_head is False:
      raise ValueError(f"task {task!r} is NLI: it needs a model with a classification head (the NLI softmax "
                       "head, trained with objectives.nli > 0); this model has none, so drop the task")
    try:
      if source.kind in ("sts", "nli"):
        readers.check_file(source.path)
      if source.kind == "sts":
        readers.check_sts_header(source.path)
      elif source.kind == "beir":
        readers.beir_qrels_path(source.path, split or source.split or "test")
        readers.find_file(source.path, "corpus.jsonl")
        readers.find_file(source.path, "queries.jsonl")
      elif source.kind == "tfds":
        data.check_tfds_prepared(source, tfds_data_dir)
    except (FileNotFoundError, ValueError) as e:
      raise type(e)(f"eval task {task!r}: {e}") from None


def evaluate_tasks(
    encoder: TaskEncoder,
    tasks: Sequence[str],
    *,
    split: str | None = None,
    index: str = "exact",
    index_dir: str | None = None,
    scann_config: Mapping[str, Any] | None = None,
    batch_size: int = 128,
    exclude_self: bool = False,
    show_progress: bool = False,
    encode_cache: dict | None = None,
    tfds_data_dir: str | None = None,
    truncate_dim: int | None = None,
) -> dict[str, dict]:
  """Evaluates `encoder` on every task string; returns `{task: {metric: value, ...}}`, JSON-safe.

  All tasks are checked (`check_tasks`) before anything is encoded. Texts are encoded with
  `encoder.encode(texts, batch_size, show_progress)` across processes (each process its slice, all-gathered;
  every process must call this with the same tasks), retrieval queries with `encoder.encode_query` and
  corpora with `encoder.encode_document` when it has them (its "query" / "document" prompts), and memoised
  per method (and encoder truncate_dim): a list of texts is encoded once per call, or once across calls that
  pass the same `encode_cache` dict (one dict per encoder: e.g. exact search then ScaNN, or several
  `truncate_dim`s, since the cache holds the embeddings before this truncation). NLI tasks use
  `encoder.predict_nli` and need `encoder.nli_head`.
  """
  from neuralir_jax import distributed  # Lazy: jax multi-host utilities.

  if index not in INDEXES:
    raise ValueError(f"unknown index {index!r}; use one of {INDEXES}")
  dim = getattr(encoder, "dim", None)
  if check_truncate_dim(truncate_dim) is not None and isinstance(dim, int) and truncate_dim > dim:
    raise ValueError(f"truncate_dim={truncate_dim} is larger than the model's {dim}-dimensional embeddings; "
                     f"pass at most {dim}")
  has_head = getattr(encoder, "nli_head", None) is not None
  check_tasks(tasks, split=split, tfds_data_dir=tfds_data_dir, has_nli_head=has_head)
  cache = {} if encode_cache is None else encode_cache
  if cache.setdefault(_CACHE_OWNER, encoder) is not encoder:
    raise ValueError("encode_cache holds the embeddings of another encoder; pass a new dict for each encoder")

  def encode_fn(method: str) -> EncodeFn:
    """Memoised `encoder.<method>` (encode_query / encode_document when it has them, else encode)."""
    method = method if callable(getattr(encoder, method, None)) else "encode"
    bound = getattr(encoder, method)

    def encode_local(texts: list[str]) -> np.ndarray:
      return bound(texts, batch_size=batch_size, show_progress=show_progress)

    # The method picks the prompt; the encoder's own truncate_dim shapes its output: both key the cache.
    key = (method, getattr(encoder, "truncate_dim", None))
    return memoized(lambda texts: distributed.encode_across_processes(encode_local, texts), cache, key)

  predict_fn = encoder.predict_nli if has_head else None
  return {task: evaluate_task(encode_fn("encode"), task, split=split, index=index, scann_config=scann_config,
                              index_dir=index_dir, predict_fn=predict_fn, exclude_self=exclude_self,
                              tfds_data_dir=tfds_data_dir, query_encode_fn=encode_fn("encode_query"),
                              document_encode_fn=encode_fn("encode_document"), truncate_dim=truncate_dim)
          for task in tasks}
