"""Distillation into the bi-encoder: MarginMSE and listwise KL against numpy, teacher scores read from mined
rows, parallel sentences, and 8 devices == 1 for every distillation objective."""

import gzip
import json

import jax
import numpy as np
import pytest

from neuralir_jax import data, losses
from tests.train_helpers import max_abs_diff, run_steps, save_tiny_cross_encoder, save_tiny_encoder, tiny_config


def test_margin_mse_and_listwise_kl_match_numpy():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(0, 3, size=(5, 4)).astype(np.float32)
  want_margin = np.mean(((s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])) ** 2)
  np.testing.assert_allclose(losses.margin_mse_loss(s, t), want_margin, rtol=1e-6)
  p_t = np.exp(t / 2.0) / np.exp(t / 2.0).sum(1, keepdims=True)
  p_s = np.exp(s) / np.exp(s).sum(1, keepdims=True)
  np.testing.assert_allclose(losses.listwise_kl_loss(s, t, 2.0), np.mean(np.sum(p_t * np.log(p_t / p_s), 1)),
                             rtol=1e-5)
  assert float(losses.listwise_kl_loss(t / 2.0, t, 2.0)) == pytest.approx(0.0, abs=1e-6)


def _write_jsonl(path, rows):
  with gzip.open(path, "wt") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)


def test_teacher_scores_follow_the_records_negatives(tmp_path):
  rows = [{"query": "q1", "positives": ["p1a", "p1b"], "negatives": ["n1", "n2", "n3"],
           "positive_scores": [0.9, 0.8], "negative_scores": [0.5, 0.4, 0.3],
           "teacher_positive_scores": [7.0, 6.0], "teacher_negative_scores": [1.0, -2.0, -3.0]},
          {"query": "q2", "positives": ["p2"], "negatives": ["m1", "m2"],
           "positive_scores": [0.7], "negative_scores": [0.2, 0.1],
           "teacher_positive_scores": [5.0], "teacher_negative_scores": [0.5, 0.25]}]
  path = str(tmp_path / "mined.jsonl.gz")
  _write_jsonl(path, rows)
  records = data.load_records(f"triples:{path}", "triplets", num_negatives=2, scores="teacher")
  assert [(r["positive"], r["teacher_scores"]) for r in records] == [
      ("p1a", [7.0, 1.0, -2.0]), ("p1b", [6.0, 1.0, -2.0]), ("p2", [5.0, 0.5, 0.25])]
  miner = data.load_records(f"triples:{path}", "triplets", num_negatives=2, scores="miner")
  assert miner[2]["teacher_scores"] == [0.7, 0.2, 0.1]
  del rows[1]["teacher_negative_scores"]
  _write_jsonl(path, rows)
  with pytest.raises(ValueError, match=r"mined.jsonl.gz:2: no teacher_negative_scores .*--teacher CE_DIR"):
    data.load_records(f"triples:{path}", "triplets", num_negatives=2, scores="teacher")
  rows[1]["teacher_negative_scores"] = [1.0]
  _write_jsonl(path, rows)
  with pytest.raises(ValueError, match=r":2: field 'teacher_negative_scores' must be a list of 2 finite"):
    data.load_records(f"triples:{path}", "triplets", num_negatives=2, scores="teacher")


def test_parallel_source_and_joined_sources(tmp_path):
  path = tmp_path / "en-de.tsv"
  path.write_text("A dog runs.\tEin Hund rennt.\nHello.\tHallo.\tServus.\n")
  records = data.load_records(f"parallel:{path}", "pairs")
  assert records == [{"anchor": "A dog runs.", "positive": "Ein Hund rennt."},
                     {"anchor": "Hello.", "positive": "Hallo."}, {"anchor": "Hello.", "positive": "Servus."}]
  other = tmp_path / "more.tsv"
  other.write_text("Hello.\tBonjour.\n")
  joined = data.load_records(f"parallel:{path},parallel:{other}", "duplicates")
  assert [r["anchor"] for r in joined] == ["A dog runs.", "Ein Hund rennt.", "Hello.", "Hallo.", "Servus.",
                                           "Bonjour."]
  (tmp_path / "bad.tsv").write_text("ok\tgut\nno translation here\n")
  with pytest.raises(ValueError, match=r"bad.tsv:2: one field; write source<TAB>target"):
    data.load_records(f"parallel:{tmp_path / 'bad.tsv'}", "pairs")


def _distill_config(**overrides):
  settings = {"objectives.nli_softmax": 0.0, "objectives.sts_cosine": 0.0, "objectives.triplet": 0.0,
              "objectives.sigmoid": 0.0, "objectives.infonce": 0.2, "objectives.margin_mse": 1.0,
              "objectives.listwise_kl": 0.5, "objectives.embedding_mse": 3.0, "distill.teacher": "minilm",
              "distill.teacher_temperature": 2.0, "distill.teacher_scale": 0.5,
              "distill.embedding_columns": ("anchor", "positive")}
  settings.update(overrides)
  return tiny_config(**settings)


@pytest.fixture(scope="module")
def distill_single_device():
  return run_steps(_distill_config(), 1, num_steps=2)


def test_eight_devices_equal_one(distill_single_device):
  """pjit + GradCache (the distillation losses are per-query, the same code under pmap)."""
  run = run_steps(_distill_config(**{"grad_cache.chunk_size": 1}), 8, num_steps=2)
  loss, metrics, grads = run["grads"]
  ref_loss, ref_metrics, ref_grads = distill_single_device["grads"]
  assert {"loss/margin_mse", "loss/listwise_kl", "loss/embedding_mse", "loss/infonce"} <= set(ref_metrics)
  np.testing.assert_allclose(loss, ref_loss, atol=2e-5)
  for name in ref_metrics:
    np.testing.assert_allclose(metrics[name], ref_metrics[name], atol=2e-5, err_msg=name)
  # Teacher margins of ~5 against 20 * cos give gradients near 1: float32 sums in another order differ
  # by a few 1e-5 there, so the bound is relative to the largest gradient.
  largest = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(ref_grads))
  assert largest > 0.1 and max_abs_diff(grads, ref_grads) <= 1e-4 * largest
  for got, ref in zip(run["metrics"], distill_single_device["metrics"]):
    for name in ref:
      np.testing.assert_allclose(got[name], ref[name], rtol=1e-6, atol=2e-5, err_msg=name)  # grad_norm ~150.
  assert max_abs_diff(run["params"], distill_single_device["params"]) <= 2e-5


def test_teacher_embeddings_are_the_teachers_vectors_of_the_anchors(tmp_path, minilm_path):
  """attach_teacher_embeddings: each record gets the teacher's encode() of its anchor (a 32-wide random
  teacher saved to disk), and a teacher of another width is a one-line error."""
  from neuralir_jax import encoder as encoder_lib
  from neuralir_jax import train
  teacher = save_tiny_encoder(str(tmp_path / "teacher"), minilm_path)
  records = [{"anchor": "A dog runs.", "positive": "Ein Hund rennt."},
             {"anchor": "Hello.", "positive": "Hallo."}, {"anchor": "A dog runs.", "positive": "Un chien court."}]
  out = train.attach_teacher_embeddings(records, _distill_config(**{"distill.teacher": teacher}))
  want = encoder_lib.load_encoder(teacher).encode(["A dog runs.", "Hello.", "A dog runs."])
  np.testing.assert_allclose(np.stack([r["teacher_embedding"] for r in out]), want, atol=1e-6)
  assert "teacher_embedding" not in records[0]  # Copies; the caller's records are left as they were.
  with pytest.raises(ValueError, match="embeds in 384 dimensions, the student in 32"):
    train.attach_teacher_embeddings(records, _distill_config(**{"distill.teacher": minilm_path}))


def test_teacher_scores_from_a_cross_encoder_when_training_starts(tmp_path, minilm_path):
  """distill.scores=cross_encoder: each record's teacher_scores are the teacher's logits of its (anchor,
  positive) and (anchor, negative) pairs; a bi-encoder teacher is a one-line error naming the key."""
  from neuralir_jax import cross_encoder, train
  teacher = save_tiny_cross_encoder(str(tmp_path / "ce"), minilm_path)
  records = [{"anchor": "what lowers fever", "positive": "aspirin lowers fever", "negative": ["cats", "a car"]},
             {"anchor": "what is a dog", "positive": "dogs bark", "negative": ["aspirin lowers fever", "bread"]}]
  config = _distill_config(**{"distill.teacher": teacher, "distill.scores": "cross_encoder",
                              "objectives.embedding_mse": 0.0})
  out = train.attach_teacher_scores(records, config)
  pairs = [(r["anchor"], d) for r in records for d in (r["positive"], *r["negative"])]
  want = cross_encoder.load_cross_encoder(teacher).predict_logits(pairs)[:, 0].reshape(2, 3)
  assert np.std(want) > 0.05  # The head discriminates: a real comparison.
  np.testing.assert_allclose([r["teacher_scores"] for r in out], want, atol=1e-5)
  assert "teacher_scores" not in records[0]
  with pytest.raises(ValueError, match=r"distill.teacher .*names no \*ForSequenceClassification"):
    train.attach_teacher_scores(records, _distill_config(**{"distill.teacher": minilm_path,
                                                            "distill.scores": "cross_encoder"}))
