"""The training loop: config -> model family -> data -> sharded train state -> jitted steps, with Orbax resume.

`train(config, workdir)` checks the whole config and every path first, resumes from the workdir's latest
checkpoint (params, optimizer state, step, rng, data-iterator position), trains to `config.num_steps`, logs
every `log_every_steps`, evaluates every `eval.every_steps` and checkpoints every `checkpoint.every_steps`
and at the last step. A finished workdir returns at once. SIGTERM (preemption) and SIGINT (Ctrl-C) save a
checkpoint of the current step and stop: SIGTERM returns normally, SIGINT then raises KeyboardInterrupt.
A NaN/Inf loss stops before anything is saved, so the last good checkpoint stays intact.

The loop knows nothing of bi-encoders or cross-encoders: the family (`families.make_family`) gives the params, inputs and
loss, `steps.py` the strategy (pjit or pmap).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from neuralir_jax import checkpoint, config_lib, data, distributed, evaluate, gradcache, optimizer
from neuralir_jax import families, preemption, sharding, steps, tokenization, workdir as workdir_lib
from neuralir_jax import model as model_lib
from neuralir_jax.metric_writer import MetricWriter, Throughput

# Keys whose change on resume is routine (how often to log, save or evaluate); any other change is warned.
_ROUTINE_KEYS = ("log_every_steps", "checkpoint.", "eval.")


class NonFiniteLossError(FloatingPointError):
  pass


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) in `workdir`; returns the last logged metrics and `step`. `config` is not changed."""
  distributed.setup()
  mesh = sharding.make_mesh()
  config, tokenizer, pretrained = families.resolve_model(config)
  config_lib.validate(config, num_devices=mesh.size, max_positions=model_lib.BertConfig(**config.model.bert).max_positions)
  family = families.make_family(config)
  evaluate.check_tasks(config.eval.tasks, tfds_data_dir=config.data.tfds_data_dir or None,
                       has_nli_head=family.has_nli_head)
  workdir_lib.check_writable(workdir)
  iterator = make_iterator(config, family, tokenizer, mesh.size)

  mngr = checkpoint.manager(workdir, keep=config.checkpoint.keep)
  start = mngr.latest_step() or 0
  if start >= config.num_steps:
    logging.info("%s already trained to step %d >= num_steps=%d: nothing to do", workdir, start, config.num_steps)
    mngr.close()
    return {"step": start, "resumed_finished": True}
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_steps)
  state, state_shardings = steps.create_train_state(family, jax.random.key(config.seed), mesh, tx, pretrained)
  del pretrained
  config_dict = config.to_dict()
  if start:
    state, data_state = checkpoint.restore(mngr, start, state)
    iterator.set_state(data_state)
    _warn_changed(checkpoint.restore_config(mngr, start), config_dict)
    logging.info("resumed from %s at step %d", workdir, start)
  if distributed.is_main_process():
    workdir_lib.write_files(workdir, config_dict, tokenizer)
  train_step = steps.make_train_step(family, mesh, tx, state_shardings, schedule)
  state = train_step.to_device(state)
  writer = MetricWriter(workdir, start, config.num_steps)
  meter = Throughput(family, mesh.size, config.cpu_peak_flops)
  tic, last, step = time.perf_counter(), {}, start
  with preemption.Preemption() as stop:
    try:
      while step < config.num_steps:
        batch = next(iterator)
        state, metrics = train_step(state, batch)
        step += 1
        meter.add(batch)
        writer.advance(step)
        if step == start + 1:  # Throughput excludes the first step's compilation.
          jax.block_until_ready(metrics)
          meter.reset()
        stopping = stop.requested  # Read once: a signal arriving later in this step is handled after the next.
        final = step == config.num_steps or stopping
        if step % config.log_every_steps == 0 or final:
          last = dict(_finite(metrics, step, workdir, mngr), **meter.rates())
          writer.write(step, last)
          meter.reset()
        if config.eval.every_steps and config.eval.tasks and step % config.eval.every_steps == 0:
          writer.write(step, _evaluate(family, train_step.from_device(state).params, tokenizer, config))
          meter.reset()
        if step % config.checkpoint.every_steps == 0 or final:
          _finite({"loss": metrics["loss"]}, step, workdir, mngr)
          checkpoint.save(mngr, step, train_step.from_device(state), iterator.get_state(), config_dict)
        if stopping:
          break
    finally:
      mngr.wait_until_finished()
      mngr.close()
      writer.close()
  _summary(workdir, start, step, last, time.perf_counter() - tic, stop.signum)
  if stop.signum == signal.SIGINT:
    raise KeyboardInterrupt(f"interrupted: checkpoint of step {step} written; rerun the same command to resume")
  return dict(last, step=step)


def make_iterator(config: ml_collections.ConfigDict, family, tokenizer: tokenization.Tokenizer,
                  num_devices: int = 1) -> data.TrainIterator:
  """This process's resumable batches of `config.data.train`: the columns the family's objectives read,
  anchors with the query length and prompt, positives and negatives with the document ones; packed over
  num_devices devices with `data.packing` (rows per device a multiple of the GradCache chunk count too)."""
  on = {name for name, weight in config.objectives.items() if weight}
  records = data.load_records(config.data.train, config.data.view, seed=config.seed,
                              skip_invalid=config.data.skip_invalid,
                              tfds_data_dir=config.data.tfds_data_dir or None,
                              num_negatives=config.data.num_negatives,
                              pool_negatives=config.data.pool_negatives,
                              scores=_file_scores(config, on))
  if on & {"margin_mse", "listwise_kl"} and config.distill.scores == "cross_encoder":
    records = attach_teacher_scores(records, config)
  if "embedding_mse" in on:
    records = attach_teacher_embeddings(records, config)
  columns = family.text_columns(set(records[0]))
  query_length = config.data.query_max_length or config.data.max_length
  document_length = config.data.document_max_length or config.data.max_length
  queries, documents = ("anchor",), data.DOCUMENT_COLUMNS
  if config.model.family == "cross_encoder":  # An STS pair is (query, document) to a cross-encoder.
    queries, documents = ("anchor", "sentence1"), (*data.DOCUMENT_COLUMNS, "sentence2")
  max_lengths = {c: query_length if c in queries else document_length
                 for c in columns if c in queries or c in documents}
  prompts = {c: config.model.prompts.query if c in queries else config.model.prompts.document
             for c in max_lengths}
  return data.make_train_iterator(
      records, tokenizer, columns=columns, global_batch_size=config.batch_size, seed=config.seed,
      max_length=config.data.max_length, buckets=tuple(config.data.buckets) or None,
      process_index=jax.process_index(), process_count=jax.process_count(), max_lengths=max_lengths,
      prompts={c: p for c, p in prompts.items() if p}, sampler=config.data.sampler,
      packing_spec=_packing_spec(config, num_devices))


def _file_scores(config: ml_collections.ConfigDict, on: set[str]) -> str | None:
  """Which score lists of the triples file teach (None: no score distillation, or a cross-encoder scores)."""
  if not on & {"margin_mse", "listwise_kl"} or config.distill.scores == "cross_encoder":
    return None
  return config.distill.scores


def attach_teacher_scores(records: list[dict], config: ml_collections.ConfigDict) -> list[dict]:
  """Copies of the records with `teacher_scores` [1 + k]: the logits of distill.teacher (a cross-encoder
  directory or workdir) for each record's (anchor, positive) and (anchor, negative) pairs, every distinct
  pair scored once before training (distill.scores=cross_encoder; the file needs no teacher scores)."""
  from neuralir_jax import cross_encoder
  if "negative" not in records[0]:
    raise ValueError(f"{config.data.train}: its records have no negatives; margin_mse / listwise_kl compare a "
                     "query's positive with its negatives: train on `neuralir mine` output (data.view=triplets).")
  teacher = cross_encoder.load_any(config.distill.teacher, flag="distill.teacher", one_label=True)
  docs = [[r["positive"], *([r["negative"]] if isinstance(r["negative"], str) else r["negative"])]
          for r in records]
  pairs = sorted({(r["anchor"], d) for r, ds in zip(records, docs) for d in ds})
  tic = time.perf_counter()
  logits = teacher.predict_logits(pairs, batch_size=config.eval.batch_size)[:, 0]
  logging.info("distill: %s scored %d (query, document) pairs in %.0f s", config.distill.teacher, len(pairs),
               time.perf_counter() - tic)
  index = {pair: float(x) for pair, x in zip(pairs, logits)}
  return [dict(r, teacher_scores=[index[(r["anchor"], d)] for d in ds]) for r, ds in zip(records, docs)]


def attach_teacher_embeddings(records: list[dict], config: ml_collections.ConfigDict) -> list[dict]:
  """Copies of the records with `teacher_embedding`: distill.teacher's vector of each record's anchor (the
  source sentence), every distinct anchor encoded once, before training (the teacher stays fixed)."""
  from neuralir_jax import cross_encoder
  from neuralir_jax import encoder as encoder_lib
  path = config_lib.resolve_model_path(config.distill.teacher)
  if cross_encoder.is_cross_encoder(path):
    raise ValueError(f"distill.teacher={config.distill.teacher!r} is a cross-encoder; embedding_mse needs a "
                     "bi-encoder teacher (a cross-encoder teaches through `neuralir mine --teacher` and margin_mse).")
  try:
    teacher = encoder_lib.load_encoder(path)
  except (FileNotFoundError, ValueError, OSError) as e:
    raise type(e)(f"distill.teacher={config.distill.teacher!r}: {e}") from None
  student_dim = int(config.model.bert.hidden_size)
  if teacher.config.bert.hidden_size != student_dim:
    raise ValueError(f"distill.teacher={config.distill.teacher!r} embeds in {teacher.config.bert.hidden_size} "
                     f"dimensions, the student in {student_dim}: embedding_mse needs equal sizes; pick a "
                     "student of the teacher's width.")
  texts = sorted({r["anchor"] for r in records})
  tic = time.perf_counter()
  vectors = teacher.encode(texts, batch_size=config.eval.batch_size)
  logging.info("distill: %s embedded %d source texts in %.0f s", config.distill.teacher, len(texts),
               time.perf_counter() - tic)
  index = {t: i for i, t in enumerate(texts)}
  return [dict(r, teacher_embedding=np.asarray(vectors[index[r["anchor"]]], np.float32)) for r in records]


def _packing_spec(config: ml_collections.ConfigDict, num_devices: int) -> data.Packing | None:
  if not config.data.packing:
    return None
  chunks = gradcache.num_chunks_for(config.batch_size, num_devices, config.grad_cache.chunk_size)
  return data.Packing(num_devices, config.data.pack_max_slots,
                      math.lcm(config.data.pack_row_multiple, chunks))


def _finite(metrics: dict, step: int, workdir: str, mngr) -> dict[str, float]:
  """Host copies of the metrics; a NaN/Inf loss stops the run without saving."""
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if not math.isfinite(metrics["loss"]):
    saved = mngr.latest_step()
    where = (f"the last good checkpoint (step {saved}) in {workdir} is intact" if saved is not None else
             f"no checkpoint was written to {workdir} yet")
    raise NonFiniteLossError(
        f"loss is {metrics['loss']} at step {step}: stopping without saving; {where}. Lower "
        "optimizer.learning_rate or set model.dtype=float32, then rerun.")
  return metrics


def _evaluate(family, params, tokenizer, config: ml_collections.ConfigDict) -> dict[str, float]:
  encoder = family.encoder(jax.device_get(params), tokenizer)
  results = evaluate.evaluate_tasks(encoder, config.eval.tasks, batch_size=config.eval.batch_size,
                                    exclude_self=config.eval.exclude_self,
                                    tfds_data_dir=config.data.tfds_data_dir or None)
  return {f"eval/{task}/{k}": v for task, result in results.items() for k, v in result.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _warn_changed(saved: dict, current: dict) -> None:
  """Logs the settings that differ from the checkpointed run's (optimizer, dropout, ...)."""
  old, new = _flatten(saved), _flatten(current)
  changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k) and not k.startswith(_ROUTINE_KEYS)]
  if changed:
    logging.warning("resuming with settings that differ from the checkpointed run's: %s", "; ".join(changed))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
  return out


def _summary(workdir: str, start: int, step: int, last: dict, seconds: float, signum: int | None) -> None:
  if not distributed.is_main_process():
    return
  stopped = f" (stopped by {signal.Signals(signum).name})" if signum else ""
  loss = f", loss {last['loss']:.4f}" if "loss" in last else ""
  rate = f", {last['examples_per_second']:.1f} examples/s" if "examples_per_second" in last else ""
  print(f"trained steps {start + 1}-{step} in {seconds:.0f} s{loss}{rate}{stopped}; checkpoint "
        f"{checkpoint.directory(workdir) / str(step)}", flush=True)

