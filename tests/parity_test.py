"""Three train steps of ours == three steps of the PyTorch reference (sentence-transformers), dropout off.

The same MiniLM, the same 8 SciFact triples (query, positive, BM25 hard negative), InfoNCE / MNRL with scale
20, AdamW as the Hugging Face Trainer sets it up (lr 2e-5, its default eps and betas, weight decay 0.01
except biases and LayerNorms, 10% warmup rounded up, then linear decay, clip 1.0). Adam divides by sqrt(v) + eps, so a wrong eps, decay mask, schedule
step or loss term moves parameters with small gradients by about the learning rate: far more than 1e-5.
"""

import dataclasses
import gzip
import json
import os
import re
import types

import jax
import numpy as np
import pytest

from neuralir_jax import bi_encoder, hf_io, optimizer, sharding, steps
from train_helpers import REPO, tiny_config

BATCH, LENGTH, NUM_STEPS, LR, WARMUP = 8, 32, 3, 2e-5, 0.1


def _triples() -> list[dict]:
  with gzip.open(os.path.join(REPO, "data", "triples", "scifact_train_bm25_triples.jsonl.gz"), "rt") as f:
    return [json.loads(line) for _, line in zip(range(BATCH * NUM_STEPS), f)]


def _ours(triples):
  config = tiny_config(**{
      "model.init": "minilm", "model.dropout_rate": 0.0, "data.max_length": LENGTH,
      "objectives.nli_softmax": 0.0, "objectives.sts_cosine": 0.0, "objectives.triplet": 0.0, "objectives.sigmoid": 0.0,
      "objectives.infonce": 1.0, "infonce.learnable_temperature": False, "infonce.symmetric": False,
      "infonce.hard_negatives": True, "infonce.temperature": 0.05, "batch_size": BATCH,
      "num_steps": NUM_STEPS, "optimizer.learning_rate": LR, "optimizer.warmup_steps": -1,
      "optimizer.warmup_fraction": WARMUP, "optimizer.weight_decay": 0.01, "optimizer.clip_norm": 1.0})
  # optimizer.eps and b1/b2 stay at configs/common.py's defaults: they are what this test pins.
  config, tokenizer, pretrained = bi_encoder.resolve_model(config)
  family = bi_encoder.BiEncoder(config)
  mesh = sharding.make_mesh(1)
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
  state, shardings = steps.create_train_state(family, jax.random.key(0), mesh, tx, pretrained)
  step = steps.make_train_step(family, mesh, tx, shardings, schedule)
  losses = []
  for i in range(NUM_STEPS):
    rows = triples[i * BATCH:(i + 1) * BATCH]
    batch = {}
    for column, field in (("anchor", "query"), ("positive", "positive"), ("negative", "negative")):
      batch[f"{column}_ids"], batch[f"{column}_mask"] = tokenizer([r[field] for r in rows], max_length=LENGTH,
                                                                  pad_to=LENGTH)
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  params = jax.device_get(state.params["encoder"])
  return losses, hf_io.params_to_hf_state_dict(params, family.encoder_config.bert)


def _reference(triples, model_dir):
  import torch
  from sentence_transformers import SentenceTransformer
  from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
  from transformers import TrainingArguments, get_linear_schedule_with_warmup
  # The Trainer's defaults (eps, betas) and its warmup rounding, read from transformers itself (building a
  # TrainingArguments would need accelerate).
  defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
  warmup = TrainingArguments.get_warmup_steps(types.SimpleNamespace(warmup_steps=WARMUP), NUM_STEPS)
  torch.manual_seed(0)
  model = SentenceTransformer(model_dir, device="cpu")
  model.max_seq_length = LENGTH
  model.eval()  # Dropout off; gradients still flow.
  loss_fn = MultipleNegativesRankingLoss(model, scale=20.0)
  decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
  no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=LR, betas=(defaults["adam_beta1"], defaults["adam_beta2"]), eps=defaults["adam_epsilon"])
  sched = get_linear_schedule_with_warmup(opt, warmup, NUM_STEPS)
  losses = []
  for i in range(NUM_STEPS):
    rows = triples[i * BATCH:(i + 1) * BATCH]
    features = [model.tokenize([r[field] for r in rows]) for field in ("query", "positive", "negative")]
    loss = loss_fn(features, None)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    losses.append(float(loss.detach()))
  state = {re.sub(r"^0\.(auto_)?model\.", "", k): v.detach().numpy() for k, v in model.state_dict().items()}
  return losses, state


@pytest.fixture(scope="module")
def both(minilm_path):
  triples = _triples()
  return _ours(triples), _reference(triples, minilm_path)


def test_three_steps_equal_the_pytorch_reference(both):
  (ours_losses, ours), (ref_losses, ref) = both
  np.testing.assert_allclose(ours_losses, ref_losses, atol=1e-5)
  assert len(ours) == len(ref) and set(ours) == set(ref)
  worst = max((float(np.max(np.abs(ours[k] - ref[k]))), k) for k in ours)
  assert worst[0] <= 1e-5, worst
