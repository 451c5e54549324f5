"""The bi-encoder (siamese) model family: one BERT embeds every text column, objectives score the embeddings.

A model family is what the training loop (`train.py`), the step factory (`steps.py`) and the evaluation
need to know about a model; everything else (mesh, optimizer, checkpoints, input, GradCache, pjit/pmap) is
shared. A family provides:
  config                     the training config it was built from;
  deterministic              no dropout, so no rng is needed;
  text_columns(record_keys)  the columns of the training records to tokenise;
  init_params(rng, pretrained) -> {'encoder': ..., other params};
  inputs(batch)              -> ({group: (ids_NxL, mask_NxL)}, unstack): every text the model runs on, in
                                flat groups (one encoder call each), and a function turning the model's
                                {group: [N, ...]} outputs back into named columns;
  embed(enc_params, ids_NxL, mask_NxL, rng) -> outputs [N, ...] (what GradCache caches);
  loss(rest, columns, aux, axis_name) -> (loss, metrics) on one device's rows (in shard_map or pmap);
  train_flops(batch, num_devices)      model FLOPs of one global step, for MFU;
  encoder(params, tokenizer)           the object the evaluation encodes (and predicts NLI) with;
  has_nli_head                         whether that object can predict NLI (nli: eval tasks need it).
A cross-encoder or a late-interaction model is another class with these members, in its own module.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from neuralir_jax import config_lib, flops, hf_io, objectives, tokenization
from neuralir_jax import encoder as encoder_lib
from neuralir_jax import model as model_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class BiEncoder:
  """Sentence-BERT / InfoNCE training of one shared encoder (see the module docstring for the contract)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.encoder_config = model_lib.encoder_config(config.model)
    self.module = model_lib.SentenceEncoder(self.encoder_config, dtype=DTYPES[config.model.dtype],
                                            remat=bool(config.model.remat))
    self.deterministic = config.model.dropout_rate == 0
    self.has_nli_head = "nli_softmax" in objectives.enabled(config)

  def init_params(self, rng: jax.Array, encoder_params: Any = None) -> dict:
    """{'encoder', 'heads'?, 'log_temperature'?}; encoder_params (e.g. pretrained) replace the random init."""
    enc_rng, head_rng = jax.random.split(rng)
    if encoder_params is None:
      encoder_params = model_lib.init_params(self.encoder_config, enc_rng)
    return {"encoder": encoder_params, **objectives.init_params(self.config, head_rng)}

  def text_columns(self, keys: set[str]) -> tuple[str, ...]:
    """The text columns of records with these keys that the objectives read (what the input tokenises);
    a one-line error naming what to change when one is missing."""
    return objectives.text_columns(self.config, {f"{k}_ids" for k in keys} | keys)

  def inputs(self, batch: dict) -> tuple[dict[str, tuple[jax.Array, jax.Array]], Callable[[dict], dict]]:
    """Text columns grouped by padded length (queries and documents may differ), each group flat:
    ({group: (ids_NxL, mask_NxL)}, unstack: {group: emb_NxD} -> {column: emb}). One group (one encoder
    call) when every column has the same length."""
    columns = objectives.text_columns(self.config, set(batch))
    by_length: dict[int, list[str]] = {}
    for c in columns:
      by_length.setdefault(batch[f"{c}_ids"].shape[-1], []).append(c)
    texts, shapes = {}, {}
    for length, group in sorted(by_length.items()):
      ids_BxRxL, mask_BxRxL, slices = objectives.stack_texts(batch, tuple(group))
      texts[f"L{length}"] = (ids_BxRxL.reshape(-1, length), mask_BxRxL.reshape(-1, length))
      shapes[f"L{length}"] = (ids_BxRxL.shape[:2], slices)

    def unstack(embs: dict[str, jax.Array]) -> dict[str, jax.Array]:
      columns = {}
      for name, ((batch_size, rows), slices) in shapes.items():
        columns.update(objectives.split_embeddings(embs[name].reshape(batch_size, rows, -1), slices))
      return columns

    return texts, unstack

  def embed(self, params: Any, ids_NxL: jax.Array, mask_NxL: jax.Array, rng: jax.Array | None) -> jax.Array:
    rngs = {} if self.deterministic or rng is None else {"dropout": rng}
    return self.module.apply({"params": params}, ids_NxL, mask_NxL, deterministic=self.deterministic,
                             rngs=rngs)

  def loss(self, rest: dict, embs: dict, aux: dict, axis_name: str | None) -> tuple[jax.Array, dict]:
    return objectives.objective_losses(self.config, rest, embs, aux, axis_name)

  def train_flops(self, batch: dict[str, np.ndarray], num_devices: int) -> float:
    """Model FLOPs of one global step (padding counts as work): the columns the objectives encode, at their
    padded lengths, plus the InfoNCE logits against the nominal candidates (masked ones are computed too)."""
    config = self.config
    columns = objectives.text_columns(config, set(batch))
    seq_lens = [batch[f"{c}_ids"].shape[-1] for c in columns
                for _ in range(int(np.prod(batch[f"{c}_ids"].shape[1:-1], dtype=np.int64)))]
    candidates = symmetric = 0
    if "infonce" in objectives.enabled(config):
      rows = config.batch_size if config.negatives == "global" else config.batch_size // num_devices
      k = int(np.prod(batch["negative_ids"].shape[1:-1], dtype=np.int64)) if "negative" in columns else 0
      candidates = rows * (1 + k)
      symmetric = rows if config.infonce.symmetric else 0
    return flops.train_flops_per_step(self.encoder_config.bert, seq_lens, config.batch_size, candidates,
                                      symmetric)

  def encoder(self, params: dict, tokenizer: tokenization.Tokenizer) -> encoder_lib.Encoder:
    """The params' encoder (and NLI head, when trained) as an `Encoder`, for evaluation."""
    prompts = {name: text for name, text in self.config.model.prompts.items() if text}
    return encoder_lib.Encoder(self.encoder_config, params["encoder"], tokenizer,
                               nli_head=params.get("heads", {}).get("nli"),
                               **({"prompts": prompts} if prompts else {}))


def resolve_model(config: ml_collections.ConfigDict
                  ) -> tuple[ml_collections.ConfigDict, tokenization.Tokenizer, Any]:
  """(config, tokenizer, pretrained encoder params or None) for `model.init`.

  A pretrained directory brings its own architecture, pooling, normalisation and max length: the returned
  config is a copy with model.{bert, pooling, normalize, max_seq_length} taken from it (the given config is
  not changed). "random" keeps the config's architecture and loads only the tokenizer.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  init = config.model.init
  if init == "random":
    tokenizer = tokenization.Tokenizer(config_lib.resolve_model_path(config.model.tokenizer))
    if tokenizer.vocab_size > config.model.bert.vocab_size:
      raise ValueError(f"model.bert.vocab_size={config.model.bert.vocab_size} is smaller than the tokenizer's "
                       f"{tokenizer.vocab_size}: set --config.model.bert.vocab_size={tokenizer.vocab_size}.")
    return config, tokenizer, None
  path = config_lib.resolve_model_path(init)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"model.init={init!r} is not a directory: use 'minilm', 'random' or an HF directory.")
  enc_config, params, tokenizer = hf_io.load_hf_directory(path)
  config.model.bert = ml_collections.ConfigDict(dataclasses.asdict(enc_config.bert))
  if os.path.isfile(os.path.join(path, "1_Pooling", "config.json")):
    config.model.pooling = enc_config.pooling
    config.model.normalize = enc_config.normalize
  config.model.max_seq_length = enc_config.max_seq_length
  return config, tokenizer, params
