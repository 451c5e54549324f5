"""Cross-encoders (monoBERT): BERT over `[CLS] query [SEP] document [SEP]` -> a relevance score.

The model is Hugging Face's `BertForSequenceClassification`: the BERT body (`model.Bert`), its pooler
(tanh(dense([CLS]))), dropout and a linear classifier to `num_labels` logits. `CrossEncoder.predict` gives
what sentence-transformers' `CrossEncoder.predict` gives for the same directory: pairs tokenised together
(token type 0 for the query, 1 for the document), truncated longest-first to `max_length` (ST's: the
tokenizer's model_max_length capped by the position embeddings, unless sentence_bert_config.json sets
max_seq_length), and the directory's activation (config_sentence_transformers.json `activation_fn`; by
default Sigmoid for one label, Identity for more) applied to the logits.

`load_cross_encoder` reads a `BertForSequenceClassification` directory (plain Hugging Face, or the
sentence-transformers CrossEncoder layout); `CrossEncoder.save_pretrained` writes one that both load with
no missing or unexpected keys. Pairs are sorted by length, `batch_size` per call, padded to a length bucket
and split over the local devices, as `Encoder.encode` does for single texts. `predict_triples` scores
duoBERT inputs `[CLS] q [SEP] d_i [SEP] d_j [SEP]`.

Training: `CrossEncoderFamily` is the cross-encoder model family of `train.py` (`model.family=cross_encoder`):
pairs joined on device from separately tokenised texts, objectives ce_pointwise / ce_listwise / ce_pairwise;
a training workdir loads with `load_trained` and exports like a directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tokenizers
from jax.sharding import NamedSharding, PartitionSpec as P

from neuralir_jax import bi_encoder, config_lib, flops, hf_io, objectives, tokenization, workdir
from neuralir_jax import model as model_lib

ACTIVATIONS = {"torch.nn.modules.activation.Sigmoid": "sigmoid", "torch.nn.Sigmoid": "sigmoid",
               "torch.nn.modules.linear.Identity": "identity", "torch.nn.Identity": "identity"}
_ACTIVATION_PATHS = {"sigmoid": "torch.nn.modules.activation.Sigmoid",
                     "identity": "torch.nn.modules.linear.Identity"}
ENCODE_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclasses.dataclass(frozen=True)
class CrossEncoderConfig:
  bert: model_lib.BertConfig
  num_labels: int = 1
  activation: str = "sigmoid"  # Applied by predict: "sigmoid" or "identity".
  max_length: int = 512  # Tokens of a (query, document) pair, [CLS] and both [SEP]s included.


def logits(config: CrossEncoderConfig, params: dict, ids_BxL: jax.Array, mask_BxL: jax.Array,
           type_ids_BxL: jax.Array, dtype: Any = jnp.float32, rng: jax.Array | None = None,
           remat: bool = False) -> jax.Array:
  """[B, num_labels] fp32 logits of BertForSequenceClassification: classifier(dropout(pooler([CLS]))).

  Eval mode without `rng`; with it, training mode: BERT's dropout and the classifier's (hidden_dropout_prob,
  as HF applies it), drawn from rng.
  """
  deterministic = rng is None
  rngs = {} if deterministic else {"dropout": jax.random.fold_in(rng, 0)}
  hidden_BxLxD = model_lib.Bert(config.bert, dtype, remat).apply(
      {"params": params["bert"]}, ids_BxL, mask_BxL, type_ids_BxL, deterministic=deterministic, rngs=rngs)
  pooler = params["bert"]["pooler"]
  pooled_BxD = jnp.tanh(hidden_BxLxD[:, 0].astype(jnp.float32) @ pooler["kernel"] + pooler["bias"])
  if not deterministic:
    pooled_BxD = model_lib.Dropout(config.bert.hidden_dropout_prob).apply(
        {}, pooled_BxD, False, rngs={"dropout": jax.random.fold_in(rng, 1)})
  head = params["classifier"]
  return pooled_BxD @ head["kernel"] + head["bias"]


class CrossEncoder:
  """A cross-encoder: CrossEncoderConfig + params ({'bert', 'classifier'}) + the tokenizer's directory."""

  def __init__(self, config: CrossEncoderConfig, params: dict, tokenizer: tokenization.Tokenizer,
               devices: Sequence[jax.Device] | None = None, dtype: Any = jnp.float32):
    self.config = config
    self.tokenizer = tokenizer
    self.dtype = dtype
    self.devices = list(devices or jax.local_devices())
    mesh = jax.make_mesh((len(self.devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=self.devices)
    self._sharded = NamedSharding(mesh, P("data"))
    self.params = jax.device_put(params, NamedSharding(mesh, P()))
    self._pair_tok = tokenizers.Tokenizer.from_file(os.path.join(tokenizer.path, "tokenizer.json"))
    self._pair_tok.no_padding()
    self._pair_tok.enable_truncation(config.max_length, strategy="longest_first")
    self._single_tok = tokenizers.Tokenizer.from_file(os.path.join(tokenizer.path, "tokenizer.json"))
    self._single_tok.no_padding()
    self._single_tok.no_truncation()
    devices = len(self.devices)
    self._fn = jax.jit(lambda p, *rows_BxL: model_lib.map_inference_rows(  # A few rows at a time on CPU.
        lambda *rows: logits(config, p, *rows, dtype=dtype), rows_BxL, devices))

  def tokenize(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(ids, token type ids) of each pair, truncated longest-first to max_length."""
    for i, pair in enumerate(pairs):
      if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
        raise TypeError(f"pair {i} is {pair!r}: pass (query, document) pairs of strings.")
    return [(e.ids, e.type_ids) for e in self._pair_tok.encode_batch([tuple(p) for p in pairs])]

  def tokenize_triples(self, triples: Sequence[tuple[str, str, str]]) -> list[tuple[list[int], list[int]]]:
    """duoBERT inputs (ids, token types) of (query, d_i, d_j): [CLS] q [SEP] d_i [SEP] d_j [SEP], types
    0 / 1 / 1 (what `CrossEncoderFamily` trains on), the three texts truncated longest-first to max_length."""
    for i, triple in enumerate(triples):
      if len(triple) != 3 or not all(isinstance(t, str) for t in triple):
        raise TypeError(f"triple {i} is {triple!r}: pass (query, document_i, document_j) strings.")
    texts = sorted({t for triple in triples for t in triple})
    ids = dict(zip(texts, (e.ids for e in self._single_tok.encode_batch(texts))))
    out = []
    for triple in triples:
      parts = [ids[t][1:-1] for t in triple]  # Without [CLS] and [SEP].
      keep = _longest_first([len(p) for p in parts], self.config.max_length - 4)
      q, a, b = (p[:n] for p, n in zip(parts, keep))
      cls, sep = ids[triple[0]][0], ids[triple[0]][-1]
      tokens = [cls, *q, sep, *a, sep, *b, sep]
      out.append((tokens, [0] * (len(q) + 2) + [1] * (len(a) + len(b) + 2)))
    return out

  def predict_triples(self, triples: Sequence[tuple[str, str, str]], batch_size: int = 32) -> np.ndarray:
    """[N] duoBERT logits of p(d_i more relevant than d_j | q), in input order."""
    return self._logits(self.tokenize_triples(triples), batch_size)[:, 0]

  def predict_logits(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
    """[N, num_labels] logits, in input order."""
    return self._logits(self.tokenize(pairs), batch_size)

  def _logits(self, encoded: list[tuple[list[int], list[int]]], batch_size: int) -> np.ndarray:
    order = np.argsort([-len(ids) for ids, _ in encoded], kind="stable")
    out = np.zeros((len(encoded), self.config.num_labels), np.float32)
    rows = -(-batch_size // len(self.devices)) * len(self.devices)
    for start in range(0, len(order), batch_size):
      index = order[start:start + batch_size]
      longest = max(len(encoded[i][0]) for i in index)
      length = tokenization.bucket_length(longest, self.config.max_length, ENCODE_BUCKETS)
      ids = np.full((rows, length), self.tokenizer.pad_id, np.int32)
      types = np.zeros((rows, length), np.int32)
      mask = np.zeros((rows, length), np.int32)
      for row, i in enumerate(index):
        x, t = encoded[i]
        ids[row, :len(x)], types[row, :len(t)], mask[row, :len(x)] = x, t, 1
      args = jax.device_put((ids, mask, types), self._sharded)
      out[index] = np.asarray(self._fn(self.params, *args))[:len(index)]
    return out

  def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
    """Scores as sentence-transformers' CrossEncoder.predict: [N] for one label, else [N, num_labels]."""
    scores = self.predict_logits(pairs, batch_size)
    if self.config.activation == "sigmoid":
      scores = 1.0 / (1.0 + np.exp(-scores))
    return scores[:, 0] if self.config.num_labels == 1 else scores

  def save_pretrained(self, output_dir: str, overwrite: bool = False, source: str | None = None) -> None:
    save_cross_encoder_directory(output_dir, self.config, jax.device_get(self.params), self.tokenizer,
                                 overwrite=overwrite, source=source)


def _longest_first(lengths: Sequence[int], budget: int) -> list[int]:
  """Tokens kept of each part when the longest part loses one token at a time until the sum fits budget."""
  keep = list(lengths)
  excess = sum(keep) - max(budget, 0)
  while excess > 0:
    ordered = sorted(set(keep), reverse=True)
    top = ordered[0]
    second = ordered[1] if len(ordered) > 1 else 0
    longest = [i for i, n in enumerate(keep) if n == top]
    cut = min(excess, (top - second) * len(longest))
    level, extra = divmod(cut, len(longest))
    for rank, i in enumerate(longest):
      keep[i] = top - level - (1 if rank < extra else 0)
    excess -= cut
  return keep


# --- Directories ------------------------------------------------------------------------------------------


def is_cross_encoder_directory(path: str) -> bool:
  """Whether `path/config.json` names a sequence-classification architecture."""
  file = os.path.join(path, "config.json")
  if not os.path.isfile(file):
    return False
  hf = hf_io._read_json(file)
  return any(str(a).endswith("ForSequenceClassification") for a in hf.get("architectures") or ())


def _num_labels(hf: dict, file: str) -> int:
  if "num_labels" in hf:
    return int(hf["num_labels"])
  if isinstance(hf.get("id2label"), dict) and hf["id2label"]:
    return len(hf["id2label"])
  raise hf_io.ModelDirectoryError(f"{file}: neither num_labels nor id2label; a cross-encoder's config.json "
                                  "says how many labels its classifier has.")


def _activation(path: str, hf: dict, num_labels: int) -> str:
  file = os.path.join(path, "config_sentence_transformers.json")
  st = hf_io._read_json(file, required=False) or {}
  name = st.get("activation_fn") or hf.get("sentence_transformers", {}).get("activation_fn") \
      or hf.get("sbert_ce_default_activation_function")
  if name is None:
    return "sigmoid" if num_labels == 1 else "identity"
  if name not in ACTIVATIONS:
    raise hf_io.ModelDirectoryError(f"{file}: activation_fn={name!r} is not supported; use one of "
                                    f"{sorted(set(_ACTIVATION_PATHS.values()))}.")
  return ACTIVATIONS[name]


def _max_length(path: str, bert: model_lib.BertConfig) -> int:
  st = hf_io._read_json(os.path.join(path, "sentence_bert_config.json"), required=False) or {}
  if st.get("max_seq_length"):
    return min(int(st["max_seq_length"]), bert.max_positions)
  tok = hf_io._read_json(os.path.join(path, "tokenizer_config.json"), required=False) or {}
  limit = tok.get("model_max_length")
  if isinstance(limit, (int, float)) and 0 < limit < 1e9:
    return min(int(limit), bert.max_positions)
  return bert.max_positions


def load_cross_encoder_directory(path: str) -> tuple[CrossEncoderConfig, dict, tokenization.Tokenizer]:
  """(config, params, tokenizer) of a BertForSequenceClassification directory; one-line errors."""
  path = os.fspath(path)
  file = os.path.join(path, "config.json")
  bert = hf_io.read_bert_config(path)
  hf = hf_io._read_json(file)
  num_labels = _num_labels(hf, file)
  state, source = hf_io.read_state_dict(path)
  head = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("classifier.")}
  if set(head) != {"weight", "bias"}:
    raise hf_io.ModelDirectoryError(f"{source}: no classifier.weight / classifier.bias; a cross-encoder "
                                    "directory holds a BertForSequenceClassification checkpoint.")
  if head["weight"].shape != (num_labels, bert.hidden_size):
    raise hf_io.ModelDirectoryError(f"{source}: classifier.weight is {tuple(head['weight'].shape)}, expected "
                                    f"({num_labels}, {bert.hidden_size}) from {file}.")
  if not any(k.endswith("pooler.dense.weight") for k in state):
    raise hf_io.ModelDirectoryError(f"{source}: no bert.pooler.dense.*; the classifier reads the pooler's "
                                    "output, so a cross-encoder checkpoint must have it.")
  params = hf_io.hf_state_dict_to_params(state, bert, source)
  params["classifier"] = {"kernel": np.ascontiguousarray(np.asarray(head["weight"], np.float32).T),
                          "bias": np.asarray(head["bias"], np.float32)}
  config = CrossEncoderConfig(bert, num_labels, _activation(path, hf, num_labels), _max_length(path, bert))
  return config, params, tokenization.Tokenizer(path, max_length=config.max_length)


def load_cross_encoder(path: str, **kwargs) -> CrossEncoder:
  config, params, tokenizer = load_cross_encoder_directory(path)
  return CrossEncoder(config, params, tokenizer, **kwargs)


def save_cross_encoder_directory(output_dir: str, config: CrossEncoderConfig, params: dict,
                                 tokenizer: tokenization.Tokenizer, overwrite: bool = False,
                                 source: str | None = None) -> None:
  """Writes a directory that `BertForSequenceClassification.from_pretrained` and sentence-transformers'
  `CrossEncoder` load with no missing or unexpected keys (weights as `bert.*` + `classifier.*`)."""
  import safetensors.numpy
  output_dir = os.fspath(output_dir)
  hf_io.check_export_directory(output_dir, overwrite)
  os.makedirs(output_dir, exist_ok=True)
  hf_io._write_json(os.path.join(output_dir, hf_io.EXPORT_MARKER), {
      "exported_by": f"neuralir_jax {hf_io._version('neuralir_jax', 'unknown')}", "source": source,
      "model": "cross-encoder"})
  state = {f"bert.{k}": v for k, v in hf_io.params_to_hf_state_dict(params, config.bert).items()}
  head = jax.device_get(params["classifier"])
  state["classifier.weight"] = np.ascontiguousarray(np.asarray(head["kernel"], np.float32).T)
  state["classifier.bias"] = np.asarray(head["bias"], np.float32)
  safetensors.numpy.save_file(state, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
  hf = config.bert.to_hf()
  labels = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
  hf.update(architectures=["BertForSequenceClassification"], num_labels=config.num_labels, id2label=labels,
            label2id={v: int(k) for k, v in labels.items()}, dtype="float32",
            transformers_version=hf_io._version("transformers", "5.0.0"))
  hf_io._write_json(os.path.join(output_dir, "config.json"), hf)
  if os.path.abspath(tokenizer.path) != os.path.abspath(output_dir):
    tokenizer.save(output_dir)
  hf_io._write_json(os.path.join(output_dir, "config_sentence_transformers.json"), {
      "__version__": {"sentence_transformers": hf_io._version("sentence-transformers", "5.0.0"),
                      "transformers": hf_io._version("transformers", "5.0.0"),
                      "pytorch": hf_io._version("torch", "2.0.0")},
      "activation_fn": _ACTIVATION_PATHS[config.activation], "model_type": "CrossEncoder", "prompts": {},
      "default_prompt_name": None})
  # sentence-transformers 6.x's CrossEncoder layout: one Transformer module over the whole directory.
  hf_io._write_json(os.path.join(output_dir, "modules.json"), [
      {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}])
  hf_io._write_json(os.path.join(output_dir, "sentence_bert_config.json"), {
      "transformer_task": "sequence-classification",
      "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
      "module_output_name": "scores", "max_seq_length": config.max_length})
  with open(os.path.join(output_dir, "README.md"), "w") as f:
    f.write(f"# {os.path.basename(os.path.abspath(output_dir))}\n\nA cross-encoder (BERT, "
            f"{config.bert.num_hidden_layers} layers, hidden {config.bert.hidden_size}) exported by neuralir_jax: "
            f"`CrossEncoder(dir).predict([(query, document)])` gives {config.activation}(logit); "
            "`BertForSequenceClassification.from_pretrained(dir)` gives the logits.\n")


# --- Training (the cross-encoder model family) ------------------------------------------------------------


def concat_texts(first: tuple[jax.Array, jax.Array, jax.Array], second: tuple[jax.Array, jax.Array],
                 pad_id: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """[CLS] a [SEP] + [CLS] b [SEP] -> [CLS] a [SEP] b [SEP], on device, as a BERT tokenizer encodes the pair.

  first: (ids, mask, token types) [..., La]; second: (ids, mask) [..., Lb] of separately tokenised,
  right-padded texts (each starting with [CLS]); leading dims broadcast. Returns (ids, mask, types)
  [..., La + Lb - 1], right-padded: a's tokens, then b's without its [CLS] as token type 1.
  """
  a_ids, a_mask, a_types = first
  b_ids, b_mask = second
  shape = jnp.broadcast_shapes(a_ids.shape[:-1], b_ids.shape[:-1])
  a_ids, a_mask, a_types = (jnp.broadcast_to(x, shape + x.shape[-1:]) for x in (a_ids, a_mask, a_types))
  b_ids, b_mask = (jnp.broadcast_to(x, shape + x.shape[-1:]) for x in (b_ids, b_mask))
  len_a, len_b = a_ids.shape[-1], b_ids.shape[-1]
  p_L = jnp.arange(len_a + len_b - 1)
  count_a = a_mask.sum(-1, keepdims=True)
  in_a = p_L < count_a
  j = p_L - count_a + 1  # Position in b (1 = its first token after [CLS]).
  j_clipped = jnp.clip(j, 0, len_b - 1)
  in_b = ~in_a & (j < len_b) & (jnp.take_along_axis(b_mask, j_clipped, axis=-1) > 0)
  i_clipped = jnp.broadcast_to(jnp.minimum(p_L, len_a - 1), in_a.shape)
  ids = jnp.where(in_a, jnp.take_along_axis(a_ids, i_clipped, axis=-1),
                  jnp.where(in_b, jnp.take_along_axis(b_ids, j_clipped, axis=-1), pad_id))
  types = jnp.where(in_a, jnp.take_along_axis(a_types, i_clipped, axis=-1), jnp.where(in_b, 1, 0))
  return ids.astype(jnp.int32), (in_a | in_b).astype(jnp.int32), types.astype(jnp.int32)


def _bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean binary cross-entropy of logits against targets in [0, 1] (log-sigmoid form, stable)."""
  return jnp.mean(-(targets * jax.nn.log_sigmoid(logits) + (1.0 - targets) * jax.nn.log_sigmoid(-logits)))


class CrossEncoderFamily:
  """The cross-encoder as a model family of the training loop (the contract of `bi_encoder.py`).

  Records are (anchor, positive, negative[k]) tuples, e.g. `neuralir mine` output, or (sentence1,
  sentence2, score) STS pairs. Each column is tokenised alone by the shared input pipeline (the anchor with
  the query length, documents with the document length) and the pairs are joined on device
  (`concat_texts`): [CLS] q [SEP] d [SEP] per (query, document), token types 0 / 1; duoBERT's
  [CLS] q [SEP] d_i [SEP] d_j [SEP] types 0 / 1 / 1. The model's "embedding" of a pair is its logit, so
  GradCache chunks pairs as it chunks texts. Objectives (local means; every pair belongs to one query, so
  there are no cross-device candidates):
    ce_pointwise  BCE: the positive 1, each hard negative 0 (or STS pairs: target score / 5);
    ce_listwise   softmax cross-entropy over [positive, negatives] (tevatron's reranker loss);
    ce_pairwise   BCE on (q, p, n_j) -> 1 and (q, n_j, p) -> 0 for every hard negative n_j.
  The token types travel in the mask: 0 padding, 1 + type otherwise.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    bert = model_lib.encoder_config(config.model).bert
    self.model_config = CrossEncoderConfig(bert, 1, "sigmoid", trained_max_length(config, bert))
    self.dtype = bi_encoder.DTYPES[config.model.dtype]
    self.remat = bool(config.model.remat)
    self.deterministic = config.model.dropout_rate == 0
    self.objectives = objectives.enabled(config)
    self._pairs = bool({"ce_pointwise", "ce_listwise"} & set(self.objectives))  # (q, d) inputs needed.
    self.has_nli_head = False
    self.queue_size, self.queue_dim = 0, 0
    self.pad_id = 0  # Joined inputs' padding ids: masked, so any id serves.

  def init_params(self, rng: jax.Array, encoder_params: Any = None) -> dict:
    """{'encoder': {'bert', 'classifier'}}: the pretrained body (and head, from a cross-encoder directory),
    else random; a new classifier is N(0, initializer_range), as HF initialises it."""
    body_rng, head_rng = jax.random.split(rng)
    if encoder_params is None:
      encoder_params = model_lib.init_params(model_lib.EncoderConfig(self.model_config.bert), body_rng)
    params = {"bert": encoder_params["bert"]}
    if "classifier" in encoder_params:
      params["classifier"] = encoder_params["classifier"]
    else:
      hidden = self.model_config.bert.hidden_size
      params["classifier"] = {
          "kernel": self.model_config.bert.initializer_range * jax.random.normal(head_rng, (hidden, 1)),
          "bias": jnp.zeros((1,), jnp.float32)}
    return {"encoder": params}

  def text_columns(self, keys: set[str]) -> tuple[str, ...]:
    cols = {k.rpartition("_")[0] for k in keys if k.endswith("_ids")} | set(keys)
    if {"sentence1", "sentence2"} <= cols and "score" in keys:
      if set(self.objectives) != {"ce_pointwise"}:
        raise ValueError("STS pairs (sentence1, sentence2, score) train objectives.ce_pointwise only; set the "
                         "other ce_* weights to 0, or train on triples with negatives.")
      return ("sentence1", "sentence2")
    if not {"anchor", "positive", "negative"} <= cols:
      raise ValueError(f"cross-encoder objectives need (anchor, positive, negative) records (a triples: file "
                       f"with negatives, e.g. `neuralir mine` output, data.view=triplets) or STS pairs; the data "
                       f"has {sorted(keys)}.")
    return ("anchor", "positive", "negative")

  def inputs(self, batch: dict, num_shards: int = 1):
    """({"pairs": (ids, mask) [B * n, L]}, plus "triples" with ce_pairwise) and unstack ->
    {"pairs": logits [B, n], "triples": [B, 2k]}; n = 1 + k (or 1 for STS pairs)."""
    del num_shards  # Every row is one example's own pair: no cross-device layout.
    if "sentence1_ids" in batch:
      query = (batch["sentence1_ids"], batch["sentence1_mask"])
      docs_BxRxL = (batch["sentence2_ids"][:, None], batch["sentence2_mask"][:, None])
    else:
      query = (batch["anchor_ids"], batch["anchor_mask"])
      ids, mask, _ = objectives.stack_texts(batch, ("positive", "negative"))
      docs_BxRxL = (ids, mask)
    q_ids, q_mask = query[0][:, None], query[1][:, None]
    first = (q_ids, q_mask, jnp.zeros_like(q_ids))
    batch_size, num_docs = docs_BxRxL[0].shape[:2]
    texts = {}
    if self._pairs:
      ids, mask, types = concat_texts(first, docs_BxRxL, self.pad_id)
      texts["pairs"] = (ids.reshape(batch_size * num_docs, -1),
                        (mask * (1 + types)).reshape(batch_size * num_docs, -1))
    if "ce_pairwise" in self.objectives:
      pos = tuple(x[:, :1] for x in docs_BxRxL)
      neg = tuple(x[:, 1:] for x in docs_BxRxL)
      k = num_docs - 1
      qp = concat_texts(first, pos, self.pad_id)  # [B, 1, Lq + Ld - 1]
      qn = concat_texts(first, neg, self.pad_id)  # [B, k, ...]
      qpn = concat_texts(qp, neg, self.pad_id)  # (q, p, n_j): [B, k, Lq + 2 Ld - 2]
      qnp = concat_texts(qn, pos, self.pad_id)  # (q, n_j, p)
      ids, mask, types = (jnp.concatenate([a, b], axis=1) for a, b in zip(qpn, qnp))
      texts["triples"] = (ids.reshape(batch_size * 2 * k, -1), (mask * (1 + types)).reshape(batch_size * 2 * k, -1))

    def unstack(logits: dict) -> dict:
      return {name: value.reshape(batch_size, -1) for name, value in logits.items()}

    return texts, unstack

  def embed_fn(self, group: str):
    del group

    def embed(params, ids_NxL, typed_mask_NxL, rng):
      mask = (typed_mask_NxL > 0).astype(jnp.int32)
      types = jnp.maximum(typed_mask_NxL - 1, 0)
      return logits(self.model_config, params, ids_NxL, mask, types, self.dtype,
                    None if self.deterministic else rng, self.remat)

    return embed

  def loss(self, rest: dict, columns: dict, aux: dict, axis_name: str | None) -> tuple[jax.Array, dict]:
    del rest, axis_name  # No params outside the model; per-query losses need no other device.
    metrics, total = {}, 0.0
    s_BxN = columns.get("pairs")
    if "ce_pointwise" in self.objectives:
      if s_BxN.shape[1] == 1:  # STS pairs: one pair per example, its gold score as a soft label.
        targets = jnp.clip(aux["score"][:, None] / 5.0, 0.0, 1.0)
      else:
        targets = jnp.zeros_like(s_BxN).at[:, 0].set(1.0)
      metrics["loss/ce_pointwise"] = _bce(s_BxN, targets)
    if "ce_listwise" in self.objectives:
      log_p = jax.nn.log_softmax(s_BxN, axis=-1)
      metrics["loss/ce_listwise"] = -jnp.mean(log_p[:, 0])
    if s_BxN is not None and s_BxN.shape[1] > 1:
      metrics["positive_first"] = jnp.mean((jnp.argmax(s_BxN, axis=-1) == 0).astype(jnp.float32))
    if "ce_pairwise" in self.objectives:
      t_Bx2K = columns["triples"]
      k = t_Bx2K.shape[1] // 2
      targets = jnp.concatenate([jnp.ones((t_Bx2K.shape[0], k)), jnp.zeros((t_Bx2K.shape[0], k))], axis=1)
      metrics["loss/ce_pairwise"] = _bce(t_Bx2K, targets)
      metrics["pairwise_accuracy"] = jnp.mean(((t_Bx2K > 0) == (targets > 0)).astype(jnp.float32))
    for name, weight in self.objectives.items():
      total = total + weight * metrics[f"loss/{name}"]
    return total, metrics

  def joined_lengths(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
    """(real token count of every joined input, token positions the model computes) of a numpy batch."""
    if "sentence1_mask" in batch:
      q_mask, d_mask = batch["sentence1_mask"], batch["sentence2_mask"][:, None]
    else:
      q_mask = batch["anchor_mask"]
      d_mask = np.concatenate([batch["positive_mask"][:, None],
                               batch["negative_mask"].reshape(len(q_mask), -1, batch["negative_mask"].shape[-1])],
                              axis=1)
    q, docs = q_mask.sum(-1), d_mask.sum(-1)
    len_q, len_d = q_mask.shape[-1], d_mask.shape[-1]
    lengths, positions = [np.zeros(0, np.int64)], 0
    if self._pairs:
      lengths.append((q[:, None] + docs - 1).reshape(-1))
      positions += docs.size * (len_q + len_d - 1)
    if "ce_pairwise" in self.objectives:
      triples = (q[:, None] + docs[:, :1] + docs[:, 1:] - 2).reshape(-1)
      lengths += [triples, triples]
      positions += 2 * triples.size * (len_q + 2 * len_d - 2)
    return np.concatenate(lengths), int(positions)

  def token_counts(self, batch: dict[str, np.ndarray]) -> tuple[int, int]:
    """(real tokens, positions computed) of the joined inputs, for the throughput meter."""
    lengths, positions = self.joined_lengths(batch)
    return int(lengths.sum()), positions

  def train_flops(self, batch: dict[str, np.ndarray], num_devices: int) -> float:
    """Model FLOPs of one global step at the joined inputs' real lengths (query + document - 1 tokens each)."""
    del num_devices
    lengths, _ = self.joined_lengths(batch)
    return flops.encoder_flops(self.model_config.bert, lengths) * jax.process_count()

  def encoder(self, params: dict, tokenizer: tokenization.Tokenizer) -> CrossEncoder:
    return CrossEncoder(self.model_config, params["encoder"], tokenizer)


def trained_max_length(config, bert: model_lib.BertConfig) -> int:
  """The longest input a trained cross-encoder scores: its training lengths joined (query + document - 1;
  duoBERT's query + 2 documents - 2 when it trained ce_pairwise)."""
  query = config.data.query_max_length or config.data.max_length
  document = config.data.document_max_length or config.data.max_length
  documents = 2 if config.objectives.get("ce_pairwise") else 1
  return min(query + documents * (document - 1), bert.max_positions)


def resolve_model(config) -> tuple[Any, tokenization.Tokenizer, Any]:
  """(config, tokenizer, pretrained params or None) for a cross-encoder's `model.init`: a cross-encoder
  directory (body and classifier), any BERT directory such as "minilm" (body; a new classifier), or
  "random" (the config's architecture)."""
  path = config_lib.resolve_model_path(config.model.init)
  if config.model.init == "random" or not is_cross_encoder_directory(path):
    return bi_encoder.resolve_model(config)
  if tuple(config.model.layers):
    raise ValueError(f"model.layers={tuple(config.model.layers)} with the cross-encoder directory "
                     f"model.init={config.model.init!r}: layers are taken from bi-encoder (BERT) directories only; "
                     "set --config.model.layers='()'.")
  ce_config, params, tokenizer = load_cross_encoder_directory(path)
  if ce_config.num_labels != 1:
    raise ValueError(f"model.init={config.model.init!r} has {ce_config.num_labels} labels; cross-encoder "
                     "training needs a one-logit relevance head (num_labels=1).")
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.bert = ml_collections.ConfigDict(dataclasses.asdict(ce_config.bert))
  return config, tokenizer, params


def load_trained(path: str, step: int | None = None, **kwargs) -> CrossEncoder:
  """A CrossEncoder from a cross-encoder training workdir's checkpoint (latest or `step`)."""
  trained = workdir.read(path, step)
  bert = model_lib.encoder_config(trained.config["model"]).bert
  config = CrossEncoderConfig(bert, 1, "sigmoid",
                              trained_max_length(ml_collections.ConfigDict(trained.config), bert))
  return CrossEncoder(config, trained.params["encoder"], tokenization.Tokenizer(trained.tokenizer_dir), **kwargs)


def load_any(path: str, step: int | None = None, flag: str = "--model", one_label: bool = False) -> CrossEncoder:
  """A CrossEncoder from a cross-encoder directory or a cross-encoder training workdir (latest or `step`);
  one_label: refuse a classifier with several labels (relevance teachers and duoBERT give one logit).
  Errors name `flag`, the option that gave the path."""
  resolved = config_lib.resolve_model_path(path)
  if not os.path.isdir(resolved):
    raise FileNotFoundError(f"{flag} {path}: no such directory; pass a cross-encoder directory or workdir.")
  if is_cross_encoder_workdir(resolved):
    return load_trained(resolved, step)
  if step is not None:
    raise ValueError(f"{path} is a model directory, not a training workdir: drop --step.")
  if not is_cross_encoder_directory(resolved):
    raise ValueError(f"{flag} {path}: {os.path.join(resolved, 'config.json')} names no "
                     "*ForSequenceClassification architecture; pass a cross-encoder directory.")
  model = load_cross_encoder(resolved)
  if one_label and model.config.num_labels != 1:
    raise ValueError(f"{flag} {path}: its classifier has {model.config.num_labels} labels; {flag} needs a "
                     "relevance model with one logit (num_labels=1).")
  return model


def is_cross_encoder(path: str) -> bool:
  """Whether `path` is a cross-encoder: a sequence-classification directory or a cross-encoder workdir."""
  return is_cross_encoder_directory(path) or is_cross_encoder_workdir(path)


def is_cross_encoder_workdir(path: str) -> bool:
  """Whether `path` is a training workdir of a cross-encoder (its config's model.family)."""
  if not workdir.is_workdir(path):
    return False
  config_file = os.path.join(path, workdir.CONFIG)
  if not os.path.isfile(config_file):
    return False
  with open(config_file) as f:
    return json.load(f).get("model", {}).get("family") == "cross_encoder"
