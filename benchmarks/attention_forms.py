"""Inference attention on this CPU: the form `model.BertLayer` uses vs softmax-then-matmul vs PyTorch's SDPA.

MiniLM's attention at the shapes `Encoder.encode` runs on CPU (`model.inference_chunk`: 4 texts of 256 tokens
per `lax.map` step, 12 heads of 32), 16 steps, fp32, a padding bias on the last keys:

- deferred: `model.attention`, which `model.BertLayer` runs: (exp(s - max) @ v) / sum(exp(s - max)), the
  scale on q;
- softmax: softmax(s * scale + bias) @ v (the form before, and BERT's);
- jax.nn.dot_product_attention (implementation="xla");
- torch: `torch.nn.functional.scaled_dot_product_attention`, the same 16 steps, same threads.

Prints GFLOP/s of the two matmuls (4 * L^2 * H per head) and the largest difference from the softmax form.

  .venv/bin/python benchmarks/attention_forms.py [--threads 2 --length 256 --rows 4]
"""

import argparse
import os
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--rows", type=int, default=4, help="Texts per lax.map step.")
  parser.add_argument("--steps", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={args.threads}")
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  sys.path.insert(0, _REPO)
  from neuralir_jax import model

  torch.set_num_threads(args.threads)
  steps, rows, heads, length, head_dim = args.steps, args.rows, 12, args.length, 32
  rng = np.random.default_rng(0)
  q, k, v = (rng.standard_normal((steps, rows, heads, length, head_dim)).astype(np.float32) for _ in range(3))
  bias = np.zeros((steps, rows, 1, 1, length), np.float32)
  bias[..., length - 6:] = -1e9  # A few padded keys per text.
  flops = steps * rows * heads * 4 * length * length * head_dim
  scale = head_dim ** -0.5

  def softmax(q, k, v, b):
    return jnp.matmul(jax.nn.softmax(jnp.matmul(q, k.swapaxes(-1, -2)) * scale + b, axis=-1), v)

  def dpa(q, k, v, b):
    out = jax.nn.dot_product_attention(q.swapaxes(1, 2), k.swapaxes(1, 2), v.swapaxes(1, 2), bias=b,
                                       implementation="xla")
    return out.swapaxes(1, 2)

  def best(run):
    run()  # Compilation / first call.
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      run()
      times.append(time.perf_counter() - start)
    return min(times)

  inputs = tuple(jnp.asarray(x) for x in (q, k, v, bias))
  outputs = {}
  print(f"attention, {steps} steps x {rows} texts x {heads} heads x {length}^2 scores, head dim {head_dim}, fp32, "
        f"{args.threads} threads (jax {jax.__version__}, torch {torch.__version__})")
  for name, form in (("deferred (ours)", model.attention), ("softmax", softmax), ("dot_product_attention", dpa)):
    fn = jax.jit(lambda *xs, form=form: jax.lax.map(lambda x: form(*x), xs))
    seconds = best(lambda fn=fn: fn(*inputs).block_until_ready())
    outputs[name] = np.asarray(fn(*inputs))
    print(f"{name:22s} {flops / seconds / 1e9:6.1f} GFLOP/s ({seconds * 1e3:.1f} ms)")
  tq, tk, tv, tb = (torch.from_numpy(x) for x in (q, k, v, bias))

  def torch_sdpa():
    return [torch.nn.functional.scaled_dot_product_attention(tq[i], tk[i], tv[i], attn_mask=tb[i])
            for i in range(steps)]

  with torch.inference_mode():
    seconds = best(torch_sdpa)
    outputs["torch sdpa"] = torch.stack(torch_sdpa()).numpy()
  print(f"{'torch sdpa':22s} {flops / seconds / 1e9:6.1f} GFLOP/s ({seconds * 1e3:.1f} ms)")
  for name, out in outputs.items():
    print(f"max |{name} - softmax| = {np.abs(out - outputs['softmax']).max():.2e}")


if __name__ == "__main__":
  main()
