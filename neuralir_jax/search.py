"""Top-k dot-product search: exact (matmul + top-k on the accelerator) and approximate (ScaNN).

Embeddings are L2-normalised upstream, so the dot product is the cosine. `exact_search` streams the corpus
through the device in fixed-size chunks and keeps a running top-k for every query, so a multi-million
corpus never has to sit on the device at once; the last chunk and the query blocks are padded so the jitted
step compiles once per (num_queries, k). `build_scann` builds a ScaNN searcher (tree + asymmetric hashing +
exact reordering, brute force below ~20k documents), with defaults derived from the corpus size and
overridable from a dict or ConfigDict; `load_or_build_scann` saves it with a manifest (corpus size, dim,
parameters, hash of the embeddings) and rebuilds it when the manifest no longer matches. `search` is the one
entry point the evaluators use.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

MANIFEST = "neuralir_manifest.json"
_MANIFEST_VERSION = 1

SCANN_DEFAULTS = {
    "mode": "auto",  # "auto" (brute force below brute_force_threshold docs), "tree_ah" or "brute_force".
    "brute_force_threshold": 20_000,  # Corpus size below which "auto" uses brute force.
    "num_neighbors": 100,  # Default k stored in the searcher; search() passes its own k anyway.
    "num_leaves": None,  # Tree partitions; None: ~sqrt(N).
    "num_leaves_to_search": None,  # Partitions probed per query; None: max(num_leaves // 10, min(num_leaves, 32)).
    "training_sample_size": None,  # Points used to train the tree and AH codebooks; None: min(N, 250k).
    "dimensions_per_block": 2,  # AH: dims per 16-centroid codebook (2 is ScaNN's recommended value).
    "anisotropic_quantization_threshold": 0.2,  # AH anisotropic loss threshold (for unit-norm data).
    "reorder_num_neighbors": None,  # Candidates re-scored exactly; None: max(4 * num_neighbors, 100).
    "num_threads": 0,  # Search threads (0: all cores).
}


# ----------------------------------------------------------------------------------------------------------
# Exact search.


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


@functools.partial(jax.jit, static_argnames=("k", "precision"), donate_argnums=(0, 1))
def _merge_chunk(best_QxK, best_idx_QxK, q_BxQbxD, chunk_CxD, offset, num_valid, *, k, precision):
  """Scores one corpus chunk against every query block and merges it into the running top-k."""
  num_blocks, qb, _ = q_BxQbxD.shape
  valid_C = jnp.arange(chunk_CxD.shape[0]) < num_valid
  idx_C = offset + jnp.arange(chunk_CxD.shape[0], dtype=jnp.int32)

  def one_block(args):
    q_QbxD, best_QbxK, best_idx_QbxK = args
    s_QbxC = jnp.matmul(q_QbxD, chunk_CxD.T, precision=precision)
    s_QbxC = jnp.where(valid_C[None], s_QbxC, -jnp.inf)
    # Running results come first so that, on equal scores, the lower document index wins (top_k is stable).
    cat_s = jnp.concatenate([best_QbxK, s_QbxC], axis=1)
    cat_i = jnp.concatenate([best_idx_QbxK, jnp.broadcast_to(idx_C, s_QbxC.shape)], axis=1)
    top_s, pos = jax.lax.top_k(cat_s, k)
    return top_s, jnp.take_along_axis(cat_i, pos, axis=1)

  best = best_QxK.reshape(num_blocks, qb, k)
  best_idx = best_idx_QxK.reshape(num_blocks, qb, k)
  s, i = jax.lax.map(one_block, (q_BxQbxD, best, best_idx))
  return s.reshape(-1, k), i.reshape(-1, k)


def _check_embeddings(queries_QxD, corpus_NxD) -> tuple[np.ndarray, np.ndarray]:
  queries_QxD = np.asarray(queries_QxD, dtype=np.float32)
  corpus_NxD = np.asarray(corpus_NxD, dtype=np.float32)
  if queries_QxD.ndim != 2 or corpus_NxD.ndim != 2:
    raise ValueError(f"queries and corpus must be 2-D [n, d]; got shapes {queries_QxD.shape} and {corpus_NxD.shape}")
  if queries_QxD.shape[1] != corpus_NxD.shape[1]:
    raise ValueError(f"queries have dim {queries_QxD.shape[1]} but the corpus has dim {corpus_NxD.shape[1]}; "
                     "encode both with the same model")
  if corpus_NxD.shape[0] == 0:
    raise ValueError("the corpus is empty; nothing to search")
  return queries_QxD, corpus_NxD


def exact_search(
    queries_QxD: np.ndarray,
    corpus_NxD: np.ndarray,
    k: int,
    *,
    chunk_size: int = 65_536,
    query_block_size: int = 1024,
    precision: str = "highest",
) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k by dot product. Returns `(scores_QxK, indices_QxK)`, best first, with K = min(k, N).

  The corpus goes to the device `chunk_size` rows at a time (the last chunk is zero-padded and masked);
  queries are processed in blocks of `query_block_size` inside each chunk. Equal scores rank the lower
  corpus index first. `precision="highest"` keeps float32 matmuls exact on GPUs/TPUs (no TF32/bf16 passes);
  "default" is faster there when a tiny score error is acceptable.
  """
  queries_QxD, corpus_NxD = _check_embeddings(queries_QxD, corpus_NxD)
  num_q, dim = queries_QxD.shape
  num_docs = corpus_NxD.shape[0]
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  k = min(k, num_docs)
  chunk = max(k, min(chunk_size, _round_up(num_docs, 8)))
  qb = min(query_block_size, _round_up(max(num_q, 1), 8))
  q_pad = _round_up(max(num_q, 1), qb)
  q_BxQbxD = np.zeros((q_pad, dim), np.float32)
  q_BxQbxD[:num_q] = queries_QxD
  q_BxQbxD = jnp.asarray(q_BxQbxD.reshape(q_pad // qb, qb, dim))
  best = jnp.full((q_pad, k), -jnp.inf, jnp.float32)
  best_idx = jnp.full((q_pad, k), -1, jnp.int32)
  prec = jax.lax.Precision.HIGHEST if precision == "highest" else jax.lax.Precision.DEFAULT
  for start in range(0, num_docs, chunk):
    part = corpus_NxD[start:start + chunk]
    if part.shape[0] < chunk:
      part = np.concatenate([part, np.zeros((chunk - part.shape[0], dim), np.float32)])
    best, best_idx = _merge_chunk(best, best_idx, q_BxQbxD, jnp.asarray(part), np.int32(start),
                                  np.int32(min(chunk, num_docs - start)), k=k, precision=prec)
  return np.asarray(best)[:num_q], np.asarray(best_idx)[:num_q]


# ----------------------------------------------------------------------------------------------------------
# ScaNN.


@dataclasses.dataclass
class ScannIndex:
  """A ScaNN searcher and the resolved parameters it was built with."""
  searcher: Any
  params: dict


def _as_dict(config) -> dict:
  if config is None:
    return {}
  return dict(config.to_dict() if hasattr(config, "to_dict") else config)


def scann_params(num_docs: int, config: Mapping[str, Any] | None = None) -> dict:
  """SCANN_DEFAULTS overridden by `config`, with the size-dependent defaults filled in for `num_docs`."""
  config = _as_dict(config)
  unknown = set(config) - set(SCANN_DEFAULTS)
  if unknown:
    raise ValueError(f"unknown ScaNN config keys {sorted(unknown)}; valid keys: {sorted(SCANN_DEFAULTS)}")
  p = {**SCANN_DEFAULTS, **config}
  if p["mode"] not in ("auto", "tree_ah", "brute_force"):
    raise ValueError(f"ScaNN mode must be 'auto', 'tree_ah' or 'brute_force', got {p['mode']!r}")
  if p["mode"] == "auto":
    p["mode"] = "brute_force" if num_docs < p["brute_force_threshold"] else "tree_ah"
  if p["mode"] == "brute_force":
    for key in ("num_leaves", "num_leaves_to_search", "training_sample_size", "reorder_num_neighbors"):
      p[key] = None
    return p
  if p["num_leaves"] is None:
    p["num_leaves"] = max(2, int(round(math.sqrt(num_docs))))
  p["num_leaves"] = min(p["num_leaves"], num_docs)
  if p["num_leaves_to_search"] is None:
    p["num_leaves_to_search"] = max(p["num_leaves"] // 10, min(p["num_leaves"], 32))
  if p["num_leaves_to_search"] > p["num_leaves"]:
    raise ValueError(f"num_leaves_to_search={p['num_leaves_to_search']} exceeds num_leaves={p['num_leaves']}")
  if p["training_sample_size"] is None:
    p["training_sample_size"] = min(num_docs, 250_000)
  if p["reorder_num_neighbors"] is None:
    p["reorder_num_neighbors"] = max(4 * p["num_neighbors"], 100)
  return p


def build_scann(corpus_NxD: np.ndarray, config: Mapping[str, Any] | None = None) -> ScannIndex:
  """Builds a dot-product ScaNN searcher over `corpus_NxD` (see SCANN_DEFAULTS for the parameters)."""
  import scann  # Imported lazily: it is large and only ScaNN evaluations need it.

  corpus_NxD = np.ascontiguousarray(corpus_NxD, dtype=np.float32)
  if corpus_NxD.ndim != 2 or corpus_NxD.shape[0] == 0:
    raise ValueError(f"ScaNN needs a non-empty 2-D corpus [n, d], got shape {corpus_NxD.shape}")
  p = scann_params(corpus_NxD.shape[0], config)
  builder = scann.scann_ops_pybind.builder(corpus_NxD, p["num_neighbors"], "dot_product")
  if p["mode"] == "brute_force":
    builder = builder.score_brute_force()
  else:
    builder = builder.tree(
        num_leaves=p["num_leaves"], num_leaves_to_search=p["num_leaves_to_search"],
        training_sample_size=p["training_sample_size"],
    ).score_ah(
        p["dimensions_per_block"],
        anisotropic_quantization_threshold=p["anisotropic_quantization_threshold"],
        training_sample_size=p["training_sample_size"],
    ).reorder(p["reorder_num_neighbors"])
  return ScannIndex(builder.build(), p)


def scann_search(index: ScannIndex, queries_QxD: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Approximate top-k. Returns `(scores_QxK, indices_QxK)`; missing neighbours have index -1, score -inf."""
  queries_QxD = np.ascontiguousarray(queries_QxD, dtype=np.float32)
  num_docs = index.searcher.size()
  k = min(k, num_docs)
  kwargs = {"final_num_neighbors": k}
  if index.params["mode"] == "tree_ah":
    kwargs["pre_reorder_num_neighbors"] = max(k, index.params["reorder_num_neighbors"])
  if index.params["num_threads"]:
    index.searcher.set_num_threads(index.params["num_threads"])
  idx, dist = index.searcher.search_batched_parallel(queries_QxD, **kwargs)
  idx = np.asarray(idx, dtype=np.int64)
  dist = np.asarray(dist, dtype=np.float32)
  if idx.shape[1] < k:  # ScaNN returns fewer columns when no query found k candidates.
    pad = k - idx.shape[1]
    idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
    dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=-np.inf)
  dist = np.where(idx < 0, -np.inf, dist)
  return dist, idx


def embeddings_hash(corpus_NxD: np.ndarray) -> str:
  """sha256 of the float32 embeddings and their shape: a changed corpus or model gives a new hash."""
  arr = np.ascontiguousarray(corpus_NxD, dtype=np.float32)
  h = hashlib.sha256(repr(arr.shape).encode())
  flat = arr.reshape(-1)
  step = 1 << 24  # Hash 64 MiB at a time to bound the temporary memory.
  for i in range(0, flat.size, step):
    h.update(flat[i:i + step].tobytes())
  return h.hexdigest()


def _manifest(corpus_NxD: np.ndarray, params: dict) -> dict:
  import scann

  return {
      "version": _MANIFEST_VERSION,
      "num_docs": int(corpus_NxD.shape[0]),
      "dim": int(corpus_NxD.shape[1]),
      "params": {k: v for k, v in params.items() if k != "num_threads"},  # Threads don't change the index.
      "embeddings_sha256": embeddings_hash(corpus_NxD),
      "scann_version": getattr(scann, "__version__", "unknown"),
  }


def load_or_build_scann(
    corpus_NxD: np.ndarray, config: Mapping[str, Any] | None, index_dir: str
) -> tuple[ScannIndex, bool]:
  """Loads the index saved in `index_dir` if its manifest matches this corpus and config, else builds
  (and saves) a new one. Returns `(index, reused)`."""
  import scann

  corpus_NxD = np.ascontiguousarray(corpus_NxD, dtype=np.float32)
  params = scann_params(corpus_NxD.shape[0], config)
  wanted = _manifest(corpus_NxD, params)
  path = os.path.join(index_dir, MANIFEST)
  if os.path.isfile(path):
    with open(path) as f:
      found = json.load(f)
    if found == wanted:
      logging.info("Reusing the ScaNN index in %s.", index_dir)
      return ScannIndex(scann.scann_ops_pybind.load_searcher(index_dir), params), True
    stale = sorted(key for key in wanted if found.get(key) != wanted[key])
    logging.warning("ScaNN index in %s is stale (%s differ); rebuilding it.", index_dir, ", ".join(stale))
  index = build_scann(corpus_NxD, config)
  os.makedirs(index_dir, exist_ok=True)
  if os.path.exists(path):
    os.remove(path)  # A crash while serialising must not leave a manifest that vouches for stale files.
  index.searcher.serialize(index_dir, relative_path=True)
  with open(path, "w") as f:
    json.dump(wanted, f, indent=2)
  return index, False


def search(
    queries_QxD: np.ndarray,
    corpus_NxD: np.ndarray,
    k: int,
    *,
    index: str = "exact",
    scann_config: Mapping[str, Any] | None = None,
    index_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Top-k dot-product search with `index="exact"` or `"scann"`. Returns `(scores_QxK, indices_QxK)`.

  For ScaNN, `index_dir` (optional) is where the index is saved and reused while it matches the corpus.
  """
  queries_QxD, corpus_NxD = _check_embeddings(queries_QxD, corpus_NxD)
  if index == "exact":
    return exact_search(queries_QxD, corpus_NxD, k)
  if index != "scann":
    raise ValueError(f"unknown index {index!r}; use 'exact' or 'scann'")
  config = _as_dict(scann_config)
  config.setdefault("num_neighbors", k)
  if index_dir:
    built, _ = load_or_build_scann(corpus_NxD, config, index_dir)
  else:
    built = build_scann(corpus_NxD, config)
  return scann_search(built, queries_QxD, k)
