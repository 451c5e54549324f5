"""Where a neuralir_jax train step's time goes: parts of the step timed alternately in one process.

Same setup as train_throughput.py (all-MiniLM-L6-v2 fp32, `--batch-size` triplets x `--max-length` tokens,
InfoNCE with hard negatives, dropout 0.1, AdamW). Each part is a separately jitted function; `--rounds`
rounds time every part `--steps` times in turn (order rotating), so all parts see the same background load;
the median per call of each part is printed, and its share of the full step.

  .venv/bin/python benchmarks/train_step_profile.py --steps 2 --rounds 5
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as tt  # noqa: E402


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--max-length", type=int, default=64)
  parser.add_argument("--steps", type=int, default=2, help="Calls per part per round.")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--parts", default="", help="Comma-separated subset of parts (default: all).")
  parser.add_argument("--xla-flags", default="")
  return parser.parse_args()


def make_parts(args):
  """name -> zero-argument callable that runs the part once and blocks on its result."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  from neuralir_jax import bi_encoder, optimizer, steps

  def side(dropout: float):
    config = tt.make_config(argparse.Namespace(**dict(vars(args), model="minilm", dtype="float32",
                                                      data="nli:data/nli/train_sample.jsonl.gz")), 100)
    config.model.dropout_rate = dropout
    return bi_encoder.resolve_model(config)  # (config with MiniLM's architecture, tokenizer, params).

  config, tokenizer, pretrained = side(0.1)
  batches = tt.load_batches(config, tokenizer, 4)
  full = tt.JaxSide(config, pretrained)
  config0 = ml_collections.ConfigDict(config.to_dict())
  config0.model.dropout_rate = 0.0
  nodrop = tt.JaxSide(config0, pretrained)
  gbatch = {k: jnp.asarray(v) for k, v in batches[0].items()}
  parts = {}
  counter = [0]

  def run_step(s):
    def fn():
      counter[0] += 1
      s.step(batches[counter[0] % len(batches)])
      s.sync()
    return fn

  parts["step dropout 0.1"] = run_step(full)
  # Baseline: the same step with flax's threefry nn.Dropout swapped in for model.Dropout while it traces.
  from neuralir_jax import model as model_lib
  import flax.linen as nn
  flax_side = tt.JaxSide(config, pretrained)
  flax_step = run_step(flax_side)

  def flax_dropout_step():
    hashed, model_lib.Dropout = model_lib.Dropout, lambda rate: _FlaxDropout(nn, rate)
    try:
      flax_step()
    finally:
      model_lib.Dropout = hashed

  parts["step dropout 0.1, flax nn.Dropout"] = flax_dropout_step
  parts["step dropout 0"] = run_step(nodrop)

  grad_fn = jax.jit(steps.grad_fn_pjit(full.family, full.mesh))
  params = jax.tree.map(jnp.copy, full.state.params)
  rng = jax.random.key(1)
  parts["grad only, dropout 0.1"] = lambda: jax.block_until_ready(grad_fn(params, gbatch, rng))
  grad_fn0 = jax.jit(steps.grad_fn_pjit(nodrop.family, nodrop.mesh))
  parts["grad only, dropout 0"] = lambda: jax.block_until_ready(grad_fn0(params, gbatch, rng))

  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  opt_state = tx.init(params)
  apply = jax.jit(lambda p, o, g: steps._apply(tx, schedule, steps.TrainState(jnp.int32(5), p, o, rng),
                                               jnp.float32(0), {}, g))
  parts["optimizer update only"] = lambda: jax.block_until_ready(apply(params, opt_state, grads))

  # The word-embedding gradient alone: a gather of [B*R*L] rows and its transpose, a scatter-add into the
  # [vocab, D] table.
  ids = jnp.asarray(batches[0]["anchor_ids"]).repeat(3, axis=0)
  table = params["encoder"]["bert"]["word_embeddings"]["embedding"]
  cot = jax.random.normal(rng, ids.shape + (table.shape[1],))
  embed_grad = jax.jit(jax.grad(lambda t: (jnp.take(t, ids, axis=0) * cot).sum()))
  parts["word-embedding grad only"] = lambda: jax.block_until_ready(embed_grad(table))

  # Dropout masks alone: as many bernoulli draws as one step makes (flax draws with the default key impl).
  bert = config.model.bert
  n = ids.size
  shapes = ([(n, bert.hidden_size)] * (1 + 2 * bert.num_hidden_layers)
            + [(ids.shape[0], bert.num_attention_heads, ids.shape[1], ids.shape[1])] * bert.num_hidden_layers)
  def masks(key):
    keys = jax.random.split(key, len(shapes))
    return [jax.random.bernoulli(k, 0.9, s) for k, s in zip(keys, shapes)]
  masks_jit = jax.jit(masks)
  from neuralir_jax.model import _hash32
  def hash_masks(key):
    seeds = jax.random.bits(key, (len(shapes),), jnp.uint32)
    return [_hash32(jax.lax.iota(jnp.uint32, math.prod(s)).reshape(s) ^ seed) >= jnp.uint32(429496730)
            for seed, s in zip(seeds, shapes)]
  hash_jit = jax.jit(hash_masks)
  parts["dropout masks only (hash)"] = lambda: jax.block_until_ready(hash_jit(rng))
  parts["dropout masks only (threefry)"] = lambda: jax.block_until_ready(masks_jit(rng))
  rbg = jax.random.key(1, impl="rbg")
  parts["dropout masks only (rbg)"] = lambda: jax.block_until_ready(masks_jit(rbg))
  if args.parts:
    wanted = args.parts.split(",")
    parts = {k: v for k, v in parts.items() if any(w in k for w in wanted)}
  return parts


def _FlaxDropout(nn, rate):  # Called with model.Dropout's signature: (rate)(x, deterministic=...).
  return nn.Dropout(rate)


def main() -> None:
  args = _parse()
  tt._setup_threads(len(os.sched_getaffinity(0)), args.xla_flags)
  sys.path.insert(0, tt._REPO)
  parts = make_parts(args)
  for fn in parts.values():  # Compile and warm up.
    fn()
    fn()
  times = {name: [] for name in parts}
  names = list(parts)
  for r in range(args.rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      tic = time.perf_counter()
      for _ in range(args.steps):
        parts[name]()
      times[name].append((time.perf_counter() - tic) / args.steps)
  full = statistics.median(times[names[0]])
  for name in names:
    med = statistics.median(times[name])
    print(f"{name:34s} median {med * 1e3:8.1f} ms  best {min(times[name]) * 1e3:8.1f} ms  "
          f"{med / full * 100:5.1f}% of '{names[0]}'")


if __name__ == "__main__":
  main()
