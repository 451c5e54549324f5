"""AdamW with linear warmup then linear decay, no weight decay on LayerNorm params and biases, clipping.

The recipe of Sentence-BERT / Hugging Face `get_linear_schedule_with_warmup`: the learning rate rises from 0
to `learning_rate` over the warmup steps, then falls linearly to 0 at `num_steps`. Gradients are clipped by
their global norm before AdamW.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import optax


def warmup_steps_of(opt_config: ml_collections.ConfigDict, num_steps: int) -> int:
  """`warmup_steps` when >= 0, else `warmup_fraction * num_steps` rounded up, as the Hugging Face Trainer
  rounds `warmup_ratio` (29 steps at 0.1: 3; 45 steps: 5, where round() gave 4)."""
  if opt_config.warmup_steps >= 0:
    return int(opt_config.warmup_steps)
  return math.ceil(num_steps * float(opt_config.warmup_fraction))  # The Trainer's expression, float error too.


def linear_warmup_decay(learning_rate: float, warmup_steps: int, num_steps: int) -> optax.Schedule:
  warmup_steps = min(warmup_steps, num_steps)
  warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  decay = optax.linear_schedule(learning_rate, 0.0, max(num_steps - warmup_steps, 1))
  if warmup_steps == 0:
    return decay
  return optax.join_schedules([warmup, decay], [warmup_steps])


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def decay_mask(params: Any) -> Any:
  """True for params that get weight decay: everything except LayerNorm params, biases and scalars."""
  def decays(path, leaf) -> bool:
    names = _path_names(path)
    if names and names[-1] == "bias":
      return False
    if any("layer_norm" in n or "layernorm" in n.lower() for n in names):
      return False
    return getattr(leaf, "ndim", 0) >= 1

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(opt_config: ml_collections.ConfigDict,
                   num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(tx, schedule) from config.optimizer (keys and meanings in configs/common.py); clip_norm 0 is off."""
  schedule = linear_warmup_decay(float(opt_config.learning_rate), warmup_steps_of(opt_config, num_steps),
                                 num_steps)
  parts = []
  if opt_config.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(opt_config.clip_norm)))
  parts.append(optax.adamw(schedule, b1=float(opt_config.b1), b2=float(opt_config.b2), eps=float(opt_config.eps),
                           weight_decay=float(opt_config.weight_decay), mask=decay_mask))
  multiplier = float(opt_config.head_lr_multiplier)
  if multiplier != 1.0:
    # Fresh params (the NLI head, the learnable temperature, a cross-encoder's classifier) next to a
    # pretrained encoder need a larger step than the encoder's fine-tuning rate to learn in a short run.
    parts.append(optax.masked(optax.scale(multiplier), non_encoder_mask))
  return optax.chain(*parts), schedule


def non_encoder_mask(params: Any) -> Any:
  """True for every leaf outside params['encoder'] (heads, log_temperature) and for a cross-encoder's
  classifier or ColBERT's projection (params['encoder']['classifier' | 'projection'], fresh on a pretrained
  body)."""
  def fresh(path, _):
    names = _path_names(path)
    return names[0] != "encoder" or names[1:2] in (["classifier"], ["projection"])
  return jax.tree_util.tree_map_with_path(fresh, params)
