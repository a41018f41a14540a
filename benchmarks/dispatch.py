"""MoE dispatch cost of each expert-parallel transport, as ratios measured in one run.

  python -m benchmarks.dispatch

On CPU: forward + backward of one routed MoE layer (d_model 256, 64 experts of width 64, top-4,
16 x 256 tokens) with each transport inside `jax.shard_map` on a one-device mesh, relative to the
plain single-device dispatch: the bookkeeping each transport adds before any communication.
On a GPU or TPU (`jax.default_backend() != 'cpu'`) it also times `ragged_a2a`.
"""

from __future__ import annotations

import statistics
import time

import jax
from flax import nnx

from ling_jax import config as config_lib
from ling_jax import dispatch as dispatch_lib
from ling_jax import expert_parallel
from ling_jax import moe as moe_lib
from ling_jax import spec as spec_lib


def main():
  c = config_lib.base_config()
  c.model.update(d_model=256, n_experts=64, top_k=4, n_shared=0, d_expert=64)
  c.moe.capacity_factor = 1.25
  layer = moe_lib.MoE(spec_lib.build(c), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (16 * 256, 256))
  routing = layer.route(x)
  weights = (layer.wi_gate[...], layer.wi_up[...], layer.wo[...])
  mesh = jax.make_mesh(
      (1, 1, 1, 1),
      ('data', 'fsdp', 'expert', 'tensor'),
      axis_types=(jax.sharding.AxisType.Auto,) * 4,
      devices=jax.devices()[:1],
  )

  def plain(x, w):
    return dispatch_lib.dispatch_local(x, routing.experts_TxK, routing.weights_TxK, *w, layer.cfg)[
        0
    ].sum()

  def transported(name):
    def fn(x, w):
      y, _, _ = expert_parallel.routed(
          x, routing.experts_TxK, routing.weights_TxK, *w, name, layer.cfg
      )
      return y.sum()

    return fn

  variants = {'plain': plain, 'a2a': transported('a2a'), 'ring': transported('ring')}
  if jax.default_backend() != 'cpu':
    variants['ragged_a2a'] = transported('ragged_a2a')
  with jax.set_mesh(mesh):
    steps = {k: jax.jit(jax.grad(f, argnums=(0, 1))) for k, f in variants.items()}
    for step in steps.values():
      jax.block_until_ready(step(x, weights))
    times = {k: [] for k in steps}
    for _ in range(9):
      for name, step in steps.items():
        start = time.perf_counter()
        jax.block_until_ready(step(x, weights))
        times[name].append(time.perf_counter() - start)
  base = statistics.median(times['plain'])
  print(f'JAX {jax.__version__} on {jax.devices()[0].device_kind}')
  for name in steps:
    print(f'{name}: {statistics.median(times[name]) / base:.2f} x plain dispatch (fwd + bwd)')


if __name__ == '__main__':
  main()
