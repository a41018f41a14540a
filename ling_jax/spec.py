"""The model as validation resolves it: one frozen record, every default filled, built once by
`ling_jax.config.validate` and the only description of the model that the model, the MoE layer,
the FLOP accounting (`spec.arch`) and the sharding rules take.

Pure Python (no JAX), like `flops`: listing and fitting tools resolve configs without starting JAX.
A default is filled here or in `flops.Architecture` and nowhere else: `head_dim` (d_model /
n_heads) in `Architecture`, `d_expert` (2 d_model / G) and the rotated head dims here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from ling_jax import flops
from ling_jax import grouped_matmul


class MoEOptions(NamedTuple):
  """Routing and dispatch of the MoE layers, as static hashable values (`config.moe`'s fields of
  the same names; `batch_axes` from the sharding rules)."""

  router: str
  renormalize: bool
  routed_scaling: float
  n_groups: int
  top_groups: int
  dispatch: str
  capacity_factor: float
  transport: str
  tokamax_implementation: str = ''
  tokamax_tiles: tuple = ()
  block_rows: int = 16
  batch_axes: tuple = ('data', 'fsdp', 'expert')

  @property
  def dropless(self) -> bool:
    return self.dispatch == 'blocks' or self.dispatch in grouped_matmul.BACKENDS

  def matmul(self) -> grouped_matmul.GroupedMatmul:
    return grouped_matmul.make(self.dispatch, self.tokamax_implementation, self.tokamax_tiles)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Shapes (`arch`), numerics, routing and layout of one model, resolved."""

  arch: flops.Architecture  # every width resolved: head_dim, d_expert
  moe: MoEOptions
  init_std: float
  norm_eps: float
  rope_base: float
  rotated_dims: int  # head dims each rotary embedding turns: head_dim x rope_fraction
  compute_dtype: str
  param_dtype: str
  scan_layers: bool
  remat: str
  attention_impl: str
  sharding_rules: tuple[tuple[str, Any], ...]  # logical axis -> mesh axes

  @property
  def rules(self) -> dict[str, Any]:
    return dict(self.sharding_rules)

  @property
  def batch_axes(self) -> tuple[str, ...]:
    """The mesh axes a batch is split over (the 'batch' rule)."""
    return _as_axes(self.rules['batch'])


def _as_axes(mesh_axes) -> tuple[str, ...]:
  """A rule's mesh axes (one name or several) as a tuple."""
  return tuple(mesh_axes) if isinstance(mesh_axes, (tuple, list)) else (mesh_axes,)


def d_expert(model) -> int:
  """A routed expert's width: `model.d_expert`, or 2 d_model / G where it is 0; 0 for a dense
  model. A G that gives no whole width is left to validation to refuse."""
  if not model.n_experts:
    return 0
  if model.d_expert:
    return model.d_expert
  return int(2 * model.d_model / model.granularity) if model.granularity > 0 else 0


def architecture(config) -> flops.Architecture:
  """The shapes of `config`'s model, every width resolved."""
  m = config.model
  fields = dict(m, d_expert=d_expert(m))
  return flops.Architecture.from_config(fields, seq_len=config.train.seq_len)


def build(config) -> ModelSpec:
  """The spec of a config (validated by `ling_jax.config.validate`, which calls this)."""
  m, moe = config.model, config.moe
  arch = architecture(config)
  rules = tuple((name, tuple(a) if isinstance(a, list) else a) for name, a in config.sharding_rules)
  options = {k: moe[k] for k in MoEOptions._fields if k != 'batch_axes'}
  options['tokamax_tiles'] = tuple(options['tokamax_tiles'])
  return ModelSpec(
      arch=arch,
      moe=MoEOptions(**options, batch_axes=_as_axes(dict(rules)['batch'])),
      init_std=m.init_std,
      norm_eps=m.norm_eps,
      rope_base=m.rope_base,
      rotated_dims=int(arch.head_dim * m.rope_fraction),
      compute_dtype=m.compute_dtype,
      param_dtype=m.param_dtype,
      scan_layers=m.scan_layers,
      remat=m.remat,
      attention_impl=m.attention_impl,
      sharding_rules=rules,
  )
