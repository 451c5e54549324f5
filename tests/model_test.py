"""The hashed dropout (right keep rate, unbiased, independent across seeds, deterministic per seed), CPU
inference attention computed in chunks of the batch (same hidden states), inference row chunks' sizes, and
LayerNorm (row means as matrix-vector products on CPU) == flax's nn.LayerNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuralir_jax import model as model_lib
from neuralir_jax.model import Dropout


def _mask(rng, shape=(512, 1024), rate=0.1):
  x = jnp.ones(shape, jnp.float32)
  y = Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": rng})
  return np.asarray(y)


def test_keep_rate_scale_and_independence():
  a, b = _mask(jax.random.key(0)), _mask(jax.random.key(1))
  n = a.size
  keep_a, keep_b = a > 0, b > 0
  sigma = np.sqrt(0.9 * 0.1 / n)
  assert abs(keep_a.mean() - 0.9) < 5 * sigma
  np.testing.assert_allclose(a[keep_a], 1 / 0.9, rtol=1e-6)  # Inverted dropout keeps the expectation.
  assert abs(a.mean() - 1.0) < 5 * sigma / 0.9
  both = (keep_a & keep_b).mean()
  assert abs(both - 0.81) < 5 * np.sqrt(0.81 * 0.19 / n)  # Masks of two seeds are independent.
  rows = keep_a.mean(1)  # Per-row keep rates spread binomially, not in stripes.
  assert abs(rows.std() - np.sqrt(0.09 / 1024)) < 0.3 * np.sqrt(0.09 / 1024)


def test_same_rng_same_mask_and_deterministic_is_identity():
  np.testing.assert_array_equal(_mask(jax.random.key(3)), _mask(jax.random.key(3)))
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(Dropout(0.5).apply({}, x, deterministic=True), x)


def test_attention_chunk_sizes():
  # 64 x 12 x 256 x 256 fp32 scores are 192 MiB: 2 examples (6 MiB) at a time fit the 8 MiB budget.
  assert model_lib.attention_chunk(64, 12, 256, 256) == 2
  assert model_lib.attention_chunk(64, 12, 32, 32) == 64  # 3 MiB of scores: the whole batch at once.
  assert model_lib.attention_chunk(11, 12, 256, 256) == 1  # The largest divisor that fits.
  assert model_lib.attention_chunk(96, 12, 128, 128) == 8
  assert model_lib.attention_chunk(768, 12, 128, 128, devices=8) == 8  # Per device: 96 rows.
  assert model_lib.attention_chunk(96, 12, 128, 128, devices=8) == 12  # 9 MiB per device: whole.


def test_inference_chunk_sizes():
  # At most _INFERENCE_CHUNK_TOKENS (1,024) tokens per device: the largest divisor of its rows that fits.
  assert model_lib.inference_chunk(64, 256) == 4
  assert model_lib.inference_chunk(64, 32) == 32
  assert model_lib.inference_chunk(64, 8) == 64  # 512 tokens: all rows at once.
  assert model_lib.inference_chunk(11, 256) == 1  # 11 is prime: one row at a time.
  assert model_lib.inference_chunk(12, 512) == 2
  assert model_lib.inference_chunk(4, 2048) == 1  # A row longer than the budget: still one row.
  assert model_lib.inference_chunk(512, 128, devices=8) == 8  # Per device: 64 rows.


def test_layer_norm_equals_flax():
  """Same params (names, shapes, init) and values as nn.LayerNorm, also for rows far from zero mean."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 5, 384)) * 4 + rng.standard_normal((3, 5, 1)) * 50, jnp.float32)
  ours, flax = model_lib.LayerNorm(1e-12), model_lib.nn.LayerNorm(epsilon=1e-12)
  ours_params, flax_params = ours.init(jax.random.key(0), x), flax.init(jax.random.key(0), x)
  assert jax.tree.map(np.shape, ours_params) == jax.tree.map(np.shape, flax_params)
  np.testing.assert_array_equal(ours_params["params"]["scale"], flax_params["params"]["scale"])
  params = {"params": {"scale": jnp.asarray(rng.standard_normal(384), jnp.float32),
                       "bias": jnp.asarray(rng.standard_normal(384), jnp.float32)}}
  x64, scale, bias = (np.asarray(a, np.float64) for a in (x, params["params"]["scale"], params["params"]["bias"]))
  centered = x64 - x64.mean(-1, keepdims=True)
  want = centered / np.sqrt((centered**2).mean(-1, keepdims=True) + 1e-12) * scale + bias
  ours_error = np.abs(np.asarray(ours.apply(params, x)) - want).max()
  flax_error = np.abs(np.asarray(flax.apply(params, x)) - want).max()
  # Centred (two-pass) variance: closer to float64 than flax's E[x^2] - E[x]^2 for rows at mean ~50.
  assert ours_error <= 5e-6 and ours_error <= flax_error, (ours_error, flax_error)
  bf16 = model_lib.LayerNorm(1e-12, jnp.bfloat16).apply(params, x)
  assert bf16.dtype == jnp.bfloat16


@pytest.mark.parametrize("packed", [False, True])
def test_chunked_inference_attention_equals_whole_batch(monkeypatch, packed):
  """On CPU, inference attention runs a few examples per device at a time: same hidden states."""
  config = model_lib.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=40)
  bert = model_lib.Bert(config)
  batch = 2 * jax.device_count()  # The tests run on 8 (fake) devices: 2 rows per device.
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(1, 50, (batch, 24)), jnp.int32)
  mask = jnp.asarray(np.arange(24)[None] < rng.integers(1, 25, (batch, 1)), jnp.int32)
  extra = {}
  if packed:
    segments = np.where(np.arange(24) < 10, 1, 2)[None].repeat(batch, 0) * np.asarray(mask)
    extra = dict(segment_ids_BxL=jnp.asarray(segments), position_ids_BxL=model_lib.segment_positions(segments))
  params = bert.init(jax.random.key(0), ids, mask)
  whole = bert.apply(params, ids, mask, **extra)  # Not jitted: jit would reuse the trace (and its chunks).
  monkeypatch.setattr(model_lib, "_ATTENTION_WHOLE_BYTES", 0)
  monkeypatch.setattr(model_lib, "_ATTENTION_CHUNK_BYTES", 4 * 24 * 24 * 4)  # 1 example per device per step.
  assert model_lib.attention_chunk(batch, 4, 24, 24, jax.device_count()) == 1
  chunked = bert.apply(params, ids, mask, **extra)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-6, atol=1e-6)
