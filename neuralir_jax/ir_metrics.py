"""Ranking metrics with trec_eval's definitions: nDCG@10, recall@10/100, MRR@10 and MAP.

A run is `{qid: {docid: score}}`, qrels are `{qid: {docid: relevance}}`. Documents are ranked by score
descending, ties broken by docid descending (trec_eval and pytrec_eval sort this way). A judged document is
relevant when its relevance is >= 1 (trec_eval's default `relevance_level`); nDCG uses the relevance as the
gain (negative relevance counts as 0) with a log2(rank + 1) discount, and its ideal ranking is built from
every judged document of the query, retrieved or not.

Which queries are averaged (documented convention):
  * queries in qrels with no relevant document are skipped: every metric here is undefined for them
    (trec_eval/pytrec_eval report 0, which would only dilute the mean);
  * queries with relevant documents but absent from the run count as 0 (trec_eval `-c`);
  * queries in the run but not in qrels are ignored.
For every query that has a relevant document and is in the run, the per-query values equal pytrec_eval's
`ndcg_cut_10`, `recall_10`, `recall_100`, `recip_rank` (on the run cut to 10) and `map`.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map")


def rank_documents(doc_scores: Mapping[str, float]) -> list[str]:
  """Docids sorted as trec_eval does: score descending, then docid descending."""
  return sorted(doc_scores, key=lambda d: (float(doc_scores[d]), d), reverse=True)


def _parse_metric(name: str) -> tuple[str, int | None]:
  base, _, cut = name.partition("@")
  if base not in ("ndcg", "recall", "mrr", "map") or (cut and not cut.isdigit()):
    raise ValueError(f"unknown metric {name!r}; use ndcg@K, recall@K, mrr@K or map (map@K also works)")
  if base in ("ndcg", "recall", "mrr") and not cut:
    raise ValueError(f"metric {name!r} needs a cutoff, e.g. {base}@10")
  k = int(cut) if cut else None
  if k is not None and k < 1:
    raise ValueError(f"metric {name!r}: the cutoff must be >= 1")
  return base, k


def _ndcg(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
  dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
  ideal_gains = sorted((max(r, 0) for r in judged.values()), reverse=True)[:k]
  idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal_gains))
  return dcg / idcg if idcg > 0 else 0.0


def _query_metrics(ranked: Sequence[str], judged: Mapping[str, int], parsed) -> dict[str, float]:
  """All requested metrics of one query; `judged` must hold at least one relevant document."""
  relevant = {d for d, r in judged.items() if r >= 1}
  hits = [d in relevant for d in ranked]
  out = {}
  for name, (base, k) in parsed.items():
    if base == "ndcg":
      out[name] = _ndcg(ranked, judged, k)
    elif base == "recall":
      out[name] = sum(hits[:k]) / len(relevant)
    elif base == "mrr":
      first = next((i for i, h in enumerate(hits[:k]) if h), None)
      out[name] = 0.0 if first is None else 1.0 / (first + 1)
    else:  # map, over the run as given (or cut to k)
      num_hits, total = 0, 0.0
      for i, h in enumerate(hits[:k] if k else hits):
        if h:
          num_hits += 1
          total += num_hits / (i + 1)
      out[name] = total / len(relevant)
  return out


def compute_metrics(
    run: Run,
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    per_query: bool = False,
) -> dict:
  """Mean of each metric over the qrels queries that have a relevant document.

  Returns `{metric: mean, ..., "num_queries": n}` and, when `per_query`, also
  `"per_query": {qid: {metric: value}}`. A query missing from `run` scores 0 on every metric.
  """
  parsed = {m: _parse_metric(m) for m in metrics}
  if not isinstance(run, Mapping) or not isinstance(qrels, Mapping):
    raise TypeError("run and qrels must be dicts: {qid: {docid: score}} and {qid: {docid: relevance}}")
  values: dict[str, dict[str, float]] = {}
  for qid, judged in qrels.items():
    if not any(r >= 1 for r in judged.values()):
      continue
    ranked = rank_documents(run[qid]) if qid in run else []
    values[qid] = _query_metrics(ranked, judged, parsed)
  if not values:
    raise ValueError("qrels hold no query with a relevant document (relevance >= 1); nothing to evaluate")
  out: dict = {m: sum(v[m] for v in values.values()) / len(values) for m in metrics}
  out["num_queries"] = len(values)
  if per_query:
    out["per_query"] = values
  return out
