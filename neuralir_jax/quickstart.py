"""`make quickstart`: evaluate -> fine-tune on 8 virtual devices -> evaluate -> export -> check in PyTorch.

  python -m neuralir_jax.quickstart --workdir workdirs/quickstart

1. Evaluates the packaged all-MiniLM-L6-v2 on STS-B test and on Cranfield with exact search and ScaNN.
2. Fine-tunes it with `configs/quickstart.py` (NLI softmax head + InfoNCE with global and hard negatives)
   on 8 virtual CPU devices; the run resumes if interrupted.
3. Evaluates the fine-tuned encoder the same way, plus the softmax head's accuracy on SNLI test.
4. Exports it to WORKDIR/export and checks that sentence-transformers and transformers load it and give
   our embeddings.
5. Prints a before/after table (also written to WORKDIR/quickstart.json).

SciFact (5,183 long abstracts) takes minutes to encode on 2 cores, so it is one command away:
  neuralir eval --model WORKDIR --task beir:data/retrieval/scifact --index scann --output scifact.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STS_TASK = "sts:data/sts/stsb_test.tsv.gz"
BEIR_TASK = "beir:data/retrieval/cranfield"
NLI_TASK = "nli:data/nli/snli_test.jsonl.gz"
# Cranfield has 1,400 documents, below the brute-force threshold: force the tree + AH index so the table
# shows ScaNN's approximation (ann_recall@10) rather than brute force.
SCANN_CONFIG = {"mode": "tree_ah"}
ROWS = (("STS-B test Spearman", "sts", "spearman"),
        ("Cranfield nDCG@10 (exact)", "exact", "ndcg@10"),
        ("Cranfield recall@100 (exact)", "exact", "recall@100"),
        ("Cranfield nDCG@10 (ScaNN)", "scann", "ndcg@10"),
        ("Cranfield ann_recall@10 (ScaNN)", "scann", "ann_recall@10"),
        ("SNLI test accuracy (softmax head)", "nli", "accuracy"))


def evaluate_encoder(encoder) -> dict[str, dict]:
  """STS-B, Cranfield with exact search and with ScaNN (one encoding of the corpus), and SNLI accuracy of
  the softmax head when the encoder has one; through the evaluation every neuralir command uses."""
  from neuralir_jax import evaluate
  cache: dict = {}
  run = lambda task, **kw: evaluate.evaluate_tasks(encoder, [task], encode_cache=cache, **kw)[task]  # noqa: E731
  out = {"sts": run(STS_TASK), "exact": run(BEIR_TASK, index="exact"),
         "scann": run(BEIR_TASK, index="scann", scann_config=SCANN_CONFIG)}
  if encoder.nli_head is not None:
    out["nli"] = run(NLI_TASK)
  return out


def check_export(encoder, export_dir: str) -> dict[str, float]:
  """Loads the export with sentence-transformers and transformers; returns agreement figures."""
  import numpy as np
  from sentence_transformers import SentenceTransformer
  from transformers import BertModel
  sentences = ["A man is playing a guitar.", "Two dogs run across a snowy field.",
               "The committee postponed its decision until next spring.", "¿Dónde está la biblioteca?"]
  ours = encoder.encode(sentences)
  theirs = SentenceTransformer(export_dir, device="cpu").encode(sentences)
  cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
  _, info = BertModel.from_pretrained(export_dir, output_loading_info=True)
  bad_keys = sum(len(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  return {"min_cosine_vs_sentence_transformers": float(cos.min()), "bad_keys": bad_keys}


def format_table(before: dict, after: dict) -> str:
  lines = [f"{'metric':<36} {'before':>8} {'after':>8} {'change':>8}", "-" * 63]
  for label, task, key in ROWS:
    b = before.get(task, {}).get(key)
    a = after.get(task, {}).get(key)
    fmt = lambda v: f"{v:8.4f}" if isinstance(v, (int, float)) else f"{'-':>8}"  # noqa: E731
    change = f"{a - b:+8.4f}" if isinstance(a, float) and isinstance(b, float) else f"{'':>8}"
    lines.append(f"{label:<36} {fmt(b)} {fmt(a)} {change}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="workdirs/quickstart")
  parser.add_argument("--config", default=os.path.join(REPO, "configs", "quickstart.py"))
  args, overrides = parser.parse_known_args(argv)
  os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")  # Read by distributed.setup() below.
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets", "grain"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  os.chdir(REPO)  # Task and data paths are relative to the repository.
  from neuralir_jax import distributed
  distributed.setup()
  import jax
  from neuralir_jax import config_lib, encoder as encoder_lib, train

  timings = {}
  tic = time.perf_counter()
  print(f"== 1/4 evaluating the packaged all-MiniLM-L6-v2 on {jax.device_count()} devices", flush=True)
  before = evaluate_encoder(encoder_lib.load_encoder(config_lib.resolve_model_path("minilm")))
  timings["evaluate_before_s"] = time.perf_counter() - tic

  print("== 2/4 fine-tuning (NLI softmax + InfoNCE, global negatives)", flush=True)
  tic = time.perf_counter()
  config = config_lib.apply_overrides(config_lib.load_config(args.config), overrides, source=args.config)
  final = train.train(config, args.workdir)
  timings["train_s"] = time.perf_counter() - tic

  print("== 3/4 evaluating the fine-tuned encoder", flush=True)
  tic = time.perf_counter()
  tuned = encoder_lib.load_encoder(args.workdir)
  after = evaluate_encoder(tuned)
  timings["evaluate_after_s"] = time.perf_counter() - tic

  print("== 4/4 exporting to PyTorch and checking it there", flush=True)
  export_dir = os.path.join(args.workdir, "export")
  tuned.save_pretrained(export_dir)  # Refuses a foreign directory; replaces an earlier export of ours.
  export_check = check_export(tuned, export_dir)

  table = format_table(before, after)
  print("\n" + table)
  print(f"\ntraining: {final.get('examples_per_second', float('nan')):.1f} examples/s, "
        f"MFU {final.get('mfu', float('nan')):.3f} (last logged window)")
  print(f"export: {export_dir} | min cosine vs sentence-transformers "
        f"{export_check['min_cosine_vs_sentence_transformers']:.6f} | missing/unexpected keys "
        f"{export_check['bad_keys']}")
  print("timings: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
  with open(os.path.join(args.workdir, "quickstart.json"), "w") as f:
    json.dump({"before": before, "after": after, "train": final, "export": export_check,
               "timings": timings}, f, indent=2, default=str)
  ok = export_check["min_cosine_vs_sentence_transformers"] >= 0.9999 and export_check["bad_keys"] == 0
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
