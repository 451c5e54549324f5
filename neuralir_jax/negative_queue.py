"""A queue of earlier steps' candidate embeddings: negatives beyond the batch (MoCo, He et al., 2020; cross-batch
memory, Wang et al., 2020).

The queue is part of the train state, {'emb': float32[Q, D], 'hash': int32[Q], 'valid': bool[Q]}, split over
the data axis like the batch: device i keeps the Q / n entries it pushed itself, newest first, so no step moves
queue rows between devices. After each step every device pushes its own candidates (the positives, then the
hard negatives, as the loss lays them out) with their text hashes and drops its oldest entries; the loss
(`losses.append_queue`) gathers the shards for global negatives, or reads only its own for local ones, and
masks empty slots and earlier copies of a query's positives. Entries are constants (stop_gradient): they were
embedded by the params of their own step, as in cross-batch memory (no momentum encoder).

Checkpoints save the queue with the rest of the state, so a resumed run continues with the same negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KEYS = ("emb", "hash", "valid")
AUX_PREFIX = "queue_"  # Batch-aux keys that carry the queue into the loss (see `as_aux`).


def init(size: int, dim: int) -> dict[str, jax.Array]:
  """An empty queue of `size` entries (global, over every device) of `dim`-dimensional embeddings."""
  return {"emb": jnp.zeros((size, dim), jnp.float32), "hash": jnp.zeros((size,), jnp.int32),
          "valid": jnp.zeros((size,), bool)}


def as_aux(queue: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The queue as per-example-like aux arrays (split over devices along axis 0, like the batch)."""
  return {AUX_PREFIX + k: queue[k] for k in KEYS}


def from_aux(aux: dict[str, jax.Array]) -> dict[str, jax.Array] | None:
  """This device's queue shard from the loss's aux, or None when training has no queue."""
  if AUX_PREFIX + "emb" not in aux:
    return None
  return {k: aux[AUX_PREFIX + k] for k in KEYS}


def push(queue: dict[str, jax.Array], embs: list[jax.Array], hashes: list[jax.Array] | None,
         num_shards: int) -> dict[str, jax.Array]:
  """The queue after this step. embs: the candidate columns as the loss lays them out, each [B * m, D] with
  the num_shards devices' rows in order (positives [B, D], hard negatives [B * k, D]); hashes: theirs, or
  None. Each device puts its rows of every column in front of its own Q / num_shards entries and keeps
  the newest Q / num_shards."""
  size, dim = queue["emb"].shape
  per_shard = size // num_shards
  new_emb = jnp.concatenate([e.reshape(num_shards, -1, dim) for e in embs], axis=1)
  count = new_emb.shape[1]
  new_hash = (jnp.zeros((num_shards, count), jnp.int32) if hashes is None else
              jnp.concatenate([h.reshape(num_shards, -1) for h in hashes], axis=1))

  def merged(new, old):
    old = old.reshape((num_shards, per_shard) + old.shape[1:])
    both = jnp.concatenate([new.astype(old.dtype), old], axis=1)[:, :per_shard]
    return both.reshape((size,) + old.shape[2:])

  return {"emb": merged(jax.lax.stop_gradient(new_emb), queue["emb"]),
          "hash": merged(new_hash, queue["hash"]),
          "valid": merged(jnp.ones((num_shards, count), bool), queue["valid"])}
