#!/usr/bin/env bash
# One short GPU check (< 5 minutes on an H100/H200): installs the minimal JAX stack in a fresh venv, then runs
# benchmarks/gpu_bench.py: bf16 InfoNCE train steps of a random-init BERT-base at sequence length 128 with
# the largest global batch that fits (examples/s, MFU against the chip's peak), and encode throughput.
#
#   bash benchmarks/gpu_check.sh                 # from a fresh checkout; needs PyPI, no other network or data
#   OUT=/some/dir bash benchmarks/gpu_check.sh   # also writes $OUT/gpu_check.txt
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh   # reuse an env whose JAX already sees the GPU
#
# Extra arguments go to gpu_bench.py (e.g. --batches 512,256 --remat). The install step is skipped when
# $PYTHON (default: a venv at $VENV) already imports a GPU-enabled jax 0.10.2, or when SKIP_INSTALL=1 (e.g.
# `SKIP_INSTALL=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --smoke` checks the script on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-${TMPDIR:-/tmp}/neuralir_gpu_venv}
PYTHON=${PYTHON:-$VENV/bin/python}

has_gpu_jax() {
  "$PYTHON" -c 'import jax, sys; sys.exit(0 if jax.__version__ == "0.10.2" and jax.default_backend() == "gpu" else 1)' \
    >/dev/null 2>&1
}

start=$(date +%s)
if [ "${SKIP_INSTALL:-0}" != 1 ] && ! has_gpu_jax; then
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  PYTHON=$VENV/bin/python
  # Only what the train step and the encoder import: no torch, scann, tfds, grain or orbax.
  "$PYTHON" -m pip install --quiet --upgrade pip
  "$PYTHON" -m pip install --quiet 'jax[cuda12]==0.10.2' flax==0.12.8 optax==0.2.8 chex==0.1.92 \
    'ml-collections>=1.1,<1.2' 'tokenizers>=0.23,<0.24' numpy
fi
echo "install/check: $(( $(date +%s) - start ))s"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee ${OUT:+"$OUT/nvidia_smi.txt"}
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" benchmarks/gpu_bench.py "$@"
echo "gpu_check total: $(( $(date +%s) - start ))s"
