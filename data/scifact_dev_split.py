"""Carves a dev split out of SciFact's train queries (SciFact has no dev split), for model selection:

  python data/scifact_dev_split.py    # writes data/retrieval/scifact/qrels/{train80,dev20}.tsv

20% of the train queries (seeded, whole queries: all qrels rows of a query go to the same side) become
`dev20`, the rest `train80`. Mine and train on beir:data/retrieval/scifact:train80, choose on :dev20, and
report :test once per choice. The output is deterministic; the bundled files are this script's output.
"""

import os
import random

QRELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "retrieval", "scifact", "qrels")


def main(dev_fraction: float = 0.2, seed: int = 0) -> None:
  with open(os.path.join(QRELS, "train.tsv"), encoding="utf-8") as f:
    header, *rows = f.read().splitlines()
  queries = sorted({row.split("\t")[0] for row in rows}, key=lambda q: (len(q), q))
  dev = set(random.Random(seed).sample(queries, round(dev_fraction * len(queries))))
  for name, keep in (("dev20", True), ("train80", False)):
    kept = [row for row in rows if (row.split("\t")[0] in dev) == keep]
    with open(os.path.join(QRELS, f"{name}.tsv"), "w", encoding="utf-8") as f:
      f.write("\n".join([header, *kept]) + "\n")
    print(f"{name}: {len({r.split(chr(9))[0] for r in kept})} queries, {len(kept)} qrels rows")


if __name__ == "__main__":
  main()
