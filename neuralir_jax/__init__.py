"""neuralir_jax: contrastive training of BERT-family encoders for neural IR in JAX/Flax.

`neuralir_jax.Encoder` and `neuralir_jax.load_encoder` are imported on first use, so that light modules
(`config_lib`, the CLI's argument parsing) load without JAX.
"""

__all__ = ["Encoder", "load_encoder"]


def __getattr__(name: str):
  if name in __all__:
    from neuralir_jax import encoder  # pylint: disable=import-outside-toplevel
    return getattr(encoder, name)
  raise AttributeError(f"module 'neuralir_jax' has no attribute {name!r}")
