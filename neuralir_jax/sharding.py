"""Device mesh, shardings and global batches: where every array of a step lives.

One data-parallel mesh axis, "data" (the config spells the mesh big_vision-style, `[("data", -1)]`). The batch
is split over it; params are replicated, or with FSDP each param is split over "data" along its largest
divisible axis. `pmap` helpers (replicate, split, unreplicate) live here too. The cross-device contrastive
loss that runs on this mesh is in `losses.py`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


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
