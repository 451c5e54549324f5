"""PyLate loads `neuralir export --format pylate` and encodes as neuralir_jax does; neuralir_jax loads what
PyLate saves and encodes as PyLate does. Run by benchmarks/pylate_parity.sh, which builds the separate
PyLate environment (PyLate 1.6 pins sentence-transformers 5.3, this project needs 6.x).

  PYLATE_PYTHON pylate_parity.py pylate --model DIR --out F.npz   # in PyLate's environment: encode
  .venv/bin/python pylate_parity.py ours --model DIR --pylate F.npz  # here: encode alike, compare

Texts: the first --queries SciFact dev20 queries and --documents SciFact abstracts (full length, so
truncation and the skiplist are exercised). Printed: the largest absolute difference of any token vector
and of any MaxSim score, and the token counts (which must be equal).
"""

import argparse
import gzip
import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCIFACT = os.path.join(ROOT, "data", "retrieval", "scifact")


def texts(num_queries: int, num_documents: int) -> tuple[list[str], list[str]]:
  with open(os.path.join(SCIFACT, "qrels", "dev20.tsv")) as f:
    qids = list(dict.fromkeys(line.split("\t")[0] for line in list(f)[1:]))[:num_queries]
  with open(os.path.join(SCIFACT, "queries.jsonl")) as f:
    by_id = {r["_id"]: r["text"] for r in map(json.loads, f)}
  with gzip.open(os.path.join(SCIFACT, "corpus.jsonl.gz"), "rt") as f:
    docs = [(r["title"] + " " + r["text"]).strip() for r, _ in zip(map(json.loads, f), range(num_documents))]
  return [by_id[q] for q in qids], docs


def maxsim_matrix(q: list[np.ndarray], d: list[np.ndarray]) -> np.ndarray:
  return np.array([[float((a @ b.T).max(axis=1).sum()) for b in d] for a in q])


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("side", choices=("pylate", "ours"))
  p.add_argument("--model", required=True)
  p.add_argument("--out", help="pylate: the .npz to write")
  p.add_argument("--pylate", help="ours: PyLate's .npz")
  p.add_argument("--queries", type=int, default=50)
  p.add_argument("--documents", type=int, default=200)
  args = p.parse_args()
  queries, documents = texts(args.queries, args.documents)
  if args.side == "pylate":
    from pylate import models
    model = models.ColBERT(args.model, device="cpu")
    q = model.encode(queries, is_query=True, convert_to_numpy=True, batch_size=32)
    d = model.encode(documents, is_query=False, convert_to_numpy=True, batch_size=32)
    np.savez(args.out, **{f"q{i}": x for i, x in enumerate(q)}, **{f"d{i}": x for i, x in enumerate(d)})
    print(f"pylate: encoded {len(q)} queries, {len(d)} documents with {args.model}")
    return
  from neuralir_jax import colbert
  model = colbert.load_multi_vector(args.model)
  q, d = model.encode_query(queries), model.encode_document(documents)
  theirs = np.load(args.pylate)
  tq, td = [theirs[f"q{i}"] for i in range(len(q))], [theirs[f"d{i}"] for i in range(len(d))]
  shapes = all(a.shape == b.shape for a, b in zip(q + d, tq + td))
  vec = max(float(np.abs(a - b).max()) for a, b in zip(q + d, tq + td)) if shapes else float("nan")
  score = float(np.abs(maxsim_matrix(q, d) - maxsim_matrix(tq, td)).max()) if shapes else float("nan")
  tokens = sum(len(x) for x in d), sum(len(x) for x in td)
  print(f"{args.model}: {len(q)} queries x {len(d)} documents; token shapes equal: {shapes}; document tokens "
        f"ours {tokens[0]} / PyLate {tokens[1]}; max |vector diff| {vec:.2e}; max |MaxSim diff| {score:.2e}")
  if not shapes or vec > 1e-4 or score > 1e-3:
    raise SystemExit("PyLate and neuralir_jax disagree")


if __name__ == "__main__":
  main()
