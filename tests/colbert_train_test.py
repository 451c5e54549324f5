"""ColBERT training on the shared loop: MaxSim InfoNCE and listwise KL against a numpy reference built from
the inference path's token vectors, 8 devices == 1 (pjit + GradCache, pmap), and a trained model's export read by
sentence-transformers' MultiVectorEncoder and by our loader."""

import gzip
import json

import jax
import numpy as np
import pytest

from neuralir_jax import cli, colbert, families
from tests.train_helpers import max_abs_diff, random_batch, run_steps, save_tiny_encoder, tiny_config

TOL = 2e-5
NDEV = 8
MASK_ID, SKIP_IDS, QUERY_LENGTH = 3, (5, 7, 11), 12


def colbert_config(**overrides):
  settings = {"model.family": "colbert", "objectives.nli_softmax": 0.0, "objectives.sts_cosine": 0.0,
              "objectives.triplet": 0.0, "objectives.sigmoid": 0.0, "objectives.infonce": 1.0,
              "objectives.listwise_kl": 0.5, "infonce.learnable_temperature": False, "infonce.symmetric": False,
              "infonce.temperature": 0.5, "distill.scale": 0.7, "data.packing": False,
              "data.query_max_length": QUERY_LENGTH, "colbert.dim": 16, "colbert.mask_token_id": MASK_ID,
              "colbert.skiplist_ids": SKIP_IDS}
  settings.update(overrides)
  return tiny_config(**settings)


def _reference_losses(family, params, batch, temperature, scale):
  """numpy InfoNCE and listwise KL over MaxSim of `colbert.token_vectors` (what encode_query /
  encode_document run), with the expansion and the scoring masks built here."""
  config = family.model_config
  vectors = jax.jit(lambda ids, att: colbert.token_vectors(config, params["encoder"], ids, att))
  b, length = batch["anchor_ids"].shape
  q_ids = np.full((b, QUERY_LENGTH), MASK_ID, np.int32)
  q_ids[:, :length] = np.where(batch["anchor_mask"] > 0, batch["anchor_ids"], MASK_ID)
  q = np.asarray(vectors(q_ids, np.ones_like(q_ids)))  # Every position attended and scored.
  k = batch["negative_ids"].shape[1]
  doc_ids = np.concatenate([batch["positive_ids"], batch["negative_ids"].reshape(b * k, -1)])
  doc_mask = np.concatenate([batch["positive_mask"], batch["negative_mask"].reshape(b * k, -1)])
  d = np.asarray(vectors(doc_ids, doc_mask))
  scored = (doc_mask > 0) & ~np.isin(doc_ids, SKIP_IDS)

  def maxsim(i, c):
    return float((q[i] @ d[c][scored[c]].T).max(axis=1).sum())

  scores = np.array([[maxsim(i, c) for c in range(len(d))] for i in range(b)])
  hashes = np.concatenate([batch["positive_hash"], batch["negative_hash"].reshape(-1)])
  logits = scores / temperature
  logits[(hashes[None, :] == batch["positive_hash"][:, None]) & ~np.eye(b, len(d), dtype=bool)] = -np.inf
  log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(
      1, keepdims=True)
  infonce = -np.mean(log_p[np.arange(b), np.arange(b)])
  own = np.stack([scores[np.arange(b), np.arange(b)]] + [scores[np.arange(b), b + np.arange(b) * k + j]
                                                         for j in range(k)], axis=1) * scale
  t = batch["teacher_scores"]
  log_t = t - np.log(np.exp(t).sum(1, keepdims=True))
  log_s = own - np.log(np.exp(own).sum(1, keepdims=True))
  kl = np.mean(np.sum(np.exp(log_t) * (log_t - log_s), axis=1))
  return infonce, kl, (hashes[None, :] == batch["positive_hash"][:, None]).sum() - b


def test_maxsim_losses_match_numpy_on_the_inference_vectors():
  config = colbert_config()
  family = families.make_family(config)
  params = family.init_params(jax.random.PRNGKey(0))
  batch = random_batch()
  aux = {k: v for k, v in batch.items() if not k.endswith(("_ids", "_mask"))}

  @jax.jit
  def loss_fn(params, batch):
    texts, unstack = family.inputs(batch)
    assert texts["query"][0].shape == (16, 8) and texts["document"][0].shape == (16 * 3, 8)
    outs = {g: family.embed_fn(g)(params["encoder"], ids, mask, None) for g, (ids, mask) in texts.items()}
    assert outs["query"].shape == (16, QUERY_LENGTH, 16) and outs["document"].shape == (48, 8, 17)
    return family.loss({}, unstack(outs), aux, None)

  loss, metrics = loss_fn(params, batch)
  infonce, kl, masked = _reference_losses(family, params, batch, 0.5, 0.7)
  assert masked == 2  # Rows 3 and 12 share a positive: each masks the other's.
  np.testing.assert_allclose(metrics["loss/infonce"], infonce, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/listwise_kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(loss, infonce + 0.5 * kl, rtol=1e-5)
  np.testing.assert_allclose(metrics["negatives_per_query"], 48 - 1 - masked / 16, rtol=1e-6)


@pytest.fixture(scope="module")
def colbert_single_device():
  return run_steps(colbert_config(), 1, num_steps=2)


@pytest.mark.parametrize("overrides", [{"grad_cache.chunk_size": 1}, {"parallel.strategy": "pmap"}],
                         ids=["pjit_gradcache", "pmap"])
def test_eight_devices_equal_one(colbert_single_device, overrides):
  """Document token vectors all-gathered across 8 devices (pjit + GradCache with one example per chunk, and
  pmap) give the 1-device loss, metrics, gradients and parameters."""
  run = run_steps(colbert_config(**overrides), NDEV, num_steps=2)
  loss, metrics, grads = run["grads"]
  ref_loss, ref_metrics, ref_grads = colbert_single_device["grads"]
  np.testing.assert_allclose(loss, ref_loss, atol=TOL)
  assert set(metrics) == set(ref_metrics) >= {"loss/infonce", "loss/listwise_kl", "positive_first"}
  for name in ref_metrics:
    np.testing.assert_allclose(metrics[name], ref_metrics[name], atol=TOL, err_msg=name)
  assert max_abs_diff(grads, ref_grads) <= TOL
  assert max_abs_diff(run["params"], colbert_single_device["params"]) <= TOL
  init = families.make_family(colbert_config()).init_params(jax.random.split(jax.random.PRNGKey(0))[0])
  assert max_abs_diff(run["params"]["encoder"]["projection"], jax.device_get(init["encoder"]["projection"])) > 1e-4


QUERIES = ["what is a cat?", "How do vaccines train the immune system?"]
DOCUMENTS = ["A cat, is small.", "Vaccines expose the immune system to a harmless antigen; memory cells "
             "remember it.", "Paris is the capital of France."]


def test_trained_colbert_exports_to_sentence_transformers_and_back(tmp_path, minilm_path):
  """configs/colbert_scifact.py on a 1-layer body for 2 steps; the export's token vectors and MaxSim under
  sentence-transformers equal the workdir's, and our loader reads the export back."""
  rows = [{"query": f"claim {i} about {w}", "positive": f"{w} abstract {i}, with results.",
           "negatives": [f"unrelated text {i} {j}." for j in range(3)]}
          for i, w in enumerate(["cats", "vaccines", "cells", "Paris"] * 2)]
  data = tmp_path / "rows.jsonl.gz"
  with gzip.open(data, "wt") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  body = save_tiny_encoder(str(tmp_path / "body"), minilm_path)
  work, out = tmp_path / "w", tmp_path / "export"
  assert cli.run(["train", "--config", "configs/colbert_scifact.py", "--workdir", str(work),
                  f"--config.model.init={body}", f"--config.data.train=triples:{data}", "--config.num_steps=2",
                  "--config.batch_size=8", "--config.data.query_max_length=16", "--config.data.max_length=24",
                  "--config.data.document_max_length=24", "--config.data.buckets=()",
                  "--config.colbert.document_length=12", "--config.optimizer.learning_rate=1e-3"]) == 0
  assert cli.run(["export", "--workdir", str(work), "--output", str(out)]) == 0
  ours = colbert.load_any(str(work))
  from sentence_transformers import MultiVectorEncoder
  st = MultiVectorEncoder(str(out), device="cpu")
  back = colbert.load_multi_vector(str(out))
  q_st = st.encode_query(QUERIES, convert_to_numpy=True)
  d_st = st.encode_document(DOCUMENTS, convert_to_numpy=True)
  for model in (ours, back):
    for got, want in zip(model.encode_query(QUERIES), q_st):
      assert got.shape == want.shape == (16, 128)
      np.testing.assert_allclose(got, want, atol=1e-4)
    for got, want in zip(model.encode_document(DOCUMENTS), d_st):
      assert got.shape == want.shape
      np.testing.assert_allclose(got, want, atol=1e-4)
  # The workdir's tokenizer (what training tokenised with) keeps the markers as single tokens ([unused0] = 1).
  assert ours.tokenizer.token_ids(["[unused0] a cat"])[0] == [101, 1, 1037, 4937, 102]
  # [CLS] [unused1] a cat , is small . [SEP]: the marker is one token; ',' and '.' are not scored.
  assert ours.encode_document(DOCUMENTS[:1])[0].shape[0] == 7
  # Trained on 24-token documents, encoded up to colbert.document_length = 12 (in the export too): [CLS]
  # [unused1] vaccines expose the immune system to a harmless antigen [SEP].
  assert ours.encode_document(DOCUMENTS[1:2])[0].shape[0] == back.encode_document(DOCUMENTS[1:2])[0].shape[0] == 12
  pairs = [(q, d) for q in QUERIES for d in DOCUMENTS]
  (tmp_path / "pairs.tsv").write_text("".join(f"{q}\t{d}\n" for q, d in pairs))
  want = np.asarray(st.similarity(q_st, d_st)).reshape(-1)
  for model in (str(work), str(out)):
    assert cli.run(["score", "--model", model, "--input", str(tmp_path / "pairs.tsv"),
                    "--output", str(tmp_path / "s.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, atol=1e-4, rtol=1e-5)
