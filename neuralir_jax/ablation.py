"""The large-batch negatives ablation behind `neuralir ablate`: one training run per setting, evaluated.

A config (e.g. `configs/ablation_negatives.py`) is a training config plus `ablation`: `settings` (a list of
dicts, each a `name` and config keys to set, e.g. `{"name": "b64_local", "batch_size": 64, "negatives":
"local", "infonce.hard_negatives": True}`), `eval_tasks` (task strings as `neuralir eval` takes them, run with
exact search), `budget` ("steps": every run trains `num_steps`; "examples": `examples_per_run // batch_size`
steps), `only` (a comma-separated subset of names) and `num_cpu_devices`. Every setting is validated through
`config_lib.apply_overrides` before anything trains, so a typo fails at once rather than after hours.

Run `name` trains in `WORKDIR/name/` (train() resumes there, and returns at once when finished); its row is
kept in `WORKDIR/name/ablation_result.json`, so a rerun skips finished runs unless their config changed, which
is an error. `ablation.seeds` (e.g. (0, 1, 2)) repeats every setting as NAME_seedS runs. Every run's row goes
to `WORKDIR/results.csv`; `summary.csv` holds one row per setting (mean, sample std and 95% t interval of
each metric over its seeds); `contrasts.csv` and the console compare every two settings that differ in one
CONTRAST_COLUMNS column only (global vs local, queue vs none, softmax vs sigmoid, dense vs tiled, ...): the
difference of means, its 95% Welch interval and whether the difference is beyond that seed spread.
`WORKDIR/ablation.png` plots the primary metric of each task (Spearman for STS, nDCG@10 for retrieval)
against negatives per query on a log2 axis with 95% error bars, one colour per variant (hard negatives,
temperature, loss, implementation, queue), filled markers and solid lines for global negatives, hollow
markers and dashed lines for local ones; its title says how runs were budgeted.

`negatives_per_query` is nominal: B * (1 + k) - 1 + Q for global negatives, (B / devices) * (1 + k) - 1 +
Q / devices for local ones (k = data.num_negatives hard negatives per query, 0 without hard negatives; Q =
infonce.queue_size, once the queue has filled); `logged_negatives_per_query` is what training logged (lower by the candidates masked as false
negatives, i.e. texts equal to the positive).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
import time
from typing import Any, Mapping, Sequence

import ml_collections

from neuralir_jax import config_lib, evaluate

BUDGETS = ("steps", "examples")
NEGATIVES = ("global", "local")
# The axes an ablation grid turns (see `grid_axes`); data.num_negatives is k, hard negatives per query;
# "loss" is softmax (InfoNCE), sigmoid (SigLIP) or both, from the objectives' weights (`loss_name`).
AXES = ("batch_size", "negatives", "infonce.hard_negatives", "data.num_negatives",
        "infonce.learnable_temperature", "infonce.queue_size", "loss", "infonce.implementation")
TASK_METRICS = {"sts": evaluate.STS_METRICS, "beir": evaluate.RETRIEVAL_METRICS}
SETTING_COLUMNS = ("name", "batch_size", "negatives", "hard_negatives", "num_negatives",
                   "learnable_temperature", "queue_size", "loss", "implementation", "negatives_per_query")
# Setting columns whose two values are compared at every other column equal (`contrasts`).
CONTRAST_COLUMNS = ("negatives", "queue_size", "loss", "implementation", "hard_negatives",
                    "learnable_temperature", "num_negatives")
RUN_COLUMNS = ("num_steps", "examples", "final_loss", "final_temperature", "logged_negatives_per_query",
               "train_seconds", "eval_seconds")
RESULT_FILE = "ablation_result.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class Setting:
  """One run: its name (subdirectory), its complete training config, and the setting it repeats with
  another seed (its own name when ablation.seeds is empty)."""
  name: str
  config: ml_collections.ConfigDict
  setting: str = ""


# --- Settings -----------------------------------------------------------------------------------------


def negatives_per_query(batch_size: int, negatives: str, hard_negatives: bool, num_devices: int,
                        k: int = 1, queue_size: int = 0) -> int:
  """Candidates per query other than its positive: the global or the per-device batch's positives (and their
  k hard negatives each), plus the negative queue's entries (all, or this device's shard) once it is full."""
  if negatives not in NEGATIVES:
    raise ValueError(f"negatives={negatives!r}: use one of {NEGATIVES}.")
  rows = batch_size if negatives == "global" else batch_size // num_devices
  queue = queue_size if negatives == "global" else queue_size // num_devices
  return rows * (1 + (k if hard_negatives else 0)) - 1 + queue


def loss_name(config: ml_collections.ConfigDict) -> str:
  """"softmax" (InfoNCE), "sigmoid" (SigLIP), "softmax+sigmoid", or "" when neither is on."""
  on = [name for key, name in (("infonce", "softmax"), ("sigmoid", "sigmoid")) if config.objectives[key]]
  return "+".join(on)


def _override_text(value: Any) -> str:
  """The `--config.KEY=TEXT` form of a Python value, as config_lib parses it back."""
  return value if isinstance(value, str) else repr(value)


def _same_type(old: Any, new: Any) -> bool:
  if isinstance(old, bool) or isinstance(new, bool):
    return isinstance(old, bool) and isinstance(new, bool)
  if isinstance(old, float):
    return isinstance(new, (int, float))
  if isinstance(old, (int, str)):
    return type(new) is type(old)
  return True


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _setting_config(base: ml_collections.ConfigDict, setting: Mapping[str, Any], where: str,
                    budget: str, examples_per_run: int) -> ml_collections.ConfigDict:
  """The training config of one setting: base + its keys (validated), num_steps from the budget."""
  config = ml_collections.ConfigDict(base.to_dict())
  for key, value in setting.items():
    if key == "name":
      continue
    try:
      config = config_lib.apply_overrides(config, [f"{key}={_override_text(value)}"], source=where)
      ok = _same_type(_get(base, key), _get(config, key))
    except (KeyError, ValueError) as e:
      raise type(e)(f"{where}: {e.args[0] if e.args else e}") from None
    except TypeError:  # ConfigDict refused the type (e.g. a float for an int key).
      ok = False
    if not ok:
      raise ValueError(f"{where}: {key}={value!r} must be a {type(_get(base, key)).__name__} like the "
                       f"base config's {_get(base, key)!r}.")
  if budget == "examples":
    if "num_steps" in setting:
      raise ValueError(f"{where} sets num_steps, but ablation.budget='examples' derives it from "
                       "ablation.examples_per_run; remove it or set ablation.budget='steps'.")
    config.num_steps = examples_per_run // config.batch_size
    if config.num_steps < 1:
      raise ValueError(f"{where}: ablation.examples_per_run={examples_per_run} is less than one batch of "
                       f"{config.batch_size}; raise ablation.examples_per_run.")
  if config.negatives not in NEGATIVES:
    raise ValueError(f"{where}: negatives={config.negatives!r}; use one of {NEGATIVES}.")
  return config


def settings_of(config: ml_collections.ConfigDict, num_devices: int | None = None) -> list[Setting]:
  """Validates `config.ablation` and returns one Setting per run (filtered by `ablation.only`)."""
  if "ablation" not in config:
    raise KeyError("config has no 'ablation' block: use configs/ablation_negatives.py or add ablation.settings.")
  abl = config.ablation
  budget = abl.budget
  if budget not in BUDGETS:
    raise ValueError(f"ablation.budget={budget!r}: use one of {BUDGETS}.")
  examples_per_run = int(abl.examples_per_run)
  if budget == "examples" and examples_per_run < 1:
    raise ValueError("ablation.budget='examples' needs ablation.examples_per_run > 0.")
  if not isinstance(abl.settings, (list, tuple)) or not abl.settings:
    raise ValueError("ablation.settings must be a non-empty list of dicts, each with a 'name'.")
  seeds = list(abl.get("seeds", ()) or ())
  if not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds) or len(set(seeds)) != len(seeds):
    raise ValueError(f"ablation.seeds={tuple(seeds)}: give distinct integers, e.g. (0, 1, 2), or () for "
                     "config.seed once.")
  base = ml_collections.ConfigDict(config.to_dict())
  del base["ablation"]
  out, seen = [], set()
  for i, setting in enumerate(abl.settings):
    setting = setting.to_dict() if isinstance(setting, ml_collections.ConfigDict) else setting
    where = f"ablation.settings[{i}]"
    if not isinstance(setting, Mapping):
      raise ValueError(f"{where} is {setting!r}: each setting must be a dict with a 'name' and config keys.")
    name = setting.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
      raise ValueError(f"{where} has name {name!r}: give a 'name' of letters, digits, '_', '-', '.' (it "
                       "names the run's subdirectory).")
    if name in seen:
      raise ValueError(f"{where}: name {name!r} is used twice; every setting needs its own name.")
    seen.add(name)
    run_config = _setting_config(base, setting, f"{where} ({name})", budget, examples_per_run)
    if num_devices and run_config.batch_size % num_devices:
      raise ValueError(f"{where} ({name}): batch_size={run_config.batch_size} is not divisible by the "
                       f"{num_devices} devices; use a multiple of {num_devices}.")
    if not seeds:
      out.append(Setting(name, run_config, name))
    for seed in seeds:
      seeded = ml_collections.ConfigDict(run_config.to_dict())
      seeded.seed = seed
      out.append(Setting(f"{name}_seed{seed}", seeded, name))
  only = [n.strip() for n in str(abl.only).split(",") if n.strip()]
  unknown = sorted(set(only) - seen)
  if unknown:
    raise ValueError(f"ablation.only names {unknown}, which are not settings; pick from {sorted(seen)}.")
  return [s for s in out if not only or s.setting in only]


def grid_axes(settings: Sequence[Setting]) -> dict[str, list]:
  """The distinct values each axis of AXES takes across the settings."""
  def value(config, axis):
    return loss_name(config) if axis == "loss" else _get(config, axis)
  return {axis: sorted({value(s.config, axis) for s in settings}, key=repr) for axis in AXES}


# --- Tasks and metrics --------------------------------------------------------------------------------


def task_kind(task: str) -> str:
  kind = task.partition(":")[0]
  if kind not in TASK_METRICS:
    raise ValueError(f"ablation.eval_tasks has {task!r}: use sts:FILE or beir:DIR[:SPLIT].")
  return kind


def task_label(task: str) -> str:
  """A short column prefix: `sts:data/sts/stsb_dev.tsv.gz` -> `stsb_dev`, `beir:DIR:dev` -> `DIRNAME_dev`."""
  kind = task_kind(task)
  rest = task.partition(":")[2]
  path, split = (rest.rsplit(":", 1) + [""])[:2] if kind == "beir" and ":" in rest else (rest, "")
  label = os.path.basename(os.path.normpath(path))
  label = re.sub(r"(\.(tsv|jsonl|json|csv|gz))+$", "", label)
  return f"{label}_{split}" if split and split != "test" else label


def metric_columns(eval_tasks: Sequence[str]) -> list[str]:
  return [f"{task_label(t)}/{m}" for t in eval_tasks for m in TASK_METRICS[task_kind(t)]]


def primary_metric_columns(eval_tasks: Sequence[str]) -> list[str]:
  return [f"{task_label(t)}/{evaluate.PRIMARY_METRIC[task_kind(t)]}" for t in eval_tasks]


# --- Running ------------------------------------------------------------------------------------------


def _last_logged(workdir: str) -> dict:
  """The last metrics.jsonl row that has a loss (train() returns no metrics for a finished workdir)."""
  last = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.isfile(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        if "loss" in row:
          last = row
  return last


def _evaluate(workdir: str, eval_tasks: Sequence[str], batch_size: int) -> dict[str, float]:
  """`neuralir eval` with exact search: a ColBERT run retrieves end to end by exhaustive MaxSim."""
  from neuralir_jax import colbert
  from neuralir_jax import encoder as encoder_lib
  if colbert.is_colbert_workdir(workdir):
    model = colbert.load_trained(workdir)
    results = {t: colbert.evaluate_beir(model, t, batch_size=batch_size) for t in eval_tasks}
  else:
    results = evaluate.evaluate_tasks(encoder_lib.load_encoder(workdir), eval_tasks, batch_size=batch_size)
  return {f"{task_label(task)}/{m}": float(results[task][m]) for task in eval_tasks
          for m in TASK_METRICS[task_kind(task)]}


def _comparable(config: ml_collections.ConfigDict) -> dict:
  return json.loads(json.dumps(config.to_dict(), default=str))


def run_setting(setting: Setting, workdir: str, eval_tasks: Sequence[str], num_devices: int) -> dict:
  """Trains (or resumes, or skips) one setting in workdir/name and evaluates it; returns its row."""
  from neuralir_jax import train
  run_dir = os.path.join(workdir, setting.name)
  result_path = os.path.join(run_dir, RESULT_FILE)
  config_dict = _comparable(setting.config)
  saved = {"row": {}}
  if os.path.isfile(result_path):
    with open(result_path) as f:
      saved = json.load(f)
    if saved["config"] != config_dict:
      changed = sorted(k for k in set(_flat(saved["config"])) | set(_flat(config_dict))
                       if _flat(saved["config"]).get(k) != _flat(config_dict).get(k))
      raise ValueError(f"{run_dir} holds a finished run of setting {setting.name!r} with another config "
                       f"(differs in {changed}); delete {run_dir} or rename the setting.")
    if saved["row"].keys() >= set(metric_columns(eval_tasks)):
      logging.info("%s: finished earlier, reusing %s", setting.name, result_path)
      return saved["row"]
  c = setting.config
  tic = time.perf_counter()
  metrics = train.train(c, run_dir)
  train_seconds = time.perf_counter() - tic
  if metrics.get("resumed_finished"):  # Trained by an earlier call that stopped before its evaluation.
    metrics, train_seconds = _last_logged(run_dir), saved["row"].get("train_seconds", math.nan)
  tic = time.perf_counter()
  scores = _evaluate(run_dir, eval_tasks, int(c.eval.batch_size))
  row = {"name": setting.name, "batch_size": int(c.batch_size), "negatives": c.negatives,
         "hard_negatives": bool(c.infonce.hard_negatives), "num_negatives": int(c.data.num_negatives),
         "learnable_temperature": bool(c.infonce.learnable_temperature),
         "queue_size": int(c.infonce.queue_size), "loss": loss_name(c),
         "implementation": c.infonce.implementation,
         "negatives_per_query": negatives_per_query(c.batch_size, c.negatives, c.infonce.hard_negatives,
                                                    num_devices, int(c.data.num_negatives),
                                                    int(c.infonce.queue_size)),
         **scores, "num_steps": int(c.num_steps), "examples": int(c.num_steps) * int(c.batch_size),
         "final_loss": float(metrics.get("loss", math.nan)),
         "final_temperature": float(metrics.get("temperature", math.nan)),
         "logged_negatives_per_query": float(metrics.get("negatives_per_query", math.nan)),
         "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - tic,
         "setting": setting.setting or setting.name, "seed": int(c.seed)}
  with open(result_path, "w") as f:
    json.dump({"row": row, "config": config_dict}, f, indent=2)
  return row


def _flat(d: Mapping, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def run_ablation(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Every setting in turn, then results.csv, ablation.png and the console table; returns the rows."""
  import jax
  num_devices = jax.device_count()
  settings = settings_of(config, num_devices)
  eval_tasks = tuple(config.ablation.eval_tasks)
  if not eval_tasks:
    raise ValueError("ablation.eval_tasks is empty: give at least one sts:FILE or beir:DIR task.")
  metrics = metric_columns(eval_tasks)
  sts = [t for t in eval_tasks if task_kind(t) == "sts"]
  colbert_runs = [s.name for s in settings if s.config.model.family == "colbert"]
  if sts and colbert_runs:
    raise ValueError(f"ablation.eval_tasks has {sts[0]!r}, but {colbert_runs[0]} trains a ColBERT model "
                     "(model.family='colbert'), which is evaluated on retrieval only: use beir:DIR[:SPLIT].")
  os.makedirs(workdir, exist_ok=True)
  rows = []
  for i, setting in enumerate(settings):
    logging.info("ablation run %d/%d: %s", i + 1, len(settings), setting.name)
    rows.append(run_setting(setting, workdir, eval_tasks, num_devices))
    write_results_csv(rows, os.path.join(workdir, "results.csv"), metrics)  # Partial results survive a crash.
  summary = summarize(rows, metrics)
  write_results_csv(summary, os.path.join(workdir, "summary.csv"), metrics)
  primary = primary_metric_columns(eval_tasks)
  pairs = contrasts(rows, primary)
  write_results_csv(pairs, os.path.join(workdir, "contrasts.csv"), (), CONTRAST_FIELDS)
  runs = len(rows) // max(len(summary), 1)
  plot_results(summary, os.path.join(workdir, "ablation.png"), primary,
               budget=f"{budget_text(config.ablation)}; mean and 95% interval over {runs} run(s)")
  print(format_table(summary, ["name", "runs"] + [c for m in primary for c in (m, f"{m}_std", f"{m}_ci95")]))
  if pairs:
    print("\nOne setting changed, the rest equal (difference of means, 95% Welch interval over the runs):")
    print(format_table(pairs, list(CONTRAST_FIELDS)))
  files = ("results.csv", "summary.csv", "contrasts.csv", "ablation.png")
  print(f"wrote {', '.join(os.path.join(workdir, f) for f in files)}")
  return rows


def budget_text(abl: ml_collections.ConfigDict) -> str:
  if abl.budget == "examples":
    return f"budget: {int(abl.examples_per_run)} examples per run (steps = examples / batch size)"
  return "budget: the same optimizer steps per run (bigger batches see more examples)"


CONTRAST_FIELDS = ("metric", "changed", "a", "b", "a_setting", "b_setting", "runs", "difference", "ci95",
                   "beyond_spread")


def contrasts(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict]:
  """For every two settings that differ in one CONTRAST_COLUMNS column and agree on every other setting
  column: per metric, mean(b) - mean(a) over their runs, the half-width of its 95% Welch interval (nan with
  fewer than two runs a side), and whether the difference lies beyond it (the seed spread)."""
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for row in rows:
    groups.setdefault(row.get("setting", row["name"]), []).append(row)
  keys = [c for c in SETTING_COLUMNS if c not in ("name", "negatives_per_query")]
  names = list(groups)
  out = []
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      ra, rb = groups[a][0], groups[b][0]
      differ = [k for k in keys if ra.get(k) != rb.get(k)]
      if len(differ) != 1 or differ[0] not in CONTRAST_COLUMNS:
        continue
      for m in metrics:
        xa = [float(r[m]) for r in groups[a] if m in r]
        xb = [float(r[m]) for r in groups[b] if m in r]
        if not xa or not xb:
          continue
        diff = sum(xb) / len(xb) - sum(xa) / len(xa)
        half = _welch_half_width(xa, xb)
        out.append({"metric": m, "changed": differ[0], "a": ra.get(differ[0]), "b": rb.get(differ[0]),
                    "a_setting": a, "b_setting": b, "runs": f"{len(xa)}+{len(xb)}", "difference": diff,
                    "ci95": half, "beyond_spread": "" if math.isnan(half) else abs(diff) > half})
  return out


def _welch_half_width(xa: Sequence[float], xb: Sequence[float]) -> float:
  """Half-width of the 95% interval of mean(xb) - mean(xa), Welch's t (unequal variances)."""
  na, nb = len(xa), len(xb)
  if na < 2 or nb < 2:
    return math.nan
  from scipy import stats
  va = sum((x - sum(xa) / na) ** 2 for x in xa) / (na - 1) / na
  vb = sum((x - sum(xb) / nb) ** 2 for x in xb) / (nb - 1) / nb
  se = math.sqrt(va + vb)
  if se == 0:
    return 0.0
  df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
  return float(stats.t.ppf(0.975, df)) * se


# t_{0.975, n - 1}: the 95% interval of a mean of n runs is mean +- t * std / sqrt(n).
def _t975(n: int) -> float:
  from scipy import stats
  return float(stats.t.ppf(0.975, n - 1)) if n > 1 else math.nan


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict]:
  """One row per setting (runs grouped by `setting`, in first-seen order): its setting columns, `runs`,
  and per metric the mean (under the metric's name), `_std` (sample, ddof 1) and `_ci95` (half-width of
  the t interval; nan for one run)."""
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for row in rows:
    groups.setdefault(row.get("setting", row["name"]), []).append(row)
  out = []
  for name, runs in groups.items():
    row = {k: runs[0][k] for k in SETTING_COLUMNS if k in runs[0]}
    row.update(name=name, runs=len(runs))
    for m in metrics:
      values = [float(r[m]) for r in runs if m in r]
      if not values:
        continue
      mean = sum(values) / len(values)
      std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
      row.update({m: mean, f"{m}_std": std, f"{m}_ci95": _t975(len(values)) * std / math.sqrt(len(values))})
    out.append(row)
  return out


def run_from_cli(config_spec: str, workdir: str, overrides: Sequence[str]) -> list[dict]:
  config = config_lib.apply_overrides(config_lib.load_config(config_spec), overrides, source=config_spec)
  if "ablation" in config and not os.environ.get("JAX_NUM_CPU_DEVICES"):
    num_cpu = int(config.ablation.num_cpu_devices)
    if num_cpu:
      import jax
      try:
        jax.config.update("jax_num_cpu_devices", num_cpu)
      except RuntimeError as e:  # Backends already initialised: keep what JAX has.
        logging.warning("ablation.num_cpu_devices=%d not applied: %s", num_cpu, e)
  return run_ablation(config, workdir)


# --- Output -------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.6g}"
  return str(value)


def columns_of(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
  """SETTING_COLUMNS, the metrics, RUN_COLUMNS, then any other key in first-seen order."""
  known = list(SETTING_COLUMNS) + list(metrics) + list(RUN_COLUMNS)
  extra = [k for row in rows for k in row if k not in known]
  return known + list(dict.fromkeys(extra))


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: str, metrics: Sequence[str],
                      columns: Sequence[str] | None = None) -> None:
  """One row per run or setting (columns: `columns_of`, unless given); floats to 6 significant digits,
  missing cells empty."""
  columns = columns_of(rows, metrics) if columns is None else columns
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(columns)
  for row in rows:
    writer.writerow([_cell(row[c]) if c in row else "" for c in columns])
  with open(path, "w", newline="") as f:
    f.write(buf.getvalue())


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  """A fixed-width text table: floats to 4 decimals, columns as wide as their widest cell."""
  def cell(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)
  body = [[cell(row.get(c, "")) for c in columns] for row in rows]
  widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(columns)]
  lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
  lines.append("  ".join("-" * w for w in widths))
  lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in body]
  return "\n".join(lines)


def variant_label(row: Mapping[str, Any]) -> str:
  """What a series shares besides batch size and global/local: hard negatives, temperature, and the loss,
  implementation and queue where they are not the defaults (softmax, dense, none)."""
  k = int(row.get("num_negatives", 1) or 1)
  hard = "hard negatives" if k == 1 else f"{k} hard negatives"
  label = (f"{hard if row['hard_negatives'] else 'in-batch only'}, "
           f"{'learnable' if row['learnable_temperature'] else 'fixed'} tau")
  extras = [row["loss"] if row.get("loss", "softmax") != "softmax" else "",
            row["implementation"] if row.get("implementation", "dense") != "dense" else "",
            f"queue {row['queue_size']}" if row.get("queue_size") else ""]
  return ", ".join([label] + [e for e in extras if e])


def plot_series(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[tuple[str, str], list[tuple]]:
  """(variant label, negatives mode) -> [(negatives per query, metric, name)] sorted by negatives."""
  series: dict[tuple[str, str], list[tuple]] = {}
  for row in rows:
    if metric in row:
      series.setdefault((variant_label(row), row["negatives"]), []).append(
          (row["negatives_per_query"], row[metric], row["name"]))
  return {k: sorted(v) for k, v in sorted(series.items())}


def plot_results(rows: Sequence[Mapping[str, Any]], path: str, metrics: Sequence[str], budget: str = "") -> dict:
  """ablation.png: one panel per metric vs negatives per query (log2), error bars from `METRIC_ci95` where
  the rows have it (`summarize`); `budget` says how runs were budgeted; returns {metric: plot_series}."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  variants = sorted({variant_label(r) for r in rows})
  colors = {v: plt.get_cmap("tab10")(i) for i, v in enumerate(variants)}
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
  drawn = {}
  for ax, metric in zip(axes[0], metrics):
    drawn[metric] = plot_series(rows, metric)
    for (variant, mode), points in drawn[metric].items():
      xs, ys = [max(p[0], 1) for p in points], [p[1] for p in points]  # log2 axis: 0 negatives drawn at 1.
      is_global = mode == "global"
      by_name = {r["name"]: r for r in rows}
      errors = [by_name[p[2]].get(f"{metric}_ci95", math.nan) for p in points]
      errors = None if all(math.isnan(e) for e in errors) else [0.0 if math.isnan(e) else e for e in errors]
      ax.errorbar(xs, ys, yerr=errors, capsize=3, linestyle="-" if is_global else "--",
                  marker="o" if is_global else "s", color=colors[variant],
                  markerfacecolor=colors[variant] if is_global else "none", label=f"{variant}, {mode}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("negatives per query")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.suptitle("InfoNCE: effect of negatives per query (global = gathered across devices)"
               + (f"\n{budget}" if budget else ""))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return drawn
