"""SIGTERM (preemption) and SIGINT (Ctrl-C) as a flag the training loop checks after each step.

Installed only for the duration of a `with Preemption() as p:` block, and the previous handlers come back on
exit, so a signal after training (during an evaluation, between ablation runs) behaves as it normally does.
A second Ctrl-C while the first is being handled raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import logging
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
  """`signum` is the first signal received (None until then)."""

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, object] = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def __enter__(self) -> "Preemption":
    if threading.current_thread() is threading.main_thread():  # Python allows handlers there only.
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    del exc_info
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    logging.warning("%s: preempted; checkpointing at the end of this step, then stopping",
                    signal.Signals(signum).name)
    self.signum = self.signum or signum
