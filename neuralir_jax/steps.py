"""Train state, gradients (plain or GradCache) and the train step, for any model family, pjit or pmap.

A family (see `bi_encoder.py` for the contract) says how a batch becomes model inputs, how the model embeds
them and which loss the embeddings get; this module differentiates that and applies the optimizer, the same
way for every family:
  pjit (default): the state is created under `jit` straight into its shardings (replicated, or FSDP with
    `parallel.fsdp`), the batch is a global array split over "data", the encoder runs on the global batch
    and the family's loss runs per device in `jax.shard_map` (so the contrastive loss can gather candidates
    across devices), `pmean`ed.
  pmap: a thin wrapper: the same gradient function runs per device under `jax.pmap` and its loss and
    gradients are `pmean`ed; the state is one copy per device (`TrainStep.to_device`/`from_device`).
GradCache (`grad_cache.chunk_size` examples per device per chunk, 0 = off) replaces the plain gradient with
the chunked one of `gradcache.py`; its gradients equal the plain ones.

Dropout rng at step s: fold_in(state.rng, s) (pmap folds the device index in, GradCache the chunk index), so
a resumed run replays the same masks.

A family with `queue_size > 0` keeps a negative queue in the state (`negative_queue.py`): split over "data"
like the batch (pmap: each device's shard), read by the loss through the batch aux and pushed after each
step with the family's `queue_entries`; with queue_size 0 the state's queue is None and nothing changes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from neuralir_jax import gradcache, negative_queue, objectives, sharding

class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken.
  params: Any
  opt_state: Any
  rng: jax.Array  # Seed-derived key; step s uses fold_in(rng, s).
  queue: Any = None  # Negative queue {'emb', 'hash', 'valid'} split over "data", or None (queue_size 0).


def _state_shardings(abstract_state: TrainState, mesh: Mesh, fsdp: bool) -> TrainState:
  replicated = sharding.replicated_sharding(mesh)
  return TrainState(step=replicated,
                    params=sharding.param_shardings(abstract_state.params, mesh, fsdp),
                    opt_state=sharding.param_shardings(abstract_state.opt_state, mesh, fsdp),
                    rng=replicated,
                    queue=jax.tree.map(lambda _: sharding.batch_sharding(mesh), abstract_state.queue))


def create_train_state(family, rng: jax.Array, mesh: Mesh, tx: optax.GradientTransformation,
                       encoder_params: Any = None) -> tuple[TrainState, TrainState]:
  """(state, state_shardings): built under jit straight into its shardings, never whole on one device."""
  param_rng, train_rng = jax.random.split(rng)

  def init(param_rng, train_rng, encoder_params):
    params = family.init_params(param_rng, encoder_params)
    size = getattr(family, "queue_size", 0)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=train_rng, queue=negative_queue.init(size, family.queue_dim) if size else None)

  abstract = jax.eval_shape(init, param_rng, train_rng, encoder_params)
  shardings = _state_shardings(abstract, mesh, bool(family.config.parallel.fsdp))
  state = jax.jit(init, out_shardings=shardings)(param_rng, train_rng, encoder_params)
  return state, shardings


# --- Loss and gradients -----------------------------------------------------------------------------------


def _dropout_rng(family, step_rng, axis_name):
  if family.deterministic:
    return None
  if axis_name is not None:  # pmap: each device draws its own masks.
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
  return step_rng


def _loss_and_grads(family, params, batch, step_rng, loss_fn, axis_name, num_shards, chunk_sharding,
                    queue=None):
  """((loss, metrics), grads, queue after the step) on the rows this function sees (global under pjit,
  local under pmap); the queue is None without one.

  loss_fn(rest, columns, aux) is the family's loss, already wrapped for the strategy.
  """
  texts, unstack = family.inputs(batch, num_shards)
  embed_fns = {g: family.embed_fn(g) for g in texts}
  examples = objectives.num_examples(batch)
  aux = {k: v for k, v in batch.items() if not k.endswith(objectives.TEXT_KEY_SUFFIXES)}
  if queue is not None:
    aux.update(negative_queue.as_aux(queue))
  rng = _dropout_rng(family, step_rng, axis_name)
  # One group keeps the step's rng (the masks of runs before groups existed); further groups fold in.
  rngs = {g: rng if rng is None or i == 0 else jax.random.fold_in(rng, i) for i, g in enumerate(texts)}
  rest = {k: v for k, v in params.items() if k != "encoder"}

  def loss_of(rest, embs):
    columns = unstack(embs)
    loss, metrics = loss_fn(rest, columns, aux)
    return (loss, metrics) if queue is None else (loss, (metrics, columns))

  def with_queue(out):  # ((loss, metrics[, columns]), grads) -> ((loss, metrics), grads, queue).
    (loss, metrics), grads = out
    if queue is None:
      return (loss, metrics), grads, None
    metrics, columns = metrics
    embs, hashes = family.queue_entries(columns, aux)
    return (loss, metrics), grads, negative_queue.push(queue, embs, hashes, num_shards)

  chunk_size = family.config.grad_cache.chunk_size
  if chunk_size:  # Chunks of chunk_size examples (all their texts) per device; packed: rows / chunks.
    num_chunks = gradcache.num_chunks_for(examples, num_shards, chunk_size)
    rows = {g: ids.shape[0] // num_shards // num_chunks if g == "packed"
            else chunk_size * (ids.shape[0] // examples) for g, (ids, _) in texts.items()}
    (loss, metrics), (enc_grads, rest_grads) = gradcache.grad_cache_value_and_grad(
        embed_fns, loss_of, params["encoder"], rest, texts, rngs, rows, num_shards, chunk_sharding)
    return with_queue(((loss, metrics), {"encoder": enc_grads, **rest_grads}))

  def plain_loss(params):
    embs = {g: embed_fns[g](params["encoder"], ids, mask, rngs[g]) for g, (ids, mask) in texts.items()}
    return loss_of({k: v for k, v in params.items() if k != "encoder"}, embs)

  return with_queue(jax.value_and_grad(plain_loss, has_aux=True)(params))


def grad_fn_pjit(family, mesh: Mesh) -> Callable:
  """(params, global batch, step_rng, queue=None) -> ((loss, metrics), grads, queue); to be jitted with the
  batch (and the queue) on "data".

  The family's loss runs per device in shard_map and is pmean'ed: the global-batch loss from global arrays.
  """
  def per_device(rest, columns, aux):
    return jax.lax.pmean(family.loss(rest, columns, aux, sharding.DATA_AXIS), sharding.DATA_AXIS)

  loss_fn = jax.shard_map(per_device, mesh=mesh,
                          in_specs=(P(), P(sharding.DATA_AXIS), P(sharding.DATA_AXIS)), out_specs=P())
  chunk_sharding = NamedSharding(mesh, P(None, sharding.DATA_AXIS))
  return functools.partial(_loss_and_grads, family, loss_fn=loss_fn, axis_name=None,
                           num_shards=mesh.shape[sharding.DATA_AXIS], chunk_sharding=chunk_sharding)


def grad_fn_pmap(family) -> Callable:
  """(params, local batch, step_rng, queue=None) -> ((loss, metrics), grads, queue), loss, metrics and
  grads pmean'ed over "data" (the queue is this device's own); call under pmap."""
  def loss_fn(rest, columns, aux):
    return family.loss(rest, columns, aux, sharding.DATA_AXIS)

  def fn(params, batch, step_rng, queue=None):
    out, grads, queue = _loss_and_grads(family, params, batch, step_rng, loss_fn, sharding.DATA_AXIS, 1, None,
                                        queue=queue)
    return (*jax.lax.pmean((out, grads), sharding.DATA_AXIS), queue)

  return fn


# --- Train step -------------------------------------------------------------------------------------------


def _apply(tx, schedule, state: TrainState, loss, metrics, grads) -> tuple[TrainState, dict]:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  if schedule is not None:
    metrics["lr"] = schedule(state.step)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _step_fn(grad_fn, tx, schedule, max_traces):
  def step(state, batch):
    (loss, metrics), grads, queue = grad_fn(state.params, batch, jax.random.fold_in(state.rng, state.step),
                                            queue=state.queue)
    state, metrics = _apply(tx, schedule, state, loss, metrics, grads)
    return state.replace(queue=queue), metrics

  return chex.assert_max_traces(step, n=max_traces) if max_traces else step


@dataclasses.dataclass(frozen=True)
class TrainStep:
  """One strategy's step: `step(state, numpy_batch) -> (state, metrics)` on the strategy's state layout.

  `to_device` / `from_device` move a state between create_train_state's layout (what checkpoints and
  evaluation use) and the strategy's own (identity for pjit, one copy per device for pmap).
  """
  run: Callable[[TrainState, dict], tuple[TrainState, dict]]
  to_device: Callable[[TrainState], TrainState]
  from_device: Callable[[TrainState], TrainState]
  jitted: Any

  def __call__(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    return self.run(state, batch)


def make_train_step(family, mesh: Mesh, tx: optax.GradientTransformation,
                    state_shardings: TrainState | None = None, schedule: optax.Schedule | None = None,
                    max_traces: int | None = None) -> TrainStep:
  """The step of `family.config.parallel.strategy`, compiled once; the state is donated.

  pjit: pass create_train_state's state_shardings; the batch is this process's numpy rows (made global
  here) or global arrays split over "data". pmap: the batch is this process's numpy rows, split per device
  here. Metrics are scalars. max_traces: fail (chex.assert_max_traces) when the step recompiles.
  """
  if family.config.parallel.strategy == "pmap":
    return _make_pmap_step(family, mesh, tx, schedule, max_traces)
  if state_shardings is None:
    raise ValueError("the pjit step needs state_shardings (the second result of create_train_state).")
  step = _step_fn(grad_fn_pjit(family, mesh), tx, schedule, max_traces)
  jitted = jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, sharding.replicated_sharding(mesh)), donate_argnums=0)

  def run(state, batch):
    if not isinstance(next(iter(batch.values())), jax.Array):
      batch = sharding.make_global_batch(batch, mesh)
    return jitted(state, batch)

  identity = lambda state: state  # noqa: E731
  return TrainStep(run, identity, identity, jitted)


def _make_pmap_step(family, mesh: Mesh, tx, schedule, max_traces) -> TrainStep:
  devices = list(mesh.devices.flat)  # Every process's devices (pmap's multi-process contract).
  local = [d for d in devices if d.process_index == jax.process_index()]
  pmapped = jax.pmap(_step_fn(grad_fn_pmap(family), tx, schedule, max_traces), axis_name=sharding.DATA_AXIS,
                     devices=devices, donate_argnums=0)

  def run(state, batch):
    state, metrics = pmapped(state, sharding.split_for_pmap(batch, len(local)))
    return state, sharding.unreplicate(metrics)

  return TrainStep(run, lambda state: to_pmap_state(state, mesh), lambda state: from_pmap_state(state, mesh),
                   pmapped)


def _local_devices(mesh: Mesh) -> list[jax.Device]:
  return [d for d in mesh.devices.flat if d.process_index == jax.process_index()]


def to_pmap_state(state: TrainState, mesh: Mesh) -> TrainState:
  """A create_train_state state -> one copy per local device, as the pmap step takes it; the queue's
  shards go one per device instead."""
  devices = _local_devices(mesh)
  out = sharding.replicate_for_pmap(jax.device_get(state.replace(queue=None)), devices)
  if state.queue is None:
    return out
  pmap_sharding = NamedSharding(Mesh(np.asarray(devices), (sharding.DATA_AXIS,)), P(sharding.DATA_AXIS))

  def split(x):  # This process's shards, in device order, stacked on a leading device axis.
    shards = {s.device: np.asarray(s.data) for s in x.addressable_shards}
    return jax.device_put(np.stack([shards[d] for d in devices]), pmap_sharding)

  return out.replace(queue=jax.tree.map(split, state.queue))


def from_pmap_state(state: TrainState, mesh: Mesh | None = None) -> TrainState:
  """The pmap state -> create_train_state's layout (the queue's shards assembled over mesh's "data")."""
  out = sharding.unreplicate(state.replace(queue=None))
  if state.queue is None:
    return out
  devices = _local_devices(mesh)
  target = sharding.batch_sharding(mesh)

  def assemble(x):
    shards = {s.device: s.data.reshape(x.shape[1:]) for s in x.addressable_shards}
    shape = (x.shape[1] * len(list(mesh.devices.flat)),) + x.shape[2:]
    return jax.make_array_from_single_device_arrays(shape, target, [shards[d] for d in devices])

  return out.replace(queue=jax.tree.map(assemble, state.queue))


def make_grad_fn(family, mesh: Mesh) -> Callable:
  """(params, numpy global batch, step_rng) -> (loss, metrics, grads) as host-side pytrees, for tests and
  diagnostics; same strategy and GradCache switch as the train step."""
  if family.config.parallel.strategy == "pmap":
    devices = list(mesh.devices.flat)
    fn = jax.pmap(grad_fn_pmap(family), axis_name=sharding.DATA_AXIS, devices=devices)

    def run_pmap(params, batch, step_rng):
      rep = sharding.replicate_for_pmap((params, step_rng), devices)
      (loss, metrics), grads, _ = fn(rep[0], sharding.split_for_pmap(batch, len(devices)), rep[1])
      return jax.device_get(sharding.unreplicate((loss, metrics, grads)))

    return run_pmap
  fn = jax.jit(grad_fn_pjit(family, mesh))

  def run(params, batch, step_rng):
    (loss, metrics), grads, _ = fn(params, sharding.make_global_batch(batch, mesh), step_rng)
    return jax.device_get((loss, metrics, grads))

  return run
