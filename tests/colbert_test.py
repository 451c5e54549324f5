"""Multi-vector (ColBERT) directories: token vectors and MaxSim == sentence-transformers' MultiVectorEncoder,
for the plain layout MultiVectorEncoder(<MiniLM>) saves and for ColBERT's markers, [MASK] query expansion and
punctuation skiplist."""

import string

import numpy as np
import pytest

from neuralir_jax import cli, colbert
from tests.train_helpers import save_tiny_encoder

QUERIES = ["what is a cat?", "How do vaccines train the immune system?"]
DOCUMENTS = ["A cat, is small.", "Vaccines expose the immune system to a harmless antigen; memory cells "
             "remember it.", "Paris is the capital of France."]


def _save(path, body, colbert_options):
  import torch
  from sentence_transformers import MultiVectorEncoder
  torch.manual_seed(0)
  model = MultiVectorEncoder(body, device="cpu")
  if colbert_options:
    model[0].query_expansion = {"strategy": "fixed", "attend": False, "length": 32}
    model[2].skiplist_words = list(string.punctuation)
    model[2].resolve_with_tokenizer(model.tokenizer)
    model.prompts = {"query": "[unused0] ", "document": "[unused1] "}
    model._register_prefix_tokens(model.prompts)
  model.save(path)
  return model


@pytest.mark.parametrize("colbert_options", [False, True], ids=["plain", "colbert"])
def test_token_vectors_and_maxsim_equal_sentence_transformers(tmp_path, minilm_path, colbert_options):
  """A 1-layer random BERT with MiniLM's tokenizer as the body (what MultiVectorEncoder builds from a plain
  HF directory: + a 128-wide projection), saved by sentence-transformers."""
  path = str(tmp_path / "mv")
  _save(path, save_tiny_encoder(str(tmp_path / "body"), minilm_path), colbert_options)
  from sentence_transformers import MultiVectorEncoder
  st = MultiVectorEncoder(path, device="cpu")
  ours = colbert.load_multi_vector(path)
  for got, want in zip(ours.encode_query(QUERIES), st.encode_query(QUERIES, convert_to_numpy=True)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
  for got, want in zip(ours.encode_document(DOCUMENTS), st.encode_document(DOCUMENTS, convert_to_numpy=True)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
  if colbert_options:  # 32 query vectors ([MASK] expansion); the document's ", " and "." are not scored.
    assert ours.encode_query(QUERIES[:1])[0].shape[0] == 32
    assert ours.encode_document(DOCUMENTS[:1])[0].shape[0] == 7
  pairs = [(q, d) for q in QUERIES for d in DOCUMENTS]
  (tmp_path / "pairs.tsv").write_text("".join(f"{q}\t{d}\n" for q, d in pairs))
  out = tmp_path / "scores.npy"
  assert cli.run(["score", "--model", path, "--input", str(tmp_path / "pairs.tsv"), "--output", str(out)]) == 0
  q_st, d_st = st.encode_query(QUERIES), st.encode_document(DOCUMENTS)
  want = np.asarray(st.similarity(q_st, d_st)).reshape(-1)
  assert np.std(want) > 0.1  # Scores differ across pairs: a real comparison.
  np.testing.assert_allclose(np.load(out), want, atol=1e-4, rtol=1e-5)
