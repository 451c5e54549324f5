"""Packing: the packer's layout (golden and invariants), packed model == unpacked model per text for every
pooling mode, and Encoder.encode packed == unpacked == SentenceTransformer. Tiny random BERTs, MiniLM once."""

import dataclasses
import functools
import json

import jax
import numpy as np
import pytest

import neuralir_jax
from neuralir_jax import encoder as encoder_lib
from neuralir_jax import evaluate, hf_io, packing, tokenization
from neuralir_jax import model as model_lib

ONE = jax.local_devices()[:1]  # Small encoders compile for one device: faster; MiniLM runs on all 8.
TEXTS = [
    "A man is playing a guitar.",
    "",
    "Hi",
    "Ünïcödé: café, naïve, 東京タワー, Ελληνικά, emoji 🙂!",
    "Two dogs run through a field of tall grass, chasing a red ball thrown by a child.",
    "The quick brown fox jumps over the lazy dog. " * 40,  # ~400 tokens: truncated, fills a row alone.
    "a",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Is this the real life? Is this just fantasy?",
]


def _cosine(a, b):
  return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _assert_same_embeddings(packed, unpacked):
  assert np.isfinite(packed).all()
  cos = _cosine(packed, unpacked)
  assert cos.min() >= 0.99999, cos
  np.testing.assert_allclose(packed, unpacked, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# The packer.


def test_assign_rows_golden():
  # Best-fit decreasing into rows of 8 tokens, 3 texts at most: 8 fills row 0; 6 opens row 1; 5 does not
  # fit its 2 free tokens and opens row 2; 3 fills row 2 exactly; the first 2 fills row 1; the second 2
  # opens row 3.
  row, slot, offset = packing.assign_rows([5, 3, 8, 2, 2, 6], row_length=8, max_slots=3)
  np.testing.assert_array_equal(row, [2, 2, 0, 1, 3, 1])
  np.testing.assert_array_equal(slot, [0, 1, 0, 1, 0, 0])
  np.testing.assert_array_equal(offset, [0, 5, 0, 6, 0, 0])
  # The slot cap binds: 7 one-token texts, 3 per row.
  row, slot, _ = packing.assign_rows([1] * 7, row_length=8, max_slots=3)
  np.testing.assert_array_equal(row, [0, 0, 0, 1, 1, 1, 2])
  np.testing.assert_array_equal(slot, [0, 1, 2, 0, 1, 2, 0])


def test_pack_golden():
  rows = packing.pack([[11, 12, 13], [14], [15, 16, 17, 18], [19, 20]], row_length=6, max_slots=2, pad_id=0,
                      min_rows=3)
  np.testing.assert_array_equal(rows.ids_RxL, [[15, 16, 17, 18, 19, 20], [11, 12, 13, 14, 0, 0], [0] * 6])
  np.testing.assert_array_equal(rows.segment_ids_RxL, [[1, 1, 1, 1, 2, 2], [1, 1, 1, 2, 0, 0], [0] * 6])
  np.testing.assert_array_equal(rows.position_ids_RxL, [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 0], [0] * 6])
  np.testing.assert_array_equal(rows.row_N, [1, 1, 0, 0])
  np.testing.assert_array_equal(rows.slot_N, [0, 1, 0, 1])
  for array in (rows.ids_RxL, rows.segment_ids_RxL, rows.position_ids_RxL, rows.row_N, rows.slot_N):
    assert array.dtype == np.int32


@pytest.mark.parametrize("max_slots", [5, 32])  # The slot cap binds (mean length ~7), or not.
def test_pack_places_every_text_once_within_limits_deterministically(max_slots):
  rng = np.random.default_rng(0)
  row_length = 32
  lengths = np.concatenate([rng.integers(1, 6, 300), rng.integers(1, row_length + 1, 100), [row_length] * 3])
  token_ids = [list(rng.integers(1, 1000, n)) for n in rng.permutation(lengths)]
  rows = packing.pack(token_ids, row_length, max_slots, pad_id=0)
  for i, ids in enumerate(token_ids):  # Each text is exactly its own segment: its tokens, in order,
    in_text = rows.segment_ids_RxL[rows.row_N[i]] == rows.slot_N[i] + 1
    np.testing.assert_array_equal(rows.ids_RxL[rows.row_N[i], in_text], ids)
    np.testing.assert_array_equal(rows.position_ids_RxL[rows.row_N[i], in_text], np.arange(len(ids)))
    assert np.all(np.diff(np.flatnonzero(in_text)) == 1)  # contiguous,
  assert (rows.segment_ids_RxL > 0).sum() == lengths.sum()  # and no token is placed twice.
  assert 0 <= rows.slot_N.min() and rows.slot_N.max() < max_slots
  assert rows.segment_ids_RxL.max() <= max_slots
  assert len(set(zip(rows.row_N.tolist(), rows.slot_N.tolist()))) == len(token_ids)
  np.testing.assert_array_equal(rows.ids_RxL[rows.segment_ids_RxL == 0], 0)
  np.testing.assert_array_equal(rows.position_ids_RxL[rows.segment_ids_RxL == 0], 0)
  if max_slots == row_length:  # Plain bin packing: within best-fit decreasing's worst case, 11/9 OPT.
    lower = -(-lengths.sum() // row_length)
    assert rows.ids_RxL.shape[0] <= 11 * lower // 9 + 1, (rows.ids_RxL.shape, lower)
  again = packing.pack(token_ids, row_length, max_slots, pad_id=0)
  for a, b in zip(dataclasses.astuple(rows), dataclasses.astuple(again)):
    np.testing.assert_array_equal(a, b)


def test_pack_rejects_texts_that_do_not_fit():
  with pytest.raises(ValueError, match=r"text lengths must be in \[1, row_length=4\]"):
    packing.pack([[1, 2, 3, 4, 5]], row_length=4, max_slots=2)
  with pytest.raises(ValueError, match=r"text lengths must be in \[1, row_length=4\]"):
    packing.pack([[1], []], row_length=4, max_slots=2)


# ----------------------------------------------------------------------------------------------------------
# The model: packed rows give each text the embedding it gets alone.


def _tiny_config(pooling, normalize=False, max_seq_length=16):
  # MiniLM's vocabulary (the encoders use its tokenizer); weights 10x BERT's init, so that attention moves
  # the embeddings enough for a text that sees its neighbours (or wrong positions) to fail the tests.
  bert = model_lib.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
  return model_lib.EncoderConfig(bert=bert, pooling=pooling, normalize=normalize,
                                 max_seq_length=max_seq_length)


@functools.cache
def _params(bert):
  """Random-init params of a BertConfig, shared by the tests (pooling and max length do not change them;
  an init compiles op by op: seconds)."""
  return model_lib.init_params(model_lib.EncoderConfig(bert=bert), jax.random.key(0))


def _packed_and_unpacked(config, params, token_ids, row_length, max_slots):
  """(per-text embeddings from packed rows, from one padded row per text, the rows, their [R, S, D] output).
  The rows end with all-padding rows (min_rows) so that empty rows are exercised too."""
  module = model_lib.SentenceEncoder(config)
  rows = packing.pack(token_ids, row_length, max_slots, min_rows=len(token_ids))
  packed_fn = jax.jit(lambda p, *x: module.apply({"params": p}, *x, max_slots, method="packed"))
  emb_RxSxD = np.asarray(packed_fn(params, rows.ids_RxL, rows.segment_ids_RxL, rows.position_ids_RxL))
  ids = np.zeros((len(token_ids), row_length), np.int32)
  mask = np.zeros_like(ids)
  for i, x in enumerate(token_ids):
    ids[i, :len(x)], mask[i, :len(x)] = x, 1
  unpacked = np.asarray(jax.jit(lambda p, i, m: module.apply({"params": p}, i, m))(params, ids, mask))
  return rows.gather(emb_RxSxD), unpacked, rows, emb_RxSxD


@pytest.mark.parametrize("pooling,normalize", [("mean", False), ("cls", False), ("max", True)])
def test_packed_equals_unpacked_random_bert(pooling, normalize):
  config = _tiny_config(pooling, normalize)
  params = _params(config.bert)
  rng = np.random.default_rng(1)
  # Lengths 1, 2 and 3, two texts that fill a row alone, and many short texts sharing rows.
  lengths = [1, 2, 3, 16, 16, 12, 9, 5] + list(rng.integers(1, 5, 12))
  token_ids = [list(rng.integers(1, 200, n)) for n in lengths]
  packed, unpacked, rows, emb_RxSxD = _packed_and_unpacked(config, params, token_ids, 16, 6)
  assert rows.slot_N.max() == 5  # Some row holds 6 texts.
  _assert_same_embeddings(packed, unpacked)
  assert _cosine(unpacked[5], unpacked[6]).max() < 0.99  # Not a constant embedding.
  used = np.zeros(emb_RxSxD.shape[:2], bool)
  used[rows.row_N, rows.slot_N] = True
  assert np.isfinite(emb_RxSxD).all() and np.all(emb_RxSxD[~used] == 0)  # Empty slots and rows: zeros.


def test_packed_equals_unpacked_minilm_mean(minilm_path):
  config, params, tokenizer = hf_io.load_hf_directory(minilm_path)
  config = dataclasses.replace(config, normalize=False)  # Raw mean-pooled states: the stricter test.
  token_ids = tokenizer.token_ids(TEXTS, 48) + [[101], [101, 102]]  # [CLS] alone; an empty text.
  packed, unpacked, rows, _ = _packed_and_unpacked(config, params, token_ids, 48, 8)
  assert rows.slot_N.max() >= 3  # Texts share rows.
  _assert_same_embeddings(packed, unpacked)


# ----------------------------------------------------------------------------------------------------------
# Encoder.encode.


@pytest.fixture(scope="module")
def sentence_transformers():
  return pytest.importorskip("sentence_transformers")


def test_encode_packed_equals_unpacked_and_sentence_transformers(minilm_path, sentence_transformers):
  packed_encoder = neuralir_jax.load_encoder(minilm_path, packing=True)
  unpacked_encoder = neuralir_jax.load_encoder(minilm_path, packing=False)
  texts = TEXTS + ["Hi"] * 3 + ["A short one.", "b"]
  packed = packed_encoder.encode(texts, batch_size=8)  # 2 rows of 256 tokens (13 texts share one).
  unpacked = unpacked_encoder.encode(texts, batch_size=8)
  _assert_same_embeddings(packed, unpacked)
  theirs = sentence_transformers.SentenceTransformer(minilm_path, device="cpu").encode(texts, batch_size=5)
  _assert_same_embeddings(packed, theirs)
  np.testing.assert_allclose(packed_encoder.encode(texts[5]), packed[5], atol=1e-5)


def _small_encoder(minilm_path, packing_on, pooling="mean", normalize=True):
  config = _tiny_config(pooling, normalize, max_seq_length=64)
  tokenizer = tokenization.Tokenizer(minilm_path, 64)
  return encoder_lib.Encoder(config, _params(config.bert), tokenizer, devices=ONE,
                             prompts={"query": "query: "}, packing=packing_on)


@pytest.mark.parametrize("pooling,kwargs", [("cls", {"prompt_name": "query", "truncate_dim": 12}),
                                            ("max", {"truncate_dim": 8, "normalize": True})])
def test_encode_packed_equals_unpacked_with_prompt_and_truncation(minilm_path, pooling, kwargs):
  packed, unpacked = (_small_encoder(minilm_path, on, pooling) for on in (True, False))
  _assert_same_embeddings(packed.encode(TEXTS, batch_size=2, **kwargs),  # 3 rows of 64, 2 calls.
                          unpacked.encode(TEXTS, batch_size=16, **kwargs))


def test_encode_compiles_two_shapes_per_row_length(minilm_path):
  enc = _small_encoder(minilm_path, True)
  rng = np.random.default_rng(0)
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
  texts = [" ".join(rng.choice(words, size=rng.integers(0, 29))) for _ in range(300)]
  first = enc.encode(texts, batch_size=8)  # 5,190 tokens: 84 rows of 64 in 11 calls.
  assert enc.num_traces <= 2, enc.num_traces  # Full calls, and the last one (fewer rows).
  np.testing.assert_allclose(enc.encode(texts[::-1], batch_size=8)[::-1], first, atol=1e-5)
  assert enc.num_traces <= 2, enc.num_traces  # Another order packs other rows, in the same shapes.


def test_retrieval_evaluation_is_unchanged_by_packing(minilm_path, tmp_path):
  rng = np.random.default_rng(0)
  words = "a man woman plays guitar piano dog runs cat sleeps on the grass red ball".split()
  sentence = lambda: " ".join(rng.choice(words, rng.integers(1, 12)))
  (tmp_path / "qrels").mkdir()
  (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": sentence()})
                                                 + "\n" for i in range(30)))
  (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": sentence()}) + "\n"
                                                  for i in range(10)))
  (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                               + "".join(f"q{i}\td{3 * i}\t1\n" for i in range(10)))
  task = f"beir:{tmp_path}:test"  # Queries with the "query: " prompt (encode_query), the corpus without.
  packed, unpacked = (evaluate.evaluate_tasks(_small_encoder(minilm_path, on), [task], batch_size=32)[task]
                      for on in (True, False))
  for name in ("ndcg@10", "mrr@10", "map"):
    assert packed[name] == pytest.approx(unpacked[name], abs=1e-6), name
