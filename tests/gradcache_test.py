"""GradCache gradients equal plain gradients (dropout on and off, 1 and 8 devices); memory follows chunks."""

import importlib.util
import pathlib

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from neuralir_jax import bi_encoder, gradcache, losses, optimizer, sharding, steps  # noqa: E402
from train_helpers import max_abs_diff, random_batch, tiny_config  # noqa: E402

TOL = 1e-5


def test_chunk_layout_takes_rows_of_every_shard():
  x = jnp.arange(16)
  chunks = gradcache.to_chunks(x, num_chunks=4, num_shards=2)
  np.testing.assert_array_equal(chunks, [[0, 1, 8, 9], [2, 3, 10, 11], [4, 5, 12, 13], [6, 7, 14, 15]])
  np.testing.assert_array_equal(gradcache.from_chunks(chunks, num_shards=2), x)
  assert gradcache.num_chunks_for(16, 2, 2) == 4
  assert gradcache.num_chunks_for(16, 2, 8) == 1
  with pytest.raises(ValueError, match="does not divide the per-device batch of 8"):
    gradcache.num_chunks_for(16, 2, 3)


def _setup(dropout_rate):
  config = tiny_config(**{"model.dropout_rate": dropout_rate})
  model = bi_encoder.BiEncoder(config)
  params = model.init_params(jax.random.PRNGKey(0))
  batch = random_batch(16, 8, 1)
  texts = {c: (jnp.asarray(batch[f"{c}_ids"]), jnp.asarray(batch[f"{c}_mask"])) for c in ("anchor", "positive")}
  rest = {"log_temperature": params["log_temperature"]}

  def loss_fn(rest, embs):
    loss = losses.infonce(embs["anchor"], embs["positive"], jnp.arange(16),
                          losses.temperature_from_log(rest["log_temperature"]))
    return loss, {"loss": loss}

  return model.embed, loss_fn, params["encoder"], rest, texts


@pytest.mark.parametrize("dropout_rate", [0.0, 0.1])
def test_cached_gradients_equal_plain(dropout_rate):
  embed, loss_fn, enc, rest, texts = _setup(dropout_rate)
  rngs = {"anchor": jax.random.PRNGKey(1), "positive": jax.random.PRNGKey(2)}
  chunk = 4  # 16 rows -> 4 chunks.

  @jax.jit
  def cached(enc, rest):
    return gradcache.grad_cache_value_and_grad(embed, loss_fn, enc, rest, texts, rngs, chunk)

  @jax.jit
  def plain(enc, rest):  # The same chunked forward (same dropout masks), differentiated directly.
    def total(enc, rest):
      embs = {c: gradcache.chunked_embed(embed, enc, ids, mask, rngs[c], 16 // chunk)
              for c, (ids, mask) in texts.items()}
      return loss_fn(rest, embs)
    return jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(enc, rest)

  (loss_c, _), grads_c = cached(enc, rest)
  (loss_p, _), grads_p = plain(enc, rest)
  np.testing.assert_allclose(loss_c, loss_p, atol=TOL)
  assert max_abs_diff(grads_c, grads_p) <= TOL
  assert float(jnp.abs(grads_c[1]["log_temperature"])) > 1e-3  # Temperature gradient is live.
  if dropout_rate == 0:  # Without dropout, chunking is invisible: equal to one whole-batch forward.
    def whole(enc, rest):
      return loss_fn(rest, {c: embed(enc, ids, mask, None) for c, (ids, mask) in texts.items()})
    (loss_w, _), grads_w = jax.jit(jax.value_and_grad(whole, argnums=(0, 1), has_aux=True))(enc, rest)
    np.testing.assert_allclose(loss_c, loss_w, atol=TOL)
    assert max_abs_diff(grads_c, grads_w) <= TOL
  else:  # Dropout really is on (the same masks in both passes): the loss differs from the deterministic one.
    embed0, _, _, _, _ = _setup(0.0)
    loss_0 = jax.jit(lambda enc: loss_fn(rest, {c: embed0(enc, ids, mask, None)
                                                for c, (ids, mask) in texts.items()})[0])(enc)
    assert abs(float(loss_c) - float(loss_0)) > 1e-4


@pytest.fixture(scope="module")
def plain_one_device():
  config = tiny_config()
  mesh = sharding.make_mesh(1)
  tx, _ = optimizer.make_optimizer(config.optimizer, config.num_steps)
  state, _ = steps.create_train_state(bi_encoder.BiEncoder(config), jax.random.PRNGKey(0), mesh, tx)
  grads = steps.make_grad_fn(bi_encoder.BiEncoder(config), mesh)(
      state.params, random_batch(), jax.random.PRNGKey(1))
  return jax.device_get(state.params), grads


@pytest.mark.parametrize("strategy,implementation", [("pjit", "dense"), ("pmap", "dense"), ("pjit", "tiled")])
def test_train_step_gradcache_on_eight_devices_equals_plain(plain_one_device, strategy, implementation):
  params, (ref_loss, ref_metrics, ref_grads) = plain_one_device
  config = tiny_config(**{"grad_cache.chunk_size": 1, "parallel.strategy": strategy,  # 2 chunks per device.
                          "infonce.implementation": implementation, "infonce.block_size": 7})
  mesh = sharding.make_mesh(8)
  loss, metrics, grads = steps.make_grad_fn(bi_encoder.BiEncoder(config), mesh)(
      params, random_batch(), jax.random.PRNGKey(1))
  np.testing.assert_allclose(loss, ref_loss, atol=TOL)
  for name in ref_metrics:
    np.testing.assert_allclose(metrics[name], ref_metrics[name], atol=TOL, err_msg=name)
  # Gradients up to ~1 summed in another order (chunks, blocks, devices): float32 differs by ~1e-5 there on
  # some CPUs (1.0014e-5 seen on an AVX-512 EPYC), so twice TOL; a wrong term is off by orders more.
  assert max_abs_diff(grads, ref_grads) <= 2 * TOL


def test_gradcache_peak_memory_follows_chunk():
  """Compiled temp memory at batch 64: chunks of 4 need a fraction of the plain step's activations."""
  path = pathlib.Path(__file__).parents[1] / "benchmarks" / "gradcache_memory.py"
  spec = importlib.util.spec_from_file_location("gradcache_memory", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  temp_bytes = bench.temp_bytes
  plain = temp_bytes(batch=64, chunk=0, length=16, layers=1)
  cached = temp_bytes(batch=64, chunk=4, length=16, layers=1)
  assert cached < 0.4 * plain, (cached, plain)
