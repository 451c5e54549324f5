"""The `neuralir` command: train, eval, encode, export, ablate.

  neuralir train --config configs/tiny.py --workdir W [--config.KEY=VALUE ...]
  neuralir eval --model DIR_OR_WORKDIR --task sts:FILE|beir:DIR[:SPLIT]|nli:FILE [--index scann|exact] --output F.json
  neuralir encode --model DIR --input FILE.txt --output FILE.npy
  neuralir export --model DIR | --workdir W [--step N] --output DIR
  neuralir ablate --config configs/ablation_negatives.py --workdir W [--config.KEY=VALUE ...]

Errors the user can fix (bad paths, keys, shapes) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# Before JAX is imported anywhere: honour JAX_NUM_CPU_DEVICES and quiet TensorFlow-datasets.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="neuralir", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)

  t = sub.add_parser("train", help="train an encoder (resumes from the workdir)")
  t.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  t.add_argument("--workdir", required=True)

  e = sub.add_parser("eval", help="evaluate a model directory or a training workdir")
  e.add_argument("--model", required=True, help="HF/sentence-transformers directory or training workdir")
  e.add_argument("--task", required=True, action="append",
                 help="sts:FILE.tsv[.gz] | beir:DIR[:SPLIT] | nli:FILE.jsonl[.gz]; repeatable")
  e.add_argument("--split", default=None, help="BEIR qrels split (overrides DIR:SPLIT)")
  e.add_argument("--index", default="exact", choices=("exact", "scann"))
  e.add_argument("--index-dir", default=None, help="where to save/reuse the ScaNN index")
  e.add_argument("--step", type=int, default=None, help="checkpoint step when --model is a workdir")
  e.add_argument("--batch-size", type=int, default=128)
  e.add_argument("--output", default=None, help="JSON file for the metrics")

  c = sub.add_parser("encode", help="embed one text per line into a .npy file")
  c.add_argument("--model", required=True)
  c.add_argument("--input", required=True)
  c.add_argument("--output", required=True)
  c.add_argument("--batch-size", type=int, default=64)
  c.add_argument("--step", type=int, default=None)

  x = sub.add_parser("export", help="write a PyTorch (transformers + sentence-transformers) directory")
  src = x.add_mutually_exclusive_group(required=True)
  src.add_argument("--model", help="HF/sentence-transformers directory")
  src.add_argument("--workdir", help="training workdir")
  x.add_argument("--step", type=int, default=None)
  x.add_argument("--output", required=True)

  a = sub.add_parser("ablate", help="large-batch negatives ablation: one run per setting")
  a.add_argument("--config", required=True)
  a.add_argument("--workdir", required=True)
  return p


def _load(path: str, step: int | None = None):
  """An Encoder from a model directory, or from a training workdir's checkpoint (latest or `step`)."""
  from neuralir_jax import encoder as encoder_lib
  return encoder_lib.load_encoder(path, step=step)


def _evaluate(args) -> dict:
  """Metrics of every --task for one model; NLI tasks use the workdir's trained softmax head."""
  from neuralir_jax import distributed, evaluate
  enc = _load(args.model, args.step)
  predict_fn = None
  if getattr(enc, "nli_head", None) is not None:
    from neuralir_jax import train
    predict_fn = train.nli_predict_fn(enc, enc.nli_head)
  results = {}
  for task in args.task:
    results[task] = evaluate.evaluate_task(
        lambda texts: distributed.encode_across_processes(
            lambda x: enc.encode(x, batch_size=args.batch_size), texts), task, split=args.split,
        index=args.index, index_dir=args.index_dir, predict_fn=predict_fn)
  return results if len(results) > 1 else next(iter(results.values()))


def _read_lines(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such input file (one text per line).")
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f]


def run(argv: list[str]) -> int:
  args, rest = _parser().parse_known_args(argv)
  overrides = [r for r in rest if r.startswith("--config.")]
  unknown = [r for r in rest if not r.startswith("--config.")]
  if unknown or (overrides and args.command not in ("train", "ablate")):
    raise SystemExit(f"neuralir {args.command}: unrecognised arguments {unknown or overrides}")
  from neuralir_jax import distributed
  distributed.setup()

  if args.command == "train":
    from neuralir_jax import train
    train.train_from_cli(args.config, args.workdir, overrides)
  elif args.command == "ablate":
    from neuralir_jax import ablation
    ablation.run_from_cli(args.config, args.workdir, overrides)
  elif args.command == "encode":
    import numpy as np
    texts = _read_lines(args.input)
    enc = _load(args.model, args.step)
    emb = distributed.encode_across_processes(lambda x: enc.encode(x, batch_size=args.batch_size), texts)
    if distributed.is_main_process():
      np.save(args.output, emb)
    print(f"wrote {args.output}: {emb.shape[0]} x {emb.shape[1]} float32")
  elif args.command == "export":
    if args.workdir and not os.path.isdir(os.path.join(args.workdir, "checkpoints")):
      raise FileNotFoundError(f"{args.workdir}: no checkpoints/ folder; is this a training workdir?")
    enc = _load(args.workdir or args.model, args.step)
    enc.save_pretrained(args.output)
    print(f"exported to {args.output}")
  elif args.command == "eval":
    results = _evaluate(args)
    text = json.dumps(results, indent=2, sort_keys=True)
    print(text)
    if args.output:
      with open(args.output, "w") as f:
        f.write(text + "\n")
  return 0


def main() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets", "grain"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    sys.exit(run(sys.argv[1:]))
  except (FileNotFoundError, KeyError, ValueError, TypeError, ImportError) as e:
    if os.environ.get("NEURALIR_DEBUG"):
      raise
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"neuralir: error: {msg}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
