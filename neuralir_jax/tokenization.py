"""Tokenisation with truncation and length buckets, shared by training, encoding and evaluation.

A batch of texts is tokenised with the model directory's fast tokenizer (`tokenizer.json`), truncated to
`max_length`, and padded to the smallest bucket that holds its longest sequence, so jitted functions see a
handful of shapes instead of one per batch.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import tokenizers

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


def bucket_length(length: int, max_length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """Smallest bucket >= length, capped at max_length."""
  for b in buckets:
    if b >= length:
      return min(b, max_length)
  return max_length


class Tokenizer:
  """A thin wrapper over `tokenizers.Tokenizer` that returns padded numpy arrays."""

  def __init__(self, path: str, max_length: int = 512):
    file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
      raise FileNotFoundError(
          f"{path}: no tokenizer.json; save the model's fast tokenizer there "
          "(transformers: AutoTokenizer.from_pretrained(dir).save_pretrained(dir)).")
    self.path = path
    self.files = _tokenizer_files(path)
    try:
      self._tok = tokenizers.Tokenizer.from_file(file)
    except Exception as e:  # tokenizers raises a bare Exception for truncated or invalid JSON.
      reason = (str(e).splitlines() or [type(e).__name__])[0]
      raise ValueError(f"{file}: cannot be read as a fast tokenizer ({reason}); copy it from the original "
                       "model directory again.") from None
    self._tok.no_padding()
    self._tok.no_truncation()
    self.max_length = max_length
    # BERT's [PAD] (0 in its vocabularies), or RoBERTa / XLM-R's <pad> (1).
    self.pad_id = next((i for i in (self._tok.token_to_id(t) for t in ("[PAD]", "<pad>")) if i is not None), 0)
    self.vocab_size = self._tok.get_vocab_size()
    self.special_added: tuple[str, ...] = ()  # Tokens made special pieces by `add_special_tokens`.

  def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
    """Token count of each text (special tokens included), before truncation."""
    encs = self._tok.encode_batch(list(texts))
    return np.array([len(e.ids) for e in encs], np.int32)

  def __call__(self, texts: Sequence[str], max_length: int | None = None,
               buckets: Sequence[int] | None = DEFAULT_BUCKETS,
               pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (input_ids, attention_mask), int32 [len(texts), L].

    L is `pad_to` if given, else the bucket of the longest text (or its exact length when buckets is None).
    Texts longer than max_length are truncated (the final [SEP] is kept), never rejected.
    """
    max_length = max_length or self.max_length
    ids = self.token_ids(texts, max_length)
    longest = max((len(x) for x in ids), default=1)
    if pad_to is not None:
      length = pad_to
    elif buckets is None:
      length = longest
    else:
      length = bucket_length(longest, max_length, buckets)
    return self.pad(ids, length)

  def token_ids(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
    """Token ids of each text (special tokens included), truncated to max_length keeping the last [SEP]."""
    max_length = max_length or self.max_length
    for i, t in enumerate(texts):
      if not isinstance(t, str):
        raise TypeError(f"text {i} is {type(t).__name__}, not str: pass a list of strings.")
    return [_truncate(e.ids, max_length) for e in self._tok.encode_batch(list(texts))]

  def pad(self, ids: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int32 [len(ids), length]; longer id lists are cut to `length`."""
    out = np.full((len(ids), length), self.pad_id, np.int32)
    mask = np.zeros((len(ids), length), np.int32)
    for i, x in enumerate(ids):
      x = x[:length]
      out[i, :len(x)] = x
      mask[i, :len(x)] = 1
    return out, mask

  def add_special_tokens(self, tokens: Sequence[str]) -> None:
    """Makes vocabulary tokens such as ColBERT's "[unused0]" markers single, unnormalised special pieces (so
    "[unused0] text" starts with that id, as sentence-transformers registers a prompt's prefix token);
    `file_bytes` / `save` then write the changed tokenizer.json and list them in tokenizer_config.json."""
    new = [t for t in tokens if t not in self.special_added]
    missing = [t for t in new if self._tok.token_to_id(t) is None]
    if missing:
      raise ValueError(f"{self.path}: {missing} not in the vocabulary; marker tokens must be existing tokens "
                       "(e.g. [unused0] in BERT vocabularies).")
    if new:
      self._tok.add_special_tokens([tokenizers.AddedToken(t, normalized=False, special=True) for t in new])
      self.special_added = self.special_added + tuple(new)

  def file_bytes(self, name: str) -> bytes:
    """The content of one of `files`, with the tokens of `add_special_tokens` in it."""
    with open(os.path.join(self.path, name), "rb") as f:
      data = f.read()
    if not self.special_added:
      return data
    if name == "tokenizer.json":
      return self._tok.to_str(pretty=True).encode()
    if name == "tokenizer_config.json":
      config = json.loads(data)
      extra = list(config.get("extra_special_tokens") or [])
      config["extra_special_tokens"] = extra + [t for t in self.special_added if t not in extra]
      return (json.dumps(config, indent=2) + "\n").encode()
    return data

  def save(self, output_dir: str) -> None:
    """Writes the tokenizer files next to an exported model."""
    for name in self.files:
      with open(os.path.join(output_dir, name), "wb") as f:
        f.write(self.file_bytes(name))


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _tokenizer_files(path: str) -> list[str]:
  return [f for f in _TOKENIZER_FILES if os.path.isfile(os.path.join(path, f))]


def _truncate(ids: list[int], max_length: int) -> list[int]:
  if len(ids) <= max_length:
    return ids
  return ids[:max_length - 1] + ids[-1:]  # Keep [SEP] last, as HF truncation does.
