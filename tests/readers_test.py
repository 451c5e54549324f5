"""Tests for readers: counts on the bundled files, and the file:line errors and skip counts on bad input."""

import collections
import gzip
import json
import logging
import os

import pytest

from neuralir_jax import readers

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def _write(path, text):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt", encoding="utf-8") as f:
    f.write(text)
  return str(path)


@pytest.mark.parametrize("name,count,by_label", [
    ("snli_dev", 9842, (3329, 3235, 3278)),
    ("snli_test", 9824, (3368, 3219, 3237)),
    ("mnli_dev_matched", 9815, (3479, 3123, 3213)),
    ("train_sample", 19657, (3329 + 3479, 3235 + 3123, 3278 + 3213)),
])
def test_read_nli_bundled_counts(name, count, by_label):
  rows = readers.read_nli(os.path.join(DATA, "nli", f"{name}.jsonl.gz"))
  assert len(rows) == count and rows.skipped == 0
  counts = collections.Counter(r["label"] for r in rows)
  assert tuple(counts[i] for i in range(3)) == by_label
  assert set(rows[0]) == {"premise", "hypothesis", "label"}


def test_read_sts_bundled():
  expected = {"stsb_train.tsv.gz": 5749, "stsb_dev.tsv.gz": 1500, "stsb_test.tsv.gz": 1379,
              "sick_train.tsv.gz": 4500, "sick_trial.tsv": 500, "sick_test.tsv.gz": 4927,
              "stsb_train_silver_bm25.tsv.gz": 18736}
  for name, count in expected.items():
    rows = readers.read_sts(os.path.join(DATA, "sts", name))
    assert len(rows) == count, name
  stsb = readers.read_sts(os.path.join(DATA, "sts", "stsb_test.tsv.gz"))
  assert stsb[0] == {"sentence1": "A girl is styling her hair.", "sentence2": "A girl is brushing her hair.",
                     "score": 2.5}
  assert min(r["score"] for r in stsb) == 0.0 and max(r["score"] for r in stsb) == 5.0
  sick = readers.read_sts(os.path.join(DATA, "sts", "sick_test.tsv.gz"))
  assert sick[0]["score"] == 3.3 and sick[0]["sentence1"].startswith("There is no boy playing outdoors")


def test_read_triples_bundled():
  tsv = readers.read_triples(os.path.join(DATA, "triples", "msmarco_toy_triples.tsv"))
  assert len(tsv) == 100 and tsv[0]["query"] == "is a little caffeine ok during pregnancy"
  jsonl = readers.read_triples(os.path.join(DATA, "triples", "scifact_train_bm25_triples.jsonl.gz"))
  assert len(jsonl) == 919 and jsonl[0]["query"] == "0-dimensional biomaterials lack inductive properties."
  assert set(jsonl[0]) == {"query", "positive", "negative"}


def test_load_beir_bundled(caplog):
  corpus, queries, qrels = readers.load_beir(os.path.join(DATA, "retrieval", "scifact"), "test")
  assert (len(corpus), len(queries), len(qrels)) == (5183, 300, 300)
  assert sum(len(d) for d in qrels.values()) == 339
  assert qrels["1"] == {"31715818": 1}
  corpus, queries, qrels = readers.load_beir(os.path.join(DATA, "retrieval", "scifact"), "train")
  assert (len(queries), sum(len(d) for d in qrels.values())) == (809, 919)
  with caplog.at_level(logging.WARNING):
    corpus, queries, qrels = readers.load_beir(os.path.join(DATA, "retrieval", "cranfield"))
  assert (len(corpus), len(queries), sum(len(d) for d in qrels.values())) == (1400, 225, 1612)
  assert corpus["471"] == "" and qrels["125"]["995"] == 2  # Empty documents are kept, and counted.
  assert "2 documents have an empty title and text" in caplog.text
  assert set(qrels["1"].values()) <= {1, 2, 3, 4}


def test_beir_doc_text_is_title_space_text(tmp_path):
  d = tmp_path / "b"
  (d / "qrels").mkdir(parents=True)
  _write(d / "corpus.jsonl.gz", json.dumps({"_id": "d1", "title": "Title", "text": "body "}) + "\n" +
         json.dumps({"_id": "d2", "title": "", "text": " only text"}) + "\n")
  _write(d / "queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n')
  _write(d / "qrels" / "dev.tsv", "query-id\tcorpus-id\tscore\nq2\td2\t1\n")
  corpus, queries, qrels = readers.load_beir(str(d), "dev")
  assert corpus == {"d1": "Title body", "d2": "only text"}
  assert queries == {"q2": "b"} and qrels == {"q2": {"d2": 1}}
  with pytest.raises(FileNotFoundError, match=r"qrels/test.tsv: no qrels for split 'test'; splits here: \['dev'\]"):
    readers.load_beir(str(d), "test")


NLI_GOOD = '{"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": "entailment"}\n'


@pytest.mark.parametrize("bad_line,message", [
    ('{"premise": "A man sleeps.", "hypothesis": "x", "label": "entailment"', "malformed JSON"),
    ('{"premise": "A man sleeps.", "label": "neutral"}', "missing field 'hypothesis'"),
    ('{"premise": "A man sleeps.", "hypothesis": "x", "label": "-"}', "unknown label '-'; use one of"),
    ('{"premise": "   ", "hypothesis": "x", "label": "neutral"}', "empty text in 'premise'"),
    ('{"premise": "A", "hypothesis": "x"}', "missing field 'label'"),
    ('["A", "x", "neutral"]', "expected a JSON object"),
])
def test_read_nli_errors_name_file_and_line(tmp_path, caplog, bad_line, message):
  path = _write(tmp_path / "bad.jsonl", NLI_GOOD + NLI_GOOD + bad_line + "\n" + NLI_GOOD)
  with pytest.raises(ValueError) as e:
    readers.read_nli(path)
  assert str(e.value).startswith(f"{path}:3: ") and message in str(e.value)
  assert "\n" not in str(e.value)
  with caplog.at_level(logging.WARNING):
    rows = readers.read_nli(path, skip_invalid=True)
  assert len(rows) == 3 and rows.skipped == 1
  assert "skipped 1 invalid rows" in caplog.text


def test_read_nli_accepts_int_labels_and_gzip(tmp_path):
  path = _write(tmp_path / "ok.jsonl.gz", '{"premise": "p", "hypothesis": "h", "label": 2}\n\n' + NLI_GOOD)
  assert readers.read_nli(path) == [{"premise": "p", "hypothesis": "h", "label": 2},
                                    {"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": 0}]


def test_read_sts_errors(tmp_path, caplog):
  header = "genre\tfilename\tyear\tsid\tscore\tsentence1\tsentence2\n"
  good = 'main\tf\t2012\t1\t3.800\tA "quoted man.\tA man.\n'
  path = _write(tmp_path / "sts.tsv", header + good + "main\tf\t2012\t2\thigh\tA.\tB.\n" +
                "main\tf\t2012\t3\t1.0\tonly six fields\n" + "main\tf\t2012\t4\t1.0\t \tB.\n" + good)
  with pytest.raises(ValueError, match=r"sts.tsv:3: score 'high' is not a number"):
    readers.read_sts(path)
  with caplog.at_level(logging.WARNING):
    rows = readers.read_sts(path, skip_invalid=True)
  assert rows == [{"sentence1": 'A "quoted man.', "sentence2": "A man.", "score": 3.8}] * 2
  assert rows.skipped == 3 and "skipped 3 invalid rows" in caplog.text
  lines = (header + good + "main\tf\t2012\t3\t1.0\tonly six fields\n")
  with pytest.raises(ValueError, match=r"sts2.tsv:3: 6 tab-separated fields, header has 7"):
    readers.read_sts(_write(tmp_path / "sts2.tsv", lines))
  with pytest.raises(ValueError, match=r"sts3.tsv:1: header .* is neither STS-B"):
    readers.read_sts(_write(tmp_path / "sts3.tsv", "a\tb\tc\nx\ty\t1\n"))


def test_read_triples_errors(tmp_path):
  path = _write(tmp_path / "t.tsv", "query\tpositive\tnegative\nq\tp\tn\nq\t\tn\n")
  with pytest.raises(ValueError, match=r"t.tsv:3: empty text in 'positive'"):
    readers.read_triples(path)
  path = _write(tmp_path / "t.jsonl",
                '{"query": "q", "positive": "p", "negative": "n"}\n{"query": "q", "positive": "p"}\n')
  with pytest.raises(ValueError, match=r"t.jsonl:2: missing field 'negative'"):
    readers.read_triples(path)
  with pytest.raises(ValueError, match=r"t2.tsv:1: header \['query', 'pos'\] lacks \['negative', 'positive'\]"):
    readers.read_triples(_write(tmp_path / "t2.tsv", "query\tpos\nq\tp\n"))


def test_qrels_unknown_document_or_query(tmp_path, caplog):
  d = tmp_path / "b"
  (d / "qrels").mkdir(parents=True)
  _write(d / "corpus.jsonl", '{"_id": "d1", "title": "", "text": "t"}\n')
  _write(d / "queries.jsonl", '{"_id": "q1", "text": "a"}\n')
  _write(d / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\nq7\td1\t1\n")
  with pytest.raises(ValueError, match=r"qrels/test.tsv:3: corpus-id 'd9' is not in corpus.jsonl"):
    readers.load_beir(str(d))
  with caplog.at_level(logging.WARNING):
    _, queries, qrels = readers.load_beir(str(d), skip_invalid=True)
  assert qrels == {"q1": {"d1": 1}} and "skipped 2 invalid rows" in caplog.text
  _write(d / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq7\td1\t1\n")
  with pytest.raises(ValueError, match=r"qrels/test.tsv:2: query-id 'q7' is not in queries.jsonl"):
    readers.load_beir(str(d))
  _write(d / "corpus.jsonl", '{"_id": "d1", "title": "", "text": "t"}\n{"_id": "d1", "text": "u"}\n')
  with pytest.raises(ValueError, match=r"corpus.jsonl:2: duplicate document _id 'd1'"):
    readers.load_beir(str(d))


def test_missing_file_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"nope.jsonl: no such file"):
    readers.read_nli(str(tmp_path / "nope.jsonl"))
