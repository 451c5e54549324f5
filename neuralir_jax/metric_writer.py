"""Training metrics out: `WORKDIR/metrics.jsonl`, TensorBoard event files and a console progress bar.

Only process 0 writes. Each logged step is one JSON object with at least `step` and `loss`; evaluation
results are logged through the same writer (keys prefixed `eval/`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import jax
import tqdm


class MetricWriter:
  """Appends to metrics.jsonl (resume-safe), writes TensorBoard scalars, and drives a tqdm bar."""

  def __init__(self, workdir: str, first_step: int, num_steps: int, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    self._bar = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard files are optional; metrics.jsonl is always written.
      self._tb = None
    self._bar = tqdm.tqdm(total=num_steps, initial=first_step, desc="train", unit="step",
                          dynamic_ncols=True, file=sys.stderr, disable=None)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: _scalar(v) for k, v in metrics.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(k.replace(":", "_"), v, step)  # TensorBoard tags may not hold ':'.
      self._tb.flush()
    if self._bar is not None and "loss" in row:
      self._bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)

  def advance(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _scalar(v: Any) -> Any:
  if isinstance(v, (str, bool)):
    return v
  try:
    return float(v)
  except (TypeError, ValueError):
    return str(v)
