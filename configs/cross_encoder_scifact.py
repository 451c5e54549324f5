"""A monoBERT re-ranker for SciFact: a MiniLM body + a new relevance head, trained on mined negatives.

  neuralir train --config configs/cross_encoder_scifact.py --workdir W      # body: the packaged MiniLM
  neuralir export --model BI --output BI_EXPORT                            # BI: configs/scifact.py's workdir
  neuralir train --config configs/cross_encoder_scifact.py --workdir W --config.model.init=BI_EXPORT
  neuralir rerank --first-stage bm25 --reranker W --task beir:data/retrieval/scifact:dev20 --top-k 20

The body starts from the packaged MiniLM by default; benchmarks/scifact_rerank.sh starts it from the
bi-encoder that configs/scifact.py fine-tuned on the same train80 queries (chosen on dev20: re-ranking that
bi-encoder's top 100, fused at w = 0.7, 0.7234 -> 0.7505 nDCG@10; the MiniLM-bodied re-ranker had added
+0.0080 over the one-epoch bi-encoder's top 100).

Listwise softmax cross-entropy over each train80 query's positive, its k = 2 MiniLM-mined hard negatives
(the bundled `neuralir mine` output that configs/scifact.py trains the bi-encoder on) and 2 pool negatives
(other queries' positives, data.pool_negatives), plus pointwise BCE at weight 0.5; three epochs at batch 16
(138 steps), AdamW lr 1e-4 (the new classifier 20x) with 10% warmup and linear decay, dropout 0.1, queries
up to 64 tokens and abstracts up to 128 (a pair up to 191). Variant `:duo` trains duoBERT (ce_pairwise) on
the same rows.

Chosen on dev20 (README, "Re-rank and distil"): lr 2e-5 with k = 3 mined negatives ranked BM25's top 20
about at random (nDCG@10 0.6978 -> 0.3336), lr 1e-4 -> 0.4176; the pool negatives make it a re-ranker
(the fine-tuned bi-encoder's top 30: 0.6210 alone, 0.7166 fused with the first stage at w = 0.7).
"""

from . import common


def get_config(arg=None):
  common.check_variant("cross_encoder_scifact.py", arg, ("duo",))
  c = common.base_config()
  c.model.family = "cross_encoder"
  c.model.init = "minilm"
  c.data.train = "triples:data/triples/scifact_train80_minilm_mined.jsonl.gz"
  c.data.view = "triplets"
  c.data.num_negatives = 2
  c.data.pool_negatives = 2  # Other queries' positives: against learning "a cited abstract" for relevance.
  c.data.max_length = 128
  c.data.query_max_length = 64
  c.data.document_max_length = 128
  c.data.buckets = (32, 64, 128)
  c.data.packing = False
  c.batch_size = 16
  c.num_steps = 138  # Three epochs of the 736 train80 rows.
  c.log_every_steps = 5
  for name in c.objectives:
    c.objectives[name] = 0.0
  c.objectives.ce_listwise = 1.0
  c.objectives.ce_pointwise = 0.5
  c.optimizer.learning_rate = 1e-4
  c.optimizer.head_lr_multiplier = 20.0  # The fresh classifier learns at 2e-3 beside the pretrained body.
  c.checkpoint.every_steps = 46
  if arg == "duo":
    c.objectives.ce_listwise = 0.0
    c.objectives.ce_pointwise = 0.0
    c.objectives.ce_pairwise = 1.0
    # [CLS] q [SEP] d_i [SEP] d_j [SEP] up to 318 tokens.
    c.data.num_negatives = 2
    c.data.pool_negatives = 0
  return c
