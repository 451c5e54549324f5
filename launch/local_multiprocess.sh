#!/usr/bin/env bash
# Runs COMMAND as a multi-process JAX job on this machine: NUM_PROCESSES processes, each with
# DEVICES_PER_PROCESS fake CPU devices, talking over 127.0.0.1 only.
#
#   launch/local_multiprocess.sh 2 4 neuralir train --config configs/tiny.py --workdir /tmp/w
#
# Each process gets NEURALIR_COORDINATOR / NEURALIR_NUM_PROCESSES / NEURALIR_PROCESS_ID, which
# neuralir_jax.distributed.setup() turns into jax.distributed.initialize(...) bound to loopback.
# Output of process i goes to stdout prefixed with [i]; the script fails if any process fails.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS COMMAND..." >&2
  exit 2
fi
num_processes=$1; devices=$2; shift 2
port=${NEURALIR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < num_processes; i++)); do
  NEURALIR_COORDINATOR="127.0.0.1:${port}" NEURALIR_NUM_PROCESSES="$num_processes" \
  NEURALIR_PROCESS_ID="$i" JAX_NUM_CPU_DEVICES="$devices" JAX_PLATFORMS=cpu \
    "$@" > >(sed "s/^/[$i] /") 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit $status
