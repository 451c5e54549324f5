"""The `neuralir` command: train, eval, encode, score, rerank, export, ablate, mine, augment.

  neuralir train --config configs/tiny.py --workdir W [--config.KEY=VALUE ...]
  neuralir eval --model DIR_OR_WORKDIR --task sts:FILE|beir:DIR[:SPLIT]|nli:FILE [--index scann|exact]
                [--truncate-dim D] --output F.json
  neuralir encode --model DIR --input FILE.txt --output FILE.npy [--prompt-name query|document] [--truncate-dim D]
  neuralir rerank --first-stage MODEL|bm25 --reranker CE_DIR --task beir:DIR[:SPLIT] --top-k K --output F.json
  neuralir score --model CE_DIR|MV_DIR --input pairs.tsv --output scores.npy   # one query<TAB>document per line
  neuralir export --model DIR | --workdir W [--step N] --output DIR [--overwrite]   # bi- or cross-encoder
  neuralir ablate --config configs/ablation_negatives.py --workdir W [--config.KEY=VALUE ...]
  neuralir mine --model DIR|bm25 --data beir:DIR:SPLIT|triples:FILE --output F.jsonl --num-negatives K [--range-max B]
  neuralir augment --data sts:GOLD.tsv --sampler bm25|MODEL --cross-encoder CE --top-k K --output SILVER.tsv

`--model` takes a Hugging Face / sentence-transformers directory, a training workdir or `minilm`. Errors the
user can fix (bad paths, keys, values, files) print one line `neuralir: error: ...` and exit with status 2;
NEURALIR_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import os
import sys
from typing import Any

OVERRIDES_HELP = """\
config overrides:
  --config.KEY=VALUE  set any key of configs/common.py (repeatable), e.g.
                      --config.num_steps=100 --config.optimizer.learning_rate=1e-4 --config.parallel.strategy=pmap
                      Values are parsed by the key's type; an unknown key or a value of the wrong type is an error.
"""
_MODEL_HELP = "HF/sentence-transformers directory, training workdir, or 'minilm' (the packaged all-MiniLM-L6-v2)"
_PROGRESS_ABOVE = 1000  # Texts above which encode shows a progress bar even when stderr is not a terminal.
# Built-in exceptions that mean "the input is wrong", not "the code is wrong"; neuralir's own classes too.
_USER_ERRORS = (ValueError, KeyError, TypeError, ImportError, OSError)


class _Parser(argparse.ArgumentParser):
  """argparse with the same `neuralir: error:` line as every other error (subcommands included)."""

  def error(self, message: str):
    self.print_usage(sys.stderr)
    self.exit(2, f"neuralir: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog="neuralir", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  overrides = dict(epilog=OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)

  t = sub.add_parser("train", help="train an encoder (resumes from the workdir)",
                     usage="neuralir train --config FILE[:ARG] --workdir DIR [--config.KEY=VALUE ...]", **overrides)
  t.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  t.add_argument("--workdir", required=True, help="checkpoints, metrics and TensorBoard files (resumed from)")

  e = sub.add_parser("eval", help="evaluate a model directory or a training workdir",
                     description="Retrieval (beir:) tasks encode queries with the model's 'query' prompt and the "
                     "corpus with its 'document' prompt (sentence-transformers' encode_query / encode_document; "
                     "from config_sentence_transformers.json or a workdir's model.prompts); STS and NLI use none.")
  e.add_argument("--model", required=True, help=_MODEL_HELP)
  e.add_argument("--task", required=True, action="append",
                 help="sts:FILE.tsv[.gz] | beir:DIR[:SPLIT] | nli:FILE.jsonl[.gz]; repeatable")
  e.add_argument("--split", default=None, help="BEIR qrels split (overrides DIR:SPLIT)")
  e.add_argument("--index", default="exact", choices=("exact", "scann"))
  e.add_argument("--index-dir", default=None, help="where to save/reuse the ScaNN index")
  e.add_argument("--exclude-self", action="store_true",
                 help="drop a retrieved document whose id equals the query id (BEIR ArguAna, Quora)")
  e.add_argument("--step", type=int, default=None, help="checkpoint step when --model is a workdir")
  e.add_argument("--batch-size", type=int, default=128)
  e.add_argument("--output", default=None, help="JSON file for the metrics")
  e.add_argument("--truncate-dim", type=int, default=None, metavar="D",
                 help="score with the first D embedding dimensions (Matryoshka), re-normalised: cosines")
  e.add_argument("--document-length", type=int, default=None, metavar="N",
                 help="multi-vector (ColBERT) models: encode documents up to N tokens (default: the model's)")

  c = sub.add_parser("encode", help="embed one text per line into a .npy file")
  c.add_argument("--model", required=True, help=_MODEL_HELP)
  c.add_argument("--input", required=True, help="UTF-8 text file, one text per line ('\\n' separated)")
  c.add_argument("--output", required=True, help="written as given (np.save format; add .npy yourself)")
  c.add_argument("--batch-size", type=int, default=64)
  c.add_argument("--step", type=int, default=None, help="checkpoint step when --model is a workdir")
  c.add_argument("--prompt-name", default=None, metavar="NAME",
                 help="prepend the model's prompt NAME to every text, e.g. query or document (default: the "
                 "model's default prompt, usually none)")
  c.add_argument("--truncate-dim", type=int, default=None, metavar="D",
                 help="keep the first D dimensions (Matryoshka; not re-normalised, as sentence-transformers)")

  s = sub.add_parser("score", help="score query<TAB>document pairs with a cross-encoder or a multi-vector "
                     "(ColBERT) model into a .npy file",
                     description="One score per input line: sentence-transformers' CrossEncoder.predict (its "
                                 "activation applied), or the MaxSim of MultiVectorEncoder's query and document "
                                 "token vectors.")
  s.add_argument("--model", required=True, help="a BertForSequenceClassification directory (HF or "
                                                "sentence-transformers CrossEncoder layout), a cross-encoder "
                                                "workdir, a sentence-transformers MultiVectorEncoder directory "
                                                "or a ColBERT workdir")
  s.add_argument("--step", type=int, default=None, help="checkpoint step of a workdir (default: the latest)")
  s.add_argument("--input", required=True, help="UTF-8 file, one query<TAB>document per line")
  s.add_argument("--output", required=True, help="written as given (np.save format)")
  s.add_argument("--batch-size", type=int, default=32)
  r = sub.add_parser("rerank", help="first stage (bi-encoder or BM25) -> cross-encoder re-ranking of its top k",
                     description="Scores both stages with the metrics of `neuralir eval`.")
  r.add_argument("--first-stage", required=True, help=_MODEL_HELP + ", or 'bm25' (bm25s)")
  r.add_argument("--reranker", required=True,
                 help="a cross-encoder, or a multi-vector (ColBERT) model for MaxSim re-ranking (see `neuralir score`)")
  r.add_argument("--task", required=True, help="beir:DIR[:SPLIT] (default split: test)")
  r.add_argument("--top-k", type=int, default=100, help="documents per query the reranker scores")
  r.add_argument("--document-length", type=int, default=None, metavar="N",
                 help="a multi-vector (ColBERT) reranker encodes documents up to N tokens (default: its own)")
  r.add_argument("--index", default="exact", choices=("exact", "scann"), help="first-stage search")
  r.add_argument("--batch-size", type=int, default=32, help="pairs per reranker call")
  r.add_argument("--step", type=int, default=None, help="checkpoint step when --first-stage is a workdir")
  r.add_argument("--duo", default=None, help="a duoBERT cross-encoder (directory or workdir trained with "
                 "objectives.ce_pairwise) that re-orders the monoBERT top --duo-top-k by pairwise preferences")
  r.add_argument("--duo-top-k", type=int, default=10, help="documents per query duoBERT compares (k(k-1) triples)")
  r.add_argument("--fuse-weights", default="", help="comma-separated first-stage shares w in [0, 1]: also score "
                 "w * z(first stage) + (1 - w) * z(reranker), per-query standardised, as 'fused' metrics")
  r.add_argument("--output", default=None, help="JSON file for both stages' metrics")
  x = sub.add_parser("export", help="write a PyTorch (transformers + sentence-transformers) directory")
  src = x.add_mutually_exclusive_group(required=True)
  src.add_argument("--model", help=_MODEL_HELP)
  src.add_argument("--workdir", help="training workdir")
  x.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  x.add_argument("--output", required=True, help="new, empty, or previously exported directory")
  x.add_argument("--overwrite", action="store_true", help="write into a non-empty directory that is not ours")
  x.add_argument("--format", choices=("sentence-transformers", "pylate"), default="sentence-transformers",
                 help="multi-vector (ColBERT) models only: sentence-transformers 6's MultiVectorEncoder layout, "
                 "or PyLate's (pylate.models.ColBERT, on sentence-transformers 5)")

  a = sub.add_parser("ablate", help="large-batch negatives ablation: one run per setting",
                     usage="neuralir ablate --config FILE[:ARG] --workdir DIR [--config.KEY=VALUE ...]", **overrides)
  a.add_argument("--config", required=True, help="configs/ablation_negatives.py[:full]")
  a.add_argument("--workdir", required=True, help="one subdirectory per setting, results.csv, ablation.png")

  m = sub.add_parser("mine", help="hard negatives for every query of a training source (JSONL, one row per query)",
                     description="Semantics of sentence-transformers' mine_hard_negatives; see neuralir_jax/mine.py.")
  m.add_argument("--model", required=True, help=_MODEL_HELP + ", or 'bm25' (bm25s)")
  m.add_argument("--data", required=True, help="beir:DIR[:SPLIT] (default split: train) | triples:FILE | pairs:FILE")
  m.add_argument("--output", required=True, help="new JSONL file (.gz compresses)")
  m.add_argument("--num-negatives", type=int, required=True)
  m.add_argument("--range-min", type=int, default=0, help="best-ranked non-positive documents to skip")
  m.add_argument("--range-max", type=int, default=None, help="deepest non-positive rank considered")
  m.add_argument("--margin", type=float, default=None, help="keep a negative if score + M <= lowest positive score")
  m.add_argument("--relative-margin", type=float, default=None, help="keep a negative if score <= p - |p| * R")
  m.add_argument("--sampling", default="top", choices=("top", "random"))
  m.add_argument("--index", default="exact", choices=("exact", "scann"))
  m.add_argument("--batch-size", type=int, default=64)
  m.add_argument("--max-length", type=int, default=None,
                 help="tokens per query and document (default: the model's max_seq_length); fewer is faster")
  m.add_argument("--chunk-size", type=int, default=32_768, help="documents encoded and searched per step")
  m.add_argument("--seed", type=int, default=0, help="for --sampling random")
  m.add_argument("--step", type=int, default=None, help="checkpoint step when --model is a workdir")
  m.add_argument("--teacher", default=None, help="a cross-encoder (directory or workdir) whose logits of every "
                 "(query, positive) and (query, negative) are written as teacher_positive_scores / "
                 "teacher_negative_scores, for distillation (objectives.margin_mse, listwise_kl)")
  a = sub.add_parser("augment", help="Augmented SBERT: silver STS pairs sampled by BM25 or a bi-encoder, labelled "
                     "by a cross-encoder", description="See neuralir_jax/augment.py.")
  a.add_argument("--data", required=True, help="sts:FILE.tsv, the gold pairs whose sentences are paired anew")
  a.add_argument("--sampler", required=True, help=_MODEL_HELP + ", or 'bm25' (bm25s): finds each sentence's "
                 "neighbours")
  a.add_argument("--cross-encoder", required=True, help="a cross-encoder directory or workdir (one sigmoid score)")
  a.add_argument("--top-k", type=int, default=3, help="neighbours per sentence")
  a.add_argument("--batch-size", type=int, default=32, help="pairs per cross-encoder call")
  a.add_argument("--output", required=True, help="new STS-B TSV (sentence1, sentence2, score 0..5)")
  return p


def _split_overrides(rest: list[str]) -> tuple[list[str], list[str]]:
  """(`--config.KEY=VALUE` overrides, other leftovers); `--config.KEY VALUE` is accepted too."""
  overrides, unknown, i = [], [], 0
  while i < len(rest):
    item = rest[i]
    if item.startswith("--config.") and "=" not in item and i + 1 < len(rest):
      item, i = f"{item}={rest[i + 1]}", i + 1
    (overrides if item.startswith("--config.") else unknown).append(item)
    i += 1
  return overrides, unknown


# --- Inputs and outputs -----------------------------------------------------------------------------------


def read_texts(path: str) -> list[str]:
  """One text per line: split on "\\n" only (a stray "\\r" stays in its line; "\\r\\n" ends one), a UTF-8
  BOM dropped; bytes that are not UTF-8 are a `FILE:LINE:` error."""
  from neuralir_jax import readers
  if not os.path.isfile(path):
    raise readers.not_found(path, "input file", "pass a UTF-8 text file with one text per line")
  texts = []
  for line, text in readers.read_lines(path):
    if isinstance(text, readers.RowError):
      raise ValueError(f"{path}:{line}: {text}")
    texts.append(text)
  return texts


def check_output_file(path: str, flag: str = "--output") -> None:
  """A file we can create: not a directory, in a directory that exists."""
  if os.path.isdir(path):
    raise IsADirectoryError(f"{flag} {path}: is a directory; pass a file name, e.g. {os.path.join(path, 'out')}.")
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise FileNotFoundError(f"{flag} {path}: the directory {parent} does not exist; create it first.")


def json_safe(value: Any) -> Any:
  """Metrics as JSON values: non-finite floats (an undefined correlation, ...) become null."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value) if math.isfinite(value) else None
  return value


def _load(path: str, step: int | None = None):
  """An Encoder from a model directory, `minilm`, or a training workdir's checkpoint (latest or `step`)."""
  from neuralir_jax import config_lib, encoder as encoder_lib
  from neuralir_jax import cross_encoder
  resolved = config_lib.resolve_model_path(path)
  if not os.path.exists(resolved):
    raise FileNotFoundError(f"--model {path}: no such directory; pass a model directory, a training workdir "
                            "or 'minilm'.")
  if cross_encoder.is_cross_encoder(resolved):
    raise ValueError(f"{path} is a cross-encoder: it scores (query, document) pairs and embeds nothing; use "
                     "`neuralir score --model` or `neuralir rerank --reranker` with it.")
  from neuralir_jax import colbert
  if colbert.is_multi_vector(resolved):
    raise ValueError(f"{path} is a multi-vector (ColBERT) model: it gives one vector per token, not one per "
                     "text; use `neuralir score --model` with it.")
  return encoder_lib.load_encoder(resolved, step=step)


# --- Commands ---------------------------------------------------------------------------------------------


def _train(args, overrides: list[str]) -> None:
  from neuralir_jax import config_lib, train
  train.train(config_lib.apply_overrides(config_lib.load_config(args.config), overrides, args.config),
              args.workdir)


def _evaluate(args) -> dict:
  """Metrics of every --task for one model (NLI tasks use a workdir's trained softmax head); a multi-vector
  model retrieves end to end (`colbert.evaluate_beir`)."""
  from neuralir_jax import colbert, config_lib
  if colbert.is_multi_vector(config_lib.resolve_model_path(args.model)):
    if args.truncate_dim is not None or args.index_dir or args.exclude_self:
      raise ValueError(f"--model {args.model} is a multi-vector model: --truncate-dim, --index-dir and "
                       "--exclude-self apply to single-vector models; drop them.")
    model = colbert.load_any(args.model, args.step)
    if args.document_length is not None:
      model = colbert.with_document_length(model, args.document_length)
    results = {t: colbert.evaluate_beir(model, t, index=args.index, batch_size=args.batch_size, split=args.split)
               for t in args.task}
    return results if len(results) > 1 else next(iter(results.values()))
  if args.document_length is not None:
    raise ValueError(f"--document-length: {args.model} is a single-vector model (its length is the model's "
                     "max_seq_length); drop it.")
  enc = _load(args.model, args.step)
  from neuralir_jax import evaluate
  results = evaluate.evaluate_tasks(enc, args.task, split=args.split, index=args.index,
                                    index_dir=args.index_dir, batch_size=args.batch_size,
                                    exclude_self=args.exclude_self, show_progress=sys.stderr.isatty(),
                                    truncate_dim=args.truncate_dim)
  return results if len(results) > 1 else next(iter(results.values()))


def _encode(args) -> None:
  import numpy as np
  from neuralir_jax import distributed
  texts = read_texts(args.input)
  check_output_file(args.output)
  enc = _load(args.model, args.step)
  enc.resolve_prompt(args.prompt_name)  # An unknown name fails here, naming the model's prompts.
  if args.truncate_dim is not None:
    enc.check_truncate_dim(args.truncate_dim)
  progress = sys.stderr.isatty() or len(texts) > _PROGRESS_ABOVE
  emb = distributed.encode_across_processes(
      lambda x: enc.encode(x, batch_size=args.batch_size, show_progress=progress, prompt_name=args.prompt_name,
                           truncate_dim=args.truncate_dim), texts)
  if distributed.is_main_process():
    with open(args.output, "wb") as f:  # np.save(path) would append .npy to a name without it.
      np.save(f, np.asarray(emb, np.float32))
  print(f"wrote {args.output}: {emb.shape[0]} x {emb.shape[1]} float32 (.npy format)")


def read_pairs(path: str) -> list[tuple[str, str]]:
  """One `query<TAB>document` per line (lines as `read_texts`); any other line is a `FILE:LINE:` error."""
  pairs = []
  for line, text in enumerate(read_texts(path), start=1):
    fields = text.split("\t")
    if len(fields) != 2:
      raise ValueError(f"{path}:{line}: {len(fields)} tab-separated field(s); each line must be "
                       "query<TAB>document (no other tabs).")
    pairs.append((fields[0], fields[1]))
  return pairs


def _score(args) -> None:
  import numpy as np
  from neuralir_jax import colbert, config_lib, cross_encoder
  pairs = read_pairs(args.input)
  check_output_file(args.output)
  resolved = config_lib.resolve_model_path(args.model)
  if colbert.is_multi_vector(resolved):
    scores = colbert.load_any(resolved, args.step).score_pairs(pairs, batch_size=args.batch_size)
  else:
    if os.path.isdir(resolved) and not cross_encoder.is_cross_encoder(resolved):
      raise ValueError(f"--model {args.model}: neither a cross-encoder (a *ForSequenceClassification directory "
                       "or a cross-encoder workdir) nor a multi-vector model (a sentence-transformers "
                       "MultiVectorEncoder directory or a ColBERT workdir); pass one of those.")
    scores = cross_encoder.load_any(args.model, args.step).predict(pairs, batch_size=args.batch_size)
  with open(args.output, "wb") as f:
    np.save(f, np.asarray(scores, np.float32))
  print(f"wrote {args.output}: {len(pairs)} scores (.npy format)")


def _rerank(args) -> dict:
  from neuralir_jax import cross_encoder, rerank
  if args.duo and args.duo_top_k < 2:
    raise ValueError(f"--duo-top-k {args.duo_top_k}: duoBERT compares documents; pass 2 or more.")
  try:
    weights = tuple(float(w) for w in args.fuse_weights.split(",") if w.strip())
  except ValueError:
    raise ValueError(f"--fuse-weights {args.fuse_weights!r}: pass comma-separated numbers in [0, 1], e.g. "
                     "0.3,0.5,0.7.") from None
  rerank.check_fuse_weights(weights)  # Before any model loads.
  from neuralir_jax import colbert, config_lib
  if colbert.is_multi_vector(config_lib.resolve_model_path(args.reranker)):
    reranker = colbert.load_any(args.reranker, flag="--reranker")  # MaxSim re-ranking (ColBERT).
    if args.document_length is not None:
      reranker = colbert.with_document_length(reranker, args.document_length)
  else:
    if args.document_length is not None:
      raise ValueError(f"--document-length applies to a multi-vector (ColBERT) reranker; {args.reranker} is a "
                       "cross-encoder: drop it.")
    reranker = cross_encoder.load_any(args.reranker, flag="--reranker")
  if args.first_stage == "bm25" and args.step is not None:
    raise ValueError("--step applies to a training workdir, not to --first-stage bm25: drop --step.")
  duo = cross_encoder.load_any(args.duo, flag="--duo", one_label=True) if args.duo else None
  first = "bm25" if args.first_stage == "bm25" else _load(args.first_stage, args.step)
  return rerank.rerank_task(first, reranker, args.task, top_k=args.top_k, index=args.index,
                            batch_size=args.batch_size, duo=duo, duo_top_k=args.duo_top_k, fuse_weights=weights)


def _export(args) -> None:
  from neuralir_jax import config_lib, cross_encoder, distributed, hf_io
  hf_io.check_export_directory(args.output, args.overwrite)  # Before the (slow) load.
  if args.workdir and not os.path.isdir(os.path.join(args.workdir, "checkpoints")):
    raise FileNotFoundError(f"{args.workdir}: no checkpoints/ folder; is this a training workdir?")
  source = args.workdir or config_lib.resolve_model_path(args.model)
  from neuralir_jax import colbert
  if colbert.is_multi_vector(source):
    model = colbert.load_any(source, args.step)
    save = colbert.save_pylate_directory if args.format == "pylate" else colbert.save_multi_vector_directory
    if distributed.is_main_process():
      save(args.output, model, overwrite=args.overwrite, source=os.path.abspath(source))
    print(f"exported to {args.output} ({args.format} layout)")
    return
  if args.format != "sentence-transformers":
    raise ValueError(f"--format {args.format}: {source} is not a multi-vector (ColBERT) model; drop --format.")
  if cross_encoder.is_cross_encoder(source):
    model = cross_encoder.load_any(source, args.step)
    if distributed.is_main_process():
      model.save_pretrained(args.output, overwrite=args.overwrite, source=os.path.abspath(source))
    print(f"exported to {args.output}")
    return
  enc = _load(source, args.step)
  if distributed.is_main_process():
    hf_io.save_hf_directory(args.output, enc.config, enc.params, enc.tokenizer, overwrite=args.overwrite,
                            source=os.path.abspath(source), step=enc.step, prompts=enc.prompts,
                            default_prompt_name=enc.default_prompt_name, truncate_dim=enc.truncate_dim)
  print(f"exported to {args.output}")


def run(argv: list[str]) -> int:
  parser = _parser()
  args, rest = parser.parse_known_args(argv)
  overrides, unknown = _split_overrides(rest)
  if unknown:
    parser.error(f"unrecognised arguments: {' '.join(unknown)}")
  if overrides and args.command not in ("train", "ablate"):
    parser.error(f"--config.KEY=VALUE overrides apply to train and ablate, not {args.command}: {overrides[0]}")
  if args.command == "eval" and args.output:
    check_output_file(args.output)
  from neuralir_jax import distributed
  distributed.setup()

  if args.command == "train":
    _train(args, overrides)
  elif args.command == "ablate":
    from neuralir_jax import ablation
    ablation.run_from_cli(args.config, args.workdir, overrides)
  elif args.command == "encode":
    _encode(args)
  elif args.command == "export":
    _export(args)
  elif args.command == "score":
    _score(args)
  elif args.command == "rerank":
    if args.output:
      check_output_file(args.output)
    text = json.dumps(json_safe(_rerank(args)), indent=2, sort_keys=True, allow_nan=False)
    print(text)
    if args.output and distributed.is_main_process():
      with open(args.output, "w") as f:
        f.write(text + "\n")
  elif args.command == "augment":
    from neuralir_jax import augment, cross_encoder
    check_output_file(args.output)
    augment.run_from_cli(args, _load, lambda path: cross_encoder.load_any(path, flag="--cross-encoder"))
  elif args.command == "mine":
    from neuralir_jax import cross_encoder, mine
    check_output_file(args.output)
    mine.run_from_cli(args, _load, lambda path: cross_encoder.load_any(path, flag="--teacher", one_label=True))
  elif args.command == "eval":
    text = json.dumps(json_safe(_evaluate(args)), indent=2, sort_keys=True, allow_nan=False)
    print(text)
    if args.output and distributed.is_main_process():
      with open(args.output, "w") as f:
        f.write(text + "\n")
  return 0


def _is_user_error(error: BaseException) -> bool:
  return isinstance(error, _USER_ERRORS) or type(error).__module__.startswith("neuralir_jax")


def _first_line(error: BaseException) -> str:
  text = error.args[0] if isinstance(error, KeyError) and error.args else error
  lines = [line for line in str(text).splitlines() if line.strip()]
  return lines[0].strip() if lines else type(error).__name__


def main() -> None:
  # Before TensorFlow-datasets or XLA read it: keep their C++ logging quiet (the user's setting wins).
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets", "grain"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  debug = os.environ.get("NEURALIR_DEBUG", "") not in ("", "0")
  try:
    code = run(sys.argv[1:])
  except KeyboardInterrupt as e:  # Training saves its step first and says so in the message.
    if debug:
      raise
    print(f"neuralir: {_first_line(e) if e.args else 'interrupted'}", file=sys.stderr)
    sys.exit(130)
  except Exception as e:
    if debug or not _is_user_error(e):
      raise
    print(f"neuralir: error: {_first_line(e)}", file=sys.stderr)
    sys.exit(2)
  sys.exit(code)


if __name__ == "__main__":
  main()
