"""Packed training batches: the input pipeline's packed layout, and packed steps equal to padded ones
(1 device and 8, pjit, pmap and GradCache), with the real-token accounting of the logs."""

import jax

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from neuralir_jax import bi_encoder, config_lib, data, metric_writer, optimizer, sharding, steps  # noqa: E402
from neuralir_jax import packing, tokenization  # noqa: E402
from train_helpers import REPO, max_abs_diff, tiny_config  # noqa: E402

B, K, NDEV = 16, 2, 8
TOL = 1e-5
MINED = f"triples:{REPO}/data/triples/scifact_train80_minilm_mined.jsonl.gz"
LENGTHS = {"anchor": 16, "positive": 32, "negative": 32}  # Queries and documents differ: rows of 32.


def _config(**overrides):
  settings = {"model.bert.vocab_size": 30522, "model.bert.max_position_embeddings": 64,
              "objectives.sts_cosine": 0.0, "data.num_negatives": K, "batch_size": B}
  return tiny_config(**dict(settings, **overrides))


@pytest.fixture(scope="module")
def tokenizer():
  return tokenization.Tokenizer(config_lib.resolve_model_path("minilm"))


@pytest.fixture(scope="module")
def records():
  return data.load_records(MINED, "triplets", num_negatives=K)[:4 * B]


def _batch(records, tokenizer, packing_spec=None, step=0, process_index=0, process_count=1):
  it = data.make_train_iterator(records, tokenizer, columns=tuple(LENGTHS), global_batch_size=B, seed=0,
                                max_length=32, max_lengths=LENGTHS, packing_spec=packing_spec,
                                process_index=process_index, process_count=process_count)
  it.set_state(dict(it.get_state(), step=step))
  return next(it)


def _segment_tokens(batch, column, num_devices):
  """Each text's tokens read back out of the packed rows, [B(, k)] lists, through c_slot."""
  tokens, segments = batch["packed_tokens"], batch["packed_segments"]
  rows_per_device = tokens.shape[0] // num_devices
  index = batch[f"{column}_slot"]
  per_device = index.shape[0] // num_devices
  num_slots = packing.default_slots(tokens.shape[1])
  out = []
  for i, idx in enumerate(index.reshape(index.shape[0], -1)):
    device = i // per_device
    texts = []
    for j in idx:
      row = device * rows_per_device + j // num_slots
      texts.append(tokens[row][segments[row] == j % num_slots + 1].tolist())
    out.append(texts)
  return out


def test_packed_batch_holds_every_text_once_with_its_tokens(records, tokenizer):
  padded = _batch(records, tokenizer)
  packed = _batch(records, tokenizer, data.Packing(NDEV, row_multiple=2))
  assert set(packed) == {"packed_tokens", "packed_segments", "anchor_slot", "positive_slot", "negative_slot",
                         "anchor_hash", "positive_hash", "negative_hash", "judged_hash"}
  assert packed["packed_tokens"].shape[1] == 32 and packed["packed_tokens"].shape[0] % (2 * NDEV) == 0
  assert packed["negative_slot"].shape == (B, K) and packed["anchor_slot"].shape == (B,)
  for c in LENGTHS:
    want = [[t[m > 0].tolist() for t, m in zip(ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, ids.shape[-1]))]
            for ids, mask in zip(padded[f"{c}_ids"], padded[f"{c}_mask"])]
    assert _segment_tokens(packed, c, NDEV) == want, c
    np.testing.assert_array_equal(packed[f"{c}_hash"], padded[f"{c}_hash"])
  # Each device's rows hold exactly its texts: 16 / 8 = 2 examples x (1 + 1 + K) texts.
  segments = packed["packed_segments"].reshape(NDEV, -1, 32)
  for device in segments:
    assert sum(len(np.unique(row[row > 0])) for row in device) == 2 * (2 + K)
  # Real tokens are the same; the positions computed are the packed rows' (here, 32-token documents fill
  # their rows and 16-token queries share rows of 32).
  counts = metric_writer._token_counts  # pylint: disable=protected-access
  assert counts(packed) == (counts(padded)[0], packed["packed_segments"].size)


def test_packed_batches_split_over_processes_like_one_process(records, tokenizer):
  spec = data.Packing(NDEV, row_multiple=1)
  whole = _batch(records, tokenizer, spec, step=1)
  halves = [_batch(records, tokenizer, spec, step=1, process_index=p, process_count=2) for p in range(2)]
  for key, value in whole.items():
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), value, err_msg=key)


def test_packed_train_flops_count_real_tokens_only(records, tokenizer):
  family = bi_encoder.BiEncoder(_config())
  padded = _batch(records, tokenizer)
  packed = _batch(records, tokenizer, data.Packing(NDEV))
  lengths = np.concatenate([padded[f"{c}_mask"].reshape(-1, padded[f"{c}_mask"].shape[-1]).sum(-1)
                            for c in LENGTHS])
  np.testing.assert_array_equal(np.sort(bi_encoder.text_lengths(packed, tuple(LENGTHS))), np.sort(lengths))
  assert family.train_flops(packed, NDEV) == pytest.approx(family.train_flops(padded, NDEV), rel=1e-12)


def _grads(config, batch, devices):
  mesh = sharding.make_mesh(devices)
  family = bi_encoder.BiEncoder(config)
  tx, _ = optimizer.make_optimizer(config.optimizer, config.num_steps)
  state, _ = steps.create_train_state(family, jax.random.PRNGKey(0), mesh, tx)
  return steps.make_grad_fn(family, mesh)(state.params, batch, jax.random.PRNGKey(1))


@pytest.fixture(scope="module")
def padded_one_device(records, tokenizer):
  return _grads(_config(), _batch(records, tokenizer), 1)


@pytest.mark.parametrize("strategy,chunk,devices", [("pjit", 0, 1), ("pjit", 0, NDEV), ("pmap", 0, NDEV),
                                                    ("pjit", 1, NDEV)])
def test_packed_step_equals_padded(padded_one_device, records, tokenizer, strategy, chunk, devices):
  """Loss, every metric and the gradients of a packed batch equal the padded batch's on one device
  (global negatives, k = 2 hard negatives, symmetric term, judged-positive masks, learnable temperature,
  NLI head and triplet loss on); GradCache: 2 chunks of packed rows per device."""
  config = _config(**{"parallel.strategy": strategy, "grad_cache.chunk_size": chunk})
  spec = data.Packing(devices, row_multiple=2 if chunk else 1)
  loss, metrics, grads = _grads(config, _batch(records, tokenizer, spec), devices)
  ref_loss, ref_metrics, ref_grads = padded_one_device
  np.testing.assert_allclose(loss, ref_loss, atol=TOL)
  assert set(metrics) == set(ref_metrics) >= {"loss/infonce", "loss/triplet", "loss/nli_softmax", "temperature"}
  for name in ref_metrics:
    np.testing.assert_allclose(metrics[name], ref_metrics[name], atol=TOL, err_msg=name)
  assert max_abs_diff(grads, ref_grads) <= TOL
  assert max_abs_diff(grads["encoder"], jax.tree.map(np.zeros_like, grads["encoder"])) > 100 * TOL
