"""Retriever training inputs: n-tuples with k negatives, multi-positive masking, the no-duplicates sampler,
query/document lengths and prompts, and Matryoshka; 8 devices == 1 device on those paths."""

import gzip
import json
import logging

import jax

jax.config.update("jax_num_cpu_devices", 8)

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from neuralir_jax import bi_encoder, config_lib, data, losses, objectives, optimizer, readers  # noqa: E402
from neuralir_jax import sharding, steps, tokenization  # noqa: E402
from train_helpers import max_abs_diff, random_batch, tiny_config  # noqa: E402

B, K, NDEV = 16, 3, 8
TOL = 1e-5


def _write_jsonl(path, rows):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(json.dumps(r) for r in rows) + "\n")
  return str(path)


MINED = [  # What `neuralir mine` writes: one row per query, all its positives, negatives best first.
    {"query_id": "q1", "query": "what is a cat", "positive_ids": ["d1", "d2"],
     "positives": ["a cat is a small feline", "cats are pets"], "negative_ids": ["d5", "d6", "d7"],
     "negatives": ["dogs bark", "a car", "the sky"], "positive_scores": [0.9, 0.8],
     "negative_scores": [0.7, 0.6, 0.5]},
    {"query_id": "q2", "query": "what is a dog", "positive_ids": ["d5"], "positives": ["dogs bark"],
     "negative_ids": ["d1", "d9"], "negatives": ["a cat is a small feline", "bread"],
     "positive_scores": [0.9], "negative_scores": [0.5, 0.4]},
]


def test_mined_rows_become_one_record_per_positive_with_k_negatives(tmp_path, caplog):
  path = _write_jsonl(tmp_path / "mined.jsonl.gz", MINED)
  records = data.load_records(f"triples:{path}", "triplets", num_negatives=2)
  assert records == [
      {"anchor": "what is a cat", "positive": "a cat is a small feline", "anchor_id": "q1", "positive_id": "d1",
       "negative": ["dogs bark", "a car"], "negative_id": ["d5", "d6"]},
      {"anchor": "what is a cat", "positive": "cats are pets", "anchor_id": "q1", "positive_id": "d2",
       "negative": ["dogs bark", "a car"], "negative_id": ["d5", "d6"]},
      {"anchor": "what is a dog", "positive": "dogs bark", "anchor_id": "q2", "positive_id": "d5",
       "negative": ["a cat is a small feline", "bread"], "negative_id": ["d1", "d9"]}]
  one = data.load_records(f"triples:{path}", "triplets", num_negatives=1)
  assert one[2]["negative"] == "a cat is a small feline" and one[2]["negative_id"] == "d1"
  with pytest.raises(ValueError, match=r"mined.jsonl.gz:2: 2 negatives, but data.num_negatives=3; lower"):
    data.load_records(f"triples:{path}", "triplets", num_negatives=3)
  with caplog.at_level(logging.WARNING):
    kept = data.load_records(f"triples:{path}", "triplets", num_negatives=3, skip_invalid=True)
  assert len(kept) == 2 and "skipped 1 of 2 rows with fewer than data.num_negatives=3" in caplog.text
  bad = _write_jsonl(tmp_path / "bad.jsonl.gz", [dict(MINED[0], negative_ids=["d5"])])
  with pytest.raises(ValueError, match=r"bad.jsonl.gz:1: 'negative_ids' has 1 ids for 3 texts"):
    readers.read_tuples(bad)


def test_pool_negatives_are_other_queries_positives(tmp_path):
  """data.pool_negatives appends other queries' positives: never one of the query's own (over all its rows)
  nor one of the record's hard negatives; seeded."""
  rows = MINED + [{"query_id": "q3", "query": "what is bread", "positive_ids": ["d9"], "positives": ["bread"],
                   "negative_ids": ["d6", "d7"], "negatives": ["a car", "the sky"]},
                  {"query_id": "q1", "query": "what is a cat", "positive_ids": ["d3"], "positives": ["kittens"],
                   "negative_ids": ["d6"], "negatives": ["a car"]},  # q1's third positive, on its own row.
                  {"query_id": "q4", "query": "what flies", "positive_ids": ["d8"], "positives": ["a plane"],
                   "negative_ids": ["d7"], "negatives": ["the sky"]}]
  path = _write_jsonl(tmp_path / "mined.jsonl.gz", rows)
  pool = {"d1": "a cat is a small feline", "d2": "cats are pets", "d3": "kittens", "d5": "dogs bark",
          "d9": "bread", "d8": "a plane"}
  texts = dict(zip([i for r in rows for i in r["negative_ids"]], [t for r in rows for t in r["negatives"]]))
  own = {"q1": {"d1", "d2", "d3"}, "q2": {"d5"}, "q3": {"d9"}, "q4": {"d8"}}
  for seed in range(5):
    records = data.load_records(f"triples:{path}", "triplets", num_negatives=1, pool_negatives=2, seed=seed)
    assert len(records) == 6
    for r in records:
      first, *drawn = r["negative_id"]
      assert len(drawn) == 2 and len(set(drawn)) == 2 and set(drawn) <= set(pool)
      assert not set(drawn) & own[r["anchor_id"]] and first not in drawn
      assert r["negative"] == [texts[first], *(pool[d] for d in drawn)]
  again = data.load_records(f"triples:{path}", "triplets", num_negatives=1, pool_negatives=2, seed=4)
  assert records == again
  assert records != data.load_records(f"triples:{path}", "triplets", num_negatives=1, pool_negatives=2, seed=3)
  # q1's first row (positives d1, d2, d3 over its two rows; hard negative d5) can draw only d9 and d8.
  with pytest.raises(ValueError, match=r"mined.jsonl.gz:1: data.pool_negatives=3, but only 2 positives of other"):
    data.load_records(f"triples:{path}", "triplets", num_negatives=1, pool_negatives=3)
  with pytest.raises(ValueError, match=r"pool_negatives=1 adds negatives the file has no teacher scores for"):
    data.load_records(f"triples:{path}", "triplets", num_negatives=1, pool_negatives=1, scores="miner")


@pytest.fixture(scope="module")
def tokenizer():
  return tokenization.Tokenizer(config_lib.resolve_model_path("minilm"))


def _records(n_queries=24, positives=2, k=2):
  """Queries with `positives` judged documents each; negatives are other queries' documents."""
  records = []
  for q in range(n_queries):
    for j in range(positives):
      negs = [f"d{(q + 1 + i) % n_queries}_0" for i in range(k)]
      records.append({"anchor": f"query number {q}", "anchor_id": f"q{q}", "positive": f"document {q} {j}",
                      "positive_id": f"d{q}_{j}", "negative": [f"document {n}" for n in negs],
                      "negative_id": negs})
  return records


def test_batches_carry_k_negatives_judged_positives_lengths_and_prompts(tokenizer):
  records = _records()
  it = data.make_train_iterator(records, tokenizer, columns=("anchor", "positive", "negative"),
                                global_batch_size=8, seed=0, max_length=16, buckets=None,
                                max_lengths={"anchor": 8, "positive": 12, "negative": 12},
                                prompts={"anchor": "query: ", "positive": "passage: ", "negative": "passage: "})
  batch = next(it)
  assert batch["anchor_ids"].shape == (8, 8) and batch["positive_ids"].shape == (8, 12)
  assert batch["negative_ids"].shape == (8, 2, 12) and batch["negative_hash"].shape == (8, 2)
  by_id = {data.id_hash(r["positive_id"]): r for r in records}
  rows = [by_id[h] for h in batch["positive_hash"]]
  ids, _ = tokenizer(["query: " + r["anchor"] for r in rows], max_length=8, pad_to=8)
  np.testing.assert_array_equal(batch["anchor_ids"], ids)
  ids, _ = tokenizer(["passage: " + t for r in rows for t in r["negative"]], max_length=12, pad_to=12)
  np.testing.assert_array_equal(batch["negative_ids"], ids.reshape(8, 2, 12))
  np.testing.assert_array_equal(batch["negative_hash"], [[data.id_hash(i) for i in r["negative_id"]] for r in rows])
  # Both judged documents of each query, whichever row of it is in the batch.
  for r, judged in zip(rows, batch["judged_hash"]):
    q = r["anchor_id"][1:]
    assert sorted(judged) == sorted(data.id_hash(f"d{q}_{j}") for j in range(2))


def test_no_duplicates_sampler_is_complete_deterministic_and_resumable(tokenizer, caplog):
  records = _records(n_queries=20, positives=3, k=1)  # 60 records, 20 queries: at most 20 rows a batch.
  for r in records:
    r["negative"], r["negative_id"] = r["negative"][0], r["negative_id"][0]
  kwargs = dict(columns=("anchor", "positive"), global_batch_size=8, seed=3, max_length=8, buckets=None,
                sampler="no_duplicates", num_epochs=2)
  with caplog.at_level(logging.WARNING):
    it = data.make_train_iterator(records, tokenizer, **kwargs)
  batches = list(it)
  # 120 records in 2 epochs; epoch 0's leftovers open epoch 1; 8 of epoch 1 (too few distinct queries for a
  # batch) are logged, not silently dropped.
  assert len(batches) == len(it) == 14
  assert "8 records of the last epoch fit no full batch of 8" in caplog.text
  seen = []
  for batch in batches:
    assert len(set(batch["anchor_hash"].tolist())) == 8  # No query twice in a batch.
    assert len(set(batch["positive_hash"].tolist())) == 8
    seen += batch["positive_hash"].tolist()
  assert sorted(set(seen)) == sorted(data.id_hash(r["positive_id"]) for r in records)
  resumed = data.make_train_iterator(records, tokenizer, **kwargs)
  resumed.set_state({**it.get_state(), "step": 9})
  for a, b in zip(batches[9:], resumed):
    np.testing.assert_array_equal(a["positive_hash"], b["positive_hash"])
  halves = [data.make_train_iterator(records, tokenizer, process_index=p, process_count=2, **kwargs)
            for p in range(2)]
  first = [next(h) for h in halves]
  np.testing.assert_array_equal(np.concatenate([f["anchor_ids"] for f in first]), batches[0]["anchor_ids"])
  shuffled = data.make_train_iterator(records, tokenizer, **dict(kwargs, sampler="random"))
  assert any(len(set(b["anchor_hash"].tolist())) < 8 for b in shuffled)  # What the sampler prevents.


def test_no_duplicates_sampler_plans_each_epoch_once():
  keys = [(i % 10, i) for i in range(40)]  # 10 queries x 4 positives: 5 batches of 8 or fewer per epoch.
  plan = data.NoDuplicateBatches(keys, 8, seed=1)
  builds, build = [], plan._build
  plan._build = lambda epoch, carried: builds.append(epoch) or build(epoch, carried)
  batches = [plan.batch(s) for s in range(60)]
  assert builds == list(range(builds[-1] + 1)) and builds[-1] >= 10  # Not replayed from epoch 0 each time.
  fresh = data.NoDuplicateBatches(keys, 8, seed=1)
  assert [fresh.batch(s) for s in (59, 3, 31)] == [batches[59], batches[3], batches[31]]
  assert fresh.num_batches(3) == data.NoDuplicateBatches(keys, 8, seed=1).num_batches(3)


# --- Losses ---------------------------------------------------------------------------------------------


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_other_judged_positive_is_masked_not_a_negative():
  """Rows 0 and 9 are the same query with two relevant documents; row 9's positive must not be a negative
  of row 0 (nor row 0's of row 9), on any device. Without the judged set it would be."""
  mesh = sharding.make_mesh(NDEV)
  rng = np.random.RandomState(0)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  q, p, n = (unit(rng.randn(*s)).astype(np.float32) for s in ((B, 8), (B, 8), (B, K, 8)))
  p[9] = q[0]  # Row 9's document matches query 0 best: as a negative it would dominate query 0's loss.
  p_hash = np.arange(100, 100 + B, dtype=np.int32)
  n_hash = np.arange(200, 200 + B * K, dtype=np.int32).reshape(B, K)
  n_hash[4, 2] = p_hash[0]  # Row 4's third hard negative is row 0's query's judged document too.
  judged = np.stack([p_hash, p_hash], 1)
  judged[0, 1], judged[9, 1] = p_hash[9], p_hash[0]
  tau = 0.05

  def per_device(q, p, n, ph, nh, jh):
    loss, npq = losses.contrastive_loss(q, p, n, temperature=tau, axis_name="data", pos_hash_b=ph,
                                        neg_hash_bxK=nh, judged_hash_bxP=jh)
    return jnp.asarray(loss)[None], jnp.asarray(npq)[None]

  loss, npq = jax.shard_map(per_device, mesh=mesh, in_specs=P("data"), out_specs=P("data"))(
      q, p, n, p_hash, n_hash, judged)
  cand = np.concatenate([p, n.reshape(-1, 8)])
  logits = q @ cand.T / tau
  masked = np.zeros_like(logits, bool)
  masked[0, 9] = masked[9, 0] = True
  masked[0, B + 4 * K + 2] = masked[9, B + 4 * K + 2] = True
  expected = -_np_log_softmax(np.where(masked, -1e9, logits))[np.arange(B), np.arange(B)]
  np.testing.assert_allclose(np.asarray(loss), expected.reshape(NDEV, -1).mean(1), rtol=1e-5)
  unmasked = -_np_log_softmax(logits)[np.arange(B), np.arange(B)]
  assert expected[0] < unmasked[0] - 1.0
  np.testing.assert_allclose(np.asarray(npq).mean(), B * (1 + K) - 1 - 4 / B)


def test_matryoshka_loss_is_the_weighted_sum_over_truncated_dims():
  config = tiny_config(**{"objectives.nli_softmax": 0.0, "objectives.sts_cosine": 0.0,
                          "objectives.triplet": 0.0, "objectives.sigmoid": 0.0, "infonce.symmetric": False,
                          "infonce.learnable_temperature": False, "matryoshka.dims": (32, 8),
                          "matryoshka.weights": (1.0, 0.5)})
  rng = np.random.RandomState(1)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  embs = {"anchor": unit(rng.randn(B, 32)), "positive": unit(rng.randn(B, 32)),
          "negative": unit(rng.randn(B * 2, 32))}
  embs = {c: jnp.asarray(e, jnp.float32) for c, e in embs.items()}
  total, metrics = objectives.objective_losses(config, {}, embs, {}, None)

  def infonce_at(d):
    t = {c: unit(np.asarray(e)[:, :d]) for c, e in embs.items()}
    cand = np.concatenate([t["positive"], t["negative"]])
    return -_np_log_softmax(t["anchor"] @ cand.T / 0.05)[np.arange(B), np.arange(B)].mean()

  np.testing.assert_allclose(metrics["loss/infonce@8"], infonce_at(8), rtol=1e-5)
  np.testing.assert_allclose(total, infonce_at(32) + 0.5 * infonce_at(8), rtol=1e-5)
  with pytest.raises(ValueError, match=r"matryoshka.weights=\(1.0,\): give one weight per dimension"):
    config_lib.validate(tiny_config(**{"objectives.nli_softmax": 0.0, "matryoshka.dims": (32, 8),
                                       "matryoshka.weights": (1.0,)}))
  with pytest.raises(ValueError, match=r"matryoshka.dims=\(64,\): must be integers in \[1, 32\]"):
    config_lib.validate(tiny_config(**{"objectives.nli_softmax": 0.0, "matryoshka.dims": (64,),
                                       "matryoshka.weights": (1.0,)}))


# --- Train steps on these inputs: 8 devices == 1 device, GradCache == plain -----------------------------


def _retrieval_batch(seed=0):
  """k=3 hard negatives, queries shorter than documents (two encoder calls), and rows 0 and 9 one query
  with two judged documents."""
  batch = {k: v for k, v in random_batch(B, 8, K, seed).items()
           if k.split("_")[0] in ("anchor", "positive", "negative")}
  batch["anchor_ids"], batch["anchor_mask"] = batch["anchor_ids"][:, :4], batch["anchor_mask"][:, :4]
  batch["anchor_hash"][9] = batch["anchor_hash"][0]
  judged = np.stack([batch["positive_hash"]] * 2, 1)
  judged[0, 1], judged[9, 1] = batch["positive_hash"][9], batch["positive_hash"][0]
  batch["judged_hash"] = judged
  return batch


def _retrieval_config(**overrides):
  return tiny_config(**{"objectives.nli_softmax": 0.0, "objectives.sts_cosine": 0.0, "objectives.triplet": 0.0,
                        "objectives.sigmoid": 0.0,
                        "matryoshka.dims": (32, 16), "matryoshka.weights": (1.0, 0.5), **overrides})


def _run(config, devices, num_steps=2):
  chex.clear_trace_counter()
  mesh = sharding.make_mesh(devices)
  model = bi_encoder.BiEncoder(config)
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
  state, shardings = steps.create_train_state(model, jax.random.PRNGKey(0), mesh, tx)
  grads = steps.make_grad_fn(model, mesh)(state.params, _retrieval_batch(), jax.random.PRNGKey(1))
  step = steps.make_train_step(model, mesh, tx, shardings, schedule, max_traces=1)
  if config.parallel.strategy == "pmap":
    state = steps.to_pmap_state(state, mesh)
  metrics = []
  for i in range(num_steps):
    state, m = step(state, _retrieval_batch(seed=i))
    metrics.append(jax.device_get(m))
  if config.parallel.strategy == "pmap":
    state = steps.from_pmap_state(state)
  return grads, metrics, jax.device_get(state.params)


@pytest.fixture(scope="module")
def one_device():
  return _run(_retrieval_config(), 1)


# Plain pjit on 8 devices is sharding_test's; here the paths that regroup the texts (pmap, GradCache).
@pytest.mark.parametrize("overrides", [{"parallel.strategy": "pmap"}, {"grad_cache.chunk_size": 1}])
def test_retrieval_inputs_eight_devices_equal_one(one_device, overrides):
  (loss, metrics, grads), steps_metrics, params = _run(_retrieval_config(**overrides), NDEV)
  (ref_loss, ref_metrics, ref_grads), ref_steps, ref_params = one_device
  np.testing.assert_allclose(loss, ref_loss, atol=TOL)
  assert {"loss/infonce@32", "loss/infonce@16", "negatives_per_query"} <= set(metrics)
  for name in ref_metrics:
    np.testing.assert_allclose(metrics[name], ref_metrics[name], atol=TOL, err_msg=name)
  # 16 * (1 + 3) - 1 candidates; rows 0 and 9 each lose the other's positive, rows 3 and 12 share a text.
  np.testing.assert_allclose(metrics["negatives_per_query"], B * (1 + K) - 1 - 4 / B)
  assert max_abs_diff(grads, ref_grads) <= TOL
  for got, ref in zip(steps_metrics, ref_steps):
    for name in ref:
      np.testing.assert_allclose(got[name], ref[name], atol=TOL, err_msg=name)
  assert max_abs_diff(params, ref_params) <= TOL
