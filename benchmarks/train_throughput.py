"""Train-step examples/s of neuralir_jax vs sentence-transformers' MultipleNegativesRankingLoss, same CPU.

Both sides train the packaged all-MiniLM-L6-v2 (fp32, dropout 0.1 on) on the same batches: `--batch-size`
(anchor, positive, hard negative) triplets of `nli:data/nli/train_sample.jsonl.gz` (view "triplets"),
tokenised once by neuralir_jax and padded to a fixed `--max-length` for both. The objective is the same:
InfoNCE over the batch's positives and hard negatives, temperature 0.05 = MNRL's scale 20. The optimizer is
the same: gradient clipping at norm 1, AdamW (lr 2e-5, weight decay 0.01 except LayerNorm params and
biases) with a linear warmup/decay schedule.

- neuralir_jax: the real train step (`steps.make_train_step`, configs/common.py with objectives infonce
  only, negatives global, hard negatives on) on 1 JAX CPU device, fed numpy batches as `train.py` does.
- sentence-transformers: a plain loop of `MultipleNegativesRankingLoss(SentenceTransformer(minilm))`
  forward + backward, `clip_grad_norm_`, torch AdamW step and scheduler step: the work the ST/HF trainer does
  per step, without its data-collator, tokenisation, callback and logging overhead (which only favours ST).

Both use the same threads (`torch.set_num_threads`; XLA's CPU client takes every core of the process's
affinity); each side's CPU time / wall time over its timed steps is printed to show that both use them.
Warm-up (compilation, first calls) is excluded. Then `--rounds` rounds, each timing `--steps` steps of one
side and then of the other (alternating which goes first), so both see the same background load; the
median and best round of each are reported with the ratio, and our MFU (flops.train_flops_per_step / time /
config.cpu_peak_flops). A first check prints both losses on the first batch without dropout (same objective).

  .venv/bin/python benchmarks/train_throughput.py                    # batch 32, length 64, 5 steps x 3
  .venv/bin/python benchmarks/train_throughput.py --batch-size 64 --steps 10 --rounds 5
  .venv/bin/python benchmarks/train_throughput.py --xla-flags=--xla_cpu_use_onednn=true   # try a flag
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("anchor", "positive", "negative")


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=32, help="Triplets per step (both sides).")
  parser.add_argument("--max-length", type=int, default=64, help="Tokens per text; every text padded to it.")
  parser.add_argument("--steps", type=int, default=5, help="Timed steps per side per round.")
  parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds (each side --steps steps).")
  parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per side first (compilation).")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="Both sides.")
  parser.add_argument("--data", default="nli:data/nli/train_sample.jsonl.gz", help="Training source.")
  parser.add_argument("--model", default="minilm", help="'minilm' or an HF/ST model directory.")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="JAX compute.")
  parser.add_argument("--xla-flags", default="", help="Extra XLA_FLAGS for the JAX side.")
  parser.add_argument("--no-torch", action="store_true", help="Time only neuralir_jax (profiling).")
  return parser.parse_args()


def _setup_threads(threads: int, xla_flags: str) -> None:
  """Must run before jax/torch are imported: pins XLA's and PyTorch's thread pools to `threads` cores."""
  cores = sorted(os.sched_getaffinity(0))
  if threads < len(cores):  # XLA sizes its pool from the affinity mask; shrink the mask for both sides.
    os.sched_setaffinity(0, cores[:threads])
  os.environ["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), xla_flags) if f)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def make_config(args: argparse.Namespace, num_steps: int):
  """configs/common.py with InfoNCE (hard negatives, global negatives) as the only objective, 1 device."""
  if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
  from configs import common
  c = common.base_config()
  c.num_steps = num_steps
  c.batch_size = args.batch_size
  c.model.init = args.model
  c.model.dtype = args.dtype
  c.model.dropout_rate = 0.1  # MiniLM's own hidden/attention dropout, which ST trains with.
  c.data.train = args.data
  c.data.view = "triplets"
  c.data.max_length = args.max_length
  c.objectives.nli_softmax = 0.0
  c.objectives.infonce = 1.0
  c.infonce.temperature = 0.05  # = MNRL scale 20.
  c.infonce.hard_negatives = True
  c.negatives = "global"
  return c


def load_batches(config, tokenizer, count: int) -> list[dict]:
  """`count` distinct numpy batches, every text padded to max_length; no hashes (MNRL masks nothing)."""
  from neuralir_jax import data
  records = data.load_records(config.data.train, config.data.view, seed=config.seed)
  iterator = data.make_train_iterator(records, tokenizer, columns=COLUMNS, global_batch_size=config.batch_size,
                                      seed=config.seed, max_length=config.data.max_length, buckets=None)
  batches = []
  for _ in range(count):
    batch = next(iterator)
    batches.append({k: v for k, v in batch.items() if k.endswith("_ids") or k.endswith("_mask")})
  return batches


class JaxSide:
  """neuralir_jax's train step on one CPU device."""

  def __init__(self, config, pretrained):
    import jax
    from neuralir_jax import bi_encoder, optimizer, sharding, steps
    self.jax = jax
    self.mesh = sharding.make_mesh(1)
    tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
    self.family = bi_encoder.BiEncoder(config)
    self.params0 = pretrained
    self.state, shardings = steps.create_train_state(self.family, jax.random.key(config.seed), self.mesh, tx,
                                                     pretrained)
    self.step_fn = steps.make_train_step(self.family, self.mesh, tx, shardings, schedule)
    self.metrics = None

  def step(self, batch: dict) -> None:
    self.state, self.metrics = self.step_fn(self.state, batch)

  def sync(self) -> float:
    return float(self.jax.device_get(self.metrics["loss"]))

  def eval_loss(self, batch: dict, temperature: float) -> float:
    """InfoNCE of the pretrained params on `batch` without dropout (the objective, checked against MNRL)."""
    import jax.numpy as jnp
    from neuralir_jax import losses
    module = self.family.module

    @self.jax.jit
    def loss(params, batch):
      emb = {c: module.apply({"params": params}, batch[f"{c}_ids"], batch[f"{c}_mask"], deterministic=True)
             for c in COLUMNS}
      value, _ = losses.contrastive_loss(emb["anchor"], emb["positive"], emb["negative"][:, None],
                                         temperature=temperature)
      return value

    return float(loss(self.params0, {k: jnp.asarray(v) for k, v in batch.items()}))


class TorchSide:
  """sentence-transformers MNRL training on the same model: forward, backward, clip, AdamW, schedule."""

  def __init__(self, model_dir: str, config, threads: int):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup
    from neuralir_jax import optimizer as opt_lib
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    self.torch = torch
    self.model = SentenceTransformer(model_dir, device="cpu")
    self.model.train()
    self.loss = MultipleNegativesRankingLoss(self.model, scale=1.0 / config.infonce.temperature)
    decay, no_decay = [], []
    for name, p in self.model.named_parameters():  # HF Trainer's rule: no decay on biases and LayerNorm.
      (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    opt = config.optimizer
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opt.learning_rate, betas=(opt.b1, opt.b2), eps=opt.eps)
    self.scheduler = get_linear_schedule_with_warmup(
        self.optimizer, opt_lib.warmup_steps_of(opt, config.num_steps), config.num_steps)
    self.clip_norm = opt.clip_norm
    self.last = None

  def features(self, batch: dict) -> list[dict]:
    torch = self.torch
    out = []
    for c in COLUMNS:
      ids = torch.from_numpy(batch[f"{c}_ids"]).long()
      out.append({"input_ids": ids, "attention_mask": torch.from_numpy(batch[f"{c}_mask"]).long(),
                  "token_type_ids": torch.zeros_like(ids)})
    return out

  def step(self, batch: dict) -> None:
    loss = self.loss(self.features(batch), None)
    loss.backward()
    self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
    self.optimizer.step()
    self.scheduler.step()
    self.optimizer.zero_grad(set_to_none=True)
    self.last = loss.detach()

  def sync(self) -> float:
    return float(self.last)

  def eval_loss(self, batch: dict) -> float:
    self.model.eval()
    with self.torch.no_grad():
      value = float(self.loss(self.features(batch), None))
    self.model.train()
    return value


def _run(side, batches: list[dict], start: int, steps: int) -> tuple[float, float, float]:
  """(wall seconds, process CPU seconds, last loss) of `steps` steps from batch index `start`."""
  cpu, wall = time.process_time(), time.perf_counter()
  for i in range(steps):
    side.step(batches[(start + i) % len(batches)])
  loss = side.sync()
  return time.perf_counter() - wall, time.process_time() - cpu, loss


def main() -> None:
  args = _parse()
  _setup_threads(args.threads, args.xla_flags)
  import jax
  sys.path.insert(0, _REPO)
  from neuralir_jax import bi_encoder, config_lib, flops
  from neuralir_jax.model import BertConfig

  total_steps = args.warmup + args.rounds * args.steps
  config = make_config(args, num_steps=max(total_steps, 10))
  # The returned config has model.bert (and pooling, max_seq_length) from the model directory.
  config, tokenizer, pretrained = bi_encoder.resolve_model(config)
  batches = load_batches(config, tokenizer, count=min(total_steps, 32))
  first = batches[0]

  tic = time.perf_counter()
  ours = JaxSide(config, pretrained)
  sides = {"neuralir_jax": ours}
  if not args.no_torch:
    sides["sentence-transformers"] = TorchSide(config_lib.resolve_model_path(args.model), config, args.threads)
  setup_s = time.perf_counter() - tic

  print(f"model {args.model}: {config.model.bert.num_hidden_layers} layers x {config.model.bert.hidden_size}, "
        f"batch {args.batch_size} triplets x length {args.max_length} (padded), threads {args.threads}, "
        f"jax {jax.__version__} ({args.dtype}, {jax.devices()[0].device_kind}), XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS') or '(none)'}")
  losses = {"neuralir_jax": ours.eval_loss(first, config.infonce.temperature)}
  if "sentence-transformers" in sides:
    losses["sentence-transformers"] = sides["sentence-transformers"].eval_loss(first)
  print("InfoNCE on batch 0, no dropout: " + ", ".join(f"{k} {v:.6f}" for k, v in losses.items()))

  warm = {}
  for name, side in sides.items():
    warm[name] = _run(side, batches, 0, args.warmup)[0]
  print(f"setup {setup_s:.1f}s; warm-up ({args.warmup} steps, compilation included): "
        + ", ".join(f"{k} {v:.1f}s" for k, v in warm.items()))

  times = {name: ([], []) for name in sides}
  order = list(sides)
  for r in range(args.rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      wall, cpu, loss = _run(sides[name], batches, args.warmup + r * args.steps, args.steps)
      times[name][0].append(wall)
      times[name][1].append(cpu)
      print(f"  round {r}: {name:22s} {args.steps * args.batch_size / wall:7.1f} examples/s "
            f"({wall / args.steps * 1e3:7.1f} ms/step, cpu {cpu / wall:.2f} cores, loss {loss:.4f})")

  bert = BertConfig(**config.model.bert.to_dict())
  candidates = 2 * args.batch_size  # Every positive and every hard negative of the batch.
  step_flops = flops.train_flops_per_step(bert, [args.max_length] * len(COLUMNS), args.batch_size, candidates)
  peak = config.cpu_peak_flops * min(args.threads, os.cpu_count()) / os.cpu_count()  # The host's peak: all cores.
  print(f"model FLOPs per step {step_flops / 1e9:.1f} GFLOP; CPU peak {peak / 1e9:.0f} GFLOP/s "
        "(config.cpu_peak_flops)")
  for label, pick in (("median", statistics.median), ("best", min)):
    rates = {}
    for name, (walls, cpus) in times.items():
      step_s = pick(walls) / args.steps
      rates[name] = args.batch_size / step_s
      print(f"{label} of {args.rounds}: {name:22s} {rates[name]:7.1f} examples/s, {step_s * 1e3:7.1f} ms/step, "
            f"MFU {step_flops / step_s / peak * 100:5.1f}%, cpu {sum(cpus) / sum(walls):.2f} cores")
    if len(rates) == 2:
      print(f"{label} ratio neuralir_jax / sentence-transformers: "
            f"{rates['neuralir_jax'] / rates['sentence-transformers']:.2f}x")


if __name__ == "__main__":
  main()
