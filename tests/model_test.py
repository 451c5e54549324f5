"""The hashed dropout: right keep rate, unbiased, independent across seeds, deterministic per seed."""

import jax
import jax.numpy as jnp
import numpy as np

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
