"""Large-batch negatives ablation: InfoNCE on NLI triplets, one run per setting of four axes.

  neuralir ablate --config configs/ablation_negatives.py --workdir W            # CPU-sized, 8 fake devices
  neuralir ablate --config configs/ablation_negatives.py:full --workdir W       # MiniLM init, SNLI, B <= 4096
  neuralir ablate --config configs/ablation_negatives.py --workdir W --config.ablation.only=b16_global_hn

Axes: global batch size; negatives "global" (candidates gathered from every device: B * (1 + hn) - 1 per
query) vs "local" (own device only: B / devices * (1 + hn) - 1); hard negatives (the contradiction
hypothesis) on/off; temperature fixed (0.05) vs learnable. Each run lives in W/<setting name>/ (a rerun
skips finished runs and resumes unfinished ones), is evaluated on STS-B dev and Cranfield (exact search),
and the ablation writes W/results.csv and W/ablation.png (metric vs negatives per query).

Budget (`ablation.budget`): "steps" keeps optimizer steps equal (num_steps as set here) so a bigger batch
also sees more examples; "examples" keeps examples seen equal (num_steps = examples_per_run // batch_size).
The CPU default uses "steps": it trains a random-init 2-layer BERT from scratch, where progress is bound by
the number of updates, so equal examples would hand the largest batch 8x fewer updates and measure that
instead of the negatives. The clean contrast of negatives alone is global vs local at the same batch size
(same steps, same examples, same gradients' data): it is in the grid at every batch size that has a
local run. The full variant starts from a pretrained MiniLM, where one epoch of SNLI is the usual unit,
so it keeps examples equal ("examples", 1 epoch of the 550k pairs' ~275k triplets) as SimCSE/DPR do.
"""

from . import common


def _setting(batch_size: int, negatives: str, hard_negatives: bool, learnable: bool) -> dict:
  name = f"b{batch_size}_{negatives}_{'hn' if hard_negatives else 'nohn'}_{'learnt' if learnable else 'fixed'}"
  return {"name": name, "batch_size": batch_size, "negatives": negatives,
          "infonce.hard_negatives": hard_negatives, "infonce.learnable_temperature": learnable}


def cpu_settings() -> list[dict]:
  """10 runs: the main series at 4 batch sizes, its local-negatives twins, and the other variants at the
  ends of the batch range (the plot's series)."""
  out = [_setting(b, "global", True, False) for b in (16, 32, 64, 128)]
  out += [_setting(b, "local", True, False) for b in (32, 128)]
  out += [_setting(b, "global", False, False) for b in (16, 128)]
  out += [_setting(b, "global", True, True) for b in (16, 128)]
  return out


def full_settings() -> list[dict]:
  """Every combination at 5 batch sizes: 5 x 2 x 2 x 2 = 40 runs."""
  return [_setting(b, neg, hn, lt) for b in (256, 512, 1024, 2048, 4096) for neg in ("global", "local")
          for hn in (True, False) for lt in (False, True)]


def get_config(arg=None):
  common.check_variant("ablation_negatives.py", arg, ("full",))
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
  c.num_steps = 60  # Optimizer steps of every run (ablation.budget = "steps").
  c.log_every_steps = 20
  c.optimizer.learning_rate = 1e-3  # From scratch: a high rate, 10% warmup, linear decay.
  c.optimizer.warmup_fraction = 0.1
  c.checkpoint.every_steps = 1000  # Only the final step is saved (the last step always is).
  c.checkpoint.keep = 1

  ablation = c.ablation
  ablation.settings = cpu_settings()
  ablation.eval_tasks = ("sts:data/sts/stsb_dev.tsv.gz", "beir:data/retrieval/cranfield")
  ablation.budget = "steps"  # Equal optimizer steps: from scratch, progress is bound by the updates.

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
