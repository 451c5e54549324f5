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


def _contrastive_inputs(b=12, k=2, dim=16, seed=0):
  rng = np.random.RandomState(seed)
  unit = lambda x: jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), jnp.float32)  # noqa: E731
  embs = (unit(rng.randn(b, dim)), unit(rng.randn(b, dim)), unit(rng.randn(b, k, dim)))
  # Few distinct hashes, so that many candidates are masked: other positives of a query, shared negatives.
  hashes = dict(q_hash_b=jnp.asarray(rng.randint(0, 5, b), jnp.int32),
                pos_hash_b=jnp.asarray(rng.randint(0, 6, b), jnp.int32),
                neg_hash_bxK=jnp.asarray(rng.randint(0, 6, (b, k)), jnp.int32))
  hashes["judged_hash_bxP"] = jnp.stack([hashes["pos_hash_b"], jnp.asarray(rng.randint(0, 6, b), jnp.int32)], 1)
  return embs, hashes


def test_tiled_infonce_equals_dense_in_value_and_gradients():
  """Tiled walks of 1, 7 (not a divisor of the 36 candidates) and 100 candidates per block give the dense
  loss, its gradients for queries, positives, negatives and the log-temperature, and the same
  negatives-per-query count, with false-negative masks and the symmetric term on."""
  embs, hashes = _contrastive_inputs()

  def run(implementation, block):
    def loss(q, pos, neg, log_tau):
      return losses.contrastive_loss(q, pos, neg, temperature=jnp.exp(log_tau), symmetric=True,
                                     implementation=implementation, block_size=block, **hashes)
    value_and_grad = jax.jit(jax.value_and_grad(lambda *a: loss(*a)[0], argnums=(0, 1, 2, 3)))
    return value_and_grad(*embs, jnp.float32(math.log(0.05))), float(jax.jit(lambda *a: loss(*a)[1])(
        *embs, jnp.float32(math.log(0.05))))

  (ref_loss, ref_grads), ref_count = run("dense", 0)
  assert ref_count < 35  # Some of the 36 - 1 candidates are masked.
  for block in (1, 7, 100):
    (loss, grads), count = run("tiled", block)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
    for got, want in zip(grads, ref_grads):
      np.testing.assert_allclose(got, want, atol=1e-5)
    assert count == ref_count
  assert float(jnp.abs(ref_grads[3])) > 1e-3  # The temperature gradient is live.


def test_tiled_infonce_memory_follows_the_block():
  """Compiled temp memory of loss + gradients at 256 queries x 16,384 candidates: the dense [256, 16384]
  logits need several times what blocks of 512 do."""
  rng = np.random.RandomState(0)
  q = jnp.asarray(rng.randn(256, 32), jnp.float32)
  cand = jnp.asarray(rng.randn(16384, 32), jnp.float32)
  labels = jnp.arange(256)

  def temp_bytes(fn):
    grad = jax.jit(jax.grad(fn, argnums=(0, 1)))
    return grad.lower(q, cand).compile().memory_analysis().temp_size_in_bytes

  dense = temp_bytes(lambda q, c: losses.infonce(q, c, labels))
  tiled = temp_bytes(lambda q, c: losses.tiled_infonce(q, c, labels, block_size=512))
  assert dense > 16 * 2**20 > 4 * tiled, (dense, tiled)  # Logits alone: 256 * 16384 * 4 bytes = 16 MiB.


def test_sigmoid_loss_golden_against_numpy():
  """SigLIP's loss on hand-checkable candidates: every (query, candidate) pair is a +1 (its positive) or -1
  term, judged positives by hash are left out; blocks of 1, 4 and 100 candidates give the same value."""
  embs, hashes = _contrastive_inputs(b=6, k=1, dim=8, seed=3)
  q, pos, neg = (np.asarray(x) for x in embs)
  log_scale, bias = np.float32(math.log(10.0)), np.float32(-2.0)
  cand = np.concatenate([pos, neg.reshape(-1, 8)])
  cand_hash = np.concatenate([np.asarray(hashes["pos_hash_b"]), np.asarray(hashes["neg_hash_bxK"]).reshape(-1)])
  judged = np.asarray(hashes["judged_hash_bxP"])
  total = 0.0
  for i in range(6):
    for c in range(12):
      if c != i and cand_hash[c] in judged[i]:
        continue  # Another judged positive of query i: neither positive nor negative.
      z = 1.0 if c == i else -1.0
      total += math.log(1 / (1 + math.exp(-z * (10.0 * float(q[i] @ cand[c]) + bias))))
  expected = -total / 6
  for block in (1, 4, 100):
    got = losses.sigmoid_loss(*embs, log_scale=jnp.float32(log_scale), bias=jnp.float32(bias),
                              pos_hash_b=hashes["pos_hash_b"], neg_hash_bxK=hashes["neg_hash_bxK"],
                              judged_hash_bxP=hashes["judged_hash_bxP"], block_size=block)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
  unmasked = losses.sigmoid_loss(*embs, log_scale=jnp.float32(log_scale), bias=jnp.float32(bias))
  assert float(unmasked) > expected + 1e-3  # The masks left terms out.
