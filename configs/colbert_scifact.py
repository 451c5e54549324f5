"""ColBERT for SciFact: the packaged MiniLM body + a new 128-wide projection, MaxSim InfoNCE on mined negatives.

  neuralir train --config configs/colbert_scifact.py --workdir W
  neuralir export --workdir W --output DIR      # sentence-transformers MultiVectorEncoder layout
  neuralir score --model DIR --input pairs.tsv --output scores.npy

The recipe of configs/scifact.py (the bi-encoder it is compared with) in ColBERT's form: the bundled MiniLM-
mined train80 rows, k = 3 hard negatives per query plus the global batch's other documents, one epoch at
batch 32 (23 steps), AdamW lr 5e-5 with 10% warmup and linear decay (the new projection 10x), dropout 0.1.
ColBERT's own choices: markers [unused0] / [unused1] (special tokens), queries padded to 32 tokens with
attended [MASK]s, documents up to 128 tokens in training and 256 when encoded for retrieval (chosen on
dev20), punctuation not scored, raw MaxSim logits (tau = 1).
"""

from . import common


def get_config(arg=None):
  common.check_variant("colbert_scifact.py", arg)
  c = common.base_config()
  c.model.family = "colbert"
  c.model.init = "minilm"
  c.model.prompts.query = "[unused0] "
  c.model.prompts.document = "[unused1] "
  c.data.train = "triples:data/triples/scifact_train80_minilm_mined.jsonl.gz"
  c.data.view = "triplets"
  c.data.num_negatives = 3
  c.data.max_length = 128
  c.data.query_max_length = 32
  c.data.document_max_length = 128
  c.data.buckets = (32, 64, 128)  # Queries are expanded to 32 on device whatever their bucket.
  c.data.packing = False
  # Encode abstracts up to 256 tokens for retrieval (as the bi-encoder does); trained on 128. dev20 nDCG@10:
  # 0.6920 at 128, 0.7122 at 256 (neuralir eval --document-length).
  c.colbert.document_length = 256
  c.batch_size = 32
  c.num_steps = 23  # One epoch of the 736 train80 rows.
  c.log_every_steps = 5
  for name in c.objectives:
    c.objectives[name] = 0.0
  c.objectives.infonce = 1.0
  c.infonce.temperature = 1.0
  c.distill.scale = 1.0  # Student scores for listwise_kl / margin_mse: raw MaxSim (the default 20 is for cosines).
  c.optimizer.learning_rate = 5e-5
  c.optimizer.head_lr_multiplier = 10.0
  c.checkpoint.every_steps = 23
  return c
