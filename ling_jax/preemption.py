"""Preemption: SIGTERM (what TPU VMs and GCE send before they take a machine back) or SIGINT asks
the training loop to stop after the call in flight, write a checkpoint and its metrics, and exit
with `PREEMPTED_EXIT_CODE`; rerunning the same command resumes with no step lost. A second
signal aborts at once.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger('ling_jax')

# EX_TEMPFAIL of sysexits.h, "try again later": a job array or a sweep script reruns on it.
PREEMPTED_EXIT_CODE = 75


class StopRequest:
  """While entered, the first SIGTERM or SIGINT is remembered instead of killing the process."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = signals
    self.signum: int | None = None
    self._previous = {}

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
      self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is not None:  # asked twice: stop now, checkpoint or not
      self.__exit__()
      raise KeyboardInterrupt(f'signal {signum} received twice')
    self.signum = signum
    log.warning(
        '%s received: stopping after the current step to checkpoint (send it again to '
        'abort at once)',
        signal.Signals(signum).name,
    )

  def requested(self) -> bool:
    """Whether to stop now; in a multi-process run, whether any process was signalled, so that
    every process stops after the same step and writes the same checkpoint."""
    local = self.signum is not None
    if jax.process_count() == 1:
      return local
    return bool(np.max(multihost_utils.process_allgather(np.int32(local))))
