"""Orbax checkpoints of the train state, the data iterator and run bookkeeping.

A step directory is committed atomically by orbax (written under a temporary name, renamed when
complete), so a checkpoint is either whole or absent; a run restarted on the same workdir
resumes from the newest one by itself.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp
import grain
from etils import epath


class Checkpointer:

  def __init__(self, directory: str, keep: int, use_async: bool):
    self._manager = ocp.CheckpointManager(
        epath.Path(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=use_async),
        item_names=('state', 'data', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_iterator, meta: dict) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, state_template, data_iterator):
    """(state, meta), with the data iterator moved in place to where it was at `step`.

    `state_template` fixes shapes, dtypes and shardings; its values are not read.
    """
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
        state_template)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
        meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
