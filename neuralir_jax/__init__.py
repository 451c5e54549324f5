"""neuralir_jax: contrastive training of BERT-family encoders for neural IR in JAX/Flax."""

from neuralir_jax.encoder import Encoder, load_encoder

__all__ = ["Encoder", "load_encoder"]
