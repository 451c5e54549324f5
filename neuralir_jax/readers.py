r"""Readers of the local data files: NLI JSONL, STS TSV, triples (TSV or JSONL) and BEIR folders.

Every reader returns plain Python values (lists and dicts of str/int/float), reads `.gz` files transparently
and validates each row. A bad row (malformed JSON, missing field, unknown label, empty text, a score that is
not a finite number in range, a duplicate id, a qrels row that names an unknown document or contradicts an
earlier row, bytes that are not UTF-8) raises `ValueError("FILE:LINE: what is wrong; what to change")`. With
`skip_invalid=True` the bad rows are skipped instead, and their count is logged (and kept in `.skipped` of
the returned `Rows`), so nothing is ever dropped silently. Problems of the whole file (missing, empty,
corrupt gzip) raise a one-line `FileNotFoundError`/`ValueError` naming the file whatever `skip_invalid` says.

Files are read as bytes and split on "\n" only, so a stray "\r" inside a field stays in it, "\r\n" endings
work, a leading UTF-8 byte-order mark is dropped, and a TSV field may be of any length (fields are split on
tabs, with no quoting: sentences hold stray quotes).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import zlib
from typing import Any, Callable, Iterator

NLI_LABELS = ("entailment", "neutral", "contradiction")
NLI_LABEL_IDS = {name: i for i, name in enumerate(NLI_LABELS)}

# Column names of the STS formats: (sentence1, sentence2, score).
STS_HEADERS = (("sentence1", "sentence2", "score"),                          # STS-B
               ("sentence_a", "sentence_b", "relatedness_score"))            # SICK
# STS-B scores are 0..5 and SICK relatedness 1..5; the STS cosine loss divides the score by STS_MAX_SCORE.
STS_MIN_SCORE, STS_MAX_SCORE = 0.0, 5.0
TRIPLE_FIELDS = ("query", "positive", "negative")
QRELS_FIELDS = ("query-id", "corpus-id", "score")
_GZIP_MAGIC = b"\x1f\x8b"
# strict=False: a raw "\r" or tab inside a JSON string is kept rather than rejected. One decoder for all
# lines: json.loads(text, strict=False) would build a new one per line.
_JSON = json.JSONDecoder(strict=False)


class RowError(Exception):
  """A problem with one row; the reader adds the file and line."""


class Rows(list):
  """A list of parsed rows that also remembers how many invalid rows were skipped."""
  skipped: int = 0


def one_line(error: BaseException) -> str:
  """The exception's message on one line (library messages may span several)."""
  return " ".join(str(error).split()) or type(error).__name__


def relative_note(path: str) -> str:
  """' (relative to the current directory CWD)' for a relative path, '' for an absolute one."""
  return "" if os.path.isabs(path) else f" (relative to the current directory {os.getcwd()})"


def not_found(path: str, what: str, hint: str) -> FileNotFoundError:
  """`PATH: no such WHAT; HINT`, saying what a relative path is relative to."""
  return FileNotFoundError(f"{path}: no such {what}{relative_note(path)}; {hint}")


def check_file(path: str) -> None:
  """Raises FileNotFoundError (or ValueError for a folder) unless `path` is a file."""
  if os.path.isdir(path):
    raise ValueError(f"{path}: is a folder, not a data file; name the file inside it")
  if not os.path.isfile(path):
    raise not_found(path, "file", "check the path")


def read_lines(path: str) -> Iterator[tuple[int, str | RowError]]:
  """(line number, text without its line ending) for each line of a UTF-8 file, gunzipping `*.gz`.

  A line that is not UTF-8 comes as a RowError (a row problem); an unreadable file, or a `.gz` that is
  corrupt or truncated, raises ValueError naming the file.
  """
  check_file(path)
  compressed = path.endswith(".gz")
  try:
    f = gzip.open(path, "rb") if compressed else open(path, "rb")
  except OSError as e:
    raise ValueError(f"{path}: cannot open the file ({one_line(e)}); check its permissions") from None
  line = 0
  with f:
    while True:
      try:
        raw = f.readline()
      except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
        if compressed:
          raise ValueError(f"{path}: not a valid gzip file (or truncated): {one_line(e)}, at line {line + 1}; "
                           "download it again, or compress it again with gzip") from None
        raise ValueError(f"{path}:{line + 1}: cannot read the file ({one_line(e)})") from None
      if not raw:
        return
      line += 1
      if line == 1 and not compressed and raw.startswith(_GZIP_MAGIC):
        raise ValueError(f"{path}: the file is gzip-compressed but its name does not end in .gz; "
                         "rename it to end in .gz")
      yield line, _decode(raw, first=(line == 1))


def _decode(raw: bytes, first: bool) -> str | RowError:
  r"""One line's bytes -> text without "\n" / "\r\n" (and without the BOM on the first line)."""
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    column = len(raw[:e.start].decode("utf-8", "replace")) + 1
    return RowError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); re-save the file as UTF-8")
  if first and text.startswith("\ufeff"):  # utf-8-sig: editors on Windows write a byte-order mark.
    text = text[1:]
  if text.endswith("\n"):
    text = text[:-1]
  if text.endswith("\r"):
    text = text[:-1]
  return text


def find_file(directory: str, name: str) -> str:
  """`directory/name`, or `directory/name.gz` when only the gzipped file exists."""
  path = os.path.join(directory, name)
  if not os.path.isfile(path) and os.path.isfile(path + ".gz"):
    return path + ".gz"
  if not os.path.isfile(path):
    raise not_found(path, f"file (nor {name}.gz)",
                    "a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
  return path


def _collect(path: str, rows: Iterator[tuple[int, Any]], parse: Callable[[Any], Any | None],
             skip_invalid: bool) -> Rows:
  """Parses (line, raw) pairs; bad rows raise `file:line: ...` or are counted when skip_invalid.

  A file that yields no row at all raises: training and evaluation both need data.
  """
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
  if not out:
    what = (f"all {out.skipped} rows are invalid and were skipped" if out.skipped
            else "no data rows (the file is empty, or has only a header)")
    raise ValueError(f"{path}: {what}; fill the file or point the data source at another one.")
  return out


def _json_lines(path: str) -> Iterator[tuple[int, Any]]:
  for line, text in read_lines(path):
    if isinstance(text, str) and not text.strip():
      continue
    if isinstance(text, str):
      try:
        text = _JSON.decode(text)
      except json.JSONDecodeError as e:
        text = RowError(f"malformed JSON ({e.msg} at column {e.colno}); write one JSON object per line")
    yield line, text


def _tsv_lines(path: str, check_header: Callable[[list[str]], None]) -> tuple[list[str], Iterator]:
  """(header, iterator of (line, dict or RowError)); `check_header` raises RowError for a wrong header."""
  lines = read_lines(path)
  _, first = next(lines, (0, None))
  try:
    if first is None:
      raise RowError("empty file; expected a tab-separated header line")
    if isinstance(first, RowError):
      raise first
    header = [h.strip() for h in first.split("\t")]
    check_header(header)
  except RowError as e:
    lines.close()
    raise ValueError(f"{path}:1: {e}.") from None

  def rows():
    for line, text in lines:
      if isinstance(text, RowError):
        yield line, text
      elif text:
        fields = text.split("\t")
        if len(fields) != len(header):
          yield line, RowError(f"{len(fields)} tab-separated fields, header has {len(header)}; "
                               "fix the tabs in this row")
        else:
          yield line, dict(zip(header, fields))
  return header, rows()


def _shown(header: list[str], limit: int = 200) -> str:
  """The header for a message, cut short: a data line mistaken for a header may be very long."""
  text = repr(header)
  return text if len(text) <= limit else text[:limit] + "...]"


def _require(columns: tuple[str, ...]) -> Callable[[list[str]], None]:
  def check(header):
    if not set(columns) <= set(header):
      raise RowError(f"header {_shown(header)} lacks {sorted(set(columns) - set(header))}; "
                     f"the first line must name the columns {list(columns)}, tab-separated")
  return check


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


def sts_score(text: str, name: str = "score") -> float:
  """A gold STS score: a finite number in [STS_MIN_SCORE, STS_MAX_SCORE], else RowError."""
  try:
    score = float(text)
  except ValueError:
    raise RowError(f"{name} {text!r} is not a number") from None
  if not math.isfinite(score):
    raise RowError(f"{name} {text.strip()} is not finite; give a number in [0, 5]")
  if not STS_MIN_SCORE <= score <= STS_MAX_SCORE:
    raise RowError(f"{name} {text.strip()} is outside [0, 5] (STS-B scores 0..5, SICK 1..5; the STS loss "
                   "divides by 5); rescale the scores to 0..5")
  return score


def _sts_columns(found: list[str]) -> Callable[[list[str]], None]:
  """A header check that fills `found` with the (sentence1, sentence2, score) column names."""
  def check(header):
    found.extend(next((c for c in STS_HEADERS if set(c) <= set(header)), ()))
    if not found:
      raise RowError(f"header {_shown(header)} is neither STS-B ({'/'.join(STS_HEADERS[0])}) nor SICK "
                     f"({'/'.join(STS_HEADERS[1])}); name the sentence and score columns so")
  return check


def check_sts_header(path: str) -> None:
  """Reads only the header line of an STS file and raises `FILE:1: ...` unless it is STS-B or SICK."""
  _, rows = _tsv_lines(path, _sts_columns([]))
  rows.close()


def read_sts(path: str, skip_invalid: bool = False) -> Rows:
  """STS-B or SICK TSV (header decides) -> [{"sentence1": str, "sentence2": str, "score": float}].

  Scores must be finite and in [0, 5] (STS-B is 0..5, SICK 1..5).
  """
  columns: list[str] = []
  _, rows = _tsv_lines(path, _sts_columns(columns))
  s1, s2, score_key = columns

  def parse(row):
    if isinstance(row, RowError):
      raise row
    a, b = _text(row, s1), _text(row, s2)
    return {"sentence1": a, "sentence2": b, "score": sts_score(row[score_key], score_key)}
  return _collect(path, rows, parse, skip_invalid)


def read_parallel(path: str, skip_invalid: bool = False) -> Rows:
  """Parallel sentences, `source<TAB>target` per line, no header (sentence-transformers' parallel-sentences
  TSV files; further tab-separated translations of the source are allowed) -> [{source, targets}]."""
  def parse(raw):
    if isinstance(raw, RowError):
      raise raw
    if not raw:
      return None
    fields = [f.strip() for f in raw.split("\t")]
    if len(fields) < 2:
      raise RowError("one field; write source<TAB>target (a sentence and its translation)")
    if not all(fields):
      raise RowError("an empty sentence; every tab-separated field needs text")
    return {"source": fields[0], "targets": fields[1:]}
  return _collect(path, read_lines(path), parse, skip_invalid)


def read_triples(path: str, skip_invalid: bool = False) -> Rows:
  """Triples, TSV with header query/positive/negative or JSONL with those keys -> [{query, positive, negative}]."""
  def parse(row):
    if isinstance(row, RowError):
      raise row
    return {k: _text(row, k) for k in TRIPLE_FIELDS}
  if path.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
    return _collect(path, _json_lines(path), _checked(parse), skip_invalid)
  _, rows = _tsv_lines(path, _require(TRIPLE_FIELDS))
  return _collect(path, rows, parse, skip_invalid)


def _text_list(row: dict, key: str, allow_empty: bool) -> list[str]:
  value = row[key]
  if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
    raise RowError(f"field '{key}' must be a list of strings")
  if not value and not allow_empty:
    raise RowError(f"field '{key}' is an empty list; give at least one text")
  if any(not v.strip() for v in value):
    raise RowError(f"empty text in '{key}'; remove it or fill in the text")
  return value


# Scores a tuples row may carry per positive and negative (`neuralir mine` writes the miner's; `--teacher`
# adds a cross-encoder's): distill.scores -> key prefix.
SCORE_PREFIXES = {"miner": "", "teacher": "teacher_"}


def _score_list(row: dict, key: str, count: int) -> list[float]:
  values = row[key]
  if (not isinstance(values, list) or len(values) != count
      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
    raise RowError(f"field '{key}' must be a list of {count} finite numbers, one per text")
  return [float(v) for v in values]


def _id_list(row: dict, list_key: str, single_key: str, count: int, texts_key: str) -> list[str] | None:
  """Ids of the texts in row[texts_key]: row[list_key] (a list) or row[single_key] (one text), else None."""
  if list_key in row:
    ids = row[list_key]
    if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
      raise RowError(f"field '{list_key}' must be a list of ids (strings or integers)")
  elif single_key in row and count == 1:
    ids = [row[single_key]]
    if not isinstance(ids[0], (str, int)):
      raise RowError(f"field '{single_key}' must be a string or an integer id")
  else:
    return None
  if len(ids) != count:
    raise RowError(f"'{list_key}' has {len(ids)} ids for {count} texts in '{texts_key}'; give one id per text")
  return [str(i) for i in ids]


def read_tuples(path: str, skip_invalid: bool = False) -> Rows:
  """Training n-tuples: a triples TSV (query/positive/negative) or JSONL rows with one query and its texts.

  A JSONL row has `query` (and optional `query_id`), `positive` or a list `positives` (ids: `pos_id` or
  `positive_ids`), and optionally `negative` or a list `negatives` (ids: `neg_id` or `negative_ids`) in the
  order they are to be used (`neuralir mine` writes them best-scored first). Returns rows
  {line, query, query_id, positives, positive_ids, negatives, negative_ids}; ids are None when absent.
  Score lists, one number per text, are kept when present: `positive_scores` / `negative_scores` (the
  miner's) and `teacher_positive_scores` / `teacher_negative_scores` (a cross-encoder's).
  """
  def texts_of(row, single, required):  # (texts, the key they came from): `single` or the list `single`s.
    if single + "s" in row:
      return _text_list(row, single + "s", allow_empty=not required), single + "s"
    if single in row:
      return [_text(row, single)], single
    if required:
      raise RowError(f"missing field '{single}' (or a list '{single}s'); every row needs a relevant text")
    return [], single + "s"

  def parse_json(row):
    query = _text(row, "query")
    query_id = row.get("query_id")
    if query_id is not None and not isinstance(query_id, (str, int)):
      raise RowError("field 'query_id' must be a string or an integer")
    positives, positive_key = texts_of(row, "positive", required=True)
    negatives, negative_key = texts_of(row, "negative", required=False)
    out = {"query": query, "query_id": None if query_id is None else str(query_id),
           "positives": positives,
           "positive_ids": _id_list(row, "positive_ids", "pos_id", len(positives), positive_key),
           "negatives": negatives,
           "negative_ids": _id_list(row, "negative_ids", "neg_id", len(negatives), negative_key)}
    for prefix in SCORE_PREFIXES.values():
      for what, texts in (("positive", positives), ("negative", negatives)):
        key = f"{prefix}{what}_scores"
        if key in row:
          out[key] = _score_list(row, key, len(texts))
    return out

  def parse_tsv(row):
    return {"query": _text(row, "query"), "query_id": None, "positives": [_text(row, "positive")],
            "positive_ids": None, "negatives": [_text(row, "negative")], "negative_ids": None}

  def numbered(lines):  # _collect passes parse() the raw row only; keep its line number beside it.
    return ((line, (line, raw)) for line, raw in lines)

  def keep_line(parse):
    def wrapped(item):
      line, raw = item
      if isinstance(raw, RowError):
        raise raw
      return {"line": line, **parse(raw)}
    return wrapped

  if path.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
    return _collect(path, numbered(_json_lines(path)), keep_line(_checked(parse_json)), skip_invalid)
  _, rows = _tsv_lines(path, _require(TRIPLE_FIELDS))
  return _collect(path, numbered(rows), keep_line(parse_tsv), skip_invalid)


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
  """queries.jsonl -> {query_id: text}; query ids must be unique."""
  seen: set[str] = set()

  def parse(row):
    if "_id" not in row:
      raise RowError("missing field '_id'; every query line needs _id and text")
    qid = str(row["_id"])
    if qid in seen:
      raise RowError(f"duplicate query _id {qid!r}; query ids must be unique (remove or renumber this line)")
    text = _text(row, "text")
    seen.add(qid)
    return qid, text
  return dict(_collect(path, _json_lines(path), _checked(parse), skip_invalid))


def read_qrels(path: str, corpus: dict[str, str], queries: dict[str, str],
               skip_invalid: bool = False) -> dict[str, dict[str, int]]:
  """qrels/<split>.tsv (query-id, corpus-id, score) -> {qid: {doc_id: relevance}}, ids checked.

  A (query-id, corpus-id) pair given twice with different scores is a row error; repeated identical rows
  are kept once and counted in a warning.
  """
  _, rows = _tsv_lines(path, _require(QRELS_FIELDS))
  first_seen: dict[tuple[str, str], tuple[int, int]] = {}  # (qid, doc_id) -> (score, line)
  repeated = 0

  def parse(item):
    nonlocal repeated
    line, row = item
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
    if (qid, doc_id) in first_seen:
      earlier, earlier_line = first_seen[(qid, doc_id)]
      if earlier != score:
        raise RowError(f"conflicting qrels: query-id {qid!r}, corpus-id {doc_id!r} has score {score} here but "
                       f"{earlier} on line {earlier_line}; keep one of the two rows")
      repeated += 1
      return None
    first_seen[(qid, doc_id)] = score, line
    return qid, doc_id, score
  qrels: dict[str, dict[str, int]] = {}
  for qid, doc_id, score in _collect(path, ((line, (line, row)) for line, row in rows), parse, skip_invalid):
    qrels.setdefault(qid, {})[doc_id] = score
  if repeated:
    logging.warning("%s: %d rows repeat an earlier (query-id, corpus-id, score) row; each pair is kept once.",
                    path, repeated)
  return qrels


def beir_qrels_path(directory: str, split: str) -> str:
  """`directory/qrels/<split>.tsv`, checked to exist (with the folder), without reading anything."""
  if not os.path.isdir(directory):
    raise not_found(directory, "BEIR folder", "it must hold corpus.jsonl, queries.jsonl and qrels/")
  qrels_dir = os.path.join(directory, "qrels")
  qrels_path = os.path.join(qrels_dir, f"{split}.tsv")
  if not os.path.isfile(qrels_path):
    have = sorted(f[:-4] for f in os.listdir(qrels_dir) if f.endswith(".tsv")) if os.path.isdir(qrels_dir) else []
    raise FileNotFoundError(f"{qrels_path}: no qrels for split {split!r}; splits here: {have}"
                            f"{relative_note(qrels_path)}.")
  return qrels_path


def load_beir(directory: str, split: str = "test", skip_invalid: bool = False
              ) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
  """A BEIR folder -> (corpus {doc_id: text}, queries {qid: text}, qrels {qid: {doc_id: grade}}).

  Files may be gzipped (`corpus.jsonl.gz`). Queries are restricted to those with qrels in `split`.
  """
  qrels_path = beir_qrels_path(directory, split)
  corpus = read_beir_corpus(find_file(directory, "corpus.jsonl"), skip_invalid)
  queries = read_beir_queries(find_file(directory, "queries.jsonl"), skip_invalid)
  qrels = read_qrels(qrels_path, corpus, queries, skip_invalid)
  queries = {qid: text for qid, text in queries.items() if qid in qrels}
  return corpus, queries, qrels
