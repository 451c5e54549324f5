"""Golden values of every objective on hand-built embeddings."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from neuralir_jax import losses


def test_nli_softmax_head_golden():
  kernel = np.zeros((6, 3), np.float32)
  kernel[0] = [2, 0, -1]  # Reads u[0].
  kernel[4] = [0, 0, 3]  # Reads |u - v|[0]: catches a wrong [u; v; |u - v|] order.
  head = {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(3)}
  u = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  v = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  loss, accuracy = losses.nli_softmax_loss(head, u, v, jnp.array([0, 1]))
  # Logits [2, 0, -1] (label 0) and [0, 0, 3] (label 1).
  expected = (math.log(1 + math.exp(-2) + math.exp(-3)) + math.log(2 + math.exp(3))) / 2
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(loss, 1.6323835, rtol=1e-6)
  assert float(accuracy) == 0.5
  params = losses.init_nli_head(jax.random.PRNGKey(0), 4)
  assert params["kernel"].shape == (12, 3) and params["bias"].shape == (3,)


def test_sts_cosine_golden():
  u = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
  v = jnp.array([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
  loss = losses.sts_cosine_loss(u, v, jnp.array([5.0, 5.0, 2.5]))
  np.testing.assert_allclose(loss, (1.0 + 0.0 + (1 / math.sqrt(2) - 0.5) ** 2) / 3, rtol=1e-6)


def test_triplet_golden():
  a = jnp.zeros((2, 2))
  p = jnp.array([[3.0, 4.0], [1.0, 0.0]])  # Distances 5 and 1.
  n = jnp.array([[0.0, 1.0], [0.0, 3.0]])  # Distances 1 and 3.
  np.testing.assert_allclose(losses.triplet_loss(a, p, n, margin=1.0), (5 - 1 + 1 + 0) / 2, rtol=1e-6)
  np.testing.assert_allclose(losses.triplet_loss(a, p, n, margin=2.5), (6.5 + 0.5) / 2, rtol=1e-6)


def test_infonce_golden_with_hard_negative_and_mask():
  q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  cand = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # Positives, then a hard negative.
  labels = jnp.array([0, 1])
  e = math.e
  # Query 0 logits [1, 0, 1], query 1 logits [0, 1, 0] (tau = 1).
  expected = ((math.log(2 * e + 1) - 1) + (math.log(e + 2) - 1)) / 2
  np.testing.assert_allclose(losses.infonce(q, cand, labels, 1.0), expected, rtol=1e-6)
  # tau = 0.5 doubles the logits.
  expected = ((math.log(2 * e**2 + 1) - 2) + (math.log(e**2 + 2) - 2)) / 2
  np.testing.assert_allclose(losses.infonce(q, cand, labels, 0.5), expected, rtol=1e-6)
  # The hard negative has query 0's positive text: masked for query 0 only.
  mask = losses.false_negative_mask(jnp.array([7, 8]), jnp.array([7, 8, 7]), labels)
  np.testing.assert_array_equal(mask, [[False, False, True], [False, False, False]])
  expected = ((math.log(e + 1) - 1) + (math.log(e + 2) - 1)) / 2
  np.testing.assert_allclose(losses.infonce(q, cand, labels, 1.0, mask), expected, rtol=1e-6)


def test_learnable_temperature_is_clipped_at_one_over_100():
  tau, grad = jax.value_and_grad(losses.temperature_from_log)(jnp.log(0.001))
  np.testing.assert_allclose(tau, 0.01, rtol=1e-6)
  assert float(grad) == 0.0  # Past the clip the parameter gets no gradient.
  tau, grad = jax.value_and_grad(losses.temperature_from_log)(jnp.log(0.05))
  np.testing.assert_allclose([tau, grad], [0.05, 0.05], rtol=1e-6)
