"""The training loop: config -> data -> sharded train state -> jitted steps, with Orbax resume.

`train(config, workdir)` resumes from the workdir's latest checkpoint (params, optimizer state, step, rng,
data-iterator position), trains to `config.num_steps`, logs metrics every `log_every_steps` and checkpoints
every `checkpoint.every_steps` and at the last step. A finished workdir returns at once. SIGTERM
(preemption) saves a checkpoint and exits cleanly; a NaN/Inf loss stops before anything is saved, so the
last good checkpoint stays intact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from neuralir_jax import checkpoint, config_lib, data, distributed, flops, hf_io, optimizer, sharding, steps
from neuralir_jax import tokenization
from neuralir_jax.metric_writer import MetricWriter
from neuralir_jax.model import BertConfig, EncoderConfig

VIEW_COLUMNS = {
    "triplets": ("anchor", "positive", "negative"),
    "nli_full": ("anchor", "positive", "neutral", "negative"),
    "duplicates": ("anchor", "positive"),
}


class NonFiniteLossError(FloatingPointError):
  pass


def resolve_model(config: ml_collections.ConfigDict) -> tuple[tokenization.Tokenizer, Any]:
  """Fills config.model.{bert, pooling, normalize, max_seq_length} from a pretrained directory when
  `model.init` names one; returns (tokenizer, pretrained encoder params or None)."""
  init = config.model.init
  if init == "random":
    tokenizer = tokenization.Tokenizer(config_lib.resolve_model_path(config.model.tokenizer))
    if tokenizer.vocab_size > config.model.bert.vocab_size:
      raise ValueError(f"model.bert.vocab_size={config.model.bert.vocab_size} is smaller than the tokenizer's "
                       f"{tokenizer.vocab_size}: set --config.model.bert.vocab_size={tokenizer.vocab_size}.")
    return tokenizer, None
  path = config_lib.resolve_model_path(init)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"model.init={init!r} is not a directory: use 'minilm', 'random' or an HF directory.")
  enc_config, params, tokenizer = hf_io.load_hf_directory(path)
  has_pooling = os.path.isfile(os.path.join(path, "1_Pooling", "config.json"))
  with config.unlocked():
    config.model.bert = ml_collections.ConfigDict(dataclasses.asdict(enc_config.bert))
    if has_pooling:
      config.model.pooling = enc_config.pooling
      config.model.normalize = enc_config.normalize
    config.model.max_seq_length = enc_config.max_seq_length
  return tokenizer, params


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """One-line errors for settings that cannot work, before any data is read or compiled."""
  sharding.check_batch_size(config.batch_size, num_devices)
  if config.negatives not in ("global", "local"):
    raise ValueError(f"negatives={config.negatives!r}: use 'global' or 'local'.")
  if config.parallel.strategy not in steps.STRATEGIES:
    raise ValueError(f"parallel.strategy={config.parallel.strategy!r}: use one of {steps.STRATEGIES}.")
  if config.data.view not in data.VIEWS:
    raise ValueError(f"data.view={config.data.view!r}: use one of {data.VIEWS}.")
  steps.enabled_objectives(config)
  if config.num_steps < 1:
    raise ValueError(f"num_steps={config.num_steps}: must be >= 1.")


def _columns(records: list[dict]) -> tuple[str, ...]:
  return tuple(k for k, v in records[0].items() if isinstance(v, str))


def _tokens_per_step(batch: dict[str, np.ndarray]) -> int:
  return int(sum(v.sum() for k, v in batch.items() if k.endswith("_mask")))


def _seq_lens(batch: dict[str, np.ndarray]) -> list[int]:
  """Padded length of each text column: the sequences one example costs (padding counts as work)."""
  return [v.shape[-1] for k, v in batch.items() if k.endswith("_ids")]


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. under a test runner thread): no handler.
      pass

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d: checkpointing and exiting", signum)
    self.requested = True


def make_iterator(config: ml_collections.ConfigDict, tokenizer: tokenization.Tokenizer) -> data.TrainIterator:
  """This process's resumable batches of `config.data.train`, after checking the objectives find their
  columns in the view."""
  records = data.load_records(config.data.train, config.data.view, seed=config.seed,
                              tfds_data_dir=config.data.tfds_data_dir or None)
  columns = _columns(records)
  steps.text_columns(config, {f"{c}_ids" for c in columns} | {k for k in records[0] if k in data.SCALAR_COLUMNS})
  return data.make_train_iterator(
      records, tokenizer, columns=columns, global_batch_size=config.batch_size, seed=config.seed,
      max_length=config.data.max_length, buckets=tuple(config.data.buckets) or None,
      process_index=jax.process_index(), process_count=jax.process_count())


def _write_workdir_files(workdir: str, config_dict: dict, tokenizer: tokenization.Tokenizer) -> None:
  """config.json and the tokenizer, so the workdir evaluates and exports without the original model dir."""
  os.makedirs(os.path.join(workdir, "tokenizer"), exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config_dict, f, indent=2, default=str)
  tokenizer.save(os.path.join(workdir, "tokenizer"))


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) in `workdir`; returns the last logged metrics."""
  distributed.setup()
  config = ml_collections.ConfigDict(config.to_dict())  # Private copy: resolve_model fills fields in.
  mesh = sharding.make_mesh()
  validate(config, mesh.size)
  tokenizer, pretrained = resolve_model(config)
  iterator = make_iterator(config, tokenizer)

  mngr = checkpoint.manager(workdir, keep=config.checkpoint.keep)
  start = mngr.latest_step() or 0
  if start >= config.num_steps:
    logging.info("%s already trained to step %d >= num_steps=%d: nothing to do", workdir, start, config.num_steps)
    mngr.close()
    return {"step": start, "resumed_finished": True}
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
  model = steps.build_model(config)
  state, state_shardings = steps.create_train_state(config, jax.random.key(config.seed), mesh, tx, pretrained)
  del pretrained
  if start:
    state, data_state = checkpoint.restore(mngr, start, state)
    iterator.set_state(data_state)
    logging.info("resumed from %s at step %d", workdir, start)

  config_dict = config.to_dict()
  if distributed.is_main_process():
    _write_workdir_files(workdir, config_dict, tokenizer)
  train_step = steps.make_train_step(config, model, mesh, tx, state_shardings, schedule)
  pmap = config.parallel.strategy == "pmap"
  if pmap:
    state = steps.to_pmap_state(state, mesh)
  evaluator = _InTrainingEvaluator(config, tokenizer)
  writer = MetricWriter(workdir, start, config.num_steps)
  preemption = _Preemption()
  meter = _Throughput(config, mesh.size)
  last: dict[str, Any] = {}
  step = start
  try:
    while step < config.num_steps:
      batch = next(iterator)
      state, metrics = train_step(state, batch)
      step += 1
      meter.add(batch, metrics)
      writer.advance(step)
      if step == start + 1:  # Throughput excludes the first step's compilation.
        jax.block_until_ready(metrics)
        meter.reset()
      final = step == config.num_steps
      if step % config.log_every_steps == 0 or final or preemption.requested:
        metrics = jax.device_get(metrics)
        _check_finite(metrics, step, workdir)
        last = {k: float(v) for k, v in metrics.items()}
        last.update(meter.rates())
        writer.write(step, last)
        meter.reset()
      if evaluator.due(step):
        params = steps.from_pmap_state(state).params if pmap else state.params
        writer.write(step, evaluator.run(params, step))
        meter.reset()
      if step % config.checkpoint.every_steps == 0 or final or preemption.requested:
        saved = steps.from_pmap_state(state) if pmap else state
        _check_finite(jax.device_get({"loss": metrics["loss"]}), step, workdir)
        checkpoint.save(mngr, step, saved, iterator.get_state(), config_dict)
      if preemption.requested:
        logging.warning("preempted: checkpoint at step %d written; rerun the same command to resume", step)
        break
  finally:
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  return dict(last, step=step)


class _Throughput:
  """Examples/s, tokens/s (real, unpadded) and MFU (model FLOPs of the padded batch) since the last reset."""

  def __init__(self, config: ml_collections.ConfigDict, num_devices: int):
    self.config = config
    self.bert = BertConfig(**config.model.bert.to_dict())
    peak = flops.peak_flops_per_device(jax.devices()[0], cpu_peak=config.cpu_peak_flops / num_devices)
    self.peak_total = peak * num_devices if peak else None
    self.symmetric = config.infonce.symmetric and "infonce" in steps.enabled_objectives(config)
    self.candidates = None
    self.reset()

  def reset(self) -> None:
    self.tokens = self.examples = 0
    self.flops = 0.0
    self.tic = time.perf_counter()

  def add(self, batch: dict[str, np.ndarray], metrics: dict) -> None:
    if self.candidates is None:  # Fixed by the config; fetched once so later steps stay asynchronous.
      self.candidates = _candidates_per_query(metrics)
    self.tokens += _tokens_per_step(batch) * jax.process_count()
    self.examples += self.config.batch_size
    self.flops += flops.train_flops_per_step(self.bert, _seq_lens(batch), self.config.batch_size,
                                             self.candidates, self.candidates if self.symmetric else 0)

  def rates(self) -> dict[str, float]:
    seconds = max(time.perf_counter() - self.tic, 1e-9)
    out = {"examples_per_second": self.examples / seconds, "tokens_per_second": self.tokens / seconds}
    if self.peak_total:
      out["mfu"] = self.flops / seconds / self.peak_total
    return out


def _candidates_per_query(metrics: dict) -> int:
  value = metrics.get("negatives_per_query")
  if value is None:
    return 0
  return int(np.asarray(jax.device_get(value))) + 1


def _check_finite(metrics: dict, step: int, workdir: str) -> None:
  loss = float(np.asarray(metrics["loss"]))
  if not math.isfinite(loss):
    raise NonFiniteLossError(
        f"loss is {loss} at step {step}: stopping without saving; the last good checkpoint in {workdir} is "
        "intact. Lower optimizer.learning_rate or set model.dtype=float32, then rerun.")


class _InTrainingEvaluator:
  """Runs `config.eval.tasks` every `config.eval.every_steps` on the current encoder params."""

  def __init__(self, config: ml_collections.ConfigDict, tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.every = int(config.eval.every_steps)
    self.tasks = tuple(config.eval.tasks)

  def due(self, step: int) -> bool:
    return bool(self.every and self.tasks and step % self.every == 0)

  def run(self, params, step: int) -> dict[str, float]:
    from neuralir_jax import evaluate
    from neuralir_jax.encoder import Encoder
    enc = Encoder(encoder_config_of(self.config), params["encoder"], self.tokenizer)
    head = params.get("heads", {}).get("nli")
    predict_fn = nli_predict_fn(enc, head) if head is not None else None
    batch_size = self.config.eval.batch_size
    out = {}
    for task in self.tasks:
      encode = lambda t: distributed.encode_across_processes(  # noqa: E731
          lambda x: enc.encode(x, batch_size=batch_size), t)
      results = evaluate.evaluate_task(encode, task, predict_fn=predict_fn)
      out.update({f"eval/{task}/{k}": v for k, v in results.items() if isinstance(v, (int, float))})
    logging.info("step %d eval: %s", step, {k: round(v, 4) for k, v in out.items()})
    return out


def nli_predict_fn(encoder, head):
  """(premises, hypotheses) -> NLI logits [n, 3] from the encoder and the trained softmax head."""
  from neuralir_jax import losses

  def predict(premises, hypotheses):
    u = encoder.encode(list(premises), batch_size=128)
    v = encoder.encode(list(hypotheses), batch_size=128)
    return np.asarray(losses.nli_logits(jax.device_get(head), jnp.asarray(u), jnp.asarray(v)))

  return predict


def encoder_config_of(config: ml_collections.ConfigDict | dict) -> EncoderConfig:
  cfg = ml_collections.ConfigDict(config) if isinstance(config, dict) else config
  return steps.encoder_config_from(cfg.model)


def load_workdir_encoder(workdir: str, step: int | None = None):
  """The encoder of a training workdir's checkpoint (latest, or `step`), ready to encode or export."""
  from neuralir_jax.encoder import Encoder
  params, config_dict, step = checkpoint.restore_params_and_config(workdir, step)
  config = ml_collections.ConfigDict(config_dict)
  tokenizer = tokenization.Tokenizer(os.path.join(workdir, "tokenizer"))
  enc_config = dataclasses.replace(encoder_config_of(config), bert=BertConfig(**config.model.bert.to_dict()))
  encoder = Encoder(enc_config, params["encoder"], tokenizer)
  encoder.nli_head = params.get("heads", {}).get("nli")
  encoder.step = step
  return encoder


def train_from_cli(config_spec: str, workdir: str, overrides: list[str]) -> dict[str, Any]:
  config = config_lib.load_config(config_spec)
  config_lib.apply_overrides(config, overrides, source=config_spec)
  return train(config, workdir)
