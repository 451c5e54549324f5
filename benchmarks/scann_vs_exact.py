"""Exact search (matmul + top-k with JAX) vs ScaNN on the same embeddings: build time, queries/s, ann_recall@10.

  .venv/bin/python benchmarks/scann_vs_exact.py --num_docs 100000 --dim 384 --num_queries 1000
  .venv/bin/python benchmarks/scann_vs_exact.py --corpus corpus.npy --queries queries.npy \
      --scann_config '{"num_leaves_to_search": 64}'

Without `--corpus`, the corpus is random unit vectors (`--data random`: isotropic Gaussian, the hardest
case for any partitioning index) or clustered ones (`--data clustered`: points around random centres, closer
to real text embeddings); queries are drawn from the same distribution. With `--corpus` and no
`--queries`, the last `--num_queries` rows of the corpus are held out as queries. Exact search is timed
after a warm-up call (jit compilation excluded); ScaNN's build time is reported separately from its search.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from neuralir_jax import search  # noqa: E402


def make_data(kind: str, n: int, dim: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if kind == "random":
    x = rng.normal(size=(n, dim))
  elif kind == "clustered":
    centres = rng.normal(size=(max(2, int(np.sqrt(n))), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))
  else:
    raise ValueError(f"--data must be 'random' or 'clustered', got {kind!r}")
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def overlap_at_k(approx_QxK: np.ndarray, exact_QxK: np.ndarray) -> float:
  return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(approx_QxK, exact_QxK)]))


def run(corpus_NxD: np.ndarray, queries_QxD: np.ndarray, k: int, scann_config: dict) -> dict:
  num_q = len(queries_QxD)
  search.exact_search(queries_QxD, corpus_NxD, k)  # Warm-up: compiles the chunk step.
  t0 = time.perf_counter()
  _, exact_i = search.exact_search(queries_QxD, corpus_NxD, k)
  exact_s = time.perf_counter() - t0

  t0 = time.perf_counter()
  index = search.build_scann(corpus_NxD, {"num_neighbors": k, **scann_config})
  build_s = time.perf_counter() - t0
  search.scann_search(index, queries_QxD[:10], k)  # Warm-up.
  t0 = time.perf_counter()
  _, scann_i = search.scann_search(index, queries_QxD, k)
  scann_s = time.perf_counter() - t0
  return {
      "num_docs": len(corpus_NxD), "dim": corpus_NxD.shape[1], "num_queries": num_q, "k": k,
      "exact_seconds": exact_s, "exact_qps": num_q / exact_s,
      "scann_build_seconds": build_s, "scann_seconds": scann_s, "scann_qps": num_q / scann_s,
      "ann_recall@10": overlap_at_k(scann_i[:, :10], exact_i[:, :10]),
      "scann_params": index.params,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--corpus", help="corpus embeddings, .npy [N, D]; default: synthetic")
  parser.add_argument("--queries", help="query embeddings, .npy [Q, D]; default: held out / synthetic")
  parser.add_argument("--data", default="random", help="synthetic data: random or clustered")
  parser.add_argument("--num_docs", type=int, default=100_000)
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--num_queries", type=int, default=1000)
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--scann_config", default="{}", help="JSON dict overriding search.SCANN_DEFAULTS")
  parser.add_argument("--output", help="write the figures as JSON here")
  args = parser.parse_args(argv)

  if args.corpus:
    corpus = np.load(args.corpus).astype(np.float32)
    if args.queries:
      queries = np.load(args.queries).astype(np.float32)
    else:
      corpus, queries = corpus[:-args.num_queries], corpus[-args.num_queries:]
  else:
    data = make_data(args.data, args.num_docs + args.num_queries, args.dim, args.seed)
    corpus, queries = data[:args.num_docs], data[args.num_docs:]
  out = run(corpus, queries, args.k, json.loads(args.scann_config))
  out["data"] = args.corpus or args.data
  print(f"data={out['data']} N={out['num_docs']} D={out['dim']} queries={out['num_queries']} k={out['k']}")
  print(f"{'method':<8} {'build_s':>9} {'search_s':>9} {'qps':>10} {'ann_recall@10':>14}")
  print(f"{'exact':<8} {'-':>9} {out['exact_seconds']:>9.3f} {out['exact_qps']:>10.0f} {1.0:>14.4f}")
  print(f"{'scann':<8} {out['scann_build_seconds']:>9.2f} {out['scann_seconds']:>9.3f} {out['scann_qps']:>10.0f} "
        f"{out['ann_recall@10']:>14.4f}")
  print("scann params:", json.dumps(out["scann_params"]))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
