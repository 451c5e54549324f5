"""Process setup before any JAX computation: fake CPU device count and multi-host initialisation.

`setup()` must run before the first JAX op. It honours:
- `JAX_NUM_CPU_DEVICES`: the number of (fake) CPU devices, for tests and local multi-device runs.
- `NEURALIR_COORDINATOR`, `NEURALIR_NUM_PROCESSES`, `NEURALIR_PROCESS_ID`: set by
  `launch/local_multiprocess.sh`; the coordinator binds to loopback only.
- `NEURALIR_DISTRIBUTED=auto|slurm|tpu`: `jax.distributed.initialize()` with cluster auto-detection
  (TPU pods, SLURM, Open MPI), used by `launch/tpu_pod.sh` and `launch/slurm_gpu.sbatch`.
"""

from __future__ import annotations

import logging
import os

import jax

_initialized = False


def setup() -> None:
  """Configures devices and joins the multi-process job if the environment asks for one."""
  global _initialized
  if _initialized:
    return
  _initialized = True
  num_cpu = os.environ.get("JAX_NUM_CPU_DEVICES")
  if num_cpu:
    jax.config.update("jax_num_cpu_devices", int(num_cpu))
  coordinator = os.environ.get("NEURALIR_COORDINATOR")
  if coordinator:
    host, _, port = coordinator.rpartition(":")
    num_processes = int(os.environ["NEURALIR_NUM_PROCESSES"])
    process_id = int(os.environ["NEURALIR_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
        coordinator_bind_address=f"{host}:{port}", initialization_timeout=120)
    logging.info("process %d/%d joined %s", process_id, num_processes, coordinator)
  elif os.environ.get("NEURALIR_DISTRIBUTED"):
    jax.distributed.initialize()
    logging.info("process %d/%d joined (auto-detected cluster)", jax.process_index(), jax.process_count())


def is_main_process() -> bool:
  return jax.process_index() == 0


def encode_across_processes(encode_fn, texts):
  """Embeds `texts` with every process's devices: process p encodes the p-th contiguous slice, and the
  slices are all-gathered, so each process returns all embeddings [len(texts), d] in input order."""
  import numpy as np
  count = jax.process_count()
  texts = list(texts)
  if count == 1:
    return encode_fn(texts)
  from jax.experimental import multihost_utils
  per_process = -(-len(texts) // count)
  start = jax.process_index() * per_process
  mine = texts[start:start + per_process]
  emb = np.asarray(encode_fn(mine if mine else texts[:1]), np.float32)[:len(mine)]
  dim = emb.shape[-1]
  padded = np.zeros((per_process, dim), np.float32)
  padded[:len(mine)] = emb
  gathered = np.asarray(multihost_utils.process_allgather(padded))  # [processes, per_process, d]
  return gathered.reshape(-1, dim)[:len(texts)]
