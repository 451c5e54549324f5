#!/bin/bash
# ColBERT on SciFact against the fine-tuned bi-encoder (README, "Late interaction (ColBERT)"):
#
#   bash benchmarks/scifact_colbert.sh [OUT] [BI]     # defaults: workdirs/scifact_colbert, OUT/bi
#
# 1. ColBERT (configs/colbert_scifact.py) and the bi-encoder (configs/scifact.py, or an existing BI workdir),
#    each trained unless already there;
# 2. dev20 then test: end to end over the whole corpus, exhaustive MaxSim (exact) and ScaNN over every document
#    token vector (scann, with the exhaustive run's nDCG@10 beside it); re-ranking mode: the bi-encoder's top
#    100 ordered by MaxSim; the bi-encoder alone. Setting NEURALIR_SKIP_TEST=1 stops after dev20.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-workdirs/scifact_colbert}
BI=${2:-$OUT/bi}
NEURALIR=${NEURALIR:-.venv/bin/neuralir}
mkdir -p "$OUT"
t=$(date +%s)
[ -d "$OUT/colbert/checkpoints" ] || $NEURALIR train --config configs/colbert_scifact.py --workdir "$OUT/colbert"
echo "train ColBERT $(($(date +%s) - t)) s" | tee "$OUT/times.txt"
[ -d "$BI/checkpoints" ] || $NEURALIR train --config configs/scifact.py --workdir "$BI"
splits="dev20"
[ "${NEURALIR_SKIP_TEST:-0}" = 1 ] || splits="dev20 test"
for split in $splits; do
  task=beir:data/retrieval/scifact:$split
  for index in exact scann; do
    t=$(date +%s)
    $NEURALIR eval --model "$OUT/colbert" --task "$task" --index "$index" --output "$OUT/e2e_${index}_${split}.json"
    echo "ColBERT end to end ($index) on $split: $(($(date +%s) - t)) s" | tee -a "$OUT/times.txt"
  done
  t=$(date +%s)
  $NEURALIR rerank --first-stage "$BI" --reranker "$OUT/colbert" --task "$task" --top-k 100 \
    --output "$OUT/rerank_bi_${split}.json"
  echo "bi-encoder top 100 -> MaxSim on $split: $(($(date +%s) - t)) s" | tee -a "$OUT/times.txt"
done
.venv/bin/python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
for name in sorted(os.listdir(out)):
  if name.endswith(".json"):
    r = json.load(open(os.path.join(out, name)))
    if "reranked" in r:
      print(f"{name}: bi-encoder {r['first_stage']['ndcg@10']:.4f} -> MaxSim re-ranked {r['reranked']['ndcg@10']:.4f}")
    else:
      extra = " ".join(f"{k} {r[k]:.4g}" for k in ("exhaustive_ndcg@10", "candidates_per_query", "ms_per_query",
                                                     "index_bytes") if k in r)
      print(f"{name}: nDCG@10 {r['ndcg@10']:.4f} recall@100 {r['recall@100']:.4f} {extra}")
PY
