"""Encoder: equals SentenceTransformer.encode on MiniLM, exports that PyTorch loads unchanged, few shapes."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import neuralir_jax
from neuralir_jax import encoder as encoder_lib
from neuralir_jax import model as model_lib
from neuralir_jax import tokenization

SENTENCES = [
    "A man is playing a guitar.",
    "",
    "Hi",
    "Ünïcödé: café, naïve, 東京タワー, Ελληνικά, emoji 🙂!",
    "What?!... (yes) -- \"quoted\" [brackets] {braces} #hashtag @user 3.14%",
    "Two dogs run through a field of tall grass, chasing a red ball thrown by a child.",
    "The stock market fell sharply on Tuesday after the central bank raised interest rates.",
    "The quick brown fox jumps over the lazy dog. " * 40,  # ~400 tokens: truncated to 256.
    "a",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "   leading and trailing spaces   ",
    "Is this the real life? Is this just fantasy?",
]


def _cosine(a, b):
  return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def encoder(minilm_path):
  return neuralir_jax.load_encoder(minilm_path)


@pytest.fixture(scope="module")
def ours(encoder):
  return encoder.encode(SENTENCES, batch_size=8)


@pytest.fixture(scope="module")
def sentence_transformers():
  return pytest.importorskip("sentence_transformers")


def test_matches_sentence_transformers(ours, minilm_path, sentence_transformers):
  st = sentence_transformers.SentenceTransformer(minilm_path, device="cpu")
  theirs = st.encode(SENTENCES, batch_size=5)
  assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
  cos = _cosine(ours, theirs)
  assert cos.min() >= 0.99999, cos
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # MiniLM has Normalize.
  assert _cosine(ours[0], ours[5]) < 0.9  # Different sentences: not a constant embedding.


def test_max_seq_length_setter_matches_sentence_transformers(minilm_path, sentence_transformers):
  short = neuralir_jax.load_encoder(minilm_path)
  short.max_seq_length = 8  # Most SENTENCES have more than 8 tokens: truncation changes their vectors.
  st = sentence_transformers.SentenceTransformer(minilm_path, device="cpu")
  st.max_seq_length = 8
  ours, theirs = short.encode(SENTENCES, batch_size=8), st.encode(SENTENCES, batch_size=5)
  assert _cosine(ours, theirs).min() >= 0.99999
  assert _cosine(ours[5], neuralir_jax.load_encoder(minilm_path).encode(SENTENCES[5])) < 0.99
  for bad in (0, 513, 8.0, True):
    with pytest.raises(ValueError, match=r"max_seq_length=.*: pass an integer from 1 to 512"):
      short.max_seq_length = bad


def test_order_batch_size_and_single_string(encoder, ours):
  shuffled = np.random.default_rng(0).permutation(len(SENTENCES))
  again = encoder.encode([SENTENCES[i] for i in shuffled], batch_size=8)
  np.testing.assert_allclose(again, ours[shuffled], atol=1e-5)
  one = encoder.encode(SENTENCES[5])
  assert one.shape == (384,)
  np.testing.assert_allclose(one, ours[5], atol=1e-5)
  assert encoder.encode([]).shape == (0, 384)


def test_normalize_override(encoder, ours):
  raw = encoder.encode(SENTENCES[:4], batch_size=8, normalize=False)
  norms = np.linalg.norm(raw, axis=1)
  assert norms.max() > 1.5  # MiniLM's mean-pooled states are far from unit length.
  np.testing.assert_allclose(raw / norms[:, None], ours[:4], atol=1e-5)


def test_non_string_items_raise_type_error(encoder):
  with pytest.raises(TypeError, match=r"texts\[2\] is int, not str"):
    encoder.encode(["a", "b", 3])
  with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
    encoder.encode([None])
  with pytest.raises(TypeError, match=r"texts is int"):
    encoder.encode(5)
  with pytest.raises(ValueError, match="batch_size"):
    encoder.encode(["a"], batch_size=0)


def _small_encoder(minilm_path, pooling="mean", normalize=False, seed=1, packing=True):
  bert = model_lib.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=128)
  config = model_lib.EncoderConfig(bert=bert, pooling=pooling, normalize=normalize, max_seq_length=64)
  params = model_lib.init_params(config, jax.random.key(seed))
  return encoder_lib.Encoder(config, params, tokenization.Tokenizer(minilm_path, 64), packing=packing)


@pytest.mark.parametrize("packing", [True, False])
def test_compiles_a_handful_of_shapes(minilm_path, packing):
  enc = _small_encoder(minilm_path, packing=packing)
  rng = np.random.default_rng(0)
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
  texts = [" ".join(rng.choice(words, size=rng.integers(0, 29))) for _ in range(180)]
  first = enc.encode(texts, batch_size=16)
  lengths = enc.tokenizer.token_lengths(texts)
  buckets = {tokenization.bucket_length(n, 64, enc.buckets) for n in lengths}
  assert len(buckets) <= 9  # 2..~45 tokens: 8, 12, 16, 20, 24, 28, 32, 40, 48.
  # Packed: 52 rows of 64 tokens in 4 calls, one shape for full calls and one for the last. Padded: 12
  # batches, but at most one shape per bucket plus one for the partial last batch.
  assert enc.num_traces <= (2 if packing else len(buckets) + 1), enc.num_traces
  traces = enc.num_traces
  np.testing.assert_allclose(enc.encode(texts[::-1], batch_size=16)[::-1], first, atol=1e-5)
  assert enc.num_traces == traces  # Same texts in another order: nothing new to compile.


@pytest.mark.parametrize("packing", [False, True])
def test_inference_in_row_chunks_equals_whole_batch(minilm_path, monkeypatch, packing):
  """On CPU the forward runs `inference_chunk` rows of every device at a time (lax.map over the rows of all
  8 devices): each text's embedding stays where it was."""
  rng = np.random.default_rng(1)
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
  texts = [" ".join(rng.choice(words, size=rng.integers(0, 29))) for _ in range(120)]
  whole = _small_encoder(minilm_path, packing=packing).encode(texts, batch_size=16)
  monkeypatch.setattr(model_lib, "_INFERENCE_CHUNK_TOKENS", 1)  # One row per device per step.
  assert model_lib.inference_chunk(16, 64, jax.device_count()) == 1 < 16 // jax.device_count()
  chunked = _small_encoder(minilm_path, packing=packing).encode(texts, batch_size=16)  # A new jit.
  np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)


def test_all_devices_equal_one_device(encoder, ours):
  assert len(encoder.devices) == len(jax.local_devices())
  one = encoder_lib.Encoder(encoder.config, encoder.params, encoder.tokenizer,
                            devices=jax.local_devices()[:1])
  np.testing.assert_allclose(one.encode(SENTENCES, batch_size=8), ours, atol=1e-5)


def test_bfloat16_compute_is_close(encoder, ours):
  bf16 = encoder_lib.Encoder(encoder.config, encoder.params, encoder.tokenizer, dtype=jnp.bfloat16)
  cos = _cosine(bf16.encode(SENTENCES, batch_size=8), ours)
  assert cos.min() > 0.99, cos


class _WarningRecords(logging.Handler):

  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def _assert_loads_cleanly_in_transformers(path):
  transformers = pytest.importorskip("transformers")
  records = _WarningRecords()
  library_logger = logging.getLogger("transformers")  # Does not propagate to root: caplog misses it.
  library_logger.addHandler(records)
  try:
    _, info = transformers.BertModel.from_pretrained(path, output_loading_info=True)
  finally:
    library_logger.removeHandler(records)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  assert not records.messages, records.messages


def test_export_round_trip(encoder, ours, tmp_path, sentence_transformers):
  out = str(tmp_path / "minilm_export")
  encoder.save_pretrained(out)
  theirs = sentence_transformers.SentenceTransformer(out, device="cpu").encode(SENTENCES, batch_size=5)
  assert _cosine(ours, theirs).min() >= 0.99999
  _assert_loads_cleanly_in_transformers(out)
  with open(os.path.join(out, "README.md")) as f:
    card = f.read()
  assert "SentenceTransformer(" in card and "mean pooling, 384 dimensions" in card
  reloaded = neuralir_jax.load_encoder(out)
  assert reloaded.config == encoder.config
  np.testing.assert_allclose(reloaded.encode(SENTENCES[:3]), ours[:3], atol=1e-6)


@pytest.mark.parametrize("pooling,normalize", [("cls", False), ("max", True)])
def test_random_init_export_matches_sentence_transformers(pooling, normalize, minilm_path, tmp_path,
                                                          sentence_transformers):
  enc = _small_encoder(minilm_path, pooling, normalize)
  ours = enc.encode(SENTENCES, batch_size=8)
  out = str(tmp_path / f"random_{pooling}")
  enc.save_pretrained(out)
  st = sentence_transformers.SentenceTransformer(out, device="cpu")
  assert st.max_seq_length == 64
  theirs = st.encode(SENTENCES, batch_size=5)
  assert _cosine(ours, theirs).min() >= 0.99999
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
  _assert_loads_cleanly_in_transformers(out)


def test_workdir_without_checkpoints_gives_clear_error(tmp_path):
  os.makedirs(tmp_path / "checkpoints")
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    neuralir_jax.load_encoder(str(tmp_path))