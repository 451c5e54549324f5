"""GradCache (Gao et al., 2021): contrastive batches larger than memory, with exact gradients.

1. Embed every text column in chunks under `jax.lax.map`, keeping no activations (the result is a constant).
2. Take the loss and its gradient with respect to the embeddings (and the heads / temperature).
3. Re-run each chunk's forward under `jax.vjp` with its slice of the embedding gradient as cotangent and
   sum the parameter gradients over chunks in a `jax.lax.scan`.
Peak activation memory then follows the chunk, not the batch. Chunk i of a column gets dropout rng
`fold_in(rng, i)` in both passes, so the gradients equal those of differentiating `chunked_embed` directly.

With the batch split over num_shards devices, chunk i takes rows i*c ... (i+1)*c - 1 of every device's
shard (c = chunk_size, per device), so each chunk is itself split evenly over the devices.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

# (params, ids_BxL, mask_BxL, rng or None) -> emb_BxD.
EmbedFn = Callable[[Any, jax.Array, jax.Array, jax.Array | None], jax.Array]


def num_chunks_for(global_rows: int, num_shards: int, chunk_size: int) -> int:
  """Chunks per column for chunk_size rows per device (chunk_size >= the local batch: one chunk)."""
  local = global_rows // num_shards
  if chunk_size <= 0 or chunk_size >= local:
    return 1
  if local % chunk_size:
    raise ValueError(f"grad_cache.chunk_size={chunk_size} does not divide the per-device batch of {local} "
                     "rows; pick a divisor.")
  return local // chunk_size


def to_chunks(x: jax.Array, num_chunks: int, num_shards: int = 1) -> jax.Array:
  """[B, ...] -> [num_chunks, B / num_chunks, ...], chunk i = rows i*c:(i+1)*c of every shard."""
  rest = x.shape[1:]
  c = x.shape[0] // (num_shards * num_chunks)
  x = x.reshape((num_shards, num_chunks, c) + rest)
  return jnp.swapaxes(x, 0, 1).reshape((num_chunks, num_shards * c) + rest)


def from_chunks(x: jax.Array, num_shards: int = 1) -> jax.Array:
  """Inverse of `to_chunks`."""
  num_chunks, rows = x.shape[:2]
  rest = x.shape[2:]
  x = x.reshape((num_chunks, num_shards, rows // num_shards) + rest)
  return jnp.swapaxes(x, 0, 1).reshape((num_chunks * rows,) + rest)


def _chunk_rng(rng: jax.Array | None, i: jax.Array) -> jax.Array | None:
  return None if rng is None else jax.random.fold_in(rng, i)


def _constrain(x: jax.Array, sharding) -> jax.Array:
  return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


def chunked_embed(embed_fn: EmbedFn, params: Any, ids_BxL: jax.Array, mask_BxL: jax.Array,
                  rng: jax.Array | None, num_chunks: int, num_shards: int = 1,
                  chunk_sharding=None) -> jax.Array:
  """Embeddings of [B, L] texts, computed chunk by chunk (differentiable: the plain reference)."""
  ids = _constrain(to_chunks(ids_BxL, num_chunks, num_shards), chunk_sharding)
  mask = _constrain(to_chunks(mask_BxL, num_chunks, num_shards), chunk_sharding)

  def one(xs):
    ids_c, mask_c, i = xs
    return embed_fn(params, ids_c, mask_c, _chunk_rng(rng, i))

  emb = jax.lax.map(one, (ids, mask, jnp.arange(num_chunks)))
  return from_chunks(_constrain(emb, chunk_sharding), num_shards)


def accumulate_chunk_grads(embed_fn: EmbedFn, params: Any, ids_BxL: jax.Array, mask_BxL: jax.Array,
                           rng: jax.Array | None, emb_grad_BxD: jax.Array, num_chunks: int,
                           num_shards: int = 1, chunk_sharding=None, init_grads: Any = None) -> Any:
  """Sum over chunks of vjp(embed_fn)(emb_grad chunk): d loss / d params through these embeddings."""
  ids = _constrain(to_chunks(ids_BxL, num_chunks, num_shards), chunk_sharding)
  mask = _constrain(to_chunks(mask_BxL, num_chunks, num_shards), chunk_sharding)
  cotangent = _constrain(to_chunks(emb_grad_BxD, num_chunks, num_shards), chunk_sharding)
  if init_grads is None:
    init_grads = jax.tree.map(jnp.zeros_like, params)

  def body(acc, xs):
    ids_c, mask_c, ct_c, i = xs
    _, vjp = jax.vjp(lambda p: embed_fn(p, ids_c, mask_c, _chunk_rng(rng, i)), params)
    (grads,) = vjp(ct_c.astype(jnp.float32))
    return jax.tree.map(jnp.add, acc, grads), None

  grads, _ = jax.lax.scan(body, init_grads, (ids, mask, cotangent, jnp.arange(num_chunks)))
  return grads


def grad_cache_value_and_grad(embed_fn: EmbedFn | dict[str, EmbedFn], loss_fn: Callable, enc_params: Any, other_params: Any,
                              texts: dict[str, tuple[jax.Array, jax.Array]],
                              rngs: dict[str, jax.Array | None], chunk_size: int | dict[str, int],
                              num_shards: int = 1, chunk_sharding=None):
  """((loss, aux), (enc_grads, other_grads)) of loss_fn(other_params, {column: emb_BxD}) -> (loss, aux).

  texts maps a column to (ids_BxL, mask_BxL); each column is embedded and back-propagated on its own, in
  chunks of chunk_size rows per device (one size, or one per column), by embed_fn (one, or one per column;
  an output may have more axes than [B, D], e.g. [B, S, D] for packed rows).
  """
  fns = embed_fn if isinstance(embed_fn, dict) else {c: embed_fn for c in texts}
  sizes = chunk_size if isinstance(chunk_size, dict) else {c: chunk_size for c in texts}
  chunks = {c: num_chunks_for(ids.shape[0], num_shards, sizes[c]) for c, (ids, _) in texts.items()}
  embs = {c: jax.lax.stop_gradient(chunked_embed(fns[c], enc_params, ids, mask, rngs[c], chunks[c],
                                                 num_shards, chunk_sharding))
          for c, (ids, mask) in texts.items()}
  (loss, aux), (other_grads, emb_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      other_params, embs)
  enc_grads = None
  for c, (ids, mask) in texts.items():
    enc_grads = accumulate_chunk_grads(fns[c], enc_params, ids, mask, rngs[c], emb_grads[c], chunks[c],
                                       num_shards, chunk_sharding, init_grads=enc_grads)
  return (loss, aux), (enc_grads, other_grads)
