"""Device mesh, shardings, global batches and the cross-device contrastive loss.

One data-parallel mesh axis, "data" (the config spells the mesh big_vision-style, `[("data", -1)]`). The batch
is split over it; params are replicated, or with FSDP each param is split over "data" along its largest
divisible axis. The contrastive loss runs per device (inside `jax.shard_map` or `jax.pmap`): queries stay
local, candidates (positives, then hard negatives) are all-gathered, and the labels are offset by
`axis_index * local_batch`. Hard negatives keep their query's order through the gather, so query g's j-th
negative sits at column `global_batch + g * k + j` on every device.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from neuralir_jax import losses

DATA_AXIS = "data"
NEGATIVES_MODES = ("global", "local")


def make_mesh(mesh_config: Sequence[tuple[str, int]] | int = ((DATA_AXIS, -1),),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-axis data-parallel mesh; -1 (or omitted) takes every device. axis_types=Auto so gathers work."""
  devices = list(jax.devices() if devices is None else devices)
  if isinstance(mesh_config, int):
    mesh_config = ((DATA_AXIS, mesh_config),)
  mesh_config = [tuple(axis) for axis in mesh_config]
  if len(mesh_config) != 1 or mesh_config[0][0] != DATA_AXIS:
    raise ValueError(f"mesh {mesh_config}: only one axis, ('{DATA_AXIS}', size), is supported.")
  size = mesh_config[0][1]
  size = len(devices) if size in (-1, None) else int(size)
  if size > len(devices) or size < 1:
    raise ValueError(f"mesh axis '{DATA_AXIS}' of size {size}, but {len(devices)} devices are available.")
  return jax.make_mesh((size,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:size])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: Sequence[int], num_shards: int, min_size: int = 0) -> P:
  """Split the largest axis divisible by num_shards over "data"; replicate small or indivisible params."""
  if num_shards == 1 or int(np.prod(shape, dtype=np.int64)) < max(min_size, 1):
    return P()
  candidates = [(dim, axis) for axis, dim in enumerate(shape) if dim % num_shards == 0]
  if not candidates:
    return P()
  _, axis = max(candidates)
  spec = [None] * len(shape)
  spec[axis] = DATA_AXIS
  return P(*spec)


def param_shardings(params_shape: Any, mesh: Mesh, fsdp: bool = False, min_size: int = 0) -> Any:
  """NamedShardings for a params pytree (arrays or ShapeDtypeStructs): replicated, or FSDP."""
  num_shards = mesh.shape[DATA_AXIS]

  def one(leaf):
    spec = fsdp_spec(leaf.shape, num_shards, min_size) if fsdp else P()
    return NamedSharding(mesh, spec)

  return jax.tree.map(one, params_shape)


def check_batch_size(global_batch_size: int, num_devices: int) -> None:
  if global_batch_size % num_devices:
    raise ValueError(f"batch_size={global_batch_size} is not divisible by the {num_devices} devices; "
                     f"set --config.batch_size to a multiple of {num_devices}.")


def make_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> global arrays split over "data" (multi-host: every process passes its shard)."""
  sharding = batch_sharding(mesh)
  local_devices = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
  for name, x in local_batch.items():
    if x.shape[0] % local_devices:
      raise ValueError(f"batch column {name!r} has {x.shape[0]} rows on this process, not divisible by its "
                       f"{local_devices} devices; change batch_size.")
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def replicate_for_pmap(tree: Any, devices: Sequence[jax.Device]) -> Any:
  """Copies of every leaf stacked on a leading device axis, one per device, as `jax.pmap` expects."""
  mesh = Mesh(np.asarray(devices), (DATA_AXIS,))
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  n = len(devices)
  return jax.tree.map(lambda x: jax.device_put(jnp.stack([jnp.asarray(x)] * n), sharding), tree)


def unreplicate(tree: Any) -> Any:
  """The first device's copy of a pmap-replicated pytree."""
  return jax.tree.map(lambda x: x[0], tree)


def split_for_pmap(batch: dict[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
  """[B, ...] -> [num_devices, B / num_devices, ...]; device i gets rows i*b ... (i+1)*b - 1."""
  out = {}
  for name, x in batch.items():
    x = np.asarray(x)
    if x.shape[0] % num_devices:
      raise ValueError(f"batch column {name!r} has {x.shape[0]} rows, not divisible by the {num_devices} "
                       "devices; change batch_size.")
    out[name] = x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])
  return out


def _gather_fn(axis_name: str | None, negatives: str):
  if negatives not in NEGATIVES_MODES:
    raise ValueError(f"negatives={negatives!r}: use one of {NEGATIVES_MODES}.")
  if axis_name is None or negatives == "local":
    return (lambda x: x), (lambda b: 0)
  return ((lambda x: jax.lax.all_gather(x, axis_name, tiled=True)),
          (lambda b: jax.lax.axis_index(axis_name) * b))


def gather_candidates(pos_bxD: jax.Array, neg_bxKxD: jax.Array | None = None,
                      pos_hash_b: jax.Array | None = None, neg_hash_bxK: jax.Array | None = None, *,
                      axis_name: str | None = None, negatives: str = "global"):
  """Candidates [positives (B); hard negatives (B * k)] visible to this device, labels_b, hashes_C.

  With negatives="global" B is the global batch (gathered over axis_name) and labels are offset by
  axis_index * b; with "local" (or axis_name None) every array stays this device's own.
  """
  gather, offset = _gather_fn(axis_name, negatives)
  b, dim = pos_bxD.shape
  cands, hashes = [gather(pos_bxD)], [gather(pos_hash_b)] if pos_hash_b is not None else None
  if neg_bxKxD is not None:
    cands.append(gather(neg_bxKxD).reshape(-1, dim))  # Row-major: query g's j-th negative at g * k + j.
    if hashes is not None:
      hashes.append(gather(neg_hash_bxK).reshape(-1))
  cand_CxD = jnp.concatenate(cands, axis=0)
  hash_C = None if hashes is None else jnp.concatenate(hashes, axis=0)
  labels_b = offset(b) + jnp.arange(b)
  return cand_CxD, labels_b, hash_C


def contrastive_loss(q_bxD: jax.Array, pos_bxD: jax.Array, neg_bxKxD: jax.Array | None = None, *,
                     temperature: jax.Array | float = 0.05, axis_name: str | None = None,
                     negatives: str = "global", symmetric: bool = False,
                     q_hash_b: jax.Array | None = None, pos_hash_b: jax.Array | None = None,
                     neg_hash_bxK: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """InfoNCE of this device's queries against local or gathered candidates -> (loss, negatives per query).

  The loss is this device's mean; `pmean` it over axis_name for the global-batch loss. Hashes (optional)
  mask candidates whose text equals the query's positive (symmetric term: queries equal to the positive's
  query). Negatives per query: candidates - 1 - masked, e.g. global_B * (1 + k) - 1 with nothing masked.
  """
  if (neg_bxKxD is None) != (neg_hash_bxK is None) and pos_hash_b is not None:
    raise ValueError("pass neg_hash_bxK with neg_bxKxD (or no hashes at all).")
  cand_CxD, labels_b, hash_C = gather_candidates(pos_bxD, neg_bxKxD, pos_hash_b, neg_hash_bxK,
                                                 axis_name=axis_name, negatives=negatives)
  mask_bxC = None if hash_C is None else losses.false_negative_mask(pos_hash_b, hash_C, labels_b)
  loss = losses.infonce(q_bxD, cand_CxD, labels_b, temperature, mask_bxC)
  masked = 0.0 if mask_bxC is None else jnp.mean(mask_bxC.sum(-1).astype(jnp.float32))
  negatives_per_query = jnp.float32(cand_CxD.shape[0] - 1) - masked
  if symmetric:
    q_all_QxD, labels_b, q_hash_Q = gather_candidates(q_bxD, None, q_hash_b, None,
                                                      axis_name=axis_name, negatives=negatives)
    mask_bxQ = None if q_hash_Q is None else losses.false_negative_mask(q_hash_b, q_hash_Q, labels_b)
    loss = 0.5 * (loss + losses.infonce(pos_bxD, q_all_QxD, labels_b, temperature, mask_bxQ))
  return loss, negatives_per_query
