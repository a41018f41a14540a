"""Orbax checkpoints of the train state, the data iterator and run bookkeeping.

A step directory is committed atomically by orbax (written under a temporary name, renamed when
complete), so a checkpoint is either whole or absent; a run restarted on the same workdir
resumes from the newest one by itself. A newest step that cannot be read (a disk that lost
files, bytes changed by hand) is moved aside, never deleted, and the one before it restored.

Orbax stores no checksum, and a flipped byte inside an array's data restores without an error
(and a NaN a few steps later). So every save records a fingerprint of the state (one 32-bit hash
per leaf, computed on the devices that hold it) in the step's metadata, and a restore that does
not reproduce it counts as unreadable.
"""

from __future__ import annotations

import logging
import re
import time

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

log = logging.getLogger('ling_jax')

FINGERPRINT_KEY = 'state_fingerprint'


def _mix32(u):
  """A bijective 32-bit integer hash (lowbias32): a change to an element changes its hash."""
  u = u ^ (u >> 16)
  u = u * jnp.uint32(0x7FEB352D)
  u = u ^ (u >> 15)
  u = u * jnp.uint32(0x846CA68B)
  return u ^ (u >> 16)


def _leaf_hash(x):
  """The uint32 sum (mod 2^32) of the hashes of every 32-bit word of the leaf's bits."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  words = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)  # 8-byte: a trailing axis
  return jnp.sum(_mix32(words), dtype=jnp.uint32)


_fingerprint_leaves = jax.jit(lambda leaves: [_leaf_hash(x) for x in leaves])


def fingerprint(state) -> dict[str, int]:
  """{leaf path: 32-bit hash of its bits}: equal for equal states, whatever their sharding."""
  paths_leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  hashes = _fingerprint_leaves([leaf for _, leaf in paths_leaves])
  # The hashes are replicated scalars: every process reads its own copy.
  return {
      _leaf_name(jax.tree_util.keystr(path)): int(h.addressable_data(0))
      for (path, _), h in zip(paths_leaves, hashes)
  }


def _leaf_name(key: str) -> str:
  """A leaf's path whatever the containers on it ("['params']['w']" of a dict and ".params['w']"
  of a dataclass are both params/w), so that fingerprints outlive a change of container."""
  return '/'.join(re.findall(r"[^\[\]'\".]+", key))


def _check_fingerprint(step: int, state, meta: dict) -> None:
  expected = meta.get(FINGERPRINT_KEY)
  if expected is None:  # written before fingerprints were recorded
    log.info('checkpoint step %d has no state fingerprint; restored unverified', step)
    return
  expected = {_leaf_name(k): v for k, v in expected.items()}
  found = fingerprint(state)
  differ = [k for k in expected if found.get(k) != expected[k]]
  differ += [k for k in found if k not in expected]
  if differ:
    raise ValueError(
        f'the restored state does not match the fingerprint saved with step {step} '
        f'({len(differ)} leaves differ, first {differ[0]}): its files were changed after the save'
    )


COMMIT_MARKER = 'commit_success.txt'  # orbax's marker of a step saved whole


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
    meta = {**meta, FINGERPRINT_KEY: fingerprint(state)}
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

    `state_template` fixes shapes, dtypes and shardings; its values are not read. Raises
    ValueError when the state differs from the fingerprint saved with it.
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
    meta = dict(restored.meta)
    _check_fingerprint(step, restored.state, meta)
    meta.pop(FINGERPRINT_KEY, None)
    return restored.state, meta

  def restore_latest(self, state_template, data_iterator):
    """(step, state, meta) of the newest readable checkpoint, or None when there is none.

    Unreadable steps are renamed `<step>.unreadable-<unix time>` (kept for a post-mortem) with a
    warning naming the error, and the previous step is tried.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    # Orbax commits a local step by renaming its temporary folder and still writes the marker
    # object stores need; a step without it, among steps that have it, was not saved whole.
    marked = {step for step in steps if (self.directory / str(step) / COMMIT_MARKER).exists()}
    for step in steps:
      try:
        if marked and step not in marked:
          raise FileNotFoundError(f'no {COMMIT_MARKER}: the save of this step never completed')
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
