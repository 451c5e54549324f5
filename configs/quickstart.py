"""The packaged all-MiniLM-L6-v2 fine-tuned on the bundled NLI sample (NLI softmax head + InfoNCE with
global negatives and hard negatives), on 8 virtual CPU devices, in a few minutes:

  JAX_NUM_CPU_DEVICES=8 neuralir train --config configs/quickstart.py --workdir workdirs/quickstart

`make quickstart` runs it between a before and an after evaluation.
"""

from . import common


def get_config(arg=None):
  common.check_variant("quickstart.py", arg)
  c = common.base_config()
  c.num_steps = 24  # x 64 = 1,536 NLI premises, each with its E/N/C hypotheses: ~4 minutes on 2 cores.
  c.batch_size = 64  # 8 per virtual device; InfoNCE sees 2 x 64 - 1 = 127 negatives per query.
  c.log_every_steps = 4
  c.model.init = "minilm"
  c.data.view = "nli_full"
  c.data.max_length = 32  # 92% of the bundled NLI sentences fit; longer ones are truncated (CPU time).
  c.optimizer.learning_rate = 2e-5
  c.optimizer.head_lr_multiplier = 100.0  # The fresh NLI head learns at 2e-3 beside the pretrained encoder.
  c.checkpoint.every_steps = 12
  return c
