"""A Flax (linen) BERT encoder with sentence pooling, numerically equal to Hugging Face `BertModel`.

Post-LN transformer layers with exact (erf) GELU, learned absolute positions and token types. Params are
kept in fp32 (`param_dtype`); `dtype` sets the compute precision (bf16 on accelerators). The parameter
tree mirrors Hugging Face names closely so that `hf_io.py` maps it one-to-one.

Packed rows (several texts in one row, see `packing.py`) carry segment ids (0 for padding, s >= 1 for the
row's s-th text) and position ids that restart at 0 for each text: attention is block-diagonal, and
`SentenceEncoder.packed` pools each segment into its own embedding. A text's embedding is then the one it
gets alone in a padded row (up to float summation order), with little compute spent on padding.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

POOLING_MODES = ("mean", "cls", "max")
ROBERTA_TYPES = ("roberta", "xlm-roberta")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture of a BERT-family encoder (the fields of a Hugging Face `config.json`)."""
  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  initializer_range: float = 0.02
  pad_token_id: int = 0
  # "bert", or "roberta" / "xlm-roberta" (the same post-LN layers; positions start after the padding index).
  model_type: str = "bert"
  # Added to every position id: 0 for BERT, pad_token_id + 1 for (XLM-)RoBERTa, whose position ids count
  # from padding_idx + 1 (transformers' create_position_ids_from_input_ids).
  position_offset: int = 0

  @classmethod
  def from_hf(cls, hf: dict[str, Any]) -> "BertConfig":
    names = {f.name for f in dataclasses.fields(cls)} - {"position_offset"}
    config = cls(**{k: v for k, v in hf.items() if k in names})
    if config.model_type in ROBERTA_TYPES:
      config = dataclasses.replace(config, position_offset=config.pad_token_id + 1)
    return config

  @property
  def max_positions(self) -> int:
    """Tokens a text may have: the position embeddings past the offset."""
    return self.max_position_embeddings - self.position_offset

  def to_hf(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    del out["position_offset"]
    architecture = {"roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}.get(self.model_type, "BertModel")
    out.update(architectures=[architecture], hidden_act="gelu", position_embedding_type="absolute")
    return out


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """A BERT plus how sentences are pooled from its last hidden state."""
  bert: BertConfig = BertConfig()
  pooling: str = "mean"  # One of POOLING_MODES.
  normalize: bool = True  # L2-normalise the sentence embedding.
  max_seq_length: int = 256  # Tokens per text; longer texts are truncated.

  def __post_init__(self):
    if self.pooling not in POOLING_MODES:
      raise ValueError(f"pooling={self.pooling!r}: use one of {POOLING_MODES}.")


def _dense(features: int, cfg: BertConfig, dtype, name: str) -> nn.Dense:
  init = nn.initializers.normal(cfg.initializer_range)
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=init, name=name)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with nn.LayerNorm's params (`scale`, `bias`, fp32) and fp32 statistics.

  On CPU the two row means are matrix-vector products (x @ 1/D): XLA CPU reduces a 384-wide minor axis at
  ~4.5 ns per element, so the 13 LayerNorms of a MiniLM forward at 64 x 256 took 12% of it (3.0 s vs 2.65 s
  without them); as GEMVs they cost about nothing (2.63 s). Elsewhere: plain means.
  """
  epsilon: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD):
    dim = x_BxLxD.shape[-1]
    scale_D = self.param("scale", nn.initializers.ones, (dim,), jnp.float32)
    bias_D = self.param("bias", nn.initializers.zeros, (dim,), jnp.float32)
    x = x_BxLxD.astype(jnp.float32)
    if jax.default_backend() == "cpu":
      ones_Dx1 = jnp.full((dim, 1), 1.0 / dim, jnp.float32)
      mean = lambda y: jnp.matmul(y, ones_Dx1, precision=jax.lax.Precision.HIGHEST)  # noqa: E731
    else:
      mean = lambda y: jnp.mean(y, axis=-1, keepdims=True)  # noqa: E731
    centered = x - mean(x)
    y = centered * jax.lax.rsqrt(mean(centered * centered) + self.epsilon) * scale_D + bias_D
    return y.astype(self.dtype)


def _layer_norm(cfg: BertConfig, dtype, name: str) -> LayerNorm:
  return LayerNorm(cfg.layer_norm_eps, dtype, name=name)


def exact_gelu(x):
  """erf GELU, x * Phi(x), written with erfc: the same values as jax.nn.gelu(approximate=False) (max
  error 3.8e-7 against float64 on [-12, 12] for both) but ~40% cheaper on CPU, where XLA's erf is slow."""
  return 0.5 * x * jax.lax.erfc(-x * 0.7071067811865476)


def _hash32(x_u32):
  """lowbias32 (C. Wellons): a bijective 32-bit integer hash with near-ideal avalanche, 2 multiplies."""
  x_u32 = (x_u32 ^ (x_u32 >> 16)) * jnp.uint32(0x7FEB352D)
  x_u32 = (x_u32 ^ (x_u32 >> 15)) * jnp.uint32(0x846CA68B)
  return x_u32 ^ (x_u32 >> 16)


class Dropout(nn.Module):
  """Inverted dropout (as nn.Dropout) whose keep mask hashes each element's index with a per-call seed.

  nn.Dropout draws a threefry uniform per element; on CPU that was ~20% of a MiniLM train step (60M
  draws/step). Here threefry makes one 32-bit seed per call (from the "dropout" rng, so masks are still a
  function of (seed, step)) and the mask is hash(index ^ seed) >= rate * 2**32: a few integer ops per
  element, fused into the consumer. Dropout needs independence, not cryptographic strength.
  """
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    seed = jax.random.bits(self.make_rng("dropout"), (), jnp.uint32)
    index = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)  # Global index: same mask on any mesh.
    keep = _hash32(index ^ seed) >= jnp.uint32(min(round(self.rate * 2.0**32), 2**32 - 1))
    return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros_like(x))


def attention_bias(mask_BxL, segment_ids_BxL=None):
  """Additive attention bias, fp32: 0 where a query may attend a key, -1e9 elsewhere.

  -1e9, not -inf: a query with no valid key (a padding row or token) stays finite. Padded rows: [B, 1, 1, L],
  padding keys masked. Packed rows (`segment_ids_BxL` given): [B, 1, L, L], block-diagonal, so a token sees
  the valid keys of its own text only and the texts of a row do not see each other.
  """
  if segment_ids_BxL is None:
    return jnp.where(mask_BxL > 0, 0.0, -1e9).astype(jnp.float32)[:, None, None, :]
  same_BxLxL = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
  allowed_BxLxL = same_BxLxL & (mask_BxL > 0)[:, None, :]
  return jnp.where(allowed_BxLxL, 0.0, -1e9).astype(jnp.float32)[:, None]


# Inference on CPU: a batch whose attention scores exceed _ATTENTION_WHOLE_BYTES is split into chunks of at
# most _ATTENTION_CHUNK_BYTES of scores (see `attention_chunk`).
_ATTENTION_WHOLE_BYTES = 32 << 20
_ATTENTION_CHUNK_BYTES = 8 << 20


def attention_chunk(batch: int, heads: int, queries: int, keys: int, devices: int = 1) -> int:
  """Examples per device whose attention is computed together at inference: all of them on accelerators
  and for small scores; on CPU, when a device's fp32 scores [batch / devices, heads, queries, keys] exceed
  `_ATTENTION_WHOLE_BYTES`, the largest divisor of its batch whose scores fit in `_ATTENTION_CHUNK_BYTES`.

  XLA runs each op of the softmax over the whole tensor, so with 64 x 12 x 256 x 256 scores (192 MiB) every
  pass goes to memory; 2 examples at a time stay in cache. MiniLM inference, batch 64, 2-core CPU: length
  256 3.3 s chunked vs 4.6 s whole, length 128 1.7 vs 1.8 s; at 64 and 32 tokens the whole batch is
  faster. Training keeps the whole batch (fwd + bwd at 128 x 128 took 15.6 s in chunks of 4 vs 14.8 s).
  """
  per_device = batch // devices if batch % devices == 0 else batch
  per_example = heads * queries * keys * 4
  if jax.default_backend() != "cpu" or per_device * per_example <= _ATTENTION_WHOLE_BYTES:
    return per_device
  fits = max(1, _ATTENTION_CHUNK_BYTES // per_example)
  return max(d for d in range(1, fits + 1) if per_device % d == 0)


def map_row_chunks(fn: Callable[..., Any], rows: Sequence[jax.Array], chunk: int, devices: int = 1) -> Any:
  """fn(*rows) computed `chunk` rows of every device at a time (`lax.map`), outputs back in row order.

  Each input is [B, ...] with B = devices * per_device, device d holding rows d * per_device ... (the batch
  axis sharded over the devices). Step i takes rows i * chunk ... of every device, so the mapped axis is
  never the sharded one. fn must treat rows independently; its outputs (any pytree) have B leading.
  """
  batch = rows[0].shape[0]
  per_device = batch // devices
  if chunk >= per_device:
    return fn(*rows)
  steps = per_device // chunk

  def split(y):  # [B, ...] -> [steps, devices * chunk, ...]
    y = y.reshape(devices, steps, chunk, *y.shape[1:]).swapaxes(0, 1)
    return y.reshape(steps, devices * chunk, *y.shape[3:])

  def merge(y):  # [steps, devices * chunk, ...] -> [B, ...]
    y = y.reshape(steps, devices, chunk, *y.shape[2:]).swapaxes(0, 1)
    return y.reshape(batch, *y.shape[3:])

  return jax.tree.map(merge, jax.lax.map(lambda args: fn(*args), tuple(split(y) for y in rows)))


# Inference on CPU runs the whole forward a few rows at a time (`inference_chunk`): the activations of
# _INFERENCE_CHUNK_TOKENS tokens (the [T, 1536] MLP input of MiniLM: 6 MiB at 1,024 tokens) stay in cache
# between ops instead of going to memory and back for each of them.
_INFERENCE_CHUNK_TOKENS = 1024


def inference_chunk(batch: int, length: int, devices: int = 1) -> int:
  """Rows per device that an inference forward computes together: all of them on accelerators; on CPU the
  largest divisor of a device's rows with at most `_INFERENCE_CHUNK_TOKENS` tokens (at least 1 row)."""
  per_device = batch // devices if batch % devices == 0 else batch
  if jax.default_backend() != "cpu":
    return per_device
  fits = max(1, _INFERENCE_CHUNK_TOKENS // length)
  return max(d for d in range(1, min(fits, per_device) + 1) if per_device % d == 0)


def map_inference_rows(fn: Callable[..., Any], rows: Sequence[jax.Array], devices: int = 1) -> Any:
  """fn(*rows) of an inference forward over [B, L, ...] rows, `inference_chunk` rows per device at a time."""
  batch, length = rows[0].shape[:2]
  return map_row_chunks(fn, rows, inference_chunk(batch, length, devices), devices)


def attention(q_BxNxLxH, k_BxNxLxH, v_BxNxLxH, bias_Bx1xQxL, dropout=None, dtype=jnp.float32):
  """softmax(q k^T / sqrt(H) + bias) @ v, computed as (exp(s - max) @ v) / sum(exp(s - max)).

  The normalisation divides the [Q, H] output instead of the [Q, L] scores (one pass less over them) and the
  scale multiplies q instead of the scores; dropout (linear) applies to the unnormalised weights. XLA CPU,
  MiniLM's encode shapes (benchmarks/attention_forms.py): 95-115 GFLOP/s vs 57-67 for softmax-then-matmul.
  Scores and their normalisation in fp32; the matmuls in `dtype`.
  """
  logits_BxNxLxL = jnp.matmul(q_BxNxLxH * q_BxNxLxH.shape[-1] ** -0.5, k_BxNxLxH.swapaxes(-1, -2))
  logits_BxNxLxL = logits_BxNxLxL.astype(jnp.float32) + bias_Bx1xQxL
  weights = jnp.exp(logits_BxNxLxL - jax.lax.stop_gradient(logits_BxNxLxL.max(-1, keepdims=True)))
  total_BxNxLx1 = weights.sum(-1, keepdims=True)
  weights = weights.astype(dtype) if dropout is None else dropout(weights.astype(dtype))
  return (jnp.matmul(weights, v_BxNxLxH) / total_BxNxLx1).astype(dtype)


class BertLayer(nn.Module):
  """One post-LN transformer layer: attention -> add & norm -> GELU MLP -> add & norm."""
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD, bias_Bx1xQxL, deterministic: bool):
    """bias_Bx1xQxL: additive attention bias from `attention_bias` (Q is 1 for padded rows, L for packed)."""
    cfg = self.config
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    batch, length, _ = x_BxLxD.shape

    def split_heads(y_BxLxD):  # Heads ahead of the sequence axis: attention is two batched matmuls.
      return y_BxLxD.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

    q_BxNxLxH = split_heads(_dense(cfg.hidden_size, cfg, self.dtype, "query")(x_BxLxD))
    k_BxNxLxH = split_heads(_dense(cfg.hidden_size, cfg, self.dtype, "key")(x_BxLxD))
    v_BxNxLxH = split_heads(_dense(cfg.hidden_size, cfg, self.dtype, "value")(x_BxLxD))

    attend = functools.partial(attention, dtype=self.dtype)

    # Inference on CPU: `chunk` examples per device at a time (`attention_chunk`, `map_row_chunks`).
    devices = jax.device_count() if batch % jax.device_count() == 0 else 1
    per_device = batch // devices
    chunk = attention_chunk(batch, heads, length, length, devices) if deterministic else per_device
    if chunk >= per_device or bias_Bx1xQxL.shape[0] != batch:
      dropout = Dropout(cfg.attention_probs_dropout_prob)
      ctx_BxNxLxH = attend(q_BxNxLxH, k_BxNxLxH, v_BxNxLxH, bias_Bx1xQxL,
                           lambda p: dropout(p, deterministic=deterministic))
    else:
      ctx_BxNxLxH = map_row_chunks(attend, (q_BxNxLxH, k_BxNxLxH, v_BxNxLxH, bias_Bx1xQxL), chunk, devices)
    ctx_BxLxD = ctx_BxNxLxH.transpose(0, 2, 1, 3).reshape(batch, length, cfg.hidden_size)

    attn = _dense(cfg.hidden_size, cfg, self.dtype, "attention_output")(ctx_BxLxD)
    attn = Dropout(cfg.hidden_dropout_prob)(attn, deterministic=deterministic)
    x_BxLxD = _layer_norm(cfg, self.dtype, "attention_layer_norm")(attn + x_BxLxD)

    h = _dense(cfg.intermediate_size, cfg, self.dtype, "intermediate")(x_BxLxD)
    h = exact_gelu(h)
    h = _dense(cfg.hidden_size, cfg, self.dtype, "output")(h)
    h = Dropout(cfg.hidden_dropout_prob)(h, deterministic=deterministic)
    return _layer_norm(cfg, self.dtype, "output_layer_norm")(h + x_BxLxD)


class Bert(nn.Module):
  """BERT body: embeddings and `num_hidden_layers` layers; returns the last hidden state [B, L, D].

  Packed rows pass `segment_ids_BxL` (0 padding, s >= 1 the row's s-th text: attention stays within a
  text) and `position_ids_BxL` (restarting at 0 for each text); without them a row is one text at
  positions 0..L-1.
  """
  config: BertConfig
  dtype: Any = jnp.float32
  remat: bool = False  # Recompute layer activations in the backward pass (saves memory).

  @nn.compact
  def __call__(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None,
               deterministic: bool = True, segment_ids_BxL=None, position_ids_BxL=None):
    cfg = self.config
    init = nn.initializers.normal(cfg.initializer_range)
    if token_type_ids_BxL is None:
      token_type_ids_BxL = jnp.zeros_like(input_ids_BxL)

    def embed(num, name):
      return nn.Embed(num, cfg.hidden_size, embedding_init=init, param_dtype=jnp.float32, name=name)

    position_embed = embed(cfg.max_position_embeddings, "position_embeddings")
    if position_ids_BxL is None:
      positions_BxLxD = position_embed(jnp.arange(input_ids_BxL.shape[1]) + cfg.position_offset)[None]
    else:
      positions_BxLxD = position_embed(position_ids_BxL + cfg.position_offset)
    x = (embed(cfg.vocab_size, "word_embeddings")(input_ids_BxL) + positions_BxLxD
         + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids_BxL))
    x = _layer_norm(cfg, self.dtype, "embeddings_layer_norm")(x.astype(self.dtype))
    x = Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
    bias = attention_bias(attention_mask_BxL, segment_ids_BxL)
    layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if self.remat else BertLayer
    for i in range(cfg.num_hidden_layers):
      x = layer_cls(cfg, self.dtype, name=f"layer_{i}")(x, bias, deterministic)
    if self.is_initializing():
      # HF BertModel has a pooler (dense + tanh on [CLS]); sentence encoders do not use it, but it is kept
      # so exported checkpoints load into `BertModel` with no missing keys.
      nn.tanh(_dense(cfg.hidden_size, cfg, self.dtype, "pooler")(x[:, 0]))
    return x


def segment_positions(segment_ids_BxL):
  """Position ids restarting at 0 where the segment id changes (each text of a packed row is one run),
  as `packing.pack` lays them out; padding runs count on (harmless: padding is masked and pooled out)."""
  length = segment_ids_BxL.shape[-1]
  index_L = jnp.arange(length, dtype=jnp.int32)
  starts_BxL = jnp.concatenate([jnp.ones_like(segment_ids_BxL[:, :1], dtype=bool),
                                segment_ids_BxL[:, 1:] != segment_ids_BxL[:, :-1]], axis=1)
  run_start_BxL = jax.lax.cummax(jnp.where(starts_BxL, index_L, 0), axis=1)
  return index_L - run_start_BxL


def pool(hidden_BxLxD, mask_BxL, mode: str):
  """Sentence embedding from token states, as sentence-transformers' Pooling module computes it."""
  hidden_BxLxD = hidden_BxLxD.astype(jnp.float32)
  mask = mask_BxL[..., None].astype(jnp.float32)
  if mode == "mean":
    return (hidden_BxLxD * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)
  if mode == "cls":
    return hidden_BxLxD[:, 0]
  if mode == "max":
    return jnp.where(mask > 0, hidden_BxLxD, -1e9).max(1)
  raise ValueError(f"pooling={mode!r}: use one of {POOLING_MODES}.")


def pool_segments(hidden_BxLxD, segment_ids_BxL, num_slots: int, mode: str):
  """One embedding per text of packed rows, [B, S, D] fp32 with S = num_slots: slot s pools the tokens of
  segment s + 1 as `pool` pools a padded row's valid tokens. Empty slots give zeros (the caller drops them).

  Mean pooling is a one-hot matmul at HIGHEST precision (full fp32 where the default would round to
  tf32/bf16, and deterministic, unlike a scatter-add); max is a per-row segment max (order-free, so exact);
  cls takes each segment's first token.
  """
  hidden_BxLxD = hidden_BxLxD.astype(jnp.float32)
  slots_S = jnp.arange(1, num_slots + 1, dtype=segment_ids_BxL.dtype)
  member_BxSxL = segment_ids_BxL[:, None, :] == slots_S[None, :, None]
  if mode == "mean":
    member = member_BxSxL.astype(jnp.float32)
    sums_BxSxD = jnp.einsum("bsl,bld->bsd", member, hidden_BxLxD, precision=jax.lax.Precision.HIGHEST)
    return sums_BxSxD / jnp.maximum(member.sum(-1), 1e-9)[..., None]
  if mode == "cls":
    first_BxS = jnp.argmax(member_BxSxL, axis=-1)  # The first token of each slot (0 for an empty slot).
    emb_BxSxD = jnp.take_along_axis(hidden_BxLxD, first_BxS[..., None], axis=1)
  elif mode == "max":
    # Segment 0 (padding) gets an output of its own, dropped; an empty slot's max is -inf.
    max_fn = lambda h_LxD, s_L: jax.ops.segment_max(h_LxD, s_L, num_segments=num_slots + 1)
    emb_BxSxD = jax.vmap(max_fn)(hidden_BxLxD, segment_ids_BxL)[:, 1:]
  else:
    raise ValueError(f"pooling={mode!r}: use one of {POOLING_MODES}.")
  return jnp.where(member_BxSxL.any(-1)[..., None], emb_BxSxD, 0.0)


def encoder_config(model_config: Mapping[str, Any]) -> EncoderConfig:
  """The EncoderConfig of a training config's `model` block (a ConfigDict, or its dict from a workdir's
  config.json): `bert`, `pooling`, `normalize`, `max_seq_length`, with `dropout_rate` as both BERT dropout
  probabilities. The one place a training config becomes a model config."""
  rate = float(model_config["dropout_rate"])
  bert = dict(model_config["bert"], hidden_dropout_prob=rate, attention_probs_dropout_prob=rate)
  return EncoderConfig(bert=BertConfig(**bert), pooling=model_config["pooling"],
                       normalize=bool(model_config["normalize"]),
                       max_seq_length=int(model_config["max_seq_length"]))


def l2_normalize(x_BxD, eps: float = 1e-12):
  return x_BxD / jnp.maximum(jnp.linalg.norm(x_BxD, axis=-1, keepdims=True), eps)


class SentenceEncoder(nn.Module):
  """BERT + pooling (+ L2 normalisation): texts' token ids -> sentence embeddings [B, D] in fp32."""
  config: EncoderConfig
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    self.bert = Bert(self.config.bert, self.dtype, self.remat)

  def __call__(self, input_ids_BxL, attention_mask_BxL, deterministic: bool = True):
    hidden = self.bert(input_ids_BxL, attention_mask_BxL, deterministic=deterministic)
    emb_BxD = pool(hidden, attention_mask_BxL, self.config.pooling)
    return l2_normalize(emb_BxD) if self.config.normalize else emb_BxD

  def packed(self, input_ids_BxL, segment_ids_BxL, position_ids_BxL, num_slots: int,
             deterministic: bool = True):
    """Packed rows (see `packing.pack`) -> one embedding per text, [B, S, D] fp32 (S = num_slots): slot s
    holds the text of segment s + 1, equal to what `__call__` gives that text alone; empty slots are 0.
    position_ids_BxL None: derived from the segment ids (`segment_positions`)."""
    if position_ids_BxL is None:
      position_ids_BxL = segment_positions(segment_ids_BxL)
    hidden = self.bert(input_ids_BxL, segment_ids_BxL > 0, deterministic=deterministic,
                       segment_ids_BxL=segment_ids_BxL, position_ids_BxL=position_ids_BxL)
    emb_BxSxD = pool_segments(hidden, segment_ids_BxL, num_slots, self.config.pooling)
    if not self.config.normalize:
      return emb_BxSxD
    # Empty slots stay 0 and get a zero gradient (the norm of a zero vector has none: NaN in training).
    slots_S = jnp.arange(1, num_slots + 1, dtype=segment_ids_BxL.dtype)
    filled_BxSx1 = (segment_ids_BxL[:, None, :] == slots_S[None, :, None]).any(-1)[..., None]
    return jnp.where(filled_BxSx1, l2_normalize(jnp.where(filled_BxSx1, emb_BxSxD, 1.0)), 0.0)

  def hidden_states(self, input_ids_BxL, attention_mask_BxL, deterministic: bool = True):
    return self.bert(input_ids_BxL, attention_mask_BxL, deterministic=deterministic)


def init_params(config: EncoderConfig, rng: jax.Array) -> dict:
  """Random-init params ({'bert': ...}) for a fresh encoder."""
  model = SentenceEncoder(config)
  ids = jnp.zeros((1, 8), jnp.int32)
  return model.init(rng, ids, jnp.ones_like(ids))["params"]


def count_params(params, exclude_embeddings: bool = False) -> int:
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = jax.tree_util.keystr(path)
    if exclude_embeddings and "embeddings'" in name and "layer_norm" not in name:
      continue
    total += leaf.size
  return int(total)
