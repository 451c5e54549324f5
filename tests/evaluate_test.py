"""Tests for evaluate: fake encoders whose STS and retrieval answers are known by construction."""

import json
import math
import os

import numpy as np
import pytest

from neuralir_jax import evaluate

NUM_TOPICS = 10
DOCS_PER_TOPIC = 3
DIM = NUM_TOPICS + NUM_TOPICS * DOCS_PER_TOPIC + 1


class LookupEncoder:
  """Maps each text to a fixed vector; counts the texts it was asked to encode."""

  def __init__(self, table):
    self.table = table
    self.calls = []

  def __call__(self, texts):
    self.calls.append(list(texts))
    return np.stack([self.table[t] for t in texts]).astype(np.float32)


def _topic_world():
  """Query q{t} is the unit vector e_t. Document t{t}_d{j} has cosine 0.9, 0.8, 0.7 (j = 0, 1, 2) with
  its topic's query and 0 with every other query. Qrels judge d1 (grade 2) and d2 (grade 1), not d0."""
  table, corpus, queries, qrels = {}, {}, {}, {}
  for t in range(NUM_TOPICS):
    queries[f"q{t}"] = f"query {t}"
    table[f"query {t}"] = 2.5 * np.eye(DIM)[t]  # Not unit-norm: the evaluator must normalise.
    for j, cos in enumerate((0.9, 0.8, 0.7)):
      doc_id, text = f"t{t}_d{j}", f"document {t} {j}"
      corpus[doc_id] = text
      private = NUM_TOPICS + t * DOCS_PER_TOPIC + j  # A direction only this document uses.
      table[text] = 4.0 * (cos * np.eye(DIM)[t] + math.sqrt(1 - cos**2) * np.eye(DIM)[private])
    qrels[f"q{t}"] = {f"t{t}_d1": 2, f"t{t}_d2": 1}
  return table, corpus, queries, qrels


EXPECTED = {
    "mrr@10": 0.5,  # First relevant document (d1) at rank 2.
    "recall@10": 1.0,
    "recall@100": 1.0,
    "ndcg@10": (2 / math.log2(3) + 1 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3)),
    "map": (1 / 2 + 2 / 3) / 2,
}


@pytest.mark.parametrize("index", ["exact", "scann"])
def test_retrieval_known_answer(index, tmp_path):
  table, corpus, queries, qrels = _topic_world()
  index_dir = str(tmp_path / "scann") if index == "scann" else None
  out = evaluate.evaluate_retrieval(LookupEncoder(table), corpus, queries, qrels, index=index,
                                    index_dir=index_dir, return_run=True)
  for name, value in EXPECTED.items():
    assert out[name] == pytest.approx(value, abs=1e-9), name
  assert out["num_queries"] == NUM_TOPICS and out["num_docs"] == NUM_TOPICS * DOCS_PER_TOPIC
  assert len(out["run"]["q3"]) == NUM_TOPICS * DOCS_PER_TOPIC  # k=100 > corpus size: all documents.
  assert out["run"]["q3"]["t3_d0"] == pytest.approx(0.9, abs=1e-6)
  assert out["encode_seconds"] >= 0 and out["search_seconds"] >= 0
  if index == "scann":
    assert out["ann_recall@10"] == 1.0  # Below 20k documents ScaNN is brute force: exact.
  else:
    assert "ann_recall@10" not in out


def test_retrieval_excludes_query_own_id():
  table, corpus, queries, qrels = _topic_world()
  corpus["q0"] = "query 0"  # The query itself is in the corpus; it would rank first for q0.
  encoder = LookupEncoder(table)
  out = evaluate.evaluate_retrieval(encoder, corpus, queries, qrels, k=5, return_run=True, exclude_self=True)
  assert "q0" not in out["run"]["q0"] and len(out["run"]["q0"]) == 5
  assert out["mrr@10"] == pytest.approx(EXPECTED["mrr@10"])
  kept = evaluate.evaluate_retrieval(encoder, corpus, queries, qrels, k=5, exclude_self=False)
  # q0 now finds itself first, so its relevant d1 drops to rank 3: mean MRR = (9 * 1/2 + 1/3) / 10.
  assert kept["mrr@10"] == pytest.approx((9 * 0.5 + 1 / 3) / 10)


def test_retrieval_scann_tree_ah_on_clustered_vectors():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(40, 48))
  vecs = centres[rng.integers(0, 40, 3300)] + 0.4 * rng.normal(size=(3300, 48))
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  docs, qs = vecs[:3000], vecs[3000:]
  table = {f"doc {i}": v for i, v in enumerate(docs)} | {f"query {i}": v for i, v in enumerate(qs)}
  corpus = {f"d{i}": f"doc {i}" for i in range(3000)}
  queries = {f"q{i}": f"query {i}" for i in range(300)}
  top1 = np.argmax(qs @ docs.T, axis=1)  # Each query's single relevant document: its exact nearest one.
  qrels = {f"q{i}": {f"d{top1[i]}": 1} for i in range(300)}
  exact = evaluate.evaluate_retrieval(LookupEncoder(table), corpus, queries, qrels)
  assert exact["mrr@10"] == 1.0 and exact["ndcg@10"] == pytest.approx(1.0)
  approx = evaluate.evaluate_retrieval(LookupEncoder(table), corpus, queries, qrels, index="scann",
                                       k=10, scann_config={"mode": "tree_ah"})
  assert approx["ann_recall@10"] >= 0.95
  assert approx["recall@10"] >= 0.95


def test_retrieval_bad_input():
  table, corpus, queries, qrels = _topic_world()
  with pytest.raises(ValueError, match="have no text in queries"):
    evaluate.evaluate_retrieval(LookupEncoder(table), corpus, {}, qrels)
  with pytest.raises(ValueError, match="one embedding per text"):
    evaluate.evaluate_retrieval(lambda texts: np.zeros((1, 4)), corpus, queries, qrels)


def _sts_world():
  angles = np.linspace(0.0, 1.5, 12)
  table, records = {"anchor": np.array([1.0, 0.0, 0.0])}, []
  for i, a in enumerate(angles):
    text = f"sentence {i}"
    table[text] = 3.0 * np.array([math.cos(a), math.sin(a), 0.0])
    records.append({"sentence1": "anchor", "sentence2": text, "score": 5 * math.cos(a)})
  return table, records


def test_sts_known_answer_and_unique_encoding():
  table, records = _sts_world()
  encoder = LookupEncoder(table)
  out = evaluate.evaluate_sts(encoder, records)
  assert out == {"spearman": pytest.approx(1.0), "pearson": pytest.approx(1.0), "num_pairs": 12}
  assert len(encoder.calls) == 1 and len(encoder.calls[0]) == 13  # "anchor" encoded once.
  # A monotone but non-linear gold score: Spearman stays 1, Pearson drops below 1.
  warped = [{**r, "score": math.exp(10 * r["score"])} for r in records]
  out = evaluate.evaluate_sts(LookupEncoder(table), warped)
  assert out["spearman"] == pytest.approx(1.0) and out["pearson"] < 0.99
  reversed_scores = [{**r, "score": -r["score"]} for r in records]
  assert evaluate.evaluate_sts(LookupEncoder(table), reversed_scores)["spearman"] == pytest.approx(-1.0)


def test_sts_undefined_correlation_raises_instead_of_nan():
  table, records = _sts_world()
  constant_gold = [{**r, "score": 2.0} for r in records]
  with pytest.raises(ValueError, match=r"^stsb.tsv: all 12 scores are equal; Spearman is undefined"):
    evaluate.evaluate_sts(LookupEncoder(table), constant_gold, name="stsb.tsv")
  same_vector = lambda texts: np.ones((len(texts), 3), np.float32)  # noqa: E731  Every cosine is 1.
  with pytest.raises(ValueError, match=r"all 12 cosine similarities are equal; Spearman is undefined"):
    evaluate.evaluate_sts(same_vector, records, name="stsb.tsv")


def test_nli_accuracy():
  records = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(10)]

  def predict(premises, hypotheses):  # Right for every pair except p0 and p5.
    labels = [int(p[1:]) % 3 for p in premises]
    labels = [(l + 1) % 3 if p in ("p0", "p5") else l for l, p in zip(labels, premises)]
    return np.eye(3)[labels]
  out = evaluate.evaluate_nli_accuracy(predict, records, batch_size=3)
  assert out == {"accuracy": 0.8, "num_pairs": 10}


def _write_beir(directory, corpus, queries, qrels):
  os.makedirs(os.path.join(directory, "qrels"))
  with open(os.path.join(directory, "corpus.jsonl"), "w") as f:
    for doc_id, text in corpus.items():
      f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
  with open(os.path.join(directory, "queries.jsonl"), "w") as f:
    for qid, text in queries.items():
      f.write(json.dumps({"_id": qid, "text": text}) + "\n")
  with open(os.path.join(directory, "qrels", "test.tsv"), "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for qid, docs in qrels.items():
      for doc_id, rel in docs.items():
        f.write(f"{qid}\t{doc_id}\t{rel}\n")


def test_evaluate_task_dispatch(tmp_path):
  table, corpus, queries, qrels = _topic_world()
  _write_beir(str(tmp_path / "beir"), corpus, queries, qrels)
  out = evaluate.evaluate_task(LookupEncoder(table), f"beir:{tmp_path / 'beir'}:test")
  assert out["task"].startswith("beir:") and out["ndcg@10"] == pytest.approx(EXPECTED["ndcg@10"])

  sts_table, records = _sts_world()
  path = tmp_path / "sts.tsv"
  with open(path, "w") as f:
    f.write("genre\tfilename\tyear\tsid\tscore\tsentence1\tsentence2\n")
    for r in records:
      f.write(f"g\tf\t2012\t1\t{r['score']:.6f}\t{r['sentence1']}\t{r['sentence2']}\n")
  out = evaluate.evaluate_task(LookupEncoder(sts_table), f"sts:{path}")
  assert out["spearman"] == pytest.approx(1.0) and out["num_pairs"] == 12

  with pytest.raises(ValueError, match="not an evaluation task"):
    evaluate.evaluate_task(LookupEncoder(table), f"triples:{path}")
  with pytest.raises(ValueError, match="needs a model with a classification head"):
    evaluate.evaluate_task(LookupEncoder(table), f"nli:{path}")
