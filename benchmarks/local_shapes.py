"""Training speed at the shapes the `local` studies train, as ratios measured side by side.

  python -m benchmarks.local_shapes                 # every shape
  python -m benchmarks.local_shapes --quick         # smallest and middle backbone only
  python -m benchmarks.local_shapes --json=out.json # also write every figure

For the smallest, middle and largest backbone of the `local` ladder, dense and the granularity
study's MoE
shapes (G = 2, 8 and 16: 64, 256 and 512 experts, the dense twin at equal active FLOPs), prints
  * the bare jitted step (`train.steps_per_call` steps per call on one fixed batch) in hardware
    FLOP/s (ling_jax.flops) over the same run's f32 matmul FLOP/s;
  * the MoE / dense step-time ratio at equal active FLOPs, with the studies' dispatch;
  * the whole training loop (`ling_jax.train.train`, as `experiments.run` runs it: data pipeline,
    host transfers, per-step metrics, evals, checkpoints) in tokens/s over the bare step's.
Aims (docs/performance.md): loop >= 0.9 of the bare step; dense step at the middle backbone
>= 0.5 of matmul; MoE / dense <= 1.15. The cost model of `--list` is fitted to the studies' own
shapes instead (benchmarks/study_shapes.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from experiments import protocol
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import train as train_lib

GRANULARITY_SHAPES = {'G2': (64, 2, 1), 'G8': (256, 8, 4), 'G16': (512, 16, 8)}


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  jax.block_until_ready(f(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(a, b))
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times)


def shape_config(backbone, shape: str, batch_size: int = 16):
  """The local study config of one backbone, dense ('dense') or a granularity shape ('G8'), at
  `batch_size` sequences."""
  n_layers, d_model, heads, kv = backbone
  c = common.study_config('bench', 'local', '')
  c.sweep.source = ''
  c.model.update(n_layers=n_layers, d_model=d_model, n_heads=heads, n_kv_heads=kv)
  if shape == 'dense':
    c.model.update(n_experts=0, top_k=0, n_shared=0, d_expert=0, d_ffn=3 * d_model)
  else:
    experts, active, shared = GRANULARITY_SHAPES[shape]
    g = int(shape[1:])
    c.model.update(
        n_experts=experts, top_k=active, n_shared=shared, d_expert=2 * d_model // g, d_ffn=0
    )
  c.train.update(compute_budget=0.0, tokens=10**9, batch_size=batch_size)
  c.mesh.num_devices = 1
  return c


class BareStep:
  """`steps_per_call` optimizer steps on one fixed batch; `time()` is seconds per step."""

  def __init__(self, config):
    self.config = config
    self.program = train_lib.Trainer.build(config)
    self.arch = self.program.arch
    with jax.set_mesh(self.program.mesh):
      self.state = self.program.init_state()
      self.call, _ = self.program.jit_steps()
      t = config.train
      tokens = (
          np.random.default_rng(0)
          .integers(0, 256, (t.steps_per_call, t.batch_size, t.seq_len + 1))
          .astype(np.int32)
      )
      self.batch = self.program.batch(tokens)
      self.state, m = self.call(self.state, self.batch)
      jax.block_until_ready(m)

  def time(self) -> float:
    with jax.set_mesh(self.program.mesh):
      start = time.perf_counter()
      self.state, m = self.call(self.state, self.batch)
      jax.block_until_ready(m)
    return (time.perf_counter() - start) / self.config.train.steps_per_call

  @property
  def hardware_flops_per_step(self) -> float:
    t = self.config.train
    return flops.hardware_flops_per_token(self.arch) * t.batch_size * t.seq_len


def loop_tokens_per_s(config, steps: int) -> float:
  """The steady tokens/s of a real training run of `steps` steps: compilation excluded, and no
  periodic eval or checkpoint inside the window (their cost is `eval_and_checkpoint_seconds`)."""
  c = config.copy_and_resolve_references()
  t = c.train
  c.train.update(
      tokens=steps * t.batch_size * t.seq_len,
      eval_every=steps,
      checkpoint_every=steps,
      log_every=max(steps // 4, 1),
  )
  if t.eval_sequences:  # the final eval reads the whole held-out set; a periodic one suffices
    c.train.eval_sequences = config_lib.eval_batch_size(t) * t.eval_batches
  with tempfile.TemporaryDirectory() as workdir:
    return train_lib.train(c, workdir)['steady_tokens_per_s']


def eval_and_checkpoint_seconds(timer: BareStep) -> float:
  """Seconds of one periodic evaluation (train.eval_batches batches of the fixed held-out set)
  and one checkpoint save of the train state, as the loop does every eval/checkpoint period."""
  from ling_jax import checkpoint as checkpoint_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import data as data_lib  # pylint: disable=import-outside-toplevel

  program, t = timer.program, timer.config.train
  dataset = data_lib.Dataset(timer.config)
  with jax.set_mesh(program.mesh):
    batches = [program.batch(b) for b in dataset.eval_batches()[: t.eval_batches]]
    _, eval_loss = program.jit_steps()
    state = timer.state
    jax.block_until_ready(eval_loss(state.params, state.router_bias, batches[0]))
    start = time.perf_counter()
    jax.block_until_ready([eval_loss(state.params, state.router_bias, b) for b in batches])
    evaluation = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as workdir:
      ckpt = checkpoint_lib.Checkpointer(workdir, 2, t.async_checkpoint)
      iterator = dataset.train_iterator()
      next(iterator)
      start = time.perf_counter()
      ckpt.save(1, state, iterator, dict(wall_time_s=0.0))
      ckpt.close()
      checkpoint = time.perf_counter() - start
  return evaluation + checkpoint


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--json', default='')
  args = parser.parse_args(argv)
  # The local ladder, smallest to largest (the designs from the fitted laws add two one-layer
  # rungs below it, protocol.LOCAL_ONE_LAYER_RUNGS, not timed here)
  ladder = protocol.LOCAL_LADDER
  picks = [ladder[0], ladder[len(ladder) // 2]] + ([] if args.quick else [ladder[-1]])
  print(f'JAX {jax.__version__} on {jax.devices()[0].device_kind}, {jax.device_count()} device(s)')
  matmul = matmul_flops_per_s()
  print(f'f32 matmul 2048^3: {matmul / 1e9:.1f} GFLOP/s (the reference of every ratio)')
  figures = dict(matmul_flops_per_s=matmul, shapes=[])
  for backbone in picks:
    timers = {}
    for shape in ('dense',) + tuple(GRANULARITY_SHAPES):
      timers[shape] = BareStep(shape_config(backbone, shape))
    times = {name: [] for name in timers}
    for _ in range(args.rounds):  # alternate so that drift hits every shape alike
      for name, timer in timers.items():
        times[name].append(timer.time())
    dense_s = statistics.median(times['dense'])
    for name, timer in timers.items():
      seconds = statistics.median(times[name])
      steps = int(min(400, max(40, 15 / seconds))) // 10 * 10
      loop = loop_tokens_per_s(timer.config, steps)
      t = timer.config.train
      bare_tokens_per_s = t.batch_size * t.seq_len / seconds
      periodic = eval_and_checkpoint_seconds(timer)
      period = min(t.eval_every, t.checkpoint_every)
      # The loop at the studies' cadence: its steady step time plus one eval and one checkpoint
      # every `period` steps.
      loop_step = t.batch_size * t.seq_len / loop
      at_cadence = seconds / (loop_step + periodic / period)
      row = dict(
          backbone=backbone,
          shape=name,
          seconds_per_step=seconds,
          tokens_per_step=t.batch_size * t.seq_len,
          steps_per_call=t.steps_per_call,
          hardware_flops_per_step=timer.hardware_flops_per_step,
          step_over_matmul=timer.hardware_flops_per_step / seconds / matmul,
          moe_over_dense=seconds / dense_s,
          loop_over_bare=loop / bare_tokens_per_s,
          eval_and_checkpoint_s=periodic,
          loop_over_bare_at_cadence=at_cadence,
      )
      figures['shapes'].append(row)
      print(
          f'{str(backbone):<18} {name:<5} {seconds * 1e3:8.1f} ms/step  step/matmul '
          f'{row["step_over_matmul"]:.2f}  MoE/dense {row["moe_over_dense"]:.2f}  '
          f'loop/bare {row["loop_over_bare"]:.2f} ({steps} steps), with an eval and a '
          f'checkpoint every {period} steps {at_cadence:.2f}',
          flush=True,
      )
      assert flops.paper_flops_per_token(timer.arch) == flops.paper_flops_per_token(
          timers['dense'].arch
      ), 'the dense twin must match the MoE active FLOPs'
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(figures, f, indent=1)


if __name__ == '__main__':
  main()
