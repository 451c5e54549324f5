"""Accelerator check: bf16 InfoNCE train steps of a BERT-base-size encoder, and encode throughput.

A random-init BERT-base (12 layers, 768 wide, 12 heads, 3,072 MLP, vocab 30,522) computing in bf16 (params
fp32), trained with InfoNCE over (anchor, positive) pairs with global negatives, sequence length 128 and
random token ids (no data files, no network), using neuralir_jax's real train step (`steps.make_train_step`
over all local devices, AdamW). The largest global batch from `--batches` that compiles and runs is kept
(out-of-memory falls through to the next); `--steps` steps are timed after warm-up and reported as
examples/s, tokens/s and MFU against the chip's peak (`flops.peak_flops_per_device`). Then the encoder's
forward (`Encoder.embed_fn`, bf16, deterministic) is timed at the same length: sentences/s. Between them,
the packed path: the same texts of NLI-like lengths (3..seq_len tokens, mean ~seq_len / 5) trained as padded
batches (every text padded to seq_len) and as packed rows (`packing.pack_per_device`, data.packing), both
timed at `--packing-batch`: examples/s, padding fraction and MFU of the real tokens, and the ratio.
Last, the largest global batch of the same encoder's train step (GradCache on, `--large-chunk` examples per
chunk, `--large-seq-len` tokens) that fits in the accelerator's memory, for tiled InfoNCE and for dense: each
compiled at the `--large-batches` sizes, largest first, until XLA's memory analysis of the step (arguments +
outputs + temporaries) is under the device's limit; then one step of each at `--large-time-batch` (at most
dense's largest) is run and timed, so the report holds both maxima and the tiled / dense time at equal batch.

  python benchmarks/gpu_bench.py            # on a GPU/TPU host (benchmarks/gpu_check.sh installs and runs it)
  python benchmarks/gpu_bench.py --smoke    # tiny model, 2 steps: checks the script on CPU

Output goes to stdout and, when $OUT is set, to $OUT/gpu_check.txt.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512)
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=64)


class Log:
  """print() that also appends to $OUT/gpu_check.txt."""

  def __init__(self):
    out = os.environ.get("OUT")
    if out:
      os.makedirs(out, exist_ok=True)
    self.file = open(os.path.join(out, "gpu_check.txt"), "a") if out else None

  def __call__(self, *parts: Any) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    if self.file:
      self.file.write(line + "\n")
      self.file.flush()


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--smoke", action="store_true", help="Tiny model, small batches, 2 steps (CPU check).")
  parser.add_argument("--batches", default="1024,512,256,128,64", help="Global batches to try, largest first.")
  parser.add_argument("--seq-len", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10, help="Timed train steps.")
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  parser.add_argument("--remat", action="store_true", help="Recompute layers in the backward pass.")
  parser.add_argument("--packing-batch", type=int, default=512,
                      help="Global batch of the packed-vs-padded comparison (at most the largest that fits).")
  parser.add_argument("--large-batches", default="524288,131072,32768,8192",
                      help="Global batches tried for the largest that fits with GradCache, largest first.")
  parser.add_argument("--large-chunk", type=int, default=256, help="GradCache examples per device per chunk.")
  parser.add_argument("--large-seq-len", type=int, default=64)
  parser.add_argument("--large-time-batch", type=int, default=16384,
                      help="Global batch at which one tiled and one dense step are timed.")
  parser.add_argument("--memory-limit-gib", type=float, default=0.0,
                      help="Device memory to fit in (0: the device's bytes_limit; required on CPU).")
  parser.add_argument("--encode-batch", type=int, default=1024, help="Sentences per encode call.")
  parser.add_argument("--encode-calls", type=int, default=20, help="Timed encode calls.")
  parser.add_argument("--sections", default="train,packing,encode,large",
                      help="Comma-separated parts to run: train, packing (at most train's batch; without train at "
                           "--packing-batch), encode, large.")
  args = parser.parse_args()
  args.sections = set(args.sections.split(","))
  unknown = args.sections - {"train", "packing", "encode", "large"}
  if unknown:
    parser.error(f"--sections: unknown {sorted(unknown)}; use train, packing, encode, large")
  if args.smoke:
    args.batches, args.seq_len, args.steps = "64,16", 16, 2
    args.encode_batch, args.encode_calls, args.packing_batch = 16, 2, 16
    args.large_batches, args.large_chunk, args.large_seq_len = "65536,16384,4096,1024", 64, 16
    args.large_time_batch, args.memory_limit_gib = 1024, args.memory_limit_gib or 0.25
  return args


def make_config(args: argparse.Namespace, batch_size: int):
  from configs import common
  c = common.base_config()
  c.num_steps = 1000
  c.batch_size = batch_size
  c.model.init = "random"
  c.model.bert.update(TINY if args.smoke else BERT_BASE)
  c.model.dtype = args.dtype
  c.model.remat = args.remat
  c.model.max_seq_length = args.seq_len
  c.objectives.nli_softmax = 0.0
  c.objectives.infonce = 1.0
  c.infonce.hard_negatives = False  # (anchor, positive) pairs; every other positive is a negative.
  c.negatives = "global"
  c.optimizer.warmup_fraction = 0.0
  return c


def random_batch(rng, batch_size: int, seq_len: int, vocab: int) -> dict:
  """Random token ids with [CLS] ... [SEP], every position real (mask all ones): worst-case length."""
  import numpy as np
  batch = {}
  for column in ("anchor", "positive"):
    ids = rng.integers(1000 if vocab > 2000 else 3, vocab, (batch_size, seq_len), dtype=np.int32)
    ids[:, 0], ids[:, -1] = 101 % vocab, 102 % vocab
    batch[f"{column}_ids"] = ids
    batch[f"{column}_mask"] = np.ones((batch_size, seq_len), np.int32)
  return batch


def _is_oom(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def _time_train(config, batches: list[dict], steps_timed: int, log=None, name: str = "") -> dict:
  """Compiles the train step on batches[0], warms up one more step, then times steps_timed steps (the
  batches on device first: the step is timed, not transfers). With `log`, each phase is logged as it ends
  (a time limit then shows where the time went)."""
  import jax
  from neuralir_jax import bi_encoder, optimizer, sharding, steps
  mesh = sharding.make_mesh()
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
  family = bi_encoder.BiEncoder(config)
  batches = [sharding.make_global_batch(b, mesh) for b in batches]
  state = None
  try:
    state, shardings = steps.create_train_state(family, jax.random.key(0), mesh, tx)
    step = steps.make_train_step(family, mesh, tx, shardings, schedule)
    if log:
      log(f"{name}: state created, compiling the step")
    tic = time.perf_counter()
    for i in range(2):  # Compilation (of each batch shape), then one more warm step.
      state, metrics = step(state, batches[i % len(batches)])
      if log:
        jax.block_until_ready(metrics)
        log(f"{name}: warm-up step {i} done at {time.perf_counter() - tic:.1f}s")
    loss0 = float(jax.device_get(metrics["loss"]))
    warm_s = time.perf_counter() - tic
    tic = time.perf_counter()
    for i in range(steps_timed):
      state, metrics = step(state, batches[i % len(batches)])
    loss = float(jax.device_get(metrics["loss"]))
    seconds = (time.perf_counter() - tic) / steps_timed
  finally:
    del state
    jax.clear_caches()
  return dict(seconds=seconds, warm_s=warm_s, loss0=loss0, loss=loss, config=config, devices=mesh.size,
              negatives=float(jax.device_get(metrics["negatives_per_query"])))


def try_batch(args, batch_size: int, log: Log) -> dict | None:
  """Compiles and times the train step at one global batch; None when it does not fit in memory."""
  import numpy as np
  config = make_config(args, batch_size)
  rng = np.random.default_rng(0)
  batches = [random_batch(rng, batch_size, args.seq_len, config.model.bert.vocab_size) for _ in range(2)]
  try:
    result = _time_train(config, batches, args.steps)
  except Exception as e:  # noqa: BLE001 -- XLA reports OOM as a runtime error at compile or run time.
    if not _is_oom(e):
      raise
    log(f"global batch {batch_size}: out of memory ({type(e).__name__}), trying a smaller one")
    return None
  return dict(result, batch_size=batch_size)


def variable_length_batches(rng, batch_size: int, seq_len: int, vocab: int, num_devices: int):
  """Two batches of texts with NLI-like lengths (log-normal around seq_len / 5, 3..seq_len tokens), as
  (padded to seq_len, packed per device into rows of seq_len) pairs, plus the real and computed tokens."""
  import numpy as np
  from neuralir_jax import packing
  padded, packed, counts = [], [], [0, 0, 0]
  for _ in range(2):
    lengths = np.clip(np.round(rng.lognormal(np.log(seq_len / 5), 0.5, (2, batch_size))), 3, seq_len).astype(int)
    texts = [[101 % vocab] + rng.integers(3, vocab, n - 2).tolist() + [102 % vocab] for n in lengths.reshape(-1)]
    batch = {}
    for c, column in enumerate(("anchor", "positive")):
      ids = np.zeros((batch_size, seq_len), np.int32)
      for i, t in enumerate(texts[c * batch_size:(c + 1) * batch_size]):
        ids[i, :len(t)] = t
      batch[f"{column}_ids"], batch[f"{column}_mask"] = ids, (ids > 0).astype(np.int32)
    padded.append(batch)
    device_N = np.tile(np.arange(batch_size) // (batch_size // num_devices), 2)
    rows = packing.pack_per_device(texts, device_N, num_devices, seq_len, packing.default_slots(seq_len))
    index = rows.index_N.reshape(2, batch_size)
    packed.append({"packed_tokens": rows.ids_RxL, "packed_segments": rows.segment_ids_RxL,
                   "anchor_slot": index[0], "positive_slot": index[1]})
    counts[0] += int(lengths.sum())
    counts[1] += 2 * batch_size * seq_len
    counts[2] += rows.ids_RxL.size
  return padded, packed, counts


def bench_packing(args, batch_size: int, log: Log) -> None:
  """The same variable-length texts as padded batches and as packed rows: train step examples/s of both."""
  import jax
  import numpy as np
  from neuralir_jax import flops
  config = make_config(args, batch_size)
  tic = time.perf_counter()
  padded, packed, (real, padded_positions, packed_positions) = variable_length_batches(
      np.random.default_rng(2), batch_size, args.seq_len, config.model.bert.vocab_size, jax.device_count())
  log(f"packing: 2 batches of {batch_size} pairs built and packed into {packed[0]['packed_tokens'].shape[0]} and "
      f"{packed[1]['packed_tokens'].shape[0]} rows in {time.perf_counter() - tic:.1f}s")
  lengths = np.concatenate([b[f"{c}_mask"].sum(-1) for b in padded for c in ("anchor", "positive")])
  step_flops = (flops.encoder_flops(config_bert(config), lengths) / len(padded)
                + flops.contrastive_flops_per_step(batch_size, batch_size, config.model.bert.hidden_size))
  peak = flops.peak_flops_per_device(jax.devices()[0], cpu_peak=config.cpu_peak_flops)
  results = {}
  for name, batches, positions in (("padded", padded, padded_positions), ("packed", packed, packed_positions)):
    r = results[name] = _time_train(config, batches, args.steps, log, f"packing: {name}")  # Logged when done.
    mfu = flops.mfu(step_flops, r["seconds"], r["devices"], peak)
    log(f"packing: {name}, global batch {batch_size} pairs of 3..{args.seq_len} tokens (mean "
        f"{real / len(lengths):.1f}), padding {1 - real / positions:.3f}: {r['seconds'] * 1e3:.1f} ms/step, "
        f"{batch_size / r['seconds']:,.0f} examples/s, {real / len(padded) / r['seconds']:,.0f} real tokens/s, "
        f"MFU (real tokens) {'n/a' if mfu is None else f'{mfu * 100:.1f}%'}; loss {r['loss0']:.4f} -> {r['loss']:.4f}"
        f"; first 2 steps (compile) {r['warm_s']:.1f}s")
  log(f"packing: packed / padded examples/s {results['padded']['seconds'] / results['packed']['seconds']:.2f}x")


def _memory_limit(args) -> int | None:
  import jax
  if args.memory_limit_gib:
    return int(args.memory_limit_gib * 2**30)
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("bytes_limit")


def large_config(args, batch_size: int, implementation: str):
  config = make_config(args, batch_size)
  config.model.max_seq_length = args.large_seq_len
  config.grad_cache.chunk_size = args.large_chunk
  config.infonce.implementation = implementation
  config.infonce.block_size = 4096
  return config


def step_memory(args, batch_size: int, implementation: str) -> int | None:
  """Bytes XLA's memory analysis gives one train step (state and batch in, state out, temporaries) on
  each device; None when compiling runs out of memory."""
  import jax
  import jax.numpy as jnp
  from neuralir_jax import bi_encoder, optimizer, sharding, steps
  config = large_config(args, batch_size, implementation)
  mesh = sharding.make_mesh()
  family = bi_encoder.BiEncoder(config)
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
  state, shardings = steps.create_train_state(family, jax.random.key(0), mesh, tx)
  text = jax.ShapeDtypeStruct((batch_size, args.large_seq_len), jnp.int32, sharding=sharding.batch_sharding(mesh))
  batch = {f"{c}_{kind}": text for c in ("anchor", "positive") for kind in ("ids", "mask")}
  step = steps.make_train_step(family, mesh, tx, shardings, schedule)
  try:
    memory = step.jitted.lower(state, batch).compile().memory_analysis()
  except Exception as e:  # noqa: BLE001 -- XLA may refuse a too-large buffer assignment at compile time.
    if _is_oom(e):
      return None
    raise
  finally:
    del state
    jax.clear_caches()
  return int(memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
             + memory.temp_size_in_bytes)


def bench_large_batch(args, log: Log) -> None:
  """The largest global batch that fits, tiled vs dense (GradCache on), and one timed step of each."""
  import jax
  import numpy as np
  limit = _memory_limit(args)
  if not limit:
    log("large batch: the device reports no memory limit; pass --memory-limit-gib")
    return
  batches = [int(b) for b in args.large_batches.split(",") if int(b) % jax.device_count() == 0]
  largest = {}
  for implementation in ("tiled", "dense"):
    for batch_size in batches:
      need = step_memory(args, batch_size, implementation)
      fits = need is not None and need <= limit
      log(f"large batch: {implementation}, global batch {batch_size}: step needs "
          f"{'more than the device (compile OOM)' if need is None else f'{need / 2**30:.2f} GiB'} of "
          f"{limit / 2**30:.2f} GiB per device: {'fits' if fits else 'does not fit'}")
      if fits:
        largest[implementation] = batch_size
        break
  log(f"large batch: largest global batch that fits, GradCache chunk {args.large_chunk} x {args.large_seq_len} "
      f"tokens: tiled {largest.get('tiled', 'none tried')}, dense {largest.get('dense', 'none tried')}")
  time_batch = min(args.large_time_batch, largest.get("dense", 0))
  if not time_batch:
    return
  rng = np.random.default_rng(3)
  seconds = {}
  for implementation in ("dense", "tiled"):
    config = large_config(args, time_batch, implementation)
    data = [random_batch(rng, time_batch, args.large_seq_len, config.model.bert.vocab_size)]
    result = _time_train(config, data, 1)
    seconds[implementation] = result["seconds"]
    log(f"large batch: {implementation} at global batch {time_batch}: {result['seconds'] * 1e3:.0f} ms/step, "
        f"{time_batch / result['seconds']:,.0f} examples/s; loss {result['loss0']:.4f} -> {result['loss']:.4f}")
  log(f"large batch: tiled / dense step time at global batch {time_batch}: "
      f"{seconds['tiled'] / seconds['dense']:.2f}x")


def config_bert(config):
  from neuralir_jax.model import BertConfig
  return BertConfig(**config.model.bert.to_dict())


def report_train(result: dict, args, log: Log) -> None:
  import jax
  from neuralir_jax import flops
  from neuralir_jax.model import BertConfig
  config, batch, seconds = result["config"], result["batch_size"], result["seconds"]
  bert = BertConfig(**config.model.bert.to_dict())
  step_flops = flops.train_flops_per_step(bert, [args.seq_len] * 2, batch, candidates_per_query=batch)
  peak = flops.peak_flops_per_device(jax.devices()[0], cpu_peak=config.cpu_peak_flops)
  mfu = flops.mfu(step_flops, seconds, result["devices"], peak)
  log(f"train: global batch {batch} pairs x {args.seq_len} tokens ({2 * batch} sequences/step), "
      f"{result['devices']} device(s), {args.dtype}{', remat' if args.remat else ''}, "
      f"{result['negatives']:.0f} negatives/query")
  log(f"train: first 2 steps (compile) {result['warm_s']:.1f}s; loss {result['loss0']:.4f} -> {result['loss']:.4f} "
      f"after {args.steps + 2} steps")
  log(f"train: {seconds * 1e3:.1f} ms/step, {batch / seconds:,.0f} examples/s, "
      f"{2 * batch * args.seq_len / seconds:,.0f} tokens/s, {step_flops / seconds / 1e12:.3g} model TFLOP/s, "
      f"MFU {'n/a (unknown peak)' if mfu is None else f'{mfu * 100:.1f}%'}"
      f"{'' if not peak else f' of {peak / 1e12:.3g} TFLOP/s per device'}")


def bench_encode(args, log: Log) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from neuralir_jax import flops
  from neuralir_jax.encoder import Encoder
  from neuralir_jax.model import encoder_config, init_params
  config = make_config(args, args.encode_batch)
  enc_config = encoder_config(config.model)
  params = jax.jit(init_params, static_argnums=0)(enc_config, jax.random.key(0))
  encoder = Encoder(enc_config, params, tokenizer=None, dtype=jnp.dtype(args.dtype))
  rows = encoder.batch_rows(args.encode_batch, args.encode_batch)
  batch = random_batch(np.random.default_rng(1), rows, args.seq_len, enc_config.bert.vocab_size)
  ids, mask = jax.device_put((batch["anchor_ids"], batch["anchor_mask"]), encoder._sharded)
  fn = encoder.embed_fn
  tic = time.perf_counter()
  jax.block_until_ready(fn(encoder.params, ids, mask))
  compile_s = time.perf_counter() - tic
  tic = time.perf_counter()
  for _ in range(args.encode_calls):
    out = fn(encoder.params, ids, mask)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - tic) / args.encode_calls
  fwd_flops = rows * (2 * flops.nonembedding_params(enc_config.bert) * args.seq_len
                      + 4 * enc_config.bert.num_hidden_layers * args.seq_len ** 2 * enc_config.bert.hidden_size)
  log(f"encode: batch {rows} x {args.seq_len} tokens, {args.dtype}, {len(encoder.devices)} device(s): "
      f"{seconds * 1e3:.1f} ms/call (compile {compile_s:.1f}s), {rows / seconds:,.0f} sentences/s, "
      f"{fwd_flops / seconds / 1e12:.3g} model TFLOP/s")


def main() -> None:
  args = _parse()
  log = Log()
  import jax
  dev = jax.devices()[0]
  log(f"gpu_bench {time.strftime('%Y-%m-%d %H:%M:%S')}: jax {jax.__version__}, {jax.device_count()} x "
      f"{dev.device_kind} ({dev.platform}){' [smoke: tiny model]' if args.smoke else ''}")
  if "packing" in args.sections and "train" not in args.sections:  # At --packing-batch, no search for the largest.
    bench_packing(args, args.packing_batch, log)
  if "train" in args.sections:
    result = None
    for batch_size in (int(b) for b in args.batches.split(",")):
      if batch_size % jax.device_count():
        continue
      result = try_batch(args, batch_size, log)
      if result is not None:
        break
    if result is None:
      log(f"train: no global batch in {args.batches} fits; rerun with --remat or smaller --batches")
    else:
      report_train(result, args, log)
      if "packing" in args.sections:
        bench_packing(args, min(result["batch_size"], args.packing_batch), log)
  if "encode" in args.sections:
    bench_encode(args, log)
  if "large" in args.sections:
    bench_large_batch(args, log)


if __name__ == "__main__":
  main()
