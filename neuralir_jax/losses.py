"""Training objectives on sentence embeddings, kept apart from the encoder.

Sentence-BERT's NLI softmax head (`softmax(W [u; v; |u - v|])`), STS cosine regression, the Euclidean
triplet loss, and InfoNCE / multiple-negatives ranking with optional hard negatives, false-negative masking
by text hash and a fixed or learnable temperature. Losses are means over the local batch so that the `pmean` of
per-device losses equals the loss of the global batch.

The cross-device contrastive loss (`contrastive_loss`) runs per device inside `jax.shard_map` or `jax.pmap`:
queries stay local, candidates (positives, then hard negatives) are all-gathered over the mesh axis, and the
labels are offset by `axis_index * local_batch`. Hard negatives keep their query's order through the gather,
so query g's j-th negative sits at column `global_batch + g * k + j` on every device.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from neuralir_jax import config_lib

NUM_NLI_CLASSES = 3  # 0 entailment, 1 neutral, 2 contradiction.
MIN_TEMPERATURE = 0.01  # Learnable temperatures are clipped so that 1 / tau <= 100 (as CLIP does).
_MASKED_LOGIT = -1e9  # Finite, so a fully masked row gives no NaN.


def init_nli_head(rng: jax.Array, dim: int) -> dict[str, jax.Array]:
  """Params {'kernel': [3 * dim, 3], 'bias': [3]} of the NLI softmax classifier (torch Linear init)."""
  bound = 1.0 / math.sqrt(3 * dim)
  kernel = jax.random.uniform(rng, (3 * dim, NUM_NLI_CLASSES), jnp.float32, -bound, bound)
  return {"kernel": kernel, "bias": jnp.zeros((NUM_NLI_CLASSES,), jnp.float32)}


def nli_logits(head: dict[str, jax.Array], u_BxD: jax.Array, v_BxD: jax.Array) -> jax.Array:
  features_Bx3D = jnp.concatenate([u_BxD, v_BxD, jnp.abs(u_BxD - v_BxD)], axis=-1)
  return features_Bx3D @ head["kernel"] + head["bias"]


def nli_softmax_loss(head: dict[str, jax.Array], u_BxD: jax.Array, v_BxD: jax.Array,
                     labels_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Sentence-BERT's classification objective: (mean cross-entropy, accuracy) over the batch."""
  logits_Bx3 = nli_logits(head, u_BxD, v_BxD)
  log_probs_Bx3 = jax.nn.log_softmax(logits_Bx3, axis=-1)
  nll_B = -jnp.take_along_axis(log_probs_Bx3, labels_B[:, None].astype(jnp.int32), axis=-1)[:, 0]
  accuracy = jnp.mean((jnp.argmax(logits_Bx3, axis=-1) == labels_B).astype(jnp.float32))
  return nll_B.mean(), accuracy


def cosine_similarity(u_BxD: jax.Array, v_BxD: jax.Array, eps: float = 1e-8) -> jax.Array:
  num_B = jnp.sum(u_BxD * v_BxD, axis=-1)
  norms_B = jnp.linalg.norm(u_BxD, axis=-1) * jnp.linalg.norm(v_BxD, axis=-1)
  return num_B / jnp.maximum(norms_B, eps)


def sts_cosine_loss(u_BxD: jax.Array, v_BxD: jax.Array, score_B: jax.Array,
                    max_score: float = 5.0) -> jax.Array:
  """MSE between cos(u, v) and the gold similarity scaled to [0, 1] (sentence-transformers CosineSimilarityLoss)."""
  return jnp.mean((cosine_similarity(u_BxD, v_BxD) - score_B / max_score) ** 2)


def triplet_loss(a_BxD: jax.Array, p_BxD: jax.Array, n_BxD: jax.Array, margin: float = 1.0) -> jax.Array:
  """Mean of max(||a - p|| - ||a - n|| + margin, 0), Euclidean distances (Sentence-BERT's triplet objective)."""
  d_pos_B = jnp.linalg.norm(a_BxD - p_BxD, axis=-1)
  d_neg_B = jnp.linalg.norm(a_BxD - n_BxD, axis=-1)
  return jnp.mean(jax.nn.relu(d_pos_B - d_neg_B + margin))


def margin_mse_loss(student_BxN: jax.Array, teacher_BxN: jax.Array) -> jax.Array:
  """MarginMSE (Hofstaetter et al., 2020; sentence-transformers' MarginMSELoss): column 0 is the positive,
  the others negatives; the mean over queries and negatives of (s_pos - s_neg - (t_pos - t_neg))^2."""
  student = student_BxN[:, :1] - student_BxN[:, 1:]
  teacher = teacher_BxN[:, :1] - teacher_BxN[:, 1:]
  return jnp.mean((student - teacher) ** 2)


def listwise_kl_loss(student_BxN: jax.Array, teacher_BxN: jax.Array, teacher_temperature: float = 1.0
                     ) -> jax.Array:
  """Mean over queries of KL(softmax(teacher / T) || softmax(student)) over each query's candidates."""
  log_p_teacher = jax.nn.log_softmax(teacher_BxN / teacher_temperature, axis=-1)
  log_p_student = jax.nn.log_softmax(student_BxN, axis=-1)
  return jnp.mean(jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1))


def temperature_from_log(log_temperature: jax.Array) -> jax.Array:
  """tau = exp(log_tau), clipped below at MIN_TEMPERATURE (no gradient past the clip)."""
  return jnp.exp(jnp.maximum(log_temperature, math.log(MIN_TEMPERATURE)))


def false_negative_mask(target_hash_B: jax.Array, cand_hash_C: jax.Array, labels_B: jax.Array) -> jax.Array:
  """True where candidate c is one of query b's positives (same id or text hash), except its label.

  target_hash_B: each query's positive; or [B, P]: all P judged positives of each query (padded with
  repeats), so that a query's other relevant documents are not scored as its negatives.
  """
  targets_BxP = target_hash_B if target_hash_B.ndim == 2 else target_hash_B[:, None]
  same_BxC = jnp.any(targets_BxP[:, :, None] == cand_hash_C[None, None, :], axis=1)
  is_label_BxC = jnp.arange(cand_hash_C.shape[0])[None, :] == labels_B[:, None]
  return same_BxC & ~is_label_BxC


def infonce_logits(q_BxD: jax.Array, cand_CxD: jax.Array, temperature: jax.Array | float,
                   mask_BxC: jax.Array | None = None) -> jax.Array:
  """Similarities / tau, with masked (false-negative) candidates pushed to a large negative value."""
  logits_BxC = (q_BxD @ cand_CxD.T) / temperature
  if mask_BxC is not None:
    logits_BxC = jnp.where(mask_BxC, _MASKED_LOGIT, logits_BxC)
  return logits_BxC


def infonce(q_BxD: jax.Array, cand_CxD: jax.Array, labels_B: jax.Array,
            temperature: jax.Array | float = 0.05, mask_BxC: jax.Array | None = None) -> jax.Array:
  """Mean over queries of -log softmax(sim(q, c) / tau)[label] over the candidates.

  Similarity is the dot product; with L2-normalised embeddings (the encoder's default) it is the cosine,
  as in sentence-transformers' MultipleNegativesRankingLoss (whose scale 20 is 1 / 0.05).
  """
  return infonce_of_scores(q_BxD @ cand_CxD.T, labels_B, temperature, mask_BxC)


def infonce_of_scores(scores_BxC: jax.Array, labels_B: jax.Array, temperature: jax.Array | float = 0.05,
                      mask_BxC: jax.Array | None = None) -> jax.Array:
  """InfoNCE of precomputed similarities (e.g. ColBERT's MaxSim): mean over queries of
  -log softmax(scores / tau)[label], masked candidates excluded."""
  logits_BxC = scores_BxC / temperature
  if mask_BxC is not None:
    logits_BxC = jnp.where(mask_BxC, _MASKED_LOGIT, logits_BxC)
  log_probs_BxC = jax.nn.log_softmax(logits_BxC, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_probs_BxC, labels_B[:, None], axis=-1)[:, 0])


# --- Tiled InfoNCE: the [queries, candidates] logits one block of candidates at a time ------------------


def _block_mask(targets_bxP, hash_blk, labels_b, start, valid_blk):
  """[b, block] True where a candidate column is masked: padding past the last candidate, or (with hashes)
  a judged positive of the query other than its label."""
  mask = ~valid_blk[None, :]
  if hash_blk is not None:  # The block's columns start at `start`: labels shift by it.
    mask = mask | false_negative_mask(targets_bxP, hash_blk, labels_b - start)
  return mask


def _zeros_as(like: jax.Array, shape, dtype) -> jax.Array:
  """Zeros that vary over the mesh axes where `like` does (a scan carry inside shard_map must match the
  type its body returns, and that depends on this device's data)."""
  return jnp.zeros(shape, dtype) + (like.reshape(-1)[0] * 0).astype(dtype)


def _blocks(cand_CxD, hash_C, block, live_C=None):
  """Candidates padded to whole blocks: [n, block, D], hashes [n, block] (or None), validity [n, block]
  (False for the padding and for the candidates live_C marks dead, e.g. empty queue slots)."""
  num = cand_CxD.shape[0]
  n = -(-num // block)
  pad = n * block - num
  cands = jnp.pad(cand_CxD, ((0, pad), (0, 0))).reshape(n, block, -1)
  valid = jnp.arange(n * block) < num
  if live_C is not None:
    valid = valid & jnp.pad(live_C, (0, pad))
  hashes = None if hash_C is None else jnp.pad(hash_C, (0, pad)).reshape(n, block)
  return cands, hashes, valid.reshape(n, block)


def _tiled_lse_fwd_scan(q_bxD, cand_CxD, temperature, targets, hash_C, live_C, labels_b, block):
  cands, hashes, valid = _blocks(cand_CxD, hash_C, block, live_C)
  b = q_bxD.shape[0]

  def body(carry, xs):
    m_b, l_b = carry
    c_blk, h_blk, v_blk, i = xs
    s = (q_bxD @ c_blk.T) / temperature
    s = jnp.where(_block_mask(targets, h_blk, labels_b, i * block, v_blk), _MASKED_LOGIT, s)
    m_new = jnp.maximum(m_b, s.max(axis=1))
    l_new = l_b * jnp.exp(m_b - m_new) + jnp.exp(s - m_new[:, None]).sum(axis=1)
    return (m_new, l_new), None

  init = (_zeros_as(q_bxD, (b,), q_bxD.dtype) - jnp.inf, _zeros_as(q_bxD, (b,), q_bxD.dtype))
  xs = (cands, hashes, valid, jnp.arange(cands.shape[0]))
  (m_b, l_b), _ = jax.lax.scan(body, init, xs)
  return m_b + jnp.log(l_b)


@jax.custom_vjp
def _tiled_lse(q_bxD, cand_CxD, temperature, targets, hash_C, live_C, labels_b, block_spec):
  return _tiled_lse_fwd_scan(q_bxD, cand_CxD, temperature, targets, hash_C, live_C, labels_b,
                             block_spec.shape[0])


def _tiled_lse_fwd(q_bxD, cand_CxD, temperature, targets, hash_C, live_C, labels_b, block_spec):
  lse_b = _tiled_lse_fwd_scan(q_bxD, cand_CxD, temperature, targets, hash_C, live_C, labels_b,
                              block_spec.shape[0])
  return lse_b, (q_bxD, cand_CxD, temperature, targets, hash_C, live_C, labels_b, block_spec, lse_b)


def _tiled_lse_bwd(res, g_b):
  """Recomputes each block's logits: p = exp(s - lse); ds = g * p (0 where masked); then dq, dcand and
  dtemperature (s = q.c / tau, so ds/dtau = -s / tau) block by block."""
  q_bxD, cand_CxD, temperature, targets, hash_C, live_C, labels_b, block_spec, lse_b = res
  block = block_spec.shape[0]
  cands, hashes, valid = _blocks(cand_CxD, hash_C, block, live_C)

  def body(carry, xs):
    dq_bxD, dtau = carry
    c_blk, h_blk, v_blk, i = xs
    s = (q_bxD @ c_blk.T) / temperature
    mask = _block_mask(targets, h_blk, labels_b, i * block, v_blk)
    ds = jnp.where(mask, 0.0, g_b[:, None] * jnp.exp(s - lse_b[:, None]))
    dq_bxD = dq_bxD + (ds @ c_blk) / temperature
    dc_blk = (ds.T @ q_bxD) / temperature
    dtau = dtau - jnp.sum(ds * s) / temperature
    return (dq_bxD, dtau), dc_blk

  init = (_zeros_as(g_b, q_bxD.shape, q_bxD.dtype), _zeros_as(g_b, (), jnp.result_type(temperature, jnp.float32)))
  xs = (cands, hashes, valid, jnp.arange(cands.shape[0]))
  (dq_bxD, dtau), dc = jax.lax.scan(body, init, xs)
  dcand = dc.reshape(-1, cand_CxD.shape[1])[:cand_CxD.shape[0]]
  dtau = jnp.asarray(dtau, jnp.result_type(temperature)).reshape(jnp.shape(temperature))
  return dq_bxD, dcand, dtau, None, None, None, None, None


_tiled_lse.defvjp(_tiled_lse_fwd, _tiled_lse_bwd)


def tiled_infonce(q_bxD: jax.Array, cand_CxD: jax.Array, labels_b: jax.Array,
                  temperature: jax.Array | float = 0.05, block_size: int = 1024,
                  targets: jax.Array | None = None, hash_C: jax.Array | None = None,
                  live_C: jax.Array | None = None) -> jax.Array:
  """`infonce` without the [b, C] logits: the log-sum-exp walks blocks of block_size candidates with a
  running max and sum, and the backward pass recomputes each block (custom VJP), so memory is O(b x block).
  Masks come from hashes per block (targets: [b] or [b, P] positives of each query; hash_C: candidates')
  exactly as `false_negative_mask` builds them; None = nothing masked. live_C: False for candidates that
  are not there (empty queue slots), masked like the false negatives."""
  if (targets is None) != (hash_C is None):
    raise ValueError("tiled_infonce: pass both targets and hash_C, or neither.")
  # Varying over the mesh axes like the queries (inside shard_map): its gradient, a sum over this device's
  # queries, then varies too, and autodiff of the add sums it over the devices for a replicated temperature.
  temperature = jnp.asarray(temperature, jnp.float32) + _zeros_as(q_bxD, (), jnp.float32)
  block = max(1, min(int(block_size), cand_CxD.shape[0]))
  block_spec = jnp.zeros((block,), jnp.int8)  # A static size carried as a shape (custom_vjp args are arrays).
  lse_b = _tiled_lse(q_bxD, cand_CxD, temperature, targets, hash_C, live_C, labels_b, block_spec)
  label_logit_b = jnp.sum(q_bxD * cand_CxD[labels_b], axis=-1) / temperature
  return jnp.mean(lse_b - label_logit_b)


def masked_count(targets: jax.Array | None, hash_C: jax.Array | None, labels_b: jax.Array,
                 num_candidates: int, block_size: int, live_C: jax.Array | None = None) -> jax.Array:
  """Mean over queries of the masked live candidates (`(false_negative_mask(...) & live_C).sum(-1)`),
  block by block."""
  if hash_C is None:
    return jnp.float32(0.0)
  block = max(1, min(int(block_size), num_candidates))
  _, hashes, valid = _blocks(jnp.zeros((num_candidates, 1), jnp.float32), hash_C, block, live_C)

  def body(total, xs):
    h_blk, v_blk, i = xs
    mask = _block_mask(targets, h_blk, labels_b, i * block, v_blk) & v_blk[None, :]
    return total + mask.sum().astype(jnp.float32), None

  total, _ = jax.lax.scan(body, _zeros_as(labels_b, (), jnp.float32), (hashes, valid, jnp.arange(hashes.shape[0])))
  return total / labels_b.shape[0]


# --- Sigmoid (SigLIP) pairwise loss -------------------------------------------------------------------


def sigmoid_loss(q_bxD: jax.Array, pos_bxD: jax.Array, neg_bxKxD: jax.Array | None = None, *,
                 log_scale: jax.Array, bias: jax.Array, axis_name: str | None = None,
                 negatives: str = "global", pos_hash_b: jax.Array | None = None,
                 neg_hash_bxK: jax.Array | None = None, judged_hash_bxP: jax.Array | None = None,
                 block_size: int = 1024, queue: dict | None = None) -> jax.Array:
  """SigLIP's pairwise loss (Zhai et al., 2023): -sum over candidates of log sigmoid(z * (t q.c + b)),
  z = +1 for the query's positive and -1 for every other candidate, divided by this device's queries.

  The candidates are InfoNCE's (`gather_candidates`: the global positives, then hard negatives); judged
  positives other than the label (by hash) are left out, neither positive nor negative. The candidates are
  walked in blocks of block_size under `jax.checkpoint`, so memory is O(b x block); t = exp(log_scale)
  and b are learnt. `pmean` over axis_name gives the global loss. queue: earlier steps' candidates, as in
  `contrastive_loss`.
  """
  cand_CxD, labels_b, hash_C = gather_candidates(pos_bxD, neg_bxKxD, pos_hash_b, neg_hash_bxK,
                                                 axis_name=axis_name, negatives=negatives)
  cand_CxD, hash_C, live_C = append_queue(cand_CxD, hash_C, queue, axis_name=axis_name, negatives=negatives)
  targets = None if hash_C is None else (pos_hash_b if judged_hash_bxP is None else judged_hash_bxP)
  block = max(1, min(int(block_size), cand_CxD.shape[0]))
  cands, hashes, valid = _blocks(cand_CxD, hash_C, block, live_C)
  scale = jnp.exp(log_scale)

  @jax.checkpoint
  def body(total, xs):
    c_blk, h_blk, v_blk, i = xs
    z = scale * (q_bxD @ c_blk.T) + bias
    cols = i * block + jnp.arange(block)
    sign = jnp.where(cols[None, :] == labels_b[:, None], 1.0, -1.0)
    left_out = _block_mask(targets, h_blk, labels_b, i * block, v_blk)
    return total + jnp.where(left_out, 0.0, jax.nn.log_sigmoid(sign * z)).sum(), None

  init = _zeros_as(q_bxD, (), jnp.float32)
  total, _ = jax.lax.scan(body, init, (cands, hashes, valid, jnp.arange(cands.shape[0])))
  return -total / q_bxD.shape[0]


# --- Cross-device InfoNCE ---------------------------------------------------------------------------


def _gather_fn(axis_name: str | None, negatives: str):
  if negatives not in config_lib.NEGATIVES:
    raise ValueError(f"negatives={negatives!r}: use one of {config_lib.NEGATIVES}.")
  if axis_name is None or negatives == "local":
    return (lambda x: x), (lambda b: 0)
  return ((lambda x: jax.lax.all_gather(x, axis_name, tiled=True)),
          (lambda b: jax.lax.axis_index(axis_name) * b))


def gather_candidates(pos_bxD: jax.Array, neg_bxKxD: jax.Array | None = None,
                      pos_hash_b: jax.Array | None = None, neg_hash_bxK: jax.Array | None = None, *,
                      axis_name: str | None = None, negatives: str = "global"):
  """Candidates [positives (B); hard negatives (B * k)] visible to this device, labels_b, hashes_C.

  With negatives="global" B is the global batch (gathered over axis_name) and labels are offset by
  axis_index * b; with "local" (or axis_name None) every array stays this device's own.
  """
  gather, offset = _gather_fn(axis_name, negatives)
  b, dim = pos_bxD.shape
  cands, hashes = [gather(pos_bxD)], [gather(pos_hash_b)] if pos_hash_b is not None else None
  if neg_bxKxD is not None:
    cands.append(gather(neg_bxKxD).reshape(-1, dim))  # Row-major: query g's j-th negative at g * k + j.
    if hashes is not None:
      hashes.append(gather(neg_hash_bxK).reshape(-1))
  cand_CxD = jnp.concatenate(cands, axis=0)
  hash_C = None if hashes is None else jnp.concatenate(hashes, axis=0)
  labels_b = offset(b) + jnp.arange(b)
  return cand_CxD, labels_b, hash_C


def append_queue(cand_CxD: jax.Array, hash_C: jax.Array | None, queue: dict | None, *,
                 axis_name: str | None = None, negatives: str = "global"):
  """Candidates followed by the negative queue's (MoCo / cross-batch memory): (cand, hash, live_C).

  queue: this device's shard {'emb': [q, D], 'hash': int32[q], 'valid': bool[q]} of candidate embeddings
  from earlier steps (constants: no gradient flows into them); gathered over axis_name like the batch's
  candidates with negatives="global". They come after every label, so labels do not move; their hashes
  join the false-negative masks (an earlier copy of the query's positive is not its negative); live_C is
  False on empty slots (None without a queue).
  """
  if queue is None:
    return cand_CxD, hash_C, None
  gather, _ = _gather_fn(axis_name, negatives)
  emb = jax.lax.stop_gradient(gather(queue["emb"])).astype(cand_CxD.dtype)
  live_C = jnp.concatenate([jnp.ones((cand_CxD.shape[0],), bool), gather(queue["valid"])])
  if hash_C is not None:
    hash_C = jnp.concatenate([hash_C, gather(queue["hash"])])
  return jnp.concatenate([cand_CxD, emb]), hash_C, live_C


IMPLEMENTATIONS = config_lib.INFONCE_IMPLEMENTATIONS


def contrastive_loss(q_bxD: jax.Array, pos_bxD: jax.Array, neg_bxKxD: jax.Array | None = None, *,
                     temperature: jax.Array | float = 0.05, axis_name: str | None = None,
                     negatives: str = "global", symmetric: bool = False,
                     q_hash_b: jax.Array | None = None, pos_hash_b: jax.Array | None = None,
                     neg_hash_bxK: jax.Array | None = None,
                     judged_hash_bxP: jax.Array | None = None, implementation: str = "dense",
                     block_size: int = 1024, queue: dict | None = None) -> tuple[jax.Array, jax.Array]:
  """InfoNCE of this device's queries against local or gathered candidates -> (loss, negatives per query).

  The loss is this device's mean; `pmean` it over axis_name for the global-batch loss. Hashes (optional)
  mask candidates that are the query's positive (by id or text), or any of its judged positives when
  judged_hash_bxP is given (symmetric term: queries equal to the positive's query). Negatives per query:
  candidates - 1 - masked, e.g. global_B * (1 + k) - 1 with nothing masked. implementation "dense" builds
  the [b, C] logits; "tiled" walks blocks of block_size candidates (`tiled_infonce`), same values.
  queue (`append_queue`): earlier steps' candidates join the query -> document term; its empty slots are
  masked and not counted.
  """
  if (neg_bxKxD is None) != (neg_hash_bxK is None) and pos_hash_b is not None:
    raise ValueError("pass neg_hash_bxK with neg_bxKxD (or no hashes at all).")
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation={implementation!r}: use one of {IMPLEMENTATIONS}.")
  cand_CxD, labels_b, hash_C = gather_candidates(pos_bxD, neg_bxKxD, pos_hash_b, neg_hash_bxK,
                                                 axis_name=axis_name, negatives=negatives)
  cand_CxD, hash_C, live_C = append_queue(cand_CxD, hash_C, queue, axis_name=axis_name, negatives=negatives)
  targets = pos_hash_b if judged_hash_bxP is None else judged_hash_bxP
  if implementation == "tiled":
    tiled_targets = None if hash_C is None else targets
    loss = tiled_infonce(q_bxD, cand_CxD, labels_b, temperature, block_size, tiled_targets, hash_C, live_C)
    masked = masked_count(tiled_targets, hash_C, labels_b, cand_CxD.shape[0], block_size, live_C)
  else:
    mask_bxC = None if hash_C is None else false_negative_mask(targets, hash_C, labels_b)
    if mask_bxC is not None and live_C is not None:
      mask_bxC = mask_bxC & live_C[None, :]  # Count only the live candidates' false negatives.
    masked = 0.0 if mask_bxC is None else jnp.mean(mask_bxC.sum(-1).astype(jnp.float32))
    if live_C is not None:
      mask_bxC = ~live_C[None, :] if mask_bxC is None else mask_bxC | ~live_C[None, :]
    loss = infonce(q_bxD, cand_CxD, labels_b, temperature, mask_bxC)
  live = cand_CxD.shape[0] if live_C is None else live_C.sum()
  negatives_per_query = jnp.float32(live - 1) - masked
  if symmetric:
    q_all_QxD, labels_b, q_hash_Q = gather_candidates(q_bxD, None, q_hash_b, None,
                                                      axis_name=axis_name, negatives=negatives)
    if implementation == "tiled":
      reverse = tiled_infonce(pos_bxD, q_all_QxD, labels_b, temperature, block_size,
                              None if q_hash_Q is None else q_hash_b, q_hash_Q)
    else:
      mask_bxQ = None if q_hash_Q is None else false_negative_mask(q_hash_b, q_hash_Q, labels_b)
      reverse = infonce(pos_bxD, q_all_QxD, labels_b, temperature, mask_bxQ)
    loss = 0.5 * (loss + reverse)
  return loss, negatives_per_query
