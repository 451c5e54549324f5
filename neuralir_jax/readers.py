"""Readers of the local data files: NLI JSONL, STS TSV, triples (TSV or JSONL) and BEIR folders.

Every reader returns plain Python values (lists and dicts of str/int/float), reads `.gz` files transparently
and validates each row. A bad row (malformed JSON, missing field, unknown label, empty text, a qrels row that
names an unknown document) raises `ValueError("FILE:LINE: what is wrong; what to change")`. With
`skip_invalid=True` the bad rows are skipped instead, and their count is logged (and kept in `.skipped` of
the returned `Rows`), so nothing is ever dropped silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
from typing import Any, Callable, Iterator

NLI_LABELS = ("entailment", "neutral", "contradiction")
NLI_LABEL_IDS = {name: i for i, name in enumerate(NLI_LABELS)}

# Column names of the STS formats: (sentence1, sentence2, score).
STS_HEADERS = (("sentence1", "sentence2", "score"),                          # STS-B
               ("sentence_a", "sentence_b", "relatedness_score"))            # SICK
TRIPLE_FIELDS = ("query", "positive", "negative")


class RowError(Exception):
  """A problem with one row; the reader adds the file and line."""


class Rows(list):
  """A list of parsed rows that also remembers how many invalid rows were skipped."""
  skipped: int = 0


def open_text(path: str) -> io.TextIOBase:
  """Opens a UTF-8 text file, gunzipping `*.gz`; a missing file names itself."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file; check the path in the data source.")
  if path.endswith(".gz"):
    return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
  return open(path, encoding="utf-8", newline="")


def find_file(directory: str, name: str) -> str:
  """`directory/name`, or `directory/name.gz` when only the gzipped file exists."""
  path = os.path.join(directory, name)
  if not os.path.isfile(path) and os.path.isfile(path + ".gz"):
    return path + ".gz"
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file (nor {name}.gz); a BEIR folder needs corpus.jsonl, "
                            "queries.jsonl and qrels/<split>.tsv.")
  return path


def _collect(path: str, rows: Iterator[tuple[int, Any]], parse: Callable[[Any], Any | None],
             skip_invalid: bool) -> Rows:
  """Parses (line, raw) pairs; bad rows raise `file:line: ...` or are counted when skip_invalid."""
  out = Rows()
  for line, raw in rows:
    try:
      parsed = parse(raw)
    except RowError as e:
      if not skip_invalid:
        raise ValueError(f"{path}:{line}: {e}") from None
      out.skipped += 1
      continue
    if parsed is not None:
      out.append(parsed)
  if out.skipped:
    logging.warning("%s: skipped %d invalid rows (skip_invalid=True); %d rows kept.", path, out.skipped,
                    len(out))
  return out


def _json_lines(path: str) -> Iterator[tuple[int, Any]]:
  with open_text(path) as f:
    for line, text in enumerate(f, 1):
      if not text.strip():
        continue
      try:
        yield line, json.loads(text)
      except json.JSONDecodeError as e:
        yield line, RowError(f"malformed JSON ({e.msg} at column {e.colno}); write one JSON object per line")


def _tsv_lines(path: str, required: tuple[str, ...] | None = None) -> tuple[list[str], Iterator]:
  """(header, iterator of (line, dict)); sentences may hold stray quotes, hence QUOTE_NONE."""
  f = open_text(path)
  reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
  header = next(reader, None)
  if header is None:
    f.close()
    raise ValueError(f"{path}:1: empty file; expected a tab-separated header line.")
  header = [h.strip() for h in header]
  if required and not set(required) <= set(header):
    f.close()
    raise ValueError(f"{path}:1: header {header} lacks {sorted(set(required) - set(header))}; "
                     f"the first line must name the columns {list(required)}, tab-separated.")

  def rows():
    with f:
      for fields in reader:
        line = reader.line_num
        if not fields or fields == [""]:
          continue
        if len(fields) != len(header):
          yield line, RowError(f"{len(fields)} tab-separated fields, header has {len(header)}; "
                               "fix the tabs in this row")
        else:
          yield line, dict(zip(header, fields))
  return header, rows()


def _text(row: dict, key: str) -> str:
  if key not in row:
    raise RowError(f"missing field '{key}'; every row needs {key!r}")
  value = row[key]
  if not isinstance(value, str):
    raise RowError(f"field '{key}' is {type(value).__name__}, not a string")
  if not value.strip():
    raise RowError(f"empty text in '{key}'; remove the row or fill in the text")
  return value


def _checked(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
  def wrapped(raw):
    if isinstance(raw, RowError):
      raise raw
    if not isinstance(raw, dict):
      raise RowError(f"expected a JSON object, got {type(raw).__name__}")
    return parse(raw)
  return wrapped


def nli_label(value: Any) -> int:
  """'entailment'|'neutral'|'contradiction' (or 0/1/2) -> 0/1/2."""
  if isinstance(value, str) and value.strip().lower() in NLI_LABEL_IDS:
    return NLI_LABEL_IDS[value.strip().lower()]
  if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(NLI_LABELS):
    return value
  raise RowError(f"unknown label {value!r}; use one of {list(NLI_LABELS)} (or 0, 1, 2)")


def read_nli(path: str, skip_invalid: bool = False) -> Rows:
  """NLI JSONL -> [{"premise": str, "hypothesis": str, "label": int}], label index in NLI_LABELS."""
  def parse(row):
    premise, hypothesis = _text(row, "premise"), _text(row, "hypothesis")
    if "label" not in row:
      raise RowError(f"missing field 'label'; every row needs one of {list(NLI_LABELS)}")
    return {"premise": premise, "hypothesis": hypothesis, "label": nli_label(row["label"])}
  return _collect(path, _json_lines(path), _checked(parse), skip_invalid)


def read_sts(path: str, skip_invalid: bool = False) -> Rows:
  """STS-B or SICK TSV (header decides) -> [{"sentence1": str, "sentence2": str, "score": float}]."""
  with open_text(path) as f:
    first = f.readline().rstrip("\r\n").split("\t")
  for columns in STS_HEADERS:
    if set(columns) <= {h.strip() for h in first}:
      break
  else:
    raise ValueError(f"{path}:1: header {first} is neither STS-B ({'/'.join(STS_HEADERS[0])}) nor SICK "
                     f"({'/'.join(STS_HEADERS[1])}); name the sentence and score columns so.")
  s1, s2, score_key = columns
  _, rows = _tsv_lines(path, columns)

  def parse(row):
    if isinstance(row, RowError):
      raise row
    a, b = _text(row, s1), _text(row, s2)
    try:
      score = float(row[score_key])
    except ValueError:
      raise RowError(f"{score_key} {row[score_key]!r} is not a number") from None
    return {"sentence1": a, "sentence2": b, "score": score}
  return _collect(path, rows, parse, skip_invalid)


def read_triples(path: str, skip_invalid: bool = False) -> Rows:
  """Triples, TSV with header query/positive/negative or JSONL with those keys -> [{query, positive, negative}]."""
  def parse(row):
    if isinstance(row, RowError):
      raise row
    return {k: _text(row, k) for k in TRIPLE_FIELDS}
  if path.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
    return _collect(path, _json_lines(path), _checked(parse), skip_invalid)
  _, rows = _tsv_lines(path, TRIPLE_FIELDS)
  return _collect(path, rows, parse, skip_invalid)


def read_beir_corpus(path: str, skip_invalid: bool = False) -> dict[str, str]:
  """corpus.jsonl -> {doc_id: (title + " " + text).strip()}; empty documents are kept and counted."""
  seen: set[str] = set()

  def parse(row):
    if "_id" not in row:
      raise RowError("missing field '_id'; every corpus line needs _id, title, text")
    doc_id = str(row["_id"])
    if doc_id in seen:
      raise RowError(f"duplicate document _id {doc_id!r}; document ids must be unique")
    title, text = row.get("title") or "", row.get("text")
    if text is None:
      raise RowError("missing field 'text'; every corpus line needs _id, title, text")
    if not isinstance(title, str) or not isinstance(text, str):
      raise RowError("title and text must be strings")
    seen.add(doc_id)
    return doc_id, (title + " " + text).strip()
  corpus = dict(_collect(path, _json_lines(path), _checked(parse), skip_invalid))
  # Empty documents are part of real collections (Cranfield 471, 995; 995 is judged relevant), so they are
  # kept, as BEIR keeps them, but counted.
  empty = [doc_id for doc_id, body in corpus.items() if not body]
  if empty:
    logging.warning("%s: %d documents have an empty title and text (kept, as BEIR does): %s", path,
                    len(empty), empty[:10])
  return corpus


def read_beir_queries(path: str, skip_invalid: bool = False) -> dict[str, str]:
  """queries.jsonl -> {query_id: text}."""
  def parse(row):
    if "_id" not in row:
      raise RowError("missing field '_id'; every query line needs _id and text")
    return str(row["_id"]), _text(row, "text")
  return dict(_collect(path, _json_lines(path), _checked(parse), skip_invalid))


def read_qrels(path: str, corpus: dict[str, str], queries: dict[str, str],
               skip_invalid: bool = False) -> dict[str, dict[str, int]]:
  """qrels/<split>.tsv (query-id, corpus-id, score) -> {qid: {doc_id: relevance}}, ids checked."""
  _, rows = _tsv_lines(path, ("query-id", "corpus-id", "score"))

  def parse(row):
    if isinstance(row, RowError):
      raise row
    qid, doc_id = row["query-id"].strip(), row["corpus-id"].strip()
    if qid not in queries:
      raise RowError(f"query-id {qid!r} is not in queries.jsonl; fix the id or add the query")
    if doc_id not in corpus:
      raise RowError(f"corpus-id {doc_id!r} is not in corpus.jsonl; fix the id or add the document")
    try:
      score = int(row["score"])
    except ValueError:
      raise RowError(f"score {row['score']!r} is not an integer relevance grade") from None
    return qid, doc_id, score
  qrels: dict[str, dict[str, int]] = {}
  for qid, doc_id, score in _collect(path, rows, parse, skip_invalid):
    qrels.setdefault(qid, {})[doc_id] = score
  return qrels


def load_beir(directory: str, split: str = "test", skip_invalid: bool = False
              ) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
  """A BEIR folder -> (corpus {doc_id: text}, queries {qid: text}, qrels {qid: {doc_id: grade}}).

  Files may be gzipped (`corpus.jsonl.gz`). Queries are restricted to those with qrels in `split`.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory}: no such BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
  qrels_dir = os.path.join(directory, "qrels")
  qrels_path = os.path.join(qrels_dir, f"{split}.tsv")
  if not os.path.isfile(qrels_path):
    have = sorted(f[:-4] for f in os.listdir(qrels_dir) if f.endswith(".tsv")) if os.path.isdir(qrels_dir) else []
    raise FileNotFoundError(f"{qrels_path}: no qrels for split {split!r}; splits here: {have}.")
  corpus = read_beir_corpus(find_file(directory, "corpus.jsonl"), skip_invalid)
  queries = read_beir_queries(find_file(directory, "queries.jsonl"), skip_invalid)
  qrels = read_qrels(qrels_path, corpus, queries, skip_invalid)
  queries = {qid: text for qid, text in queries.items() if qid in qrels}
  return corpus, queries, qrels
