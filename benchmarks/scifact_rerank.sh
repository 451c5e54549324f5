#!/bin/bash
# The two-stage SciFact pipeline, each stage timed (README, "Re-rank and distil"):
#
#   bash benchmarks/scifact_rerank.sh [OUT] [TOP_K]     # defaults: workdirs/scifact_rerank, 30
#
# 1. the fine-tuned bi-encoder (configs/scifact.py) and the monoBERT re-ranker (configs/cross_encoder_scifact.py),
#    each trained unless OUT already holds it; the re-ranker's body starts from the fine-tuned bi-encoder
#    (exported to OUT/bi_export; chosen on dev20, README "Re-rank and distil"), or from the packaged MiniLM
#    with NEURALIR_CE_INIT=minilm;
# 2. dev20: bi-encoder top TOP_K -> monoBERT, and BM25 top TOP_K -> monoBERT, with the fusion grid
#    (choose the weight here);
# 3. test: the same commands, reported.
# Setting NEURALIR_SKIP_TEST=1 stops after dev20; NEURALIR_FIRST_STAGES="bi" (default "bi bm25") picks the
# first stages.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-workdirs/scifact_rerank}
TOP_K=${2:-30}
NEURALIR=${NEURALIR:-.venv/bin/neuralir}
WEIGHTS=0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1
mkdir -p "$OUT"
t0=$(date +%s)
[ -d "$OUT/bi/checkpoints" ] || $NEURALIR train --config configs/scifact.py --workdir "$OUT/bi"
t1=$(date +%s)
CE_INIT=${NEURALIR_CE_INIT:-bi}
if [ "$CE_INIT" = bi ]; then
  [ -d "$OUT/bi_export" ] || $NEURALIR export --model "$OUT/bi" --output "$OUT/bi_export"
  CE_INIT=$OUT/bi_export
fi
[ -d "$OUT/ce/checkpoints" ] || $NEURALIR train --config configs/cross_encoder_scifact.py --workdir "$OUT/ce" \
  --config.model.init="$CE_INIT"
t2=$(date +%s)
echo "train bi-encoder $((t1 - t0)) s, cross-encoder $((t2 - t1)) s" | tee "$OUT/times.txt"
splits="dev20"
[ "${NEURALIR_SKIP_TEST:-0}" = 1 ] || splits="dev20 test"
for split in $splits; do
  for first in ${NEURALIR_FIRST_STAGES:-bi bm25}; do
    model=$OUT/bi
    [ "$first" = bm25 ] && model=bm25
    t=$(date +%s)
    $NEURALIR rerank --first-stage "$model" --reranker "$OUT/ce" --task "beir:data/retrieval/scifact:$split" \
      --top-k "$TOP_K" --fuse-weights "$WEIGHTS" --output "$OUT/${first}_${split}_top${TOP_K}.json"
    echo "$first -> monoBERT on $split (top $TOP_K): $(($(date +%s) - t)) s" | tee -a "$OUT/times.txt"
  done
done
.venv/bin/python - "$OUT" "$TOP_K" <<'PY'
import json, sys, os
out, k = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(out)):
  if name.endswith(f"_top{k}.json"):
    r = json.load(open(os.path.join(out, name)))
    fused = " ".join(f"{w}:{m['ndcg@10']:.4f}" for w, m in r.get("fused", {}).items())
    print(f"{name}: first {r['first_stage']['ndcg@10']:.4f} reranked {r['reranked']['ndcg@10']:.4f} fused {fused}")
PY
