"""Tiny training configs and random batches shared by the training-core tests (not a test module)."""

from __future__ import annotations

import ml_collections
import numpy as np

VOCAB = 100


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """A 2-layer, hidden-32 BERT with every objective on: the config shape train.py builds."""
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      bert=dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=32),
      pooling="mean", normalize=True, max_seq_length=16, dropout_rate=0.0, dtype="float32", remat=False))
  # Distinct weights so that a device-count bug in one objective cannot cancel out in the sum.
  c.objectives = dict(nli_softmax=1.0, sts_cosine=0.5, triplet=0.3, infonce=1.0)
  c.infonce = ml_collections.ConfigDict(dict(temperature=0.05, learnable_temperature=True, symmetric=True,
                                             hard_negatives=True))
  c.triplet = ml_collections.ConfigDict(dict(margin=1.0))
  c.negatives = "global"
  c.parallel = ml_collections.ConfigDict(dict(strategy="pjit", fsdp=False))
  c.grad_cache = ml_collections.ConfigDict(dict(chunk_size=0))
  c.optimizer = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=1, weight_decay=0.01,
                                               clip_norm=1.0, b1=0.9, b2=0.999))
  c.num_steps = 10
  c.batch_size = 16
  c.seed = 0
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


def _texts(rng: np.random.RandomState, shape: tuple[int, ...], length: int):
  ids = rng.randint(1, VOCAB, shape + (length,)).astype(np.int32)
  lengths = rng.randint(2, length + 1, shape)
  mask = (np.arange(length) < lengths[..., None]).astype(np.int32)
  return ids * mask, mask


def random_batch(batch_size: int = 16, length: int = 8, k: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
  """Columns for every objective: anchor/positive/negative (k hard negatives per query, [B, k, L]),
  premise/hypothesis with label and score. Positive hashes of rows 3 and 12 collide (same text on two
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
  return batch


def max_abs_diff(a, b) -> float:
  import jax
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
