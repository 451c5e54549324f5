"""neuralir_jax: contrastive training of BERT-family encoders for neural IR in JAX/Flax."""
