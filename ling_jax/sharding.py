"""Device mesh and parameter/batch layouts from the config.

Every parameter carries logical axis names where its layer creates it (flax's `out_sharding`
metadata: `layers.annotated`, `layers.annotated_variable`; stacked layers add `layers`);
`config.sharding_rules` (resolved into the model spec, `ModelSpec.sharding_rules`) maps logical
names to mesh axes. Changing a sweep's layout is a config change: `config.mesh` (sizes of data,
fsdp, expert, tensor) and `config.sharding_rules`.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ling_jax import layout as layout_lib
from ling_jax.config import MESH_AXES
from ling_jax.config import ConfigError
from ling_jax.spec import ModelSpec


def make_mesh(config, devices=None) -> jax.sharding.Mesh:
  """The mesh of a config whose layout is resolved (ling_jax.layout.resolve: concrete sizes) on
  `devices`: by default the devices there are; for ahead-of-time compilation a slice's
  (ling_jax.hardware.slice_devices). Devices of several slices put the data axis across them."""
  m = config.mesh
  devices = list(jax.devices() if devices is None else devices)
  if m.num_devices:
    if m.num_devices > len(devices):
      raise ConfigError(f'config.mesh.num_devices={m.num_devices}: only {len(devices)} devices.')
    devices = devices[: m.num_devices]
  sizes = list(layout_lib.manual(config, len(devices)).mesh)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  slices = len({getattr(d, 'slice_index', 0) for d in devices})
  if slices > 1:
    within = (sizes[0] // slices, *sizes[1:])
    grid = mesh_utils.create_hybrid_device_mesh(within, (slices, 1, 1, 1), devices)
    return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=axis_types, devices=devices)


def parameter_axes(*states: nnx.State) -> dict[tuple[str, ...], tuple]:
  """{path: logical axis names} of every variable in `states` (e.g. of an abstract model), read
  from the `out_sharding` metadata it was created with. A variable without one is an error: a
  new weight must say how it is laid out, not be replicated silently."""
  out = {}
  for state in states:
    for path, variable in nnx.to_flat_state(state):
      names = variable.get_metadata().get('out_sharding')
      keys = tuple(str(k) for k in path)
      if names is None and variable.get_value().ndim:
        raise ValueError(
            f'{"/".join(keys)}: a {variable.get_value().ndim}-dimensional '
            f'{type(variable).__name__} without logical axes; create it with '
            'layers.annotated(init, ...) or layers.annotated_variable(kind, value, ...) so '
            'that it is laid out on the mesh instead of replicated.'
        )
      out[keys] = tuple(names or ())
  return out


def logical_axes(path: tuple[str, ...], ndim: int, axes: dict[tuple[str, ...], tuple]) -> tuple:
  """Logical names of a train-state leaf: those of the parameter whose path ends its path (the
  parameter itself, or one of its optimizer moments)."""
  matches = [k for k in axes if tuple(path[-len(k) :]) == k]
  if not matches:
    raise ValueError(
        f'{"/".join(path)}: a {ndim}-dimensional train-state leaf that belongs to no annotated '
        "parameter; every array of the state must follow a parameter's layout."
    )
  names = axes[max(matches, key=len)]
  if len(names) != ndim:
    raise ValueError(
        f'{"/".join(path)}: {ndim} dimensions, but its parameter is annotated with '
        f'{len(names)} logical axes {names}.'
    )
  return names


def partition_spec(spec: ModelSpec, names: tuple) -> P:
  """The mesh axes of each logical axis name, by the spec's sharding rules."""
  rules = spec.rules
  return P(*[rules.get(n) if n else None for n in names])


def _keys(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def state_shardings(spec: ModelSpec, mesh, state, axes: dict[tuple[str, ...], tuple]):
  """NamedShardings of a train-state pytree (parameters, router bias, optimizer moments), each
  leaf laid out as the parameter of `axes` (`parameter_axes`) it belongs to."""

  def one(path, leaf):
    ndim = len(getattr(leaf, 'shape', ()))
    names = logical_axes(_keys(path), ndim, axes) if ndim else ()
    leaf_spec = partition_spec(spec, names)
    for dim, mesh_axes in zip(leaf.shape, leaf_spec):
      if not mesh_axes:
        continue
      mesh_axes = mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)
      size = math.prod(mesh.shape[a] for a in mesh_axes if a)
      if dim % size:
        raise ConfigError(
            f'{"/".join(_keys(path))}: dimension {dim} does not divide over mesh '
            f'axes {mesh_axes} ({size} devices); change config.mesh or '
            'config.sharding_rules.'
        )
    return NamedSharding(mesh, leaf_spec)

  return jax.tree_util.tree_map_with_path(one, state)


def batch_spec(spec: ModelSpec, leading: int = 0) -> P:
  """The layout of a batch [B, ...]; with `leading` unsharded axes in front ([S, B, ...])."""
  return P(*(None,) * leading, spec.batch_axes)


def keep_batch_sharded(x, batch_axes: tuple[str, ...]):
  """`x` [B, ...] with its batch dimension laid over the batch axes of the mesh in context, the
  other dimensions left to the compiler; unchanged without a mesh of several devices.

  Activations must be pinned where nothing else does it: in a dense stack GSPMD may propagate
  the FSDP layout of a weight onto the activations and replicate the batch, so that every chip
  holds a whole microbatch's logits (docs/paper_scale.md).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return x
  axes = tuple(a for a in batch_axes if a in mesh.shape)
  rest = (P.UNCONSTRAINED,) * (x.ndim - 1)
  return jax.lax.with_sharding_constraint(x, P(axes, *rest))


def global_batch(spec: ModelSpec, mesh, local_batch: np.ndarray) -> jax.Array:
  """This process's rows of a batch [b, L] (or of S stacked batches [S, b, L]), assembled into
  one global array whose batch axis is sharded over the mesh's batch axes."""
  layout = batch_spec(spec, leading=local_batch.ndim - 2)
  return jax.make_array_from_process_local_data(NamedSharding(mesh, layout), local_batch)
