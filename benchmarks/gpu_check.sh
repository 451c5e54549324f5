#!/usr/bin/env bash
# One short accelerator check (< 5 minutes on an H100/H200), offline: runs benchmarks/gpu_bench.py with the
# machine's own Python (JAX with CUDA, flax, optax, chex, orbax, tokenizers preinstalled; nothing is
# downloaded): bf16 InfoNCE train steps of a random-init BERT-base at sequence length 128 with the largest
# global batch that fits (examples/s, MFU against the chip's peak), the same texts padded vs packed, and
# encode throughput. Writes $OUT/gpu_check.txt when OUT is set.
#
#   bash benchmarks/gpu_check.sh                    # python3 of the machine, wheels from .whl/ if needed
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --smoke   # checks the script on this CPU
#
# Packages the machine lacks (there: ml-collections) are installed from the wheels in $WHEELS (default
# .whl/, carried to the machine; fetch them here with benchmarks/README.md's `pip download` line) into a
# private --target folder with pip --no-index, never from the network. Extra arguments go to gpu_bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-${TMPDIR:-/tmp}/neuralir_gpu_site}
NEEDED="jax flax optax chex orbax ml_collections tokenizers absl yaml etils numpy"

missing() {
  "$PYTHON" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' $NEEDED
}

start=$(date +%s)
lacking=$(missing)
if [ -n "$lacking" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "installing from $WHEELS (offline) for: $lacking"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  lacking=$(missing)
fi
if [ -n "$lacking" ]; then
  echo "gpu_check: $PYTHON lacks $lacking and no wheel in $WHEELS/ provides it; carry the wheels (see" \
       "benchmarks/README.md) or set PYTHON to an environment that has them" >&2
  exit 1
fi
echo "packages: $(( $(date +%s) - start ))s"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee ${OUT:+"$OUT/nvidia_smi.txt"}
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" benchmarks/gpu_bench.py "$@"
echo "gpu_check total: $(( $(date +%s) - start ))s"
