"""Cross-encoders: scores == sentence-transformers' CrossEncoder.predict, export round trips, `neuralir score`."""

import gzip
import json
import os

import numpy as np
import pytest

from neuralir_jax import cli, cross_encoder
from tests.train_helpers import save_tiny_cross_encoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scifact_pairs(n: int = 10) -> list[tuple[str, str]]:
  root = os.path.join(REPO, "data", "retrieval", "scifact")
  with open(os.path.join(root, "queries.jsonl")) as f:
    queries = [json.loads(line)["text"] for _, line in zip(range(n), f)]
  with gzip.open(os.path.join(root, "corpus.jsonl.gz"), "rt") as f:
    docs = [(lambda d: f"{d.get('title', '')} {d['text']}".strip())(json.loads(line)) for _, line in zip(range(n), f)]
  pairs = [(q, d) for q, d in zip(queries, docs)] + [(queries[0], docs[1]), (queries[1], docs[0])]
  # Longer than 512 tokens together (longest-first truncation), an empty document, a tab-free long query.
  return pairs + [(queries[2] * 20, " ".join(docs[:6])), (queries[3], ""), ("a", docs[2])]


@pytest.fixture(scope="module")
def pairs():
  return _scifact_pairs()


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory, minilm_path):
  """sentence-transformers' CrossEncoder over the packaged MiniLM, a seeded 1-label head scaled up so
  the scores spread over (0, 1), saved in its own (6.x) layout."""
  import torch
  from sentence_transformers import CrossEncoder
  torch.manual_seed(0)
  model = CrossEncoder(minilm_path, num_labels=1)
  head = model[0].model.classifier
  with torch.no_grad():
    head.weight.mul_(40.0)
    head.bias.fill_(0.3)
  path = str(tmp_path_factory.mktemp("ce"))
  model.save(path)
  return path


def _st_predict(path, pairs):
  from sentence_transformers import CrossEncoder
  return CrossEncoder(path).predict(pairs, batch_size=4)


def test_scores_equal_sentence_transformers_cross_encoder(ce_dir, pairs):
  ours = cross_encoder.load_cross_encoder(ce_dir)
  assert (ours.config.num_labels, ours.config.activation, ours.config.max_length) == (1, "sigmoid", 512)
  got, want = ours.predict(pairs, batch_size=4), _st_predict(ce_dir, pairs)
  assert got.shape == (len(pairs),) and np.std(want) > 0.05  # The head discriminates: a real comparison.
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  assert max(len(ids) for ids, _ in ours.tokenize(pairs)) == 512  # The long pair was truncated.


def test_export_loads_in_transformers_and_sentence_transformers(ce_dir, pairs, tmp_path):
  from transformers import BertForSequenceClassification
  out = str(tmp_path / "export")
  assert cli.run(["export", "--model", ce_dir, "--output", out]) == 0
  _, info = BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  np.testing.assert_allclose(_st_predict(out, pairs), _st_predict(ce_dir, pairs), atol=1e-6, rtol=0)
  again = cross_encoder.load_cross_encoder(out)
  np.testing.assert_allclose(again.predict(pairs), _st_predict(ce_dir, pairs), atol=1e-4, rtol=0)


def test_plain_hf_three_label_directory_gives_logits(tmp_path, minilm_path, pairs):
  """A BertForSequenceClassification saved by transformers alone (no sentence-transformers files), 3 labels:
  no activation (Identity), [N, 3] scores, as CrossEncoder.predict."""
  import torch
  from transformers import AutoTokenizer, BertForSequenceClassification
  torch.manual_seed(1)
  model = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=3)
  path = str(tmp_path / "hf3")
  model.save_pretrained(path)
  AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
  ours = cross_encoder.load_cross_encoder(path)
  assert (ours.config.num_labels, ours.config.activation) == (3, "identity")
  got = ours.predict(pairs[:6])
  assert got.shape == (6, 3)
  np.testing.assert_allclose(got, _st_predict(path, pairs[:6]), atol=1e-4, rtol=0)


def test_score_command_writes_one_score_per_line(ce_dir, pairs, tmp_path):
  tsv = tmp_path / "pairs.tsv"
  tsv.write_text("".join(f"{q}\t{d}\n" for q, d in pairs), encoding="utf-8")
  out = tmp_path / "scores.npy"
  assert cli.run(["score", "--model", ce_dir, "--input", str(tsv), "--output", str(out)]) == 0
  np.testing.assert_allclose(np.load(out), _st_predict(ce_dir, pairs), atol=1e-4, rtol=0)


def test_score_command_bad_input_is_one_line_naming_the_line(ce_dir, tmp_path, minilm_path):
  tsv = tmp_path / "bad.tsv"
  tsv.write_text("q1\td1\nno tab here\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"bad.tsv:2: 1 tab-separated field\(s\); each line must be query<TAB>"):
    cli.run(["score", "--model", ce_dir, "--input", str(tsv), "--output", str(tmp_path / "s.npy")])
  tsv.write_text("q1\td1\n", encoding="utf-8")
  with pytest.raises(ValueError, match="neither a cross-encoder .* nor a multi-vector model"):
    cli.run(["score", "--model", minilm_path, "--input", str(tsv), "--output", str(tmp_path / "s.npy")])


# --- neuralir rerank ----------------------------------------------------------------------------------


def test_rerank_scores_both_stages_as_eval_and_sentence_transformers(ce_dir, small_beir, minilm_path, tmp_path):
  """MiniLM first stage, top 8 re-ranked: the first stage's metrics are `neuralir eval`'s; the re-ranked
  ones equal ir_measures on a run scored by sentence-transformers' CrossEncoder."""
  import ir_measures
  from sentence_transformers import CrossEncoder
  from neuralir_jax import data, evaluate, ir_metrics
  from neuralir_jax import encoder as encoder_lib
  task = f"beir:{small_beir}:test"  # `neuralir eval --task` syntax.
  out = tmp_path / "rerank.json"
  assert cli.run(["rerank", "--first-stage", minilm_path, "--reranker", ce_dir, "--task", task,
                  "--top-k", "8", "--output", str(out)]) == 0
  result = json.loads(out.read_text())
  enc = encoder_lib.load_encoder(minilm_path)
  corpus, queries, qrels = data.load_beir(small_beir, "test")
  want = evaluate.evaluate_retrieval(enc.encode, corpus, queries, qrels, return_run=True)  # As neuralir eval.
  for m in evaluate.RETRIEVAL_METRICS:
    np.testing.assert_allclose(result["first_stage"][m], want[m], atol=1e-6, err_msg=m)
  pairs = [(q, d) for q, docs in want["run"].items() for d in ir_metrics.rank_documents(docs)[:8]]
  scores = CrossEncoder(ce_dir).predict([(queries[q], corpus[d]) for q, d in pairs])
  run = [ir_measures.ScoredDoc(q, d, float(s)) for (q, d), s in zip(pairs, scores)]
  qrels_list = [ir_measures.Qrel(q, d, r) for q, docs in qrels.items() for d, r in docs.items()]
  ref = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.RR @ 10], qrels_list, run)
  np.testing.assert_allclose(result["reranked"]["ndcg@10"], ref[ir_measures.nDCG @ 10], atol=1e-4)
  np.testing.assert_allclose(result["reranked"]["mrr@10"], ref[ir_measures.RR @ 10], atol=1e-4)
  assert result["reranked"]["ndcg@10"] != pytest.approx(result["first_stage"]["ndcg@10"], abs=1e-3)
  assert result["reranked"]["pairs"] == 8 * 8 and result["top_k"] == 8


def test_rerank_bm25_first_stage(ce_dir, small_beir, tmp_path):
  """BM25 -> monoBERT top 10 -> duoBERT top 3 (the same directory serves as both here)."""
  out = tmp_path / "bm25.json"
  assert cli.run(["rerank", "--first-stage", "bm25", "--reranker", ce_dir, "--task", f"beir:{small_beir}",
                  "--top-k", "10", "--duo", ce_dir, "--duo-top-k", "3", "--fuse-weights", "0,1",
                  "--output", str(out)]) == 0
  result = json.loads(out.read_text())
  # Fusion weight 0 orders as the reranker, 1 as the first stage (z-scores are monotone in the scores).
  for key in ("ndcg@10", "mrr@10"):
    assert result["fused"]["0"][key] == pytest.approx(result["reranked"][key], abs=1e-12)
    assert result["fused"]["1"][key] == pytest.approx(result["first_stage"][key], abs=1e-12)
  assert set(result["first_stage"]) >= set(("ndcg@10", "recall@100", "num_queries"))
  assert result["first_stage"]["num_queries"] == result["reranked"]["num_queries"] == 8
  # Re-ranking the top 10 reorders them only: the documents found in the top 10 stay the same.
  np.testing.assert_allclose(result["reranked"]["recall@10"], result["first_stage"]["recall@10"], atol=1e-9)
  assert result["duo"]["triples"] == 8 * 3 * 2 and result["duo_top_k"] == 3
  np.testing.assert_allclose(result["duo"]["recall@10"], result["reranked"]["recall@10"], atol=1e-9)


def test_fused_run_interpolates_per_query_z_scores():
  from neuralir_jax import rerank
  first = {"q": {"a": 3.0, "b": 2.0, "c": 1.0, "far": 0.5}}
  reranked = {"q": {"a": 0.0, "b": 10.0, "c": 5.0}}  # The reranker scored the top 3 only.
  fused = rerank.fused_run(first, reranked, 0.25)
  z_first, z_rerank = np.array([1.0, 0.0, -1.0]) / np.sqrt(2 / 3), np.array([-1.0, 1.0, 0.0]) / np.sqrt(2 / 3)
  np.testing.assert_allclose([fused["q"][d] for d in "abc"], 0.25 * z_first + 0.75 * z_rerank, atol=1e-12)
  assert set(fused["q"]) == {"a", "b", "c"}
  with pytest.raises(ValueError, match=r"fusion weight 1.5"):
    rerank.fused_run(first, reranked, 1.5)


def test_mine_teacher_then_train_a_cross_encoder_workdir_and_export(small_beir, tmp_path, minilm_path):
  """`mine --teacher` writes the cross-encoder's logits; a cross-encoder fine-tuned from that one on the file
  scores from its workdir as sentence-transformers scores its export (a 1-layer cross-encoder: the same
  code paths as MiniLM's, a fraction of the time)."""
  from sentence_transformers import CrossEncoder
  ce_dir = save_tiny_cross_encoder(str(tmp_path / "tiny_ce"), minilm_path)
  mined = tmp_path / "mined.jsonl"
  assert cli.run(["mine", "--model", "bm25", "--data", f"beir:{small_beir}:test", "--num-negatives", "2",
                  "--teacher", ce_dir, "--output", str(mined)]) == 0
  rows = [json.loads(line) for line in open(mined)]
  pairs = [(r["query"], d) for r in rows for d in (*r["positives"], *r["negatives"])]
  teacher = [s for r in rows for s in (*r["teacher_positive_scores"], *r["teacher_negative_scores"])]
  want = cross_encoder.load_cross_encoder(ce_dir).predict_logits(pairs)[:, 0]
  np.testing.assert_allclose(teacher, want, atol=1e-5)
  workdir = str(tmp_path / "ce_workdir")
  assert cli.run(["train", "--config", os.path.join(REPO, "configs", "tiny.py"), "--workdir", workdir,
                  "--config.model.family=cross_encoder", f"--config.model.init={ce_dir}",
                  "--config.objectives.nli_softmax=0", "--config.objectives.infonce=0",
                  "--config.objectives.ce_listwise=1", "--config.objectives.ce_pointwise=0.5",
                  "--config.optimizer.learning_rate=1e-3", "--config.data.packing=false",
                  "--config.data.view=triplets", f"--config.data.train=triples:{mined}",
                  "--config.data.num_negatives=2", "--config.batch_size=8", "--config.num_steps=2"]) == 0
  scores_file = tmp_path / "scores.npy"
  pairs_file = tmp_path / "pairs.tsv"
  pairs_file.write_text("".join(f"{q}\t{d}\n" for q, d in pairs[:12]))
  assert cli.run(["score", "--model", workdir, "--input", str(pairs_file), "--output", str(scores_file)]) == 0
  export = str(tmp_path / "export")
  assert cli.run(["export", "--model", workdir, "--output", export]) == 0
  st = CrossEncoder(export).predict(pairs[:12])
  assert np.std(st) > 0.05  # Scores spread over (0, 1): a real comparison.
  np.testing.assert_allclose(np.load(scores_file), st, atol=1e-4, rtol=0)
  assert np.max(np.abs(st - CrossEncoder(ce_dir).predict(pairs[:12]))) > 1e-4  # Training moved the scores.
  assert CrossEncoder(export).max_seq_length == 32 + 31  # Query + document, as the pairs trained.
  # A bi-encoder command given the cross-encoder says what to use instead, in one line.
  with pytest.raises(ValueError, match="is a cross-encoder: .* use `neuralir score --model`"):
    cli.run(["eval", "--model", workdir, "--task", f"beir:{small_beir}"])


def test_duo_triples_equal_transformers_and_rerank_the_top(ce_dir, small_beir, tmp_path):
  """predict_triples == BertForSequenceClassification on [CLS] q [SEP] d_i [SEP] d_j [SEP] (types 0/1/1), and
  duo_run orders the top k by their summed pairwise probabilities above the rest."""
  import torch
  from transformers import AutoTokenizer, BertForSequenceClassification
  triples = [("what reduces fever?", "Aspirin lowers body temperature.", "The cat sat on the mat."),
             ("q", "a much longer second document with several words in it", "short")]
  model = cross_encoder.load_cross_encoder(ce_dir)
  got = model.predict_triples(triples)
  tok = AutoTokenizer.from_pretrained(ce_dir)
  hf = BertForSequenceClassification.from_pretrained(ce_dir).eval()
  for (q, a, b), logit in zip(triples, got):
    first = tok(q, a)
    ids = first["input_ids"] + tok(b, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    types = first["token_type_ids"] + [1] * (len(ids) - len(first["input_ids"]))
    with torch.no_grad():
      want = hf(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits[0, 0].item()
    assert abs(logit - want) < 1e-4
  # The top 3 are ordered by the sum of their pairwise probabilities, the others keep their mono order.
  from neuralir_jax import rerank
  docs = {f"d{i}": text for i, (_, text, _) in enumerate(triples)} | {"d2": "unrelated text", "d3": "fever"}
  mono = {"q": {"d0": 0.9, "d1": 0.8, "d2": 0.7, "d3": 0.1}}
  final, scored = rerank.duo_run(model, mono, docs, {"q": triples[0][0]}, top_k=3)
  final = final["q"]
  assert scored == 3 * 2
  top = ["d0", "d1", "d2"]
  p = 1 / (1 + np.exp(-model.predict_triples([(triples[0][0], docs[a], docs[b]) for a in top for b in top
                                               if a != b])))
  sums = {a: p[2 * i] + p[2 * i + 1] for i, a in enumerate(top)}
  assert sorted(top, key=lambda d: -final[d]) == sorted(top, key=lambda d: -sums[d])
  assert min(final[d] for d in top) > final["d3"] == 0.1
