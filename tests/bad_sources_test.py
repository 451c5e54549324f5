"""Bad input of every source kind gives one line naming the file (and line); odd but valid input works.

Each case writes tiny files under tmp_path and calls what the CLI calls: `data.load_records(spec, view)` for
training sources, `evaluate.check_tasks` then `evaluate.evaluate_task` for evaluation tasks.
"""

import dataclasses
import gzip
import hashlib
import json
import logging
import os
from typing import Any, Callable

import numpy as np
import pytest

from neuralir_jax import data, evaluate

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)  # What the CLI turns into one line.

NLI = ('{"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": "entailment"}\n'
       '{"premise": "A man sleeps.", "hypothesis": "A man runs.", "label": "contradiction"}\n')
STS_HEADER = "genre\tfilename\tyear\tsid\tscore\tsentence1\tsentence2\n"
STS = STS_HEADER + "g\tf\t2012\t1\t4.0\tA man sleeps.\tA man rests.\ng\tf\t2012\t2\t1.0\tA cat.\tA plane.\n"
TRIPLES = "query\tpositive\tnegative\nq one\tp one\tn one\n"
CORPUS = ('{"_id": "d1", "title": "", "text": "alpha beta"}\n'
          '{"_id": "d2", "title": "T", "text": "gamma delta"}\n')
QUERIES = '{"_id": "q1", "text": "alpha?"}\n{"_id": "q2", "text": "gamma?"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


def _gz(text: str) -> bytes:
  return gzip.compress(text.encode("utf-8"))


def _beir(corpus=CORPUS, queries=QUERIES, qrels=QRELS) -> dict:
  return {"b/corpus.jsonl": corpus, "b/queries.jsonl": queries, "b/qrels/test.tsv": qrels}


@dataclasses.dataclass
class Case:
  files: dict  # relative path -> str (written as UTF-8) or bytes (written as is)
  target: str  # "train SPEC VIEW" or "eval TASK"; {d} is tmp_path
  where: str = ""  # the file (and :LINE) the message must name; {d} is tmp_path
  expect: str = ""  # a substring of the message; empty for a valid case
  check: Callable[[Any], bool] | None = None  # for a valid case: a test of the result
  kwargs: dict = dataclasses.field(default_factory=dict)


TFDS_DIR = {"tfds_data_dir": "{d}/tfds"}
_MANY = "".join(f'{{"premise": "Premise {i}.", "hypothesis": "H {i * 7919 % 1000}.", "label": {i % 3}}}\n'
                for i in range(2000))
TRUNCATED = _gz(_MANY)[:len(_gz(_MANY)) // 2]
CASES = {
    # NLI JSONL.
    "nli_malformed_json": Case({"n.jsonl": NLI + '{"premise": "x"\n'}, "train nli:{d}/n.jsonl pairs",
                               "n.jsonl:3", "malformed JSON"),
    "nli_not_utf8": Case({"n.jsonl": NLI.encode() + b'{"premise": "caf\xe9", "hypothesis": "h", "label": 0}\n'},
                         "train nli:{d}/n.jsonl pairs", "n.jsonl:3",
                         "not valid UTF-8 (byte 0xe9 at column 17); re-save the file as UTF-8"),
    "nli_empty": Case({"n.jsonl": ""}, "train nli:{d}/n.jsonl triplets", "n.jsonl", "no data rows"),
    "nli_blank_lines_only": Case({"n.jsonl": "\n\n"}, "train nli:{d}/n.jsonl pairs", "n.jsonl", "no data rows"),
    "nli_truncated_gz": Case({"n.jsonl.gz": TRUNCATED}, "train nli:{d}/n.jsonl.gz pairs", "n.jsonl.gz",
                             "not a valid gzip file (or truncated)"),
    "nli_plain_text_named_gz": Case({"n.jsonl.gz": NLI.encode()}, "train nli:{d}/n.jsonl.gz pairs",
                                    "n.jsonl.gz", "not a valid gzip file"),
    "nli_gzip_named_plain": Case({"n.jsonl": _gz(NLI)}, "train nli:{d}/n.jsonl pairs", "n.jsonl",
                                 "rename it to end in .gz"),
    "nli_eval_truncated_gz": Case({"n.jsonl.gz": TRUNCATED}, "eval nli:{d}/n.jsonl.gz", "n.jsonl.gz",
                                  "not a valid gzip file (or truncated)", kwargs={"predict_fn": np.eye(3)}),
    "nli_eval_without_head": Case({"n.jsonl": NLI}, "eval nli:{d}/n.jsonl", "n.jsonl",
                                  "needs a model with a classification head"),
    "folder_instead_of_file": Case({"b/x": "x"}, "eval sts:{d}/b", "{d}/b", "is a folder, not a data file"),
    "relative_missing_file": Case({}, "train nli:no_such_dir/n.jsonl pairs", "no_such_dir/n.jsonl",
                                  "relative to the current directory"),
    # STS TSV.
    "sts_nan_score": Case({"s.tsv": STS + "g\tf\t2012\t3\tnan\tA.\tB.\n"}, "train sts:{d}/s.tsv pairs",
                          "s.tsv:4", "score nan is not finite"),
    "sts_inf_score_eval": Case({"s.tsv": STS + "g\tf\t2012\t3\t-inf\tA.\tB.\n"}, "eval sts:{d}/s.tsv",
                               "s.tsv:4", "score -inf is not finite"),
    "sts_out_of_range": Case({"s.tsv": STS_HEADER + "g\tf\t2012\t1\t7.5\tA.\tB.\n"}, "train sts:{d}/s.tsv pairs",
                             "s.tsv:2", "score 7.5 is outside [0, 5]"),
    "sick_out_of_range": Case({"s.tsv": "pair_ID\tsentence_A\tsentence_a\tsentence_b\trelatedness_score\n"
                                        "1\tx\tA.\tB.\t-1\n"}, "eval sts:{d}/s.tsv", "s.tsv:2",
                              "relatedness_score -1 is outside [0, 5]"),
    "sts_header_only": Case({"s.tsv": STS_HEADER}, "train sts:{d}/s.tsv pairs", "s.tsv", "no data rows"),
    "sts_empty_eval": Case({"s.tsv": ""}, "eval sts:{d}/s.tsv", "s.tsv:1", "empty file"),
    "sts_header_only_eval": Case({"s.tsv.gz": _gz(STS_HEADER)}, "eval sts:{d}/s.tsv.gz", "s.tsv.gz",
                                 "no data rows"),
    "sts_constant_scores": Case({"s.tsv": STS_HEADER + "".join(f"g\tf\t2012\t{i}\t3.0\tA{i}.\tB{i}.\n"
                                                               for i in range(3))},
                                "eval sts:{d}/s.tsv", "s.tsv", "all 3 scores are equal; Spearman is undefined"),
    "sts_bad_header_eval": Case({"s.tsv": "a\tb\n1\t2\n"}, "eval sts:{d}/s.tsv", "s.tsv:1",
                                "is neither STS-B"),
    "sts_not_utf8_header": Case({"s.tsv": b"genre\xff\tscore\n"}, "train sts:{d}/s.tsv pairs", "s.tsv:1",
                                "not valid UTF-8 (byte 0xff at column 6)"),
    # Triples, TSV and JSONL.
    "triples_tsv_fields": Case({"t.tsv": TRIPLES + "q\tp\n"}, "train triples:{d}/t.tsv triplets", "t.tsv:3",
                               "2 tab-separated fields, header has 3"),
    "triples_tsv_not_utf8": Case({"t.tsv": TRIPLES.encode() + b"q\tp\xc3\tn\n"},
                                 "train triples:{d}/t.tsv triplets", "t.tsv:3", "not valid UTF-8"),
    "triples_tsv_truncated_gz": Case({"t.tsv.gz": _gz(TRIPLES + _MANY.replace(", ", "\t"))[:2000]},
                                     "train triples:{d}/t.tsv.gz triplets", "t.tsv.gz",
                                     "not a valid gzip file (or truncated)"),
    "triples_pairs_view": Case({"t.tsv": TRIPLES}, "train triples:{d}/t.tsv pairs", "t.tsv",
                               "has no sentence pairs"),
    "triples_tsv_header_only_triplets": Case({"t.tsv": TRIPLES.splitlines()[0] + "\n"},
                                             "train triples:{d}/t.tsv triplets", "t.tsv", "no data rows"),
    "triples_jsonl_missing": Case({"t.jsonl": '{"query": "q", "positive": "p", "negative": "n"}\n'
                                              '{"query": "q", "positive": "p"}\n'},
                                  "train triples:{d}/t.jsonl triplets", "t.jsonl:2", "no 'negative' (or 'negatives') field"),
    "triples_jsonl_empty": Case({"t.jsonl": ""}, "train triples:{d}/t.jsonl duplicates", "t.jsonl",
                                "no data rows"),
    # BEIR folders.
    "beir_corpus_duplicate": Case(_beir(corpus=CORPUS + '{"_id": "d1", "text": "again"}\n'), "eval beir:{d}/b",
                                  "corpus.jsonl:3", "duplicate document _id 'd1'"),
    "beir_corpus_empty": Case(_beir(corpus=""), "eval beir:{d}/b", "corpus.jsonl", "no data rows"),
    "beir_corpus_bad_json_train": Case(_beir(corpus=CORPUS + "{oops\n"), "train beir:{d}/b triplets",
                                       "corpus.jsonl:3", "malformed JSON"),
    "beir_queries_duplicate": Case(_beir(queries=QUERIES + '{"_id": "q1", "text": "again"}\n'),
                                   "eval beir:{d}/b", "queries.jsonl:3", "duplicate query _id 'q1'"),
    "beir_queries_not_utf8": Case(_beir(queries=QUERIES.encode() + b'{"_id": "q3", "text": "\x80"}\n'),
                                  "eval beir:{d}/b", "queries.jsonl:3", "not valid UTF-8 (byte 0x80 at column 24)"),
    "beir_qrels_conflict": Case(_beir(qrels=QRELS + "q1\td1\t2\n"), "eval beir:{d}/b", "test.tsv:4",
                                "conflicting qrels: query-id 'q1', corpus-id 'd1' has score 2 here but 1 on line 2"),
    "beir_qrels_header_only": Case(_beir(qrels="query-id\tcorpus-id\tscore\n"), "train beir:{d}/b triplets",
                                   "test.tsv", "no data rows"),
    "beir_missing_split": Case(_beir(), "eval beir:{d}/b:dev", "qrels/dev.tsv", "no qrels for split 'dev'"),
    "beir_missing_queries": Case({"b/corpus.jsonl": CORPUS, "b/qrels/test.tsv": QRELS}, "eval beir:{d}/b",
                                 "queries.jsonl", "no such file"),
    # TFDS, never downloaded.
    "tfds_not_prepared_train": Case({}, "train tfds:snli:train pairs", "{d}/tfds",
                                    "tfds:snli:train is not prepared in", kwargs=TFDS_DIR),
    "tfds_not_prepared_eval": Case({}, "eval tfds:glue/stsb:validation", "{d}/tfds",
                                   "prepare it with `tfds build glue/stsb", kwargs=TFDS_DIR),
    "tfds_unknown_dataset": Case({}, "train tfds:no_such_dataset:train pairs", "no_such_dataset",
                                 "TFDS has no dataset", kwargs=TFDS_DIR),
    # Odd but valid input.
    "ok_bom_jsonl": Case({"n.jsonl": "\ufeff" + NLI}, "train nli:{d}/n.jsonl pairs",
                         check=lambda rows: len(rows) == 2 and rows[0]["premise"] == "A man sleeps."),
    "ok_bom_tsv_header": Case({"s.tsv": "\ufeff" + STS}, "train sts:{d}/s.tsv pairs",
                              check=lambda rows: [r["score"] for r in rows] == [4.0, 1.0]),
    "ok_bom_queries_eval": Case(_beir(queries="\ufeff" + QUERIES), "eval beir:{d}/b",
                                check=lambda out: out["num_queries"] == 2),
    "ok_cr_inside_tsv_field": Case({"t.tsv": TRIPLES + "q\rtwo\tp\tn\n"}, "train triples:{d}/t.tsv triplets",
                                   check=lambda rows: len(rows) == 2 and rows[1]["anchor"] == "q\rtwo"),
    "ok_cr_inside_json_string": Case({"n.jsonl": NLI.replace("A man rests.", "A man\rrests.")},
                                     "train nli:{d}/n.jsonl pairs",
                                     check=lambda rows: rows[0]["hypothesis"] == "A man\rrests."),
    "ok_crlf_tsv": Case({"s.tsv": STS.replace("\n", "\r\n")}, "eval sts:{d}/s.tsv",
                        check=lambda out: out["num_pairs"] == 2),
    "ok_crlf_jsonl_gz": Case({"n.jsonl.gz": _gz(NLI.replace("\n", "\r\n"))}, "train nli:{d}/n.jsonl.gz triplets",
                             check=lambda rows: rows == [{"anchor": "A man sleeps.", "positive": "A man rests.",
                                                          "negative": "A man runs."}]),
    "ok_crlf_qrels": Case(_beir(qrels=QRELS.replace("\n", "\r\n")), "train beir:{d}/b triplets",
                          check=lambda rows: len(rows) == 2),
    "ok_200kb_tsv_field": Case({"t.tsv": TRIPLES + "q\t" + "word " * 40_000 + "\tn\n"},
                               "train triples:{d}/t.tsv triplets",
                               check=lambda rows: len(rows[1]["positive"]) == 200_000),
    "ok_unicode_line_separator": Case({"t.tsv": TRIPLES + "q\u2028x\tp\x85\tn\x1c\n"},
                                      "train triples:{d}/t.tsv triplets",
                                      check=lambda rows: len(rows) == 2 and rows[1]["anchor"] == "q\u2028x"),
    "ok_skip_invalid_counts_bad_rows": Case({"s.tsv": STS + "g\tf\t2012\t3\tnan\tA.\tB.\n"},
                                            "train sts:{d}/s.tsv pairs", kwargs={"skip_invalid": True},
                                            check=lambda rows: len(rows) == 2 and rows.skipped == 1),
    "ok_duplicate_identical_qrels": Case(_beir(qrels=QRELS + "q1\td1\t1\n"), "eval beir:{d}/b",
                                         check=lambda out: out["num_queries"] == 2),
}


def _fake_encode(texts):
  """A fixed pseudo-random unit vector per text."""
  seeds = [int(hashlib.md5(t.encode("utf-8")).hexdigest()[:8], 16) for t in texts]
  return np.stack([np.random.default_rng(s).normal(size=8) for s in seeds]).astype(np.float32)


def _call(case: Case, tmp_path):
  fill = lambda s: s.replace("{d}", str(tmp_path))  # noqa: E731
  kwargs = {k: fill(v) if isinstance(v, str) else v for k, v in case.kwargs.items()}
  what, spec, *view = fill(case.target).split(" ")
  if what == "train":
    return data.load_records(spec, view[0], **kwargs)
  if "predict_fn" in kwargs:
    logits = kwargs.pop("predict_fn")
    kwargs["predict_fn"] = lambda premises, hypotheses: logits[[0] * len(premises)]
  evaluate.check_tasks([spec], tfds_data_dir=kwargs.get("tfds_data_dir"))
  return evaluate.evaluate_task(_fake_encode, spec, **kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_source_gives_one_line_naming_the_file(name, tmp_path, monkeypatch):
  case = CASES[name]
  monkeypatch.chdir(tmp_path)
  for rel, content in case.files.items():
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
  if not case.expect:
    assert case.check(_call(case, tmp_path))
    return
  with pytest.raises(USER_ERRORS) as e:
    _call(case, tmp_path)
  message = str(e.value)
  assert "\n" not in message and "\r" not in message, message
  assert case.where.replace("{d}", str(tmp_path)) in message, message
  if ":" in case.where.rsplit("/", 1)[-1]:  # FILE:LINE: the line number is followed by the reason.
    assert f"{case.where}: " in message, message
  assert case.expect in message, message
  if name == "relative_missing_file":
    assert os.getcwd() in message


# ----------------------------------------------------------------------------------------------------------
# Retrieval options and the one evaluation entry point.


def _write(root, files):
  for rel, content in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def test_exclude_self_is_off_by_default_and_counts_judged_when_on(caplog):
  # Cranfield-style ids: query "1" and document "1" are unrelated, and qrels judge document "1" for query "1".
  corpus = {"1": "one", "2": "two", "3": "three"}
  queries = {"1": "query one", "2": "query two"}
  qrels = {"1": {"1": 2, "3": 1}, "2": {"3": 1}}
  out = evaluate.evaluate_retrieval(_fake_encode, corpus, queries, qrels, return_run=True)
  assert "1" in out["run"]["1"] and "excluded_judged" not in out
  assert out["recall@10"] == 1.0
  with caplog.at_level(logging.WARNING):
    on = evaluate.evaluate_retrieval(_fake_encode, corpus, queries, qrels, exclude_self=True, return_run=True)
  assert "1" not in on["run"]["1"] and on["excluded_judged"] == 1
  assert "exclude_self=True removed 1 documents that qrels judge" in caplog.text
  assert on["recall@10"] == pytest.approx((1 / 2 + 1) / 2)


class CountingEncoder:
  """The `evaluate.TaskEncoder` interface with a fake model that records what it encodes."""

  def __init__(self, nli_head=None):
    self.nli_head = nli_head
    self.calls = []

  def encode(self, texts, batch_size, show_progress):
    assert batch_size == 16 and show_progress is False
    self.calls.append(list(texts))
    return _fake_encode(texts)

  def predict_nli(self, premises, hypotheses):
    return np.tile([[1.0, 0.0, 0.0]], (len(premises), 1))  # Always entailment.


def test_evaluate_tasks_encodes_a_corpus_once_for_exact_and_scann(tmp_path):
  _write(tmp_path, _beir() | {"s.tsv": STS, "n.jsonl": NLI})
  beir, sts, nli = f"beir:{tmp_path}/b", f"sts:{tmp_path}/s.tsv", f"nli:{tmp_path}/n.jsonl"
  encoder, cache = CountingEncoder(nli_head={"w": 1}), {}
  exact = evaluate.evaluate_tasks(encoder, [beir, sts, nli], index="exact", batch_size=16, encode_cache=cache)
  scann = evaluate.evaluate_tasks(encoder, [beir], index="scann", batch_size=16, encode_cache=cache)
  corpus_texts = ["alpha beta", "T gamma delta"]
  assert [c for c in encoder.calls if c == corpus_texts] == [corpus_texts]  # Encoded once for both indexes.
  assert len(encoder.calls) == 3  # Corpus, queries, STS sentences; the ScaNN call encoded nothing.
  assert set(exact) == {beir, sts, nli} and exact[nli]["accuracy"] == 0.5
  assert scann[beir]["index"] == "scann" and scann[beir]["ann_recall@10"] == 1.0
  assert scann[beir]["ndcg@10"] == exact[beir]["ndcg@10"]
  for metric in evaluate.RETRIEVAL_METRICS:
    assert metric in exact[beir]
  assert set(evaluate.STS_METRICS) <= set(exact[sts]) and evaluate.PRIMARY_METRIC["nli"] in exact[nli]
  json.dumps(exact, allow_nan=False)  # JSON-safe: no NaN or inf.
  with pytest.raises(ValueError, match="encode_cache holds the embeddings of another encoder"):
    evaluate.evaluate_tasks(CountingEncoder(), [beir], batch_size=16, encode_cache=cache)


def test_check_tasks_reads_no_data_and_names_the_task(tmp_path):
  _write(tmp_path, _beir(corpus=CORPUS + "{broken\n") | {"n.jsonl": NLI})
  beir, nli = f"beir:{tmp_path}/b", f"nli:{tmp_path}/n.jsonl"
  evaluate.check_tasks([beir, nli])  # The broken corpus line is found only when the data is read.
  with pytest.raises(ValueError, match=r"corpus.jsonl:3: malformed JSON"):
    evaluate.evaluate_task(_fake_encode, beir)
  with pytest.raises(ValueError, match=rf"task '{nli}' is NLI: it needs a model with a classification head"):
    evaluate.evaluate_tasks(CountingEncoder(), [beir, nli])  # No head: refused before any encoding.
  with pytest.raises(FileNotFoundError, match=r"eval task 'sts:missing.tsv': missing.tsv: no such file \(relative"):
    evaluate.check_tasks(["sts:missing.tsv"])
  with pytest.raises(ValueError, match=r"'triples' is not an evaluation task"):
    evaluate.check_tasks([f"triples:{tmp_path}/n.jsonl"])
  with pytest.raises(TypeError, match="a list of task strings"):
    evaluate.check_tasks(beir)
  with pytest.raises(ValueError, match="unknown index 'faiss'"):
    evaluate.evaluate_tasks(CountingEncoder(), [beir], index="faiss")
