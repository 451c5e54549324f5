"""SciFact (BEIR test split) with the packaged all-MiniLM-L6-v2: our encoder vs sentence-transformers'
embeddings under the same exact search, and ScaNN (brute force and tree + AH) vs exact search.

  .venv/bin/python benchmarks/scifact_reproduction.py [--output scifact.json] [--no-torch]

Encoding 5,183 abstracts takes minutes on 2 CPU cores (twice with --torch, the default).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map", "ann_recall@10", "search_seconds")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dir", default=os.path.join(REPO, "data", "retrieval", "scifact"))
  parser.add_argument("--output", default=None)
  parser.add_argument("--no-torch", action="store_true", help="skip the sentence-transformers side")
  args = parser.parse_args()

  from neuralir_jax import config_lib, data, evaluate
  from neuralir_jax.encoder import load_encoder
  path = config_lib.resolve_model_path("minilm")
  corpus, queries, qrels = data.load_beir(args.dir, "test")
  ours = load_encoder(path)
  tic = time.perf_counter()
  encode = evaluate.memoized(lambda t: ours.encode(t, batch_size=64))
  encode(list(queries.values()))
  encode(list(corpus.values()))
  results = {"ours_encode_seconds": time.perf_counter() - tic}
  results["ours/exact"] = evaluate.evaluate_retrieval(encode, corpus, queries, qrels, index="exact")
  results["ours/scann_default"] = evaluate.evaluate_retrieval(encode, corpus, queries, qrels, index="scann")
  results["ours/scann_tree_ah"] = evaluate.evaluate_retrieval(encode, corpus, queries, qrels, index="scann",
                                                              scann_config={"mode": "tree_ah"})
  if not args.no_torch:
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(path, device="cpu")
    tic = time.perf_counter()
    st_encode = evaluate.memoized(lambda t: st.encode(t, batch_size=64))
    st_encode(list(queries.values()))
    st_encode(list(corpus.values()))
    results["st_encode_seconds"] = time.perf_counter() - tic
    results["sentence_transformers/exact"] = evaluate.evaluate_retrieval(st_encode, corpus, queries, qrels,
                                                                         index="exact")
  print(f"SciFact test: {len(corpus)} docs, {len(qrels)} queries")
  print(f"{'run':<32}" + "".join(f"{k:>15}" for k in KEYS))
  for name, r in results.items():
    if isinstance(r, dict):
      print(f"{name:<32}" + "".join(f"{r[k]:>15.4f}" if isinstance(r.get(k), float) else f"{'-':>15}" for k in KEYS))
  for k in ("ours_encode_seconds", "st_encode_seconds"):
    if k in results:
      print(f"{k}: {results[k]:.1f}")
  if args.output:
    with open(args.output, "w") as f:
      json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
  main()
