"""Which columns each training objective reads, and the weighted objectives on one device's embeddings.

Batches are dicts of per-column `c_ids`/`c_mask` int32[B, L] (the "negative" column may be [B, k, L]),
optional `c_hash` int32[B] (or [B, k]), `label` int32[B], `score` float32[B]. The objectives (weights in
`config.objectives`, 0 = off) read:
  nli_softmax  (premise, hypothesis, label), or on triplet views (anchor, positive) as entailment,
               (anchor, neutral) as neutral and (anchor, negative) as contradiction;
  sts_cosine   (sentence1, sentence2, score) or (premise, hypothesis, score);
  triplet      (anchor, positive, negative);
  infonce      (anchor, positive[, negative]) with in-batch, cross-device and hard negatives;
  sigmoid      the same candidates, SigLIP's pairwise sigmoid loss (`losses.sigmoid_loss`);
  margin_mse, listwise_kl  (anchor, positive, negative, teacher_scores [B, 1 + k]): distillation of a
               teacher's scores into scale * q.d (`losses.margin_mse_loss`, `losses.listwise_kl_loss`);
  embedding_mse  distill.embedding_columns and teacher_embedding [B, D]: MSE to a teacher's vector of the
               source text (multilingual knowledge distillation).
Each text column is embedded once per step: `stack_texts` puts every column of a batch into one
[B, R, L] array for a single encoder call and `split_embeddings` cuts the result back into columns.

Params besides the encoder: {'heads': {'nli': ...}} when nli_softmax is on, 'log_temperature' when the
InfoNCE temperature is learnable (`init_params`). The losses themselves are in `losses.py`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from neuralir_jax import config_lib, losses, negative_queue

OBJECTIVES = config_lib.OBJECTIVES
# Known text columns, in the order they are stacked for the encoder.
COLUMNS = ("anchor", "positive", "neutral", "negative", "premise", "hypothesis", "sentence1", "sentence2")


def enabled(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Objective name -> weight, for the objectives with a non-zero weight (config_lib.validate checks names)."""
  return {name: float(weight) for name, weight in config.objectives.items() if weight}


def init_params(config: ml_collections.ConfigDict, rng: jax.Array) -> dict:
  """The objectives' own params: the NLI head and the learnable log-temperature, when enabled."""
  params = {}
  objectives = enabled(config)
  if "nli_softmax" in objectives:
    params["heads"] = {"nli": losses.init_nli_head(rng, config.model.bert.hidden_size)}
  if "infonce" in objectives and config.infonce.learnable_temperature:
    params["log_temperature"] = jnp.asarray(math.log(config.infonce.temperature), jnp.float32)
  if "sigmoid" in objectives:
    params["sigmoid"] = {"log_scale": jnp.asarray(math.log(config.sigmoid.scale_init), jnp.float32),
                         "bias": jnp.asarray(config.sigmoid.bias_init, jnp.float32)}
  return params


# --- Column routing ---------------------------------------------------------------------------------------


def _nli_pairs(cols: set[str], keys: set[str]) -> list[tuple[str, str, int | None]]:
  if {"premise", "hypothesis"} <= cols and "label" in keys:
    return [("premise", "hypothesis", None)]
  if {"anchor", "positive", "negative"} <= cols:
    pairs = [("anchor", "positive", 0), ("anchor", "negative", 2)]
    return pairs + ([("anchor", "neutral", 1)] if "neutral" in cols else [])
  raise ValueError(f"nli_softmax needs columns premise, hypothesis and label, or anchor, positive, negative; "
                   f"the batch has {sorted(keys)}: pick another data.view or set objectives.nli_softmax=0.")


def _sts_pair(cols: set[str], keys: set[str]) -> tuple[str, str]:
  for pair in (("sentence1", "sentence2"), ("premise", "hypothesis")):
    if set(pair) <= cols and "score" in keys:
      return pair
  raise ValueError(f"sts_cosine needs sentence1, sentence2 and score; the batch has {sorted(keys)}: use an "
                   "sts: source with data.view=pairs, or set objectives.sts_cosine=0.")


def _require(objective: str, needed: tuple[str, ...], cols: set[str], keys: set[str], hint: str) -> None:
  if not set(needed) <= cols:
    raise ValueError(f"{objective} needs the text columns {needed}; the batch has {sorted(keys)}: {hint}")


def text_columns(config: ml_collections.ConfigDict, keys: set[str]) -> tuple[str, ...]:
  """The text columns the enabled objectives read, in COLUMNS order (each encoded once); a one-line
  error naming what to change when the data lacks one."""
  cols = {k.rpartition("_")[0] for k in keys if k.endswith(("_ids", "_slot"))}
  used = set()
  objectives = enabled(config)
  if "nli_softmax" in objectives:
    used |= {c for a, b, _ in _nli_pairs(cols, keys) for c in (a, b)}
  if "sts_cosine" in objectives:
    used |= set(_sts_pair(cols, keys))
  if "triplet" in objectives:
    _require("triplet", ("anchor", "positive", "negative"), cols, keys,
             "use data.view=triplets on a source with negatives, or set objectives.triplet=0.")
    used |= {"anchor", "positive", "negative"}
  if "margin_mse" in objectives or "listwise_kl" in objectives:
    _require("margin_mse / listwise_kl", ("anchor", "positive", "negative"), cols, keys,
             "distillation scores a query's positive against its negatives: train on a triples: file with "
             "negatives and scores (neuralir mine [--teacher CE_DIR]), data.view=triplets.")
    if "teacher_scores" not in keys:
      raise ValueError("margin_mse / listwise_kl need teacher scores: load the triples with distill.scores "
                       "(train.make_iterator does), from a file `neuralir mine --teacher CE_DIR` wrote.")
    used |= {"anchor", "positive", "negative"}
  if "embedding_mse" in objectives:
    wanted = tuple(config.distill.embedding_columns)
    _require("embedding_mse", wanted, cols, keys,
             "a parallel: source gives anchor and positive; one-language sentences (e.g. the duplicates view) "
             "give anchor only: set --config.distill.embedding_columns='(\"anchor\",)'.")
    used |= set(wanted)
  if "infonce" in objectives or "sigmoid" in objectives:
    if config.infonce.hard_negatives:
      _require("infonce", ("anchor", "positive", "negative"), cols, keys,
               "this view has no negatives; set --config.infonce.hard_negatives=false.")
    else:
      _require("infonce", ("anchor", "positive"), cols, keys, "use data.view=triplets, nli_full or duplicates.")
    used |= {"anchor", "positive"} | ({"negative"} if config.infonce.hard_negatives else set())
  return tuple(sorted(used, key=lambda c: COLUMNS.index(c) if c in COLUMNS else len(COLUMNS)))


# Batch keys that hold texts (what the encoder reads) rather than per-example values for the loss:
# padded columns `c_ids`/`c_mask` [B, (k,) L]; packed batches `packed_tokens`/`packed_segments` [R, L] (rows
# of every device, see `packing.pack_per_device`) and `c_slot` [B(, k)] (each text's row * S + slot).
PACKED_KEYS = ("packed_tokens", "packed_segments")
TEXT_KEY_SUFFIXES = ("_ids", "_mask", "_slot") + PACKED_KEYS


def num_examples(batch: dict) -> int:
  """Rows (examples) of a batch: the leading size of its first text column."""
  return next(v for k, v in batch.items() if k.endswith(("_ids", "_slot"))).shape[0]


def texts_per_example(batch: dict, column: str) -> int:
  """k for a [B, k(, L)] column, 1 for a [B(, L)] one, padded or packed."""
  if f"{column}_slot" in batch:
    return int(np.prod(batch[f"{column}_slot"].shape[1:], dtype=np.int64))
  return int(np.prod(batch[f"{column}_ids"].shape[1:-1], dtype=np.int64))


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


# --- Objectives on one device's embeddings ----------------------------------------------------------------


def temperature_of(config: ml_collections.ConfigDict, params: dict) -> jax.Array:
  if "log_temperature" in params:
    return losses.temperature_from_log(params["log_temperature"])
  return jnp.float32(config.infonce.temperature)


def objective_losses(config: ml_collections.ConfigDict, rest: dict, embs: dict[str, jax.Array],
                     aux: dict[str, jax.Array], axis_name: str | None) -> tuple[jax.Array, dict]:
  """Weighted sum of this device's objective losses (local means) and its metrics.

  rest: params other than the encoder; embs: column -> [b, D] ([b * k, D] for "negative"); aux: the batch's
  labels, scores and hashes. InfoNCE gathers candidates over axis_name when negatives == "global".
  With matryoshka.dims (Kusupati et al., 2022; sentence-transformers' MatryoshkaLoss) the objectives run on
  the first d dimensions of every embedding (re-normalised when model.normalize) for each d, and the loss
  is the weighted sum over d; metrics are those of the largest d, plus `loss/NAME@d` for every d.
  """
  dims = tuple(config.matryoshka.dims)
  if not dims:
    return _objective_losses(config, rest, embs, aux, axis_name)
  total, metrics = 0.0, {}
  queue_key = negative_queue.AUX_PREFIX + "emb"
  for d, weight in sorted(zip(dims, config.matryoshka.weights), reverse=True):
    aux_d = aux if queue_key not in aux else dict(aux, **{queue_key: truncate(aux[queue_key], d,
                                                                              config.model.normalize)})
    loss, metrics_d = _objective_losses(
        config, rest, {c: truncate(e, d, config.model.normalize) for c, e in embs.items()}, aux_d, axis_name)
    total = total + weight * loss
    metrics = metrics or dict(metrics_d)
    metrics.update({f"{k}@{d}": v for k, v in metrics_d.items() if k.startswith("loss/")})
  return total, metrics


def truncate(emb_NxD: jax.Array, dim: int, normalize: bool) -> jax.Array:
  """The first `dim` dimensions, L2-normalised again when the encoder normalises (cosine stays cosine)."""
  emb = emb_NxD[..., :dim]
  if not normalize or dim == emb_NxD.shape[-1]:
    return emb
  norm = jnp.linalg.norm(emb.astype(jnp.float32), axis=-1, keepdims=True)
  return (emb / jnp.maximum(norm, 1e-12)).astype(emb_NxD.dtype)


def _objective_losses(config, rest, embs, aux, axis_name):
  objectives = enabled(config)
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
                                                  float(config.triplet.margin))
  if "infonce" in objectives:
    metrics["loss/infonce"], metrics["negatives_per_query"] = _infonce(config, rest, embs, aux, axis_name)
    metrics["temperature"] = temperature_of(config, rest)
  if "sigmoid" in objectives:
    metrics["loss/sigmoid"] = _sigmoid(config, rest, embs, aux, axis_name)
    metrics["sigmoid_scale"] = jnp.exp(rest["sigmoid"]["log_scale"])
    metrics["sigmoid_bias"] = rest["sigmoid"]["bias"]
  if "margin_mse" in objectives or "listwise_kl" in objectives:
    q = embs["anchor"]
    docs_bxNxD = jnp.concatenate([embs["positive"][:, None],
                                  embs["negative"].reshape(q.shape[0], -1, q.shape[-1])], axis=1)
    student_bxN = float(config.distill.scale) * jnp.einsum("bd,bnd->bn", q, docs_bxNxD)
    teacher_bxN = float(config.distill.teacher_scale) * aux["teacher_scores"]
    if "margin_mse" in objectives:
      metrics["loss/margin_mse"] = losses.margin_mse_loss(student_bxN, teacher_bxN)
    if "listwise_kl" in objectives:
      metrics["loss/listwise_kl"] = losses.listwise_kl_loss(student_bxN, teacher_bxN,
                                                            float(config.distill.teacher_temperature))
  if "embedding_mse" in objectives:
    teacher = aux["teacher_embedding"]
    metrics["loss/embedding_mse"] = jnp.mean(jnp.stack([
        jnp.mean((embs[c].astype(jnp.float32) - teacher) ** 2) for c in config.distill.embedding_columns]))
  for name, weight in objectives.items():
    total = total + weight * metrics[f"loss/{name}"]
  return total, metrics


def _first_per_query(emb_RxD: jax.Array, num_queries: int) -> jax.Array:
  """[b * k, D] rows of a column (k per query) -> the first of each query's k: [b, D]."""
  return emb_RxD.reshape(num_queries, -1, emb_RxD.shape[-1])[:, 0]


def _has_hashes(config, aux) -> bool:
  return (bool(config.infonce.mask_false_negatives) and "anchor_hash" in aux and "positive_hash" in aux
          and (not config.infonce.hard_negatives or "negative_hash" in aux))


def queue_entries(config, columns: dict[str, jax.Array], aux: dict[str, jax.Array]):
  """What a step pushes onto the negative queue: its candidate columns in the loss's layout (positives,
  then the hard negatives) and their hashes (None when the masks use none); see `negative_queue.push`."""
  names = ["positive"] + (["negative"] if config.infonce.hard_negatives else [])
  embs = [columns[c].reshape(-1, columns[c].shape[-1]) for c in names]
  hashes = [aux[f"{c}_hash"].reshape(-1) for c in names] if _has_hashes(config, aux) else None
  return embs, hashes


def _candidates(config, embs, aux):
  """(queries, hard negatives [b, k, D] or None, hashes for the masks) of the contrastive objectives."""
  q = embs["anchor"]
  b, dim = q.shape
  neg = embs["negative"].reshape(b, -1, dim) if config.infonce.hard_negatives else None
  hashes = {}
  if _has_hashes(config, aux):
    hashes = dict(q_hash_b=aux["anchor_hash"], pos_hash_b=aux["positive_hash"],
                  neg_hash_bxK=None if neg is None else aux["negative_hash"].reshape(b, -1),
                  judged_hash_bxP=aux.get("judged_hash"))
  return q, neg, hashes


def _sigmoid(config, rest, embs, aux, axis_name):
  q, neg, hashes = _candidates(config, embs, aux)
  hashes.pop("q_hash_b", None)
  return losses.sigmoid_loss(q, embs["positive"], neg, log_scale=rest["sigmoid"]["log_scale"],
                             bias=rest["sigmoid"]["bias"], axis_name=axis_name, negatives=config.negatives,
                             block_size=int(config.infonce.block_size),
                             queue=negative_queue.from_aux(aux), **hashes)


def _infonce(config, rest, embs, aux, axis_name):
  q, neg, hashes = _candidates(config, embs, aux)
  return losses.contrastive_loss(
      q, embs["positive"], neg, temperature=temperature_of(config, rest), axis_name=axis_name,
      negatives=config.negatives, symmetric=bool(config.infonce.symmetric),
      implementation=config.infonce.implementation, block_size=int(config.infonce.block_size),
      queue=negative_queue.from_aux(aux), **hashes)
