"""Training metrics out: `WORKDIR/metrics.jsonl`, TensorBoard event files, the console, and throughput.

Only process 0 writes. Each logged step is one JSON object with at least `step` and `loss`; evaluation
results are logged through the same writer (keys prefixed `eval/`). Non-finite values are written as
`null`, so every line is valid JSON. A resumed run first drops the rows of steps after its checkpoint
(a killed run may have logged steps it never saved), so no step appears twice. On a terminal the console
shows a progress bar; otherwise (nohup, SLURM logs) it prints one line per logged step.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import jax
import numpy as np
import tqdm
from etils import epath

from neuralir_jax import flops

METRICS_FILE = "metrics.jsonl"
_CONSOLE_KEYS = ("loss", "lr", "examples_per_second", "tokens_per_second", "padding_fraction", "mfu")


class MetricWriter:
  """Appends to metrics.jsonl (resume-safe), writes TensorBoard scalars, and drives the console."""

  def __init__(self, workdir: str, first_step: int, num_steps: int, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.num_steps = num_steps
    self._jsonl = self._tb = self._bar = None
    if not self.enabled:
      return
    path = epath.Path(workdir) / METRICS_FILE
    _drop_rows_after(path, first_step)
    self._jsonl = path.open("a")
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))
    except ImportError:  # TensorBoard files are optional; metrics.jsonl is always written.
      self._tb = None
    if sys.stderr.isatty():
      self._bar = tqdm.tqdm(total=num_steps, initial=first_step, desc="train", unit="step",
                            dynamic_ncols=True, file=sys.stderr)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: _scalar(v) for k, v in metrics.items()})
    self._jsonl.write(json.dumps(row, allow_nan=False) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k.replace(":", "_"), v, step)  # TensorBoard tags may not hold ':'.
      self._tb.flush()
    if self._bar is not None and "loss" in row:
      self._bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
    elif self._bar is None:
      shown = ", ".join(f"{k} {_short(row[k])}" for k in _CONSOLE_KEYS if row.get(k) is not None)
      shown = shown or ", ".join(f"{k} {_short(v)}" for k, v in row.items() if k != "step")
      print(f"step {step}/{self.num_steps}: {shown}", flush=True)

  def advance(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def close(self) -> None:
    for handle in (self._bar, self._jsonl, self._tb):
      if handle is not None:
        handle.close()


def _drop_rows_after(path: epath.Path, step: int) -> None:
  """Keeps the rows of steps up to the resumed checkpoint; a half-written last line (kill -9) goes too."""
  if not path.exists():
    return
  lines = path.read_text().splitlines()
  kept = [line for line in lines if (row := _row_step(line)) is not None and row <= step]
  if len(kept) != len(lines):
    path.write_text("".join(line + "\n" for line in kept))


def _row_step(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


def _scalar(v: Any) -> Any:
  if isinstance(v, (str, bool)) or v is None:
    return v
  try:
    v = float(v)
  except (TypeError, ValueError):
    return str(v)
  return v if math.isfinite(v) else None


def _short(v: Any) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def _token_counts(batch: dict[str, np.ndarray]) -> tuple[int, int]:
  """(real tokens, token positions computed) of a numpy batch: its masks' ones and sizes, and the packed
  rows' segment tokens and size (the difference is padding)."""
  real = computed = 0
  for key, value in batch.items():
    if key.endswith("_mask") or key == "packed_segments":
      real += int(np.count_nonzero(value))
      computed += int(value.size)
  return real, computed


class Throughput:
  """Since the last reset: examples/s; tokens/s (real tokens, not padding); padding_fraction (of the token
  positions the encoder computed, padded or packed rows); MFU of the real texts' model FLOPs (padding is
  waste, not work: see `BiEncoder.train_flops`)."""

  def __init__(self, family, num_devices: int, cpu_peak_flops: float):
    self.family = family
    self.num_devices = num_devices
    peak = flops.peak_flops_per_device(jax.devices()[0], cpu_peak=cpu_peak_flops / num_devices)
    self.peak_total = peak * num_devices if peak else None
    self.reset()

  def reset(self) -> None:
    self.tokens = self.positions = self.examples = 0
    self.flops = 0.0
    self.tic = time.perf_counter()

  def add(self, batch: dict[str, np.ndarray]) -> None:
    """One step's local batch (this process's rows; every process has the same shapes)."""
    counts = getattr(self.family, "token_counts", _token_counts)  # A cross-encoder counts its joined pairs.
    real, computed = counts(batch)
    self.tokens += real * jax.process_count()
    self.positions += computed * jax.process_count()
    self.examples += self.family.config.batch_size
    self.flops += self.family.train_flops(batch, self.num_devices)

  def rates(self) -> dict[str, float]:
    if not self.examples:  # Nothing timed since the reset (e.g. a 1-step run: its compile step is excluded).
      return {}
    seconds = max(time.perf_counter() - self.tic, 1e-9)
    out = {"examples_per_second": self.examples / seconds, "tokens_per_second": self.tokens / seconds,
           "padding_fraction": 1.0 - self.tokens / max(self.positions, 1)}
    if self.peak_total:
      out["mfu"] = self.flops / seconds / self.peak_total
    return out
