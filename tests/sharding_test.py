"""8 fake CPU devices == 1 device: cross-device InfoNCE (alignment, local vs global, masks) and train steps."""

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from neuralir_jax import bi_encoder, config_lib, losses, sharding  # noqa: E402
from neuralir_jax.model import EncoderConfig, BertConfig, init_params  # noqa: E402
from train_helpers import max_abs_diff, random_batch, run_steps, tiny_config  # noqa: E402

B, K, D, NDEV = 16, 2, 4, 8
b = B // NDEV
TOL = 1e-5


def _embeddings(seed=0):
  rng = np.random.RandomState(seed)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  return (unit(rng.randn(B, D)).astype(np.float32), unit(rng.randn(B, D)).astype(np.float32),
          unit(rng.randn(B, K, D)).astype(np.float32))


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def mesh8():
  assert len(jax.devices()) >= NDEV, "tests need jax_num_cpu_devices=8 set before JAX starts"
  return sharding.make_mesh(NDEV)


def _per_device(mesh, fn, *args):
  """Runs fn on each device's rows (split over "data"); stacks each device's outputs on axis 0."""
  out = jax.shard_map(lambda *a: jax.tree.map(lambda x: jnp.asarray(x)[None], fn(*a)), mesh=mesh,
                      in_specs=P("data"), out_specs=P("data"))(*args)
  return jax.device_get(out)


def test_make_mesh_and_fsdp_specs():
  assert sharding.make_mesh([("data", -1)]).shape["data"] == len(jax.devices())
  assert sharding.make_mesh(2).shape["data"] == 2
  with pytest.raises(ValueError, match="devices are available"):
    sharding.make_mesh(64)
  assert sharding.fsdp_spec((100, 32), 8) == P(None, "data")
  assert sharding.fsdp_spec((64, 32), 8) == P("data", None)
  assert sharding.fsdp_spec((3,), 8) == P()
  assert sharding.fsdp_spec((), 8) == P()
  params = init_params(EncoderConfig(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=4, intermediate_size=64)),
                       jax.random.PRNGKey(0))
  shardings = sharding.param_shardings(params, sharding.make_mesh(8), fsdp=True)
  assert shardings["bert"]["layer_0"]["intermediate"]["kernel"].spec == P(None, "data")
  assert shardings["bert"]["word_embeddings"]["embedding"].spec == P(None, "data")


def test_global_candidates_keep_hard_negatives_aligned(mesh8):
  q, p, n = _embeddings()

  def fn(q, p, n):
    cand, labels, _ = losses.gather_candidates(p, n, axis_name="data", negatives="global")
    return cand, labels, losses.infonce_logits(q, cand, 1.0)

  cand, labels, logits = _per_device(mesh8, fn, q, p, n)
  expected_cand = np.concatenate([p, n.reshape(B * K, D)])
  for dev in range(NDEV):
    np.testing.assert_array_equal(cand[dev], expected_cand)
    np.testing.assert_array_equal(labels[dev], dev * b + np.arange(b))
  logits = logits.reshape(B, B * (1 + K))
  np.testing.assert_allclose(logits, q @ expected_cand.T, atol=1e-6)
  for g in range(B):  # Query g's own hard negatives, wherever its device is.
    for j in range(K):
      np.testing.assert_allclose(logits[g, B + g * K + j], q[g] @ n[g, j], atol=1e-6)


def test_local_negatives_are_the_device_blocks_of_global(mesh8):
  q, p, n = _embeddings(1)

  def fn(q, p, n):
    cand, labels, _ = losses.gather_candidates(p, n, axis_name="data", negatives="local")
    return labels, losses.infonce_logits(q, cand, 1.0)

  labels, logits_local = _per_device(mesh8, fn, q, p, n)
  assert logits_local.shape == (NDEV, b, b * (1 + K))
  full = q @ np.concatenate([p, n.reshape(B * K, D)]).T
  for dev in range(NDEV):
    np.testing.assert_array_equal(labels[dev], np.arange(b))
    rows = slice(dev * b, (dev + 1) * b)
    own_pos = full[rows, dev * b:(dev + 1) * b]
    own_neg = full[rows, B + dev * b * K:B + (dev + 1) * b * K]
    np.testing.assert_allclose(logits_local[dev], np.concatenate([own_pos, own_neg], 1), atol=1e-6)


@pytest.mark.parametrize("negatives", ["global", "local"])
def test_contrastive_loss_matches_numpy(mesh8, negatives):
  q, p, n = _embeddings(2)
  rng = np.random.RandomState(3)
  q_hash, p_hash, n_hash = (rng.randint(0, 1 << 30, s).astype(np.int32) for s in ((B,), (B,), (B, K)))
  p_hash[9] = p_hash[2]  # Query 2's positive text is also query 9's positive, on another device.
  n_hash[5, 1] = p_hash[5]  # Query 5's second hard negative has its positive's text.
  q_hash[10] = q_hash[1]
  tau = 0.1

  def fn(q, p, n, qh, ph, nh):
    return losses.contrastive_loss(q, p, n, temperature=tau, axis_name="data", negatives=negatives,
                                     symmetric=True, q_hash_b=qh, pos_hash_b=ph, neg_hash_bxK=nh)

  loss, npq = _per_device(mesh8, fn, q, p, n, q_hash, p_hash, n_hash)
  groups = [np.arange(B)] if negatives == "global" else [np.arange(d * b, (d + 1) * b) for d in range(NDEV)]
  expected, expected_npq = [], []
  for rows in groups:  # One candidate pool per group of queries.
    cand = np.concatenate([p[rows], n[rows].reshape(-1, D)])
    cand_hash = np.concatenate([p_hash[rows], n_hash[rows].reshape(-1)])
    logits = q[rows] @ cand.T / tau
    masked = (p_hash[rows][:, None] == cand_hash[None]) & (np.arange(len(cand))[None] != np.arange(len(rows))[:, None])
    fwd = -_np_log_softmax(np.where(masked, -1e9, logits))[np.arange(len(rows)), np.arange(len(rows))]
    logits_sym = p[rows] @ q[rows].T / tau
    masked_sym = (q_hash[rows][:, None] == q_hash[rows][None]) & ~np.eye(len(rows), dtype=bool)
    bwd = -_np_log_softmax(np.where(masked_sym, -1e9, logits_sym))[np.arange(len(rows)), np.arange(len(rows))]
    expected.append(0.5 * (fwd + bwd))
    expected_npq.append(len(cand) - 1 - masked.sum(-1))
  per_query = np.concatenate(expected)
  np.testing.assert_allclose(loss.mean(), per_query.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, per_query.reshape(NDEV, b).mean(1), rtol=1e-5)
  # Unmasked counts: global B * (1 + k) - 1 = 47, local b * (1 + k) - 1 = 5.
  unmasked = B * (1 + K) - 1 if negatives == "global" else b * (1 + K) - 1
  np.testing.assert_allclose(npq, np.concatenate(expected_npq).reshape(NDEV, b).mean(1))
  assert np.concatenate(expected_npq).max() == unmasked


def test_make_global_batch_and_pmap_split(mesh8):
  batch = random_batch(16, 8, K)
  global_batch = sharding.make_global_batch(batch, mesh8)
  assert global_batch["negative_ids"].shape == (16, K, 8)
  assert global_batch["anchor_ids"].sharding.spec == P("data")
  np.testing.assert_array_equal(np.asarray(global_batch["label"]), batch["label"])
  split = sharding.split_for_pmap(batch, 8)
  assert split["negative_ids"].shape == (8, 2, K, 8)
  np.testing.assert_array_equal(split["anchor_ids"][3], batch["anchor_ids"][6:8])
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    sharding.split_for_pmap({"x": np.zeros((12, 3))}, 8)
  with pytest.raises(ValueError, match="multiple of 8"):
    config_lib.validate(tiny_config(batch_size=12), num_devices=8)


# --- Train steps: 8 devices == 1 device ------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_device():
  return run_steps(tiny_config(), 1)


@pytest.mark.parametrize("strategy,fsdp,implementation", [("pjit", False, "dense"), ("pmap", False, "dense"),
                                                         ("pjit", True, "dense"), ("pjit", False, "tiled"),
                                                         ("pmap", False, "tiled")])
def test_eight_devices_equal_one(single_device, strategy, fsdp, implementation):
  """Every objective (tiny_config turns them all on), the dense 1-device reference; "tiled" walks the
  InfoNCE candidates in blocks of 5 (48 global candidates: 10 blocks, the last one padded)."""
  run = run_steps(tiny_config(**{"parallel.strategy": strategy, "parallel.fsdp": fsdp,
                            "infonce.implementation": implementation, "infonce.block_size": 5}), NDEV)
  if "grads" in run:
    loss, metrics, grads = run["grads"]
    ref_loss, ref_metrics, ref_grads = single_device["grads"]
    np.testing.assert_allclose(loss, ref_loss, atol=TOL)
    assert set(metrics) == set(ref_metrics) >= {"loss/nli_softmax", "loss/sts_cosine", "loss/triplet",
                                                "loss/infonce", "loss/sigmoid", "nli_accuracy", "temperature",
                                                "negatives_per_query"}
    for name in ref_metrics:
      np.testing.assert_allclose(metrics[name], ref_metrics[name], atol=TOL, err_msg=name)
    assert max_abs_diff(grads, ref_grads) <= TOL
    assert set(grads) == {"encoder", "heads", "log_temperature", "sigmoid"}
    assert min(abs(float(g)) for g in jax.tree.leaves(grads["sigmoid"])) > 1e-4  # Scale and bias learn.
  for got, ref in zip(run["metrics"], single_device["metrics"]):
    assert set(got) == set(ref) >= {"loss", "grad_norm", "lr"}
    for name in ref:  # grad_norm ~28: a float32 sum of squares in another order differs by ~1 ulp of it.
      np.testing.assert_allclose(got[name], ref[name], rtol=1e-6, atol=TOL, err_msg=name)
  assert max_abs_diff(run["params"], single_device["params"]) <= TOL
  # Learning happened: params moved by more than the tolerance.
  assert max_abs_diff(run["params"]["heads"], jax.device_get(
      bi_encoder.BiEncoder(tiny_config()).init_params(jax.random.split(jax.random.PRNGKey(0))[0])["heads"])) > 100 * TOL


def test_negatives_per_query_metric(single_device):
  # Global: 16 * (1 + 2) - 1 = 47 candidates, minus query 3's and 12's shared positive text (2 of 16 rows).
  np.testing.assert_allclose(single_device["metrics"][0]["negatives_per_query"], 47 - 2 / 16)
