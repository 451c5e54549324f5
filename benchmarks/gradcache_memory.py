"""Peak memory of a contrastive train step: GradCache at a large batch vs plain steps, side by side.

Reads XLA's compiled memory analysis (temporary buffers: activations and their gradients) of the gradient
function of `steps.py` on one device; nothing is run, so batch 1,024 fits any CPU.

  .venv/bin/python benchmarks/gradcache_memory.py [--batch 1024] [--chunk 32] [--length 32]

GradCache's peak should stay near the plain step at the chunk size, not grow with the batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402
from neuralir_jax import bi_encoder, sharding, steps  # noqa: E402


def bench_config(chunk: int, layers: int = 2, hidden: int = 128) -> ml_collections.ConfigDict:
  """configs/common.py with a random-init BERT `layers` x `hidden` and InfoNCE (hard negatives) only."""
  c = common.base_config()
  c.model.init = "random"
  c.model.bert.update(dict(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                           intermediate_size=4 * hidden, max_position_embeddings=128))
  c.model.update(dict(pooling="mean", normalize=True, max_seq_length=128, dropout_rate=0.1, dtype="float32",
                      remat=False))
  c.objectives.update(dict(nli_softmax=0.0, infonce=1.0, sts_cosine=0.0, triplet=0.0))
  c.infonce.update(dict(temperature=0.05, learnable_temperature=False, symmetric=False, hard_negatives=True))
  c.negatives = "global"
  c.parallel.update(dict(strategy="pjit", fsdp=False))
  c.grad_cache.chunk_size = chunk
  return c


def temp_bytes(batch: int, chunk: int, length: int = 32, layers: int = 2, hidden: int = 128) -> int:
  """Compiled temporary memory (bytes) of one gradient computation; chunk 0 = plain step."""
  config = bench_config(chunk, layers, hidden)
  mesh = sharding.make_mesh(1)
  family = bi_encoder.BiEncoder(config)
  params = jax.eval_shape(family.init_params, jax.random.PRNGKey(0))
  text = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  batch_spec = {f"{c}_{kind}": text for c in ("anchor", "positive", "negative") for kind in ("ids", "mask")}
  grad_fn = jax.jit(steps.grad_fn_pjit(family, mesh))
  compiled = grad_fn.lower(params, batch_spec, jax.random.PRNGKey(1)).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=1024)
  parser.add_argument("--chunk", type=int, default=32)
  parser.add_argument("--length", type=int, default=32)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--hidden", type=int, default=128)
  args = parser.parse_args()
  start = time.time()
  rows = [(f"plain, batch {args.chunk}", temp_bytes(args.chunk, 0, args.length, args.layers, args.hidden)),
          (f"GradCache, batch {args.batch}, chunk {args.chunk}",
           temp_bytes(args.batch, args.chunk, args.length, args.layers, args.hidden)),
          (f"plain, batch {args.batch}", temp_bytes(args.batch, 0, args.length, args.layers, args.hidden))]
  base = rows[0][1]
  print(f"InfoNCE step with hard negatives (3 texts/example), BERT {args.layers}x{args.hidden}, "
        f"seq len {args.length}, device {jax.devices()[0].device_kind}")
  print(f"{'setting':<36} {'temp MiB':>10} {'x plain chunk':>14}")
  for name, size in rows:
    print(f"{name:<36} {size / 2**20:>10.1f} {size / base:>14.2f}")
  print(f"(compiled in {time.time() - start:.0f}s)")


if __name__ == "__main__":
  main()
