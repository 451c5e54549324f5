"""Supervised SimCSE (Gao et al. 2021): InfoNCE on NLI triplets (premise, entailment as positive,
contradiction as hard negative), negatives shared across all devices, global batch 512.

  neuralir train --config configs/infonce_nli.py --workdir W
  neuralir train --config configs/infonce_nli.py:runlocal --workdir W   # CPU-sized

With global negatives each query scores against 2 x 512 - 1 = 1,023 candidates.
"""

from . import common


def get_config(arg=None):
  common.check_variant("infonce_nli.py", arg, ("runlocal",))
  c = common.base_config()
  c.model.init = "bert-base-uncased"  # An HF directory (SimCSE starts from bert-base-uncased).
  c.model.pooling = "cls"
  c.data.train = "tfds:snli:train"
  c.data.view = "triplets"
  c.data.max_length = 32
  c.batch_size = 512
  c.num_steps = 1000
  c.objectives.nli_softmax = 0.0
  c.objectives.infonce = 1.0
  c.infonce.temperature = 0.05
  c.infonce.hard_negatives = True
  c.negatives = "global"
  c.optimizer.learning_rate = 5e-5
  c.optimizer.warmup_fraction = 0.0
  c.grad_cache.chunk_size = 0  # Set e.g. 128 when 512 x 3 sequences do not fit in memory.
  c.checkpoint.every_steps = 250
  c.eval.every_steps = 250
  c.eval.tasks = ("sts:data/sts/stsb_dev.tsv.gz",)
  if arg == "runlocal":
    c.model.init = "minilm"
    c.model.pooling = "mean"
    c.data.train = "nli:data/nli/train_sample.jsonl.gz"
    c.batch_size = 64
    c.num_steps = 40
    c.log_every_steps = 10
    c.checkpoint.every_steps = 20
    c.eval.every_steps = 20
  return c
