"""The input pipeline: data sources named by one string, training views, and a resumable per-process iterator.

A source is `tfds:NAME[/CONFIG]:SPLIT` (read with `tfds.data_source`, array_record, no TensorFlow; it must be
prepared beforehand: nothing is downloaded here), `nli:FILE.jsonl[.gz]`, `sts:FILE.tsv[.gz]`,
`beir:DIR[:SPLIT]`, `triples:FILE` or `parallel:FILE.tsv` (see `readers`); several sources joined with
commas are read one after the other into one set of records.
`load_records(spec, view)` turns it into the records one training objective needs:

  pairs       NLI: premise, hypothesis, label (int);  STS: sentence1, sentence2, score (float)
  triplets    anchor, positive, negative (NLI grouped by premise: entailment / contradiction hypotheses;
              triples files: query/positive/negative; BEIR: query and a relevant document, no negative)
  nli_full    anchor, positive, negative, neutral (NLI premises that have all three labels)
  duplicates  anchor == positive, every distinct sentence once (unsupervised SimCSE)
  (parallel sources give anchor = source sentence, positive = its translation, in every view but duplicates)

`make_train_iterator` shuffles the records with grain (a new permutation each epoch, epochs concatenated into
one stream), cuts the stream into global batches and gives process p the p-th contiguous slice of each,
tokenised into numpy arrays padded to the global batch's length bucket; so concatenating the processes' local
batches gives exactly the batch one process would see. Its state is the number of global batches consumed,
a JSON dict.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import importlib
import logging
import os
import sys
import threading
from typing import Any, Iterable, Iterator, Sequence

import grain
import numpy as np

from neuralir_jax import config_lib, packing, readers
from neuralir_jax import negatives as negatives_lib
from neuralir_jax.readers import NLI_LABELS, load_beir, read_nli, read_sts  # noqa: F401 (re-exported)
from neuralir_jax.tokenization import Tokenizer

SCHEMES = ("tfds", "nli", "sts", "beir", "triples", "parallel")
SOURCE_SYNTAX = ("tfds:NAME[/CONFIG]:SPLIT, nli:FILE.jsonl[.gz], sts:FILE.tsv[.gz], beir:DIR[:SPLIT], "
                 "triples:FILE, parallel:FILE.tsv[.gz]")
VIEWS = config_lib.VIEWS
# Per-record values batched beside the texts: NLI label, STS score, distillation teacher scores [1 + k]
# (positive then negatives) and teacher embeddings [D].
SCALAR_COLUMNS = {"label": np.int32, "score": np.float32, "teacher_scores": np.float32,
                  "teacher_embedding": np.float32}
SAMPLERS = config_lib.SAMPLERS
ENTAILMENT, NEUTRAL, CONTRADICTION = range(3)


@dataclasses.dataclass(frozen=True)
class Source:
  """A parsed source string. `path` is the file or folder (the dataset name for tfds)."""
  kind: str
  path: str
  split: str | None = None
  config: str | None = None


def parse_source(spec: str) -> Source:
  """'nli:data/nli/snli_dev.jsonl.gz' -> Source('nli', 'data/nli/snli_dev.jsonl.gz'); see SOURCE_SYNTAX."""
  kind, sep, rest = spec.partition(":")
  if not sep or kind not in SCHEMES:
    raise ValueError(f"unknown data source {spec!r}: scheme {kind!r} is not one of {SOURCE_SYNTAX}.")
  if not rest:
    raise ValueError(f"data source {spec!r} names no file or dataset; write it as one of {SOURCE_SYNTAX}.")
  if kind == "tfds":
    name, sep, split = rest.partition(":")  # Split slices such as train[:10%] keep their colon.
    if not sep or not split:
      raise ValueError(f"data source {spec!r} lacks a split; write tfds:NAME[/CONFIG]:SPLIT, e.g. tfds:snli:train.")
    name, _, config = name.partition("/")
    return Source(kind, name, split, config or None)
  if kind == "beir":
    directory, sep, split = rest.rpartition(":")
    if sep and split and "/" not in split:
      return Source(kind, directory, split)
    return Source(kind, rest, "test")
  return Source(kind, rest)


# ----------------------------------------------------------------------------------------------------------
# Raw rows of a source.


def read_tfds(source: Source, data_dir: str | None = None, skip_invalid: bool = False) -> list[dict]:
  """Rows of a TFDS split: NLI datasets (premise/hypothesis/label) or STS (sentence1/sentence2/label float).

  Reads the prepared array_record files with `tfds.data_source` (no TensorFlow) and never downloads: an
  unprepared dataset is a one-line error saying how to prepare it. NLI rows with label -1 (no gold label)
  are dropped and counted in the log.
  """
  tfds = _import_tfds()
  name = source.path + (f"/{source.config}" if source.config else "")
  spec = f"tfds:{name}:{source.split}"
  try:
    ds = tfds.data_source(name, split=source.split, data_dir=data_dir, download=False)
  except Exception as e:  # noqa: BLE001  tfds raises NotImplementedError, ValueError, AssertionError...
    check_tfds_prepared(source, data_dir)  # Raises the specific error when the dataset is not there.
    message = readers.one_line(e)
    hint = ("; tfds.data_source reads array_record files only: rebuild with tfds build --file_format=array_record"
            if "record" in message.lower() else "")
    raise ValueError(f"{spec}: cannot read it from {_tfds_dir(tfds, data_dir)}: {message}{hint}") from None
  return rows_from_tfds(_all_examples(ds), ds.dataset_info.features.keys(), spec, skip_invalid)


def _import_tfds():
  """tensorflow_datasets with every builder registered (slow to import: only tfds: sources need it)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  # tfds imports its legacy builder packages lazily, and the registry does not trigger that import, so
  # without this tfds.data_source("glue/stsb") or ("multi_nli") reports "Dataset not found".
  importlib.import_module("tensorflow_datasets.text")
  from neuralir_jax import tfds_builder  # noqa: F401  pylint: disable=import-outside-toplevel  (registers it)
  return tfds


def _tfds_dir(tfds, data_dir: str | None) -> str:
  return data_dir or os.path.expanduser(tfds.core.constants.DATA_DIR)


def check_tfds_prepared(source: Source, data_dir: str | None = None) -> None:
  """Raises a one-line ValueError unless the TFDS dataset is known and prepared in `data_dir`.

  Reads only the dataset's metadata; never downloads (a download would retry for minutes offline).
  """
  tfds = _import_tfds()
  name = source.path + (f"/{source.config}" if source.config else "")
  spec, where = f"tfds:{name}:{source.split}", _tfds_dir(tfds, data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001  DatasetNotFoundError lists the whole catalogue over many lines.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f"{spec}: TFDS has no dataset {name!r} ({first}); check the name in "
                     "tfds:NAME[/CONFIG]:SPLIT") from None
  if not builder.is_prepared():
    raise ValueError(f"{spec} is not prepared in {where}; prepare it with `tfds build {name} --data_dir {where} "
                     "--file_format=array_record` on a machine with network access, or set data.tfds_data_dir "
                     "to where it is prepared.")


def rows_from_tfds(examples: Iterable[dict], feature_names: Iterable[str], name: str,
                   skip_invalid: bool = False) -> list[dict]:
  """TFDS examples (text as bytes) -> NLI rows {premise, hypothesis, label} or STS rows {sentence1,
  sentence2, score}, by the feature names. Label -1 is dropped and counted; an empty text raises, or is
  counted when skip_invalid."""
  keys = set(feature_names)
  if {"premise", "hypothesis", "label"} <= keys:
    columns, target = ("premise", "hypothesis"), "label"
  elif {"sentence1", "sentence2", "label"} <= keys:
    columns, target = ("sentence1", "sentence2"), "score"
  else:
    raise ValueError(f"{name}: features {sorted(keys)} are neither NLI (premise, hypothesis, label) nor "
                     "STS (sentence1, sentence2, label); use another source.")
  rows, unlabelled, empty = [], 0, 0
  for index, example in enumerate(examples):
    row = {c: _decode(example[c]) for c in columns}
    blank = [c for c in columns if not row[c].strip()]
    if blank:
      if not skip_invalid:
        raise ValueError(f"{name}: example {index}: empty text in {blank[0]!r}; pass skip_invalid=True "
                         "to skip such examples.")
      empty += 1
      continue
    if target == "label":
      label = int(example["label"])
      if label < 0:
        unlabelled += 1
        continue
      row["label"] = label
    else:
      row["score"] = float(example["label"])
    rows.append(row)
  if unlabelled:
    logging.warning("%s: dropped %d pairs with label -1 (no gold label); %d kept.", name, unlabelled,
                    len(rows))
  if empty:
    logging.warning("%s: skipped %d examples with an empty text (skip_invalid=True).", name, empty)
  return rows


def _all_examples(ds: Sequence[dict], chunk: int = 4096) -> Iterator[dict]:
  """Every example of a TFDS data source, read in chunks (3x faster than one `ds[i]` at a time)."""
  for start in range(0, len(ds), chunk):
    keys = list(range(start, min(start + chunk, len(ds))))
    try:
      examples = ds.__getitems__(keys)
    except TypeError:  # tfds 4.9.10 `testing.mock_data` installs a __getitems__ that lacks `self`.
      examples = [ds[k] for k in keys]
    yield from examples


def _decode(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_pairs(source: Source, skip_invalid: bool, tfds_data_dir: str | None) -> list[dict]:
  """NLI or STS pairs of a source: rows with premise/hypothesis/label or sentence1/sentence2/score."""
  if source.kind == "nli":
    return read_nli(source.path, skip_invalid)
  if source.kind == "sts":
    return read_sts(source.path, skip_invalid)
  if source.kind == "tfds":
    return read_tfds(source, tfds_data_dir, skip_invalid=skip_invalid)
  raise ValueError(f"{source.kind}:{source.path}: a {source.kind}: source has no sentence pairs; use an nli:, "
                   "sts: or tfds: source here, or the 'triplets' view for triples: and beir: sources.")


# ----------------------------------------------------------------------------------------------------------
# Views.


def load_records(source_spec: str, view: str, *, seed: int = 0, skip_invalid: bool = False,
                 tfds_data_dir: str | None = None, num_negatives: int = 1,
                 scores: str | None = None, pool_negatives: int = 0) -> list[dict]:
  """The records of one training view (see the module docstring) of a source string.

  `skip_invalid` skips (and counts) bad rows instead of raising `FILE:LINE: ...`; a view that ends up
  with no record raises a one-line ValueError naming the source. `num_negatives` (k) hard negatives are
  taken from each triples row (the first k of its list; "negative" is a list when k > 1). `scores`
  ("teacher" or "miner", see `readers.SCORE_PREFIXES`) adds each triples record's `teacher_scores`: its
  positive's score, then its k negatives'. `pool_negatives` (m) more negatives per triples record are drawn
  (with `seed`) from the other rows' positives, never one of the record's own positives (`tuple_records`).
  """
  if view not in VIEWS:
    raise ValueError(f"unknown view {view!r} for {source_spec!r}; use one of {VIEWS}.")
  if "," in source_spec:
    return _joined_records(source_spec.split(","), view, seed=seed, skip_invalid=skip_invalid,
                           tfds_data_dir=tfds_data_dir, num_negatives=num_negatives, scores=scores,
                           pool_negatives=pool_negatives)
  source = parse_source(source_spec)
  if scores is not None and source.kind != "triples":
    raise ValueError(f"{source_spec}: distillation from scores reads them from a triples: JSONL file (`neuralir "
                     "mine --teacher CE_DIR` writes one); use such a source or turn margin_mse/listwise_kl off.")
  if pool_negatives and (source.kind != "triples" or view != "triplets"):
    raise ValueError(f"{source_spec}: data.pool_negatives={pool_negatives} draws negatives from the other rows' "
                     "positives of a triples: source with data.view=triplets; use one, or set it to 0.")
  records = _view_records(source, source_spec, view, seed, skip_invalid, tfds_data_dir, num_negatives, scores,
                          pool_negatives)
  if not records:
    raise ValueError(f"{source_spec}: view {view!r} gives no records; use another view or source "
                     f"(views: {', '.join(VIEWS)}).")
  return records


def _joined_records(specs: list[str], view: str, **kwargs) -> list[dict]:
  """Records of several sources, in order; the duplicates view keeps each distinct text once over all."""
  if view == "duplicates":
    texts = [t for spec in specs for t in _texts_of(parse_source(spec), kwargs["skip_invalid"],
                                                      kwargs["tfds_data_dir"])]
    return duplicates_view(texts)
  parts = [load_records(spec, view, **kwargs) for spec in specs]
  for spec, part in zip(specs[1:], parts[1:]):
    if set(part[0]) != set(parts[0][0]):
      raise ValueError(f"{spec}: its {view!r} records have keys {sorted(part[0])}, {specs[0]}'s have "
                       f"{sorted(parts[0][0])}; join sources whose records match, or use the duplicates view.")
  return [r for part in parts for r in part]


def _view_records(source: Source, source_spec: str, view: str, seed: int, skip_invalid: bool,
                  tfds_data_dir: str | None, num_negatives: int, scores: str | None = None,
                  pool_negatives: int = 0) -> list[dict]:
  if source.kind == "parallel" and view != "duplicates":
    return [{"anchor": r["source"], "positive": target} for r in readers.read_parallel(source.path, skip_invalid)
            for target in r["targets"]]
  if view == "pairs":
    return _read_pairs(source, skip_invalid, tfds_data_dir)
  if view == "duplicates":
    return duplicates_view(_texts_of(source, skip_invalid, tfds_data_dir))
  if source.kind in ("triples", "beir") and view == "nli_full":
    raise ValueError(f"{source_spec}: view 'nli_full' needs an NLI source (nli: or tfds:snli...).")
  if source.kind == "triples":
    return tuple_records(readers.read_tuples(source.path, skip_invalid), num_negatives, source.path,
                         skip_invalid, scores, pool_negatives=pool_negatives, seed=seed)
  if source.kind == "beir":
    return beir_pairs_view(*load_beir(source.path, source.split, skip_invalid))
  rows = _read_pairs(source, skip_invalid, tfds_data_dir)
  if rows and "label" not in rows[0]:
    raise ValueError(f"{source_spec}: view {view!r} groups NLI labels, but this source has STS scores; "
                     "use the 'pairs' or 'duplicates' view.")
  return nli_triplets_view(rows, seed=seed, with_neutral=(view == "nli_full"), name=source_spec)


def nli_triplets_view(rows: Sequence[dict], *, seed: int = 0, with_neutral: bool = False,
                      name: str = "NLI rows") -> list[dict]:
  """Groups NLI pairs by premise: one record per entailment hypothesis, anchor=premise.

  negative (and neutral when `with_neutral`) is a hypothesis of the same premise with that label, drawn
  with `seed`. Premises lacking a needed label are counted in the log, not dropped silently.
  """
  groups: dict[str, list[list[str]]] = {}
  for r in rows:
    groups.setdefault(r["premise"].strip(), [[], [], []])[r["label"]].append(r["hypothesis"])
  needed = (ENTAILMENT, CONTRADICTION, NEUTRAL) if with_neutral else (ENTAILMENT, CONTRADICTION)
  rng = np.random.default_rng(seed)
  records, lacking = [], 0
  for premise, by_label in groups.items():
    if not all(by_label[label] for label in needed):
      lacking += 1
      continue
    for positive in by_label[ENTAILMENT]:
      contradictions = by_label[CONTRADICTION]
      record = {"anchor": premise, "positive": positive,
                "negative": contradictions[rng.integers(len(contradictions))]}
      if with_neutral:
        record["neutral"] = by_label[NEUTRAL][rng.integers(len(by_label[NEUTRAL]))]
      records.append(record)
  if lacking:
    labels = "/".join(NLI_LABELS[label] for label in needed)
    logging.warning("%s: %d of %d premises lack a hypothesis labelled %s (each needed) and give no "
                    "record; %d records.", name, lacking, len(groups), labels, len(records))
  return records


def beir_pairs_view(corpus: dict[str, str], queries: dict[str, str],
                    qrels: dict[str, dict[str, int]]) -> list[dict]:
  """One record per (query, relevant document) of the qrels: anchor=query text, positive=document text,
  with their ids (so that a query's other relevant documents are masked as false negatives)."""
  return [{"anchor": queries[qid], "positive": corpus[doc_id], "anchor_id": qid, "positive_id": doc_id}
          for qid, docs in qrels.items() for doc_id, grade in docs.items() if grade > 0]


def tuple_records(rows: Sequence[dict], num_negatives: int, path: str, skip_invalid: bool,
                  scores: str | None = None, *, pool_negatives: int = 0, seed: int = 0) -> list[dict]:
  """`readers.read_tuples` rows -> one record per (query, positive) with the row's first k negatives.

  Records carry anchor/positive/negative texts and, where the file gives them, anchor_id, positive_id and
  negative_id (a list when k > 1). A file whose rows have no negatives gives (anchor, positive) records; a
  row with fewer than k negatives raises `FILE:LINE` (or is skipped and counted with skip_invalid).
  `scores` adds `teacher_scores` [1 + k] from the rows' score lists (a row without them raises `FILE:LINE`).
  `pool_negatives` (m) appends m other queries' positives to each record's negatives, drawn with `seed`
  (`negatives.py`).
  """
  if num_negatives < 1:
    raise ValueError(f"data.num_negatives={num_negatives}: use 1 or more.")
  if pool_negatives and scores is not None:
    raise ValueError(f"{path}: data.pool_negatives={pool_negatives} adds negatives the file has no teacher "
                     "scores for; set it to 0, or set distill.scores=cross_encoder (the teacher scores them).")
  with_negatives = any(r["negatives"] for r in rows)
  if scores is not None:
    prefix = readers.SCORE_PREFIXES[scores]
    keys = (f"{prefix}positive_scores", f"{prefix}negative_scores")
    if not with_negatives:
      raise ValueError(f"{path}: no row has negatives; distillation scores a query's positive against its "
                       "negatives: mine some with `neuralir mine`.")
    for r in rows:
      missing = [k for k in keys if k not in r]
      if missing:
        hint = ("score them with `neuralir mine --teacher CE_DIR`, or set --config.distill.scores=miner"
                if scores == "teacher" else "write them with `neuralir mine`")
        raise ValueError(f"{path}:{r['line']}: no {' / '.join(missing)} (distill.scores={scores!r}); {hint}.")
  pool = negatives_lib.positive_pool(rows) if pool_negatives else []
  own = negatives_lib.own_documents(rows) if pool_negatives else {}
  rng = np.random.default_rng(seed)
  records, short = [], 0
  for r in rows:
    if with_negatives and len(r["negatives"]) < num_negatives:
      if not skip_invalid and not r["negatives"]:
        raise ValueError(f"{path}:{r['line']}: no 'negative' (or 'negatives') field, but other rows have "
                         "hard negatives; add one, or set data.skip_invalid=true to skip such rows (counted).")
      if not skip_invalid:
        raise ValueError(f"{path}:{r['line']}: {len(r['negatives'])} negatives, but data.num_negatives="
                         f"{num_negatives}; lower data.num_negatives, or set data.skip_invalid=true to skip "
                         "such rows (counted).")
      short += 1
      continue
    for j, positive in enumerate(r["positives"]):
      record = {"anchor": r["query"], "positive": positive}
      if r["query_id"] is not None:
        record["anchor_id"] = r["query_id"]
      if r["positive_ids"] is not None:
        record["positive_id"] = r["positive_ids"][j]
      if with_negatives:
        negatives, ids = r["negatives"][:num_negatives], r["negative_ids"]
        record["negative"] = negatives[0] if num_negatives == 1 else list(negatives)
        if ids is not None:
          record["negative_id"] = ids[0] if num_negatives == 1 else list(ids[:num_negatives])
      if scores is not None:
        record["teacher_scores"] = [r[keys[0]][j], *r[keys[1]][:num_negatives]]
      if pool_negatives:
        negatives_lib.add_pool_negatives(record, r, own, pool, pool_negatives, rng, path)
      records.append(record)
  if short:
    logging.warning("%s: skipped %d of %d rows with fewer than data.num_negatives=%d negatives "
                    "(skip_invalid=True); %d records.", path, short, len(rows), num_negatives, len(records))
  return records


def _texts_of(source: Source, skip_invalid: bool, tfds_data_dir: str | None) -> list[str]:
  if source.kind == "parallel":
    return [t for r in readers.read_parallel(source.path, skip_invalid) for t in [r["source"], *r["targets"]]]
  if source.kind == "triples":
    return [t for r in readers.read_tuples(source.path, skip_invalid)
            for t in [r["query"], *r["positives"], *r["negatives"]]]
  if source.kind == "beir":
    corpus, queries, _ = load_beir(source.path, source.split, skip_invalid)
    return list(queries.values()) + [t for t in corpus.values() if t]
  rows = _read_pairs(source, skip_invalid, tfds_data_dir)
  keys = ("premise", "hypothesis") if rows and "premise" in rows[0] else ("sentence1", "sentence2")
  return [r[k] for r in rows for k in keys]


def duplicates_view(texts: Sequence[str]) -> list[dict]:
  """Distinct texts (first occurrence kept, compared stripped) as anchor == positive records."""
  seen: set[str] = set()
  records = []
  for t in texts:
    key = t.strip()
    if key and key not in seen:
      seen.add(key)
      records.append({"anchor": key, "positive": key})
  return records


# ----------------------------------------------------------------------------------------------------------
# Training iterator.


def key_hash(key: str) -> int:
  """Stable int32 hash of a string (same string -> same hash, across runs and hosts)."""
  digest = hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest()
  return int(np.frombuffer(digest, np.int32)[0])


def text_hash(text: str) -> int:
  """Stable int32 hash of the stripped, lowercased text."""
  return key_hash(text.strip().lower())


def id_hash(identifier: str) -> int:
  """Stable int32 hash of a document or query id (a namespace apart from text hashes)."""
  return key_hash("\x1fid:" + identifier)


DOCUMENT_COLUMNS = ("positive", "negative", "neutral")


def attach_hashes(records: Sequence[dict], columns: Sequence[str]) -> list[dict]:
  """Copies of the records with `_hashes`: the int32 hash of each text column's id (or its text when not
  every record has an id for it), and `judged_hash`, the hashes of every positive of the record's query.

  A query's positives are gathered over all records with the same anchor (id or text), so a candidate that
  is another judged positive of the query is masked as a false negative, not scored as a negative.
  Documents are compared by id only when every positive and negative has one (else all by text).
  """
  docs = [c for c in columns if c in DOCUMENT_COLUMNS]
  has_ids = {c: all(f"{c}_id" in r for r in records) for c in columns}
  doc_ids = all(has_ids[c] for c in docs)

  def hashes(r, c):
    by_id = doc_ids if c in DOCUMENT_COLUMNS else has_ids[c]
    values = r[f"{c}_id"] if by_id else r[c]
    fn = id_hash if by_id else text_hash
    return [fn(v) for v in values] if isinstance(values, list) else fn(values)

  out = [dict(r, _hashes={f"{c}_hash": hashes(r, c) for c in columns}) for r in records]
  if "anchor" in columns and "positive" in columns:
    judged: dict[int, list[int]] = {}
    for r in out:
      group = judged.setdefault(r["_hashes"]["anchor_hash"], [])
      if r["_hashes"]["positive_hash"] not in group:
        group.append(r["_hashes"]["positive_hash"])
    width = max(len(g) for g in judged.values())
    for r in out:
      group = judged[r["_hashes"]["anchor_hash"]]
      r["_hashes"]["judged_hash"] = group + [r["_hashes"]["positive_hash"]] * (width - len(group))
  return out


@dataclasses.dataclass(frozen=True)
class Packing:
  """Packed batches (`data.packing`): each of the num_devices devices' texts (its consecutive share of the
  global batch's records, every text column) packed into the same number of rows of the longest max length
  among the columns, `packing.default_slots(L, max_slots)` texts per row at most, rows per device rounded
  up to row_multiple."""
  num_devices: int
  max_slots: int = 0
  row_multiple: int = 4


class _TokenizeBatch(grain.transforms.Map):
  """A global batch of records -> this process's numpy batch dict.

  Columns with the same max length (queries vs documents may differ) are tokenised together and padded to
  one length: the bucket of the longest sequence of the *global* batch, so every process gets the same
  shape (needed to assemble a global array); each process therefore tokenises the whole global batch, and
  keeps rows [offset, offset + local). A column whose records hold a list of k texts gives [B, k, L].
  Prompts (column -> text) are prepended before tokenisation. With `packing`, the texts are packed per
  device instead (`packed_tokens`, `packed_segments` [rows of this process's devices, L] and `c_slot`
  [B(, k)] in place of `c_ids`/`c_mask`; see `Packing` and `packing.pack_per_device`).
  """

  def __init__(self, tokenizer: Tokenizer, columns: Sequence[str], scalars: Sequence[str],
               max_lengths: dict[str, int], prompts: dict[str, str], buckets: Sequence[int] | None,
               offset: int, local: int, packing_spec: Packing | None = None):
    self.tokenizer, self.columns, self.scalars = tokenizer, tuple(columns), tuple(scalars)
    self.max_lengths, self.prompts, self.buckets = max_lengths, prompts, buckets
    self.offset, self.local, self.packing = offset, local, packing_spec

  def _texts(self, records: Sequence[dict], column: str) -> tuple[list[str], int]:
    """The column's texts, prompt prepended, record by record (k per record for a list column), and k."""
    prompt = self.prompts.get(column, "")
    values = [r[column] if isinstance(r[column], list) else [r[column]] for r in records]
    return [prompt + t for v in values for t in v], len(values[0])

  def _packed(self, records: Sequence[dict]) -> dict[str, np.ndarray]:
    n, spec = len(records), self.packing
    per_device = n // spec.num_devices
    row_length = max(self.max_lengths[c] for c in self.columns)
    num_slots = packing.default_slots(row_length, spec.max_slots)
    token_ids, device_N, spans = [], [], {}
    for c in self.columns:
      texts, k = self._texts(records, c)
      spans[c] = (len(token_ids), k)
      token_ids += self.tokenizer.token_ids(texts, self.max_lengths[c])
      device_N.append(np.repeat(np.arange(n) // per_device, k))
    keep = range(self.offset // per_device, (self.offset + self.local) // per_device)
    rows = packing.pack_per_device(token_ids, np.concatenate(device_N), spec.num_devices, row_length,
                                   num_slots, spec.row_multiple, self.tokenizer.pad_id, keep)
    batch = {"packed_tokens": rows.ids_RxL, "packed_segments": rows.segment_ids_RxL}
    for c, (start, k) in spans.items():
      index = rows.index_N[start:start + n * k]
      shape = (n, k) if isinstance(records[0][c], list) else (n,)
      batch[f"{c}_slot"] = index.reshape(shape)[self.offset:self.offset + self.local]
    return batch

  def _padded(self, records: Sequence[dict]) -> dict[str, np.ndarray]:
    n, lo, hi = len(records), self.offset, self.offset + self.local
    batch = {}
    for max_length in sorted(set(self.max_lengths[c] for c in self.columns)):
      group = [c for c in self.columns if self.max_lengths[c] == max_length]
      texts, counts = [], []
      for c in group:
        column_texts, k = self._texts(records, c)
        counts.append(k)
        texts += column_texts
      if self.buckets is None:
        ids, mask = self.tokenizer(texts, max_length=max_length, pad_to=max_length)
      else:
        ids, mask = self.tokenizer(texts, max_length=max_length, buckets=self.buckets)
      start = 0
      for c, k in zip(group, counts):
        shape = (n, ids.shape[-1]) if not isinstance(records[0][c], list) else (n, k, ids.shape[-1])
        batch[f"{c}_ids"] = ids[start:start + n * k].reshape(shape)[lo:hi]
        batch[f"{c}_mask"] = mask[start:start + n * k].reshape(shape)[lo:hi]
        start += n * k
    return batch

  def map(self, records: Sequence[dict]) -> dict[str, np.ndarray]:
    mine = records[self.offset:self.offset + self.local]
    batch = self._packed(records) if self.packing else self._padded(records)
    for name in mine[0]["_hashes"]:
      batch[name] = np.array([r["_hashes"][name] for r in mine], np.int32)
    for s in self.scalars:
      batch[s] = np.array([r[s] for r in mine], SCALAR_COLUMNS[s])
    return batch


class NoDuplicateBatches:
  """Global batches of record indices in which no two records share a query or a positive document.

  sentence-transformers' NoDuplicatesBatchSampler, made deterministic and resumable: epoch e visits the
  records in a permutation seeded by (seed, e); each batch takes, in that order, the first records whose
  query and positive are not in the batch yet. Records that fit no full batch of epoch e open epoch e + 1
  (none is lost; the last epoch's leftovers of a finite run are logged). `batch(step)` is a pure function
  of (records, seed, step), so any process and any resumed run sees the same batches.
  """

  def __init__(self, keys: Sequence[tuple[int, int]], global_batch_size: int, seed: int):
    self._keys, self._size, self._seed = list(keys), global_batch_size, seed
    # Per epoch seen so far: (its first global step, the records carried into it). A new epoch costs one
    # plan build; a resumed or replayed step rebuilds only its own epoch.
    self._starts: list[tuple[int, list[int]]] = [(0, [])]
    self._plan: tuple[int, list[list[int]]] | None = None  # (epoch, its batches).
    self._lock = threading.Lock()

  def _build(self, epoch: int, carried: list[int]) -> tuple[list[list[int]], list[int]]:
    order = carried + np.random.default_rng([self._seed, epoch]).permutation(len(self._keys)).tolist()
    remaining = dict.fromkeys(range(len(order)))  # Positions in `order`: one record may appear twice.
    batches = []
    while len(remaining) >= self._size:
      seen, taken = set(), []
      for pos in remaining:
        query, doc = self._keys[order[pos]]
        if ("q", query) in seen or ("d", doc) in seen:
          continue
        seen.update((("q", query), ("d", doc)))
        taken.append(pos)
        if len(taken) == self._size:
          break
      if len(taken) < self._size:
        break
      batches.append([order[pos] for pos in taken])
      for pos in taken:
        del remaining[pos]
    return batches, [order[pos] for pos in remaining]

  def _batches(self, epoch: int) -> list[list[int]]:
    """The batches of `epoch` (known to start at self._starts[epoch]); records where epoch + 1 starts."""
    if self._plan is None or self._plan[0] != epoch:
      first, carried = self._starts[epoch]
      batches, leftover = self._build(epoch, carried)
      if not batches:
        raise ValueError(f"no_duplicates sampler: the records cannot fill one batch of {self._size} "
                         "with distinct queries and positives; lower batch_size or use data.sampler=random.")
      if len(self._starts) == epoch + 1:
        self._starts.append((first + len(batches), leftover))
      self._plan = (epoch, batches)
    return self._plan[1]

  def epoch_of(self, step: int) -> tuple[int, list[list[int]]]:
    """(epoch, its batches) for the epoch that holds global step `step`."""
    with self._lock:
      epoch = bisect.bisect_right([first for first, _ in self._starts], step) - 1
      while True:
        batches = self._batches(epoch)
        if step < self._starts[epoch][0] + len(batches):
          return epoch, batches
        epoch += 1

  def batch(self, step: int) -> list[int]:
    epoch, batches = self.epoch_of(step)
    return batches[step - self._starts[epoch][0]]

  def num_batches(self, num_epochs: int) -> int:
    """Global batches in num_epochs epochs (the last epoch's leftovers are logged, not trained on)."""
    with self._lock:
      for epoch in range(num_epochs):
        if len(self._starts) <= epoch + 1:
          self._batches(epoch)
      total, carried = self._starts[num_epochs]
    if carried:
      logging.warning("no_duplicates sampler: %d records of the last epoch fit no full batch of %d "
                      "(distinct queries and positives) and are not trained on.", len(carried), self._size)
    return total


class TrainIterator(Iterator[dict]):
  """Local batches of one process, resumable: `get_state()` / `set_state(state)` (a JSON dict).

  Global batch k is records stream[k*G:(k+1)*G] of the seeded, per-epoch-reshuffled stream; process p gets
  its rows [p*B:(p+1)*B] (B = G // process_count). The state is the number of global batches consumed, plus
  what must match on resume (seed, global batch size, dataset size, columns).
  """

  def __init__(self, batches: grain.MapDataset, fingerprint: dict, prefetch: int = 2):
    self._batches = batches
    self._fingerprint = fingerprint
    self._prefetch = prefetch
    self._step = 0
    self._iterator = self._start(0)

  def _start(self, step: int):
    ds = self._batches[step:].to_iter_dataset(
        grain.ReadOptions(num_threads=self._prefetch, prefetch_buffer_size=self._prefetch))
    return iter(ds)

  def __len__(self) -> int:
    """Number of batches (global steps) in all (sys.maxsize // global_batch_size when repeating forever)."""
    return len(self._batches)

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iterator)
    self._step += 1
    return batch

  def get_state(self) -> dict:
    """JSON-serialisable: save it with `ocp.args.JsonSave(it.get_state())` beside the train state, and
    restore with `it.set_state(restored)` from `ocp.args.JsonRestore()`."""
    return {"step": self._step, **self._fingerprint}

  def set_state(self, state: dict) -> None:
    """Continues after `state["step"]` global batches. The process count may differ from the saving run."""
    for key, value in self._fingerprint.items():
      if state.get(key) != value:
        raise ValueError(f"data iterator state has {key}={state.get(key)!r} but this run has {value!r}; "
                         "resume with the data config of the checkpointed run.")
    step = int(state["step"])
    if not 0 <= step <= len(self._batches):
      raise ValueError(f"data iterator state step {step} is outside [0, {len(self._batches)}].")
    self._step = step
    self._iterator = self._start(step)


def make_train_iterator(records: Sequence[dict], tokenizer: Tokenizer, *, columns: Sequence[str],
                        global_batch_size: int, seed: int, max_length: int,
                        buckets: Sequence[int] | None = None, process_index: int = 0,
                        process_count: int = 1, num_epochs: int | None = None,
                        max_lengths: dict[str, int] | None = None, prompts: dict[str, str] | None = None,
                        sampler: str = "random", packing_spec: Packing | None = None) -> TrainIterator:
  """Batches of `records` for one process (see `TrainIterator`).

  Each batch holds, for every text column c, `c_ids`/`c_mask` int32[B, L] ([B, k, L] for a column of k
  texts per record; L: the bucket of the global batch's longest sequence of c's length group, the same in
  every process, or its max length when buckets is None) and `c_hash` int32[B] (or [B, k]: the text's id or
  text hash); `judged_hash` int32[B, P] (every positive of the record's query) when the records have anchor
  and positive; plus `label` int32[B] and `score` float32[B] when the records have them. max_lengths and
  prompts override max_length and add prompts per column. sampler "random" shuffles every epoch;
  "no_duplicates" keeps two records of one query or positive out of a global batch (`NoDuplicateBatches`).
  num_epochs=None repeats forever; a finite num_epochs ends after the last full global batch.
  packing_spec: packed batches instead of padded ones (see `Packing`; buckets are then unused).
  """
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not a positive multiple of the "
                     f"{process_count} processes; make it divisible by process_count.")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside [0, {process_count}).")
  if sampler not in SAMPLERS:
    raise ValueError(f"data.sampler={sampler!r}: use one of {SAMPLERS}.")
  columns = tuple(columns)
  missing = [c for c in columns if c not in records[0]]
  if missing:
    hint = ("; this view has no hard negatives (a beir: source gives none): set "
            "--config.infonce.hard_negatives=false, or use a view with negatives" if "negative" in missing else "")
    raise ValueError(f"records lack the text columns {missing}; they have {sorted(records[0])}. "
                     f"Pick columns from those (or load another view){hint}.")
  if len(records) < global_batch_size:
    if sampler != "random" or num_epochs is not None:
      raise ValueError(f"{len(records)} records are fewer than one global batch of {global_batch_size}; "
                       "lower global_batch_size or add data.")
    # The shuffled epochs follow each other within a batch: a record comes back in the same batch (a
    # repeated positive is masked as a false negative, by text or id, unless infonce.mask_false_negatives
    # is off). For memory and scale tests on small data; a real run wants more records than a batch.
    logging.warning("%d records are fewer than one global batch of %d: each batch repeats records "
                    "(epochs follow each other within it).", len(records), global_batch_size)
  scalars = [s for s in SCALAR_COLUMNS if s in records[0]]
  local = global_batch_size // process_count
  records = attach_hashes(records, columns)
  lengths = {c: (max_lengths or {}).get(c) or max_length for c in columns}

  if sampler == "random":
    stream = grain.MapDataset.source(records).shuffle(seed=seed).repeat(num_epochs)
    num_batches = len(stream) // global_batch_size  # len(stream) is sys.maxsize when repeating forever.

    def batch_indices(step: int, start: int, count: int) -> list[dict]:
      return [stream[i] for i in range(step * global_batch_size + start,
                                       step * global_batch_size + start + count)]
  else:
    query, doc = (("anchor_hash", "positive_hash") if {"anchor", "positive"} <= set(columns)
                  else (f"{columns[0]}_hash", f"{columns[-1]}_hash"))
    plan = NoDuplicateBatches([(r["_hashes"][query], r["_hashes"][doc]) for r in records],
                              global_batch_size, seed)
    num_batches = (plan.num_batches(num_epochs) if num_epochs is not None
                   else sys.maxsize // global_batch_size)

    def batch_indices(step: int, start: int, count: int) -> list[dict]:
      return [records[i] for i in plan.batch(step)[start:start + count]]

  # Without buckets every process reads and tokenises only its own slice of each global batch; with
  # buckets (or several length groups) it tokenises the whole global batch so that all processes agree on
  # the padded lengths.
  slice_only = buckets is None and packing_spec is None
  if packing_spec is not None and (global_batch_size % packing_spec.num_devices
                                   or packing_spec.num_devices % process_count):
    raise ValueError(f"packing over {packing_spec.num_devices} devices needs global_batch_size "
                     f"{global_batch_size} and the {process_count} processes to divide evenly; change batch_size.")

  def batch_records(step: int) -> list[dict]:
    if slice_only:
      return batch_indices(step, process_index * local, local)
    return batch_indices(step, 0, global_batch_size)

  batches = (grain.MapDataset.range(num_batches).map(batch_records)
             .map(_TokenizeBatch(tokenizer, columns, scalars, lengths, dict(prompts or {}), buckets,
                                 offset=0 if slice_only else process_index * local, local=local,
                                 packing_spec=packing_spec)))
  fingerprint = {"seed": seed, "global_batch_size": global_batch_size, "num_records": len(records),
                 "columns": list(columns), "num_epochs": num_epochs}
  if sampler != "random":  # Absent for "random": states saved before samplers existed still resume.
    fingerprint["sampler"] = sampler
  return TrainIterator(batches, fingerprint)
