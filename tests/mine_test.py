"""Hard-negative mining: BM25 golden lists, chunked == full search, the CLI, and parity with sentence-transformers.

The BM25 world is small enough to read: for "solar panels energy" the non-positive documents rank d1 > d5 >
d2 > d3 > d4 (d10 is a copy of the positive p1 and must never be a negative); for the bread query, with
positives p2 (2.25) and p3 (1.02), d7 (0.95) > d9 (0.89) > d8 (0.38), so a margin measured from the lower
positive removes d7 and one measured from the higher would not.
"""

import dataclasses
import gzip
import json
import os
import sys

import numpy as np
import pytest

from neuralir_jax import cli, mine, readers

DOCS = {
    "p1": "Solar panels convert sunlight into electric energy for homes.",
    "d1": "Solar panel energy.",
    "d2": "Solar panels need cleaning to stay efficient.",
    "d3": "Energy prices rose sharply last winter.",
    "d4": "The solar eclipse was visible across Europe.",
    "d5": "Wind turbines and solar panels produce clean renewable energy every single day.",
    "d6": "Cats sleep for most of the day.",
    "d7": "Banana bread needs ripe bananas and flour.",
    "p2": "Baking bread at home requires flour, water, yeast and salt.",
    "p3": "Sourdough bread uses a fermented starter instead of yeast.",
    "d8": "Fresh bread from the bakery smells wonderful.",
    "d9": "Whole wheat flour makes a denser bread loaf.",
    "d10": "Solar panels convert sunlight into electric energy for homes.",  # Same text as the positive p1.
}
QUERIES = {"q1": "solar panels energy", "q2": "how to bake bread with yeast and flour",
           "q3": "quantum chromodynamics"}
QRELS = {"q1": {"p1": 1}, "q2": {"p2": 2, "p3": 1, "d6": 0}, "q3": {"d6": 1}}  # Grade 0: not a positive.


def _write_beir(directory) -> str:
  os.makedirs(directory / "qrels")
  (directory / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                  for d, t in DOCS.items()))
  (directory / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                   for q, t in QUERIES.items()))
  (directory / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
      f"{q}\t{d}\t{g}\n" for q, docs in QRELS.items() for d, g in docs.items()))
  return str(directory)


def _negatives(rows):
  return {r["query_id"]: r["negative_ids"] for r in rows}


@pytest.fixture(scope="module")
def toy_beir(tmp_path_factory) -> str:
  return _write_beir(tmp_path_factory.mktemp("beir") / "toy")


@pytest.fixture(scope="module")
def bm25_data(toy_beir):
  return mine.load_data(f"beir:{toy_beir}:train")


@pytest.mark.parametrize("options, expected", [
    (dict(num_negatives=3, range_max=10), {"q1": ["d1", "d5", "d2"], "q2": ["d7", "d9", "d8"], "q3": []}),
    (dict(num_negatives=2, range_min=1, range_max=10), {"q1": ["d5", "d2"], "q2": ["d9", "d8"], "q3": []}),
    # Ranks count non-positive documents only: q1's window of 3 is d1, d5, d2 (p1 and d10 rank 2nd and 3rd).
    (dict(num_negatives=1, range_min=2, range_max=3), {"q1": ["d2"], "q2": ["d8"], "q3": []}),
    # The lower positive counts: p3 (1.02) - 0.1 removes d7 (0.95); p2 (2.25) would keep it.
    (dict(num_negatives=3, range_max=10, margin=0.1), {"q1": ["d5", "d2", "d3"], "q2": ["d9", "d8"], "q3": []}),
    (dict(num_negatives=3, range_max=10, relative_margin=0.1),
     {"q1": ["d5", "d2", "d3"], "q2": ["d9", "d8"], "q3": []}),
    # range_max=2 retrieves 2 + 2 + 1 documents (the most positives of any query, and room for the query's own
    # text, as ST 6.3): q1's are d1, p1, d10, d5, d2; the margin removes d1, and d3 is out of reach.
    (dict(num_negatives=2, range_max=2, margin=0.0), {"q1": ["d5", "d2"], "q2": ["d7", "d9"], "q3": []}),
])
def test_bm25_golden_lists(bm25_data, options, expected):
  rows = mine.mine_hard_negatives(bm25_data, "bm25", **options)
  assert _negatives(rows) == expected
  for r in rows:
    assert r["negative_scores"] == sorted(r["negative_scores"], reverse=True)
    assert not set(r["negative_ids"]) & {"p1", "p2", "p3", "d10"}
  q2 = rows[1]
  assert q2["positive_ids"] == ["p2", "p3"] and q2["positives"] == [DOCS["p2"], DOCS["p3"]]
  np.testing.assert_allclose(q2["positive_scores"], [2.2541, 1.0186], atol=1e-3)  # bm25s, Lucene BM25.
  assert rows[0]["negatives"] == [DOCS[d] for d in rows[0]["negative_ids"]]


def test_a_document_with_the_querys_text_is_never_its_negative():
  data = mine.MiningData(["q1"], ["cats purr loudly"], ["d1", "d2", "d3"],
                         ["cats purr loudly", "cats purr", "dogs bark"], [[2]])
  rows = mine.mine_hard_negatives(data, "bm25", num_negatives=2, range_max=2)
  assert _negatives(rows) == {"q1": ["d2"]}


def test_bm25_stems_and_random_sampling(bm25_data):
  top = mine.mine_hard_negatives(bm25_data, "bm25", num_negatives=4, range_max=10)
  assert top[0]["negative_ids"] == ["d1", "d5", "d2", "d3"]  # "panel" in d1 matched "panels": stemming.
  score = dict(zip(top[0]["negative_ids"], top[0]["negative_scores"]))
  draws = [mine.mine_hard_negatives(bm25_data, "bm25", num_negatives=2, range_max=10, sampling="random", seed=s)
           for s in range(6)]
  assert draws[0] == mine.mine_hard_negatives(bm25_data, "bm25", num_negatives=2, range_max=10,
                                              sampling="random", seed=0)
  seen = set()
  for rows in draws:
    ids = rows[0]["negative_ids"]
    assert len(ids) == 2 and set(ids) <= {"d1", "d5", "d2", "d3", "d4"}
    assert rows[0]["negative_scores"] == sorted(rows[0]["negative_scores"], reverse=True)
    assert all(abs(score.get(d, s) - s) < 1e-6 for d, s in zip(ids, rows[0]["negative_scores"]))
    seen.add(tuple(ids))
  assert len(seen) > 1


def test_window_options_are_checked(bm25_data):
  with pytest.raises(ValueError, match="--range-min 5 must be smaller than --range-max 5"):
    mine.mine_hard_negatives(bm25_data, "bm25", num_negatives=1, range_min=5, range_max=5)
  with pytest.raises(ValueError, match="--num-negatives 4 does not fit: only 3 candidates"):
    mine.mine_hard_negatives(bm25_data, "bm25", num_negatives=4, range_min=2, range_max=5)
  with pytest.raises(ValueError, match="--num-negatives 0"):
    mine.mine_hard_negatives(bm25_data, "bm25", num_negatives=0)
  # ST's default window: range_min + num_negatives (x10 with a margin) + the most positives of any query.
  assert mine.resolve_range_max(3, 1, None, 2, False) == 6 and mine.resolve_range_max(3, 1, None, 2, True) == 33


# --- Dense: chunked, strided and ScaNN search equal one full matmul ---------------------------------------


class LookupEncoder:
  """Fixed random vectors per text; remembers the batches it was asked for."""

  def __init__(self, texts, dim=16, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(len(texts), dim)).astype(np.float32)
    self.table = dict(zip(texts, vectors))
    self.calls = []

  def __call__(self, texts):
    self.calls.append(len(texts))
    return np.stack([self.table[t] for t in texts])


@pytest.fixture(scope="module")
def random_world():
  docs = [f"doc {i}" for i in range(50)]
  queries = [f"query {j}" for j in range(9)]
  encoder = LookupEncoder(docs + queries)
  data = mine.MiningData([f"q{j}" for j in range(9)], queries, [f"d{i}" for i in range(50)], docs,
                         [[(5 * j) % 50, (5 * j + 23) % 50][:1 + j % 2] for j in range(9)])
  q = mine._l2_normalize(encoder(queries))
  full_QxN = q @ mine._l2_normalize(encoder(docs)).T
  return encoder, data, q, full_QxN


def test_chunked_strided_and_scann_equal_the_full_matmul(random_world):
  encoder, data, q, full_QxN = random_world
  k = 20  # Deeper than a chunk of 7: the top 20 spans several chunks, so a lossy merge would show.
  want_idx = np.argsort(-full_QxN, axis=1, kind="stable")[:, :k]
  want_s = np.take_along_axis(full_QxN, want_idx, axis=1)
  pairs = mine.positive_pairs(data)
  encoder.calls.clear()
  got = mine.local_dense_candidates(encoder, q, data.docs, pairs, k, chunk_size=7)
  assert encoder.calls == [7] * 7 + [1]
  np.testing.assert_array_equal(got.idx_QxK, want_idx)
  np.testing.assert_allclose(got.scores_QxK, want_s, atol=1e-5)
  np.testing.assert_allclose(got.positive_scores_P, full_QxN[pairs], atol=1e-5)
  assert got.positive_found_P.all()
  # Three "processes" take chunks p, p+3, ...; merged, they give the same lists (and every positive score).
  parts = [mine.local_dense_candidates(encoder, q, data.docs, pairs, k, chunk_size=7, process_index=p,
                                       process_count=3) for p in range(3)]
  assert not any(p.positive_found_P.all() for p in parts)
  merged = mine.merge_candidates(parts, k)
  np.testing.assert_array_equal(merged.idx_QxK, want_idx)
  np.testing.assert_allclose(merged.positive_scores_P, got.positive_scores_P)
  # The allgather path with this one process is the identity.
  gathered = mine.gather_candidates(got, k)
  np.testing.assert_array_equal(gathered.idx_QxK, want_idx)
  scann = mine.local_dense_candidates(encoder, q, data.docs, pairs, k, chunk_size=7, index="scann")
  np.testing.assert_array_equal(scann.idx_QxK, want_idx)
  np.testing.assert_allclose(scann.scores_QxK, want_s, atol=1e-4)


def test_rows_do_not_depend_on_the_chunk_size(random_world):
  encoder, data, _, full_QxN = random_world
  options = dict(num_negatives=4, range_min=1, range_max=12, margin=0.01)
  small = mine.mine_hard_negatives(data, encoder, chunk_size=7, **options)
  large = mine.mine_hard_negatives(data, encoder, chunk_size=1000, **options)
  scores = ("positive_scores", "negative_scores")  # Matmuls of other shapes round the last bit differently.
  assert [{k: v for k, v in r.items() if k not in scores} for r in small] == [
      {k: v for k, v in r.items() if k not in scores} for r in large]
  for a, b in zip(small, large):
    for k in scores:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
  for j, row in enumerate(small):  # Against a brute-force reading of the semantics on the full matrix.
    pos = data.positives[j]
    order = [d for d in np.argsort(-full_QxN[j], kind="stable")[:12 + 2] if d not in pos]
    eligible = [d for d in order if full_QxN[j, d] + 0.01 <= full_QxN[j, pos].min()][:12]
    assert row["negative_ids"] == [data.doc_ids[d] for d in eligible[1:5]]


def test_merge_top_k_keeps_ties_and_padding_in_order():
  s = np.array([[0.5, 0.9, 0.5, -np.inf]], np.float32)
  i = np.array([[7, 3, 2, -1]], np.int32)
  got_s, got_i = mine.merge_top_k(s, i, 6)
  np.testing.assert_array_equal(got_i, [[3, 2, 7, -1, -1, -1]])
  assert np.isneginf(got_s[0, 3:]).all()


# --- Sources ----------------------------------------------------------------------------------------------


def test_triples_source_groups_queries_and_documents(tmp_path):
  path = tmp_path / "t.jsonl"
  rows = [
      {"query_id": "a", "query": "qa", "pos_id": "1", "positive": "one", "neg_id": "2", "negative": "two"},
      {"query_id": "a", "query": "qa", "pos_id": "3", "positive": "three", "neg_id": "2", "negative": "two"},
      {"query": "qb", "positive": "two", "negatives": ["four", "one"]},  # No ids: by text.
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  data = mine.load_data(f"triples:{path}")
  assert data.query_ids[0] == "a" and data.queries == ["qa", "qb"]
  assert data.docs == ["one", "two", "three", "four"] and data.doc_ids[:3] == ["1", "2", "3"]
  assert data.doc_ids[3].startswith("sha1:") and data.query_ids[1].startswith("sha1:")
  assert data.positives == [[0, 2], [1]]
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "pos_id": "1"}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:2: document id '1' has another text"):
    mine.load_data(f"triples:{bad}")


def test_bundled_sources_load():
  triples = mine.load_data("triples:data/triples/scifact_train_bm25_triples.jsonl.gz")
  beir = mine.load_data("beir:data/retrieval/scifact:train")
  assert len(beir.queries) == 809 and len(beir.docs) == 5183
  assert max(len(p) for p in beir.positives) == 5
  assert set(triples.query_ids) <= set(beir.query_ids) and len(triples.docs) < len(beir.docs)
  with pytest.raises(ValueError, match="use beir:DIR"):
    mine.load_data("tsv:x")


# --- CLI --------------------------------------------------------------------------------------------------


def _main(monkeypatch, argv) -> int:
  monkeypatch.setattr(sys, "argv", ["neuralir", *argv])
  monkeypatch.delenv("NEURALIR_DEBUG", raising=False)
  with pytest.raises(SystemExit) as e:
    cli.main()
  return e.value.code


def test_cli_writes_rows_and_reports_bad_input(toy_beir, tmp_path, minilm_path, monkeypatch, capsys):
  beir = toy_beir
  out = tmp_path / "mined.jsonl.gz"
  common = ["--data", f"beir:{beir}:train", "--num-negatives", "2", "--range-max", "10"]
  assert cli.run(["mine", "--model", "bm25", *common, "--output", str(out)]) == 0
  with gzip.open(out, "rt") as f:
    rows = [json.loads(line) for line in f]
  assert [tuple(r) for r in rows] == [mine.ROW_KEYS] * 3
  assert _negatives(rows) == {"q1": ["d1", "d5"], "q2": ["d7", "d9"], "q3": []}
  tuples = readers.read_tuples(str(out))  # The training reader takes the file as it is.
  assert tuples[1]["positive_ids"] == ["p2", "p3"] and tuples[1]["negative_ids"] == ["d7", "d9"]
  # A dense model directory through the CLI's loader, searched with ScaNN.
  dense = tmp_path / "dense.jsonl"
  assert cli.run(["mine", "--model", minilm_path, *common, "--output", str(dense), "--index", "scann"]) == 0
  rows = [json.loads(line) for line in open(dense)]
  assert rows[0]["negative_ids"][0] == "d1" and "d10" not in rows[0]["negative_ids"]
  assert all(len(r["negative_ids"]) == 2 for r in rows)
  capsys.readouterr()
  for argv, expected in [
      (["--data", "beir:/nonexistent/toy:train"], "/nonexistent/toy: no such BEIR folder"),
      (["--data", f"beir:{beir}:dev"], "no qrels for split 'dev'"),
      (["--data", "qrels:x"], "--data 'qrels:x': use beir:DIR"),
      (["--data", f"beir:{beir}:train", "--output", str(out)], "already exists; pass a new path"),
      (["--data", f"beir:{beir}:train", "--range-min", "9", "--range-max", "5"], "--range-min 9 must be smaller"),
      (["--data", f"beir:{beir}:train", "--step", "3"], "drop --step"),
      (["--data", f"beir:{beir}:train", "--max-length", "64"], "drop --max-length"),
      (["--data", f"beir:{beir}:train", "--model", minilm_path, "--max-length", "0"],
       "max_seq_length=0: pass an integer from 1 to 512"),
  ]:
    argv = ["mine", "--model", "bm25", "--num-negatives", "2", "--output", str(tmp_path / "new.jsonl"), *argv]
    assert _main(monkeypatch, argv) == 2, argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("neuralir: error: ") and expected in lines[0], err
  assert not os.path.exists(tmp_path / "new.jsonl")


# --- Parity with sentence-transformers --------------------------------------------------------------------


def test_parity_with_sentence_transformers(minilm_path, tmp_path):
  """SciFact train slice: 100 queries, their positives and 900 other abstracts, both models cut to 32 tokens."""
  pytest.importorskip("datasets")
  from sentence_transformers import SentenceTransformer
  from sentence_transformers.util import mine_hard_negatives as st_mine

  from neuralir_jax import encoder as encoder_lib, evaluate

  corpus, queries, qrels = readers.load_beir("data/retrieval/scifact", "train")
  qids = list(queries)[:100]
  positive_ids = list(dict.fromkeys(d for q in qids for d in qrels[q]))
  others = [d for d in corpus if d not in set(positive_ids)][:900]
  doc_ids = positive_ids + others
  assert len({corpus[d] for d in doc_ids}) == len(doc_ids)  # ST identifies documents by text.
  data = mine.MiningData(qids, [queries[q] for q in qids], doc_ids, [corpus[d] for d in doc_ids],
                         [[doc_ids.index(d) for d in qrels[q]] for q in qids])
  assert max(len(p) for p in data.positives) > 1  # Several positives: ST's dataset gets one row per pair.
  ours = encoder_lib.load_encoder(minilm_path)
  ours = encoder_lib.Encoder(dataclasses.replace(ours.config, max_seq_length=32), ours.params, ours.tokenizer)
  encode = evaluate.memoized(lambda texts: ours.encode(texts, batch_size=64))
  st = SentenceTransformer(minilm_path, device="cpu")
  st.max_seq_length = 32
  from datasets import Dataset
  dataset = Dataset.from_dict({"query": [queries[q] for q in qids for _ in qrels[q]],
                               "positive": [corpus[d] for q in qids for d in qrels[q]]})
  by_text = {corpus[d]: d for d in doc_ids}
  for options in (dict(num_negatives=5, range_min=2, range_max=25, margin=0.02),
                  dict(num_negatives=5, range_min=0, range_max=20, relative_margin=0.05)):
    rows = mine.mine_hard_negatives(data, encode, chunk_size=400, **options)
    st_options = {("absolute_margin" if key == "margin" else key): value for key, value in options.items()}
    theirs = st_mine(dataset, st, corpus=[corpus[d] for d in others], sampling_strategy="top",
                     output_format="labeled-list", output_scores=True, batch_size=64, verbose=False,
                     cache_folder=str(tmp_path / "st_cache"), **st_options)
    ours_positive = {(r["query"], d): s for r in rows for d, s in zip(r["positive_ids"], r["positive_scores"])}
    st_rows = {}
    for row in theirs:  # One row per (query text, positive): [positive, *negatives] and their scores.
      assert abs(ours_positive[row["query"], by_text[row["positive"][0]]] - row["scores"][0]) < 1e-4
      st_rows[row["query"]] = ([by_text[t] for t in row["positive"][1:]], row["scores"][1:])
    same = 0
    for r in rows:  # ST drops a query that found no negative; two SciFact ids here share one text.
      st_ids, st_scores = st_rows.get(r["query"], ([], []))
      same += r["negative_ids"] == st_ids
      if r["negative_ids"] == st_ids:
        np.testing.assert_allclose(r["negative_scores"], st_scores, atol=1e-4)
    assert same >= 99, (options, same)
    assert sum(len(r["negative_ids"]) for r in rows) > 300
