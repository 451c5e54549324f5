"""The bi-encoder (siamese) model family: one BERT embeds every text column, objectives score the embeddings.

A model family is what the training loop (`train.py`), the step factory (`steps.py`) and the evaluation
need to know about a model; everything else (mesh, optimizer, checkpoints, input, GradCache, pjit/pmap) is
shared. A family provides:
  config                     the training config it was built from;
  deterministic              no dropout, so no rng is needed;
  text_columns(record_keys)  the columns of the training records to tokenise;
  init_params(rng, pretrained) -> {'encoder': ..., other params};
  inputs(batch, num_shards)  -> ({group: (ids_NxL, mask_NxL)}, unstack): every text the model runs on, in
                                flat groups (one encoder call each), and a function turning the model's
                                {group: [N, ...]} outputs back into named columns (packed batches: one
                                group of rows, see `inputs`);
  embed_fn(group)            -> (enc_params, ids_NxL, mask_NxL, rng) -> outputs [N, ...] (what GradCache
                                caches);
  loss(rest, columns, aux, axis_name) -> (loss, metrics) on one device's rows (in shard_map or pmap);
  queue_size, queue_dim        the negative queue's entries (0 = none) and their size (`negative_queue.py`);
  queue_entries(columns, aux)  -> (embeddings, hashes) a step pushes onto the queue;
  train_flops(batch, num_devices)      model FLOPs of one global step, for MFU;
  encoder(params, tokenizer)           the object the evaluation encodes (and predicts NLI) with;
  has_nli_head                         whether that object can predict NLI (nli: eval tasks need it).
Another family is a class with these members in its own module (`cross_encoder.CrossEncoderFamily`,
`colbert.ColBERTFamily`), chosen by `model.family` in `families.py`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from neuralir_jax import config_lib, flops, hf_io, objectives, packing, tokenization
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
    contrastive = {"infonce", "sigmoid"} & set(objectives.enabled(config))
    self.queue_size = int(config.infonce.queue_size) if contrastive else 0
    self.queue_dim = int(config.model.bert.hidden_size)

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

  def inputs(self, batch: dict, num_shards: int = 1
             ) -> tuple[dict[str, tuple[jax.Array, jax.Array]], Callable[[dict], dict]]:
    """Text columns grouped by padded length (queries and documents may differ), each group flat:
    ({group: (ids_NxL, mask_NxL)}, unstack: {group: emb_NxD} -> {column: emb}). One group (one encoder
    call) when every column has the same length.

    A packed batch (`packed_tokens`, see data.py) is one group "packed" of rows [R, L] with their segment
    ids in place of the mask; its embeddings [R, S, D] are gathered per column through `c_slot`, which is
    local to each of the num_shards devices whose rows and examples are stacked in the batch (1 under
    pmap): a batched gather along the device axis, so no device reads another's rows.
    """
    columns = objectives.text_columns(self.config, set(batch))
    if "packed_tokens" in batch:
      def unstack_packed(embs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        emb_RxSxD = embs["packed"]
        per_shard = emb_RxSxD.reshape(num_shards, -1, emb_RxSxD.shape[-1])
        out = {}
        for c in columns:
          index = batch[f"{c}_slot"].reshape(num_shards, -1, 1)
          out[c] = jnp.take_along_axis(per_shard, index, axis=1).reshape(-1, emb_RxSxD.shape[-1])
        return out

      return {"packed": (batch["packed_tokens"], batch["packed_segments"])}, unstack_packed

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

  def embed_fn(self, group: str) -> Callable:
    """(params, ids_NxL, mask_NxL, rng) -> [N, D] for a padded group; for "packed", (params, tokens_RxL,
    segments_RxL, rng) -> [R, S, D] (`SentenceEncoder.packed`, S = packing.default_slots of the row)."""
    if group != "packed":
      return self.embed

    def embed_packed(params, tokens_RxL, segments_RxL, rng):
      rngs = {} if self.deterministic or rng is None else {"dropout": rng}
      num_slots = packing.default_slots(tokens_RxL.shape[-1], self.config.data.pack_max_slots)
      return self.module.apply({"params": params}, tokens_RxL, segments_RxL, None, num_slots,
                               deterministic=self.deterministic, rngs=rngs, method="packed")

    return embed_packed

  def embed(self, params: Any, ids_NxL: jax.Array, mask_NxL: jax.Array, rng: jax.Array | None) -> jax.Array:
    rngs = {} if self.deterministic or rng is None else {"dropout": rng}
    return self.module.apply({"params": params}, ids_NxL, mask_NxL, deterministic=self.deterministic,
                             rngs=rngs)

  def loss(self, rest: dict, embs: dict, aux: dict, axis_name: str | None) -> tuple[jax.Array, dict]:
    return objectives.objective_losses(self.config, rest, embs, aux, axis_name)

  def queue_entries(self, columns: dict, aux: dict):
    return objectives.queue_entries(self.config, columns, aux)

  def train_flops(self, batch: dict[str, np.ndarray], num_devices: int) -> float:
    """Model FLOPs of one global step from a process's local batch (x process count): every text the
    objectives encode at its real length (padding, in a padded or a packed row, is waste, not work), plus
    the InfoNCE logits against the nominal candidates (masked ones and the queue's are computed too)."""
    config = self.config
    columns = objectives.text_columns(config, set(batch))
    candidates = symmetric = 0
    if "infonce" in objectives.enabled(config):
      rows = config.batch_size if config.negatives == "global" else config.batch_size // num_devices
      k = objectives.texts_per_example(batch, "negative") if "negative" in columns else 0
      queue = self.queue_size if config.negatives == "global" else self.queue_size // num_devices
      candidates = rows * (1 + k) + queue
      symmetric = rows if config.infonce.symmetric else 0
    lengths = text_lengths(batch, columns)
    return (flops.encoder_flops(self.encoder_config.bert, lengths) * jax.process_count()
            + flops.train_flops_per_step(self.encoder_config.bert, [], config.batch_size, candidates,
                                         symmetric))

  def encoder(self, params: dict, tokenizer: tokenization.Tokenizer) -> encoder_lib.Encoder:
    """The params' encoder (and NLI head, when trained) as an `Encoder`, for evaluation."""
    prompts = {name: text for name, text in self.config.model.prompts.items() if text}
    return encoder_lib.Encoder(self.encoder_config, params["encoder"], tokenizer,
                               nli_head=params.get("heads", {}).get("nli"),
                               **({"prompts": prompts} if prompts else {}))


def text_lengths(batch: dict[str, np.ndarray], columns: tuple[str, ...]) -> np.ndarray:
  """Token count of every text of these columns in a numpy batch, padded or packed."""
  if "packed_segments" in batch:  # Every text of a packed batch is one segment of one row.
    segments = np.asarray(batch["packed_segments"])
    counts = np.zeros((segments.shape[0], int(segments.max(initial=0)) + 1), np.int64)
    np.add.at(counts, (np.arange(segments.shape[0])[:, None], segments), 1)
    counts = counts[:, 1:]
    return counts[counts > 0]
  return np.concatenate([np.asarray(batch[f"{c}_mask"]).reshape(-1, batch[f"{c}_mask"].shape[-1]).sum(-1)
                         for c in columns])


def keep_layers(enc_config: model_lib.EncoderConfig, params: dict, layers: tuple[int, ...], name: str
                ) -> tuple[model_lib.EncoderConfig, dict]:
  """The model with only these of its layers (renumbered 0..n-1 in the given order): a student's init."""
  total = enc_config.bert.num_hidden_layers
  if not all(isinstance(i, int) and 0 <= i < total for i in layers) or len(set(layers)) != len(layers):
    raise ValueError(f"model.layers={layers}: {name} has layers 0..{total - 1}; give distinct indices among "
                     "them, e.g. --config.model.layers='(0, 2, 4)'.")
  bert = {k: v for k, v in params["bert"].items() if not k.startswith("layer_")}
  bert.update({f"layer_{j}": params["bert"][f"layer_{i}"] for j, i in enumerate(layers)})
  shallow = dataclasses.replace(enc_config.bert, num_hidden_layers=len(layers))
  return dataclasses.replace(enc_config, bert=shallow), dict(params, bert=bert)


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
  layers = tuple(config.model.layers)
  if layers:
    enc_config, params = keep_layers(enc_config, params, layers, init)
  config.model.bert = ml_collections.ConfigDict(dataclasses.asdict(enc_config.bert))
  if os.path.isfile(os.path.join(path, "1_Pooling", "config.json")):
    config.model.pooling = enc_config.pooling
    config.model.normalize = enc_config.normalize
  config.model.max_seq_length = enc_config.max_seq_length
  return config, tokenizer, params
