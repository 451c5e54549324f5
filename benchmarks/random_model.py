"""Writes a random-init sentence-transformers model directory shaped like a given one (for throughput runs).

The accelerator machine has no network and the packaged MiniLM weights (90 MB) are over what a device call
carries, but throughput depends on the architecture only: this copies a model directory's tokenizer and
sentence-transformers files (everything except the weights) and writes seeded random weights of its
architecture with `transformers.BertModel`, so that both `neuralir_jax.load_encoder` and `SentenceTransformer`
load the same model (mean pooling, as all-MiniLM-L6-v2).

  python benchmarks/random_model.py --like .gpu_assets/minilm --output /tmp/minilm_random
"""

from __future__ import annotations

import argparse
import os
import shutil


def write_random_model(like: str, output: str, seed: int = 0) -> str:
  import torch
  from transformers import BertConfig, BertModel
  if not os.path.isfile(os.path.join(like, "config.json")):
    raise FileNotFoundError(f"--like {like}: no config.json; give a BERT model directory (HF or ST layout).")
  shutil.copytree(like, output, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "*.h5", "*.msgpack"),
                  dirs_exist_ok=True)
  torch.manual_seed(seed)
  BertModel(BertConfig.from_pretrained(like), add_pooling_layer=False).save_pretrained(output, safe_serialization=True)
  return output


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--like", required=True, help="Model directory whose tokenizer and ST files are copied.")
  parser.add_argument("--output", required=True)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  print(f"random model: {write_random_model(args.like, args.output, args.seed)}")


if __name__ == "__main__":
  main()
