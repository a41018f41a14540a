"""Device mesh and parameter/batch layouts from the config.

Every parameter has logical axis names (`LOGICAL_AXES`, keyed by its name in the model);
`config.sharding_rules` maps logical names to mesh axes. Changing a sweep's layout is a config
change: `config.mesh` (sizes of data, fsdp, expert, tensor) and `config.sharding_rules`.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ling_jax.config import ConfigError

MESH_AXES = ('data', 'fsdp', 'expert', 'tensor')

# Logical names of each parameter's dimensions, by the last components of its path. Stacked
# layers add a leading 'layers' dimension.
LOGICAL_AXES = {
    ('embed', 'embedding'): ('vocab', 'embed'),
    ('unembed', 'kernel'): ('embed', 'vocab'),
    ('attn', 'q', 'kernel'): ('embed', 'heads'),
    ('attn', 'k', 'kernel'): ('embed', 'heads'),
    ('attn', 'v', 'kernel'): ('embed', 'heads'),
    ('attn', 'o', 'kernel'): ('heads', 'embed'),
    ('gate', 'kernel'): ('embed', 'mlp'),
    ('up', 'kernel'): ('embed', 'mlp'),
    ('out', 'kernel'): ('mlp', 'embed'),
    ('ffn', 'router'): ('embed', None),
    ('ffn', 'router_bias'): ('exp',),
    ('ffn', 'wi_gate'): ('exp', 'embed', 'exp_mlp'),
    ('ffn', 'wi_up'): ('exp', 'embed', 'exp_mlp'),
    ('ffn', 'wo'): ('exp', 'exp_mlp', 'embed'),
    ('scale',): (None,),
}


def make_mesh(config) -> jax.sharding.Mesh:
  m = config.mesh
  devices = jax.devices()
  if m.num_devices:
    if m.num_devices > len(devices):
      raise ConfigError(f'config.mesh.num_devices={m.num_devices}: only {len(devices)} devices.')
    devices = devices[: m.num_devices]
  sizes = [m[a] for a in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(
        f'config.mesh={dict(zip(MESH_AXES, sizes))}: sizes must be positive, with at '
        'most one -1 (the devices left).'
    )
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % fixed:
      raise ConfigError(
          f'config.mesh: {len(devices)} devices are not a multiple of the fixed axes '
          f'({fixed}); change the mesh sizes.'
      )
    sizes[sizes.index(-1)] = len(devices) // fixed
  if math.prod(sizes) != len(devices):
    raise ConfigError(
        f'config.mesh={dict(zip(MESH_AXES, sizes))}: uses {math.prod(sizes)} devices '
        f'of {len(devices)}; set one axis to -1 or config.mesh.num_devices.'
    )
  return jax.make_mesh(
      tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def _rules(config) -> dict:
  return {name: axes for name, axes in config.sharding_rules}


def logical_axes(path: tuple[str, ...], ndim: int) -> tuple:
  """Logical names of a parameter (or of its optimizer moments) from its path.

  A parameter with no entry in LOGICAL_AXES is an error, not a silently replicated array: a
  renamed or new weight must say how it is laid out.
  """
  for suffix, names in LOGICAL_AXES.items():
    if tuple(path[-len(suffix) :]) == suffix:
      extra = ndim - len(names)
      if extra in (0, 1):
        return ('layers',) * extra + names
      raise ValueError(
          f'{"/".join(path)}: {ndim} dimensions, but LOGICAL_AXES names {len(names)} for '
          f'{"/".join(suffix)} (plus an optional leading layers axis).'
      )
  raise ValueError(
      f'{"/".join(path)}: a {ndim}-dimensional parameter with no logical axes; add its name '
      'to ling_jax.sharding.LOGICAL_AXES (e.g. ("embed", "mlp")) so that it is laid out on '
      'the mesh instead of replicated.'
  )


def spec(config, names: tuple) -> P:
  rules = _rules(config)
  return P(*[rules.get(n) if n else None for n in names])


def _keys(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def state_shardings(config, mesh, state):
  """NamedShardings of a train-state pytree (parameters, router bias, optimizer moments)."""

  def one(path, leaf):
    ndim = len(getattr(leaf, 'shape', ()))
    names = logical_axes(_keys(path), ndim) if ndim else ()
    s = spec(config, names)
    for dim, axes in zip(leaf.shape, s):
      size = (
          math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)) if a)
          if axes
          else 1
      )
      if dim % size:
        raise ConfigError(
            f'{"/".join(_keys(path))}: dimension {dim} does not divide over mesh '
            f'axes {axes} ({size} devices); change config.mesh or '
            'config.sharding_rules.'
        )
    return NamedSharding(mesh, s)

  return jax.tree_util.tree_map_with_path(one, state)


def batch_axes(config) -> tuple[str, ...]:
  axes = _rules(config)['batch']
  return tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)


def batch_spec(config, leading: int = 0) -> P:
  """The layout of a batch [B, ...]; with `leading` unsharded axes in front ([S, B, ...])."""
  return P(*(None,) * leading, batch_axes(config))


def batch_shards(config, mesh) -> int:
  return math.prod(mesh.shape[a] for a in batch_axes(config))


def global_batch(config, mesh, local_batch: np.ndarray) -> jax.Array:
  """This process's rows of a batch [b, L] (or of S stacked batches [S, b, L]), assembled into
  one global array whose batch axis is sharded over the mesh's batch axes."""
  spec = batch_spec(config, leading=local_batch.ndim - 2)
  return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local_batch)
