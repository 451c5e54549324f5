#!/bin/bash
# Mine -> fine-tune -> evaluate on SciFact, each stage timed (README, "Fine-tune a retriever on your corpus").
#
#   bash benchmarks/scifact_retriever.sh [OUT]      # default OUT: workdirs/scifact_retriever
#
# Mines MiniLM hard negatives for the train80 queries (SciFact train minus the dev20 split), fine-tunes with
# configs/scifact.py on them, and scores the model on dev20 (where choices were made) and test (reported).
# Extra arguments after OUT are passed to `neuralir train` (e.g. --config.data.num_negatives=1).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-workdirs/scifact_retriever}
shift || true
NEURALIR=${NEURALIR:-.venv/bin/neuralir}
mkdir -p "$OUT"
rm -f "$OUT/mined.jsonl.gz"
t0=$(date +%s)
$NEURALIR mine --model minilm --data beir:data/retrieval/scifact:train80 --output "$OUT/mined.jsonl.gz" \
  --num-negatives 8 --range-max 50 --max-length 128
t1=$(date +%s)
$NEURALIR train --config configs/scifact.py --workdir "$OUT/model" \
  "--config.data.train=triples:$OUT/mined.jsonl.gz" "$@"
t2=$(date +%s)
$NEURALIR eval --model "$OUT/model" --task beir:data/retrieval/scifact:dev20 \
  --task beir:data/retrieval/scifact:test --output "$OUT/scores.json"
t3=$(date +%s)
echo "mine $((t1 - t0)) s, train $((t2 - t1)) s, eval $((t3 - t2)) s, total $((t3 - t0)) s" | tee "$OUT/times.txt"
