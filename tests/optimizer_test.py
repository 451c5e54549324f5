"""AdamW schedule, weight-decay mask on the real parameter tree, and gradient clipping."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from neuralir_jax import bi_encoder, config_lib, optimizer
from train_helpers import tiny_config

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.py")


def _opt(**kw):
  """config.optimizer of the schema (configs/common.py via configs/tiny.py) with `kw` set."""
  base = dict(learning_rate=1.0, warmup_steps=2, weight_decay=0.1, clip_norm=1.0, b1=0.9, b2=0.999)
  base.update(kw)
  config = config_lib.load_config(TINY)
  return config_lib.apply_overrides(config, [f"optimizer.{k}={v!r}" for k, v in base.items()], TINY).optimizer


def test_schedule_linear_warmup_then_decay():
  _, schedule = optimizer.make_optimizer(_opt(), num_steps=10)
  np.testing.assert_allclose([schedule(s) for s in (0, 1, 2, 6, 10)], [0, 0.5, 1, 0.5, 0], atol=1e-6)
  _, schedule = optimizer.make_optimizer(_opt(warmup_steps=-1, warmup_fraction=0.2), num_steps=10)
  np.testing.assert_allclose([schedule(s) for s in (1, 2, 6)], [0.5, 1, 0.5], atol=1e-6)
  _, schedule = optimizer.make_optimizer(_opt(warmup_steps=0), num_steps=4)
  np.testing.assert_allclose([schedule(s) for s in (0, 2, 4)], [1, 0.5, 0], atol=1e-6)


def test_decay_mask_on_real_param_paths():
  params = bi_encoder.BiEncoder(tiny_config()).init_params(jax.random.PRNGKey(0))
  mask = optimizer.decay_mask(params)
  bert = mask["encoder"]["bert"]
  assert bert["word_embeddings"]["embedding"] is True
  assert bert["embeddings_layer_norm"]["scale"] is False and bert["embeddings_layer_norm"]["bias"] is False
  layer = bert["layer_0"]
  assert layer["query"]["kernel"] is True and layer["query"]["bias"] is False
  assert layer["attention_layer_norm"]["scale"] is False and layer["output_layer_norm"]["bias"] is False
  assert layer["intermediate"]["kernel"] is True
  assert mask["heads"]["nli"]["kernel"] is True and mask["heads"]["nli"]["bias"] is False
  assert mask["log_temperature"] is False
  # Zero gradients: decayed params shrink by lr * wd * p, masked ones do not move.
  tx, _ = optimizer.make_optimizer(_opt(warmup_steps=0), num_steps=10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  kernel = params["encoder"]["bert"]["layer_0"]["query"]["kernel"]
  np.testing.assert_allclose(updates["encoder"]["bert"]["layer_0"]["query"]["kernel"], -0.1 * kernel, rtol=1e-6)
  assert not np.any(updates["encoder"]["bert"]["layer_0"]["attention_layer_norm"]["scale"])
  assert not np.any(updates["heads"]["nli"]["bias"]) and float(updates["log_temperature"]) == 0


def test_global_norm_clipping():
  params = {"w": jnp.ones((4,)), "b": jnp.ones((2,))}
  unit = {"w": jnp.full((4,), 0.4), "b": jnp.array([0.6, 0.0])}  # Global norm 1.
  assert abs(float(optax.tree.norm(unit)) - 1.0) < 1e-6
  big = jax.tree.map(lambda g: 1000.0 * g, unit)

  def first_update(clip_norm, grads):
    # eps = 1 makes Adam's step depend on the gradient's scale, so clipping is visible.
    tx, _ = optimizer.make_optimizer(_opt(warmup_steps=0, weight_decay=0.0, clip_norm=clip_norm, eps=1.0), 10)
    return tx.update(grads, tx.init(params), params)[0]

  np.testing.assert_allclose(first_update(1.0, big)["w"], first_update(1.0, unit)["w"], rtol=1e-5)
  assert not np.allclose(first_update(0.0, big)["w"], first_update(0.0, unit)["w"], rtol=1e-3)


def test_head_lr_multiplier_scales_only_non_encoder_updates():
  params = {"encoder": {"w": jnp.ones((2, 2))}, "heads": {"nli": {"kernel": jnp.ones((2, 3))}},
            "log_temperature": jnp.zeros(())}
  grads = jax.tree.map(jnp.ones_like, params)
  base = dict(learning_rate=1e-2, warmup_steps=-1, warmup_fraction=0.0, weight_decay=0.0, clip_norm=0.0)
  plain_tx, _ = optimizer.make_optimizer(_opt(**base), 10)
  fast_tx, _ = optimizer.make_optimizer(_opt(**base, head_lr_multiplier=100.0), 10)
  plain, _ = plain_tx.update(grads, plain_tx.init(params), params)
  fast, _ = fast_tx.update(grads, fast_tx.init(params), params)
  np.testing.assert_allclose(fast["encoder"]["w"], plain["encoder"]["w"])
  np.testing.assert_allclose(fast["heads"]["nli"]["kernel"], 100 * plain["heads"]["nli"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(fast["log_temperature"], 100 * plain["log_temperature"], rtol=1e-6)


def test_warmup_fraction_rounds_up_as_the_hugging_face_trainer_does():
  import types
  from transformers import TrainingArguments
  for num_steps in (3, 29, 30, 45, 1000):
    config = tiny_config(**{"optimizer.warmup_steps": -1, "optimizer.warmup_fraction": 0.1})
    hf = TrainingArguments.get_warmup_steps(types.SimpleNamespace(warmup_steps=0.1), num_steps)
    assert optimizer.warmup_steps_of(config.optimizer, num_steps) == hf, num_steps
  assert optimizer.warmup_steps_of(config.optimizer, 45) == 5  # round() gave 4.


def test_every_step_of_the_schedule_equals_the_trainers():
  """The learning rate of each of configs/scifact.py's 29 updates, first (0) and last included, equals
  `get_linear_schedule_with_warmup` with the Trainer's warmup rounding (the reference's schedule)."""
  import types

  import torch
  from transformers import TrainingArguments, get_linear_schedule_with_warmup
  c = config_lib.load_config(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "scifact.py"))
  _, schedule = optimizer.make_optimizer(c.optimizer, c.num_steps)
  opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=c.optimizer.learning_rate)
  warmup = TrainingArguments.get_warmup_steps(types.SimpleNamespace(warmup_steps=c.optimizer.warmup_fraction),
                                              c.num_steps)
  reference = get_linear_schedule_with_warmup(opt, warmup, c.num_steps)
  for step in range(c.num_steps):
    np.testing.assert_allclose(float(schedule(step)), opt.param_groups[0]["lr"], rtol=1e-6, atol=1e-12,
                               err_msg=f"step {step}")
    opt.step()
    reference.step()
