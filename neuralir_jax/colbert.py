"""Late interaction (ColBERT): multi-vector encoders in sentence-transformers' `MultiVectorEncoder` layout.

A directory (what `MultiVectorEncoder(...).save(dir)` writes) holds the BERT body at the Transformer
module's path (the root), a bias-free projection `1_Dense/model.safetensors` (`linear.weight` [dim, hidden]),
the scoring mask's `2_MultiVectorMask/config.json` (skiplist words and the tasks they apply to) and a
per-token Normalize. Encoding a text (== `MultiVectorEncoder.encode_query` / `encode_document`):

  the task's prompt (e.g. "[unused0] ") prepended to the text -> tokens truncated to the task's length
  (query_length / document_length, else the tokenizer's model_max_length) -> query expansion when configured
  ("fixed": queries padded to `length` with [MASK], attended to or not) -> BERT's last hidden state ->
  projection -> L2-normalised per token -> the scoring mask's tokens, in order: the real tokens ([CLS],
  markers and [SEP] included; a query's expansion positions too) minus skiplist tokens (documents by default).

MaxSim (`maxsim`): the sum over query tokens of the best dot product with a document token (divided by the
query's token count for `similarity_fn_name` "meanmaxsim").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from neuralir_jax import hf_io, tokenization
from neuralir_jax import model as model_lib

MODEL_TYPE = "MultiVectorEncoder"
_DENSE = "sentence_transformers.base.modules.dense.Dense"
_MASK = "sentence_transformers.multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask"
_NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"
_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
TASKS = ("query", "document")


@dataclass(frozen=True)
class MultiVectorConfig:
  bert: model_lib.BertConfig
  dim: int
  max_length: int  # The tokenizer's model_max_length, capped at the position embeddings.
  prompts: dict = field(default_factory=lambda: {"query": "", "document": ""})
  lengths: dict = field(default_factory=lambda: {"query": None, "document": None})
  expansion: dict | None = None  # {"length", "attend", "token_id"} of the "fixed" strategy, or None.
  skiplist_ids: tuple[int, ...] = ()
  skiplist_tasks: tuple[str, ...] = ("document",)
  length_normalize: bool = False  # meanmaxsim


def is_multi_vector_directory(path: str) -> bool:
  """Whether `path` is a sentence-transformers MultiVectorEncoder directory."""
  file = os.path.join(path, "config_sentence_transformers.json")
  if not os.path.isfile(file):
    return False
  with open(file) as f:
    try:
      return json.load(f).get("model_type") == MODEL_TYPE
    except json.JSONDecodeError:
      return False


def _modules(path: str) -> dict[str, str]:
  """{module type: its folder} from modules.json, checked for the four MultiVectorEncoder modules."""
  file = os.path.join(path, "modules.json")
  entries = hf_io._read_json(file)
  by_type = {e.get("type"): os.path.join(path, e.get("path", "")) for e in entries}
  needed = {_TRANSFORMER: "Transformer", _DENSE: "Dense", _MASK: "MultiVectorMask", _NORMALIZE: "Normalize"}
  missing = [name for t, name in needed.items() if t not in by_type]
  extra = sorted(set(by_type) - set(needed))
  if missing or extra:
    raise hf_io.ModelDirectoryError(
        f"{file}: a MultiVectorEncoder here is Transformer -> Dense -> MultiVectorMask -> Normalize; "
        f"missing {missing or 'none'}, unsupported {extra or 'none'}. Save it with sentence-transformers 6.x.")
  return by_type


def load_multi_vector_directory(path: str) -> tuple[MultiVectorConfig, dict, tokenization.Tokenizer]:
  """(config, params {'bert', 'projection': {'kernel' [hidden, dim]}}, tokenizer); one-line errors."""
  import safetensors.numpy
  path = os.fspath(path)
  modules = _modules(path)
  body = modules[_TRANSFORMER]
  bert = hf_io.read_bert_config(body)
  state, source = hf_io.read_state_dict(body)
  params = hf_io.hf_state_dict_to_params(state, bert, source)
  dense_dir = modules[_DENSE]
  dense = hf_io._read_json(os.path.join(dense_dir, "config.json"))
  activation = dense.get("activation_function", "torch.nn.modules.linear.Identity")
  if dense.get("bias", True) or not activation.endswith("Identity"):
    raise hf_io.ModelDirectoryError(f"{os.path.join(dense_dir, 'config.json')}: bias={dense.get('bias')}, "
                                    f"activation {activation}; ColBERT's projection is linear without bias.")
  weights_file = os.path.join(dense_dir, "model.safetensors")
  if not os.path.isfile(weights_file):
    raise hf_io.ModelDirectoryError(f"{dense_dir}: no model.safetensors with the projection's linear.weight.")
  weight = safetensors.numpy.load_file(weights_file).get("linear.weight")
  if weight is None or weight.shape != (dense["out_features"], bert.hidden_size):
    raise hf_io.ModelDirectoryError(f"{weights_file}: linear.weight must be [{dense.get('out_features')}, "
                                    f"{bert.hidden_size}]; got {None if weight is None else tuple(weight.shape)}.")
  params["projection"] = {"kernel": np.ascontiguousarray(np.asarray(weight, np.float32).T)}
  st = hf_io._read_json(os.path.join(path, "config_sentence_transformers.json"))
  prompts = {task: (st.get("prompts") or {}).get(task) or "" for task in TASKS}
  similarity = st.get("similarity_fn_name") or "maxsim"
  if similarity not in ("maxsim", "meanmaxsim"):
    raise hf_io.ModelDirectoryError(f"{path}/config_sentence_transformers.json: similarity_fn_name "
                                    f"{similarity!r}; a multi-vector model scores with maxsim or meanmaxsim.")
  sbert = hf_io._read_json(os.path.join(body, "sentence_bert_config.json"), required=False) or {}
  tok_config = hf_io._read_json(os.path.join(body, "tokenizer_config.json"), required=False) or {}
  max_length = min(int(tok_config.get("model_max_length") or bert.max_positions), bert.max_positions)
  tokenizer = tokenization.Tokenizer(body, max_length=max_length)
  expansion = None
  if sbert.get("query_expansion"):
    spec = sbert["query_expansion"]
    if spec.get("strategy", "fixed") != "fixed":
      raise hf_io.ModelDirectoryError(f"{body}/sentence_bert_config.json: query_expansion strategy "
                                      f"{spec.get('strategy')!r}; only 'fixed' is supported.")
    token = spec.get("token") or "[MASK]"
    token_id = tokenizer._tok.token_to_id(token)
    if token_id is None:
      raise hf_io.ModelDirectoryError(f"{body}/sentence_bert_config.json: query_expansion token {token!r} is "
                                      "not in the vocabulary.")
    expansion = {"length": int(spec["length"]), "attend": bool(spec.get("attend", False)), "token_id": token_id}
  mask = hf_io._read_json(os.path.join(modules[_MASK], "config.json"))
  if mask.get("keep_only_token_ids"):
    raise hf_io.ModelDirectoryError(f"{modules[_MASK]}/config.json: keep_only_token_ids is not supported.")
  unk = tokenizer._tok.token_to_id("[UNK]")
  skip = sorted({i for w in mask.get("skiplist_words") or () for i in [tokenizer._tok.token_to_id(w)]
                 if i is not None and i != unk})
  config = MultiVectorConfig(
      bert=bert, dim=int(weight.shape[0]), max_length=max_length, prompts=prompts,
      lengths={"query": sbert.get("query_length"), "document": sbert.get("document_length")},
      expansion=expansion, skiplist_ids=tuple(skip),
      skiplist_tasks=_tasks(mask.get("skiplist_tasks")),
      length_normalize=similarity == "meanmaxsim")
  return config, params, tokenizer


def _tasks(value) -> tuple[str, ...]:
  """skiplist_tasks as sentence-transformers reads it: None -> documents, a string -> that task."""
  if value is None:
    return ("document",)
  return (value,) if isinstance(value, str) else tuple(value)


def token_vectors(config: MultiVectorConfig, params: dict, ids_BxL: jax.Array, attention_BxL: jax.Array,
                  dtype: Any = jnp.float32) -> jax.Array:
  """[B, L, dim] fp32 L2-normalised projected token vectors (every position; the caller masks)."""
  types = jnp.zeros_like(ids_BxL)
  hidden_BxLxH = model_lib.Bert(config.bert, dtype).apply({"params": params["bert"]}, ids_BxL, attention_BxL,
                                                          types, deterministic=True)
  v_BxLxD = hidden_BxLxH.astype(jnp.float32) @ params["projection"]["kernel"]
  return v_BxLxD / jnp.maximum(jnp.linalg.norm(v_BxLxD, axis=-1, keepdims=True), 1e-12)


class MultiVectorEncoder:
  """encode_query / encode_document -> one [n_i, dim] array per text, as sentence-transformers gives them."""

  def __init__(self, config: MultiVectorConfig, params: dict, tokenizer: tokenization.Tokenizer,
               dtype: Any = jnp.float32):
    self.config = config
    self.params = jax.device_put(params)
    self.tokenizer = tokenizer
    self._fn = jax.jit(lambda p, ids, mask: token_vectors(config, p, ids, mask, dtype))

  def _inputs(self, texts: Sequence[str], task: str) -> list[tuple[list[int], list[int], list[bool]]]:
    """(ids, encoder attention, scoring mask) of each text."""
    c = self.config
    expand = c.expansion if task == "query" else None
    length = expand["length"] if expand else (c.lengths[task] or c.max_length)
    prompt = c.prompts[task]
    ids = self.tokenizer.token_ids([prompt + t for t in texts], min(length, c.max_length))
    skip = set(c.skiplist_ids) if task in c.skiplist_tasks else set()
    out = []
    for x in ids:
      attention = [1] * len(x)
      scoring = [i not in skip for i in x]
      if expand:
        pad = expand["length"] - len(x)
        x = x + [expand["token_id"]] * pad
        attention += [1 if expand["attend"] else 0] * pad
        scoring += [True] * pad
      out.append((x, attention, scoring))
    return out

  def encode(self, texts: Sequence[str], task: str, batch_size: int = 32) -> list[np.ndarray]:
    if task not in TASKS:
      raise ValueError(f"task {task!r}: use one of {TASKS}.")
    if isinstance(texts, str):
      texts = [texts]
    inputs = self._inputs(texts, task)
    order = np.argsort([-len(x) for x, _, _ in inputs], kind="stable")
    out: list[np.ndarray] = [np.zeros((0, self.config.dim), np.float32)] * len(inputs)
    for start in range(0, len(order), batch_size):
      index = order[start:start + batch_size]
      longest = max(len(inputs[i][0]) for i in index)
      length = tokenization.bucket_length(longest, self.config.max_length)
      ids = np.full((batch_size, length), self.tokenizer.pad_id, np.int32)
      attention = np.zeros((batch_size, length), np.int32)
      for row, i in enumerate(index):
        x, a, _ = inputs[i]
        ids[row, :len(x)], attention[row, :len(a)] = x, a
      vectors = np.asarray(self._fn(self.params, ids, attention))
      for row, i in enumerate(index):
        scoring = np.asarray(inputs[i][2], bool)
        out[i] = vectors[row, :len(scoring)][scoring]
    return out

  def encode_query(self, texts: Sequence[str], batch_size: int = 32) -> list[np.ndarray]:
    return self.encode(texts, "query", batch_size)

  def encode_document(self, texts: Sequence[str], batch_size: int = 32) -> list[np.ndarray]:
    return self.encode(texts, "document", batch_size)

  def score_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
    """[N] MaxSim of each (query, document) pair; every distinct text is encoded once."""
    queries = sorted({q for q, _ in pairs})
    documents = sorted({d for _, d in pairs})
    q_vectors = dict(zip(queries, self.encode_query(queries, batch_size)))
    d_vectors = dict(zip(documents, self.encode_document(documents, batch_size)))
    return np.array([maxsim(q_vectors[q], d_vectors[d], self.config.length_normalize) for q, d in pairs],
                    np.float32)


def maxsim(q_QxD: np.ndarray, d_TxD: np.ndarray, length_normalize: bool = False) -> float:
  """Sum (or mean) over query tokens of the best dot product with a document token; -1e9 for a document
  without tokens (sentence-transformers' empty-document score)."""
  if len(d_TxD) == 0:
    return -1e9
  best_Q = (np.asarray(q_QxD, np.float32) @ np.asarray(d_TxD, np.float32).T).max(axis=1)
  total = float(best_Q.sum())
  return total / max(len(q_QxD), 1) if length_normalize else total


def load_multi_vector(path: str, **kwargs) -> MultiVectorEncoder:
  config, params, tokenizer = load_multi_vector_directory(path)
  return MultiVectorEncoder(config, params, tokenizer, **kwargs)
