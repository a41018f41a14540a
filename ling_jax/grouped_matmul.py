"""Grouped matrix multiplication for the dropless MoE dispatch: `jax.lax.ragged_dot` or tokamax.

`out[r] = rows[r] @ weights[g(r)]` where the rows are sorted by group and `group_sizes[g]` rows
belong to group g. Two backends (config.moe.dispatch):
  * 'ragged_dot': `jax.lax.ragged_dot`, everywhere (XLA:CPU lowers it to a masked dense matmul,
    about E times the work: use it on CPU for tests only);
  * 'tokamax': tokamax's `ragged_dot` (`pip install -e '.[gpu]'` or `'.[tpu]'`), the Pallas
    kernels MaxText runs its dropless MoE with: Mosaic on TPU, Mosaic GPU or Triton on GPU, and
    its XLA implementation elsewhere. `config.moe.tokamax_implementation` pins one
    ('mosaic' | 'triton' | 'xla'; '' lets tokamax choose, falling back to 'xla');
    `config.moe.tokamax_tiles` = (tile_m, tile_k, tile_n) sets the TPU kernel's tiles (the GPU
    kernels choose theirs by heuristics).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Callable

# Importable without JAX: config validation reads the registries below.
BACKENDS = ('ragged_dot', 'tokamax')
TOKAMAX_IMPLEMENTATIONS = ('', 'mosaic', 'triton', 'xla')

GroupedMatmul = Callable[[Any, Any, Any], Any]  # (rows [R, K], weights [G, K, N], sizes [G])


def tokamax_installed() -> bool:
  return importlib.util.find_spec('tokamax') is not None


def _tokamax_implementation(implementation: str, tiles: tuple):
  """The `implementation` argument of tokamax.ragged_dot for these settings."""
  if not tiles:
    return implementation or None
  # Tiles are a setting of the TPU Mosaic kernel, which tokamax's public API does not expose:
  # this is the one use of its private modules (setup.py bounds the version). Elsewhere the
  # kernel raises NotImplementedError and tokamax moves on to the next of the sequence: 'xla',
  # the one implementation every tokamax release registers on every platform (which others
  # exist depends on the release and on what is installed: 'triton' needs triton).
  from tokamax._src.ops.ragged_dot import pallas_mosaic_tpu  # pylint: disable=import-outside-toplevel

  tile_m, tile_k, tile_n = tiles
  tpu = pallas_mosaic_tpu.PallasMosaicTpuRaggedDot(
      config=pallas_mosaic_tpu.Config(tile_m=tile_m, tile_k=tile_k, tile_n=tile_n)
  )
  if implementation == '':
    return (tpu, 'xla')
  if implementation == 'mosaic':
    return (tpu,)
  return (implementation,)


def make(backend: str, implementation: str = '', tiles: tuple = ()) -> GroupedMatmul:
  """`fn(rows_RxK, weights_GxKxN, group_sizes_G) -> out_RxN` for a backend of BACKENDS."""
  if backend == 'ragged_dot':
    import jax  # pylint: disable=import-outside-toplevel

    return jax.lax.ragged_dot
  from absl import flags  # pylint: disable=import-outside-toplevel

  if not flags.FLAGS.is_parsed():
    # tokamax reads absl flags when called and would parse the host program's argv (pytest's,
    # a notebook kernel's) as its own; outside an absl app, take every flag's default.
    flags.FLAGS.mark_as_parsed()
  import tokamax  # pylint: disable=import-outside-toplevel

  return functools.partial(
      tokamax.ragged_dot, implementation=_tokamax_implementation(implementation, tuple(tiles))
  )
