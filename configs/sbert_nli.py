"""Sentence-BERT (Reimers & Gurevych 2019): bert-base, NLI softmax head on SNLI + MultiNLI, batch 16,
lr 2e-5, 10% warmup, mean pooling, 1 epoch.

  neuralir train --config configs/sbert_nli.py --workdir W          # full recipe (needs bert-base dir + TFDS)
  neuralir train --config configs/sbert_nli.py:runlocal --workdir W # bundled NLI sample, tiny model, CPU

`model.init` must point at a bert-base-uncased directory (HF layout) for the full recipe.
"""

from . import common


def get_config(arg=None):
  common.check_variant("sbert_nli.py", arg, ("runlocal",))
  c = common.base_config()
  c.model.init = "bert-base-uncased"  # An HF directory of bert-base-uncased (downloaded beforehand).
  c.data.train = "tfds:snli:train"  # SNLI (550k pairs); add MultiNLI by concatenating: see README.
  c.data.view = "pairs"
  c.data.max_length = 128
  c.batch_size = 16
  c.num_steps = 34_000  # ~1 epoch of SNLI + MultiNLI (942k pairs) at batch 16, as the paper.
  c.objectives.nli_softmax = 1.0
  c.objectives.infonce = 0.0
  c.optimizer.learning_rate = 2e-5
  c.optimizer.warmup_fraction = 0.1
  c.checkpoint.every_steps = 2000
  c.log_every_steps = 100
  c.eval.every_steps = 1000
  c.eval.tasks = ("sts:data/sts/stsb_dev.tsv.gz",)
  if arg == "runlocal":
    c.model.init = "random"
    c.model.bert.hidden_size = 64
    c.model.bert.num_hidden_layers = 2
    c.model.bert.num_attention_heads = 4
    c.model.bert.intermediate_size = 128
    c.data.train = "nli:data/nli/train_sample.jsonl.gz"
    c.data.max_length = 48
    c.num_steps = 50
    c.log_every_steps = 10
    c.checkpoint.every_steps = 25
    c.eval.every_steps = 25
    c.optimizer.learning_rate = 5e-4
  return c
