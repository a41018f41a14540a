"""What the command-line tools print: ling_jax's progress lines, libraries' INFO logs hidden."""

from __future__ import annotations

import logging as std_logging
import sys

from absl import flags
from absl import logging


def show_progress() -> None:
  """ling_jax's progress lines on stderr with the time; orbax and friends log through absl at
  INFO otherwise (kept when --verbosity is given)."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  progress = std_logging.getLogger('ling_jax')
  progress.setLevel(std_logging.INFO)
  handler = std_logging.StreamHandler(sys.stderr)
  handler.setFormatter(std_logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
  progress.addHandler(handler)
  progress.propagate = False


def exit_preempted(what: str) -> None:
  """Ends the process after a preemption checkpointed `what`, with the status sweeps retry on."""
  from ling_jax import preemption  # pylint: disable=import-outside-toplevel  # JAX: only now

  print(f'preempted: {what} checkpointed; rerun the same command to resume.')
  sys.exit(preemption.PREEMPTED_EXIT_CODE)
