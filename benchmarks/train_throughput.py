"""Train-step examples/s of neuralir_jax vs sentence-transformers' MultipleNegativesRankingLoss, same CPU.

Both sides train the packaged all-MiniLM-L6-v2 (dropout 0.1 on) on the same (anchor, positive, hard negative)
triplets of `nli:data/nli/train_sample.jsonl.gz`, in the same order (the grain-shuffled stream of
`data.make_train_iterator`), at their real lengths (truncated at `--max-length`):

- neuralir_jax: the training loop's own work per step: `next()` on the real input iterator (grain threads
  tokenise and, with `--input packed`, pack each batch), the real train step (`steps.make_train_step`,
  configs/common.py with InfoNCE only, global and hard negatives, masks off as in MNRL) and the throughput
  meter, on 1 JAX CPU device. `--input`: packed (data.packing, the default config), buckets (padded to a
  length bucket per batch) or padded (to --max-length).
- sentence-transformers: `model.tokenize` of each column of the batch (padded to the column's longest text,
  as its data collator does), MNRL forward + backward, `clip_grad_norm_`, torch AdamW step and scheduler step:
  the work of the ST/HF trainer per step without its dataloader, callback and logging overhead (which only
  favours ST). `--dtype bfloat16`: ST under `torch.autocast("cpu", bfloat16)`, ours with model.dtype bfloat16.

Same objective (InfoNCE, temperature 0.05 = MNRL scale 20; a first check prints both losses on batch 0
without dropout), optimizer (clip 1, AdamW lr 2e-5, weight decay 0.01 off LayerNorm and biases, linear
warmup/decay), threads (`torch.set_num_threads`; XLA's CPU client takes every core of the process's
affinity). Start-up and compilation are excluded: every batch shape of the timed steps is compiled in the
warm-up. Then `--rounds` rounds, each timing `--steps` steps of one side and then of the other (alternating
which goes first); the median and best round of each are reported with the ratio. MFU counts the model FLOPs
of the real texts (each at its own length: padding is waste, not work; `flops.encoder_flops`) over
config.cpu_peak_flops; the padding fraction is that of the token positions each side computed.

  .venv/bin/python benchmarks/train_throughput.py                        # packed, batch 32, 64 tokens
  .venv/bin/python benchmarks/train_throughput.py --input buckets        # the padded path, same data
  .venv/bin/python benchmarks/train_throughput.py --dtype bfloat16
  # On a GPU machine (benchmarks/gpu_check.sh): JAX on the GPU vs sentence-transformers on CUDA, MFU against
  # the chip's bf16 peak (flops.peak_flops_per_device):
  python3 benchmarks/train_throughput.py --device gpu --model DIR --batch-size 256 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("anchor", "positive", "negative")


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=32, help="Triplets per step (both sides).")
  parser.add_argument("--max-length", type=int, default=64, help="Tokens per text at most (truncation).")
  parser.add_argument("--input", default="packed", choices=("packed", "buckets", "padded"),
                      help="neuralir_jax batches: packed rows, length buckets (16, 32, 48, 64) or max length.")
  parser.add_argument("--steps", type=int, default=5, help="Timed steps per side per round.")
  parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds (each side --steps steps).")
  parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per side first (compilation).")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="Both sides.")
  parser.add_argument("--data", default="nli:data/nli/train_sample.jsonl.gz", help="Training source.")
  parser.add_argument("--model", default="minilm", help="'minilm' or an HF/ST model directory.")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="Compute dtype of both sides (ST: torch.autocast).")
  parser.add_argument("--xla-flags", default="", help="Extra XLA_FLAGS for the JAX side.")
  parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                      help="Where both sides train: JAX_PLATFORMS=cpu and torch on cpu, or JAX on CUDA and torch "
                           "on cuda (the host side, tokenising and packing, stays on the CPU for both).")
  parser.add_argument("--no-torch", action="store_true", help="Time only neuralir_jax (profiling).")
  return parser.parse_args()


def _setup_threads(threads: int, xla_flags: str, device: str) -> None:
  """Must run before jax/torch are imported: pins XLA's and PyTorch's thread pools to `threads` cores."""
  cores = sorted(os.sched_getaffinity(0))
  if threads < len(cores):  # XLA sizes its pool from the affinity mask; shrink the mask for both sides.
    os.sched_setaffinity(0, cores[:threads])
  os.environ["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), xla_flags) if f)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
  os.environ.setdefault("JAX_PLATFORMS", "cpu" if device == "cpu" else "cuda")
  if device == "gpu":  # JAX and PyTorch share the GPU: JAX takes memory as it needs it, not 75% up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


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
  c.infonce.mask_false_negatives = False  # MNRL masks nothing.
  c.negatives = "global"
  c.data.packing = args.input == "packed"
  c.data.buckets = (16, 32, 48, 64) if args.input == "buckets" else ()
  return c


def make_iterator(config, tokenizer, records, packed: bool | None = None):
  """The training loop's iterator over `records` (train.make_iterator's settings for this config)."""
  from neuralir_jax import data
  spec = data.Packing(1, config.data.pack_max_slots, config.data.pack_row_multiple) if (
      config.data.packing if packed is None else packed) else None
  return data.make_train_iterator(records, tokenizer, columns=COLUMNS, global_batch_size=config.batch_size,
                                  seed=config.seed, max_length=config.data.max_length,
                                  buckets=tuple(config.data.buckets) or None, packing_spec=spec)


def text_batches(config, records, count: int) -> list[dict[str, list[str]]]:
  """The texts of the first `count` global batches, in make_train_iterator's order (its grain shuffle)."""
  import grain
  stream = grain.MapDataset.source(records).shuffle(seed=config.seed).repeat(None)
  size = config.batch_size
  return [{c: [stream[i][c] for i in range(k * size, (k + 1) * size)] for c in COLUMNS} for k in range(count)]


class JaxSide:
  """neuralir_jax's training loop work on one CPU device: iterator, train step, throughput meter."""

  def __init__(self, config, pretrained, tokenizer, records):
    import jax
    from neuralir_jax import bi_encoder, metric_writer, optimizer, sharding, steps
    self.jax = jax
    self.mesh = sharding.make_mesh(1)
    tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
    self.family = bi_encoder.BiEncoder(config)
    self.params0 = pretrained
    self.state, shardings = steps.create_train_state(self.family, jax.random.key(config.seed), self.mesh, tx,
                                                     pretrained)
    self.step_fn = steps.make_train_step(self.family, self.mesh, tx, shardings, schedule)
    self.iterator = make_iterator(config, tokenizer, records)
    self.fresh_iterator = lambda: make_iterator(config, tokenizer, records)  # noqa: E731
    self.meter = metric_writer.Throughput(self.family, 1, config.cpu_peak_flops)
    self.metrics = None

  def warm_up(self, num_batches: int) -> int:
    """Compiles the step for every batch shape among the first num_batches (one step each, on a copy of
    iterator); returns the number of shapes."""
    shapes = {}
    for batch in itertools.islice(self.fresh_iterator(), num_batches):
      shapes.setdefault(tuple(sorted((k, v.shape) for k, v in batch.items())), batch)
    print(f"warm-up: compiling the train step for {len(shapes)} batch shapes", flush=True)
    tic = time.perf_counter()
    for i, batch in enumerate(shapes.values()):
      self.state, self.metrics = self.step_fn(self.state, batch)
      self.sync()
      print(f"warm-up: shape {i + 1} of {len(shapes)} compiled and run at {time.perf_counter() - tic:.1f}s",
            flush=True)
    return len(shapes)

  def step(self, _) -> None:
    batch = next(self.iterator)
    self.state, self.metrics = self.step_fn(self.state, batch)
    self.meter.add(batch)

  def sync(self) -> float:
    return float(self.jax.device_get(self.metrics["loss"]))

  def eval_loss(self, batch: dict, temperature: float) -> float:
    """InfoNCE of the pretrained params on a padded batch without dropout (checked against MNRL)."""
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

    return float(loss(self.params0, {k: jnp.asarray(v) for k, v in batch.items() if k.endswith(("_ids", "_mask"))}))


class TorchSide:
  """sentence-transformers MNRL training on the same model: forward, backward, clip, AdamW, schedule."""

  def __init__(self, model_dir: str, config, threads: int, batches: list[dict], dtype: str, device: str):
    import contextlib
    import torch
    from sentence_transformers import SentenceTransformer
    try:
      from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6.2 (the GPU machine's 6.0).
      from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup
    from neuralir_jax import optimizer as opt_lib
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    self.torch = torch
    device = "cuda" if device == "gpu" else "cpu"
    if device == "cuda":  # fp32 matmuls in TF32 on both sides: JAX's default precision on GPUs, not torch's.
      torch.set_float32_matmul_precision("high")
    self.model = SentenceTransformer(model_dir, device=device)
    self.model.max_seq_length = config.data.max_length
    self.model.train()
    self.batches, self.next = batches, 0
    self.real = self.positions = 0
    self.autocast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if dtype == "bfloat16" else (
        contextlib.nullcontext)
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

  def features(self, texts: dict[str, list[str]]) -> list[dict]:
    """Each column tokenised by the model, padded to its longest text (the ST collator's work)."""
    out = [self.model.tokenize(texts[c]) for c in COLUMNS]
    for f in out:
      self.real += int(f["attention_mask"].sum())
      self.positions += f["attention_mask"].numel()
    device = self.model.device  # The ST trainer moves the tensors to the model's device.
    return [{k: v.to(device) if isinstance(v, self.torch.Tensor) else v for k, v in f.items()} for f in out]

  def step(self, _) -> None:
    texts = self.batches[self.next % len(self.batches)]
    self.next += 1
    with self.autocast():
      loss = self.loss(self.features(texts), None)
    loss.backward()
    self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
    self.optimizer.step()
    self.scheduler.step()
    self.optimizer.zero_grad(set_to_none=True)
    self.last = loss.detach()

  def sync(self) -> float:
    return float(self.last)

  def eval_loss(self, texts: dict[str, list[str]]) -> float:
    self.model.eval()
    with self.torch.no_grad():
      value = float(self.loss(self.features(texts), None))
    self.model.train()
    self.real = self.positions = 0
    return value


def _run(side, steps: int) -> tuple[float, float, float]:
  """(wall seconds, process CPU seconds, last loss) of the side's next `steps` steps."""
  cpu, wall = time.process_time(), time.perf_counter()
  for _ in range(steps):
    side.step(None)
  loss = side.sync()
  return time.perf_counter() - wall, time.process_time() - cpu, loss


def main() -> None:
  args = _parse()
  _setup_threads(args.threads, args.xla_flags, args.device)
  import jax
  sys.path.insert(0, _REPO)
  from neuralir_jax import bi_encoder, config_lib, data, flops

  timed_steps = args.rounds * args.steps
  config = make_config(args, num_steps=max(args.warmup + timed_steps, 10))
  # The returned config has model.bert (and pooling, max_seq_length) from the model directory.
  config, tokenizer, pretrained = bi_encoder.resolve_model(config)
  records = data.load_records(config.data.train, config.data.view, seed=config.seed)
  texts = text_batches(config, records, timed_steps)
  first = next(make_iterator(config, tokenizer, records, packed=False))  # Padded batch 0 (the loss check).
  np_hash = np.array([data.text_hash(t) for t in texts[0]["anchor"]], np.int32)
  assert (first["anchor_hash"] == np_hash).all(), "the two sides' batches differ"

  tic = time.perf_counter()
  ours = JaxSide(config, pretrained, tokenizer, records)
  sides = {"neuralir_jax": ours}
  if not args.no_torch:
    sides["sentence-transformers"] = TorchSide(config_lib.resolve_model_path(args.model), config, args.threads,
                                               texts, args.dtype, args.device)
  setup_s = time.perf_counter() - tic

  print(f"model {args.model}: {config.model.bert.num_hidden_layers} layers x {config.model.bert.hidden_size}, "
        f"batch {args.batch_size} NLI triplets at real lengths (max {args.max_length}), ours {args.input}, "
        f"threads {args.threads}, jax {jax.__version__} ({args.dtype}, {jax.devices()[0].device_kind}), "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS') or '(none)'}")
  losses = {"neuralir_jax": ours.eval_loss(first, config.infonce.temperature)}
  if "sentence-transformers" in sides:
    losses["sentence-transformers"] = sides["sentence-transformers"].eval_loss(texts[0])
  print("InfoNCE on batch 0, no dropout: " + ", ".join(f"{k} {v:.6f}" for k, v in losses.items()))

  tic = time.perf_counter()
  shapes = ours.warm_up(timed_steps)
  warm = {"neuralir_jax": time.perf_counter() - tic}
  for name, side in sides.items():
    if name != "neuralir_jax":
      warm[name] = _run(side, args.warmup)[0]
      side.next = side.real = side.positions = 0  # Timed rounds start at batch 0, as ours.
  print(f"setup {setup_s:.1f}s; warm-up (compilation of {shapes} batch shapes included): "
        + ", ".join(f"{k} {v:.1f}s" for k, v in warm.items()))

  times = {name: ([], []) for name in sides}
  order = list(sides)
  for r in range(args.rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      wall, cpu, loss = _run(sides[name], args.steps)
      times[name][0].append(wall)
      times[name][1].append(cpu)
      print(f"  round {r}: {name:22s} {args.steps * args.batch_size / wall:7.1f} examples/s "
            f"({wall / args.steps * 1e3:7.1f} ms/step, cpu {cpu / wall:.2f} cores, loss {loss:.4f})")

  # Model FLOPs of the timed steps' real texts (the same texts on both sides), per step on average.
  lengths = np.concatenate([tokenizer.token_lengths([t for batch in texts for t in batch[c]]) for c in COLUMNS])
  lengths = np.minimum(lengths, args.max_length)
  bert = ours.family.encoder_config.bert
  step_flops = (flops.encoder_flops(bert, lengths) / timed_steps
                + flops.train_flops_per_step(bert, [], args.batch_size, 2 * args.batch_size))
  if args.device == "gpu":
    peak = flops.peak_flops_per_device(jax.devices()[0])
  else:
    peak = config.cpu_peak_flops * min(args.threads, os.cpu_count()) / os.cpu_count()  # The host's: all cores.
  padding = {"neuralir_jax": 1 - ours.meter.tokens / max(ours.meter.positions, 1)}
  if "sentence-transformers" in sides:
    st = sides["sentence-transformers"]
    padding["sentence-transformers"] = 1 - st.real / max(st.positions, 1)
  print(f"model FLOPs per step (real tokens) {step_flops / 1e9:.1f} GFLOP; "
        f"peak {(peak or 0) / 1e9:,.0f} GFLOP/s "
        f"({'the chip, bf16' if args.device == 'gpu' else 'config.cpu_peak_flops'}); "
        "padding fraction of the positions computed: "
        + ", ".join(f"{k} {v:.3f}" for k, v in padding.items()))
  for label, pick in (("median", statistics.median), ("best", min)):
    rates = {}
    for name, (walls, cpus) in times.items():
      step_s = pick(walls) / args.steps
      rates[name] = args.batch_size / step_s
      print(f"{label} of {args.rounds}: {name:22s} {rates[name]:7.1f} examples/s, {step_s * 1e3:7.1f} ms/step, "
            f"MFU {step_flops / step_s / (peak or float('nan')) * 100:5.1f}%, cpu {sum(cpus) / sum(walls):.2f} cores")
    if len(rates) == 2:
      print(f"{label} ratio neuralir_jax / sentence-transformers: "
            f"{rates['neuralir_jax'] / rates['sentence-transformers']:.2f}x")


if __name__ == "__main__":
  main()
