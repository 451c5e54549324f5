"""Queries are not documents: prompts and Matryoshka truncation at inference, as sentence-transformers.

Encoder.encode(prompt_name=, prompt=, truncate_dim=) against hand-prepended texts and SentenceTransformer;
prompts through an export, a model directory and a training workdir; evaluation with query/document prompts
and truncated cosines; the CLI flags. Tiny random-init encoders with MiniLM's tokenizer, MiniLM itself once.
"""

import json
import math
import os
import sys

import jax
import numpy as np
import pytest
import scipy.stats

from neuralir_jax import checkpoint, cli, evaluate, hf_io, ir_metrics, tokenization, workdir
from neuralir_jax import encoder as encoder_lib
from neuralir_jax import model as model_lib
from train_helpers import tiny_config

PROMPTS = {"query": "query: ", "document": "passage: "}
ONE = jax.local_devices()[:1]  # Test encoders compile for one device: faster; 8 devices == 1 elsewhere.
TEXTS = ["A man is playing a guitar.", "", "Hi", "Two dogs run through a field of tall grass.",
         "The quick brown fox jumps over the lazy dog. " * 20]  # ~200 tokens: truncated to 64, prompt kept.


def _cosine(a, b):
  return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _small_config(normalize=True):
  bert = model_lib.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=128)
  return model_lib.EncoderConfig(bert=bert, pooling="mean", normalize=normalize, max_seq_length=64)


@pytest.fixture(scope="module")
def parts(minilm_path):
  config = _small_config()
  return config, jax.device_get(model_lib.init_params(config, jax.random.key(3))), \
      tokenization.Tokenizer(minilm_path, 64)


@pytest.fixture(scope="module")
def enc(parts):
  return encoder_lib.Encoder(*parts, prompts=PROMPTS, devices=ONE)


@pytest.fixture(scope="module")
def sentence_transformers():
  return pytest.importorskip("sentence_transformers")


# ----------------------------------------------------------------------------------------------------------
# Encoder semantics.


def test_prompt_is_prepended_and_resolved_as_sentence_transformers(enc, parts):
  plain = encoder_lib.Encoder(*parts, devices=ONE)
  assert plain.prompts == {"query": "", "document": ""}  # ST's defaults: both names exist, empty.
  query = enc.encode(TEXTS, prompt_name="query")
  np.testing.assert_allclose(query, enc.encode(["query: " + t for t in TEXTS]), atol=1e-6)
  np.testing.assert_allclose(enc.encode_query(TEXTS), query, atol=1e-6)
  np.testing.assert_allclose(enc.encode_document(TEXTS), enc.encode(TEXTS, prompt_name="document"), atol=1e-6)
  np.testing.assert_allclose(enc.encode(TEXTS, prompt="passage: "), enc.encode_document(TEXTS), atol=1e-6)
  np.testing.assert_allclose(enc.encode(TEXTS, prompt_name="query", prompt=""), enc.encode(TEXTS), atol=1e-6)
  assert _cosine(query, enc.encode(TEXTS)).max() < 0.9999  # The prompt changes the embedding.
  np.testing.assert_allclose(plain.encode_query(TEXTS), plain.encode(TEXTS), atol=1e-6)
  default = encoder_lib.Encoder(*parts, prompts=PROMPTS, default_prompt_name="query", devices=ONE)
  np.testing.assert_allclose(default.encode(TEXTS), query, atol=1e-6)
  np.testing.assert_allclose(default.encode(TEXTS, prompt=""), enc.encode(TEXTS), atol=1e-6)
  np.testing.assert_allclose(default.encode(TEXTS[0], prompt_name="query"), query[0], atol=1e-6)


def test_unknown_prompt_name_and_bad_settings_are_errors(enc, parts):
  with pytest.raises(ValueError, match=r"prompt_name='qeury' is not one of this model's prompts: "
                                       r"\['query', 'document'\]"):
    enc.encode(TEXTS, prompt_name="qeury")
  with pytest.raises(ValueError, match=r"default_prompt_name='passage' is not a prompt name"):
    encoder_lib.Encoder(*parts, prompts=PROMPTS, default_prompt_name="passage")
  with pytest.raises(TypeError, match=r"prompts\['query'\] = 3"):
    encoder_lib.Encoder(*parts, prompts={"query": 3})
  for bad in (0, 33, 2.5, True, -1):
    with pytest.raises(ValueError, match=rf"truncate_dim={bad!r}: pass an integer from 1 to 32"):
      enc.encode(TEXTS, truncate_dim=bad)
  with pytest.raises(ValueError, match="truncate_dim=64"):
    encoder_lib.Encoder(*parts, truncate_dim=64)


def test_truncate_dim_keeps_the_first_dims_not_renormalised(enc, parts):
  full = enc.encode(TEXTS, prompt_name="query")
  cut = enc.encode(TEXTS, prompt_name="query", truncate_dim=12)
  assert cut.shape == (len(TEXTS), 12)
  np.testing.assert_allclose(cut, full[:, :12], atol=1e-6)  # The model's Normalize, then truncation.
  assert np.linalg.norm(cut, axis=1).max() < 0.999
  unit = enc.encode(TEXTS, prompt_name="query", truncate_dim=12, normalize=True)  # ST normalize_embeddings.
  np.testing.assert_allclose(unit, full[:, :12] / np.linalg.norm(full[:, :12], axis=1, keepdims=True), atol=1e-6)
  raw = enc.encode(TEXTS, truncate_dim=12, normalize=False)
  np.testing.assert_allclose(raw, enc.encode(TEXTS, normalize=False)[:, :12], atol=1e-5)
  assert enc.encode(TEXTS[0], truncate_dim=12).shape == (12,) and enc.encode([], truncate_dim=12).shape == (0, 12)
  fixed = encoder_lib.Encoder(*parts, prompts=PROMPTS, truncate_dim=12, devices=ONE)
  assert fixed.dim == 12 and enc.dim == 32
  np.testing.assert_allclose(fixed.encode_query(TEXTS), cut, atol=1e-6)
  assert fixed.encode(TEXTS, truncate_dim=32).shape == (len(TEXTS), 32)  # The call's value wins.


# ----------------------------------------------------------------------------------------------------------
# sentence-transformers parity: export, model directories.


def test_export_gives_sentence_transformers_encode_query_and_document(enc, tmp_path, sentence_transformers):
  out = str(tmp_path / "prompted")
  enc.save_pretrained(out)
  with open(os.path.join(out, "config_sentence_transformers.json")) as f:
    saved = json.load(f)
  assert saved["prompts"] == PROMPTS and saved["default_prompt_name"] is None and "truncate_dim" not in saved
  with open(os.path.join(out, "README.md")) as f:
    assert "encode_query" in f.read()
  st = sentence_transformers.SentenceTransformer(out, device="cpu")
  for theirs, ours in ((st.encode_query(TEXTS), enc.encode(TEXTS, prompt_name="query")),
                       (st.encode_document(TEXTS), enc.encode(TEXTS, prompt_name="document")),
                       (st.encode(TEXTS), enc.encode(TEXTS))):
    assert theirs.shape == ours.shape and _cosine(theirs, ours).min() >= 0.99999
  st16 = sentence_transformers.SentenceTransformer(out, device="cpu", truncate_dim=16)
  for theirs, ours in ((st16.encode(TEXTS), enc.encode(TEXTS, truncate_dim=16)),
                       (st16.encode_query(TEXTS), enc.encode(TEXTS, prompt_name="query", truncate_dim=16))):
    assert theirs.shape == ours.shape == (len(TEXTS), 16)
    assert _cosine(theirs, ours).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), np.linalg.norm(ours, axis=1), atol=1e-5)
  reloaded = encoder_lib.load_encoder(out)
  assert reloaded.prompts == PROMPTS and reloaded.default_prompt_name is None and reloaded.truncate_dim is None
  np.testing.assert_allclose(reloaded.encode_query(TEXTS), enc.encode_query(TEXTS), atol=1e-6)
  assert encoder_lib.load_encoder(out, truncate_dim=16).encode(TEXTS).shape == (len(TEXTS), 16)


def test_default_prompt_and_truncate_dim_round_trip(parts, tmp_path, sentence_transformers):
  enc = encoder_lib.Encoder(*parts, prompts={**PROMPTS, "sts": "similar: "}, default_prompt_name="sts",
                            truncate_dim=8, devices=ONE)
  out = str(tmp_path / "defaults")
  enc.save_pretrained(out)
  st = sentence_transformers.SentenceTransformer(out, device="cpu")
  ours = enc.encode(TEXTS)
  assert st.truncate_dim == 8 and ours.shape == (len(TEXTS), 8)
  assert _cosine(st.encode(TEXTS), ours).min() >= 0.99999  # The default prompt applies, truncated to 8.
  assert _cosine(st.encode_query(TEXTS), enc.encode_query(TEXTS)).min() >= 0.99999
  reloaded = encoder_lib.load_encoder(out)
  assert (reloaded.default_prompt_name, reloaded.truncate_dim, reloaded.prompts["sts"]) == ("sts", 8, "similar: ")
  assert encoder_lib.load_encoder(out, truncate_dim=20).dim == 20  # The argument overrides the saved value.


def test_minilm_prompt_and_truncation_match_sentence_transformers(minilm_path, sentence_transformers):
  ours = encoder_lib.load_encoder(minilm_path, truncate_dim=128)
  assert ours.prompts == {"query": "", "document": ""} and ours.dim == 128
  st = sentence_transformers.SentenceTransformer(minilm_path, device="cpu", truncate_dim=128)
  for kwargs in ({}, {"prompt": "query: "}):
    theirs, mine = st.encode(TEXTS, **kwargs), ours.encode(TEXTS, **kwargs)
    assert theirs.shape == mine.shape == (len(TEXTS), 128)
    assert _cosine(theirs, mine).min() >= 0.99999
  assert _cosine(ours.encode(TEXTS, prompt="query: "), ours.encode(TEXTS)).min() < 0.999


def test_model_directory_prompt_errors(parts, tmp_path):
  out = str(tmp_path / "d")
  hf_io.save_hf_directory(out, parts[0], parts[1], parts[2], prompts=PROMPTS)
  file = os.path.join(out, "config_sentence_transformers.json")
  saved = json.load(open(file))
  for change, message in (({"prompts": {"query": 1}}, "prompts must map prompt names"),
                          ({"default_prompt_name": "nope"}, "default_prompt_name='nope' is not one of"),
                          ({"truncate_dim": 99}, "truncate_dim=99 must be an integer from 1 to 32")):
    with open(file, "w") as f:
      json.dump({**saved, **change}, f)
    with pytest.raises(hf_io.ModelDirectoryError, match=message):
      encoder_lib.load_encoder(out)
  with open(file, "w") as f:
    json.dump(saved, f)
  pooling = os.path.join(out, "1_Pooling", "config.json")
  with open(pooling) as f:
    cfg = json.load(f)
  with open(pooling, "w") as f:
    json.dump({**cfg, "include_prompt": False}, f)
  with pytest.raises(hf_io.ModelDirectoryError, match="include_prompt=false"):
    encoder_lib.load_encoder(out)
  with pytest.raises(ValueError, match="default_prompt_name='x'"):
    hf_io.save_hf_directory(str(tmp_path / "e"), parts[0], parts[1], parts[2], prompts=PROMPTS,
                            default_prompt_name="x")


# ----------------------------------------------------------------------------------------------------------
# A training workdir's model.prompts, and the CLI.


def _main(monkeypatch, argv):
  monkeypatch.setattr(sys, "argv", ["neuralir", *argv])
  monkeypatch.delenv("NEURALIR_DEBUG", raising=False)
  with pytest.raises(SystemExit) as e:
    cli.main()
  return e.value.code


@pytest.fixture(scope="module")
def prompted_workdir(tmp_path_factory, minilm_path):
  """A workdir holding one checkpoint of a tiny encoder whose config has query and document prompts."""
  path = str(tmp_path_factory.mktemp("workdir"))
  config = tiny_config(**{"model.bert.vocab_size": 30522, "model.bert.max_position_embeddings": 64,
                          "model.max_seq_length": 64, "model.prompts.query": "query: ",
                          "model.prompts.document": "passage: "})
  params = {"encoder": model_lib.init_params(model_lib.encoder_config(config.model), jax.random.key(5))}
  workdir.write_files(path, config.to_dict(), tokenization.Tokenizer(minilm_path, 64))
  mngr = checkpoint.manager(path, keep=1, async_save=False)
  checkpoint.save(mngr, 7, {"params": params}, {}, json.loads(json.dumps(config.to_dict(), default=str)))
  mngr.wait_until_finished()
  mngr.close()
  return path, config, params


def test_workdir_prompts_reach_the_encoder_export_and_training_side(prompted_workdir, minilm_path, tmp_path,
                                                                     monkeypatch, capsys, sentence_transformers):
  path, config, params = prompted_workdir
  trained = workdir.read(path)
  assert trained.prompts == PROMPTS and trained.step == 7
  assert workdir.TrainedModel({"model": {}}, {}, "", 0).prompts == {}  # A config from before prompts.
  enc = encoder_lib.load_encoder(path)
  assert enc.prompts == PROMPTS and enc.step == 7
  from neuralir_jax import bi_encoder  # The training side builds its evaluation Encoder the same way.
  assert bi_encoder.BiEncoder(config).encoder(params, enc.tokenizer).prompts == PROMPTS
  out = str(tmp_path / "exported")
  assert _main(monkeypatch, ["export", "--workdir", path, "--output", out]) == 0
  st = sentence_transformers.SentenceTransformer(out, device="cpu")
  assert _cosine(st.encode_query(TEXTS), enc.encode(TEXTS, prompt_name="query")).min() >= 0.99999
  assert _cosine(st.encode_document(TEXTS), enc.encode(TEXTS, prompt_name="document")).min() >= 0.99999

  texts = tmp_path / "texts.txt"
  texts.write_text("\n".join(TEXTS[:4]))
  npy = str(tmp_path / "q.npy")
  argv = ["encode", "--model", path, "--input", str(texts), "--output", npy]
  assert _main(monkeypatch, argv + ["--prompt-name", "query", "--truncate-dim", "8"]) == 0
  assert "4 x 8 float32" in capsys.readouterr().out
  np.testing.assert_allclose(np.load(npy), enc.encode(TEXTS[:4], prompt_name="query", truncate_dim=8), atol=1e-5)
  for extra, message in ((["--prompt-name", "qeury"], "prompt_name='qeury' is not one of this model's prompts"),
                         (["--truncate-dim", "0"], "truncate_dim=0: pass an integer from 1 to 32")):
    assert _main(monkeypatch, argv + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("neuralir: error: ") and message in err[-1], err
  assert _main(monkeypatch, ["eval", "--model", path, "--task", "sts:data/sts/sick_trial.tsv",
                             "--truncate-dim", "33"]) == 2
  assert "truncate_dim=33 is larger than the model's 32-dimensional" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Evaluation: retrieval with query/document prompts, cosines of truncated embeddings.


N = 6


class PromptWorld:
  """Query i's text alone points at document (i + 1) % N; with the "query: " prompt at document i, which
  qrels judge. So retrieval is perfect with prompts and finds nothing without them. Counts encode calls."""

  prompts = PROMPTS
  truncate_dim = None
  nli_head = None

  def __init__(self):
    self.calls = []

  def encode(self, texts, batch_size, show_progress, prompt_name=None):
    self.calls.append(prompt_name)
    rows = []
    for text in texts:
      prompt = self.prompts[prompt_name] if prompt_name else ""
      kind, i = text[0], int(text[1:])
      j = i if kind == "d" or prompt == "query: " else (i + 1) % N
      rows.append(np.eye(N + 1)[j] + 0.1 * np.eye(N + 1)[N] * (i + 1))  # Last dim: tells truncation apart.
    return np.stack(rows)

  def encode_query(self, texts, batch_size, show_progress):
    return self.encode(texts, batch_size, show_progress, prompt_name="query")

  def encode_document(self, texts, batch_size, show_progress):
    return self.encode(texts, batch_size, show_progress, prompt_name="document")


class NoPromptWorld(PromptWorld):
  encode_query = encode_document = None  # Not callable: evaluate falls back to encode.


def _beir(root, words=None):
  """N documents and queries, query i judged to match document i; texts "d{i}", "q{i}", or with `words`
  random word strings (so a random encoder ranks them neither perfectly nor the same with a prompt)."""
  rng = np.random.default_rng(0)
  text = (lambda kind, i: f"{kind}{i}") if words is None else (lambda kind, i: " ".join(rng.choice(words, 6)))
  corpus = {f"doc{i}": text("d", i) for i in range(N)}
  queries = {f"q{i}": text("q", i) for i in range(N)}
  os.makedirs(root / "qrels")
  (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                             for k, v in corpus.items()))
  (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
  (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                           + "".join(f"q{i}\tdoc{i}\t1\n" for i in range(N)))
  return f"beir:{root}", corpus, queries, {f"q{i}": {f"doc{i}": 1} for i in range(N)}


def test_retrieval_uses_query_and_document_prompts(tmp_path):
  task, *_ = _beir(tmp_path / "b")
  world, cache = PromptWorld(), {}
  prompted = evaluate.evaluate_tasks(world, [task], batch_size=4, encode_cache=cache)[task]
  assert prompted["ndcg@10"] == pytest.approx(1.0) and prompted["mrr@10"] == pytest.approx(1.0)
  assert sorted(world.calls) == ["document", "query"]
  plain = evaluate.evaluate_tasks(NoPromptWorld(), [task], batch_size=4)[task]
  assert plain["recall@10"] == 1.0 and plain["mrr@10"] < 0.5  # Found only below the wrong document.
  assert {key[0] for key in cache if key != "encoder"} == {("encode_query", None), ("encode_document", None)}
  # Truncated to N dims: the tie-breaking last dim is dropped, the prompted answer stays perfect, and
  # the cached (untruncated) embeddings are reused.
  cut = evaluate.evaluate_tasks(world, [task], batch_size=4, encode_cache=cache, truncate_dim=N)[task]
  assert cut["ndcg@10"] == pytest.approx(1.0) and len(world.calls) == 2
  with pytest.raises(ValueError, match="truncate_dim=0: pass a positive integer"):
    evaluate.evaluate_tasks(world, [task], truncate_dim=0)


def test_encoder_retrieval_equals_manual_prompted_truncated_cosines(enc, parts, tmp_path):
  words = "alpha beta gamma delta river stone cloud music table green quick seven".split()
  task, corpus, queries, qrels = _beir(tmp_path / "b", words)
  out = evaluate.evaluate_tasks(enc, [task], batch_size=8, truncate_dim=12)[task]
  q = enc.encode([queries[k] for k in qrels], prompt_name="query", truncate_dim=12)
  d = enc.encode(list(corpus.values()), prompt_name="document", truncate_dim=12)
  scores = evaluate.l2_normalize(q) @ evaluate.l2_normalize(d).T  # Cosines, as ST's evaluator.
  run = {qid: {doc: float(s) for doc, s in zip(corpus, row)} for qid, row in zip(qrels, scores)}
  manual = ir_metrics.compute_metrics(run, qrels, evaluate.RETRIEVAL_METRICS)
  for metric in evaluate.RETRIEVAL_METRICS:
    assert out[metric] == pytest.approx(manual[metric], abs=1e-9), metric
  plain = encoder_lib.Encoder(*parts, devices=ONE)
  without = evaluate.evaluate_tasks(plain, [task], batch_size=8, truncate_dim=12)[task]
  assert any(not math.isclose(out[m], without[m]) for m in evaluate.RETRIEVAL_METRICS), (out, without)


def test_sts_truncation_scores_truncated_cosines():
  rng = np.random.default_rng(0)
  table = {f"s{i}": rng.normal(size=8) for i in range(10)}
  records = [{"sentence1": f"s{i}", "sentence2": f"s{i + 1}", "score": float(i % 4)} for i in range(9)]
  encode = lambda texts: np.stack([table[t] for t in texts])  # noqa: E731
  out = evaluate.evaluate_sts(encode, records, truncate_dim=3)
  cos = [_cosine(table[r["sentence1"]][:3], table[r["sentence2"]][:3]) for r in records]
  assert out["spearman"] == pytest.approx(scipy.stats.spearmanr(cos, [r["score"] for r in records]).statistic)
  with pytest.raises(ValueError, match="truncate_dim=9 is larger than the 8 dimensions"):
    evaluate.evaluate_sts(encode, records, truncate_dim=9)
