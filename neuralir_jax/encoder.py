"""`Encoder`: texts -> sentence embeddings, with the semantics of `SentenceTransformer.encode`.

Prompts are sentence-transformers': named texts (`prompts`, at least "query" and "document", "" when unset)
prepended to each text before tokenisation, pooled with it; `encode_query` / `encode_document` pick the
query / document prompt as ST does. `truncate_dim` keeps the first D dimensions of the model's (normalised,
when it normalises) embeddings, not re-normalised: Matryoshka truncation as `SentenceTransformer.encode`.
Texts are tokenised once with truncation to the model's max length. By default they are sorted by length
(longest first, as sentence-transformers does), `batch_size` per call, padded to a length bucket and the
batch to a fixed number of rows: a handful of shapes whatever the texts. With `packing=True` (see
`packing.py`) several texts share a row of L tokens (the max length, or a smaller bucket when all the
texts together are shorter), at most S = L // 8 per row, `batch_size` rows per call, and a call compiles at
most two shapes; attention still scores the masked pairs of texts sharing a row. The batch axis is sharded
over all local devices (a 1-D "data" mesh) with replicated params. An encoder trained with the NLI softmax
objective carries its head (`nli_head`, `predict_nli`). `load_encoder` reads a Hugging Face /
sentence-transformers directory or a training workdir (through `workdir.read`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import numbers
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from neuralir_jax import hf_io, losses, packing, tokenization, workdir
from neuralir_jax import model as model_lib

EmbedFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, ids_BxL, mask_BxL) -> emb_BxD.
# (params, ids_BxL, segment_ids_BxL, position_ids_BxL) -> emb_BxSxD.
PackedEmbedFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
# Finer than tokenization.DEFAULT_BUCKETS: padding a batch whose longest text has 17 tokens to 32 wastes ~45%
# of the compute. Steps of at most 1.25x (multiples of 4, 8, 16, 32, 64 as lengths grow) keep the waste
# low for a few more compiled shapes: batch 64, tokens computed vs sentence-transformers' exact per-batch
# padding: STS-B test 1.108x (9 shapes; 1.158x with steps of 1.33-1.5x), SciFact queries 1.074x, SciFact
# abstracts 1.009x (their lengths sit at 192-256, where the old 192 -> 256 step wasted 3.4%).
ENCODE_BUCKETS = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
                  448, 512)
_IN_FLIGHT = 3  # Batches dispatched ahead of the host copy; overlaps tokenisation with compute.
# Texts per packed row at most: L // 8. A row fills when its texts average 8 tokens or more (queries and
# sentences do); more slots would cost host copies of mostly empty [rows, S, D] outputs for long texts.
_TOKENS_PER_SLOT = 8
# Prompt names every SentenceTransformer has ("" unless set), and the ones its encode_document tries in order.
DEFAULT_PROMPT_NAMES = ("query", "document")
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


class Encoder:
  """A sentence encoder: EncoderConfig + params (replicated on the local devices) + Tokenizer.

  nli_head: the Sentence-BERT softmax classifier's params ({'kernel', 'bias'}) when the encoder was trained
  with it (None otherwise); step: the training step of a workdir checkpoint (None for a model directory).
  prompts: name -> text prepended to the texts (merged over {"query": "", "document": ""}, as ST);
  default_prompt_name: the prompt `encode` uses when given none; truncate_dim: `encode`'s default D.
  packing: `encode` packs several texts per row (see the module docstring); False (the default) sorts the
  texts by length and pads each batch to a length bucket. On the 2-core CPU, STS-B test, batch 64, padded
  runs at 1.5x packed (285 vs 186 sentences/s, benchmarks/encode_throughput.py): length-sorted batches
  leave little padding, while 256-token packed rows score L x L attention pairs for texts of ~13 tokens.
  """

  def __init__(self, config: model_lib.EncoderConfig, params: dict, tokenizer: tokenization.Tokenizer,
               dtype: Any = jnp.float32, devices: Sequence[jax.Device] | None = None,
               buckets: Sequence[int] = ENCODE_BUCKETS, nli_head: dict | None = None,
               step: int | None = None, prompts: Mapping[str, str | None] | None = None,
               default_prompt_name: str | None = None, truncate_dim: int | None = None,
               packing: bool = False):
    self.config = config
    self.packing = packing
    self.prompts = _check_prompts(prompts)
    if default_prompt_name is not None and default_prompt_name not in self.prompts:
      raise ValueError(f"default_prompt_name={default_prompt_name!r} is not a prompt name; known: "
                       f"{list(self.prompts)}.")
    self.default_prompt_name = default_prompt_name
    self.truncate_dim = None if truncate_dim is None else self.check_truncate_dim(truncate_dim)
    self.nli_head = None if nli_head is None else jax.device_get(nli_head)
    self.step = step
    self.tokenizer = tokenizer
    self.dtype = dtype
    self.buckets = tuple(buckets)
    self.devices = list(devices or jax.local_devices())
    self.mesh = jax.make_mesh((len(self.devices),), ("data",),
                              axis_types=(jax.sharding.AxisType.Auto,), devices=self.devices)
    self._replicated = NamedSharding(self.mesh, P())
    self._sharded = NamedSharding(self.mesh, P("data"))
    self.params = jax.device_put(params, self._replicated)
    self._embed_fns: dict[tuple, EmbedFn | PackedEmbedFn] = {}
    # Shapes compiled so far (one per (rows, length, normalize, truncate_dim, slots)); tests bound it.
    self.num_traces = 0

  @property
  def dim(self) -> int:
    """Size of `encode`'s embeddings: truncate_dim when set, else the hidden size (ST's
    get_embedding_dimension)."""
    return self.truncate_dim or self.config.bert.hidden_size

  def check_truncate_dim(self, truncate_dim: Any) -> int:
    """truncate_dim as an int in [1, hidden size], or a one-line ValueError."""
    hidden = self.config.bert.hidden_size
    if (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, numbers.Integral)
        or not 1 <= truncate_dim <= hidden):
      raise ValueError(f"truncate_dim={truncate_dim!r}: pass an integer from 1 to {hidden} (this model's "
                       "embedding size).")
    return int(truncate_dim)

  def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
    """The text prepended to every text, as ST's `_resolve_prompt`: `prompt` wins over `prompt_name`; with
    neither, the default prompt (or none)."""
    if prompt is not None:
      if not isinstance(prompt, str):
        raise TypeError(f"prompt is {type(prompt).__name__}: pass a string.")
      if prompt_name is not None:
        logging.warning("Both prompt and prompt_name=%r given: prompt_name is ignored.", prompt_name)
      return prompt
    if prompt_name is not None:
      if prompt_name not in self.prompts:
        raise ValueError(f"prompt_name={prompt_name!r} is not one of this model's prompts: "
                         f"{list(self.prompts)}.")
      return self.prompts[prompt_name]
    if self.default_prompt_name is not None:
      return self.prompts[self.default_prompt_name]
    return ""

  @property
  def max_seq_length(self) -> int:
    return self.config.max_seq_length

  @max_seq_length.setter
  def max_seq_length(self, value: int) -> None:
    """Tokens per text from now on (as SentenceTransformer.max_seq_length = value); the params stay."""
    limit = self.config.bert.max_positions
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= limit:
      raise ValueError(f"max_seq_length={value!r}: pass an integer from 1 to {limit} (this model's "
                       "position embeddings).")
    self.config = dataclasses.replace(self.config, max_seq_length=int(value))

  @property
  def embed_fn(self) -> EmbedFn:
    """Jitted (params, ids_BxL, mask_BxL) -> emb_BxD fp32, pooled and normalised as the config says.

    B must be a multiple of the number of devices; the batch axis is sharded over them.
    """
    return self._embed_fn(self.config.normalize)

  def _embed_fn(self, normalize: bool, truncate_dim: int | None = None, normalize_truncated: bool = False,
                num_slots: int | None = None) -> EmbedFn | PackedEmbedFn:
    """(model embedding, normalised if `normalize`)[..., :truncate_dim], then re-normalised if asked.

    num_slots None: an EmbedFn of padded rows. Else a PackedEmbedFn of packed rows with num_slots texts at
    most (`SentenceEncoder.packed`).
    """
    key = (normalize, truncate_dim, normalize_truncated, num_slots)
    if key not in self._embed_fns:
      config = dataclasses.replace(self.config, normalize=normalize)
      module = model_lib.SentenceEncoder(config, dtype=self.dtype)

      def embed_rows(params, *rows_BxL):
        if num_slots is None:
          emb = module.apply({"params": params}, *rows_BxL)
        else:
          emb = module.apply({"params": params}, *rows_BxL, num_slots, method="packed")
        emb = emb[..., :truncate_dim]
        return model_lib.l2_normalize(emb) if normalize_truncated else emb

      def embed(params, *rows_BxL):
        self.num_traces += 1  # Runs at trace time only.
        return model_lib.map_inference_rows(lambda *rows: embed_rows(params, *rows), rows_BxL, len(self.devices))

      inputs = 2 if num_slots is None else 3
      self._embed_fns[key] = jax.jit(embed, in_shardings=(self._replicated,) + (self._sharded,) * inputs,
                                     out_shardings=self._sharded)
    return self._embed_fns[key]

  def batch_rows(self, num_texts: int, batch_size: int) -> int:
    """Rows a batch of `num_texts` is padded to: batch_size, or the next power of two for a short call."""
    rows = min(batch_size, 1 << max(num_texts - 1, 0).bit_length())
    return -(-rows // len(self.devices)) * len(self.devices)

  def encode(self, texts: str | Sequence[str], batch_size: int = 64, normalize: bool | None = None,
             show_progress: bool = False, *, prompt_name: str | None = None, prompt: str | None = None,
             truncate_dim: int | None = None) -> np.ndarray:
    """Embeddings float32 [n, D] in input order ([D] for a single string), as SentenceTransformer.encode.

    prompt_name / prompt: see `resolve_prompt`; truncate_dim: D (None: self.truncate_dim, else the hidden
    size). normalize: None follows the model directory (its Normalize module, applied before truncation);
    True L2-normalises the truncated embeddings (ST's normalize_embeddings); False skips normalisation.
    batch_size: texts per call; packed, rows per call (so a call never holds more tokens than an unpacked
    call of texts at the max length).
    """
    single = isinstance(texts, str)
    texts = [texts] if single else _check_texts(texts)
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f"batch_size={batch_size!r}: pass a positive integer.")
    prompt = self.resolve_prompt(prompt_name, prompt)
    hidden = self.config.bert.hidden_size
    truncate_dim = self.truncate_dim if truncate_dim is None else truncate_dim
    dim = hidden if truncate_dim is None else self.check_truncate_dim(truncate_dim)
    truncated = dim < hidden
    # _embed_fn's (normalize, truncate_dim, normalize_truncated).
    if normalize is None:
      output = (self.config.normalize, dim if truncated else None, False)
    elif normalize and truncated:
      output = (False, dim, True)
    else:
      output = (bool(normalize), dim if truncated else None, False)
    if not texts:
      return np.zeros((0, dim), np.float32)
    # Tokenised once, prompt included (ST pools over it).
    token_ids = self.tokenizer.token_ids([prompt + t for t in texts] if prompt else texts,
                                         self.config.max_seq_length)
    encode_fn = self._encode_packed if self.packing else self._encode_padded
    out = encode_fn(token_ids, output, batch_size, show_progress)
    return out[0] if single else out

  def _encode_padded(self, token_ids: list[list[int]], output: tuple, batch_size: int,
                     show_progress: bool) -> np.ndarray:
    """Embeddings [n, D]: texts sorted by length, `batch_size` per call, padded to a length bucket."""
    fn = self._embed_fn(*output)
    max_length = self.config.max_seq_length
    lengths = np.array([len(x) for x in token_ids])
    order = np.argsort(-lengths, kind="stable")
    pending: collections.deque = collections.deque()
    done: list[np.ndarray] = []
    for start in _progress(range(0, len(token_ids), batch_size), show_progress):
      idx = order[start:start + batch_size]
      length = tokenization.bucket_length(int(lengths[idx[0]]), max_length, self.buckets)
      ids, mask = self.tokenizer.pad([token_ids[i] for i in idx], length)
      rows = self.batch_rows(len(idx), batch_size)
      ids, mask = _pad_rows(ids, rows, self.tokenizer.pad_id), _pad_rows(mask, rows, 0)
      ids, mask = jax.device_put((ids, mask), self._sharded)
      pending.append((len(idx), fn(self.params, ids, mask)))  # Async: pads the next batch meanwhile.
      if len(pending) > _IN_FLIGHT:
        done.append(_to_host(*pending.popleft()))
    done.extend(_to_host(*p) for p in pending)
    out = np.empty((len(token_ids), done[0].shape[-1]), np.float32)
    out[order] = np.concatenate(done)
    return out

  def _encode_packed(self, token_ids: list[list[int]], output: tuple, batch_size: int,
                     show_progress: bool) -> np.ndarray:
    """Embeddings [n, D]: texts packed into rows of L tokens, L // 8 texts at most (`packing.pack`), and
    `batch_size` rows per call (rounded up to a multiple of the device count; the last call: the next power
    of two), so an `encode` call compiles at most two shapes."""
    max_length = self.config.max_seq_length
    total = sum(len(x) for x in token_ids)  # L >= the longest text, as that is at most max_length.
    row_length = tokenization.bucket_length(min(total, max_length), max_length, self.buckets)
    num_slots = max(1, row_length // _TOKENS_PER_SLOT)
    fn = self._embed_fn(*output, num_slots=num_slots)
    rows = packing.pack(token_ids, row_length, num_slots, self.tokenizer.pad_id)
    by_row = np.argsort(rows.row_N, kind="stable")  # Texts grouped by row: each call's texts are a slice.
    num_rows = rows.ids_RxL.shape[0]
    per_call = self.batch_rows(batch_size, batch_size)  # A multiple of the device count.
    starts = range(0, num_rows, per_call)
    text_bounds = np.searchsorted(rows.row_N[by_row], list(starts) + [num_rows])
    pending: collections.deque = collections.deque()
    done: list[tuple[np.ndarray, np.ndarray]] = []  # (texts, their embeddings [T, D]) per call.
    padding = ((rows.ids_RxL, self.tokenizer.pad_id), (rows.segment_ids_RxL, 0), (rows.position_ids_RxL, 0))
    for k, start in enumerate(_progress(starts, show_progress)):
      call_rows = self.batch_rows(min(per_call, num_rows - start), per_call)
      arrays = [_pad_rows(x[start:start + per_call], call_rows, pad) for x, pad in padding]
      emb_BxSxD = fn(self.params, *jax.device_put(arrays, self._sharded))  # Async: slices the next call.
      texts = by_row[text_bounds[k]:text_bounds[k + 1]]
      pending.append((texts, rows.row_N[texts] - start, rows.slot_N[texts], emb_BxSxD))
      if len(pending) > _IN_FLIGHT:
        done.append(_slots_to_host(*pending.popleft()))
    done.extend(_slots_to_host(*p) for p in pending)
    out = np.empty((len(token_ids), done[0][1].shape[-1]), np.float32)
    for texts, emb_TxD in done:
      out[texts] = emb_TxD
    return out

  def encode_query(self, texts: str | Sequence[str], batch_size: int = 64, normalize: bool | None = None,
                   show_progress: bool = False, *, prompt_name: str | None = None, prompt: str | None = None,
                   truncate_dim: int | None = None) -> np.ndarray:
    """`encode` with the "query" prompt unless a prompt is given (ST's encode_query)."""
    if prompt_name is None and prompt is None and "query" in self.prompts:
      prompt_name = "query"
    return self.encode(texts, batch_size, normalize, show_progress, prompt_name=prompt_name, prompt=prompt,
                       truncate_dim=truncate_dim)

  def encode_document(self, texts: str | Sequence[str], batch_size: int = 64, normalize: bool | None = None,
                      show_progress: bool = False, *, prompt_name: str | None = None,
                      prompt: str | None = None, truncate_dim: int | None = None) -> np.ndarray:
    """`encode` with the first of the "document", "passage", "corpus" prompts unless a prompt is given (ST's
    encode_document)."""
    if prompt_name is None and prompt is None:
      prompt_name = next((name for name in DOCUMENT_PROMPT_NAMES if name in self.prompts), None)
    return self.encode(texts, batch_size, normalize, show_progress, prompt_name=prompt_name, prompt=prompt,
                       truncate_dim=truncate_dim)

  def predict_nli(self, premises: Sequence[str], hypotheses: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """NLI logits [n, 3] (entailment, neutral, contradiction) from the trained softmax head."""
    if self.nli_head is None:
      raise ValueError("this encoder has no NLI head: train with objectives.nli_softmax > 0 to get one.")
    full = self.config.bert.hidden_size  # The head was trained on untruncated embeddings.
    u = self.encode(list(premises), batch_size=batch_size, truncate_dim=full)
    v = self.encode(list(hypotheses), batch_size=batch_size, truncate_dim=full)
    return np.asarray(losses.nli_logits(self.nli_head, jnp.asarray(u), jnp.asarray(v)))

  def save_pretrained(self, output_dir: str, overwrite: bool = False) -> None:
    """Writes a HF + sentence-transformers directory, prompts and truncate_dim included (see
    hf_io.save_hf_directory)."""
    hf_io.save_hf_directory(output_dir, self.config, self.params, self.tokenizer, overwrite=overwrite,
                            step=self.step, prompts=self.prompts,
                            default_prompt_name=self.default_prompt_name, truncate_dim=self.truncate_dim)

  def __repr__(self) -> str:
    bert = self.config.bert
    prompts = {name: text for name, text in self.prompts.items() if text}
    return (f"Encoder(layers={bert.num_hidden_layers}, dim={self.dim}, pooling={self.config.pooling!r}, "
            f"normalize={self.config.normalize}, max_seq_length={self.config.max_seq_length}, "
            f"dtype={jnp.dtype(self.dtype).name}, devices={len(self.devices)}"
            + (f", prompts={prompts}" if prompts else "") + (", packing=True" if self.packing else "") + ")")


def _check_prompts(prompts: Mapping[str, str | None] | None) -> dict[str, str]:
  """{"query": "", "document": "", **prompts} with None as "" (as ST), or a TypeError naming the entry."""
  out = dict.fromkeys(DEFAULT_PROMPT_NAMES, "")
  if prompts is None:
    return out
  if not isinstance(prompts, Mapping):
    raise TypeError(f"prompts is {type(prompts).__name__}: pass a dict of prompt name -> prompt text.")
  for name, text in prompts.items():
    if not isinstance(name, str) or not (text is None or isinstance(text, str)):
      raise TypeError(f"prompts[{name!r}] = {text!r}: prompt names and texts must be strings.")
    out[name] = text or ""
  return out


def _check_texts(texts: Any) -> list[str]:
  if not isinstance(texts, (list, tuple)):
    try:
      texts = list(texts)
    except TypeError:
      raise TypeError(f"texts is {type(texts).__name__}: pass a string or a list of strings.") from None
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{i}] is {type(text).__name__}, not str: pass a list of strings.")
  return list(texts)


def _progress(batches: range, show: bool):
  if not show:
    return batches
  import tqdm
  return tqdm.tqdm(batches, desc="Batches", unit="batch")


def _pad_rows(x_RxL: np.ndarray, rows: int, pad: int) -> np.ndarray:
  """x_RxL with rows of `pad` appended up to `rows`."""
  extra = rows - x_RxL.shape[0]
  return np.pad(x_RxL, ((0, extra), (0, 0)), constant_values=pad) if extra > 0 else x_RxL


def _to_host(count: int, emb: jax.Array) -> np.ndarray:
  return np.asarray(emb, np.float32)[:count]


def _slots_to_host(texts: np.ndarray, row_T: np.ndarray, slot_T: np.ndarray,
                   emb_BxSxD: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """(texts, emb_TxD): the used slots of a packed call's embeddings, copied to the host."""
  return texts, np.asarray(emb_BxSxD, np.float32)[row_T, slot_T]


def load_encoder(path: str, dtype: Any = jnp.float32, step: int | None = None,
                 truncate_dim: int | None = None, packing: bool = False) -> Encoder:
  """Encoder from a HF / sentence-transformers directory (with the prompts, default prompt and truncate_dim
  of its config_sentence_transformers.json), or from a training workdir (has checkpoints/; its latest
  checkpoint, or `step`; the prompts of its config's model.prompts). `truncate_dim` overrides the saved one;
  `packing`: see `Encoder`."""
  path = os.fspath(path)
  if workdir.is_workdir(path):
    trained = workdir.read(path, step)
    config = model_lib.encoder_config(trained.config["model"])
    return Encoder(config, trained.params["encoder"], tokenization.Tokenizer(trained.tokenizer_dir),
                   dtype=dtype, nli_head=trained.params.get("heads", {}).get("nli"), step=trained.step,
                   prompts=trained.prompts, truncate_dim=truncate_dim, packing=packing)
  if step is not None:
    raise ValueError(f"{path} is a model directory, not a training workdir: drop --step.")
  config, params, tokenizer = hf_io.load_hf_directory(path)
  settings = hf_io.read_encode_settings(path, config)
  if truncate_dim is not None:
    settings["truncate_dim"] = truncate_dim
  return Encoder(config, params, tokenizer, dtype=dtype, packing=packing, **settings)
