"""End-to-end tests of the training loop: resume, preemption, multi-process, bad input, export.

Most runs go through the real `neuralir` command in a subprocess, as users run it, with the tiny config.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from neuralir_jax import checkpoint, preemption
from neuralir_jax import encoder as encoder_lib
from neuralir_jax.metric_writer import MetricWriter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.py")


def _env(devices: int | None = None) -> dict:
  env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  env.pop("JAX_NUM_CPU_DEVICES", None)
  if devices:
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
  return env


def neuralir(*args, devices=None, timeout=600, check=True) -> subprocess.CompletedProcess:
  proc = subprocess.run([sys.executable, "-m", "neuralir_jax.cli", *args], cwd=REPO, env=_env(devices),
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"neuralir {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc


def final_params(workdir: str, step: int | None = None) -> dict:
  params, _, _ = checkpoint.restore_params_and_config(workdir, step)
  return jax.device_get(params)


def assert_trees_equal(a, b, atol=0.0):
  flat_a, tree_a = jax.tree.flatten(a)
  flat_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(flat_a, flat_b):
    if atol:
      np.testing.assert_allclose(x, y, atol=atol, rtol=0)
    else:
      np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A tiny run on 8 devices (pjit, global negatives, NLI softmax + InfoNCE), dropout off."""
  workdir = str(tmp_path_factory.mktemp("tiny"))
  neuralir("train", "--config", TINY, "--workdir", workdir, "--config.num_steps=6",
           "--config.checkpoint.every_steps=3", "--config.log_every_steps=2",
           "--config.model.dropout_rate=0.0", "--config.eval.every_steps=6",
           "--config.eval.tasks=('sts:data/sts/sick_trial.tsv',)", devices=8)
  return workdir


def test_run_logs_every_objective_and_checkpoints_final_step(finished_run):
  rows = [json.loads(line) for line in open(os.path.join(finished_run, "metrics.jsonl"))]
  evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
  rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in rows] == [2, 4, 6]
  # The in-training evaluator ran at step 6 on SICK trial (500 pairs) and logged beside the training metrics.
  assert [r["step"] for r in evals] == [6]
  assert evals[0]["eval/sts:data/sts/sick_trial.tsv/num_pairs"] == 500
  from neuralir_jax import data, evaluate
  enc = encoder_lib.load_encoder(finished_run, step=6)
  again = evaluate.evaluate_sts(lambda t: enc.encode(t, batch_size=128),
                                data.read_sts(os.path.join(REPO, "data", "sts", "sick_trial.tsv")))
  np.testing.assert_allclose(evals[0]["eval/sts:data/sts/sick_trial.tsv/spearman"], again["spearman"], atol=1e-6)
  for key in ("loss", "loss/infonce", "loss/nli_softmax", "nli_accuracy", "grad_norm", "lr", "temperature",
              "negatives_per_query", "examples_per_second", "tokens_per_second", "mfu"):
    assert key in rows[-1], key
  # Global negatives, batch 16, one hard negative each: 16 * 2 - 1 candidates besides the positive.
  assert rows[-1]["negatives_per_query"] == 31
  np.testing.assert_allclose(rows[-1]["loss"], rows[-1]["loss/infonce"] + rows[-1]["loss/nli_softmax"], rtol=1e-5)
  steps = sorted(int(d) for d in os.listdir(os.path.join(finished_run, "checkpoints")) if d.isdigit())
  assert steps == [3, 6]
  assert os.listdir(os.path.join(finished_run, "tensorboard"))


def test_finished_workdir_exits_without_training(finished_run):
  before = open(os.path.join(finished_run, "metrics.jsonl")).read()
  proc = neuralir("train", "--config", TINY, "--workdir", finished_run, "--config.num_steps=6",
                  "--config.model.dropout_rate=0.0", devices=8)
  assert "nothing to do" in proc.stderr
  assert open(os.path.join(finished_run, "metrics.jsonl")).read() == before


def test_restore_onto_one_device_continues_like_eight(finished_run, tmp_path):
  """Resuming the 8-device checkpoint on 1 device gives the params an 8-device continuation gives."""
  import shutil
  one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
  for target in (one, eight):
    shutil.copytree(finished_run, target)
  args = ("--config", TINY, "--config.num_steps=8", "--config.checkpoint.every_steps=3",
          "--config.model.dropout_rate=0.0")
  resumed = neuralir("train", "--workdir", one, *args, devices=1)
  neuralir("train", "--workdir", eight, *args, devices=8)
  assert_trees_equal(final_params(one, 8), final_params(eight, 8), atol=2e-5)
  # A changed setting is named on resume (logging cadence and eval settings are routine and are not).
  assert "num_steps: 6 -> 8" in resumed.stderr and "log_every_steps" not in resumed.stderr


def test_kill_9_then_rerun_matches_uninterrupted_run_bit_for_bit(tmp_path):
  """Dropout on and a negative queue (two steps' 32 candidates): the rng, optimizer state, data position
  and queue must all be restored exactly."""
  args = ("train", "--config", TINY, "--config.num_steps=24", "--config.checkpoint.every_steps=4",
          "--config.log_every_steps=12", "--config.checkpoint.keep=3", "--config.infonce.queue_size=64")
  reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
  neuralir(*args, "--workdir", reference)

  proc = subprocess.Popen([sys.executable, "-m", "neuralir_jax.cli", *args, "--workdir", killed], cwd=REPO,
                          env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(killed, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
      os.kill(proc.pid, signal.SIGKILL)
      break
    time.sleep(0.02)
  assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
  latest = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert latest < 24

  neuralir(*args, "--workdir", killed)
  assert_trees_equal(final_params(killed, 24), final_params(reference, 24))


@pytest.mark.parametrize("signum, returncode", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_save_the_current_step_and_exit_cleanly(tmp_path, signum, returncode):
  workdir = str(tmp_path / "w")
  proc = subprocess.Popen([sys.executable, "-m", "neuralir_jax.cli", "train", "--config", TINY, "--workdir", workdir,
                           "--config.num_steps=100000", "--config.checkpoint.every_steps=100000"],
                          cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
    time.sleep(0.05)
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == returncode, err[-2000:]
  assert "preempted" in err
  assert "Traceback" not in err
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  # No periodic checkpoint was due: the one checkpoint is the step the signal arrived at.
  assert len(steps) == 1 and 0 < steps[0] < 100000
  logged = [json.loads(line)["step"] for line in open(metrics)]
  assert logged[-1] == steps[0]


def test_signal_handlers_are_restored_after_the_training_block():
  before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
  with preemption.Preemption() as stop:
    assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert stop.signum == signal.SIGTERM
  assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before


def test_metrics_jsonl_drops_steps_after_the_resumed_checkpoint_and_writes_no_bare_nan(tmp_path):
  writer = MetricWriter(str(tmp_path), 0, 10, enabled=True)
  for step in (2, 4, 6):
    writer.write(step, {"loss": 1.0 / step, "mfu": float("nan")})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 8, "loss": 0.1')  # Killed halfway through a line.
  writer = MetricWriter(str(tmp_path), 4, 10, enabled=True)  # Resumed from the step-4 checkpoint.
  writer.write(6, {"loss": float("inf")})
  writer.close()
  text = open(tmp_path / "metrics.jsonl").read()
  assert "NaN" not in text and "Infinity" not in text
  rows = [json.loads(line) for line in text.splitlines()]
  assert [r["step"] for r in rows] == [2, 4, 6]
  assert rows[0]["mfu"] is None and rows[2]["loss"] is None


def test_workdir_holding_foreign_files_is_refused_and_left_untouched(tmp_path, minilm_path):
  import shutil
  exported = str(tmp_path / "exported_model")
  shutil.copytree(minilm_path, exported)
  before = {f: open(os.path.join(exported, f), "rb").read() for f in os.listdir(exported)
            if os.path.isfile(os.path.join(exported, f))}
  proc = neuralir("train", "--config", TINY, "--workdir", exported, "--config.num_steps=2", check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "is not a neuralir workdir" in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr
  after = {f: open(os.path.join(exported, f), "rb").read() for f in os.listdir(exported)
           if os.path.isfile(os.path.join(exported, f))}
  assert after == before and not os.path.exists(os.path.join(exported, "checkpoints"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(finished_run, tmp_path):
  """Resumed from the finished 6-step run (a copy) with an absurd learning rate."""
  import shutil
  workdir = str(tmp_path / "w")
  shutil.copytree(finished_run, workdir)
  before = final_params(workdir, 6)
  proc = neuralir("train", "--config", TINY, "--workdir", workdir, "--config.num_steps=40",
                  "--config.optimizer.learning_rate=1e30", "--config.optimizer.warmup_fraction=0.0",
                  "--config.checkpoint.every_steps=1", "--config.log_every_steps=1",
                  "--config.model.dropout_rate=0.0", devices=8, check=False)
  assert proc.returncode != 0
  assert "loss is nan" in proc.stderr.lower() or "loss is inf" in proc.stderr.lower(), proc.stderr[-2000:]
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  latest_params = final_params(workdir, steps[-1])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(latest_params))
  if steps[-1] == 6:
    assert_trees_equal(latest_params, before)


@pytest.mark.parametrize("override, needle", [
    ("--config.batch_size=12", "not divisible by the 8 devices"),
    ("--config.optimizer.learning_rat=1e-3", "unknown config key 'optimizer.learning_rat'"),
    ("--config.data.train=nli:data/nli/missing.jsonl.gz", "data/nli/missing.jsonl.gz"),
    # Found before step 1, not at the first evaluation hours later.
    ("--config.eval.tasks=('sts:data/sts/missing.tsv',)", "data/sts/missing.tsv"),
    ("--config.checkpoint.keep=0", "checkpoint.keep"),
])
def test_bad_input_is_one_line_error_before_training(tmp_path, override, needle):
  workdir = str(tmp_path / "w")
  proc = neuralir("train", "--config", TINY, "--workdir", workdir, override, devices=8, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  error_lines = [l for l in proc.stderr.splitlines() if l.startswith("neuralir: error:")]
  assert len(error_lines) == 1 and needle in error_lines[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not os.path.isdir(os.path.join(workdir, "checkpoints")) or not os.listdir(os.path.join(workdir, "checkpoints"))


def test_two_processes_of_four_devices_equal_one_process_of_eight(finished_run, tmp_path):
  workdir = str(tmp_path / "mp")
  env = _env()
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
  proc = subprocess.run(
      [os.path.join(REPO, "launch", "local_multiprocess.sh"), "2", "4", sys.executable, "-m", "neuralir_jax.cli",
       "train", "--config", TINY, "--workdir", workdir, "--config.num_steps=6",
       "--config.checkpoint.every_steps=3", "--config.log_every_steps=2", "--config.model.dropout_rate=0.0"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert_trees_equal(final_params(workdir, 6), final_params(finished_run, 6), atol=1e-5)


def test_export_from_workdir_loads_in_sentence_transformers(finished_run, tmp_path):
  out = str(tmp_path / "export")
  neuralir("export", "--workdir", finished_run, "--output", out)
  ours = encoder_lib.load_encoder(finished_run).encode(["a man plays a guitar", "two dogs run on grass"])
  from sentence_transformers import SentenceTransformer
  theirs = SentenceTransformer(out, device="cpu").encode(["a man plays a guitar", "two dogs run on grass"])
  cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
  assert cos.min() >= 0.99999
