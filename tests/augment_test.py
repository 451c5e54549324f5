"""Augmented SBERT: silver pairs sampled by BM25 or a bi-encoder, labelled by a cross-encoder, read back as an
STS source beside the gold one."""

import numpy as np
import pytest

from neuralir_jax import augment, cli, data, readers
from tests.train_helpers import save_tiny_cross_encoder

GOLD = [("A man is playing a guitar.", "A man plays the guitar.", 4.8),
        ("A woman is slicing an onion.", "A woman cuts an onion.", 4.2),
        ("A man is playing a flute.", "A man plays a guitar loudly.", 1.6),
        ("A dog runs in the park.", "A cat sleeps on the sofa.", 0.4),
        ("Two dogs run in a park.", "A woman is slicing an onion.", 0.0)]


def _rows():
  return [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in GOLD]


def _write_gold(path):
  path.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in GOLD))
  return str(path)


def _check_sampled(pairs, rows, neighbours_of, k):
  gold = {frozenset((r["sentence1"], r["sentence2"])) for r in rows}
  keys = [frozenset(p) for p in pairs]
  assert len(keys) == len(set(keys)) and not set(keys) & gold and all(a != b for a, b in pairs)
  for a, b in pairs:  # The second sentence is one of the first's (or the first of the second's) top k.
    assert b in neighbours_of[a][:k] or a in neighbours_of[b][:k]
  return set(keys)


def test_bm25_pairs_are_each_sentences_top_k_minus_gold_and_repeats():
  import bm25s
  rows = _rows()
  sentences = augment.distinct_sentences(rows)
  assert len(sentences) == 9  # "A woman is slicing an onion." appears twice in the gold pairs.
  pairs = augment.sample_pairs(rows, augment.BM25, k=2)
  # The reference: bm25s over the same sentences (lucene, English stopwords and stemmer, as `mine` scores).
  import Stemmer
  tok = bm25s.tokenization.Tokenizer(lower=True, stopwords="en", stemmer=Stemmer.Stemmer("english"))
  retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
  retriever.index(tok.tokenize(sentences, return_as="tuple", show_progress=False), show_progress=False)
  ids = tok.tokenize(sentences, update_vocab=False, return_as="ids", show_progress=False)
  neighbours_of = {}
  for i, q in enumerate(sentences):
    s = np.asarray(retriever.get_scores(list(ids[i])))
    order = [j for j in np.argsort(-s, kind="stable") if j != i and s[j] > 0]
    neighbours_of[q] = [sentences[j] for j in order]
  keys = _check_sampled(pairs, rows, neighbours_of, 2)
  assert frozenset(("A man is playing a flute.", "A man is playing a guitar.")) in keys
  # Every sentence's top-2 partners are there unless the pair is gold or met earlier.
  gold = {frozenset((r["sentence1"], r["sentence2"])) for r in rows}
  for a in sentences:
    for b in neighbours_of[a][:2]:
      assert frozenset((a, b)) in keys | gold


def test_dense_pairs_follow_the_bi_encoders_cosines(minilm_path):
  from neuralir_jax import encoder as encoder_lib
  model = encoder_lib.load_encoder(minilm_path)
  rows = _rows()
  sentences = augment.distinct_sentences(rows)
  pairs = augment.sample_pairs(rows, model, k=1)
  emb = model.encode_document(sentences)
  cos = emb @ emb.T / np.outer(np.linalg.norm(emb, axis=1), np.linalg.norm(emb, axis=1))
  np.fill_diagonal(cos, -np.inf)
  neighbours_of = {q: [sentences[j] for j in np.argsort(-cos[i])] for i, q in enumerate(sentences)}
  keys = _check_sampled(pairs, rows, neighbours_of, 1)
  assert frozenset(("A dog runs in the park.", "Two dogs run in a park.")) in keys


def test_cli_labels_with_the_cross_encoder_and_trains_beside_gold(tmp_path, minilm_path):
  """Silver scores are 5 x sentence-transformers' CrossEncoder.predict; the TSV is an sts: source."""
  from sentence_transformers import CrossEncoder
  gold = _write_gold(tmp_path / "gold.tsv")
  ce = save_tiny_cross_encoder(str(tmp_path / "ce"), minilm_path)
  out = tmp_path / "silver.tsv"
  assert cli.run(["augment", "--data", f"sts:{gold}", "--sampler", "bm25", "--cross-encoder", ce, "--top-k", "2",
                  "--output", str(out)]) == 0
  silver = readers.read_sts(str(out))
  pairs = [(r["sentence1"], r["sentence2"]) for r in silver]
  assert pairs == augment.sample_pairs(_rows(), augment.BM25, k=2)
  want = 5.0 * CrossEncoder(ce).predict(pairs)
  assert np.std(want) > 0.05
  np.testing.assert_allclose([r["score"] for r in silver], want, atol=1e-3)  # Written with 4 decimals.
  joined = data.load_records(f"sts:{gold},sts:{out}", "pairs")
  assert len(joined) == len(GOLD) + len(silver) and joined[len(GOLD)]["sentence1"] == pairs[0][0]
  with pytest.raises(FileExistsError, match="silver.tsv: already exists"):
    cli.run(["augment", "--data", f"sts:{gold}", "--sampler", "bm25", "--cross-encoder", ce, "--output", str(out)])
  with pytest.raises(ValueError, match=r"--data beir:x: use an sts:FILE.tsv source"):
    cli.run(["augment", "--data", "beir:x", "--sampler", "bm25", "--cross-encoder", ce,
             "--output", str(tmp_path / "new.tsv")])
