"""Tests for search: exact search against numpy, ScaNN recall, and the saved-index manifest."""

import json
import os

import numpy as np
import pytest

from neuralir_jax import search


def _unit(x):
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n, d, seed, num_clusters=40, noise=0.4):
  """Unit vectors around random centres: structured like real embeddings, unlike isotropic noise."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_clusters, d))
  return _unit(centres[rng.integers(0, num_clusters, n)] + noise * rng.normal(size=(n, d)))


def _numpy_topk(q, c, k):
  s = q.astype(np.float64) @ c.astype(np.float64).T
  idx = np.argsort(-s, axis=1, kind="stable")[:, :k]  # Stable: equal scores keep the lower index first.
  return np.take_along_axis(s, idx, axis=1), idx


@pytest.mark.parametrize("num_docs,chunk_size,k", [(1000, 128, 10), (1000, 1000, 37), (257, 64, 100), (5, 64, 10)])
def test_exact_search_matches_numpy(num_docs, chunk_size, k):
  rng = np.random.default_rng(num_docs)
  corpus = _unit(rng.normal(size=(num_docs, 32)))
  queries = _unit(rng.normal(size=(45, 32)))  # Not a multiple of the query block: padding is exercised.
  scores, idx = search.exact_search(queries, corpus, k, chunk_size=chunk_size, query_block_size=16)
  ref_s, ref_i = _numpy_topk(queries, corpus, k)
  assert idx.shape == (45, min(k, num_docs))
  np.testing.assert_array_equal(idx, ref_i)
  np.testing.assert_allclose(scores, ref_s, atol=1e-5)


def test_exact_search_ties_across_chunks_prefer_lower_index():
  rng = np.random.default_rng(0)
  corpus = _unit(rng.normal(size=(300, 16)))
  corpus[[5, 130, 299]] = corpus[260]  # Identical documents in three different chunks of 128.
  queries = corpus[[260, 7]] + 0.0
  _, idx = search.exact_search(queries, corpus, 4, chunk_size=128)
  assert idx[0].tolist() == [5, 130, 260, 299]
  assert idx[1, 0] == 7


def test_exact_search_compiles_once_for_many_chunks():
  rng = np.random.default_rng(1)
  corpus = _unit(rng.normal(size=(1000, 8)))
  queries = _unit(rng.normal(size=(24, 8)))
  before = search._merge_chunk._cache_size()
  search.exact_search(queries, corpus, 5, chunk_size=64)  # 16 chunks, the last one padded.
  assert search._merge_chunk._cache_size() == before + 1


def test_bad_shapes_raise_clear_errors():
  with pytest.raises(ValueError, match="dim 8 but the corpus has dim 4"):
    search.search(np.zeros((2, 8)), np.zeros((3, 4)), 1)
  with pytest.raises(ValueError, match="unknown index"):
    search.search(np.zeros((2, 4)), np.zeros((3, 4)), 1, index="faiss")
  with pytest.raises(ValueError, match="unknown ScaNN config keys"):
    search.scann_params(100, {"leaves": 3})


def test_scann_defaults_from_corpus_size():
  small = search.scann_params(5_000)
  assert small["mode"] == "brute_force"
  big = search.scann_params(1_000_000, {"num_neighbors": 10})
  assert big["mode"] == "tree_ah"
  assert big["num_leaves"] == 1000 and big["num_leaves_to_search"] == 100
  assert big["training_sample_size"] == 250_000 and big["reorder_num_neighbors"] == 100
  forced = search.scann_params(5_000, {"mode": "tree_ah"})
  assert forced["num_leaves"] == 71 and forced["num_leaves_to_search"] == 32


def test_scann_brute_force_is_exact():
  data = _clustered(3100, 32, seed=2)
  corpus, queries = data[:3000], data[3000:]
  _, exact_i = search.exact_search(queries, corpus, 10)
  scores, idx = search.search(queries, corpus, 10, index="scann")  # 3,000 docs: brute force.
  np.testing.assert_array_equal(idx, exact_i)
  np.testing.assert_allclose(scores, np.take_along_axis(queries @ corpus.T, idx, axis=1), atol=1e-5)


def test_scann_tree_ah_recall_high():
  data = _clustered(4200, 64, seed=4)  # Queries from the same clusters as the documents, held out.
  corpus, queries = data[:4000], data[4000:]
  _, exact_i = search.exact_search(queries, corpus, 10)
  _, idx = search.search(queries, corpus, 10, index="scann", scann_config={"mode": "tree_ah"})
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact_i)])
  assert recall >= 0.95


def test_scann_index_saved_reused_and_rebuilt_when_stale(tmp_path):
  corpus = _clustered(2000, 16, seed=6)
  queries = corpus[:20]
  config = {"mode": "tree_ah", "num_neighbors": 5}
  index_dir = str(tmp_path / "idx")
  first, reused = search.load_or_build_scann(corpus, config, index_dir)
  assert not reused
  manifest = json.load(open(os.path.join(index_dir, search.MANIFEST)))
  assert manifest["num_docs"] == 2000 and manifest["dim"] == 16
  assert manifest["embeddings_sha256"] == search.embeddings_hash(corpus)
  second, reused = search.load_or_build_scann(corpus, config, index_dir)
  assert reused
  np.testing.assert_array_equal(search.scann_search(first, queries, 5)[1],
                                search.scann_search(second, queries, 5)[1])
  # Changed embeddings (e.g. a retrained model): the index must be rebuilt, not reused.
  changed = corpus.copy()
  changed[0] = -changed[0]
  third, reused = search.load_or_build_scann(changed, config, index_dir)
  assert not reused
  _, idx = search.scann_search(third, changed[:1], 1)
  assert idx[0, 0] == 0
  # Changed parameters: rebuilt too.
  _, reused = search.load_or_build_scann(changed, {**config, "num_leaves": 10}, index_dir)
  assert not reused
