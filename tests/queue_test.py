"""Negative queue: golden loss against numpy, 8 devices == 1 over steps that fill it, and off == today."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuralir_jax import config_lib, losses, negative_queue
from train_helpers import run_steps, tiny_config

B, K, D, Q = 6, 2, 4, 8


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _setup(seed=0):
  rng = np.random.RandomState(seed)
  q, p, n = _unit(rng.randn(B, D)), _unit(rng.randn(B, D)), _unit(rng.randn(B, K, D))
  p_hash, n_hash = rng.randint(0, 2**30, (B,)).astype(np.int32), rng.randint(0, 2**30, (B, K)).astype(np.int32)
  queue = {"emb": _unit(rng.randn(Q, D)), "hash": rng.randint(0, 2**30, (Q,)).astype(np.int32),
           "valid": np.array([1, 1, 1, 1, 1, 0, 0, 1], bool)}
  queue["hash"][2] = p_hash[4]  # An earlier copy of query 4's positive: masked for query 4 only.
  queue["hash"][6] = p_hash[1]  # Same, but in an empty slot: masked anyway.
  return q, p, n, p_hash, n_hash, queue


@pytest.mark.parametrize("implementation", ["dense", "tiled"])
def test_queue_loss_golden_against_numpy(implementation):
  q, p, n, p_hash, n_hash, queue = _setup()
  loss, npq = losses.contrastive_loss(
      q, p, n, temperature=0.05, pos_hash_b=p_hash, neg_hash_bxK=n_hash, implementation=implementation,
      block_size=5, queue=jax.tree.map(jnp.asarray, queue))
  cands = np.concatenate([p, n.reshape(-1, D), queue["emb"]])
  hashes = np.concatenate([p_hash, n_hash.reshape(-1), queue["hash"]])
  live = np.concatenate([np.ones(B + B * K, bool), queue["valid"]])
  want, masked = [], []
  for i in range(B):
    keep = live & ((hashes != p_hash[i]) | (np.arange(len(cands)) == i))
    masked.append(np.sum(live & ~keep))
    want.append(-_np_log_softmax(cands[keep] @ q[i] / 0.05)[np.flatnonzero(keep).tolist().index(i)])
  np.testing.assert_allclose(loss, np.mean(want), rtol=1e-5)
  assert masked == [0, 0, 0, 0, 1, 0]
  np.testing.assert_allclose(npq, live.sum() - 1 - np.mean(masked), rtol=1e-6)


@pytest.mark.parametrize("implementation", ["dense", "tiled"])
def test_empty_queue_gives_the_loss_without_one(implementation):
  q, p, n, p_hash, n_hash, queue = _setup()
  queue["valid"][:] = False
  kwargs = dict(temperature=0.05, pos_hash_b=p_hash, neg_hash_bxK=n_hash, implementation=implementation,
                block_size=5)
  with_queue = losses.contrastive_loss(q, p, n, queue=jax.tree.map(jnp.asarray, queue), **kwargs)
  without = losses.contrastive_loss(q, p, n, **kwargs)
  np.testing.assert_allclose(with_queue, without, rtol=1e-6, atol=0)
  assert float(with_queue[1]) == B * (1 + K) - 1


def test_push_keeps_each_devices_newest_entries():
  queue = negative_queue.init(8, 1)
  pos = jnp.arange(4, dtype=jnp.float32)[:, None] + 1   # Device 0: rows 1, 2; device 1: rows 3, 4.
  neg = -pos
  queue = negative_queue.push(queue, [pos, neg], [pos[:, 0].astype(jnp.int32), neg[:, 0].astype(jnp.int32)], 2)
  np.testing.assert_array_equal(queue["emb"][:, 0], [1, 2, -1, -2, 3, 4, -3, -4])
  queue = negative_queue.push(queue, [pos + 10], None, 2)  # 2 new per device push out the 2 oldest.
  np.testing.assert_array_equal(queue["emb"][:, 0], [11, 12, 1, 2, 13, 14, 3, 4])
  np.testing.assert_array_equal(queue["hash"], [0, 0, 1, 2, 0, 0, 3, 4])
  assert bool(queue["valid"].all())


def _queue_config(**overrides):
  # batch 16, k = 2: 48 candidates a step, so the queue (96) holds the two previous steps.
  return tiny_config(**{"infonce.queue_size": 96, "num_steps": 3, **overrides})


@pytest.fixture(scope="module")
def single_device_queue():
  return run_steps(_queue_config(), 1)


@pytest.mark.parametrize("overrides", [
    {"parallel.strategy": "pjit", "grad_cache.chunk_size": 1},
    {"parallel.strategy": "pmap", "infonce.implementation": "tiled", "infonce.block_size": 7},
])
def test_queue_eight_devices_equal_one(single_device_queue, overrides):
  """Three steps: the queue starts empty, then holds one step, then two; the 8-device run (each device its
  own shard of 12 entries) matches the 1-device one (one queue of 96) in every metric and in the params."""
  run = run_steps(_queue_config(**overrides), 8)
  ref = single_device_queue
  # Global negatives, k = 2: 47 candidates besides the positive, plus the queue's filled slots (the batch's
  # one duplicated positive is masked for two queries: -2 / 16).
  npq = [m["negatives_per_query"] for m in ref["metrics"]]
  np.testing.assert_allclose(npq, [47 - 2 / 16, 95 - 2 / 16, 143 - 2 / 16], atol=1e-5)
  for got, want in zip(run["metrics"], ref["metrics"]):
    for name in want:
      np.testing.assert_allclose(got[name], want[name], atol=2e-5, err_msg=name)
  for x, y in zip(jax.tree.leaves(run["params"]), jax.tree.leaves(ref["params"])):
    np.testing.assert_allclose(x, y, atol=2e-5)


def test_queue_changes_training_and_size_zero_is_none(single_device_queue):
  without = run_steps(_queue_config(**{"infonce.queue_size": 0}), 1)
  assert without["queue"] is None and single_device_queue["queue"]["valid"].sum() == 96
  # Step 1 sees an empty queue: the same loss; step 3 sees 96 more negatives: a higher loss.
  np.testing.assert_allclose(without["metrics"][0]["loss"], single_device_queue["metrics"][0]["loss"], rtol=1e-6)
  assert single_device_queue["metrics"][2]["loss/infonce"] > without["metrics"][2]["loss/infonce"]


def test_queue_size_must_split_over_devices():
  with pytest.raises(ValueError, match="infonce.queue_size.*multiple of 8, e.g. 104"):
    config_lib.validate(tiny_config(**{"infonce.queue_size": 100}), num_devices=8)
