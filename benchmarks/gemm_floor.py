"""The encode roofline on this CPU: MiniLM's matrix multiplications alone, in JAX (XLA) and in PyTorch.

A MiniLM forward at batch B x L tokens is dominated by its GEMMs (Q, K, V, attention output, MLP in and out
per layer, plus the two batched attention matmuls). This times exactly those GEMMs, nothing else (no
softmax, LayerNorm, GELU, embeddings; the attention scale folded into Q), on random fp32 inputs of the
model's shapes, for JAX and for PyTorch with the same threads and precision, attention a few examples at a time on both
sides. The docs/s it prints bound what `Encoder.encode` and `SentenceTransformer.encode` can reach on
256-token texts; `benchmarks/encode_throughput.py` gives the real ones.

  .venv/bin/python benchmarks/gemm_floor.py [--batch 64 --length 256 --threads 2] [--dtype bfloat16]
"""

import argparse
import os
import time


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--attention-chunk", type=int, default=2, help="Examples per attention step.")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="Inputs and weights of both sides (bfloat16: JAX bf16 dots vs torch bf16 matmuls).")
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={args.threads}")
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  torch.set_num_threads(args.threads)
  b, length, d, f, heads, layers, c = args.batch, args.length, 384, 1536, 12, 6, args.attention_chunk
  h = d // heads
  rng = np.random.default_rng(0)
  weights = [rng.standard_normal(s).astype(np.float32) * 0.02 for s in [(d, d)] * 4 + [(d, f), (f, d)]]
  x0 = rng.standard_normal((b * length, d)).astype(np.float32)
  flops = layers * (2 * b * length * (4 * d * d + 2 * d * f) + 2 * 2 * b * length * length * d)

  def jax_gemms(x, w):
    for _ in range(layers):
      q, k, v = x @ w[0], x @ w[1], x @ w[2]
      split = lambda y: y.reshape(b // c, c, length, heads, h).transpose(0, 1, 3, 2, 4)  # noqa: E731
      ctx = jax.lax.map(lambda a: jnp.matmul(jnp.matmul(a[0], a[1].swapaxes(-1, -2)), a[2]),
                        (split(q), split(k), split(v)))
      x = ctx.transpose(0, 1, 3, 2, 4).reshape(b * length, d) @ w[3]
      x = (x @ w[4]) @ w[5]
    return x

  def torch_gemms(x, w):
    for _ in range(layers):
      q, k, v = (x @ w[i] for i in range(3))
      split = lambda y: y.view(b, length, heads, h).transpose(1, 2)  # noqa: E731
      q, k, v = split(q), split(k), split(v)
      ctx = torch.cat([torch.matmul(torch.matmul(q[i:i + c], k[i:i + c].transpose(-1, -2)), v[i:i + c])
                       for i in range(0, b, c)])
      x = ctx.transpose(1, 2).reshape(b * length, d) @ w[3]
      x = (x @ w[4]) @ w[5]
    return x

  jitted = jax.jit(jax_gemms)
  jax_dtype, torch_dtype = jnp.dtype(args.dtype), getattr(torch, args.dtype)
  jax_args = (jnp.asarray(x0, jax_dtype), [jnp.asarray(w, jax_dtype) for w in weights])
  torch_args = (torch.from_numpy(x0).to(torch_dtype), [torch.from_numpy(w).to(torch_dtype) for w in weights])
  sides = {"jax": lambda: jitted(*jax_args).block_until_ready(), "torch": lambda: torch_gemms(*torch_args)}
  times = {name: [] for name in sides}
  with torch.inference_mode():
    for run in sides.values():
      run()  # Compilation / first call.
    for _ in range(args.repeats):
      for name, run in sides.items():
        start = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - start)
  print(f"MiniLM GEMMs only, batch {b} x {length} tokens, {args.dtype}, {args.threads} threads, "
        f"{flops / 1e9:.0f} GFLOP per batch (jax {jax.__version__}, torch {torch.__version__})")
  for name, ts in times.items():
    best = min(ts)
    print(f"{name:5s}: best {best:.3f} s = {flops / best / 1e9:.1f} GFLOP/s = {b / best:.1f} docs/s")


if __name__ == "__main__":
  main()
