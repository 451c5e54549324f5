"""Cross-encoder training on the shared loop: pairs joined on device as the tokenizer joins them, each ce_*
objective against a numpy reference, and 8 devices == 1 (pjit + GradCache, and pmap)."""

import jax
import numpy as np
import pytest

from neuralir_jax import cross_encoder, families
from tests.train_helpers import max_abs_diff, random_batch, run_steps, tiny_config

TOL = 2e-5
NDEV = 8


def ce_config(**overrides):
  settings = {"model.family": "cross_encoder", "objectives.nli_softmax": 0.0, "objectives.sts_cosine": 0.0,
              "objectives.triplet": 0.0, "objectives.infonce": 0.0, "objectives.sigmoid": 0.0,
              "infonce.learnable_temperature": False, "objectives.ce_pointwise": 0.5,
              "objectives.ce_listwise": 1.0, "objectives.ce_pairwise": 0.3, "data.packing": False}
  settings.update(overrides)
  return tiny_config(**settings)


def test_concat_texts_equals_the_tokenizers_pair_encoding(minilm_path):
  from neuralir_jax import tokenization
  tok = tokenization.Tokenizer(minilm_path)
  queries = ["what is a cross-encoder?", "q"]
  docs = ["It reads the query and the document together.", "a much longer document, with commas, words and more"]
  q_ids, q_mask = tok(queries, max_length=16, pad_to=16)
  d_ids, d_mask = tok(docs, max_length=24, pad_to=24)
  ids, mask, types = jax.device_get(cross_encoder.concat_texts(
      (q_ids, q_mask, np.zeros_like(q_ids)), (d_ids, d_mask), tok.pad_id))
  assert ids.shape == (2, 39)
  model = cross_encoder.CrossEncoder(cross_encoder.CrossEncoderConfig(
      __import__("neuralir_jax.hf_io", fromlist=["x"]).read_bert_config(minilm_path)), {}, tok)
  for row, (want_ids, want_types) in enumerate(model.tokenize(list(zip(queries, docs)))):
    n = len(want_ids)
    assert ids[row, :n].tolist() == want_ids and types[row, :n].tolist() == want_types
    assert mask[row].tolist() == [1] * n + [0] * (39 - n) and (ids[row, n:] == tok.pad_id).all()


def _numpy_losses(logits_BxN, triples_Bx2K):
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  targets = np.zeros_like(logits_BxN)
  targets[:, 0] = 1
  point = -np.mean(targets * np.log(sig(logits_BxN)) + (1 - targets) * np.log(1 - sig(logits_BxN)))
  shifted = logits_BxN - logits_BxN.max(1, keepdims=True)
  listwise = -np.mean(shifted[:, 0] - np.log(np.exp(shifted).sum(1)))
  k = triples_Bx2K.shape[1] // 2
  t = np.concatenate([np.ones((len(triples_Bx2K), k)), np.zeros((len(triples_Bx2K), k))], 1)
  pair = -np.mean(t * np.log(sig(triples_Bx2K)) + (1 - t) * np.log(1 - sig(triples_Bx2K)))
  return point, listwise, pair


def test_objectives_match_numpy_on_the_models_logits():
  """The loss of a batch equals the numpy losses of the logits that `logits` gives each joined pair."""
  config = ce_config()
  family = families.make_family(config)
  params = family.init_params(jax.random.PRNGKey(0))
  batch = {k: v[:4] for k, v in random_batch(length=6, k=2).items()}
  @jax.jit
  def loss_fn(params, batch):
    texts, unstack = family.inputs(batch)
    assert texts["pairs"][0].shape == (4 * 3, 11) and texts["triples"][0].shape == (4 * 4, 16)
    outs = {g: family.embed_fn(g)(params["encoder"], ids, mask, None) for g, (ids, mask) in texts.items()}
    return family.loss({}, unstack(outs), {}, None)

  loss, metrics = loss_fn(params, batch)
  # Reference logits: each (query, document[, document]) joined in numpy, right-padded to 16, scored in one
  # call (a bug in the on-device join, the token types or the row order changes them).
  def text(ids, mask):
    return list(ids[:int(mask.sum())])
  rows, types = [], []
  def add(parts):
    ids = text(*parts[0]) + [t for p in parts[1:] for t in text(*p)[1:]]
    kinds = [0] * int(parts[0][1].sum()) + [1] * (len(ids) - int(parts[0][1].sum()))
    rows.append(ids + [0] * (16 - len(ids)))
    types.append(kinds + [0] * (16 - len(kinds)))
  q = [(batch["anchor_ids"][b], batch["anchor_mask"][b]) for b in range(4)]
  docs = [[(batch["positive_ids"][b], batch["positive_mask"][b])] +
          [(batch["negative_ids"][b, j], batch["negative_mask"][b, j]) for j in range(2)] for b in range(4)]
  for b in range(4):
    for d in docs[b]:
      add([q[b], d])
  for b in range(4):
    for parts in ([q[b], docs[b][0], docs[b][1]], [q[b], docs[b][0], docs[b][2]],
                  [q[b], docs[b][1], docs[b][0]], [q[b], docs[b][2], docs[b][0]]):
      add(parts)
  ids = np.array(rows, np.int32)
  mask = (np.array([[t for t in r] for r in rows]) != 0).astype(np.int32)
  for i, r in enumerate(rows):  # Random ids are >= 1, so the first 0 is the padding.
    mask[i] = np.arange(16) < (r.index(0) if 0 in r else 16)
  scores = np.asarray(jax.jit(cross_encoder.logits, static_argnums=0)(
      family.model_config, params["encoder"], ids, mask, np.array(types, np.int32)))[:, 0]
  pairs, triples = scores[:12].reshape(4, 3), scores[12:].reshape(4, 4)
  # The meter counts the joined inputs' real tokens against the positions computed (12 x 11 + 16 x 16).
  assert family.token_counts(batch) == (int(mask.sum()), 12 * 11 + 16 * 16)
  point, listwise, pair = _numpy_losses(pairs, triples)
  np.testing.assert_allclose(metrics["loss/ce_pointwise"], point, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/ce_listwise"], listwise, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/ce_pairwise"], pair, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.5 * point + listwise + 0.3 * pair, rtol=1e-5)


@pytest.fixture(scope="module")
def ce_single_device():
  return run_steps(ce_config(), 1, num_steps=2)


def test_eight_devices_equal_one(ce_single_device):
  """pjit + GradCache (one example's pairs per chunk: the logits are cached and replayed); the family's code
  is also run under pmap below."""
  run = run_steps(ce_config(**{"grad_cache.chunk_size": 1}), NDEV, num_steps=2)
  loss, metrics, grads = run["grads"]
  ref_loss, ref_metrics, ref_grads = ce_single_device["grads"]
  np.testing.assert_allclose(loss, ref_loss, atol=TOL)
  assert set(metrics) == set(ref_metrics) >= {"loss/ce_pointwise", "loss/ce_listwise", "loss/ce_pairwise",
                                              "positive_first", "pairwise_accuracy"}
  for name in ref_metrics:
    np.testing.assert_allclose(metrics[name], ref_metrics[name], atol=TOL, err_msg=name)
  assert max_abs_diff(grads, ref_grads) <= TOL
  for got, ref in zip(run["metrics"], ce_single_device["metrics"]):
    for name in ref:
      np.testing.assert_allclose(got[name], ref[name], atol=TOL, err_msg=name)
  assert max_abs_diff(run["params"], ce_single_device["params"]) <= TOL
  init = families.make_family(ce_config()).init_params(jax.random.split(jax.random.PRNGKey(0))[0])
  assert max_abs_diff(run["params"]["encoder"]["classifier"], jax.device_get(init["encoder"]["classifier"])) > 1e-3


def test_eight_devices_under_pmap_equal_one(ce_single_device):
  """The same steps with parallel.strategy=pmap (per-device losses and grads pmean'ed across devices)."""
  run = run_steps(ce_config(**{"parallel.strategy": "pmap"}), NDEV, num_steps=2)
  loss, metrics, grads = run["grads"]
  ref_loss, ref_metrics, ref_grads = ce_single_device["grads"]
  np.testing.assert_allclose(loss, ref_loss, atol=TOL)
  for name in ref_metrics:
    np.testing.assert_allclose(metrics[name], ref_metrics[name], atol=TOL, err_msg=name)
  assert max_abs_diff(grads, ref_grads) <= TOL
  assert max_abs_diff(run["params"], ce_single_device["params"]) <= TOL


def test_body_starts_from_an_exported_bi_encoder(minilm_path, tmp_path):
  """model.init = a bi-encoder directory that neuralir exported (how benchmarks/scifact_rerank.sh starts the
  SciFact re-ranker from the fine-tuned retriever): the body is that encoder's BERT, the classifier new."""
  from neuralir_jax import encoder as encoder_lib
  from neuralir_jax import model as model_lib
  from neuralir_jax import tokenization
  bert = model_lib.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              max_position_embeddings=64)
  enc_config = model_lib.EncoderConfig(bert=bert, max_seq_length=64)
  body = model_lib.init_params(enc_config, jax.random.key(3))
  path = str(tmp_path / "bi_export")
  encoder_lib.Encoder(enc_config, body, tokenization.Tokenizer(minilm_path, 64)).save_pretrained(path)
  config, _, pretrained = families.resolve_model(ce_config(**{"model.init": path}))
  assert config.model.bert.hidden_size == 32 and config.model.bert.vocab_size == bert.vocab_size
  params = families.make_family(config).init_params(jax.random.key(0), pretrained)["encoder"]
  assert max_abs_diff(params["bert"], body["bert"]) == 0.0
  assert params["classifier"]["kernel"].shape == (32, 1) and not np.any(params["classifier"]["bias"])
