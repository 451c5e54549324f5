"""`Encoder`: texts -> sentence embeddings, with the semantics of `SentenceTransformer.encode`.

Texts are sorted by token length (longest first, as sentence-transformers does), tokenised with truncation
to the model's max length, padded to a length bucket and the batch padded to a fixed number of rows, so one
`encode` call compiles a handful of shapes whatever the texts. The batch axis is sharded over all local
devices (a 1-D "data" mesh) with replicated params. An encoder trained with the NLI softmax objective
carries its head (`nli_head`, `predict_nli`). `load_encoder` reads a Hugging Face / sentence-transformers
directory or a training workdir (through `workdir.read`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from neuralir_jax import hf_io, losses, tokenization, workdir
from neuralir_jax import model as model_lib

EmbedFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, ids_BxL, mask_BxL) -> emb_BxD.
# Finer than tokenization.DEFAULT_BUCKETS: short texts dominate most corpora, and padding a batch whose
# longest text has 17 tokens to 32 wastes ~45% of the compute. Steps of ~1.33-1.5x keep the waste low for
# one or two more compiled shapes (STS-B test, batch 64: 1.16x the tokens sentence-transformers runs with
# exact per-batch padding, vs 1.49x with DEFAULT_BUCKETS).
ENCODE_BUCKETS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_IN_FLIGHT = 3  # Batches dispatched ahead of the host copy; overlaps tokenisation with compute.


class Encoder:
  """A sentence encoder: EncoderConfig + params (replicated on the local devices) + Tokenizer.

  nli_head: the Sentence-BERT softmax classifier's params ({'kernel', 'bias'}) when the encoder was trained
  with it (None otherwise); step: the training step of a workdir checkpoint (None for a model directory).
  """

  def __init__(self, config: model_lib.EncoderConfig, params: dict, tokenizer: tokenization.Tokenizer,
               dtype: Any = jnp.float32, devices: Sequence[jax.Device] | None = None,
               buckets: Sequence[int] = ENCODE_BUCKETS, nli_head: dict | None = None,
               step: int | None = None):
    self.config = config
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
    self._embed_fns: dict[bool, EmbedFn] = {}
    self.num_traces = 0  # Shapes compiled so far (one per (rows, bucket, normalize)); tests bound it.

  @property
  def dim(self) -> int:
    return self.config.bert.hidden_size

  @property
  def max_seq_length(self) -> int:
    return self.config.max_seq_length

  @property
  def embed_fn(self) -> EmbedFn:
    """Jitted (params, ids_BxL, mask_BxL) -> emb_BxD fp32, pooled and normalised as the config says.

    B must be a multiple of the number of devices; the batch axis is sharded over them.
    """
    return self._embed_fn(self.config.normalize)

  def _embed_fn(self, normalize: bool) -> EmbedFn:
    if normalize not in self._embed_fns:
      config = dataclasses.replace(self.config, normalize=normalize)
      module = model_lib.SentenceEncoder(config, dtype=self.dtype)

      def embed(params, ids_BxL, mask_BxL):
        self.num_traces += 1  # Runs at trace time only.
        return module.apply({"params": params}, ids_BxL, mask_BxL)

      self._embed_fns[normalize] = jax.jit(
          embed, in_shardings=(self._replicated, self._sharded, self._sharded),
          out_shardings=self._sharded)
    return self._embed_fns[normalize]

  def batch_rows(self, num_texts: int, batch_size: int) -> int:
    """Rows a batch of `num_texts` is padded to: batch_size, or the next power of two for a short call."""
    rows = min(batch_size, 1 << max(num_texts - 1, 0).bit_length())
    return -(-rows // len(self.devices)) * len(self.devices)

  def encode(self, texts: str | Sequence[str], batch_size: int = 64, normalize: bool | None = None,
             show_progress: bool = False) -> np.ndarray:
    """Embeddings float32 [n, dim] in input order ([dim] for a single string), as SentenceTransformer.encode.

    normalize: None follows the model directory (its Normalize module); True/False forces it.
    """
    single = isinstance(texts, str)
    texts = [texts] if single else _check_texts(texts)
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f"batch_size={batch_size!r}: pass a positive integer.")
    normalize = self.config.normalize if normalize is None else bool(normalize)
    if not texts:
      return np.zeros((0, self.dim), np.float32)
    max_length = self.config.max_seq_length
    token_ids = self.tokenizer.token_ids(texts, max_length)  # Tokenised once: sorted, then padded per batch.
    lengths = np.array([len(x) for x in token_ids])
    order = np.argsort(-lengths, kind="stable")
    fn = self._embed_fn(normalize)
    starts = range(0, len(texts), batch_size)
    if show_progress:
      import tqdm
      starts = tqdm.tqdm(starts, desc="Batches", unit="batch")
    pending: collections.deque = collections.deque()
    done: list[np.ndarray] = []
    for start in starts:
      idx = order[start:start + batch_size]
      length = tokenization.bucket_length(int(lengths[idx[0]]), max_length, self.buckets)
      ids, mask = self.tokenizer.pad([token_ids[i] for i in idx], length)
      ids, mask = _pad_rows(ids, mask, self.batch_rows(len(idx), batch_size), self.tokenizer.pad_id)
      ids, mask = jax.device_put((ids, mask), self._sharded)
      pending.append((len(idx), fn(self.params, ids, mask)))  # Async: tokenises the next batch meanwhile.
      if len(pending) > _IN_FLIGHT:
        done.append(_to_host(*pending.popleft()))
    done.extend(_to_host(*p) for p in pending)
    out = np.empty((len(texts), self.dim), np.float32)
    out[order] = np.concatenate(done)
    return out[0] if single else out

  def predict_nli(self, premises: Sequence[str], hypotheses: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """NLI logits [n, 3] (entailment, neutral, contradiction) from the trained softmax head."""
    if self.nli_head is None:
      raise ValueError("this encoder has no NLI head: train with objectives.nli_softmax > 0 to get one.")
    u = self.encode(list(premises), batch_size=batch_size)
    v = self.encode(list(hypotheses), batch_size=batch_size)
    return np.asarray(losses.nli_logits(self.nli_head, jnp.asarray(u), jnp.asarray(v)))

  def save_pretrained(self, output_dir: str, overwrite: bool = False) -> None:
    """Writes a HF + sentence-transformers directory (see hf_io.save_hf_directory)."""
    hf_io.save_hf_directory(output_dir, self.config, self.params, self.tokenizer, overwrite=overwrite)

  def __repr__(self) -> str:
    bert = self.config.bert
    return (f"Encoder(layers={bert.num_hidden_layers}, dim={self.dim}, pooling={self.config.pooling!r}, "
            f"normalize={self.config.normalize}, max_seq_length={self.config.max_seq_length}, "
            f"dtype={jnp.dtype(self.dtype).name}, devices={len(self.devices)})")


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


def _pad_rows(ids: np.ndarray, mask: np.ndarray, rows: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  extra = rows - ids.shape[0]
  if extra <= 0:
    return ids, mask
  ids = np.concatenate([ids, np.full((extra, ids.shape[1]), pad_id, ids.dtype)])
  return ids, np.concatenate([mask, np.zeros((extra, mask.shape[1]), mask.dtype)])


def _to_host(count: int, emb: jax.Array) -> np.ndarray:
  return np.asarray(emb, np.float32)[:count]


def load_encoder(path: str, dtype: Any = jnp.float32, step: int | None = None) -> Encoder:
  """Encoder from a HF / sentence-transformers directory, or from a training workdir (has checkpoints/;
  its latest checkpoint, or `step`)."""
  path = os.fspath(path)
  if workdir.is_workdir(path):
    trained = workdir.read(path, step)
    config = model_lib.encoder_config(trained.config["model"])
    return Encoder(config, trained.params["encoder"], tokenization.Tokenizer(trained.tokenizer_dir),
                   dtype=dtype, nli_head=trained.params.get("heads", {}).get("nli"), step=trained.step)
  if step is not None:
    raise ValueError(f"{path} is a model directory, not a training workdir: drop --step.")
  config, params, tokenizer = hf_io.load_hf_directory(path)
  return Encoder(config, params, tokenizer, dtype=dtype)
