"""The 3-layer student of configs/distill_minilm_l3.py against its teacher and its own start, on STS-B.

  python benchmarks/distill_student.py [--workdir W]

Prints STS-B dev and test Spearman of the packaged all-MiniLM-L6-v2 (the teacher), of its layers (0, 2, 4)
before any training (the student's init, `model.layers`), and of the trained student in W when given
(`neuralir train --config configs/distill_minilm_l3.py --workdir W`). Choices are made on dev; test is
reported.
"""

import argparse
import json

from neuralir_jax import bi_encoder, config_lib, evaluate, hf_io
from neuralir_jax import encoder as encoder_lib

TASKS = ("sts:data/sts/stsb_dev.tsv.gz", "sts:data/sts/stsb_test.tsv.gz")


def spearman(enc) -> dict[str, float]:
  results = evaluate.evaluate_tasks(enc, TASKS, batch_size=128)
  return {task.split("/")[-1].split(".")[0]: round(results[task]["spearman"], 4) for task in TASKS}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None, help="a trained configs/distill_minilm_l3.py workdir")
  args = parser.parse_args()
  path = config_lib.resolve_model_path("minilm")
  rows = {"teacher (6 layers)": spearman(encoder_lib.load_encoder(path))}
  config, params, tokenizer = hf_io.load_hf_directory(path)
  config, params = bi_encoder.keep_layers(config, params, (0, 2, 4), "minilm")
  rows["student init, layers (0, 2, 4)"] = spearman(encoder_lib.Encoder(config, params, tokenizer))
  if args.workdir:
    rows[f"student trained ({args.workdir})"] = spearman(encoder_lib.load_encoder(args.workdir))
  print(json.dumps(rows, indent=2))


if __name__ == "__main__":
  main()
