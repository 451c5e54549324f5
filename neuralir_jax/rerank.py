"""Two-stage retrieval behind `neuralir rerank`: a first stage retrieves, a cross-encoder re-ranks its top k.

First stage: a bi-encoder (`Encoder`, exact or ScaNN search through `evaluate.evaluate_retrieval`) or BM25
(bm25s, as `neuralir mine --model bm25` scores). The reranker (`cross_encoder.CrossEncoder`, monoBERT) scores
every (query, document) pair of each query's top `top_k` and the documents are ordered by that score; the
run keeps only those k documents, as BEIR's re-ranking evaluation does. An optional duoBERT stage
(`duo_run`) re-orders the top few of the monoBERT ranking by pairwise preferences. Both runs are scored with the metrics
of `neuralir eval` (`evaluate.RETRIEVAL_METRICS`), so the two stages are directly comparable. The pairs are
scored in batches split over the local devices. `fused_run` interpolates the two stages' scores (each
standardised per query), the usual hybrid of a re-ranker with its first stage; `--fuse-weights` reports a
grid of weights in one run, so that the weight is chosen on a dev split and read off the test split.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import scipy.special

from neuralir_jax import evaluate, ir_metrics

Run = dict[str, dict[str, float]]


def bm25_run(corpus: Mapping[str, str], queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
             k: int) -> Run:
  """The top k documents of each qrels query by BM25 (`mine.bm25_candidates`)."""
  from neuralir_jax import mine
  doc_ids = list(corpus)
  index = {d: i for i, d in enumerate(doc_ids)}
  query_ids = list(qrels)
  # MiningData wants a positive per query (mining scores them); the run does not use them, so a query whose
  # judgements are all 0 borrows document 0.
  positives = [[index[d] for d, r in qrels[q].items() if r >= 1 and d in index] or [0] for q in query_ids]
  data = mine.MiningData(query_ids, [queries[q] for q in query_ids], doc_ids, [corpus[d] for d in doc_ids],
                         positives, name="bm25 first stage")
  cand = mine.bm25_candidates(data, k)
  return {q: {doc_ids[j]: float(s) for s, j in zip(s_K, i_K) if j >= 0}
          for q, s_K, i_K in zip(query_ids, cand.scores_QxK, cand.idx_QxK)}


def rerank_run(reranker, run: Mapping[str, Mapping[str, float]], corpus: Mapping[str, str],
               queries: Mapping[str, str], top_k: int, batch_size: int = 32) -> Run:
  """Each query's top_k documents of `run`, scored by the reranker (its first label's score)."""
  pairs, keys = [], []
  for qid, docs in run.items():
    for doc_id in ir_metrics.rank_documents(docs)[:top_k]:
      pairs.append((queries[qid], corpus[doc_id]))
      keys.append((qid, doc_id))
  scores = np.asarray(reranker.predict(pairs, batch_size=batch_size)) if pairs else np.zeros(0)
  scores = scores if scores.ndim == 1 else scores[:, 0]
  out: Run = {qid: {} for qid in run}
  for (qid, doc_id), score in zip(keys, scores):
    out[qid][doc_id] = float(score)
  return out


def duo_run(duo, run: Mapping[str, Mapping[str, float]], corpus: Mapping[str, str],
            queries: Mapping[str, str], top_k: int, batch_size: int = 32) -> tuple[Run, int]:
  """duoBERT on each query's top_k of `run` (Pradeep et al., 2021): every ordered pair (d_i, d_j), i != j,
  gets p_ij = sigmoid(duo logit of [CLS] q [SEP] d_i [SEP] d_j [SEP]) and d_i the sum over j of p_ij. The
  top_k are ordered by that sum, above the rest of the run, which keeps its order. Returns (run, number
  of triples scored)."""
  triples, keys = [], []
  tops = {}
  for qid, docs in run.items():
    tops[qid] = ir_metrics.rank_documents(docs)[:top_k]
    for a in tops[qid]:
      for b in tops[qid]:
        if a != b:
          triples.append((queries[qid], corpus[a], corpus[b]))
          keys.append((qid, a))
  logits = duo.predict_triples(triples, batch_size=batch_size) if triples else np.zeros(0)
  sums: dict[tuple[str, str], float] = {}
  for key, p in zip(keys, scipy.special.expit(np.asarray(logits, np.float64))):
    sums[key] = sums.get(key, 0.0) + float(p)
  out: Run = {}
  for qid, docs in run.items():
    above = max(docs.values(), default=0.0) + 1.0  # The duo-ranked documents stay above the others.
    out[qid] = dict(docs)
    for doc_id in tops[qid]:
      out[qid][doc_id] = above + sums.get((qid, doc_id), 0.0)
  return out, len(triples)


def _standardised(scores: Mapping[str, float]) -> dict[str, float]:
  values = np.asarray(list(scores.values()), np.float64)
  std = values.std() if len(values) > 1 else 0.0
  z = (values - values.mean()) / std if std > 0 else np.zeros_like(values)
  return dict(zip(scores, z.tolist()))


def check_fuse_weights(weights: tuple[float, ...]) -> None:
  """Each fusion weight is the first stage's share, in [0, 1]."""
  for weight in weights:
    if not 0.0 <= weight <= 1.0:
      raise ValueError(f"fusion weight {weight:g}: pass values in [0, 1] (the first stage's share).")


def fused_run(first: Mapping[str, Mapping[str, float]], reranked: Mapping[str, Mapping[str, float]],
              weight: float) -> Run:
  """weight * z(first-stage score) + (1 - weight) * z(reranker score) for each query's re-ranked documents;
  z standardises one query's scores over those documents (mean 0, std 1; all-equal scores give 0s).
  weight 0 orders as the reranker, 1 as the first stage (both over the re-ranked documents only)."""
  check_fuse_weights((weight,))
  out: Run = {}
  for qid, docs in reranked.items():
    z_first = _standardised({d: first[qid][d] for d in docs})
    z_rerank = _standardised(docs)
    out[qid] = {d: weight * z_first[d] + (1.0 - weight) * z_rerank[d] for d in docs}
  return out


def rerank_task(first_stage: Any, reranker, task: str, *, top_k: int = 100, index: str = "exact",
                batch_size: int = 32, encode_batch_size: int = 128, duo=None, duo_top_k: int = 10,
                fuse_weights: tuple[float, ...] = ()) -> dict:
  """{"task", "top_k", "first_stage": metrics, "reranked": metrics[, "duo": metrics][, "fused": {weight:
  metrics}]} for a `beir:DIR[:SPLIT]` task.

  first_stage: "bm25" or an `Encoder` (its query / document prompts apply, as in `neuralir eval`).
  duo: a duoBERT `CrossEncoder` that re-orders each query's top duo_top_k of the monoBERT ranking.
  fuse_weights: first-stage shares w of `fused_run`, each scored as "fused"[f"{w:g}"].
  """
  check_fuse_weights(fuse_weights)
  from neuralir_jax import data
  source = data.parse_source(task)
  if source.kind != "beir":
    raise ValueError(f"rerank task {task!r}: use beir:DIR[:SPLIT] (re-ranking needs a corpus and qrels).")
  if top_k < 1:
    raise ValueError(f"--top-k {top_k}: pass 1 or more.")
  corpus, queries, qrels = data.load_beir(source.path, source.split or "test")
  tic = time.perf_counter()
  if first_stage == "bm25":
    run = bm25_run(corpus, queries, qrels, max(top_k, 100))
    first = ir_metrics.compute_metrics(run, qrels, evaluate.RETRIEVAL_METRICS)
  else:
    first = evaluate.evaluate_retrieval(
        lambda t: first_stage.encode_document(t, batch_size=encode_batch_size), corpus, queries, qrels,
        index=index, k=max(top_k, 100), return_run=True,
        query_encode_fn=lambda t: first_stage.encode_query(t, batch_size=encode_batch_size))
    run = first.pop("run")
  first_seconds = time.perf_counter() - tic
  tic = time.perf_counter()
  reranked_run = rerank_run(reranker, run, corpus, queries, top_k, batch_size)
  reranked = ir_metrics.compute_metrics(reranked_run, qrels, evaluate.RETRIEVAL_METRICS)
  rerank_seconds = time.perf_counter() - tic
  out = {"task": task, "top_k": top_k, "first_stage": dict(first, seconds=first_seconds),
         "reranked": dict(reranked, seconds=rerank_seconds, pairs=sum(min(len(d), top_k) for d in run.values()))}
  if fuse_weights:
    out["fused"] = {f"{w:g}": ir_metrics.compute_metrics(fused_run(run, reranked_run, w), qrels,
                                                         evaluate.RETRIEVAL_METRICS) for w in fuse_weights}
  if duo is not None:
    if duo_top_k < 2:
      raise ValueError(f"--duo-top-k {duo_top_k}: duoBERT compares documents; pass 2 or more.")
    tic = time.perf_counter()
    final, triples = duo_run(duo, reranked_run, corpus, queries, duo_top_k, batch_size)
    out["duo_top_k"] = duo_top_k
    out["duo"] = dict(ir_metrics.compute_metrics(final, qrels, evaluate.RETRIEVAL_METRICS),
                      seconds=time.perf_counter() - tic, triples=triples)
  return out
