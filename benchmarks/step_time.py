"""Train-step speed, as ratios measured side by side in one process.

  python -m benchmarks.step_time               # all figures
  python -m benchmarks.step_time --quick       # smaller shapes, fewer repeats

Prints (1) the f32 large-matmul FLOP/s of this machine, (2) a dense train step's model FLOP/s
(hardware convention, ling_jax.flops) and its ratio to (1), and (3) the MoE / dense step-time
ratio at equal active FLOPs for each MoE dispatch. Goals (docs/performance.md): (2) >= 0.5 of (1)
for d_model >= 512; (3) <= 1.3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import train as train_lib


def timed(fn, *args, repeats: int) -> float:
  """Median seconds of `fn(*args)` after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_flops_per_s(n: int, repeats: int) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  return 2 * n**3 / timed(jax.jit(jnp.matmul), a, b, repeats=repeats)


def step_config(d_model: int, n_layers: int, seq_len: int, batch: int, **model):
  c = config_lib.base_config()
  c.model.update(
      n_layers=n_layers,
      d_model=d_model,
      n_heads=max(d_model // 64, 1),
      n_kv_heads=max(d_model // 128, 1),
      vocab_size=256,
      **model,
  )
  c.train.update(seq_len=seq_len, batch_size=batch, tokens=10**9)
  return c


class StepTimer:
  """A compiled train step on a fixed batch; `time()` returns one step's seconds."""

  def __init__(self, config):
    self.program = train_lib.Trainer.build(config)
    self.arch = self.program.arch
    self.state = self.program.init_state()
    self.tokens = config.train.batch_size * config.train.seq_len
    self.batch = jnp.asarray(
        np.random.default_rng(0).integers(
            0, 256, (config.train.batch_size, config.train.seq_len + 1)
        ),
        jnp.int32,
    )
    self.step = jax.jit(self.program.train_step)
    jax.block_until_ready(self.step(self.state, self.batch))

  def time(self) -> float:
    start = time.perf_counter()
    jax.block_until_ready(self.step(self.state, self.batch))
    return time.perf_counter() - start

  def model_flops(self) -> float:
    return flops.hardware_flops_per_token(self.arch) * self.tokens


def side_by_side(timers: dict[str, StepTimer], rounds: int) -> dict[str, float]:
  """Median step time of each timer, alternating them round by round so drift hits all alike."""
  times = {name: [] for name in timers}
  for _ in range(rounds):
    for name, timer in timers.items():
      times[name].append(timer.time())
  return {name: statistics.median(t) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true')
  args = parser.parse_args()
  rounds = 3 if args.quick else 7
  print(f'JAX {jax.__version__} on {jax.devices()[0].device_kind}, {jax.device_count()} device(s)')

  # Dense model FLOP/s against the matmul ceiling.
  matmul = matmul_flops_per_s(1024 if args.quick else 2048, repeats=rounds)
  print(f'f32 matmul: {matmul / 1e9:.1f} GFLOP/s')
  for d_model in ([256] if args.quick else [256, 512, 768]):
    timer = StepTimer(step_config(d_model, 4, 256, 8, d_ffn=4 * d_model))
    seconds = side_by_side({'dense': timer}, rounds)['dense']
    achieved = timer.model_flops() / seconds
    print(
        f'dense d_model {d_model}: {achieved / 1e9:.1f} GFLOP/s model FLOPs = '
        f'{achieved / matmul:.2f} of matmul ({seconds * 1e3:.0f} ms/step)'
    )

  # MoE vs dense at equal active FLOPs: E=64, k=4, one shared expert, G=8 (d_expert 64), each
  # MoE variant timed alternately with its own dense twin so that drift hits both alike.
  d_model, d_expert = 256, 64
  shape = dict(d_model=d_model, n_layers=4, seq_len=256, batch=16 if not args.quick else 8)
  variants = {
      'einsum cf=1.25': dict(dispatch='einsum', capacity_factor=1.25),
      'einsum cf=1.0': dict(dispatch='einsum', capacity_factor=1.0),
  }
  if not args.quick:
    variants['ragged_dot'] = dict(dispatch='ragged_dot', capacity_factor=0.0)
  for scan in (True, False):
    dense = StepTimer(step_config(**shape, d_ffn=5 * d_expert, scan_layers=scan))
    for name, moe in variants.items():
      c = step_config(
          **shape, n_experts=64, top_k=4, n_shared=1, d_expert=d_expert, scan_layers=scan
      )
      c.moe.update(**moe)
      timer = StepTimer(c)
      assert flops.paper_flops_per_token(timer.arch) == flops.paper_flops_per_token(dense.arch)
      medians = side_by_side({'dense': dense, 'moe': timer}, rounds)
      print(
          f'MoE ({name}, {"scan" if scan else "unrolled"}) / dense step time at equal active '
          f'FLOPs: {medians["moe"] / medians["dense"]:.2f}'
      )
      del timer


if __name__ == '__main__':
  main()
