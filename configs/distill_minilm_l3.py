"""A 3-layer student distilled from the packaged 6-layer all-MiniLM-L6-v2 by embedding MSE (Reimers &
Gurevych, 2020): the student keeps the teacher's layers 0, 2 and 4 and learns the teacher's vector of every
bundled NLI and STS-B train sentence (36,601 distinct sentences; three epochs at batch 64 = 1,716 steps,
AdamW lr 3e-4 with 10% warmup and linear decay, dropout 0.1).

  neuralir train --config configs/distill_minilm_l3.py --workdir W
  neuralir eval --model W --task sts:data/sts/stsb_dev.tsv.gz --task sts:data/sts/stsb_test.tsv.gz

For another language, train on a `parallel:FILE.tsv` source (English<TAB>translation) with
--config.data.view=pairs --config.distill.embedding_columns='("anchor", "positive")': the student maps both
the sentence and its translation to the teacher's vector of the sentence. The learning rate and the
epochs were chosen on STS-B dev (README, "Re-rank and distil"): lr 1e-4 for one epoch 0.8066; lr 3e-4 after
epochs 1 / 2 / 3: 0.8410 / 0.8490 / 0.8527 (teacher 0.8672).
"""

from . import common


def get_config(arg=None):
  common.check_variant("distill_minilm_l3.py", arg)
  c = common.base_config()
  c.model.init = "minilm"
  c.model.layers = (0, 2, 4)
  c.data.train = "nli:data/nli/train_sample.jsonl.gz,sts:data/sts/stsb_train.tsv.gz"
  c.data.view = "duplicates"
  c.data.max_length = 64
  c.batch_size = 64
  c.num_steps = 1716  # Three epochs of the 36,601 sentences.
  c.log_every_steps = 50
  for name in c.objectives:
    c.objectives[name] = 0.0
  c.objectives.embedding_mse = 1.0
  c.distill.teacher = "minilm"
  c.distill.embedding_columns = ("anchor",)
  c.optimizer.learning_rate = 3e-4
  c.checkpoint.every_steps = 572
  c.eval.tasks = ("sts:data/sts/stsb_dev.tsv.gz",)
  c.eval.every_steps = 572
  return c
