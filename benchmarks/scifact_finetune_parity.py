"""The same SciFact fine-tuning recipe run by sentence-transformers and by neuralir_jax, scored alike.

  python benchmarks/scifact_finetune_parity.py --seed 0 [--dropout 0.1] [--order same|own] [--mask false|true] [--out DIR]

Both sides start from the packaged all-MiniLM-L6-v2 and train one epoch of the bundled SciFact BM25
triples with configs/scifact.py's recipe (InfoNCE / MultipleNegativesRankingLoss, scale 20, the hard
negative, batch 32, AdamW lr 2e-5, the Trainer's eps and 10% warmup rounded up, linear decay, weight
decay 0.01 off LayerNorms and biases, clip 1.0, 128 tokens). The reference is a plain torch loop with the
Trainer's optimizer and schedule (the Trainer itself needs accelerate). Each trained model is exported and
scored on SciFact test with exact search by `neuralir_jax.evaluate` (which equals sentence-transformers'
embeddings: tests/reproduction_test.py). With --order same (the default) the reference trains on our
batches in our order, so the sides differ only in the implementation (dropout masks with --dropout > 0);
--order own lets it shuffle one epoch itself, and the gap is then compared against the seed spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import random
import sys
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIPLES = os.path.join(REPO, "data", "triples", "scifact_train_bm25_triples.jsonl.gz")
TASK = "beir:data/retrieval/scifact:test"


def read_triples() -> list[dict]:
  with gzip.open(TRIPLES, "rt") as f:
    return [json.loads(line) for line in f]


def our_batches(config) -> list[list[dict]]:
  """The triples of each global batch neuralir_jax trains on, in its order (data.make_train_iterator's
  random sampler: grain's seeded shuffle of the records, repeated), checked against the records it reads."""
  import grain
  from neuralir_jax import data
  triples = read_triples()
  records = data.load_records(config.data.train, config.data.view, seed=config.seed,
                              num_negatives=config.data.num_negatives)
  assert [r["anchor"] for r in records] == [t["query"] for t in triples], "records are not in file order"
  stream = grain.MapDataset.source(list(range(len(triples)))).shuffle(seed=config.seed).repeat(None)
  size = config.batch_size
  return [[triples[stream[i]] for i in range(s * size, (s + 1) * size)] for s in range(config.num_steps)]


def own_batches(seed: int, config) -> list[list[dict]]:
  """One epoch of the triples shuffled by Python's random with the seed (the last batch is short)."""
  triples = read_triples()
  random.Random(seed).shuffle(triples)
  return [triples[i:i + config.batch_size] for i in range(0, len(triples), config.batch_size)]


def train_reference(model_dir: str, out_dir: str, seed: int, dropout: float, config,
                    batches: list[list[dict]]) -> float:
  """sentence-transformers MNRL with the Trainer's AdamW and schedule over `batches`; returns seconds."""
  import torch
  from sentence_transformers import SentenceTransformer
  from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
  from transformers import TrainingArguments, get_linear_schedule_with_warmup
  torch.manual_seed(seed)
  model = SentenceTransformer(model_dir, device="cpu")
  serving_length = model.max_seq_length  # Training truncates to 128 tokens; the saved model keeps its own.
  model.max_seq_length = config.data.max_length
  for module in model.modules():
    if isinstance(module, torch.nn.Dropout):
      module.p = dropout
  model.train()
  loss_fn = MultipleNegativesRankingLoss(model, scale=1.0 / config.infonce.temperature)
  named = list(model.named_parameters())
  decay = [p for n, p in named if not ("bias" in n or "LayerNorm" in n)]
  no_decay = [p for n, p in named if "bias" in n or "LayerNorm" in n]
  defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.optimizer.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=config.optimizer.learning_rate,
                          betas=(defaults["adam_beta1"], defaults["adam_beta2"]), eps=defaults["adam_epsilon"])
  warmup = TrainingArguments.get_warmup_steps(
      types.SimpleNamespace(warmup_steps=config.optimizer.warmup_fraction), len(batches))
  sched = get_linear_schedule_with_warmup(opt, warmup, len(batches))
  tic = time.perf_counter()
  for rows in batches:
    features = [model.tokenize([r[k] for r in rows]) for k in ("query", "positive", "negative")]
    loss = loss_fn(features, None)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.clip_norm)
    opt.step()
    sched.step()
  seconds = time.perf_counter() - tic
  model.eval()
  model.max_seq_length = serving_length
  model.save(out_dir)
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dropout", type=float, default=0.1)
  parser.add_argument("--out", default="workdirs/scifact_parity")
  parser.add_argument("--sides", default="reference,ours")
  parser.add_argument("--mask", default="false", choices=("true", "false"),
                      help="ours: mask candidates equal to a judged positive (the reference does not)")
  parser.add_argument("--order", default="same", choices=("same", "own"),
                      help="same: the reference trains on our batches in our order (only the implementation "
                      "differs); own: it shuffles one epoch with Python's random")
  args = parser.parse_args()
  os.chdir(REPO)
  sys.path.insert(0, REPO)
  from neuralir_jax import config_lib, evaluate
  from neuralir_jax import encoder as encoder_lib
  from neuralir_jax import train
  # configs/scifact.py's optimizer and loss with sentence-transformers' MNRL inputs: the bundled BM25 triples
  # (all 919 train rows, one negative), lr 2e-5, 29 steps, one length, no masking of duplicated texts.
  config = config_lib.apply_overrides(config_lib.load_config("configs/scifact.py"), [
      f"seed={args.seed}", f"model.dropout_rate={args.dropout}", f"data.train=triples:{TRIPLES}",
      "data.num_negatives=1", "num_steps=29", "optimizer.learning_rate=2e-5", "data.max_length=128",
      "data.query_max_length=0", "data.document_max_length=0", "data.buckets=()", "data.sampler=random",
      f"infonce.mask_false_negatives={args.mask}"], "benchmark")
  minilm = config_lib.resolve_model_path("minilm")
  tag = f"seed{args.seed}_dropout{args.dropout:g}_mask{args.mask}_order{args.order}"
  results = {}
  for side in args.sides.split(","):
    out = os.path.join(args.out, f"{side}_{tag}")
    tic = time.perf_counter()
    if side == "reference":
      batches = our_batches(config) if args.order == "same" else own_batches(args.seed, config)
      train_seconds = train_reference(minilm, out, args.seed, args.dropout, config, batches)
      encoder = encoder_lib.load_encoder(out)
    else:
      train.train(config, out)
      train_seconds = time.perf_counter() - tic
      encoder = encoder_lib.load_encoder(out)
    scores = evaluate.evaluate_tasks(encoder, [TASK], batch_size=64)[TASK]
    results[side] = {"ndcg@10": scores["ndcg@10"], "recall@100": scores["recall@100"],
                     "train_seconds": round(train_seconds, 1)}
    print(side, tag, json.dumps(results[side]), flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, f"results_{tag}.json"), "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
