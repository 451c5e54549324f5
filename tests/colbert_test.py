"""Multi-vector (ColBERT) directories: token vectors and MaxSim == sentence-transformers' MultiVectorEncoder,
for the plain layout MultiVectorEncoder(<MiniLM>) saves and for ColBERT's markers, [MASK] query expansion and
punctuation skiplist."""

import json
import string

import numpy as np
import pytest

from neuralir_jax import cli, colbert
from tests.train_helpers import save_tiny_encoder

QUERIES = ["what is a cat?", "How do vaccines train the immune system?"]
DOCUMENTS = ["A cat, is small.", "Vaccines expose the immune system to a harmless antigen; memory cells "
             "remember it.", "Paris is the capital of France."]


def _save(path, body, colbert_options):
  import torch
  from sentence_transformers import MultiVectorEncoder
  torch.manual_seed(0)
  model = MultiVectorEncoder(body, device="cpu")
  if colbert_options:
    model[0].query_expansion = {"strategy": "fixed", "attend": False, "length": 32}
    model[2].skiplist_words = list(string.punctuation)
    model[2].resolve_with_tokenizer(model.tokenizer)
    model.prompts = {"query": "[unused0] ", "document": "[unused1] "}
    model._register_prefix_tokens(model.prompts)
  model.save(path)
  return model


@pytest.mark.parametrize("colbert_options", [False, True], ids=["plain", "colbert"])
def test_token_vectors_and_maxsim_equal_sentence_transformers(tmp_path, minilm_path, colbert_options):
  """A 1-layer random BERT with MiniLM's tokenizer as the body (what MultiVectorEncoder builds from a plain
  HF directory: + a 128-wide projection), saved by sentence-transformers."""
  path = str(tmp_path / "mv")
  _save(path, save_tiny_encoder(str(tmp_path / "body"), minilm_path), colbert_options)
  from sentence_transformers import MultiVectorEncoder
  st = MultiVectorEncoder(path, device="cpu")
  ours = colbert.load_multi_vector(path)
  for got, want in zip(ours.encode_query(QUERIES), st.encode_query(QUERIES, convert_to_numpy=True)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
  for got, want in zip(ours.encode_document(DOCUMENTS), st.encode_document(DOCUMENTS, convert_to_numpy=True)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
  if colbert_options:  # 32 query vectors ([MASK] expansion); the document's ", " and "." are not scored.
    assert ours.encode_query(QUERIES[:1])[0].shape[0] == 32
    assert ours.encode_document(DOCUMENTS[:1])[0].shape[0] == 7
  pairs = [(q, d) for q in QUERIES for d in DOCUMENTS]
  (tmp_path / "pairs.tsv").write_text("".join(f"{q}\t{d}\n" for q, d in pairs))
  out = tmp_path / "scores.npy"
  assert cli.run(["score", "--model", path, "--input", str(tmp_path / "pairs.tsv"), "--output", str(out)]) == 0
  q_st, d_st = st.encode_query(QUERIES), st.encode_document(DOCUMENTS)
  want = np.asarray(st.similarity(q_st, d_st)).reshape(-1)
  assert np.std(want) > 0.1  # Scores differ across pairs: a real comparison.
  np.testing.assert_allclose(np.load(out), want, atol=1e-4, rtol=1e-5)


# --- Retrieval: end to end (exhaustive MaxSim, ScaNN over the token vectors) and MaxSim re-ranking --------


@pytest.fixture(scope="module")
def mv_dir(tmp_path_factory, minilm_path):
  """ColBERT options ([unused0]/[unused1] markers, 32 [MASK]-expanded query tokens, punctuation skipped)
  on a 1-layer random body, saved by sentence-transformers."""
  root = tmp_path_factory.mktemp("mv")
  _save(str(root / "mv"), save_tiny_encoder(str(root / "body"), minilm_path), True)
  return str(root / "mv")


def test_end_to_end_retrieval_is_maxsim_over_the_corpus(mv_dir, small_beir, tmp_path):
  """exact: every query's top documents by MaxSim of encode_query / encode_document (numpy); ScaNN over
  all token vectors with every token a candidate gives the same run, and with few candidates each
  returned score is still the document's exact MaxSim."""
  from neuralir_jax import data
  model = colbert.load_multi_vector(mv_dir)
  corpus, queries, qrels = data.load_beir(small_beir, "test")
  doc_ids, query_ids = list(corpus), list(qrels)
  docs = model.encode_document([corpus[d] for d in doc_ids])
  qs = model.encode_query([queries[q] for q in query_ids])
  want = np.array([[colbert.maxsim(q, d) for d in docs] for q in qs])
  tokens = colbert.TokenIndex.build(docs)
  exact, stats = colbert.search_run(qs, tokens, doc_ids, query_ids, k=10)
  assert stats["index_bytes"] == sum(len(d) for d in docs) * 128 * 4
  for i, qid in enumerate(query_ids):
    top = np.argsort(-want[i], kind="stable")[:10]
    assert list(exact[qid]) == [doc_ids[j] for j in top]
    np.testing.assert_allclose(list(exact[qid].values()), want[i, top], atol=1e-4)
  everything = {"mode": "tree_ah", "num_leaves": 8, "num_leaves_to_search": 8, "training_sample_size": 2000}
  full, _ = colbert.search_run(qs, tokens, doc_ids, query_ids, k=10, index="scann",
                               tokens_per_query_token=len(tokens.tokens_VxD), scann_config=everything)
  assert {q: list(d) for q, d in full.items()} == {q: list(d) for q, d in exact.items()}
  few, stats = colbert.search_run(qs, tokens, doc_ids, query_ids, k=10, index="scann", tokens_per_query_token=2)
  assert 0 < stats["candidates_per_query"] < len(doc_ids) and stats["index_bytes"] > 0
  for i, qid in enumerate(query_ids):
    for d, score in few[qid].items():
      np.testing.assert_allclose(score, want[i, doc_ids.index(d)], atol=1e-4)
  out = tmp_path / "eval.json"
  assert cli.run(["eval", "--model", mv_dir, "--task", f"beir:{small_beir}", "--index", "scann",
                  "--output", str(out)]) == 0
  result = json.loads(out.read_text())
  assert {"ndcg@10", "recall@100", "exhaustive_ndcg@10", "ms_per_query", "index_bytes"} <= set(result)


def test_maxsim_reranks_a_first_stage(mv_dir, small_beir, tmp_path):
  """`neuralir rerank --reranker MV_DIR`: BM25's top 5 ordered by MaxSim."""
  from neuralir_jax import data, evaluate, ir_metrics, rerank
  corpus, queries, qrels = data.load_beir(small_beir, "test")
  out = tmp_path / "r.json"
  assert cli.run(["rerank", "--first-stage", "bm25", "--reranker", mv_dir, "--task", f"beir:{small_beir}",
                  "--top-k", "5", "--output", str(out)]) == 0
  model = colbert.load_multi_vector(mv_dir)
  first = rerank.bm25_run(corpus, queries, qrels, 100)
  run = {q: {d: colbert.maxsim(model.encode_query([queries[q]])[0], model.encode_document([corpus[d]])[0])
             for d in ir_metrics.rank_documents(docs)[:5]} for q, docs in first.items()}
  want = ir_metrics.compute_metrics(run, qrels, evaluate.RETRIEVAL_METRICS)
  got = json.loads(out.read_text())["reranked"]
  for name, value in want.items():
    assert got[name] == pytest.approx(value, abs=1e-9), name


def test_fine_tuning_a_multi_vector_directory_keeps_its_settings(mv_dir):
  """model.init = a MultiVectorEncoder directory: its body and projection load, and a config that would
  encode differently (markers, expansion) is a one-line error naming the key."""
  from neuralir_jax import config_lib
  config = config_lib.load_config("configs/colbert_scifact.py")
  config.model.init = mv_dir
  config.data.query_max_length = 32
  config.colbert.attend_expansion = False
  resolved, tokenizer, params = colbert.resolve_model(config)
  assert params["projection"]["kernel"].shape == (32, 128) and resolved.model.bert.hidden_size == 32
  assert tokenizer.token_ids(["[unused0] a"])[0] == [101, 1, 1037, 102]
  config.model.prompts.query = ""
  with pytest.raises(ValueError, match=r"model.prompts.query='': model.init=.* was trained with '\[unused0\] '"):
    colbert.resolve_model(config)
