"""Peak memory of one train step at large global batches: tiled vs dense cross-device InfoNCE, side by side.

Compiles (never runs) the gradient of `steps.py` on 8 virtual CPU devices for a tiny encoder (2 layers x 32,
configs/tiny.py's shape) with GradCache on and InfoNCE with one hard negative per query and global negatives,
at each global batch, and reads XLA's per-device memory analysis (temporary buffers). Dense builds each
device's [local batch, 2 x global batch] logits; tiled walks blocks of `--block` candidates.

  .venv/bin/python benchmarks/tiled_memory.py [--batches 8192,65536] [--chunk 128] [--block 1024]

`--time-batch N` also times real train steps (random tokens, 8 devices, GradCache as above) of both at
global batch N, where dense fits: ms/step, rounds alternating.

Tiled should stay flat as the batch grows (the gathered embeddings, 2 x global batch x 32 floats, are what
is left); dense grows with local batch x global batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402
from neuralir_jax import bi_encoder, sharding, steps  # noqa: E402


def bench_config(implementation: str, chunk: int, block: int):
  c = common.base_config()
  c.model.init = "random"
  c.model.bert.update(dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64))
  c.model.update(dict(pooling="mean", normalize=True, max_seq_length=32, dropout_rate=0.0))
  c.objectives.update(dict(nli_softmax=0.0, infonce=1.0, sts_cosine=0.0, triplet=0.0))
  c.infonce.update(dict(hard_negatives=True, implementation=implementation, block_size=block))
  c.negatives = "global"
  c.grad_cache.chunk_size = chunk
  return c


def temp_bytes(implementation: str, batch: int, chunk: int, block: int, length: int) -> int:
  """Per-device compiled temporary memory (bytes) of one gradient computation."""
  config = bench_config(implementation, chunk, block)
  mesh = sharding.make_mesh(8)
  family = bi_encoder.BiEncoder(config)
  params = jax.eval_shape(family.init_params, jax.random.PRNGKey(0))
  text = jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=sharding.batch_sharding(mesh))
  batch_spec = {f"{c}_{kind}": text for c in ("anchor", "positive", "negative") for kind in ("ids", "mask")}
  compiled = jax.jit(steps.grad_fn_pjit(family, mesh)).lower(params, batch_spec, jax.random.PRNGKey(1)).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def time_steps(batch: int, chunk: int, block: int, length: int, steps_timed: int = 3, rounds: int = 2) -> dict:
  """Median ms/step of the real train step per implementation at one global batch (random tokens)."""
  import statistics
  import numpy as np
  from neuralir_jax import optimizer
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 1000, (batch, length), dtype=np.int32)
  data = {f"{c}_{kind}": (ids if kind == "ids" else np.ones_like(ids)) for c in ("anchor", "positive", "negative")
          for kind in ("ids", "mask")}
  mesh = sharding.make_mesh(8)
  runs = {}
  for implementation in ("dense", "tiled"):
    config = bench_config(implementation, chunk, block)
    config.batch_size = batch
    family = bi_encoder.BiEncoder(config)
    tx, schedule = optimizer.make_optimizer(config.optimizer, 100)
    state, shardings = steps.create_train_state(family, jax.random.PRNGKey(0), mesh, tx)
    step = steps.make_train_step(family, mesh, tx, shardings, schedule)
    global_batch = sharding.make_global_batch(data, mesh)
    state, metrics = step(state, global_batch)  # Compilation.
    jax.block_until_ready(metrics)
    runs[implementation] = [step, state, global_batch, []]
  for r in range(rounds):
    for implementation in (("dense", "tiled") if r % 2 == 0 else ("tiled", "dense")):
      step, state, global_batch, times = runs[implementation]
      tic = time.perf_counter()
      for _ in range(steps_timed):
        state, metrics = step(state, global_batch)
      jax.block_until_ready(metrics)
      times.append((time.perf_counter() - tic) / steps_timed * 1e3)
      runs[implementation][1] = state
  print({name: [round(t) for t in run[3]] for name, run in runs.items()})
  return {name: statistics.median(run[3]) for name, run in runs.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="8192,65536", help="Global batches, comma-separated.")
  parser.add_argument("--chunk", type=int, default=128, help="GradCache examples per device per chunk.")
  parser.add_argument("--block", type=int, default=1024, help="Candidates per tiled block.")
  parser.add_argument("--length", type=int, default=32)
  parser.add_argument("--implementations", default="tiled,dense")
  parser.add_argument("--time-batch", type=int, default=0, help="Also time train steps at this global batch.")
  args = parser.parse_args()
  start = time.time()
  batches = [int(b) for b in args.batches.split(",")]
  print(f"8 devices, tiny BERT 2x32, seq len {args.length}, GradCache chunk {args.chunk}/device, "
        f"InfoNCE with 1 hard negative, global negatives, tiled block {args.block}")
  print(f"{'implementation':<15} {'global batch':>12} {'temp MiB/device':>16} {'x smallest batch':>17}")
  for implementation in args.implementations.split(","):
    base = None
    for batch in batches:
      size = temp_bytes(implementation, batch, args.chunk, args.block, args.length)
      base = base or size
      print(f"{implementation:<15} {batch:>12} {size / 2**20:>16.1f} {size / base:>17.2f}", flush=True)
  print(f"(compiled in {time.time() - start:.0f}s)")
  if args.time_batch:
    ms = time_steps(args.time_batch, args.chunk, args.block, args.length)
    print(f"train step at global batch {args.time_batch}: dense {ms['dense']:.0f} ms, tiled {ms['tiled']:.0f} ms "
          f"(tiled / dense {ms['tiled'] / ms['dense']:.2f}x)")


if __name__ == "__main__":
  main()
