"""Tests for neuralir_jax/ablation.py: settings validation, the grid, results.csv, the table and the plot.

No training here except `test_two_tiny_settings_end_to_end` (2 settings x 3 steps of configs/tiny.py size);
the training loop itself is covered by the training tests.
"""

import json
import os

import numpy as np
import pytest

from neuralir_jax import ablation, config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "ablation_negatives.py")


def _config(settings, **ablation_fields):
  c = config_lib.load_config(CONFIG)
  c.ablation.settings = settings
  c.ablation.seeds = ()  # One run per setting, equal steps, unless a test asks otherwise.
  c.ablation.budget = "steps"
  for k, v in ablation_fields.items():
    c.ablation[k] = v
  return c


def _row(name, b, neg, hn, lt, npq, sp, nd, secs):
  return {"name": name, "batch_size": b, "negatives": neg, "hard_negatives": hn, "num_negatives": 1,
          "learnable_temperature": lt, "queue_size": 0, "loss": "softmax", "implementation": "dense",
          "negatives_per_query": npq, "stsb_dev/spearman": sp, "cranfield/ndcg@10": nd, "num_steps": 60,
          "examples": 60 * b, "final_loss": 1.25, "final_temperature": 0.05,
          "logged_negatives_per_query": float(npq), "train_seconds": secs, "eval_seconds": 2.0}


ROWS = [
    _row("b16_global_hn_fixed", 16, "global", True, False, 31, 0.41234567, 0.1, 30.123456),
    _row("b128_global_hn_fixed", 128, "global", True, False, 255, 0.55, 0.2, 61.0),
    _row("b128_local_hn_fixed", 128, "local", True, False, 31, 0.45, 0.12, 60.5),
    _row("b16_global_nohn_learnt", 16, "global", False, True, 15, 0.3, 0.05, float("nan")),
]


def test_negatives_per_query_formula():
  assert ablation.negatives_per_query(64, "global", True, 8) == 127
  assert ablation.negatives_per_query(64, "global", False, 8) == 63
  assert ablation.negatives_per_query(64, "local", True, 8) == 15
  assert ablation.negatives_per_query(64, "local", False, 8) == 7
  assert ablation.negatives_per_query(4096, "local", True, 1) == 8191
  assert ablation.negatives_per_query(32, "global", True, 8, k=4) == 159  # 32 positives + 32 * 4 negatives.
  assert ablation.negatives_per_query(32, "global", False, 8, k=4) == 31
  # A full queue adds its entries: all of them to global negatives, this device's shard to local ones.
  assert ablation.negatives_per_query(32, "global", True, 8, queue_size=192) == 255
  assert ablation.negatives_per_query(128, "local", True, 8, queue_size=64) == 31 + 8
  with pytest.raises(ValueError, match="negatives='both'"):
    ablation.negatives_per_query(64, "both", True, 8)


def test_default_grid_covers_every_axis_with_seeds_and_equal_examples():
  c = config_lib.load_config(CONFIG)
  settings = ablation.settings_of(c, num_devices=8)
  assert len(settings) == 30 and c.ablation.seeds == (0, 1, 2)  # 10 settings x 3 seeds.
  axes = ablation.grid_axes(settings)
  assert axes["batch_size"] == [128, 32, 64]  # Sorted by repr.
  assert axes["negatives"] == ["global", "local"]
  assert axes["infonce.hard_negatives"] == [False, True]
  assert axes["infonce.learnable_temperature"] == [False, True]
  assert axes["infonce.queue_size"] == [0, 192]
  assert axes["loss"] == ["sigmoid", "softmax"]
  assert axes["infonce.implementation"] == ["dense", "tiled"]
  assert axes["data.num_negatives"] == [1]  # NLI: one contradiction per premise (k > 1: ablation_k.py).
  by_name = {s.name: s.config for s in settings}
  local = by_name["b128_local_seed1"]
  assert (local.batch_size, local.negatives, local.infonce.hard_negatives, local.seed) == (128, "local", True, 1)
  assert "ablation" not in local  # The run's config is a plain training config.
  sigmoid = by_name["b128_global_sigmoid_seed0"]
  assert (sigmoid.objectives.infonce, sigmoid.objectives.sigmoid) == (0.0, 1.0)
  assert by_name["b128_global_tiled_seed0"].infonce.implementation == "tiled"
  # Budget "examples": every run sees 2560 examples, so b32 takes 4x the steps of b128.
  assert {s.config.num_steps * s.config.batch_size for s in settings} == {2560}
  assert by_name["b32_global_seed0"].num_steps == 80 and by_name["b128_global_seed0"].num_steps == 20
  assert c.objectives.nli_softmax == 0 and c.data.view == "triplets"
  npq = {s.name: ablation.negatives_per_query(s.config.batch_size, s.config.negatives,
                                              s.config.infonce.hard_negatives, 8,
                                              queue_size=s.config.infonce.queue_size) for s in settings}
  # Equal batch, steps and data, only the candidate pool differs: the grid's clean negatives contrasts.
  assert npq["b128_global_seed0"] == 255 and npq["b128_local_seed0"] == 31
  assert npq["b32_global_seed0"] == 63 and npq["b32_global_queue192_seed0"] == 255


def test_large_variant_reaches_4096_through_gradcache_and_tiling():
  c = config_lib.load_config(CONFIG + ":large")
  settings = ablation.settings_of(c, num_devices=8)
  assert max(s.config.batch_size for s in settings) == 4096
  for s in settings:
    assert (s.config.infonce.implementation, s.config.grad_cache.chunk_size) == ("tiled", 64)
    assert s.config.num_steps * s.config.batch_size == 16384
    config_lib.validate(s.config, num_devices=8)  # 512 examples per device: 8 chunks of 64.
  npq = {s.setting: ablation.negatives_per_query(s.config.batch_size, s.config.negatives, True, 8)
         for s in settings}
  assert npq["b4096_global"] == 8191 and npq["b4096_local"] == 1023


def test_full_variant_keeps_examples_equal():
  c = config_lib.load_config(CONFIG + ":full")
  settings = ablation.settings_of(c, num_devices=8)
  assert len(settings) == 150 and c.data.train == "tfds:snli:train"  # 50 settings x 3 seeds.
  assert max(s.config.batch_size for s in settings) == 4096
  assert {s.config.num_steps * s.config.batch_size for s in settings} == {c.ablation.examples_per_run}
  axes = ablation.grid_axes(settings)
  # NLI has one contradiction per premise, so k (data.num_negatives) is an axis of retrieval grids only;
  # dense vs tiled is a check of the CPU grid (same loss), not a quality axis.
  assert all(len(v) >= 2 for axis, v in axes.items() if axis not in ("data.num_negatives",
                                                                     "infonce.implementation"))
  with pytest.raises(ValueError, match="unknown variant"):
    config_lib.load_config(CONFIG + ":huge")


@pytest.mark.parametrize("settings, match", [
    ([{"batch_size": 16}], r"settings\[0\] has name None"),
    ([{"name": "a/b", "batch_size": 16}], r"name 'a/b'"),
    ([{"name": "a"}, {"name": "a"}], "used twice"),
    ([{"name": "a", "batchsize": 16}], r"unknown config key 'batchsize'"),
    ([{"name": "a", "infonce.hardnegatives": True}], r"infonce has keys"),
    ([{"name": "a", "batch_size": "lots"}], r"batch_size=lots: cannot parse as int"),
    ([{"name": "a", "batch_size": 12.5}], r"batch_size=12.5 must be a int"),
    ([{"name": "a", "negatives": "everywhere"}], r"negatives='everywhere'"),
    ([{"name": "a", "batch_size": 20}], r"batch_size=20 is not divisible by the 8 devices"),
    ([], "non-empty list"),
    (["b16"], r"settings\[0\] is 'b16'"),
])
def test_bad_settings_fail_with_one_line_naming_the_key(settings, match):
  with pytest.raises((KeyError, ValueError), match=match) as e:
    ablation.settings_of(_config(settings), num_devices=8)
  assert "\n" not in str(e.value)


def test_budget_examples_derives_steps_and_rejects_explicit_steps():
  c = _config([{"name": "a", "batch_size": 16}, {"name": "b", "batch_size": 64}],
              budget="examples", examples_per_run=640)
  assert [s.config.num_steps for s in ablation.settings_of(c, 8)] == [40, 10]
  c = _config([{"name": "a", "batch_size": 16, "num_steps": 5}], budget="examples", examples_per_run=640)
  with pytest.raises(ValueError, match="sets num_steps"):
    ablation.settings_of(c, 8)
  with pytest.raises(ValueError, match="less than one batch"):
    ablation.settings_of(_config([{"name": "a", "batch_size": 64}], budget="examples", examples_per_run=32), 8)
  with pytest.raises(ValueError, match="ablation.budget='epochs'"):
    ablation.settings_of(_config([{"name": "a"}], budget="epochs"), 8)


def test_only_filters_and_rejects_unknown_names():
  c = _config([{"name": "a"}, {"name": "b"}, {"name": "c"}], only="c, a")
  assert [s.name for s in ablation.settings_of(c, 8)] == ["a", "c"]
  with pytest.raises(ValueError, match=r"names \['z'\]"):
    ablation.settings_of(_config([{"name": "a"}], only="z"), 8)


def test_settings_override_from_the_command_line():
  c = config_lib.load_config(CONFIG)
  c = config_lib.apply_overrides(c, ['--config.ablation.settings=[{"name": "x", "batch_size": 8}]',
                                     "--config.ablation.seeds=()"])
  (setting,) = ablation.settings_of(c, 8)
  assert setting.name == "x" and setting.config.batch_size == 8


def test_task_labels_and_metric_columns():
  assert ablation.task_label("sts:data/sts/stsb_dev.tsv.gz") == "stsb_dev"
  assert ablation.task_label("beir:data/retrieval/cranfield") == "cranfield"
  assert ablation.task_label("beir:data/retrieval/scifact/:train") == "scifact_train"
  assert ablation.task_label("beir:data/retrieval/scifact:test") == "scifact"
  tasks = ("sts:data/sts/stsb_dev.tsv.gz", "beir:data/retrieval/cranfield")
  assert ablation.metric_columns(tasks) == [
      "stsb_dev/spearman", "stsb_dev/pearson", "cranfield/ndcg@10", "cranfield/recall@10",
      "cranfield/recall@100", "cranfield/mrr@10", "cranfield/map"]
  assert ablation.primary_metric_columns(tasks) == ["stsb_dev/spearman", "cranfield/ndcg@10"]
  with pytest.raises(ValueError, match="nli:x.jsonl"):
    ablation.task_kind("nli:x.jsonl")


def test_results_csv_golden(tmp_path):
  path = tmp_path / "results.csv"
  ablation.write_results_csv(ROWS[:2] + ROWS[3:], str(path), ["stsb_dev/spearman", "cranfield/ndcg@10"])
  assert path.read_text() == (
      "name,batch_size,negatives,hard_negatives,num_negatives,learnable_temperature,queue_size,loss,"
      "implementation,negatives_per_query,stsb_dev/spearman,cranfield/ndcg@10,num_steps,examples,final_loss,"
      "final_temperature,logged_negatives_per_query,train_seconds,eval_seconds\n"
      "b16_global_hn_fixed,16,global,True,1,False,0,softmax,dense,31,0.412346,0.1,60,960,1.25,0.05,31,30.1235,2\n"
      "b128_global_hn_fixed,128,global,True,1,False,0,softmax,dense,255,0.55,0.2,60,7680,1.25,0.05,255,61,2\n"
      "b16_global_nohn_learnt,16,global,False,1,True,0,softmax,dense,15,0.3,0.05,60,960,1.25,0.05,15,nan,2\n")


def test_results_csv_keeps_unknown_keys_and_blanks_missing_cells(tmp_path):
  path = tmp_path / "results.csv"
  rows = [{"name": "a", "batch_size": 8, "extra": 1}, {"name": "b", "stsb_dev/spearman": 0.5}]
  ablation.write_results_csv(rows, str(path), ["stsb_dev/spearman"])
  lines = path.read_text().splitlines()
  assert lines[0].split(",")[-1] == "extra"
  assert lines[1] == ",".join(["a", "8"] + [""] * 16 + ["1"])  # 10 setting + 1 metric + 7 run columns.
  assert lines[2] == ",".join(["b"] + [""] * 9 + ["0.5"] + [""] * 8)


def test_format_table_golden():
  text = ablation.format_table(ROWS[:2], ["name", "negatives_per_query", "stsb_dev/spearman"])
  assert text == (
      "name                  negatives_per_query  stsb_dev/spearman\n"
      "--------------------  -------------------  -----------------\n"
      "b16_global_hn_fixed   31                   0.4123\n"
      "b128_global_hn_fixed  255                  0.5500")


def test_plot_series_and_png(tmp_path):
  path = tmp_path / "ablation.png"
  drawn = ablation.plot_results(ROWS, str(path), ["stsb_dev/spearman", "cranfield/ndcg@10"])
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  series = drawn["stsb_dev/spearman"]
  assert series == {
      ("hard negatives, fixed tau", "global"): [(31, 0.41234567, "b16_global_hn_fixed"),
                                                (255, 0.55, "b128_global_hn_fixed")],
      ("hard negatives, fixed tau", "local"): [(31, 0.45, "b128_local_hn_fixed")],
      ("in-batch only, learnable tau", "global"): [(15, 0.3, "b16_global_nohn_learnt")],
  }
  assert drawn["cranfield/ndcg@10"][("hard negatives, fixed tau", "global")][1][1] == 0.2


def test_finished_run_is_reused_and_a_changed_config_is_an_error(tmp_path):
  c = _config([{"name": "a", "batch_size": 16}])
  (setting,) = ablation.settings_of(c, 8)
  tasks = ("sts:data/sts/stsb_dev.tsv.gz",)
  run_dir = tmp_path / "a"
  run_dir.mkdir()
  row = {"name": "a", "stsb_dev/spearman": 0.5, "stsb_dev/pearson": 0.4}
  (run_dir / ablation.RESULT_FILE).write_text(
      json.dumps({"row": row, "config": ablation._comparable(setting.config)}))
  assert ablation.run_setting(setting, str(tmp_path), tasks, 8) == row  # No training: it would take seconds.
  (changed,) = ablation.settings_of(_config([{"name": "a", "batch_size": 32}]), 8)
  with pytest.raises(ValueError, match=r"differs in \['batch_size'\]"):
    ablation.run_setting(changed, str(tmp_path), tasks, 8)


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "neuralir_jax", "train.py")),
                    reason="needs neuralir_jax/train.py")
def test_two_tiny_settings_end_to_end(tmp_path, monkeypatch):
  """2 settings (global vs local negatives, both with a queue and a learnable temperature), seed 0, 2 steps
  each: every run's row, the summary, the one contrast (negatives; one run a side: no interval), the plot."""
  monkeypatch.chdir(ROOT)
  c = config_lib.load_config(CONFIG)
  tiny = config_lib.load_config(os.path.join(ROOT, "configs", "tiny.py"))
  c.model = tiny.model
  c.model.max_seq_length = 32
  c.data.max_length = 16
  c.num_steps = 2
  c.log_every_steps = 1
  c.ablation.budget = "steps"
  c.ablation.seeds = (0,)
  common = {"batch_size": 16, "infonce.hard_negatives": True, "infonce.queue_size": 16,
            "infonce.learnable_temperature": True}
  c.ablation.settings = [dict(common, name="g", negatives="global"), dict(common, name="l", negatives="local")]
  c.ablation.eval_tasks = ("sts:data/sts/sick_trial.tsv",)
  rows = ablation.run_ablation(c, str(tmp_path))
  assert [r["name"] for r in rows] == ["g_seed0", "l_seed0"]
  # Global: 16 queries x (1 + 1) - 1 + the queue's 16; local: 2 x 2 - 1 + this device's 2 queue entries.
  assert [r["negatives_per_query"] for r in rows] == [47, 5]
  assert all(r["logged_negatives_per_query"] <= r["negatives_per_query"] for r in rows)
  assert all(np.isfinite(r["final_loss"]) and -1 <= r["sick_trial/spearman"] <= 1 for r in rows)
  assert rows[0]["final_temperature"] != pytest.approx(0.05, abs=1e-9)  # Learnt.
  lines = (tmp_path / "results.csv").read_text().splitlines()
  assert len(lines) == 3 and lines[1].startswith("g_seed0,16,global,True,1,True,16,softmax,dense,47,")
  summary = (tmp_path / "summary.csv").read_text().splitlines()
  assert [line.split(",")[0] for line in summary[1:]] == ["g", "l"]
  contrast = (tmp_path / "contrasts.csv").read_text().splitlines()
  assert contrast[0].startswith("metric,changed,a,b,") and contrast[1].startswith("sick_trial/spearman,negatives,global,local,g,l,1+1,")
  assert (tmp_path / "ablation.png").stat().st_size > 0
  assert ablation.run_ablation(c, str(tmp_path)) == rows  # Rerun: finished runs are reused, not retrained.


def test_k_grid_is_the_scifact_recipe_with_k_negatives():
  c = config_lib.load_config(os.path.join(os.path.dirname(CONFIG), "ablation_k.py"))
  settings = ablation.settings_of(c, num_devices=1)
  assert ablation.grid_axes(settings)["data.num_negatives"] == [1, 2, 4, 8]
  recipe = config_lib.load_config(os.path.join(os.path.dirname(CONFIG), "scifact.py"))
  for s in settings:  # Only k and the epochs (one) differ from configs/scifact.py.
    expected = recipe.to_dict()
    expected["data"]["num_negatives"] = s.config.data.num_negatives
    expected["num_steps"] = expected["checkpoint"]["every_steps"] = 23
    assert s.config.to_dict() == expected, s.name
  assert [ablation.negatives_per_query(32, "global", True, 1, s.config.data.num_negatives)
          for s in settings] == [63, 95, 159, 287]


def test_seeds_repeat_every_setting_and_the_summary_has_t_intervals(tmp_path):
  c = _config([{"name": "a", "batch_size": 16}, {"name": "b", "batch_size": 32}])
  c.ablation.seeds = (0, 1, 2)
  settings = ablation.settings_of(c, 8)
  assert [(s.name, s.setting, s.config.seed) for s in settings] == [
      ("a_seed0", "a", 0), ("a_seed1", "a", 1), ("a_seed2", "a", 2),
      ("b_seed0", "b", 0), ("b_seed1", "b", 1), ("b_seed2", "b", 2)]
  c.ablation.only = "b"
  assert [s.name for s in ablation.settings_of(c, 8)] == ["b_seed0", "b_seed1", "b_seed2"]
  c.ablation.seeds = (1, 1)
  with pytest.raises(ValueError, match=r"ablation.seeds=\(1, 1\): give distinct integers"):
    ablation.settings_of(c, 8)
  rows = [{"name": f"a_seed{i}", "setting": "a", "batch_size": 16, "m": v} for i, v in enumerate((1.0, 2.0, 3.0))]
  rows.append({"name": "b", "setting": "b", "batch_size": 32, "m": 0.5})
  (a, b) = ablation.summarize(rows, ["m"])
  # mean 2, sample std 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3).
  assert a["name"] == "a" and a["runs"] == 3 and a["m"] == 2.0 and a["m_std"] == 1.0
  np.testing.assert_allclose(a["m_ci95"], 4.302653 / np.sqrt(3), rtol=1e-6)
  assert b["runs"] == 1 and b["m"] == 0.5 and np.isnan(b["m_std"]) and np.isnan(b["m_ci95"])
  path = tmp_path / "ablation.png"
  summary = [dict(r, hard_negatives=True, learnable_temperature=False, negatives="global",
                  negatives_per_query=r["batch_size"] - 1) for r in (a, b)]
  ablation.plot_results(summary, str(path), ["m"], budget="budget: same steps per run")
  assert path.read_bytes()[:4] == b"\x89PNG"


def test_contrasts_pair_settings_that_differ_in_one_axis_with_welch_intervals():
  from scipy import stats
  base = {"batch_size": 32, "negatives": "global", "hard_negatives": True, "num_negatives": 1,
          "learnable_temperature": False, "queue_size": 0, "loss": "softmax", "implementation": "dense"}
  groups = {"g": (base, (0.50, 0.52, 0.51)), "l": (dict(base, negatives="local"), (0.40, 0.45, 0.41)),
            "q": (dict(base, queue_size=192), (0.50, 0.53, 0.49)),
            "b64": (dict(base, batch_size=64), (0.6, 0.6, 0.6)),  # Batch size is not a contrast axis.
            "lq": (dict(base, negatives="local", queue_size=192), (0.3, 0.31, 0.29))}  # Differs from g in two.
  rows = [dict(cols, name=f"{name}_seed{i}", setting=name, m=v)
          for name, (cols, values) in groups.items() for i, v in enumerate(values)]
  pairs = {(p["a_setting"], p["b_setting"]): p for p in ablation.contrasts(rows, ["m"])}
  assert set(pairs) == {("g", "l"), ("g", "q"), ("l", "lq"), ("q", "lq")}
  for (a, b), p in pairs.items():
    ci = stats.ttest_ind(groups[b][1], groups[a][1], equal_var=False).confidence_interval(0.95)
    np.testing.assert_allclose(p["difference"], np.mean(groups[b][1]) - np.mean(groups[a][1]), atol=1e-12)
    np.testing.assert_allclose(p["ci95"], (ci.high - ci.low) / 2, rtol=1e-9)
  assert pairs[("g", "l")]["changed"] == "negatives" and pairs[("g", "l")]["beyond_spread"] is True
  assert pairs[("g", "q")]["changed"] == "queue_size" and pairs[("g", "q")]["beyond_spread"] is False
  assert pairs[("g", "q")]["runs"] == "3+3"
  one_run = ablation.contrasts([dict(base, name="a", m=0.5), dict(base, name="b", loss="sigmoid", m=0.4)], ["m"])
  assert np.isnan(one_run[0]["ci95"]) and one_run[0]["beyond_spread"] == ""


def test_variant_labels_name_the_non_default_loss_implementation_and_queue():
  row = dict(ROWS[1], loss="sigmoid", implementation="tiled", queue_size=192)
  assert ablation.variant_label(row) == "hard negatives, fixed tau, sigmoid, tiled, queue 192"
  assert ablation.variant_label(ROWS[1]) == "hard negatives, fixed tau"


def test_colbert_settings_are_scored_by_end_to_end_maxsim(tmp_path, monkeypatch, minilm_path, small_beir):
  """configs/ablation_colbert.py (in-batch vs k = 1) on a 1-layer body, 2 steps each: each row's nDCG@10 is
  that of numpy MaxSim between the run's query and document token vectors over the whole corpus; an STS task
  is refused before anything trains."""
  from neuralir_jax import colbert, data, evaluate, ir_metrics
  from tests.train_helpers import save_tiny_encoder
  monkeypatch.chdir(ROOT)
  c = config_lib.load_config(os.path.join(ROOT, "configs", "ablation_colbert.py"))
  overrides = {"model.init": save_tiny_encoder(str(tmp_path / "body"), minilm_path), "num_steps": 2,
               "batch_size": 8, "data.query_max_length": 16, "data.max_length": 24,
               "data.document_max_length": 24, "colbert.document_length": 0, "data.buckets": (),
               "optimizer.learning_rate": 1e-2,
               "ablation.only": "inbatch,k1",
               "ablation.eval_tasks": (f"beir:{small_beir}:test",)}
  c.update_from_flattened_dict(overrides)
  rows = ablation.run_ablation(c, str(tmp_path / "runs"))
  assert [(r["name"], r["negatives_per_query"]) for r in rows] == [("inbatch", 7), ("k1", 15)]
  label = ablation.task_label(c.ablation.eval_tasks[0]) + "/ndcg@10"
  corpus, queries, qrels = data.load_beir(small_beir, "test")
  for row in rows:
    model = colbert.load_trained(str(tmp_path / "runs" / row["name"]))
    docs = model.encode_document(list(corpus.values()))
    run = {}
    for q, vectors in zip(qrels, model.encode_query([queries[q] for q in qrels])):
      run[q] = {d: colbert.maxsim(vectors, v) for d, v in zip(corpus, docs)}
    want = ir_metrics.compute_metrics(run, qrels, evaluate.RETRIEVAL_METRICS)["ndcg@10"]
    assert row[label] == pytest.approx(want, abs=1e-6)
  assert rows[0][label] != rows[1][label]  # Different negatives, different models.
  c.ablation.eval_tasks = ("sts:data/sts/sick_trial.tsv",)
  with pytest.raises(ValueError, match=r"ablation.eval_tasks has 'sts:data/sts/sick_trial.tsv', but inbatch "
                                       r"trains a ColBERT model"):
    ablation.run_ablation(c, str(tmp_path / "sts"))
