"""The packaged all-MiniLM-L6-v2 fine-tuned on SciFact train triples (query, judged abstract, BM25 hard
negative) with InfoNCE, in the recipe of sentence-transformers' MultipleNegativesRankingLoss training:

  neuralir train --config configs/scifact.py --workdir W
  neuralir eval --model W --task beir:data/retrieval/scifact:test

One epoch of the 919 bundled triples at batch 32 (29 steps), AdamW lr 2e-5 with 10% warmup and linear
decay, weight decay 0.01 off LayerNorms and biases, clip 1.0, dropout 0.1, 128 tokens, scale 20 (tau 0.05).
benchmarks/scifact_finetune_parity.py trains the same recipe with sentence-transformers beside it.
"""

from . import common


def get_config(arg=None):
  common.check_variant("scifact.py", arg)
  c = common.base_config()
  c.model.init = "minilm"
  c.data.train = "triples:data/triples/scifact_train_bm25_triples.jsonl.gz"
  c.data.view = "triplets"
  c.data.max_length = 128
  c.batch_size = 32
  c.num_steps = 29  # One epoch of 919 triples.
  c.log_every_steps = 5
  c.objectives.nli_softmax = 0.0
  c.objectives.infonce = 1.0
  c.infonce.temperature = 0.05
  c.infonce.hard_negatives = True
  c.negatives = "global"
  c.optimizer.learning_rate = 2e-5
  c.optimizer.warmup_fraction = 0.1
  c.checkpoint.every_steps = 29
  return c
