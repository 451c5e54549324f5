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
and split over the local devices, as `Encoder.encode` does for single texts.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from jax.sharding import NamedSharding, PartitionSpec as P

from neuralir_jax import hf_io, tokenization
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
           type_ids_BxL: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """[B, num_labels] fp32 logits of BertForSequenceClassification in eval mode: classifier(pooler([CLS]))."""
  hidden_BxLxD = model_lib.Bert(config.bert, dtype).apply({"params": params["bert"]}, ids_BxL, mask_BxL,
                                                          type_ids_BxL, deterministic=True)
  pooler = params["bert"]["pooler"]
  pooled_BxD = jnp.tanh(hidden_BxLxD[:, 0].astype(jnp.float32) @ pooler["kernel"] + pooler["bias"])
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
    self._fn = jax.jit(lambda p, ids, mask, types: logits(config, p, ids, mask, types, dtype=dtype))

  def tokenize(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(ids, token type ids) of each pair, truncated longest-first to max_length."""
    for i, pair in enumerate(pairs):
      if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
        raise TypeError(f"pair {i} is {pair!r}: pass (query, document) pairs of strings.")
    return [(e.ids, e.type_ids) for e in self._pair_tok.encode_batch([tuple(p) for p in pairs])]

  def predict_logits(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
    """[N, num_labels] logits, in input order."""
    encoded = self.tokenize(pairs)
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
