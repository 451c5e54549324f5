"""Negatives for ColBERT on SciFact: configs/colbert_scifact.py with in-batch negatives only, k = 1 and k = 3.

  neuralir ablate --config configs/ablation_colbert.py --workdir W
  neuralir ablate --config configs/ablation_colbert.py --workdir W --config.ablation.only=k3

Every run trains one epoch of the bundled mined train80 rows (equal steps and examples) and is scored on
the dev20 split, where choices are made, by exhaustive MaxSim over the whole corpus (`neuralir eval --model
RUN`). `inbatch` scores each query against the batch's positives only (B - 1 negatives per query); `k1` and
`k3` add that many mined hard negatives per query (B * (1 + k) - 1), gathered across devices like the
bi-encoder's.
"""

from . import colbert_scifact
from . import common


def get_config(arg=None):
  common.check_variant("ablation_colbert.py", arg)
  c = common.ablation_base_config()
  recipe = colbert_scifact.get_config()
  with c.unlocked():
    c.update(recipe)
  c.ablation.settings = [{"name": "inbatch", "infonce.hard_negatives": False},
                         {"name": "k1", "data.num_negatives": 1},
                         {"name": "k3", "data.num_negatives": 3}]
  c.ablation.eval_tasks = ("beir:data/retrieval/scifact:dev20",)
  c.ablation.budget = "steps"
  c.ablation.num_cpu_devices = 1
  return c
