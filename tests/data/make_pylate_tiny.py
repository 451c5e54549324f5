"""Writes tests/data/pylate_tiny/ and tests/data/pylate_tiny_golden.npz with PyLate itself (run in a
separate environment: PyLate 1.6 pins sentence-transformers 5.3, see benchmarks/pylate_parity.sh):

  PYTHON=.venv-pylate/bin/python; $PYTHON tests/data/make_pylate_tiny.py MINILM_DIR

A 1-layer, hidden-16 random BERT with MiniLM's tokenizer, turned into a PyLate ColBERT with PyLate's
defaults (markers "[Q] " / "[D] " added to the vocabulary, [MASK] query expansion to 16 tokens, not
attended, punctuation skiplist) and an 8-wide projection; documents up to 24 tokens. The golden file holds
PyLate's token vectors of QUERIES and DOCUMENTS and its MaxSim scores (pylate.scores.colbert_scores).
"""

import os
import shutil
import sys

import numpy as np
import torch
import transformers
from pylate import models, scores

QUERIES = ["what is a cat?", "How do vaccines train the immune system, and for how long does the memory last?"]
DOCUMENTS = ["A cat, is small.", "Vaccines expose the immune system to a harmless antigen; memory cells "
             "remember it for years, sometimes for life (see: B cells).", "Paris is the capital of France."]


def main(minilm: str) -> None:
  here = os.path.dirname(os.path.abspath(__file__))
  body, out = os.path.join(here, "_pylate_body"), os.path.join(here, "pylate_tiny")
  shutil.rmtree(body, ignore_errors=True)
  shutil.rmtree(out, ignore_errors=True)
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=64, initializer_range=0.5)
  transformers.BertModel(config, add_pooling_layer=False).save_pretrained(body)
  transformers.AutoTokenizer.from_pretrained(minilm).save_pretrained(body)
  model = models.ColBERT(body, device="cpu", embedding_size=8, query_length=16, document_length=24)
  model.save(out)
  shutil.rmtree(body)
  os.remove(os.path.join(out, "README.md"))  # A generated model card, not needed to load.
  model = models.ColBERT(out, device="cpu")  # As a user loads it.
  q = model.encode(QUERIES, is_query=True, convert_to_numpy=True)
  d = model.encode(DOCUMENTS, is_query=False, convert_to_numpy=True)
  s = scores.colbert_scores(torch.as_tensor(np.stack(q)), torch.nn.utils.rnn.pad_sequence(
      [torch.as_tensor(x) for x in d], batch_first=True)).numpy()
  np.savez(os.path.join(here, "pylate_tiny_golden.npz"), scores=s, **{f"query{i}": x for i, x in enumerate(q)},
           **{f"document{i}": x for i, x in enumerate(d)})
  print("query shapes", [x.shape for x in q], "document shapes", [x.shape for x in d], "scores", s)


if __name__ == "__main__":
  main(sys.argv[1])
