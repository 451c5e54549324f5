"""Train state and the jitted train step: every objective, pjit or pmap, optional GradCache.

Config fields read here (an ml_collections ConfigDict):
  model.bert (BertConfig fields), model.pooling, model.normalize, model.max_seq_length: the EncoderConfig.
  model.dropout_rate: overrides both BERT dropout probabilities (0: deterministic, no rng used).
  model.dtype: "float32" | "bfloat16" compute dtype (params stay fp32). model.remat: recompute layers.
  objectives: dict name -> weight, names in OBJECTIVES; weight 0 (or absent) turns one off.
  infonce.temperature (fixed tau, or the initial one when learnable), infonce.learnable_temperature,
  infonce.symmetric (add the positive -> query term), infonce.hard_negatives (use the "negative" column).
  triplet.margin. negatives: "global" | "local".
  grad_cache.chunk_size: examples (with all their texts) per device per chunk; 0 = off.
  parallel.strategy: "pjit" | "pmap". parallel.fsdp: shard params and optimizer state over "data" (pjit).
  optimizer.* (see optimizer.py), num_steps, batch_size (global), seed.

Batches are dicts of per-column `c_ids`/`c_mask` int32[B, L] (the "negative" column may be [B, k, L]),
optional `c_hash` int32[B] (or [B, k]), `label` int32[B], `score` float32[B]. Which columns an objective
reads: nli_softmax (premise, hypothesis, label) or, on triplet views, (anchor, positive) as entailment,
(anchor, neutral) as neutral and (anchor, negative) as contradiction; sts_cosine (sentence1, sentence2,
score) or (premise, hypothesis, score); triplet (anchor, positive, negative); infonce (anchor, positive
[, negative]). Each column is encoded once per step.

All text columns of a step are stacked into one [B, R, L] array and embedded by one encoder call.
Params: {'encoder': model params, 'heads': {'nli': {'kernel', 'bias'}} when nli_softmax is on,
'log_temperature': scalar when the temperature is learnable}. Dropout rng at step s: fold_in(state.rng, s)
(pmap folds the device index in, GradCache the chunk index), so a resumed run replays the same masks.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from neuralir_jax import gradcache, losses, sharding
from neuralir_jax.model import BertConfig, EncoderConfig, SentenceEncoder, init_params as init_encoder_params

OBJECTIVES = ("nli_softmax", "sts_cosine", "triplet", "infonce")
STRATEGIES = ("pjit", "pmap")
# Known text columns, in the order they are stacked for the encoder.
COLUMNS = ("anchor", "positive", "neutral", "negative", "premise", "hypothesis", "sentence1", "sentence2")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken.
  params: Any
  opt_state: Any
  rng: jax.Array  # Seed-derived key; step s uses fold_in(rng, s).


def encoder_config_from(model_config: ml_collections.ConfigDict) -> EncoderConfig:
  bert = dict(model_config.bert)
  rate = model_config.get("dropout_rate", None)
  if rate is not None:
    bert.update(hidden_dropout_prob=float(rate), attention_probs_dropout_prob=float(rate))
  return EncoderConfig(bert=BertConfig(**bert), pooling=model_config.get("pooling", "mean"),
                       normalize=bool(model_config.get("normalize", True)),
                       max_seq_length=int(model_config.get("max_seq_length", 256)))


def build_model(config: ml_collections.ConfigDict) -> SentenceEncoder:
  dtype = config.model.get("dtype", "float32")
  if dtype not in _DTYPES:
    raise ValueError(f"model.dtype={dtype!r}: use one of {tuple(_DTYPES)}.")
  return SentenceEncoder(encoder_config_from(config.model), dtype=_DTYPES[dtype],
                         remat=bool(config.model.get("remat", False)))


def enabled_objectives(config: ml_collections.ConfigDict) -> dict[str, float]:
  objectives = dict(config.objectives)
  unknown = sorted(set(objectives) - set(OBJECTIVES))
  if unknown:
    raise ValueError(f"objectives {unknown} unknown; use names from {OBJECTIVES}.")
  enabled = {k: float(w) for k, w in objectives.items() if w}
  if not enabled:
    raise ValueError("config.objectives gives every objective weight 0; enable at least one.")
  return enabled


def init_params(config: ml_collections.ConfigDict, rng: jax.Array, encoder_params: Any = None) -> dict:
  """{'encoder', 'heads'?, 'log_temperature'?}; encoder_params (e.g. pretrained) replace the random init."""
  enc_rng, head_rng = jax.random.split(rng)
  if encoder_params is None:
    encoder_params = init_encoder_params(encoder_config_from(config.model), enc_rng)
  params = {"encoder": encoder_params}
  objectives = enabled_objectives(config)
  if "nli_softmax" in objectives:
    params["heads"] = {"nli": losses.init_nli_head(head_rng, config.model.bert.hidden_size)}
  if "infonce" in objectives and config.infonce.get("learnable_temperature", False):
    params["log_temperature"] = jnp.asarray(math.log(config.infonce.temperature), jnp.float32)
  return params


def _state_shardings(abstract_state: TrainState, mesh: Mesh, fsdp: bool) -> TrainState:
  replicated = sharding.replicated_sharding(mesh)
  return TrainState(step=replicated,
                    params=sharding.param_shardings(abstract_state.params, mesh, fsdp),
                    opt_state=sharding.param_shardings(abstract_state.opt_state, mesh, fsdp),
                    rng=replicated)


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array, mesh: Mesh,
                       tx: optax.GradientTransformation,
                       encoder_params: Any = None) -> tuple[TrainState, TrainState]:
  """(state, state_shardings): built under jit straight into its shardings, never whole on one device."""
  param_rng, train_rng = jax.random.split(rng)

  def init(param_rng, train_rng, encoder_params):
    params = init_params(config, param_rng, encoder_params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=train_rng)

  abstract = jax.eval_shape(init, param_rng, train_rng, encoder_params)
  shardings = _state_shardings(abstract, mesh, bool(config.parallel.get("fsdp", False)))
  state = jax.jit(init, out_shardings=shardings)(param_rng, train_rng, encoder_params)
  return state, shardings


# --- Objectives on embeddings (one device's rows) ---------------------------------------------------------


def _nli_pairs(cols: set[str], keys: set[str]) -> list[tuple[str, str, int | None]]:
  if {"premise", "hypothesis"} <= cols and "label" in keys:
    return [("premise", "hypothesis", None)]
  if {"anchor", "positive", "negative"} <= cols:
    pairs = [("anchor", "positive", 0), ("anchor", "negative", 2)]
    return pairs + ([("anchor", "neutral", 1)] if "neutral" in cols else [])
  raise ValueError(f"nli_softmax needs columns premise, hypothesis and label, or anchor, positive, negative; "
                   f"the batch has {sorted(keys)}.")


def _sts_pair(cols: set[str], keys: set[str]) -> tuple[str, str]:
  for pair in (("sentence1", "sentence2"), ("premise", "hypothesis")):
    if set(pair) <= cols and "score" in keys:
      return pair
  raise ValueError(f"sts_cosine needs sentence1, sentence2 and score; the batch has {sorted(keys)}.")


def _require(objective: str, needed: tuple[str, ...], cols: set[str], keys: set[str]) -> None:
  if not set(needed) <= cols:
    raise ValueError(f"{objective} needs the text columns {needed}; the batch has {sorted(keys)}.")


def text_columns(config: ml_collections.ConfigDict, keys: set[str]) -> tuple[str, ...]:
  """The text columns the enabled objectives read, in COLUMNS order (each encoded once)."""
  cols = {k[:-len("_ids")] for k in keys if k.endswith("_ids")}
  used = set()
  objectives = enabled_objectives(config)
  if "nli_softmax" in objectives:
    used |= {c for a, b, _ in _nli_pairs(cols, keys) for c in (a, b)}
  if "sts_cosine" in objectives:
    used |= set(_sts_pair(cols, keys))
  if "triplet" in objectives:
    _require("triplet", ("anchor", "positive", "negative"), cols, keys)
    used |= {"anchor", "positive", "negative"}
  if "infonce" in objectives:
    needed = ("anchor", "positive") + (("negative",) if config.infonce.get("hard_negatives", False) else ())
    _require("infonce", needed, cols, keys)
    used |= set(needed)
  return tuple(sorted(used, key=lambda c: COLUMNS.index(c) if c in COLUMNS else len(COLUMNS)))


def temperature_of(config: ml_collections.ConfigDict, params: dict) -> jax.Array:
  if "log_temperature" in params:
    return losses.temperature_from_log(params["log_temperature"])
  return jnp.float32(config.infonce.get("temperature", 0.05))


def objective_losses(config: ml_collections.ConfigDict, rest: dict, embs: dict[str, jax.Array],
                     aux: dict[str, jax.Array], axis_name: str | None) -> tuple[jax.Array, dict]:
  """Weighted sum of this device's objective losses (local means) and its metrics.

  rest: params other than the encoder; embs: column -> [b, D] ([b * k, D] for "negative"); aux: the batch's
  labels, scores and hashes. InfoNCE gathers candidates over axis_name when negatives == "global".
  """
  objectives = enabled_objectives(config)
  keys = set(aux) | {f"{c}_ids" for c in embs}
  total, metrics = 0.0, {}
  if "nli_softmax" in objectives:
    pairs = _nli_pairs(set(embs), keys)
    u = jnp.concatenate([embs[a] for a, _, _ in pairs])
    v = jnp.concatenate([_first_per_query(embs[b], embs[a].shape[0]) for a, b, _ in pairs])
    labels = jnp.concatenate([aux["label"] if y is None else jnp.full((embs[a].shape[0],), y, jnp.int32)
                              for a, _, y in pairs])
    metrics["loss/nli_softmax"], metrics["nli_accuracy"] = losses.nli_softmax_loss(
        rest["heads"]["nli"], u, v, labels)
  if "sts_cosine" in objectives:
    a, b = _sts_pair(set(embs), keys)
    metrics["loss/sts_cosine"] = losses.sts_cosine_loss(embs[a], embs[b], aux["score"])
  if "triplet" in objectives:
    a = embs["anchor"]
    metrics["loss/triplet"] = losses.triplet_loss(a, embs["positive"],
                                                  _first_per_query(embs["negative"], a.shape[0]),
                                                  float(config.triplet.get("margin", 1.0)))
  if "infonce" in objectives:
    metrics["loss/infonce"], metrics["negatives_per_query"] = _infonce(config, rest, embs, aux, axis_name)
    metrics["temperature"] = temperature_of(config, rest)
  for name, weight in objectives.items():
    total = total + weight * metrics[f"loss/{name}"]
  return total, metrics


def _first_per_query(emb_RxD: jax.Array, num_queries: int) -> jax.Array:
  """[b * k, D] rows of a column (k per query) -> the first of each query's k: [b, D]."""
  return emb_RxD.reshape(num_queries, -1, emb_RxD.shape[-1])[:, 0]


def _infonce(config, rest, embs, aux, axis_name):
  q = embs["anchor"]
  b, dim = q.shape
  neg = embs["negative"].reshape(b, -1, dim) if config.infonce.get("hard_negatives", False) else None
  has_hash = "anchor_hash" in aux and "positive_hash" in aux and (neg is None or "negative_hash" in aux)
  hashes = {}
  if has_hash:
    hashes = dict(q_hash_b=aux["anchor_hash"], pos_hash_b=aux["positive_hash"],
                  neg_hash_bxK=None if neg is None else aux["negative_hash"].reshape(b, -1))
  return sharding.contrastive_loss(
      q, embs["positive"], neg, temperature=temperature_of(config, rest), axis_name=axis_name,
      negatives=config.get("negatives", "global"), symmetric=bool(config.infonce.get("symmetric", False)),
      **hashes)


# --- Loss and gradients -----------------------------------------------------------------------------------


def stack_texts(batch: dict, columns: tuple[str, ...]):
  """All text columns as one [B, R, L] array (R: 1 per column, k for a [B, k, L] column), padded to the
  longest L, so one encoder call embeds every text; the stacking axis keeps each device's rows local.

  Returns (ids_BxRxL, mask_BxRxL, slices: column -> (start, count) along R).
  """
  length = max(batch[f"{c}_ids"].shape[-1] for c in columns)
  ids, masks, slices, start = [], [], {}, 0
  for c in columns:
    x, m = batch[f"{c}_ids"], batch[f"{c}_mask"]
    batch_size = x.shape[0]
    x, m = x.reshape(batch_size, -1, x.shape[-1]), m.reshape(batch_size, -1, m.shape[-1])
    pad = ((0, 0), (0, 0), (0, length - x.shape[-1]))
    ids.append(jnp.pad(x, pad))
    masks.append(jnp.pad(m, pad))
    slices[c] = (start, x.shape[1])
    start += x.shape[1]
  return jnp.concatenate(ids, axis=1), jnp.concatenate(masks, axis=1), slices


def split_embeddings(emb_BxRxD: jax.Array, slices: dict[str, tuple[int, int]]) -> dict[str, jax.Array]:
  """[B, R, D] -> column -> [B * count, D] (query g's j-th text at row g * count + j)."""
  dim = emb_BxRxD.shape[-1]
  return {c: emb_BxRxD[:, start:start + count].reshape(-1, dim) for c, (start, count) in slices.items()}


def _deterministic(model: SentenceEncoder) -> bool:
  bert = model.config.bert
  return bert.hidden_dropout_prob == 0 and bert.attention_probs_dropout_prob == 0


def make_embed_fn(model: SentenceEncoder) -> gradcache.EmbedFn:
  deterministic = _deterministic(model)

  def embed(params, ids_NxL, mask_NxL, rng):
    rngs = {} if deterministic or rng is None else {"dropout": rng}
    return model.apply({"params": params}, ids_NxL, mask_NxL, deterministic=deterministic, rngs=rngs)

  return embed


def _dropout_rng(model, step_rng, axis_name):
  if _deterministic(model):
    return None
  if axis_name is not None:  # pmap: each device draws its own masks.
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
  return step_rng


def _loss_and_grads(config, model, params, batch, step_rng, objective_fn, axis_name, num_shards,
                    chunk_sharding):
  """((loss, metrics), grads) on the rows this function sees (global under pjit, local under pmap)."""
  ids_BxRxL, mask_BxRxL, slices = stack_texts(batch, text_columns(config, set(batch)))
  batch_size, rows, length = ids_BxRxL.shape
  ids_NxL, mask_NxL = ids_BxRxL.reshape(-1, length), mask_BxRxL.reshape(-1, length)
  aux = {k: v for k, v in batch.items() if not (k.endswith("_ids") or k.endswith("_mask"))}
  rng = _dropout_rng(model, step_rng, axis_name)
  embed = make_embed_fn(model)
  rest = {k: v for k, v in params.items() if k != "encoder"}

  def objectives_of(rest, emb_NxD):
    return objective_fn(rest, split_embeddings(emb_NxD.reshape(batch_size, rows, -1), slices), aux)

  chunk_size = int(config.grad_cache.get("chunk_size", 0) or 0)
  if chunk_size:  # Chunks of chunk_size examples (all their texts) per device.
    gradcache.num_chunks_for(batch_size, num_shards, chunk_size)  # Fails clearly on a non-divisor.
    (loss, metrics), (enc_grads, rest_grads) = gradcache.grad_cache_value_and_grad(
        embed, lambda r, e: objectives_of(r, e["texts"]), params["encoder"], rest,
        {"texts": (ids_NxL, mask_NxL)}, {"texts": rng}, chunk_size * rows, num_shards, chunk_sharding)
    return (loss, metrics), {"encoder": enc_grads, **rest_grads}

  def loss_fn(params):
    emb_NxD = embed(params["encoder"], ids_NxL, mask_NxL, rng)
    return objectives_of({k: v for k, v in params.items() if k != "encoder"}, emb_NxD)

  return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _sharded_objectives(config, mesh):
  """objective_losses in shard_map over "data", pmean'ed: the global-batch loss from global arrays."""
  def per_device(rest, embs, aux):
    loss, metrics = objective_losses(config, rest, embs, aux, sharding.DATA_AXIS)
    return jax.lax.pmean((loss, metrics), sharding.DATA_AXIS)

  return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(sharding.DATA_AXIS), P(sharding.DATA_AXIS)),
                       out_specs=P())


def grad_fn_pjit(config, model, mesh) -> Callable:
  """(params, global batch, step_rng) -> ((loss, metrics), grads); to be jitted with the batch on "data"."""
  objective_fn = _sharded_objectives(config, mesh)
  chunk_sharding = NamedSharding(mesh, P(None, sharding.DATA_AXIS))
  return functools.partial(_loss_and_grads, config, model, objective_fn=objective_fn, axis_name=None,
                           num_shards=mesh.shape[sharding.DATA_AXIS], chunk_sharding=chunk_sharding)


def grad_fn_pmap(config, model) -> Callable:
  """(params, local batch, step_rng) -> ((loss, metrics), grads), pmean'ed over "data"; call under pmap."""
  def objective_fn(rest, embs, aux):
    return objective_losses(config, rest, embs, aux, sharding.DATA_AXIS)

  def fn(params, batch, step_rng):
    (loss, metrics), grads = _loss_and_grads(config, model, params, batch, step_rng, objective_fn,
                                             sharding.DATA_AXIS, 1, None)
    return jax.lax.pmean(((loss, metrics), grads), sharding.DATA_AXIS)

  return fn


# --- Train step -------------------------------------------------------------------------------------------


def _apply(tx, schedule, state: TrainState, loss, metrics, grads) -> tuple[TrainState, dict]:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  if schedule is not None:
    metrics["lr"] = schedule(state.step)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_train_step(config: ml_collections.ConfigDict, model: SentenceEncoder, mesh: Mesh,
                    tx: optax.GradientTransformation, state_shardings: TrainState | None = None,
                    schedule: optax.Schedule | None = None, max_traces: int | None = None) -> Callable:
  """`step(state, batch) -> (state, metrics)`, compiled once; the state is donated.

  pjit: state as create_train_state returns it (pass its state_shardings); batch a numpy dict of this
  process's rows (made global here) or global arrays split over "data". pmap: state from
  `to_pmap_state`; batch this process's numpy rows, split per device here. Metrics are scalars.
  max_traces: fail (chex.assert_max_traces) when the step is traced more often, i.e. recompiles.
  """
  strategy = config.parallel.get("strategy", "pjit")
  if strategy not in STRATEGIES:
    raise ValueError(f"parallel.strategy={strategy!r}: use one of {STRATEGIES}.")
  if strategy == "pmap":
    return _make_pmap_step(config, model, mesh, tx, schedule, max_traces)
  if state_shardings is None:
    raise ValueError("the pjit step needs state_shardings (the second result of create_train_state).")
  grad_fn = grad_fn_pjit(config, model, mesh)

  def step(state, batch):
    (loss, metrics), grads = grad_fn(state.params, batch, jax.random.fold_in(state.rng, state.step))
    return _apply(tx, schedule, state, loss, metrics, grads)

  if max_traces:
    step = chex.assert_max_traces(step, n=max_traces)

  replicated = sharding.replicated_sharding(mesh)
  jitted = jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, replicated), donate_argnums=0)

  def run(state, batch):
    if not isinstance(next(iter(batch.values())), jax.Array):
      batch = sharding.make_global_batch(batch, mesh)
    return jitted(state, batch)

  run.jitted = jitted
  return run


def _make_pmap_step(config, model, mesh, tx, schedule, max_traces):
  if config.parallel.get("fsdp", False):
    raise ValueError("parallel.fsdp needs parallel.strategy='pjit'; pmap keeps a full copy per device.")
  grad_fn = grad_fn_pmap(config, model)
  devices = list(mesh.devices.flat)  # Every process's devices (pmap's multi-process contract).
  local_devices = [d for d in devices if d.process_index == jax.process_index()]

  def step(state, batch):
    (loss, metrics), grads = grad_fn(state.params, batch, jax.random.fold_in(state.rng, state.step))
    return _apply(tx, schedule, state, loss, metrics, grads)

  if max_traces:
    step = chex.assert_max_traces(step, n=max_traces)
  pmapped = jax.pmap(step, axis_name=sharding.DATA_AXIS, devices=devices, donate_argnums=0)

  def run(state, batch):
    batch = sharding.split_for_pmap(batch, len(local_devices))
    state, metrics = pmapped(state, batch)
    return state, sharding.unreplicate(metrics)

  run.jitted = pmapped
  return run


def to_pmap_state(state: TrainState, mesh: Mesh) -> TrainState:
  """A create_train_state state -> one copy per local device, as the pmap step takes it."""
  devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  return sharding.replicate_for_pmap(jax.device_get(state), devices)


def from_pmap_state(state: TrainState) -> TrainState:
  return sharding.unreplicate(state)


def make_grad_fn(config: ml_collections.ConfigDict, model: SentenceEncoder, mesh: Mesh) -> Callable:
  """(params, numpy global batch, step_rng) -> (loss, metrics, grads) as host-side pytrees, for tests and
  diagnostics; same strategy and GradCache switch as the train step."""
  if config.parallel.get("strategy", "pjit") == "pmap":
    devices = list(mesh.devices.flat)
    fn = jax.pmap(grad_fn_pmap(config, model), axis_name=sharding.DATA_AXIS, devices=devices)

    def run_pmap(params, batch, step_rng):
      rep = sharding.replicate_for_pmap((params, step_rng), devices)
      (loss, metrics), grads = fn(rep[0], sharding.split_for_pmap(batch, len(devices)), rep[1])
      return jax.device_get(sharding.unreplicate((loss, metrics, grads)))

    return run_pmap
  fn = jax.jit(grad_fn_pjit(config, model, mesh))

  def run(params, batch, step_rng):
    (loss, metrics), grads = fn(params, sharding.make_global_batch(batch, mesh), step_rng)
    return jax.device_get((loss, metrics, grads))

  return run

