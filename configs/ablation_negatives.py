"""Large-batch negatives ablation: contrastive training on NLI triplets, one run per setting and seed.

  neuralir ablate --config configs/ablation_negatives.py --workdir W            # CPU-sized, 8 fake devices
  neuralir ablate --config configs/ablation_negatives.py:large --workdir W      # CPU, B up to 4096 (GradCache, tiled)
  neuralir ablate --config configs/ablation_negatives.py:full --workdir W       # MiniLM init, SNLI, B <= 4096
  neuralir ablate --config configs/ablation_negatives.py --workdir W --config.ablation.only=b32_global

Axes: global batch size; negatives "global" (candidates gathered from every device: B * (1 + k) - 1 per
query) vs "local" (own device only: B / devices * (1 + k) - 1); hard negatives (the contradiction
hypothesis, k = 1) on/off; temperature fixed (0.05) vs learnable; a negative queue (infonce.queue_size earlier
candidates join each step's); the loss, softmax (InfoNCE) vs sigmoid (SigLIP); and the InfoNCE
implementation, dense vs tiled (the same loss: a check that tiling changes nothing but memory). NLI has one
contradiction per premise, so k > 1 is an axis of retrieval data: configs/ablation_k.py runs k = 1, 2, 4, 8
on mined SciFact with the same machinery. Every setting runs with each of `ablation.seeds`; each run lives in
W/<setting>_seed<s>/ (a rerun skips finished runs and resumes unfinished ones), is evaluated on STS-B dev and
Cranfield (exact search), and the ablation writes results.csv (every run), summary.csv (mean, std, 95%
interval per setting), contrasts.csv (pairs that differ in one axis: the difference and whether it is beyond
the seed spread) and ablation.png (metric vs negatives per query, error bars).

Budget (`ablation.budget`): "examples" (the default) gives every run the same examples seen
(num_steps = examples_per_run // batch_size), so a bigger batch brings more negatives per query but not more
data; "steps" keeps optimizer steps equal instead, so a bigger batch also sees more examples (the plot's
title says which). The CPU grid trains a random-init 2-layer BERT from scratch, where equal examples hand
the bigger batches fewer updates; the clean contrasts of negatives alone are the pairs at equal batch size:
global vs local (b32 and b128) and queue vs none (b32), which share steps, examples and data. From scratch at
lr 1e-3 the encoder drifts fast, and the queue's entries, embedded by earlier steps' params, are then a
shortcut: training collapses (loss near log(1 + negatives)), MoCo's failure without a momentum encoder.
Fine-tuning a pretrained encoder drifts slowly and the queue trains normally (MiniLM, lr 2e-5, b32, 30
steps: STS-B dev 0.8705 with a queue of 192 vs 0.8701 without); the full variant runs it there.
The large variant takes the CPU grid's model to global batches of 1,024 to 4,096 on the 8 virtual devices:
GradCache (64 examples per device per chunk) keeps the encoder's memory flat and the tiled InfoNCE the
loss's, with 16,384 examples per run (4 steps at b4096; about 2 minutes of training each on 2 cores).
The full variant starts from a pretrained MiniLM and keeps one epoch of SNLI triplets per run.
"""

from . import common


def _setting(batch_size: int, negatives: str, hard_negatives: bool, learnable: bool, queue: int = 0,
             loss: str = "softmax", implementation: str = "dense", name: str = "") -> dict:
  name = name or (f"b{batch_size}_{negatives}_{'hn' if hard_negatives else 'nohn'}_"
                  f"{'learnt' if learnable else 'fixed'}")
  out = {"name": name, "batch_size": batch_size, "negatives": negatives,
         "infonce.hard_negatives": hard_negatives, "infonce.learnable_temperature": learnable}
  if queue:
    out["infonce.queue_size"] = queue
  if loss == "sigmoid":
    out.update({"objectives.infonce": 0.0, "objectives.sigmoid": 1.0})
  if implementation != "dense":
    out["infonce.implementation"] = implementation
  return out


def cpu_settings() -> list[dict]:
  """10 settings (x 3 seeds): the main series (global, hard negatives, fixed tau, softmax, dense) at 3
  batch sizes; its local twins at b32 and b128; a queue of 192 at b32 (3 steps of 64 candidates: b128's
  255 negatives per query from a b32 batch); and at b128 one change each: no hard negatives, learnable tau,
  the sigmoid loss, the tiled implementation."""
  out = [_setting(b, "global", True, False, name=f"b{b}_global") for b in (32, 64, 128)]
  out += [_setting(b, "local", True, False, name=f"b{b}_local") for b in (32, 128)]
  out += [_setting(32, "global", True, False, queue=192, name="b32_global_queue192")]
  out += [_setting(128, "global", False, False, name="b128_global_nohn"),
          _setting(128, "global", True, True, name="b128_global_learnt"),
          _setting(128, "global", True, False, loss="sigmoid", name="b128_global_sigmoid"),
          _setting(128, "global", True, False, implementation="tiled", name="b128_global_tiled")]
  return out


def large_settings() -> list[dict]:
  """4 settings: global negatives at b1024, b2048, b4096 (up to 8,191 negatives per query) and b4096 local."""
  out = [_setting(b, "global", True, False, name=f"b{b}_global") for b in (1024, 2048, 4096)]
  return out + [_setting(4096, "local", True, False, name="b4096_local")]


def full_settings() -> list[dict]:
  """Every combination of negatives, hard negatives and temperature at 5 batch sizes (40), plus the
  sigmoid loss and a queue of 4 batches' candidates at each batch size (global, hard negatives, fixed tau):
  50 settings."""
  out = [_setting(b, neg, hn, lt) for b in (256, 512, 1024, 2048, 4096) for neg in ("global", "local")
         for hn in (True, False) for lt in (False, True)]
  for b in (256, 512, 1024, 2048, 4096):
    out.append(_setting(b, "global", True, False, loss="sigmoid", name=f"b{b}_global_hn_fixed_sigmoid"))
    out.append(_setting(b, "global", True, False, queue=8 * b, name=f"b{b}_global_hn_fixed_queue{8 * b}"))
  return out


def get_config(arg=None):
  common.check_variant("ablation_negatives.py", arg, ("large", "full"))
  c = common.ablation_base_config()
  c.data.train = "nli:data/nli/train_sample.jsonl.gz"
  c.data.view = "triplets"  # anchor = premise, positive = entailment, negative = contradiction.
  c.objectives.nli_softmax = 0.0
  c.objectives.infonce = 1.0
  c.infonce.temperature = 0.05  # Fixed tau, or the initial one when learnable.
  c.negatives = "global"
  c.eval.batch_size = 256

  c.model.init = "random"
  c.model.bert.hidden_size = 128
  c.model.bert.num_hidden_layers = 2
  c.model.bert.num_attention_heads = 2
  c.model.bert.intermediate_size = 512
  c.model.bert.max_position_embeddings = 128
  c.model.max_seq_length = 128  # Eval truncation (Cranfield abstracts); training uses data.max_length.
  c.model.dropout_rate = 0.1
  c.data.max_length = 32  # NLI sentences: 95% fit in 32 tokens.
  c.batch_size = 64  # Overridden per setting.
  c.num_steps = 60  # Only with ablation.budget = "steps".
  c.log_every_steps = 20
  c.optimizer.learning_rate = 1e-3  # From scratch: a high rate, 10% warmup, linear decay.
  c.optimizer.warmup_fraction = 0.1
  c.checkpoint.every_steps = 1000  # Only the final step is saved (the last step always is).
  c.checkpoint.keep = 1

  c.infonce.block_size = 128  # Tiled runs walk the candidates in blocks of 128 (b128: 2 blocks).

  ablation = c.ablation
  ablation.settings = cpu_settings()
  ablation.eval_tasks = ("sts:data/sts/stsb_dev.tsv.gz", "beir:data/retrieval/cranfield")
  ablation.budget = "examples"  # Equal examples seen: more negatives, not more data.
  ablation.examples_per_run = 2560  # 80 steps at b32, 20 at b128: 30 runs in under 30 minutes on 2 cores.
  ablation.seeds = (0, 1, 2)

  if arg == "large":
    c.grad_cache.chunk_size = 64  # Examples per device per chunk: b4096 = 512 per device, 8 chunks.
    c.infonce.implementation = "tiled"
    c.infonce.block_size = 1024
    c.log_every_steps = 2
    ablation.settings = large_settings()
    ablation.examples_per_run = 16384

  if arg == "full":
    c.model.init = "minilm"  # Packaged all-MiniLM-L6-v2 (or an HF dir such as bert-base-uncased).
    c.model.max_seq_length = 256
    c.model.dropout_rate = 0.1
    c.data.train = "tfds:snli:train"
    c.data.max_length = 32
    c.optimizer.learning_rate = 5e-5
    c.log_every_steps = 50
    c.checkpoint.every_steps = 200
    c.checkpoint.keep = 1
    c.grad_cache.chunk_size = 0  # Set e.g. 256 when 4096 x 3 sequences do not fit in accelerator memory.
    ablation.settings = full_settings()
    ablation.eval_tasks = ("sts:data/sts/stsb_dev.tsv.gz", "beir:data/retrieval/scifact")
    ablation.budget = "examples"
    ablation.examples_per_run = 262144  # ~1 epoch of SNLI triplets (64 steps at B = 4096).
  return c
