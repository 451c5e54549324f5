"""An STS cross-encoder: the packaged MiniLM body + a new head trained on STS-B train (score / 5 as the BCE
target of `ce_pointwise`), the teacher that labels Augmented SBERT's silver pairs (configs/augsbert_stsb.py).

  neuralir train --config configs/cross_encoder_stsb.py --workdir CE
  neuralir augment --data sts:data/sts/stsb_train.tsv.gz --sampler bm25 --cross-encoder CE --top-k 3 \\
      --output silver.tsv

One epoch of the 5,749 gold pairs at batch 16 (360 steps), AdamW lr 5e-5 (the new head 100x) with 10% warmup
and linear decay, dropout 0.1, sentences up to 64 tokens each.
"""

from . import common


def get_config(arg=None):
  common.check_variant("cross_encoder_stsb.py", arg)
  c = common.base_config()
  c.model.family = "cross_encoder"
  c.model.init = "minilm"
  c.data.train = "sts:data/sts/stsb_train.tsv.gz"
  c.data.view = "pairs"
  c.data.max_length = 64
  c.data.buckets = (16, 32, 64)  # Most STS-B sentences fit 16 tokens; the pairs join to 31.
  c.data.packing = False
  c.batch_size = 16
  c.num_steps = 360  # One epoch of the 5,749 STS-B train pairs.
  c.log_every_steps = 20
  for name in c.objectives:
    c.objectives[name] = 0.0
  c.objectives.ce_pointwise = 1.0
  c.optimizer.learning_rate = 5e-5
  c.optimizer.head_lr_multiplier = 100.0
  c.checkpoint.every_steps = 360
  return c
