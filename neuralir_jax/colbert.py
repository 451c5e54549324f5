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

import dataclasses
import json
import os
import string
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from neuralir_jax import bi_encoder, config_lib, flops, hf_io, losses, tokenization, workdir
from neuralir_jax import model as model_lib
from neuralir_jax import objectives as objectives_lib

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
  """Whether `path` is a sentence-transformers MultiVectorEncoder directory or a PyLate ColBERT one."""
  file = os.path.join(path, "config_sentence_transformers.json")
  if not os.path.isfile(file):
    return False
  with open(file) as f:
    try:
      return json.load(f).get("model_type") == MODEL_TYPE or is_pylate_directory(path)
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


def read_body_and_projection(body: str, dense_dir: str) -> tuple[model_lib.BertConfig, dict]:
  """The BERT body's config and params {'bert', 'projection': {'kernel' [hidden, dim]}}; the Dense must be
  linear without bias (or residual)."""
  import safetensors.numpy
  bert = hf_io.read_bert_config(body)
  state, source = hf_io.read_state_dict(body)
  params = hf_io.hf_state_dict_to_params(state, bert, source)
  dense = hf_io._read_json(os.path.join(dense_dir, "config.json"))
  activation = dense.get("activation_function", "torch.nn.modules.linear.Identity")
  if dense.get("bias", True) or not activation.endswith("Identity") or dense.get("use_residual"):
    raise hf_io.ModelDirectoryError(f"{os.path.join(dense_dir, 'config.json')}: bias={dense.get('bias')}, "
                                    f"activation {activation}, use_residual={dense.get('use_residual', False)}; "
                                    "ColBERT's projection is linear, without bias or residual.")
  weights_file = os.path.join(dense_dir, "model.safetensors")
  if not os.path.isfile(weights_file):
    raise hf_io.ModelDirectoryError(f"{dense_dir}: no model.safetensors with the projection's linear.weight.")
  weight = safetensors.numpy.load_file(weights_file).get("linear.weight")
  if weight is None or weight.shape != (dense["out_features"], bert.hidden_size):
    raise hf_io.ModelDirectoryError(f"{weights_file}: linear.weight must be [{dense.get('out_features')}, "
                                    f"{bert.hidden_size}]; got {None if weight is None else tuple(weight.shape)}.")
  params["projection"] = {"kernel": np.ascontiguousarray(np.asarray(weight, np.float32).T)}
  return bert, params


def load_multi_vector_directory(path: str) -> tuple[MultiVectorConfig, dict, tokenization.Tokenizer]:
  """(config, params {'bert', 'projection': {'kernel' [hidden, dim]}}, tokenizer) of a MultiVectorEncoder or
  PyLate directory; one-line errors."""
  path = os.fspath(path)
  if is_pylate_directory(path):
    return load_pylate_directory(path)
  modules = _modules(path)
  body = modules[_TRANSFORMER]
  bert, params = read_body_and_projection(body, modules[_DENSE])
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
      bert=bert, dim=int(params["projection"]["kernel"].shape[1]), max_length=max_length, prompts=prompts,
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
    self._fn = jax.jit(lambda p, *rows_BxL: model_lib.map_inference_rows(  # A few rows at a time on CPU.
        lambda *rows: token_vectors(config, p, *rows, dtype), rows_BxL))

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

  def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
    """`score_pairs`, under the name re-ranking (`rerank.rerank_run`) calls a reranker by."""
    return self.score_pairs(pairs, batch_size)

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


def with_document_length(model: MultiVectorEncoder, length: int) -> MultiVectorEncoder:
  """The same model encoding documents up to `length` tokens (at most the position embeddings)."""
  c = model.config
  if not 1 <= length <= c.bert.max_positions:
    raise ValueError(f"--document-length {length}: give 1..{c.bert.max_positions} (the model's positions).")
  query = c.expansion["length"] if c.expansion else (c.lengths.get("query") or c.max_length)
  config = dataclasses.replace(c, lengths={**c.lengths, "document": length}, max_length=max(query, length))
  return MultiVectorEncoder(config, model.params, model.tokenizer)


def load_multi_vector(path: str, **kwargs) -> MultiVectorEncoder:
  config, params, tokenizer = load_multi_vector_directory(path)
  return MultiVectorEncoder(config, params, tokenizer, **kwargs)


# --- Training: ColBERT as a model family of the shared loop -----------------------------------------------

PUNCTUATION = tuple(string.punctuation)
_MASKED_SIM = -1e4  # A document position that is not scored (padding, punctuation) never wins a max.


def multi_vector_config(config: ml_collections.ConfigDict) -> MultiVectorConfig:
  """The MultiVectorConfig a (resolved) ColBERT training config trains: its BERT, projection width, prompts
  (the query / document markers), [MASK] expansion to the query length and the document skiplist."""
  bert = model_lib.encoder_config(config.model).bert
  query = int(config.data.query_max_length or config.data.max_length)
  document = int(config.colbert.get("document_length", 0) or config.data.document_max_length or
                 config.data.max_length)
  return MultiVectorConfig(
      bert=bert, dim=int(config.colbert.dim), max_length=min(max(query, document), bert.max_positions),
      prompts={task: str(config.model.prompts[task]) for task in TASKS},
      lengths={"query": None, "document": document},
      expansion={"length": query, "attend": bool(config.colbert.attend_expansion),
                 "token_id": int(config.colbert.mask_token_id)},
      skiplist_ids=tuple(int(i) for i in config.colbert.skiplist_ids), skiplist_tasks=("document",))


def init_projection(rng: jax.Array, hidden: int, dim: int) -> dict:
  """A new bias-free projection, as torch.nn.Linear initialises one: U(-1/sqrt(hidden), 1/sqrt(hidden))."""
  bound = 1.0 / np.sqrt(hidden)
  return {"kernel": jax.random.uniform(rng, (hidden, dim), jnp.float32, -bound, bound)}


def maxsim_scores(q_BxQxD: jax.Array, docs_CxTxD: jax.Array, doc_mask_CxT: jax.Array) -> jax.Array:
  """[B, C] MaxSim of every query against every document: the sum over query tokens of the best dot
  product with a scored document token (positions with doc_mask 0 never count)."""
  sims_BxCxQxT = jnp.einsum("bqd,ctd->bcqt", q_BxQxD, docs_CxTxD)
  sims_BxCxQxT = jnp.where(doc_mask_CxT[None, :, None, :] > 0, sims_BxCxQxT, _MASKED_SIM)
  return sims_BxCxQxT.max(axis=-1).sum(axis=-1)


class ColBERTFamily:
  """ColBERT (Khattab & Zaharia, 2020) as a model family of the training loop (the contract of
  `bi_encoder.py`).

  Records are (anchor, positive, negative[k]) tuples (`neuralir mine` output). Queries ("query" group:
  the anchors, tokenised with the query marker prompt up to data.query_max_length) are padded on device to
  that length with [MASK] (attended to with colbert.attend_expansion: query augmentation) and every
  position is scored; documents ("document" group: positives then negatives, with the document marker) are
  scored on their real tokens minus colbert.skiplist_ids (punctuation). The model's output per text is its
  L2-normalised projected token vectors [N, L, dim] (documents carry their scoring mask as one more
  channel), so GradCache caches and replays them as it does sentence embeddings.

  Objectives (per device, candidates gathered as the bi-encoder's):
    infonce      MaxSim / tau over the positives and hard negatives of the global batch (negatives=global:
                 every device's document token vectors are all-gathered, labels offset as in
                 `losses.gather_candidates`), judged positives masked by hash;
    listwise_kl / margin_mse  against teacher scores of the query's own [positive, negatives], student
                 scores distill.scale * MaxSim.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model_config = multi_vector_config(config)
    self.dtype = bi_encoder.DTYPES[config.model.dtype]
    self.remat = bool(config.model.remat)
    self.deterministic = config.model.dropout_rate == 0
    self.objectives = objectives_lib.enabled(config)
    self.has_nli_head = False
    self.queue_size, self.queue_dim = 0, 0
    self.skip_ids = jnp.asarray(self.model_config.skiplist_ids or (-1,), jnp.int32)

  def init_params(self, rng: jax.Array, encoder_params: Any = None) -> dict:
    """{'encoder': {'bert', 'projection'}}: the pretrained body (and projection, from a multi-vector
    directory), else random; a new projection as `init_projection`."""
    body_rng, head_rng = jax.random.split(rng)
    if encoder_params is None:
      encoder_params = model_lib.init_params(model_lib.EncoderConfig(self.model_config.bert), body_rng)
    params = {"bert": encoder_params["bert"]}
    params["projection"] = encoder_params.get("projection") or init_projection(
        head_rng, self.model_config.bert.hidden_size, self.model_config.dim)
    return {"encoder": params}

  def text_columns(self, keys: set[str]) -> tuple[str, ...]:
    cols = {k.rpartition("_")[0] for k in keys if k.endswith("_ids")} | set(keys)
    if not {"anchor", "positive"} <= cols:
      raise ValueError(f"ColBERT trains on (anchor, positive[, negative]) records (a triples: file, e.g. "
                       f"`neuralir mine` output, data.view=triplets or pairs); the data has {sorted(keys)}.")
    needs_negatives = self.config.infonce.hard_negatives or {"listwise_kl", "margin_mse"} & set(self.objectives)
    if needs_negatives and "negative" not in cols:
      raise ValueError("ColBERT with hard negatives (infonce.hard_negatives or distillation) needs records "
                       "with negatives: data.view=triplets on a triples: file, or set "
                       "--config.infonce.hard_negatives=false.")
    return ("anchor", "positive", "negative") if needs_negatives else ("anchor", "positive")

  def inputs(self, batch: dict, num_shards: int = 1):
    """{"query": anchors [B, Lq], "document": positives and negatives [B * (1 + k), Ld]} and unstack ->
    {"query": [B, Lq, dim], "positive": [B, Ld, dim + 1], "negative": [B * k, Ld, dim + 1]}."""
    del num_shards  # Rows stay per example; candidates are gathered in the loss.
    columns = ("positive", "negative") if "negative_ids" in batch else ("positive",)
    ids_BxRxL, mask_BxRxL, slices = objectives_lib.stack_texts(batch, columns)
    batch_size, rows, length = ids_BxRxL.shape
    texts = {"query": (batch["anchor_ids"], batch["anchor_mask"]),
             "document": (ids_BxRxL.reshape(-1, length), mask_BxRxL.reshape(-1, length))}

    def unstack(outs: dict) -> dict:
      docs = outs["document"].reshape(batch_size, rows, *outs["document"].shape[1:])
      out = {"query": outs["query"]}
      for c, (start, count) in slices.items():
        out[c] = docs[:, start:start + count].reshape(-1, *docs.shape[2:])
      return out

    return texts, unstack

  def expand_queries(self, ids_NxL: jax.Array, mask_NxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Queries padded to the expansion length with [MASK]: (ids, attention) [N, Lq]."""
    spec = self.model_config.expansion
    pad = ((0, 0), (0, spec["length"] - ids_NxL.shape[1]))
    mask = jnp.pad(mask_NxL, pad)
    ids = jnp.where(mask > 0, jnp.pad(ids_NxL, pad), spec["token_id"])
    return ids, (jnp.ones_like(mask) if spec["attend"] else mask)

  def _vectors(self, params, ids_NxL, attention_NxL, rng):
    rngs = {} if self.deterministic or rng is None else {"dropout": rng}
    types = jnp.zeros_like(ids_NxL)
    hidden = model_lib.Bert(self.model_config.bert, self.dtype, self.remat).apply(
        {"params": params["bert"]}, ids_NxL, attention_NxL, types, deterministic=self.deterministic, rngs=rngs)
    v_NxLxD = hidden.astype(jnp.float32) @ params["projection"]["kernel"]
    return model_lib.l2_normalize(v_NxLxD)

  def embed_fn(self, group: str):
    if group == "query":
      def embed_query(params, ids_NxL, mask_NxL, rng):
        return self._vectors(params, *self.expand_queries(ids_NxL, mask_NxL), rng)
      return embed_query

    def embed_document(params, ids_NxL, mask_NxL, rng):
      scored = (mask_NxL > 0) & ~jnp.isin(ids_NxL, self.skip_ids)
      vectors = self._vectors(params, ids_NxL, mask_NxL, rng)
      return jnp.concatenate([vectors, scored[..., None].astype(vectors.dtype)], axis=-1)
    return embed_document

  def loss(self, rest: dict, columns: dict, aux: dict, axis_name: str | None) -> tuple[jax.Array, dict]:
    config = self.config
    q_bxQxD = columns["query"]
    b, _, dim = q_bxQxD.shape
    pos = columns["positive"]
    length = pos.shape[1]
    metrics, total = {}, 0.0
    neg = columns.get("negative")
    if "infonce" in self.objectives:
      flat = lambda x: x.reshape(b, -1, length * (dim + 1))  # noqa: E731
      hard = flat(neg) if neg is not None and config.infonce.hard_negatives else None
      hashes = (aux["positive_hash"], None if hard is None else aux["negative_hash"].reshape(b, -1)) \
          if _masks_false_negatives(config, aux, hard is not None) else (None, None)
      cand, labels_b, hash_C = losses.gather_candidates(
          flat(pos)[:, 0], hard, *hashes, axis_name=axis_name, negatives=config.negatives)
      cand_CxTxD1 = cand.reshape(-1, length, dim + 1)
      scores_bxC = maxsim_scores(q_bxQxD, cand_CxTxD1[..., :dim], cand_CxTxD1[..., dim])
      mask_bxC = None
      if hash_C is not None:
        targets = aux.get("judged_hash", aux["positive_hash"])
        mask_bxC = losses.false_negative_mask(targets, hash_C, labels_b)
      metrics["loss/infonce"] = losses.infonce_of_scores(scores_bxC, labels_b, float(config.infonce.temperature),
                                                         mask_bxC)
      masked = 0.0 if mask_bxC is None else jnp.mean(mask_bxC.sum(-1).astype(jnp.float32))
      metrics["negatives_per_query"] = jnp.float32(scores_bxC.shape[1] - 1) - masked
      ranked = scores_bxC if mask_bxC is None else jnp.where(mask_bxC, -jnp.inf, scores_bxC)
      metrics["positive_first"] = jnp.mean((jnp.argmax(ranked, axis=-1) == labels_b).astype(jnp.float32))
    if {"listwise_kl", "margin_mse"} & set(self.objectives):
      docs = jnp.concatenate([pos[:, None], neg.reshape(b, -1, length, dim + 1)], axis=1)  # [b, 1 + k, T, D+1]
      own_bxN = jnp.einsum("bqd,bntd->bnqt", q_bxQxD, docs[..., :dim])
      own_bxN = jnp.where(docs[:, :, None, :, dim] > 0, own_bxN, _MASKED_SIM).max(-1).sum(-1)
      student_bxN = float(config.distill.scale) * own_bxN
      teacher_bxN = float(config.distill.teacher_scale) * aux["teacher_scores"]
      if "listwise_kl" in self.objectives:
        metrics["loss/listwise_kl"] = losses.listwise_kl_loss(student_bxN, teacher_bxN,
                                                              float(config.distill.teacher_temperature))
      if "margin_mse" in self.objectives:
        metrics["loss/margin_mse"] = losses.margin_mse_loss(student_bxN, teacher_bxN)
    for name, weight in self.objectives.items():
      total = total + weight * metrics[f"loss/{name}"]
    return total, metrics

  def token_counts(self, batch: dict[str, np.ndarray]) -> tuple[int, int]:
    """(tokens the encoder computes for real: documents' real tokens + every query position, [MASK]
    expansion included; positions computed)."""
    lengths, positions = self._lengths(batch)
    return int(lengths.sum()), positions

  def _lengths(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
    expansion = self.model_config.expansion
    query_length = expansion["length"]
    anchors = np.asarray(batch["anchor_mask"])
    q = np.full(len(anchors), query_length) if expansion["attend"] else anchors.sum(-1)
    docs = bi_encoder.text_lengths(batch, tuple(c for c in ("positive", "negative") if f"{c}_mask" in batch))
    doc_positions = sum(int(np.prod(batch[f"{c}_mask"].shape)) for c in ("positive", "negative")
                        if f"{c}_mask" in batch)
    return np.concatenate([q, docs]), len(q) * query_length + doc_positions

  def train_flops(self, batch: dict[str, np.ndarray], num_devices: int) -> float:
    """Encoder FLOPs at the real lengths, + the projection, + MaxSim against the nominal candidates
    (forward and backward: 3 x 2 FLOPs per multiply-add)."""
    lengths, _ = self._lengths(batch)
    bert = self.model_config.bert
    dim, query_length = self.model_config.dim, self.model_config.expansion["length"]
    encoder = flops.encoder_flops(bert, lengths) + 6.0 * bert.hidden_size * dim * lengths.sum()
    doc_length = batch["positive_mask"].shape[-1]
    k = objectives_lib.texts_per_example(batch, "negative") if "negative_mask" in batch else 0
    rows = self.config.batch_size if self.config.negatives == "global" else self.config.batch_size // num_devices
    candidates = rows * (1 + k) if "infonce" in self.objectives else 1 + k
    maxsim = 6.0 * self.config.batch_size * candidates * query_length * doc_length * dim
    return encoder * jax.process_count() + maxsim

  def encoder(self, params: dict, tokenizer: tokenization.Tokenizer) -> MultiVectorEncoder:
    return MultiVectorEncoder(self.model_config, params["encoder"], tokenizer)


def _masks_false_negatives(config, aux, hard: bool) -> bool:
  return (bool(config.infonce.mask_false_negatives) and "positive_hash" in aux
          and (not hard or "negative_hash" in aux))


def resolve_model(config: ml_collections.ConfigDict
                  ) -> tuple[ml_collections.ConfigDict, tokenization.Tokenizer, Any]:
  """(config, tokenizer, pretrained params or None) for ColBERT's `model.init`: a multi-vector directory
  (body and projection), any BERT directory such as "minilm" (body; a new projection) or "random". The
  prompts' marker tokens become special pieces of the tokenizer, and colbert.mask_token_id /
  colbert.skiplist_ids are filled from it when unset (-1 / ())."""
  path = config_lib.resolve_model_path(config.model.init)
  if config.model.init != "random" and os.path.isdir(path) and is_multi_vector_directory(path):
    mv_config, params, tokenizer = load_multi_vector_directory(path)
    _check_same_settings(config, mv_config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.bert = ml_collections.ConfigDict(dataclasses.asdict(mv_config.bert))
  else:
    config, tokenizer, params = bi_encoder.resolve_model(config)
    config = ml_collections.ConfigDict(config.to_dict())
  # A marker is the prompt's first word ("[unused0] "), or the whole prompt where it is one piece already
  # (PyLate's "[Q] ", registered by load_multi_vector_directory).
  markers = [p.split()[0] for p in config.model.prompts.values()
             if p.strip() and p not in tokenizer.special_added and p.rstrip() not in tokenizer.special_added]
  tokenizer.add_special_tokens([m for m in markers if m.startswith("[") and m.endswith("]")])
  if config.colbert.mask_token_id < 0:
    mask_id = next((i for t in ("[MASK]", "<mask>") for i in [tokenizer._tok.token_to_id(t)] if i is not None),
                   None)
    if mask_id is None:
      raise ValueError(f"model.tokenizer: {tokenizer.path} has no [MASK] token for query expansion; set "
                       "--config.colbert.mask_token_id.")
    config.colbert.mask_token_id = mask_id
  if config.colbert.skip_punctuation and not tuple(config.colbert.skiplist_ids):
    config.colbert.skiplist_ids = punctuation_ids(tokenizer)
  return config, tokenizer, params


def _check_same_settings(config: ml_collections.ConfigDict, mv: MultiVectorConfig) -> None:
  """Fine-tuning a multi-vector directory keeps how it encodes: the config must match its projection width,
  markers, query expansion and similarity (one-line error naming the key to set)."""
  init = config.model.init
  expansion = mv.expansion or {}
  query = int(config.data.query_max_length or config.data.max_length)
  checks = [("colbert.dim", config.colbert.dim, mv.dim),
            *((f"model.prompts.{t}", repr(str(config.model.prompts[t])), repr(mv.prompts.get(t, ""))) for t in TASKS),
            ("data.query_max_length", query, expansion.get("length", query) if expansion else None),
            ("colbert.attend_expansion", bool(config.colbert.attend_expansion), expansion.get("attend"))]
  for key, ours, theirs in checks:
    if theirs is None and key == "data.query_max_length":
      raise ValueError(f"model.init={init!r} does not expand queries with [MASK]; ColBERT training here does: "
                       "start from its BERT body instead, or save it with query_expansion.")
    if ours != theirs:
      raise ValueError(f"{key}={ours}: model.init={init!r} was trained with {theirs}; set --config.{key}={theirs}.")
  if mv.length_normalize:
    raise ValueError(f"model.init={init!r} scores with meanmaxsim; ColBERT training here uses maxsim.")


def punctuation_ids(tokenizer: tokenization.Tokenizer) -> tuple[int, ...]:
  """Ids of the single punctuation characters in the vocabulary (sentence-transformers' skiplist_words
  resolved as MultiVectorMask resolves them: unknown words dropped)."""
  unk = tokenizer._tok.token_to_id("[UNK]")
  return tuple(sorted({i for w in PUNCTUATION for i in [tokenizer._tok.token_to_id(w)]
                       if i is not None and i != unk}))


# --- Trained models: workdirs and export ------------------------------------------------------------------


def is_colbert_workdir(path: str) -> bool:
  """Whether `path` is a training workdir of a ColBERT model (its config's model.family)."""
  if not workdir.is_workdir(path):
    return False
  config_file = os.path.join(path, workdir.CONFIG)
  if not os.path.isfile(config_file):
    return False
  with open(config_file) as f:
    return json.load(f).get("model", {}).get("family") == "colbert"


def is_multi_vector(path: str) -> bool:
  """A multi-vector model: a sentence-transformers MultiVectorEncoder directory or a ColBERT workdir."""
  return is_multi_vector_directory(path) or is_colbert_workdir(path)


def load_trained(path: str, step: int | None = None, **kwargs) -> MultiVectorEncoder:
  """The MultiVectorEncoder of a ColBERT workdir's checkpoint (latest or `step`)."""
  trained = workdir.read(path, step)
  config = multi_vector_config(ml_collections.ConfigDict(trained.config))
  tokenizer = tokenization.Tokenizer(trained.tokenizer_dir, max_length=config.max_length)
  return MultiVectorEncoder(config, trained.params["encoder"], tokenizer, **kwargs)


def load_any(path: str, step: int | None = None, flag: str = "--model") -> MultiVectorEncoder:
  """A MultiVectorEncoder from a multi-vector directory or a ColBERT workdir; errors name `flag`."""
  resolved = config_lib.resolve_model_path(path)
  if is_colbert_workdir(resolved):
    return load_trained(resolved, step)
  if step is not None:
    raise ValueError(f"{flag} {path} is a model directory, not a training workdir: drop --step.")
  if not is_multi_vector_directory(resolved):
    raise ValueError(f"{flag} {path}: neither a MultiVectorEncoder or PyLate directory nor a ColBERT workdir.")
  return load_multi_vector(resolved)


def save_multi_vector_directory(output_dir: str, model: MultiVectorEncoder, overwrite: bool = False, *,
                                source: str | None = None) -> None:
  """Writes `model` in the layout `MultiVectorEncoder(...).save(dir)` writes (and this module loads): the
  BERT body and tokenizer at the root, 1_Dense (the projection), 2_MultiVectorMask (the skiplist),
  3_Normalize, the prompts (markers) and the [MASK] expansion."""
  output_dir = os.fspath(output_dir)
  c = model.config
  write_body_and_projection(output_dir, model, overwrite, source, {
      "module_input_name": "token_embeddings", "module_output_name": "token_embeddings"})
  modules = [(_TRANSFORMER, ""), (_DENSE, "1_Dense"), (_MASK, "2_MultiVectorMask"), (_NORMALIZE, "3_Normalize")]
  hf_io._write_json(os.path.join(output_dir, "modules.json"),
                    [{"idx": i, "name": str(i), "path": p, "type": t} for i, (t, p) in enumerate(modules)])
  sbert = {"transformer_task": "feature-extraction",
           "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
           "module_output_name": "token_embeddings"}
  if c.lengths.get("query"):
    sbert["query_length"] = c.lengths["query"]
  if c.lengths.get("document"):
    sbert["document_length"] = c.lengths["document"]
  if c.expansion:
    token = model.tokenizer._tok.id_to_token(c.expansion["token_id"])
    sbert["query_expansion"] = {"strategy": "fixed", "attend": c.expansion["attend"], "token": token,
                                "length": c.expansion["length"]}
  hf_io._write_json(os.path.join(output_dir, "sentence_bert_config.json"), sbert)
  io = {"module_input_name": "token_embeddings", "module_output_name": "token_embeddings"}
  skip_words = [model.tokenizer._tok.id_to_token(i) for i in c.skiplist_ids]
  hf_io._write_json(os.path.join(output_dir, "2_MultiVectorMask", "config.json"),
                    {"skiplist_words": skip_words, "skiplist_tasks": list(c.skiplist_tasks),
                     "keep_only_token_ids": None})
  hf_io._write_json(os.path.join(output_dir, "3_Normalize", "config.json"), io)
  hf_io._write_json(os.path.join(output_dir, "config_sentence_transformers.json"), {
      "__version__": {"sentence_transformers": hf_io._version("sentence-transformers", "6.0.0"),
                      "transformers": hf_io._version("transformers", "5.0.0"),
                      "pytorch": hf_io._version("torch", "2.0.0")},
      "model_type": MODEL_TYPE, "prompts": {t: c.prompts.get(t, "") for t in TASKS},
      "default_prompt_name": None, "similarity_fn_name": "meanmaxsim" if c.length_normalize else "maxsim"})


def write_body_and_projection(output_dir: str, model: MultiVectorEncoder, overwrite: bool, source: str | None,
                              dense_extra: dict) -> None:
  """The export marker, the BERT body and tokenizer at the root and the projection in 1_Dense (both
  layouts); returns the params written."""
  import safetensors.numpy
  c = model.config
  hf_io.check_export_directory(output_dir, overwrite)
  os.makedirs(os.path.join(output_dir, "1_Dense"), exist_ok=True)
  hf_io._write_json(os.path.join(output_dir, hf_io.EXPORT_MARKER),
                    {"exported_by": f"neuralir_jax {hf_io._version('neuralir_jax', 'unknown')}", "source": source})
  params = jax.device_get(model.params)
  state = hf_io.params_to_hf_state_dict({"bert": params["bert"]}, c.bert)
  safetensors.numpy.save_file(state, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
  hf = c.bert.to_hf()
  hf.update(dtype="float32", transformers_version=hf_io._version("transformers", "5.0.0"))
  hf_io._write_json(os.path.join(output_dir, "config.json"), hf)
  model.tokenizer.save(output_dir)
  tok_config_file = os.path.join(output_dir, "tokenizer_config.json")
  tok_config = hf_io._read_json(tok_config_file, required=False) or {}
  tok_config["model_max_length"] = c.max_length  # Documents without a document_length stop here.
  hf_io._write_json(tok_config_file, tok_config)
  hf_io._write_json(os.path.join(output_dir, "1_Dense", "config.json"),
                    {"in_features": c.bert.hidden_size, "out_features": c.dim, "bias": False,
                     "activation_function": "torch.nn.modules.linear.Identity", **dense_extra})
  weight = np.ascontiguousarray(np.asarray(params["projection"]["kernel"], np.float32).T)
  safetensors.numpy.save_file({"linear.weight": weight}, os.path.join(output_dir, "1_Dense", "model.safetensors"),
                              metadata={"format": "pt"})


# --- PyLate's directories (pylate.models.ColBERT 1.x, on sentence-transformers 5), read and written --------
#
# PyLate 1.6 pins sentence-transformers 5.3 and cannot import a sentence-transformers 6 MultiVectorEncoder
# directory (`colbert.save_multi_vector_directory`), so the same files do not serve both; this is PyLate's own
# layout: the BERT body and tokenizer at the root, `pylate.models.Dense.Dense` in 1_Dense, and the encoding
# settings in config_sentence_transformers.json (PYLATE_DEFAULTS where a key is absent). PyLate inserts one
# marker token after [CLS] (`query_prefix` / `document_prefix`), truncates queries to `query_length` and pads
# them with [MASK] (attended or not), truncates documents to `document_length` and drops the skiplist's tokens
# from documents. A colbert.MultiVectorEncoder does the same with the marker as a special piece at the start of
# its prompt (the same ids). tests/colbert_test.py checks both directions against vectors PyLate computed
# (tests/data/pylate_tiny); benchmarks/pylate_parity.sh against PyLate itself.

PYLATE_MODULES = ("sentence_transformers.models.Transformer", "pylate.models.Dense.Dense")
PYLATE_DEFAULTS = {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 32, "document_length": 180,
                   "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
                   "do_query_expansion": True}


def is_pylate_directory(path: str) -> bool:
  """Whether modules.json in `path` names a PyLate module."""
  file = os.path.join(path, "modules.json")
  if not os.path.isfile(file):
    return False
  with open(file) as f:
    try:
      entries = json.load(f)
    except json.JSONDecodeError:
      return False
  return isinstance(entries, list) and any(str(e.get("type", "")).startswith("pylate.") for e in entries
                                           if isinstance(e, dict))


def _special_token(config: dict, key: str, fallback: str) -> str:
  value = config.get(key) or fallback
  return value["content"] if isinstance(value, dict) else value


def load_pylate_directory(path: str) -> tuple[MultiVectorConfig, dict, tokenization.Tokenizer]:
  """(config, params, tokenizer) encoding as PyLate does with this directory; one-line errors for what
  PyLate would encode otherwise and this module does not reproduce."""
  file = os.path.join(path, "modules.json")
  entries = hf_io._read_json(file)
  types = tuple(e.get("type") for e in entries)
  if types != PYLATE_MODULES:
    raise hf_io.ModelDirectoryError(f"{file}: a PyLate ColBERT here is {list(PYLATE_MODULES)} (one linear projection); "
                                    f"got {list(types)}.")
  body, dense_dir = (os.path.join(path, e.get("path", "")) for e in entries)
  bert, params = read_body_and_projection(body, dense_dir)
  st_file = os.path.join(path, "config_sentence_transformers.json")
  st = {**PYLATE_DEFAULTS, **{k: v for k, v in hf_io._read_json(st_file).items() if v is not None}}
  if str(st.get("similarity_fn_name") or "MaxSim").lower() != "maxsim":
    raise hf_io.ModelDirectoryError(f"{st_file}: similarity_fn_name {st['similarity_fn_name']!r}; PyLate "
                                    "ColBERT models score with MaxSim.")
  if st.get("default_prompt_name") or any((st.get("prompts") or {}).values()):
    raise hf_io.ModelDirectoryError(f"{st_file}: prompts {st.get('prompts')} / default_prompt_name "
                                    f"{st.get('default_prompt_name')!r} are not supported; only the prefixes.")
  sbert = hf_io._read_json(os.path.join(body, "sentence_bert_config.json"), required=False) or {}
  if sbert.get("do_lower_case"):
    raise hf_io.ModelDirectoryError(f"{body}/sentence_bert_config.json: do_lower_case=true is not supported "
                                    "(lowercase in the tokenizer's normalizer instead).")
  query_length, document_length = int(st["query_length"]), int(st["document_length"])
  tokenizer = tokenization.Tokenizer(body, max_length=min(max(query_length, document_length), bert.max_positions))
  tok = tokenizer._tok
  tok_config = hf_io._read_json(os.path.join(body, "tokenizer_config.json"), required=False) or {}
  prompts = {}
  for task in TASKS:
    prefix = str(st[f"{task}_prefix"])
    if prefix and tok.token_to_id(prefix) is None:
      raise hf_io.ModelDirectoryError(f"{st_file}: {task}_prefix {prefix!r} is not a token of {body}'s "
                                      "tokenizer (PyLate adds it to the vocabulary when it builds the model).")
    if prefix:
      tokenizer.add_special_tokens([prefix])
    prompts[task] = prefix if not prefix or prefix[-1].isspace() else prefix + " "
  expansion = None
  if st["do_query_expansion"]:
    mask = _special_token(tok_config, "mask_token", "[MASK]")
    if tok.token_to_id(mask) is None:
      raise hf_io.ModelDirectoryError(f"{st_file}: do_query_expansion needs the mask token; {body}'s tokenizer "
                                      f"has no {mask!r}.")
    expansion = {"length": query_length, "attend": bool(st["attend_to_expansion_tokens"]),
                 "token_id": tok.token_to_id(mask)}
  unk = tok.token_to_id(_special_token(tok_config, "unk_token", "[UNK]"))
  words = list(st["skiplist_words"])
  skip = {i for w in words for i in [tok.token_to_id(w)] if i is not None}
  if unk is not None and any(tok.token_to_id(w) is None for w in words):
    skip.add(unk)  # PyLate's convert_tokens_to_ids maps an unknown word to [UNK].
  config = MultiVectorConfig(
      bert=bert, dim=int(params["projection"]["kernel"].shape[1]), max_length=tokenizer.max_length,
      prompts=prompts, lengths={"query": query_length, "document": document_length}, expansion=expansion,
      skiplist_ids=tuple(sorted(skip)), skiplist_tasks=("document",))
  return config, params, tokenizer


def pylate_prefix(model: MultiVectorEncoder, task: str) -> str:
  """The one marker token PyLate inserts after [CLS] for `task`, when the prompt tokenises as exactly that
  token followed by the text's own tokens ("[unused0] " -> "[unused0]", "[Q] " stays "[Q] ")."""
  prompt = model.config.prompts.get(task, "")
  if not prompt:
    return ""
  tok = model.tokenizer
  for prefix in (prompt.rstrip(), prompt):
    marker = tok._tok.token_to_id(prefix) if prefix else None
    if marker is None:
      continue
    probe = ["what is it", "x"]
    plain, prompted = tok.token_ids(probe, 64), tok.token_ids([prompt + t for t in probe], 64)
    if all(b == a[:1] + [marker] + a[1:] for a, b in zip(plain, prompted)):
      return prefix
  raise ValueError(f"model.prompts.{task}={prompt!r}: PyLate marks a {task} with one token inserted after "
                   "[CLS]; this prompt does not tokenise as one token before the text. Export with --format "
                   "sentence-transformers, or train with a marker such as '[unused0] '.")


def save_pylate_directory(output_dir: str, model: MultiVectorEncoder, overwrite: bool = False, *,
                          source: str | None = None) -> None:
  """Writes `model` in PyLate's layout, with settings under which PyLate encodes as `model` does."""
  output_dir = os.fspath(output_dir)
  c = model.config
  problems = []
  if c.length_normalize:
    problems.append("it scores with meanmaxsim (PyLate: MaxSim)")
  if c.skiplist_ids and tuple(c.skiplist_tasks) != ("document",):
    problems.append(f"its skiplist applies to {list(c.skiplist_tasks)} (PyLate: documents only)")
  mask_id = next((i for t in ("[MASK]", "<mask>") for i in [model.tokenizer._tok.token_to_id(t)] if i is not None),
                 None)
  if c.expansion and c.expansion["token_id"] != mask_id:
    problems.append("its queries are expanded with a token other than the mask token (PyLate pads with it)")
  if c.expansion and c.expansion["length"] > c.max_length:
    problems.append(f"its query expansion length {c.expansion['length']} exceeds its {c.max_length} tokens")
  if problems:
    raise ValueError(f"--format pylate: {'; '.join(problems)}; export with --format sentence-transformers.")
  prefixes = {task: pylate_prefix(model, task) for task in TASKS}
  write_body_and_projection(output_dir, model, overwrite, source, {"use_residual": False})
  hf_io._write_json(os.path.join(output_dir, "modules.json"), [
      {"idx": 0, "name": "0", "path": "", "type": PYLATE_MODULES[0]},
      {"idx": 1, "name": "1", "path": "1_Dense", "type": PYLATE_MODULES[1]}])
  # The lengths this model encodes with (MultiVectorEncoder._inputs truncates at max_length too).
  query_length = c.expansion["length"] if c.expansion else min(c.lengths.get("query") or c.max_length, c.max_length)
  document_length = min(c.lengths.get("document") or c.max_length, c.max_length)
  hf_io._write_json(os.path.join(output_dir, "sentence_bert_config.json"),
                    {"max_seq_length": c.max_length, "do_lower_case": False})
  hf_io._write_json(os.path.join(output_dir, "config_sentence_transformers.json"), {
      "model_type": "ColBERT",
      "__version__": {"sentence_transformers": "5.3.0", "transformers": hf_io._version("transformers", "5.0.0"),
                      "pytorch": hf_io._version("torch", "2.0.0")},
      "prompts": {"query": "", "document": ""}, "default_prompt_name": None, "similarity_fn_name": "MaxSim",
      "query_prefix": prefixes["query"], "document_prefix": prefixes["document"], "query_length": query_length,
      "document_length": document_length, "attend_to_expansion_tokens": bool(c.expansion and c.expansion["attend"]),
      "skiplist_words": [model.tokenizer._tok.id_to_token(i) for i in c.skiplist_ids],
      "do_query_expansion": bool(c.expansion)})


# --- End-to-end retrieval: exhaustive MaxSim, or ScaNN over every document token then exact MaxSim --------


@dataclass
class TokenIndex:
  """A corpus as token vectors: every document's scored vectors, padded [N, T, dim] (mask [N, T]) for
  MaxSim, and flat [sum n_i, dim] with each vector's document (`doc_of_token`) for token search."""
  docs_NxTxD: np.ndarray
  mask_NxT: np.ndarray
  tokens_VxD: np.ndarray
  doc_of_token_V: np.ndarray

  @classmethod
  def build(cls, vectors: Sequence[np.ndarray]) -> "TokenIndex":
    longest = max((len(v) for v in vectors), default=1)
    dim = vectors[0].shape[1]
    docs = np.zeros((len(vectors), max(longest, 1), dim), np.float32)
    mask = np.zeros(docs.shape[:2], bool)
    for i, v in enumerate(vectors):
      docs[i, :len(v)], mask[i, :len(v)] = v, True
    lengths = np.array([len(v) for v in vectors])
    return cls(docs, mask, np.concatenate(vectors).astype(np.float32), np.repeat(np.arange(len(vectors)), lengths))


@jax.jit
def _maxsim_block(q_BxQxD, docs_NxTxD, mask_NxT):
  return maxsim_scores(q_BxQxD, docs_NxTxD, mask_NxT)


@jax.jit
def _maxsim_of(q_QxD, docs_NxTxD, mask_NxT, index_C):
  """[C] MaxSim of one query against the documents at index_C (gathered on the device)."""
  return maxsim_scores(q_QxD[None], docs_NxTxD[index_C], mask_NxT[index_C])[0]


def exhaustive_maxsim(queries: Sequence[np.ndarray], index: TokenIndex, query_block: int = 16,
                      doc_block: int = 512) -> np.ndarray:
  """[Q, N] MaxSim of every query against every document, in fixed-size blocks: one jit shape per query
  length (queries are grouped by their token count, so none is padded with tokens; ColBERT's expanded
  queries all have one length)."""
  num_docs = index.docs_NxTxD.shape[0]
  out = np.zeros((len(queries), num_docs), np.float32)
  by_length: dict[int, list[int]] = {}
  for i, q in enumerate(queries):
    by_length.setdefault(len(q), []).append(i)
  pad_docs = -num_docs % doc_block
  docs = jax.device_put(np.pad(index.docs_NxTxD, ((0, pad_docs), (0, 0), (0, 0))))  # On the device once.
  mask = jax.device_put(np.pad(index.mask_NxT, ((0, pad_docs), (0, 0))))
  for length, rows in by_length.items():
    q = np.stack([queries[i] for i in rows]).astype(np.float32)
    q = np.pad(q, ((0, -len(q) % query_block), (0, 0), (0, 0)))
    for qs in range(0, len(q), query_block):
      block = [np.asarray(_maxsim_block(q[qs:qs + query_block], docs[ds:ds + doc_block], mask[ds:ds + doc_block]))
               for ds in range(0, len(docs), doc_block)]
      scores = np.concatenate(block, axis=1)[:, :num_docs]
      take = rows[qs:qs + query_block]
      out[take] = scores[:len(take)]
  return out


def candidate_documents(queries: Sequence[np.ndarray], index: TokenIndex, searcher, tokens_per_query_token: int
                        ) -> list[np.ndarray]:
  """Each query's candidate documents: those owning one of the `tokens_per_query_token` nearest document
  tokens (ScaNN) of any of its token vectors (ColBERT's end-to-end first step)."""
  from neuralir_jax import search as search_lib
  flat = np.concatenate(queries).astype(np.float32)
  _, idx = search_lib.scann_search(searcher, flat, tokens_per_query_token)
  out, start = [], 0
  for q in queries:
    hits = idx[start:start + len(q)].reshape(-1)
    out.append(np.unique(index.doc_of_token_V[hits[hits >= 0]]))
    start += len(q)
  return out


def _padded_candidates(cand: np.ndarray, multiple: int = 256) -> np.ndarray:
  """Candidate indices padded (repeating the last) to a multiple, so MaxSim over them compiles a few shapes."""
  return np.pad(cand, (0, -len(cand) % multiple), mode="edge") if len(cand) else cand


def search_run(q_vectors: Sequence[np.ndarray], tokens: TokenIndex, doc_ids: Sequence[str],
               query_ids: Sequence[str], k: int = 100, index: str = "exact", tokens_per_query_token: int = 100,
               scann_config: Mapping[str, Any] | None = None) -> tuple[dict[str, dict[str, float]], dict]:
  """(run {qid: {docid: MaxSim}} of each query's top k, stats) over the whole corpus.

  index "exact": MaxSim against every document. "scann": a ScaNN index over every document token vector
  gives each query's candidates (`candidate_documents`), ranked by exact MaxSim. stats: search seconds and
  ms per query (index build excluded, reported apart), the index's size in bytes (the fp32 token vectors
  for exact; ScaNN's serialised searcher for scann) and the mean number of candidates per query.
  """
  import tempfile
  import time
  from neuralir_jax import search as search_lib
  if index not in ("exact", "scann"):
    raise ValueError(f"index {index!r}: use 'exact' or 'scann'.")
  stats: dict[str, float] = {"num_token_vectors": int(tokens.tokens_VxD.shape[0])}
  run: dict[str, dict[str, float]] = {}
  if index == "exact":
    tic = time.perf_counter()
    scores_QxN = exhaustive_maxsim(q_vectors, tokens)
    for qid, s in zip(query_ids, scores_QxN):
      top = np.argsort(-s, kind="stable")[:k]
      run[qid] = {doc_ids[j]: float(s[j]) for j in top}
    stats.update(candidates_per_query=float(len(doc_ids)), index_bytes=int(tokens.tokens_VxD.nbytes))
  else:
    tic = time.perf_counter()
    searcher = search_lib.build_scann(tokens.tokens_VxD, scann_config)
    stats["index_build_seconds"] = time.perf_counter() - tic
    tic = time.perf_counter()
    docs, mask = jax.device_put(tokens.docs_NxTxD), jax.device_put(tokens.mask_NxT)
    candidates = candidate_documents(q_vectors, tokens, searcher, tokens_per_query_token)
    for qid, q, cand in zip(query_ids, q_vectors, candidates):
      s = np.asarray(_maxsim_of(q, docs, mask, _padded_candidates(cand)))[:len(cand)]
      top = np.argsort(-s, kind="stable")[:k]
      run[qid] = {doc_ids[cand[j]]: float(s[j]) for j in top}
    stats["candidates_per_query"] = float(np.mean([len(c) for c in candidates]))
  search_seconds = time.perf_counter() - tic
  if index == "scann":
    with tempfile.TemporaryDirectory() as tmp:
      searcher.searcher.serialize(tmp)
      stats["index_bytes"] = int(sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)))
  stats.update(search_seconds=search_seconds, ms_per_query=1000.0 * search_seconds / max(len(query_ids), 1))
  return run, stats


def evaluate_beir(model: MultiVectorEncoder, task: str, index: str = "exact", k: int = 100,
                  tokens_per_query_token: int = 100, batch_size: int = 32, split: str | None = None) -> dict:
  """`neuralir eval` for a multi-vector model on beir:DIR[:SPLIT], end to end over the whole corpus: the
  retrieval metrics of `search_run` and its stats; with index "scann" also the exhaustive run's nDCG@10
  (`exhaustive_ndcg@10`), from the same encodings."""
  import time
  from neuralir_jax import data, evaluate, ir_metrics
  source = data.parse_source(task)
  if source.kind != "beir":
    raise ValueError(f"task {task!r}: a multi-vector model is evaluated on retrieval, beir:DIR[:SPLIT].")
  corpus, queries, qrels = data.load_beir(source.path, split or source.split or "test")
  doc_ids, query_ids = list(corpus), list(qrels)
  tic = time.perf_counter()
  tokens = TokenIndex.build(model.encode_document([corpus[d] for d in doc_ids], batch_size))
  q_vectors = model.encode_query([queries[q] for q in query_ids], batch_size)
  encode_seconds = time.perf_counter() - tic
  run, stats = search_run(q_vectors, tokens, doc_ids, query_ids, k, index, tokens_per_query_token)
  out = {"task": task, **ir_metrics.compute_metrics(run, qrels, evaluate.RETRIEVAL_METRICS), **stats,
         "encode_seconds": encode_seconds, "index": index, "num_docs": len(corpus)}
  if index == "scann":
    exact_run, _ = search_run(q_vectors, tokens, doc_ids, query_ids, k, "exact")
    out["exhaustive_ndcg@10"] = ir_metrics.compute_metrics(exact_run, qrels, ("ndcg@10",))["ndcg@10"]
  return out
