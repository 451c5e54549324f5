"""Tests for ir_metrics: golden values on hand-built runs, agreement with pytrec_eval and ir-measures."""

import math

import ir_measures
import numpy as np
import pytest
import pytrec_eval

from neuralir_jax import ir_metrics


def test_perfect_run_scores_one():
  qrels = {"q1": {"a": 3, "b": 1}, "q2": {"c": 1}}
  run = {"q1": {"a": 0.9, "b": 0.8, "x": 0.1}, "q2": {"c": 5.0, "y": 1.0}}
  out = ir_metrics.compute_metrics(run, qrels)
  for m in ir_metrics.DEFAULT_METRICS:
    assert out[m] == pytest.approx(1.0), m
  assert out["num_queries"] == 2


def test_relevant_doc_at_rank_three():
  qrels = {"q": {"r": 2, "n": 0}}
  run = {"q": {"x": 0.9, "n": 0.8, "r": 0.7, "z": 0.1}}
  out = ir_metrics.compute_metrics(run, qrels, per_query=True)
  assert out["mrr@10"] == pytest.approx(1 / 3)
  assert out["ndcg@10"] == pytest.approx((2 / math.log2(4)) / (2 / math.log2(2)))
  assert out["map"] == pytest.approx(1 / 3)
  assert out["recall@10"] == 1.0
  assert out["per_query"]["q"]["mrr@10"] == pytest.approx(1 / 3)


def test_graded_ndcg_hand_formula_and_cutoffs():
  # Judged: a=3, b=2, c=1 (c is never retrieved); ranking: b, x, a.
  qrels = {"q": {"a": 3, "b": 2, "c": 1}}
  run = {"q": {"b": 3.0, "x": 2.0, "a": 1.0}}
  dcg = 2 / math.log2(2) + 3 / math.log2(4)
  idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
  out = ir_metrics.compute_metrics(run, qrels, ["ndcg@10", "ndcg@1", "recall@1", "recall@10", "map"])
  assert out["ndcg@10"] == pytest.approx(dcg / idcg)
  assert out["ndcg@1"] == pytest.approx(2 / 3)
  assert out["recall@1"] == pytest.approx(1 / 3)
  assert out["recall@10"] == pytest.approx(2 / 3)
  assert out["map"] == pytest.approx((1 / 1 + 2 / 3) / 3)


def test_mrr_cutoff_and_ties_broken_by_docid_descending():
  qrels = {"q": {"d05": 1}}
  # All tied: order is d99, d98, ..., so d05 lands past rank 10.
  run = {"q": {f"d{i:02d}": 1.0 for i in range(100)}}
  assert ir_metrics.compute_metrics(run, qrels, ["mrr@10"])["mrr@10"] == 0.0
  assert ir_metrics.compute_metrics(run, qrels, ["mrr@100"])["mrr@100"] == pytest.approx(1 / 95)
  assert ir_metrics.rank_documents({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]


def test_query_conventions():
  qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q2 missing from run, q3 has no relevant doc.
  run = {"q1": {"a": 1.0}, "q3": {"c": 1.0}, "q9": {"a": 1.0}}
  out = ir_metrics.compute_metrics(run, qrels, per_query=True)
  assert out["num_queries"] == 2
  assert set(out["per_query"]) == {"q1", "q2"}
  assert out["ndcg@10"] == pytest.approx(0.5)


def test_bad_metric_and_empty_qrels():
  with pytest.raises(ValueError, match="unknown metric"):
    ir_metrics.compute_metrics({}, {"q": {"a": 1}}, ["precision@5"])
  with pytest.raises(ValueError, match="needs a cutoff"):
    ir_metrics.compute_metrics({}, {"q": {"a": 1}}, ["ndcg"])
  with pytest.raises(ValueError, match="no query with a relevant"):
    ir_metrics.compute_metrics({"q": {"a": 1.0}}, {"q": {"a": 0}})


def _random_run_and_qrels(seed, num_queries=300, num_docs=2000, run_len=150, decimals=1):
  rng = np.random.default_rng(seed)
  qrels, run = {}, {}
  for q in range(num_queries):
    qid = f"q{q}"
    judged = rng.choice(num_docs, size=rng.integers(1, 40), replace=False)
    qrels[qid] = {f"d{d}": int(rng.integers(0, 5)) for d in judged}  # graded 0-4 like Cranfield.
    qrels[qid][f"d{judged[0]}"] = int(rng.integers(1, 5))  # At least one relevant document.
    # Mix judged and unjudged docs; scores rounded to `decimals` so ties are frequent.
    docs = set(rng.choice(judged, size=len(judged) // 2, replace=False).tolist())
    docs |= set(rng.choice(num_docs, size=run_len, replace=False).tolist())
    scores = rng.random(len(docs))
    scores = np.round(scores, decimals) if decimals is not None else scores
    run[qid] = {f"d{d}": float(s) for d, s in zip(sorted(docs), scores)}
  return run, qrels


def test_agrees_with_pytrec_eval_per_query():
  run, qrels = _random_run_and_qrels(0)
  _assert_matches_pytrec_eval(run, qrels)


def test_agrees_with_pytrec_eval_on_real_run_file():
  """A real run: all-MiniLM-L6-v2's top 100 per Cranfield query (tests/data/README.md says how it was made)."""
  import gzip
  import os
  from neuralir_jax import data
  here = os.path.dirname(os.path.abspath(__file__))
  run = {}
  with gzip.open(os.path.join(here, "data", "cranfield_minilm_top100.run.gz"), "rt") as f:
    for line in f:
      qid, _, docid, _, score, _ = line.split()
      run.setdefault(qid, {})[docid] = float(score)
  _, _, qrels = data.load_beir(os.path.join(os.path.dirname(here), "data", "retrieval", "cranfield"), "test")
  assert len(run) == 225 and all(len(docs) == 100 for docs in run.values())
  _assert_matches_pytrec_eval(run, qrels)
  ours = ir_metrics.compute_metrics(run, qrels)
  assert ours["ndcg@10"] == pytest.approx(0.3817, abs=5e-4)  # What neuralir eval reports for MiniLM.


def _assert_matches_pytrec_eval(run, qrels):
  ours = ir_metrics.compute_metrics(run, qrels, per_query=True)["per_query"]
  evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100", "map"})
  ref = evaluator.evaluate(run)
  # recip_rank has no cutoff in trec_eval: cut the run to its trec_eval top 10 first.
  run10 = {q: {d: s[d] for d in ir_metrics.rank_documents(s)[:10]} for q, s in run.items()}
  ref_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run10)
  assert set(ours) == set(ref)
  for qid in ref:
    assert ours[qid]["ndcg@10"] == pytest.approx(ref[qid]["ndcg_cut_10"], abs=1e-6)
    assert ours[qid]["recall@10"] == pytest.approx(ref[qid]["recall_10"], abs=1e-6)
    assert ours[qid]["recall@100"] == pytest.approx(ref[qid]["recall_100"], abs=1e-6)
    assert ours[qid]["map"] == pytest.approx(ref[qid]["map"], abs=1e-6)
    assert ours[qid]["mrr@10"] == pytest.approx(ref_rr[qid]["recip_rank"], abs=1e-6)


def test_agrees_with_ir_measures_aggregate():
  # ir-measures computes RR@10 with the msmarco script, which breaks score ties in another order than
  # trec_eval (ties are covered by the pytrec_eval test above), so this run has distinct scores.
  run, qrels = _random_run_and_qrels(1, decimals=None)
  ours = ir_metrics.compute_metrics(run, qrels)
  measures = {"ndcg@10": ir_measures.nDCG @ 10, "recall@10": ir_measures.R @ 10,
              "recall@100": ir_measures.R @ 100, "mrr@10": ir_measures.RR @ 10, "map": ir_measures.AP}
  ref = ir_measures.calc_aggregate(list(measures.values()), qrels, run)
  for name, measure in measures.items():
    assert ours[name] == pytest.approx(ref[measure], abs=1e-6), name
  assert ours["num_queries"] == 300
