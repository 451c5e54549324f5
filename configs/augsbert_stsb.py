"""Augmented SBERT (Thakur et al., 2021) on STS-B: the packaged MiniLM fine-tuned with the STS cosine loss
on the gold train pairs (`configs/augsbert_stsb.py`) or on gold + silver pairs (`:silver`), the silver
ones sampled by BM25 from the gold sentences and labelled by the STS cross-encoder.

  neuralir train --config configs/cross_encoder_stsb.py --workdir CE
  neuralir augment --data sts:data/sts/stsb_train.tsv.gz --sampler bm25 --cross-encoder CE --top-k 3 \\
      --output silver.tsv
  neuralir train --config configs/augsbert_stsb.py:silver --workdir A \\
      --config.data.train=sts:data/sts/stsb_train.tsv.gz,sts:silver.tsv  # Without it: the bundled silver file.
  neuralir eval --model A --task sts:data/sts/stsb_dev.tsv.gz --task sts:data/sts/stsb_test.tsv.gz

One epoch at batch 16 (gold: 360 steps; `:silver` sets the steps from SILVER_PAIRS below), AdamW lr 2e-5
with 10% warmup and linear decay, dropout 0.1, sentences up to 64 tokens.
"""

from . import common

GOLD = "sts:data/sts/stsb_train.tsv.gz"
GOLD_PAIRS = 5749
# The bundled output of the augment command above (README, "Re-rank and distil"), and its pair count.
SILVER = "sts:data/sts/stsb_train_silver_bm25.tsv.gz"
SILVER_PAIRS = 18736


def get_config(arg=None):
  common.check_variant("augsbert_stsb.py", arg, ("silver",))
  c = common.base_config()
  c.model.init = "minilm"
  c.data.train = GOLD
  if arg == "silver":
    if not SILVER_PAIRS:
      raise ValueError("configs/augsbert_stsb.py: SILVER_PAIRS is 0; set it to the pair count the augment run "
                       "printed.")
    c.data.train = f"{GOLD},{SILVER}"
  c.data.view = "pairs"
  c.data.max_length = 64
  c.batch_size = 16
  pairs = GOLD_PAIRS + (SILVER_PAIRS if arg == "silver" else 0)
  c.num_steps = -(-pairs // c.batch_size)  # One epoch.
  c.log_every_steps = 20
  for name in c.objectives:
    c.objectives[name] = 0.0
  c.objectives.sts_cosine = 1.0
  c.optimizer.learning_rate = 2e-5
  c.checkpoint.every_steps = c.num_steps
  c.eval.tasks = ("sts:data/sts/stsb_dev.tsv.gz",)
  c.eval.every_steps = c.num_steps
  return c
