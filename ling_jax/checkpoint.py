"""Orbax checkpoints of the train state, the data iterator and run bookkeeping.

A step directory is committed atomically by orbax (written under a temporary name, renamed when
complete), so a checkpoint is either whole or absent; a run restarted on the same workdir
resumes from the newest one by itself. A newest step that cannot be read (a disk that lost
files, bytes changed by hand) is moved aside, never deleted, and the one before it restored.
"""

from __future__ import annotations

import logging
import time

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

log = logging.getLogger('ling_jax')


class Checkpointer:

  def __init__(self, directory: str, keep: int, use_async: bool):
    self.directory = epath.Path(directory)
    self._manager = ocp.CheckpointManager(
        epath.Path(directory),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=use_async
        ),
        item_names=('state', 'data', 'meta'),
    )

  def save(self, step: int, state, data_iterator, meta: dict) -> None:
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )

  def restore(self, step: int, state_template, data_iterator):
    """(state, meta), with the data iterator moved in place to where it was at `step`.

    `state_template` fixes shapes, dtypes and shardings; its values are not read.
    """
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
        state_template,
    )
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            data=grain.checkpoint.CheckpointRestore(data_iterator),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return restored.state, restored.meta

  def restore_latest(self, state_template, data_iterator):
    """(step, state, meta) of the newest readable checkpoint, or None when there is none.

    Unreadable steps are renamed `<step>.unreadable-<unix time>` (kept for a post-mortem) with a
    warning naming the error, and the previous step is tried.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    for step in steps:
      try:
        state, meta = self.restore(step, state_template, data_iterator)
        return step, state, meta
      except Exception as error:  # pylint: disable=broad-except  # orbax raises many kinds
        aside = self.directory / f'{step}.unreadable-{int(time.time())}'
        if jax.process_index() == 0:
          (self.directory / str(step)).rename(aside)
        if jax.process_count() > 1:  # every process sees the step gone before it looks again
          multihost_utils.sync_global_devices(f'checkpoint {step} moved aside')
        log.warning(
            'checkpoint step %d is unreadable (%s: %s); moved to %s, trying the one ' 'before it',
            step,
            type(error).__name__,
            str(error)[:300],
            aside.name,
        )
        self._manager.reload()
    if steps:
      raise RuntimeError(
          f'{self.directory}: none of the checkpoint steps {steps} could be read; '
          'they are kept as <step>.unreadable-*; move the checkpoints folder away '
          'to start over.'
      )
    return None

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
