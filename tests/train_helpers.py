"""Tiny training configs and random batches shared by the training-core tests (not a test module)."""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from neuralir_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VOCAB = 100


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """configs/tiny.py (the schema of configs/common.py) shrunk to a 2-layer, hidden-32 BERT on a 100-token
  vocabulary, dropout off, with every objective on; `overrides` are flat keys ("parallel.strategy")."""
  c = config_lib.load_config(os.path.join(REPO, "configs", "tiny.py"))
  settings = {
      "model.bert.vocab_size": VOCAB, "model.bert.hidden_size": 32, "model.bert.num_hidden_layers": 2,
      "model.bert.num_attention_heads": 4, "model.bert.intermediate_size": 64,
      "model.bert.max_position_embeddings": 32, "model.pooling": "mean", "model.normalize": True,
      "model.max_seq_length": 16, "model.dropout_rate": 0.0,
      # Distinct weights so that a device-count bug in one objective cannot cancel out in the sum.
      "objectives.nli_softmax": 1.0, "objectives.sts_cosine": 0.5, "objectives.triplet": 0.3,
      "objectives.infonce": 1.0, "objectives.sigmoid": 0.1, "sigmoid.scale_init": 5.0,
      "infonce.temperature": 0.05, "infonce.learnable_temperature": True, "infonce.symmetric": True,
      "infonce.hard_negatives": True, "triplet.margin": 1.0, "negatives": "global",
      "parallel.strategy": "pjit", "parallel.fsdp": False, "grad_cache.chunk_size": 0,
      "optimizer.learning_rate": 1e-3, "optimizer.warmup_steps": 1, "optimizer.weight_decay": 0.01,
      "optimizer.clip_norm": 1.0, "num_steps": 10, "batch_size": 16, "seed": 0,
  }
  settings.update(overrides)
  c.update_from_flattened_dict(settings)
  return c


def _texts(rng: np.random.RandomState, shape: tuple[int, ...], length: int):
  ids = rng.randint(1, VOCAB, shape + (length,)).astype(np.int32)
  lengths = rng.randint(2, length + 1, shape)
  mask = (np.arange(length) < lengths[..., None]).astype(np.int32)
  return ids * mask, mask


def random_batch(batch_size: int = 16, length: int = 8, k: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
  """Columns for every objective: anchor/positive/negative (k hard negatives per query, [B, k, L]),
  premise/hypothesis with label and score, teacher scores [B, 1 + k] and teacher embeddings [B, 32]. Positive hashes of rows 3 and 12 collide (same text on two
  devices), so false-negative masking across devices is exercised."""
  rng = np.random.RandomState(seed)
  batch = {}
  for column, shape in (("anchor", (batch_size,)), ("positive", (batch_size,)), ("negative", (batch_size, k)),
                        ("premise", (batch_size,)), ("hypothesis", (batch_size,))):
    batch[f"{column}_ids"], batch[f"{column}_mask"] = _texts(rng, shape, length)
    batch[f"{column}_hash"] = rng.randint(0, 2**30, shape).astype(np.int32)
  batch["positive_hash"][12] = batch["positive_hash"][3]
  batch["label"] = rng.randint(0, 3, (batch_size,)).astype(np.int32)
  batch["score"] = rng.uniform(0, 5, (batch_size,)).astype(np.float32)
  # Distillation targets: teacher logits of [positive, k negatives] and a teacher vector (hidden 32).
  batch["teacher_scores"] = rng.normal(0, 3, (batch_size, 1 + k)).astype(np.float32)
  teacher = rng.normal(0, 1, (batch_size, 32)).astype(np.float32)
  batch["teacher_embedding"] = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True)
  return batch


def run_steps(config, devices: int, num_steps: int = 3) -> dict:
  """For one strategy and device count: "grads" ((loss, metrics, grads) at init, without FSDP), the
  "metrics" of num_steps train steps on random_batch(seed=step), and the "params" and "queue" after them."""
  import chex
  import jax

  from neuralir_jax import families, optimizer, sharding, steps
  chex.clear_trace_counter()
  mesh = sharding.make_mesh(devices)
  model = families.make_family(config)
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
  state, shardings = steps.create_train_state(model, jax.random.PRNGKey(config.seed), mesh, tx)
  result = {}
  if config.parallel.fsdp is False:
    result["grads"] = steps.make_grad_fn(model, mesh)(state.params, random_batch(), jax.random.PRNGKey(1))
  step = steps.make_train_step(model, mesh, tx, shardings, schedule, max_traces=1)
  if config.parallel.strategy == "pmap":
    state = steps.to_pmap_state(state, mesh)
  result["metrics"] = []
  for i in range(num_steps):  # Also checks, via max_traces=1, that steps 2 and 3 do not recompile.
    state, metrics = step(state, random_batch(seed=i))
    result["metrics"].append(jax.device_get(metrics))
  if config.parallel.strategy == "pmap":
    state = steps.from_pmap_state(state, mesh)
  result["params"] = jax.device_get(state.params)
  result["queue"] = jax.device_get(state.queue)
  return result


def max_abs_diff(a, b) -> float:
  import jax
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _tiny_bert():
  from neuralir_jax import model as model_lib
  return model_lib.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)


def save_tiny_encoder(path: str, tokenizer_dir: str) -> str:
  """A 1-layer, hidden-32 random bi-encoder with MiniLM's tokenizer saved to `path`: quick to load."""
  import jax

  from neuralir_jax import hf_io, tokenization
  from neuralir_jax import model as model_lib
  config = model_lib.EncoderConfig(bert=_tiny_bert(), max_seq_length=64)
  params = jax.device_get(model_lib.init_params(config, jax.random.key(0)))
  hf_io.save_hf_directory(path, config, params, tokenization.Tokenizer(tokenizer_dir, 64))
  return path


def save_tiny_cross_encoder(path: str, tokenizer_dir: str) -> str:
  """A 1-layer, hidden-32 random cross-encoder (one logit, a head scaled so scores spread) saved to `path`."""
  import jax

  from neuralir_jax import cross_encoder, tokenization
  from neuralir_jax import model as model_lib
  bert = dataclasses.replace(_tiny_bert(), initializer_range=0.5)  # Pooled outputs that vary with the input.
  body = model_lib.init_params(model_lib.EncoderConfig(bert=bert, max_seq_length=64), jax.random.key(0))
  params = {"bert": body["bert"], "classifier": {"kernel": 0.3 * jax.random.normal(jax.random.key(1), (32, 1)),
                                                  "bias": np.zeros((1,), np.float32)}}
  config = cross_encoder.CrossEncoderConfig(bert, 1, "sigmoid", 64)
  cross_encoder.save_cross_encoder_directory(path, config, jax.device_get(params),
                                             tokenization.Tokenizer(tokenizer_dir, 64))
  return path
