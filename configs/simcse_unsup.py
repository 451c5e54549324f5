"""Unsupervised SimCSE (Gao et al. 2021): each sentence is its own positive, seen twice with different
dropout masks; the other sentences of the global batch (from every device) are the negatives.

  neuralir train --config configs/simcse_unsup.py --workdir W
  neuralir train --config configs/simcse_unsup.py:runlocal --workdir W   # bundled sentences, CPU-sized

The "duplicates" view yields anchor == positive; both rows go through the encoder in one call, so their
dropout masks differ. Dropout must be on (model.dropout_rate > 0) or the task is trivial.
"""

from . import common


def get_config(arg=None):
  common.check_variant("simcse_unsup.py", arg, ("runlocal",))
  c = common.base_config()
  c.model.init = "bert-base-uncased"  # An HF directory (SimCSE starts from bert-base-uncased).
  c.model.pooling = "cls"
  c.data.train = "nli:data/nli/train_sample.jsonl.gz"  # Its premises and hypotheses, each once.
  c.data.view = "duplicates"
  c.data.max_length = 32
  c.batch_size = 64
  c.num_steps = 2000
  c.objectives.nli_softmax = 0.0
  c.objectives.infonce = 1.0
  c.infonce.temperature = 0.05
  c.infonce.hard_negatives = False
  c.negatives = "global"
  c.model.dropout_rate = 0.1
  c.optimizer.learning_rate = 3e-5
  c.optimizer.warmup_fraction = 0.0
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 250
  c.eval.tasks = ("sts:data/sts/stsb_dev.tsv.gz",)
  if arg == "runlocal":
    c.model.init = "minilm"
    c.model.pooling = "mean"
    c.num_steps = 20
    c.log_every_steps = 5
    c.checkpoint.every_steps = 10
    c.eval.every_steps = 10
  return c
