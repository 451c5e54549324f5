"""The model families the training loop trains, chosen by `model.family` (see `bi_encoder.py` for the
contract every family meets)."""

from __future__ import annotations

from typing import Any

import ml_collections

from neuralir_jax import bi_encoder, colbert, cross_encoder, tokenization


def make_family(config: ml_collections.ConfigDict):
  """The family object of a (resolved, validated) training config."""
  if config.model.family == "cross_encoder":
    return cross_encoder.CrossEncoderFamily(config)
  if config.model.family == "colbert":
    return colbert.ColBERTFamily(config)
  return bi_encoder.BiEncoder(config)


def resolve_model(config: ml_collections.ConfigDict
                  ) -> tuple[ml_collections.ConfigDict, tokenization.Tokenizer, Any]:
  """(config with the pretrained architecture, tokenizer, pretrained params or None) for `model.init`."""
  if config.model.family == "cross_encoder":
    return cross_encoder.resolve_model(config)
  if config.model.family == "colbert":
    return colbert.resolve_model(config)
  return bi_encoder.resolve_model(config)
