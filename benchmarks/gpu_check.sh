#!/usr/bin/env bash
# The accelerator check, offline, with the machine's own Python (JAX with CUDA, flax, optax, chex, orbax,
# tokenizers, torch and sentence-transformers preinstalled; nothing is downloaded). Each part runs under its
# own time limit, so that one failing or slow part leaves the others' figures:
#
# 1. benchmarks/gpu_bench.py --sections train,packing,encode: bf16 InfoNCE train steps of a random-init BERT-base
#    at length 128 with the largest global batch that fits (examples/s, MFU against the chip's peak), the same
#    texts padded vs packed, and encode throughput.
# 2. Side by side with sentence-transformers on the same GPU, on a random-init model shaped like the one in
#    $LIKE (default .gpu_assets/minilm: all-MiniLM-L6-v2's files without its weights, see benchmarks/README.md;
#    benchmarks/random_model.py writes the weights there): encode_throughput.py on the SciFact corpus +
#    queries in fp32 and in bf16 (torch.autocast), and train_throughput.py (NLI triplets, MNRL) in bf16
#    (TRAIN_DTYPES="bfloat16 float32" adds fp32).
# 3. gpu_bench.py --sections large: the largest global batch whose GradCache train step fits, tiled vs dense.
#
#   bash benchmarks/gpu_check.sh                    # python3 of the machine, wheels from .whl/ if needed
#   PARTS="bench encode" bash benchmarks/gpu_check.sh; PARTS="train large" bash ...  # two calls of < 10 min
#   PARTS=bench BENCH_SECTIONS=packing bash benchmarks/gpu_check.sh   # one part again
#   PARTS=train TRAIN_DTYPES="bfloat16 float32" bash ...   # the train comparison in both precisions
#   TRAIN="--batch-size 256 --steps 5 --rounds 2" TRAIN_LIMIT=150 ...   # default 10 steps x 3, 190 s
#   BENCH_LIMIT=200 bash ... --packing-batch 256   # gpu_bench's time limit (default 240 s); arguments to it
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --smoke   # checks the script on this CPU
#
# Packages the machine lacks (there: ml-collections, grain and grain's array-record and portpicker) are installed
# from the wheels in $WHEELS (default .whl/, carried to the machine; fetch them here with benchmarks/README.md's
# `pip download` line) into a private --target folder with pip --no-index, never from the network. Extra
# arguments go to gpu_bench.py. Files: $OUT/gpu_check.txt (gpu_bench), $OUT/compare_*.txt, $OUT/log.txt (all).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-${TMPDIR:-/tmp}/neuralir_gpu_site}
LIKE=${LIKE:-.gpu_assets/minilm}
NEEDED="jax flax optax chex orbax ml_collections tokenizers absl yaml etils numpy grain"
COMPARE_NEEDS="torch transformers sentence_transformers safetensors"
export PYTHONUNBUFFERED=1
[ -n "${OUT:-}" ] && mkdir -p "$OUT" && exec > >(tee -a "$OUT/log.txt") 2>&1

missing() {
  "$PYTHON" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "$@"
}

part() {  # part NAME SECONDS FILE COMMAND...: runs COMMAND under a time limit, its output also in $OUT/FILE
  # (FILE "-": the command writes its own).
  local name=$1 limit=$2 file=$3 t0 rc
  shift 3
  t0=$(date +%s)
  echo "== $name (limit ${limit}s)"
  if [ -n "${OUT:-}" ] && [ "$file" != - ]; then
    timeout "$limit" "$@" 2>&1 | grep -v -E "Warning|warn\(|^ *warnings\.|it/s\]$" | tee "$OUT/$file"
  else
    timeout "$limit" "$@" 2>&1 | grep -v -E "Warning|warn\(|^ *warnings\.|it/s\]$"
  fi
  rc=${PIPESTATUS[0]}
  echo "== $name: rc $rc ($([ "$rc" = 124 ] && echo 'time limit, ')$(( $(date +%s) - t0 ))s)"
}

start=$(date +%s)
lacking=$(missing $NEEDED)
if [ -n "$lacking" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "installing from $WHEELS (offline) for: $lacking"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  lacking=$(missing $NEEDED)
fi
if [ -n "$lacking" ]; then
  echo "gpu_check: $PYTHON lacks $lacking and no wheel in $WHEELS/ provides it; carry the wheels (see" \
       "benchmarks/README.md) or set PYTHON to an environment that has them" >&2
  exit 1
fi
echo "packages: $(( $(date +%s) - start ))s"
DEVICE=cpu
if command -v nvidia-smi >/dev/null 2>&1; then
  DEVICE=gpu
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee ${OUT:+"$OUT/nvidia_smi.txt"}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
SMOKE=0
for a in "$@"; do [ "$a" = --smoke ] && SMOKE=1; done

PARTS=${PARTS:-bench encode train large}  # A rerun of some parts: e.g. PARTS="train" BENCH_SECTIONS=packing.
has() { [[ " $PARTS " == *" $1 "* ]]; }
has bench && XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92} \
  part "gpu_bench ${BENCH_SECTIONS:=train,packing,encode}" "${BENCH_LIMIT:-240}" - "$PYTHON" benchmarks/gpu_bench.py \
  --sections "$BENCH_SECTIONS" "$@"

compare_lacking=$(missing $COMPARE_NEEDS)
if ! has encode && ! has train; then
  :
elif [ -n "$compare_lacking" ] || [ ! -f "$LIKE/config.json" ]; then
  echo "== side by side with sentence-transformers: skipped (lacking: ${compare_lacking:-none}; model files" \
       "$LIKE/config.json $([ -f "$LIKE/config.json" ] && echo found || echo missing))"
else
  MODEL=${TMPDIR:-/tmp}/neuralir_random_$(basename "$LIKE")
  "$PYTHON" benchmarks/random_model.py --like "$LIKE" --output "$MODEL" 2>&1 | grep -v -E "it/s\]$"
  if [ "$SMOKE" = 1 ]; then
    ENC="--limit 96 --every 50 --repeats 1" TRAIN="--batch-size 8 --steps 1 --rounds 1 --warmup 1" BATCH=32
  else
    ENC="--repeats 3 --warmup-stride 10" TRAIN=${TRAIN:-"--batch-size 256 --steps 10 --rounds 3"} BATCH=256
  fi
  SCIFACT="--input data/retrieval/scifact/corpus.jsonl.gz --input data/retrieval/scifact/queries.jsonl"
  for dtype in float32 bfloat16; do
    has encode && part "encode SciFact corpus + queries, $dtype, vs sentence-transformers" 85 "compare_encode_$dtype.txt" \
      "$PYTHON" benchmarks/encode_throughput.py --device $DEVICE --model "$MODEL" $SCIFACT --batch_size $BATCH \
      --dtype $dtype $ENC
  done
  for dtype in ${TRAIN_DTYPES:-bfloat16}; do  # fp32: TF32 matmuls on both sides.
    has train && part "train step, NLI triplets, $dtype, vs sentence-transformers MNRL" "${TRAIN_LIMIT:-190}" \
      "compare_train_$dtype.txt" \
      "$PYTHON" benchmarks/train_throughput.py --device $DEVICE --model "$MODEL" --dtype $dtype $TRAIN
  done
fi

has large && XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92} \
  part "gpu_bench large batch" 150 - "$PYTHON" benchmarks/gpu_bench.py --sections large "$@"
echo "gpu_check total: $(( $(date +%s) - start ))s"
