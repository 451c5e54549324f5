"""Tiny random-init 2-layer BERT, joint NLI softmax + InfoNCE on the bundled NLI sample: seconds on CPU.

  neuralir train --config configs/tiny.py --workdir /tmp/tiny --config.num_steps=20

Used by the tests; the same objectives and parallelism as the full configs, only smaller.
"""

from . import common


def get_config(arg=None):
  common.check_variant("tiny.py", arg)
  c = common.base_config()
  c.num_steps = 20
  c.batch_size = 16
  c.log_every_steps = 5
  c.model.init = "random"
  c.model.bert.hidden_size = 32
  c.model.bert.num_hidden_layers = 2
  c.model.bert.num_attention_heads = 4
  c.model.bert.intermediate_size = 64
  c.model.dropout_rate = 0.1
  c.data.max_length = 32
  c.optimizer.learning_rate = 1e-3
  c.checkpoint.every_steps = 10
  return c
