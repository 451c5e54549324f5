"""Multi-vector (ColBERT) directories: token vectors and MaxSim == sentence-transformers' MultiVectorEncoder,
for the plain layout MultiVectorEncoder(<MiniLM>) saves and for ColBERT's markers, [MASK] query expansion and
punctuation skiplist."""

import dataclasses
import json
import os
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


PYLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pylate_tiny")
# What tests/data/make_pylate_tiny.py encoded with PyLate itself (pylate_tiny_golden.npz).
PYLATE_QUERIES = ["what is a cat?", "How do vaccines train the immune system, and for how long does the memory "
                  "last?"]
PYLATE_DOCUMENTS = ["A cat, is small.", "Vaccines expose the immune system to a harmless antigen; memory cells "
                    "remember it for years, sometimes for life (see: B cells).", "Paris is the capital of France."]


def _assert_pylate_golden(model):
  golden = np.load(PYLATE_DIR + "_golden.npz")
  q, d = model.encode_query(PYLATE_QUERIES), model.encode_document(PYLATE_DOCUMENTS)
  for name, got in [(f"query{i}", x) for i, x in enumerate(q)] + [(f"document{i}", x) for i, x in enumerate(d)]:
    assert got.shape == golden[name].shape, name  # Queries expanded to 16; documents without punctuation.
    np.testing.assert_allclose(got, golden[name], atol=1e-5, err_msg=name)
  scores = np.array([[colbert.maxsim(a, b) for b in d] for a in q])
  np.testing.assert_allclose(scores, golden["scores"], rtol=1e-5)


def test_a_pylate_directory_encodes_as_pylate(tmp_path):
  """A directory PyLate wrote ("[Q] " / "[D] " markers it added to the vocabulary, [MASK] expansion not
  attended, punctuation skiplist): PyLate's token vectors and MaxSim, also through `neuralir score`."""
  model = colbert.load_multi_vector(PYLATE_DIR)
  assert model.config.expansion == {"length": 16, "attend": False, "token_id": 103}
  assert model.config.lengths == {"query": 16, "document": 24}
  _assert_pylate_golden(model)
  pairs = tmp_path / "pairs.tsv"
  pairs.write_text("".join(f"{q}\t{d}\n" for q in PYLATE_QUERIES for d in PYLATE_DOCUMENTS))
  assert cli.run(["score", "--model", PYLATE_DIR, "--input", str(pairs), "--output", str(tmp_path / "s.npy")]) == 0
  np.testing.assert_allclose(np.load(tmp_path / "s.npy").reshape(2, 3),
                             np.load(PYLATE_DIR + "_golden.npz")["scores"], rtol=1e-5)


def test_pylate_export_writes_what_pylate_writes(tmp_path):
  """`neuralir export --format pylate` of the PyLate directory writes PyLate's files back: the same module
  list, Dense config and weights, settings (all but the version stamp) and body, and encodes as PyLate."""
  import safetensors.numpy
  out = tmp_path / "export"
  assert cli.run(["export", "--model", PYLATE_DIR, "--output", str(out), "--format", "pylate"]) == 0

  def read(root, name):
    with open(os.path.join(root, name)) as f:
      return json.load(f)
  for name in ("modules.json", "1_Dense/config.json"):
    assert read(out, name) == read(PYLATE_DIR, name), name
  ours, theirs = read(out, "config_sentence_transformers.json"), read(PYLATE_DIR, "config_sentence_transformers.json")
  assert {k: v for k, v in ours.items() if k != "__version__"} == {k: v for k, v in theirs.items()
                                                                   if k != "__version__"}
  legacy = {".gamma": ".weight", ".beta": ".bias"}  # transformers 5.3 saved LayerNorm under the old names.
  for name in ("model.safetensors", "1_Dense/model.safetensors"):
    a, b = ({next((k[:-len(old)] + new for old, new in legacy.items() if k.endswith(old)), k): v
             for k, v in safetensors.numpy.load_file(os.path.join(root, name)).items()} for root in (out, PYLATE_DIR))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name
  _assert_pylate_golden(colbert.load_multi_vector(str(out)))


def test_pylate_export_of_a_colbert_with_markers_and_what_it_refuses(tmp_path, mv_dir, minilm_path):
  """MultiVectorEncoder's "[unused0] " / "[unused1] " prompts become PyLate's one-token prefixes and the
  export encodes as the original; a prompt that is not one token cannot be a PyLate prefix."""
  src = tmp_path / "src"
  _save(str(src), minilm_path, colbert_options=True)
  out = tmp_path / "pylate"
  assert cli.run(["export", "--model", str(src), "--output", str(out), "--format", "pylate"]) == 0
  settings = json.loads((out / "config_sentence_transformers.json").read_text())
  assert (settings["query_prefix"], settings["document_prefix"], settings["query_length"],
          settings["do_query_expansion"], settings["attend_to_expansion_tokens"]) == ("[unused0]", "[unused1]", 32,
                                                                                      True, False)
  original, back = colbert.load_multi_vector(str(src)), colbert.load_multi_vector(str(out))
  for a, b in zip(original.encode_query(QUERIES) + original.encode_document(DOCUMENTS),
                  back.encode_query(QUERIES) + back.encode_document(DOCUMENTS)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  model = colbert.load_multi_vector(mv_dir)
  model.config = dataclasses.replace(model.config, prompts={"query": "query: ", "document": ""})
  with pytest.raises(ValueError, match=r"model.prompts.query='query: ': PyLate marks a query with one token"):
    colbert.save_pylate_directory(str(tmp_path / "bad"), model)
  with pytest.raises(ValueError, match=r"--format pylate: .* is not a multi-vector \(ColBERT\) model"):
    cli.run(["export", "--model", minilm_path, "--output", str(tmp_path / "bi"), "--format", "pylate"])


def test_a_shorter_document_length_encodes_as_sentence_transformers(mv_dir, small_beir, tmp_path):
  """`with_document_length` (eval --document-length) truncates documents as sentence-transformers does with
  that document_length in the saved directory; eval scores the corpus with it."""
  from sentence_transformers import MultiVectorEncoder
  short = colbert.with_document_length(colbert.load_multi_vector(mv_dir), 8)
  colbert.save_multi_vector_directory(str(tmp_path / "short"), short)
  st = MultiVectorEncoder(str(tmp_path / "short"), device="cpu")
  want = st.encode_document(DOCUMENTS, convert_to_numpy=True)
  got = short.encode_document(DOCUMENTS)
  assert [len(x) for x in got] == [len(x) for x in want] == [7, 8, 8]  # "a cat , is small ." loses , and .
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-4)
  runs = []
  for args in (["--model", mv_dir, "--document-length", "8"], ["--model", str(tmp_path / "short")]):
    out = tmp_path / f"eval{len(runs)}.json"
    assert cli.run(["eval", *args, "--task", f"beir:{small_beir}", "--output", str(out)]) == 0
    runs.append(json.loads(out.read_text())["ndcg@10"])
  assert runs[0] == runs[1]
  with pytest.raises(ValueError, match=r"--document-length: .* is a single-vector model"):
    cli.run(["eval", "--model", "minilm", "--document-length", "8", "--task", f"beir:{small_beir}"])


def test_pylate_settings_other_than_the_defaults(tmp_path):
  """PyLate's rules on an edited copy of the fixture: a prefix without a trailing space is inserted after
  [CLS] as one id, no query expansion (queries truncated to query_length, not padded), an unknown skiplist
  word skips [UNK]; and fine-tuning from the fixture keeps "[Q] " a single piece."""
  import shutil

  from neuralir_jax import config_lib
  edited = tmp_path / "edited"
  shutil.copytree(PYLATE_DIR, edited)
  settings = json.loads((edited / "config_sentence_transformers.json").read_text())
  settings.update(query_prefix="[unused0]", do_query_expansion=False, query_length=6,
                  skiplist_words=["zzqqxx", ","])
  (edited / "config_sentence_transformers.json").write_text(json.dumps(settings))
  model = colbert.load_multi_vector(str(edited))
  assert model.config.expansion is None and model.config.skiplist_ids == (100, 1010)  # [UNK], ','
  plain = model.tokenizer.token_ids(["a cat , is small"], 64)[0]  # [CLS] a cat , is small [SEP]
  (ids, attention, scoring), = model._inputs(["a cat , is small"], "query")
  assert ids == [101, 1] + plain[1:4] + [102] and attention == [1] * 6 and all(scoring)
  (ids, _, scoring), = model._inputs(["a cat , is small"], "document")
  assert ids == [101, 30523] + plain[1:-1] + [102] and scoring == [i != 1010 for i in ids]
  config = config_lib.load_config("configs/colbert_scifact.py")
  config.update_from_flattened_dict({"model.init": PYLATE_DIR, "model.prompts.query": "[Q] ",
                                     "model.prompts.document": "[D] ", "data.query_max_length": 16,
                                     "colbert.dim": 8, "colbert.attend_expansion": False})
  _, tokenizer, params = colbert.resolve_model(config)
  assert params["projection"]["kernel"].shape == (16, 8)
  assert tokenizer.token_ids(["[Q] a cat"])[0] == [101, 30522, 1037, 4937, 102]
