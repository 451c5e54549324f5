"""The packaged all-MiniLM-L6-v2 fine-tuned on the bundled NLI sample (NLI softmax head + InfoNCE with
global negatives and hard negatives), on 8 virtual CPU devices, in a few minutes:

  JAX_NUM_CPU_DEVICES=8 neuralir train --config configs/quickstart.py --workdir workdirs/quickstart

`make quickstart` runs it between a before and an after evaluation.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def get_config(arg=None):
  del arg
  c = common.base_config()
  c.num_steps = 60
  c.batch_size = 64
  c.log_every_steps = 10
  c.model.init = "minilm"
  c.data.view = "nli_full"
  c.data.max_length = 48
  c.optimizer.learning_rate = 2e-5
  c.checkpoint.every_steps = 30
  return c
