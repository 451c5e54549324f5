"""Hugging Face / sentence-transformers directories <-> (EncoderConfig, Flax params, Tokenizer).

`load_hf_directory` reads a BERT-family checkpoint directory (`config.json`, `model.safetensors` or a
`pytorch_model.bin` loaded with `weights_only=True`, the fast tokenizer, and the sentence-transformers
files that say how tokens are pooled) into our params tree; `read_encode_settings` reads the prompts,
default prompt and truncate_dim of `config_sentence_transformers.json`. `save_hf_directory` writes the
inverse: a directory that `transformers.BertModel.from_pretrained` loads with no missing or unexpected keys
and that `sentence_transformers.SentenceTransformer` loads into the same sentence encoder (prompts, so
`encode_query` / `encode_document`, and truncate_dim included), plus a marker file
(`neuralir_export.json`) by which a later export recognises the directory as its own to overwrite. Every
problem with a directory is reported as one `ModelDirectoryError` line naming the file or key and what to
change.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from typing import Any, Mapping

import jax
import numpy as np

from neuralir_jax import model as model_lib
from neuralir_jax import tokenization

# Post-LN BERT with absolute positions (BERT, MiniLM, BGE, E5, ...), and RoBERTa / XLM-RoBERTa (the usual
# multilingual students), whose positions start after the padding index (`BertConfig.position_offset`).
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_BUFFER_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")  # Not parameters; skipped.
_BODY_PREFIXES = ("embeddings.", "encoder.", "pooler.")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
DEFAULT_MAX_SEQ_LENGTH = 512
EXPORT_MARKER = "neuralir_export.json"  # Written by every export; an export may overwrite a directory with it.


class ModelDirectoryError(ValueError):
  """A model directory that cannot be read as a BERT sentence encoder; the message says what to fix."""


# ----------------------------------------------------------------------------------------------------------
# Key mapping.


def _key_map(num_layers: int) -> dict[str, tuple[tuple[str, ...], bool]]:
  """HF state-dict name -> (path in our params tree, whether the tensor is a transposed Dense kernel)."""
  out: dict[str, tuple[tuple[str, ...], bool]] = {}

  def dense(hf: str, ours: tuple[str, ...]):
    out[f"{hf}.weight"] = (ours + ("kernel",), True)
    out[f"{hf}.bias"] = (ours + ("bias",), False)

  def norm(hf: str, ours: tuple[str, ...]):
    out[f"{hf}.weight"] = (ours + ("scale",), False)
    out[f"{hf}.bias"] = (ours + ("bias",), False)

  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    out[f"embeddings.{name}.weight"] = (("bert", name, "embedding"), False)
  norm("embeddings.LayerNorm", ("bert", "embeddings_layer_norm"))
  for i in range(num_layers):
    hf, ours = f"encoder.layer.{i}", ("bert", f"layer_{i}")
    for name in ("query", "key", "value"):
      dense(f"{hf}.attention.self.{name}", ours + (name,))
    dense(f"{hf}.attention.output.dense", ours + ("attention_output",))
    norm(f"{hf}.attention.output.LayerNorm", ours + ("attention_layer_norm",))
    dense(f"{hf}.intermediate.dense", ours + ("intermediate",))
    dense(f"{hf}.output.dense", ours + ("output",))
    norm(f"{hf}.output.LayerNorm", ours + ("output_layer_norm",))
  dense("pooler.dense", ("bert", "pooler"))
  return out


def _canonical_key(key: str) -> str:
  """Renames TF-era LayerNorm names (gamma/beta) as transformers does on load."""
  key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
  return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)


def _body_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Keeps the BertModel tensors: strips a `bert.` (or `roberta.`) prefix, drops heads (`cls.*`, `lm_head.*`,
  classifiers) and buffers."""
  for prefix in ("bert.", "roberta."):
    if any(k.startswith(prefix) for k in state):
      state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
  return {_canonical_key(k): v for k, v in state.items()
          if k.startswith(_BODY_PREFIXES) and k not in _BUFFER_KEYS}


def _set_path(tree: dict, path: tuple[str, ...], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _get_path(tree: dict, path: tuple[str, ...]):
  for name in path:
    tree = tree[name]
  return tree


def hf_state_dict_to_params(state: dict[str, np.ndarray], bert: model_lib.BertConfig,
                            source: str = "weights") -> dict:
  """Maps a HF `BertModel` (or `BertFor*`) state dict to our params tree, checking every key and shape.

  A missing pooler is filled with a fresh init (sentence encoders do not use it; it is kept for export).
  """
  state = _body_state_dict(state)
  key_map = _key_map(bert.num_hidden_layers)
  shapes = _expected_shapes(bert)
  unexpected = sorted(set(state) - set(key_map))
  if unexpected:
    raise ModelDirectoryError(
        f"{source}: unexpected keys {_short_list(unexpected)} for a {bert.num_hidden_layers}-layer BERT with "
        "absolute positions; is config.json the one saved with these weights?")
  missing = sorted(k for k in key_map if k not in state and not k.startswith("pooler."))
  if missing:
    raise ModelDirectoryError(f"{source}: missing keys {_short_list(missing)}; the weights are incomplete "
                              "or belong to another architecture.")
  mismatched = []
  for key, value in state.items():
    path, transpose = key_map[key]
    want = tuple(_get_path(shapes, path).shape)
    want = want[::-1] if transpose else want
    if tuple(value.shape) != want:
      mismatched.append(f"{key}: expected {want}, got {tuple(value.shape)}")
  if mismatched:
    raise ModelDirectoryError(f"{source}: weight shapes do not match config.json: " + "; ".join(mismatched))
  params: dict = {}
  for key, (path, transpose) in key_map.items():
    if key in state:
      value = np.asarray(state[key], np.float32)
      _set_path(params, path, np.ascontiguousarray(value.T) if transpose else value)
  if "pooler" not in params["bert"]:
    rng = np.random.default_rng(0)
    params["bert"]["pooler"] = {
        "kernel": rng.normal(0.0, bert.initializer_range, (bert.hidden_size,) * 2).astype(np.float32),
        "bias": np.zeros((bert.hidden_size,), np.float32)}
  return params


def params_to_hf_state_dict(params: dict, bert: model_lib.BertConfig) -> dict[str, np.ndarray]:
  """Our params tree -> a `BertModel` state dict (HF names, torch layout, fp32, contiguous)."""
  out = {}
  for key, (path, transpose) in _key_map(bert.num_hidden_layers).items():
    try:
      value = np.asarray(jax.device_get(_get_path(params, path)), np.float32)
    except KeyError:
      raise ModelDirectoryError(f"params: no {'/'.join(path)} (for {key}); pass the full encoder params "
                                "({'bert': ...}).") from None
    out[key] = np.ascontiguousarray(value.T if transpose else value)
  return out


def _expected_shapes(bert: model_lib.BertConfig) -> dict:
  cfg = model_lib.EncoderConfig(bert=bert)
  return jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.key(0)))


def _short_list(keys: list[str], limit: int = 20) -> str:
  more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


# ----------------------------------------------------------------------------------------------------------
# Reading a directory.


def _read_json(path: str, required: bool = True) -> Any:
  if not os.path.isfile(path):
    if required:
      raise ModelDirectoryError(f"{path}: not found; a model directory needs a Hugging Face config.json.")
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ModelDirectoryError(f"{path}: not valid JSON ({e}).") from None


def read_bert_config(path: str) -> model_lib.BertConfig:
  """BertConfig from `path/config.json`, refusing architectures that do not map onto our BERT."""
  file = os.path.join(path, "config.json")
  hf = _read_json(file)
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ModelDirectoryError(f"{file}: model_type={model_type!r} is not supported; supported model types: "
                              f"{', '.join(SUPPORTED_MODEL_TYPES)}.")
  positions = hf.get("position_embedding_type", "absolute")
  if positions != "absolute":
    raise ModelDirectoryError(f"{file}: position_embedding_type={positions!r} is not supported; only "
                              "'absolute' positions are.")
  if hf.get("hidden_act", "gelu") != "gelu":
    raise ModelDirectoryError(f"{file}: hidden_act={hf.get('hidden_act')!r} is not supported; only exact "
                              "'gelu' is.")
  bert = model_lib.BertConfig.from_hf(hf)
  if bert.hidden_size % bert.num_attention_heads:
    raise ModelDirectoryError(f"{file}: hidden_size={bert.hidden_size} is not a multiple of "
                              f"num_attention_heads={bert.num_attention_heads}.")
  return bert


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], str]:
  """(state dict as numpy, the file it came from). Never unpickles: .bin goes through weights_only."""
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  binary = os.path.join(path, "pytorch_model.bin")
  if os.path.isfile(single):
    return _load_safetensors(single), single
  if os.path.isfile(index):
    shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
    state = {}
    for shard in shards:
      state.update(_load_safetensors(os.path.join(path, shard)))
    return state, index
  if os.path.isfile(binary):
    return _load_torch_bin(binary), binary
  raise ModelDirectoryError(f"{path}: no weights; looked for {', '.join(_WEIGHT_FILES)}.")


def _load_safetensors(file: str) -> dict[str, np.ndarray]:
  import safetensors.numpy
  if not os.path.isfile(file):
    raise ModelDirectoryError(f"{file}: not found; the index lists it as a weight shard.")
  try:
    return dict(safetensors.numpy.load_file(file))
  except Exception as e:  # safetensors raises SafetensorError (and others) for a truncated or corrupt file.
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    raise ModelDirectoryError(f"{file}: cannot be read as safetensors ({reason}); the file is truncated or "
                              "corrupt: copy or export it again.") from None


def _load_torch_bin(file: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise ModelDirectoryError(f"{file}: reading .bin weights needs torch; install it or convert the "
                              "directory to model.safetensors.") from None
  try:
    state = torch.load(file, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError and others for unsafe or corrupt files.
    raise ModelDirectoryError(f"{file}: cannot be read with torch.load(weights_only=True): "
                              f"{str(e).splitlines()[0]}") from None
  if not isinstance(state, dict):
    raise ModelDirectoryError(f"{file}: holds a {type(state).__name__}, not a state dict.")
  return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "detach")}


def read_pooling(path: str) -> tuple[str, bool]:
  """(pooling mode, normalize) from the sentence-transformers files; a plain HF dir -> ('mean', False)."""
  modules = _read_json(os.path.join(path, "modules.json"), required=False) or []
  pooling_dir, normalize = "1_Pooling", False
  for module in modules:
    kind = module.get("type", "")
    # Legacy names (sentence_transformers.models.Pooling) and 6.x ones (....modules.pooling.Pooling).
    if kind.endswith(".Pooling"):
      pooling_dir = module.get("path", pooling_dir)
    elif kind.endswith(".Normalize"):
      normalize = True
    elif not kind.endswith(".Transformer"):
      raise ModelDirectoryError(f"{os.path.join(path, 'modules.json')}: module {kind!r} is not supported; "
                                "only Transformer, Pooling and Normalize are.")
  file = os.path.join(path, pooling_dir, "config.json")
  cfg = _read_json(file, required=False)
  if cfg is None:
    return "mean", normalize
  if "pooling_mode" in cfg:
    modes = cfg["pooling_mode"]
    modes = [modes] if isinstance(modes, str) else list(modes)
  else:
    modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if cfg.get(key)]
  if len(modes) != 1 or modes[0] not in model_lib.POOLING_MODES:
    raise ModelDirectoryError(f"{file}: pooling {modes} is not supported; use exactly one of "
                              f"{model_lib.POOLING_MODES}.")
  return modes[0], normalize


def read_max_seq_length(path: str, bert: model_lib.BertConfig) -> int:
  """As sentence-transformers: sentence_bert_config.json, else the tokenizer's model_max_length, else 512."""
  st = _read_json(os.path.join(path, "sentence_bert_config.json"), required=False) or {}
  length = st.get("max_seq_length")
  if length is None:
    tok = _read_json(os.path.join(path, "tokenizer_config.json"), required=False) or {}
    length = tok.get("model_max_length")
    if not isinstance(length, int) or length > 100_000:  # HF writes a huge sentinel when it is unset.
      length = DEFAULT_MAX_SEQ_LENGTH
  return int(min(length, bert.max_positions))


def read_encode_settings(path: str, config: model_lib.EncoderConfig) -> dict[str, Any]:
  """`Encoder` keyword arguments from `config_sentence_transformers.json`: prompts, default_prompt_name and
  truncate_dim, as SentenceTransformer reads them ({} prompts etc. when the file is absent)."""
  file = os.path.join(path, "config_sentence_transformers.json")
  st = _read_json(file, required=False) or {}
  prompts = st.get("prompts") or {}
  if not isinstance(prompts, dict) or not all(
      isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in prompts.items()):
    raise ModelDirectoryError(f"{file}: prompts must map prompt names to prompt texts (strings), got "
                              f"{prompts!r}.")
  prompts = {name: text or "" for name, text in prompts.items()}
  default = st.get("default_prompt_name")
  if default is not None and default not in prompts and default not in ("query", "document"):
    raise ModelDirectoryError(f"{file}: default_prompt_name={default!r} is not one of its prompts "
                              f"{list(prompts)}.")
  truncate_dim = st.get("truncate_dim")
  hidden = config.bert.hidden_size
  if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                   or not 1 <= truncate_dim <= hidden):
    raise ModelDirectoryError(f"{file}: truncate_dim={truncate_dim!r} must be an integer from 1 to {hidden}.")
  pooling_file = os.path.join(path, _pooling_dir(path), "config.json")
  if any(prompts.values()) and (_read_json(pooling_file, required=False) or {}).get("include_prompt") is False:
    raise ModelDirectoryError(f"{pooling_file}: include_prompt=false (prompt tokens left out of pooling) is not "
                              "supported; set it to true.")
  return {"prompts": prompts, "default_prompt_name": default, "truncate_dim": truncate_dim}


def _pooling_dir(path: str) -> str:
  modules = _read_json(os.path.join(path, "modules.json"), required=False) or []
  return next((m.get("path", "1_Pooling") for m in modules if m.get("type", "").endswith(".Pooling")),
              "1_Pooling")


def load_hf_directory(path: str) -> tuple[model_lib.EncoderConfig, dict, tokenization.Tokenizer]:
  """Reads a HF / sentence-transformers BERT directory: (EncoderConfig, params as numpy fp32, Tokenizer)."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise ModelDirectoryError(f"{path}: not a directory; pass a Hugging Face model directory.")
  bert = read_bert_config(path)
  pooling, normalize = read_pooling(path)
  config = model_lib.EncoderConfig(bert=bert, pooling=pooling, normalize=normalize,
                                   max_seq_length=read_max_seq_length(path, bert))
  state, source = read_state_dict(path)
  params = hf_state_dict_to_params(state, bert, source)
  tokenizer = tokenization.Tokenizer(path, max_length=config.max_seq_length)
  return config, params, tokenizer


# ----------------------------------------------------------------------------------------------------------
# Writing a directory.


def _version(package: str, default: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return default


def _write_json(file: str, obj: Any) -> None:
  os.makedirs(os.path.dirname(file), exist_ok=True)
  with open(file, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")


def check_export_directory(output_dir: str, overwrite: bool = False) -> None:
  """Refuses an existing file, and a non-empty directory that is not a previous export (unless overwrite)."""
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise NotADirectoryError(f"{output_dir}: is a file; pass a directory to export into.")
  if (os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite
      and not os.path.isfile(os.path.join(output_dir, EXPORT_MARKER))):
    raise FileExistsError(f"{output_dir}: not empty and not a previous export (no {EXPORT_MARKER}); pick an "
                          "empty or new directory, or pass --overwrite (overwrite=True) to write into it.")


def save_hf_directory(output_dir: str, config: model_lib.EncoderConfig, params: dict,
                      tokenizer: tokenization.Tokenizer, overwrite: bool = False, *,
                      source: str | None = None, step: int | None = None,
                      prompts: Mapping[str, str] | None = None, default_prompt_name: str | None = None,
                      truncate_dim: int | None = None) -> None:
  """Writes a directory that `BertModel.from_pretrained` and `SentenceTransformer` load with no warnings.

  A non-empty `output_dir` is refused unless it holds a previous export (its `neuralir_export.json`) or
  `overwrite`; `source` and `step` (what was exported) are recorded in that marker. `prompts` (name ->
  text; "query" and "document" are what ST's encode_query / encode_document use), `default_prompt_name`
  and `truncate_dim` go into config_sentence_transformers.json.
  """
  import safetensors.numpy
  output_dir = os.fspath(output_dir)
  prompts = {name: text or "" for name, text in (prompts or {}).items()}
  if not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
    raise TypeError(f"prompts={prompts!r}: pass a dict of prompt name -> prompt text (strings).")
  if default_prompt_name is not None and default_prompt_name not in prompts:
    raise ValueError(f"default_prompt_name={default_prompt_name!r} is not one of the prompts {list(prompts)}.")
  if truncate_dim is not None and (not isinstance(truncate_dim, int)
                                   or not 1 <= truncate_dim <= config.bert.hidden_size):
    raise ValueError(f"truncate_dim={truncate_dim!r}: pass an integer from 1 to {config.bert.hidden_size}.")
  check_export_directory(output_dir, overwrite)
  os.makedirs(output_dir, exist_ok=True)
  # The marker goes first, so that a rerun after a failed export recognises the directory as its own.
  _write_json(os.path.join(output_dir, EXPORT_MARKER), {
      "exported_by": f"neuralir_jax {_version('neuralir_jax', 'unknown')}", "source": source, "step": step})
  state = params_to_hf_state_dict(params, config.bert)
  safetensors.numpy.save_file(state, os.path.join(output_dir, "model.safetensors"),
                              metadata={"format": "pt"})
  hf = config.bert.to_hf()
  hf.update(dtype="float32", transformers_version=_version("transformers", "5.0.0"))
  _write_json(os.path.join(output_dir, "config.json"), hf)
  if os.path.abspath(tokenizer.path) != os.path.abspath(output_dir):
    tokenizer.save(output_dir)
  _write_sentence_transformers_files(output_dir, config, prompts, default_prompt_name, truncate_dim)
  with open(os.path.join(output_dir, "README.md"), "w") as f:
    f.write(model_card(config, os.path.basename(os.path.abspath(output_dir)), prompts, truncate_dim))


def _write_sentence_transformers_files(output_dir: str, config: model_lib.EncoderConfig,
                                       prompts: dict[str, str], default_prompt_name: str | None,
                                       truncate_dim: int | None) -> None:
  # Legacy (sentence-transformers 2.x-5.x) names: every version up to 6.x reads them.
  modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
  if config.normalize:
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    os.makedirs(os.path.join(output_dir, "2_Normalize"), exist_ok=True)
  _write_json(os.path.join(output_dir, "modules.json"), modules)
  _write_json(os.path.join(output_dir, "sentence_bert_config.json"),
              {"max_seq_length": config.max_seq_length, "do_lower_case": False})
  st_config = {
      "__version__": {"sentence_transformers": _version("sentence-transformers", "5.0.0"),
                      "transformers": _version("transformers", "5.0.0"),
                      "pytorch": _version("torch", "2.0.0")},
      "prompts": prompts, "default_prompt_name": default_prompt_name, "similarity_fn_name": "cosine"}
  if truncate_dim is not None:
    st_config["truncate_dim"] = truncate_dim
  _write_json(os.path.join(output_dir, "config_sentence_transformers.json"), st_config)
  pooling = {"word_embedding_dimension": config.bert.hidden_size}
  pooling.update({key: mode == config.pooling for key, mode in _LEGACY_POOLING_KEYS.items()})
  _write_json(os.path.join(output_dir, "1_Pooling", "config.json"), pooling)


def model_card(config: model_lib.EncoderConfig, name: str, prompts: Mapping[str, str] | None = None,
               truncate_dim: int | None = None) -> str:
  """A short README.md for an exported encoder."""
  bert = config.bert
  norm = "L2-normalised" if config.normalize else "not normalised"
  used = {k: v for k, v in (prompts or {}).items() if v}
  extra = "".join(f"\n- Prompt `{k}`: {v!r} (prepended to the text)" for k, v in used.items())
  if truncate_dim:
    extra += f"\n- Embeddings truncated to their first {truncate_dim} dimensions (truncate_dim)"
  usage = ("queries = model.encode_query([\"A question?\"])  # With the query prompt.\n"
           "documents = model.encode_document([\"A passage.\"])  # With the document prompt.\n"
           if used else "")
  return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags:
- sentence-transformers
- feature-extraction
- sentence-similarity
- neuralir_jax
---

# {name}

A BERT sentence encoder exported from neuralir_jax (JAX/Flax). How it was trained
is not recorded in this export; see the training run that produced it.

- Architecture: BERT, {bert.num_hidden_layers} layers, hidden size {bert.hidden_size}, \
{bert.num_attention_heads} heads, vocabulary {bert.vocab_size}
- Sentence embedding: {config.pooling} pooling, {bert.hidden_size} dimensions, {norm}
- Max sequence length: {config.max_seq_length} tokens (longer texts are truncated){extra}

## sentence-transformers

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("path/to/{name}")
embeddings = model.encode(["A first sentence.", "Another one."])
{usage}```

## transformers

```python
import torch
from transformers import AutoTokenizer, BertModel
tokenizer = AutoTokenizer.from_pretrained("path/to/{name}")
model = BertModel.from_pretrained("path/to/{name}")
batch = tokenizer(["A first sentence."], padding=True, truncation=True, max_length={config.max_seq_length},
                  return_tensors="pt")
hidden = model(**batch).last_hidden_state  # Then apply {config.pooling} pooling over the attention mask.
```

## neuralir_jax

```python
import neuralir_jax
encoder = neuralir_jax.load_encoder("path/to/{name}")
embeddings = encoder.encode(["A first sentence."])
```
"""

