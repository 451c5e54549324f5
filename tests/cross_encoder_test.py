"""Cross-encoders: scores == sentence-transformers' CrossEncoder.predict, export round trips, `neuralir score`."""

import gzip
import json
import os

import numpy as np
import pytest

from neuralir_jax import cli, cross_encoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scifact_pairs(n: int = 10) -> list[tuple[str, str]]:
  root = os.path.join(REPO, "data", "retrieval", "scifact")
  with open(os.path.join(root, "queries.jsonl")) as f:
    queries = [json.loads(line)["text"] for _, line in zip(range(n), f)]
  with gzip.open(os.path.join(root, "corpus.jsonl.gz"), "rt") as f:
    docs = [(lambda d: f"{d.get('title', '')} {d['text']}".strip())(json.loads(line)) for _, line in zip(range(n), f)]
  pairs = [(q, d) for q, d in zip(queries, docs)] + [(queries[0], docs[1]), (queries[1], docs[0])]
  # Longer than 512 tokens together (longest-first truncation), an empty document, a tab-free long query.
  return pairs + [(queries[2] * 20, " ".join(docs[:6])), (queries[3], ""), ("a", docs[2])]


@pytest.fixture(scope="module")
def pairs():
  return _scifact_pairs()


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory, minilm_path):
  """sentence-transformers' CrossEncoder over the packaged MiniLM, a seeded 1-label head scaled up so
  the scores spread over (0, 1), saved in its own (6.x) layout."""
  import torch
  from sentence_transformers import CrossEncoder
  torch.manual_seed(0)
  model = CrossEncoder(minilm_path, num_labels=1)
  head = model[0].model.classifier
  with torch.no_grad():
    head.weight.mul_(40.0)
    head.bias.fill_(0.3)
  path = str(tmp_path_factory.mktemp("ce"))
  model.save(path)
  return path


def _st_predict(path, pairs):
  from sentence_transformers import CrossEncoder
  return CrossEncoder(path).predict(pairs, batch_size=4)


def test_scores_equal_sentence_transformers_cross_encoder(ce_dir, pairs):
  ours = cross_encoder.load_cross_encoder(ce_dir)
  assert (ours.config.num_labels, ours.config.activation, ours.config.max_length) == (1, "sigmoid", 512)
  got, want = ours.predict(pairs, batch_size=4), _st_predict(ce_dir, pairs)
  assert got.shape == (len(pairs),) and np.std(want) > 0.05  # The head discriminates: a real comparison.
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  assert max(len(ids) for ids, _ in ours.tokenize(pairs)) == 512  # The long pair was truncated.


def test_export_loads_in_transformers_and_sentence_transformers(ce_dir, pairs, tmp_path):
  from transformers import BertForSequenceClassification
  out = str(tmp_path / "export")
  assert cli.run(["export", "--model", ce_dir, "--output", out]) == 0
  _, info = BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  np.testing.assert_allclose(_st_predict(out, pairs), _st_predict(ce_dir, pairs), atol=1e-6, rtol=0)
  again = cross_encoder.load_cross_encoder(out)
  np.testing.assert_allclose(again.predict(pairs), _st_predict(ce_dir, pairs), atol=1e-4, rtol=0)


def test_plain_hf_three_label_directory_gives_logits(tmp_path, minilm_path, pairs):
  """A BertForSequenceClassification saved by transformers alone (no sentence-transformers files), 3 labels:
  no activation (Identity), [N, 3] scores, as CrossEncoder.predict."""
  import torch
  from transformers import AutoTokenizer, BertForSequenceClassification
  torch.manual_seed(1)
  model = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=3)
  path = str(tmp_path / "hf3")
  model.save_pretrained(path)
  AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
  ours = cross_encoder.load_cross_encoder(path)
  assert (ours.config.num_labels, ours.config.activation) == (3, "identity")
  got = ours.predict(pairs[:6])
  assert got.shape == (6, 3)
  np.testing.assert_allclose(got, _st_predict(path, pairs[:6]), atol=1e-4, rtol=0)


def test_score_command_writes_one_score_per_line(ce_dir, pairs, tmp_path):
  tsv = tmp_path / "pairs.tsv"
  tsv.write_text("".join(f"{q}\t{d}\n" for q, d in pairs), encoding="utf-8")
  out = tmp_path / "scores.npy"
  assert cli.run(["score", "--model", ce_dir, "--input", str(tsv), "--output", str(out)]) == 0
  np.testing.assert_allclose(np.load(out), _st_predict(ce_dir, pairs), atol=1e-4, rtol=0)


def test_score_command_bad_input_is_one_line_naming_the_line(ce_dir, tmp_path, minilm_path):
  tsv = tmp_path / "bad.tsv"
  tsv.write_text("q1\td1\nno tab here\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"bad.tsv:2: 1 tab-separated field\(s\); each line must be query<TAB>"):
    cli.run(["score", "--model", ce_dir, "--input", str(tsv), "--output", str(tmp_path / "s.npy")])
  tsv.write_text("q1\td1\n", encoding="utf-8")
  with pytest.raises(ValueError, match="names no \\*ForSequenceClassification architecture"):
    cli.run(["score", "--model", minilm_path, "--input", str(tsv), "--output", str(tmp_path / "s.npy")])
