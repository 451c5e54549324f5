#!/usr/bin/env bash
# Runs a training job on every host of a Cloud TPU pod slice. NEURALIR_DISTRIBUTED=tpu makes
# neuralir_jax.distributed.setup() call jax.distributed.initialize(), which auto-detects the pod.
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/infonce_nli.py gs://bucket/workdir [--config.key=value ...]
#
# Assumes the repository is checked out at ~/neuralir_jax on every host (e.g. via `gcloud ... scp`)
# and installed there with `make install EXTRAS=tpu` (the Makefile's EXTRAS picks pip extras: jax[tpu]).
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/neuralir_jax && NEURALIR_DISTRIBUTED=tpu .venv/bin/neuralir train --config $config --workdir $workdir $*"
