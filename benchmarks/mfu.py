"""Model FLOPs utilisation of a Ling-mini-beta-shaped MoE stack, for each dispatch and transport.

  python -m benchmarks.mfu                          # on a GPU or TPU host
  python -m benchmarks.mfu --layers=4 --batch=8     # fewer layers / sequences to fit a device
  python -m benchmarks.mfu --peak_flops=989e12      # where the device kind is not in the table

The stack is Ling-mini-beta's (arXiv 2507.17702 Table 3; configs/ling_mini_beta.py): d_model
2048, 16/4 heads, 384 experts of width 384, top-12 + 1 shared, the first layer dense, in bf16 on
f32 parameters, 4096-token sequences. Each train step is timed after compilation; MFU is the
hardware FLOPs of ling_jax.flops (causal attention, router and logits counted, remat not) over
the devices' bf16 peak (ling_jax.hardware.CHIPS, or --peak_flops). Dispatches:
`einsum` (capacity 1.25), `ragged_dot` and `tokamax` (dropless); with more than one device, the
expert-parallel transports a2a, ring and ragged_a2a over an expert axis of every device.
On a CPU it runs a tiny stack and prints FLOP/s only (no peak): a check that the script works.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from configs import ling_mini_beta
from ling_jax import flops
from ling_jax import grouped_matmul
from ling_jax import metrics as metrics_lib
from ling_jax import spec as spec_lib
from ling_jax import train as train_lib


def stack_config(
    layers: int,
    batch: int,
    seq_len: int,
    dispatch: str,
    transport: str,
    expert_axis: int,
    tiny: bool,
):
  c = ling_mini_beta.get_config('paper')
  c.model.update(n_layers=layers, remat='dots_no_batch', compute_dtype='bfloat16')
  if tiny:
    c.model.update(
        d_model=128,
        n_heads=4,
        n_kv_heads=2,
        n_experts=48,
        d_expert=32,
        d_ffn=256,
        top_k=6,
        vocab_size=512,
        remat='none',
        compute_dtype='float32',
    )
  c.moe.update(
      dispatch=dispatch, transport=transport, capacity_factor=1.25 if dispatch == 'einsum' else 0.0
  )
  c.train.update(
      batch_size=batch, seq_len=seq_len, tokens=10**12, compute_budget=0.0, steps_per_call=1
  )
  c.data.update(source='synthetic', paths=())
  c.mesh.update(num_devices=0, data=-1, expert=expert_axis)
  return c


def time_steps(config, rounds: int) -> float:
  program = train_lib.Trainer.build(config)
  with jax.set_mesh(program.mesh):
    state = program.init_state()
    step, _ = program.jit_steps()
    t = config.train
    tokens = (
        np.random.default_rng(0)
        .integers(0, config.model.vocab_size, (1, t.batch_size, t.seq_len + 1))
        .astype(np.int32)
    )
    batch = program.batch(tokens)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(rounds):
      start = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--layers', type=int, default=8)
  parser.add_argument('--batch', type=int, default=0, help='sequences; 0: 4 per device')
  parser.add_argument('--seq_len', type=int, default=4096)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--peak_flops', type=float, default=0.0, help='bf16 FLOP/s per device')
  args = parser.parse_args(argv)
  tiny = jax.default_backend() == 'cpu'
  n = jax.device_count()
  batch = args.batch or 4 * n
  seq_len = 128 if tiny else args.seq_len
  peak = (
      None
      if tiny
      else metrics_lib.peak_flops_per_device(args.peak_flops, jax.devices()[0].device_kind)
  )
  print(
      f'JAX {jax.__version__} on {n} x {jax.devices()[0].device_kind}; peak '
      f'{peak / 1e12 if peak else float("nan"):.0f} TFLOP/s per device (bf16)'
  )
  variants = [('einsum', 'a2a', 1), ('ragged_dot', 'a2a', 1)]
  if grouped_matmul.tokamax_installed():
    variants.append(('tokamax', 'a2a', 1))
  if n > 1:
    variants += [('einsum', 'a2a', n), ('einsum', 'ring', n)]
    if not tiny:
      variants.append(('ragged_dot', 'ragged_a2a', n))
  for dispatch, transport, expert_axis in variants:
    c = stack_config(args.layers, batch, seq_len, dispatch, transport, expert_axis, tiny)
    try:
      seconds = time_steps(c, args.rounds)
    except Exception as error:  # pylint: disable=broad-except
      print(
          f'{dispatch:<10} {transport if expert_axis > 1 else "-":<10} failed: '
          f'{type(error).__name__}: {str(error)[:200]}'
      )
      continue
    arch = spec_lib.architecture(c)
    model_flops = flops.hardware_flops_per_token(arch) * batch * seq_len / seconds
    mfu = f'{model_flops / (peak * n):.1%}' if peak else 'n/a (no peak on CPU)'
    print(
        f'{dispatch:<10} {transport if expert_axis > 1 else "-":<10} expert axis {expert_axis}: '
        f'{seconds * 1e3:8.1f} ms/step, {model_flops / 1e12:8.2f} TFLOP/s, MFU {mfu}',
        flush=True,
    )


if __name__ == '__main__':
  main()
