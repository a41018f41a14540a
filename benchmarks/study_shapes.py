"""The cost model's bare timings: the `local` studies' own shapes, timed one by one.

  python -m benchmarks.study_shapes --json=/tmp/study_shapes.json           # time and print
  python -m benchmarks.study_shapes --json=/tmp/study_shapes.json --write   # and refit
  python -m benchmarks.study_shapes --from_json=/tmp/study_shapes.json --write   # refit only

Every distinct shape (model, training batch, dispatch) of the studies' members, or every
`--every`-th of them in order of predicted cost, as its member trains it: `train.steps_per_call`
optimizer steps on one fixed batch, and one eval forward of `train.eval_batch_size` sequences,
each the median of `--rounds` calls after compilation, in seconds per step and per eval batch.
`--write` fits the step and the eval coefficients of experiments/cost.py to them (non-negative
least squares on relative error) and keeps the current start-up; then calibrate the start-up
and the two factors on whole runs with `python -m experiments.cost --workdir=W --write`.
Run it on a quiet machine: every other process's work lands in the coefficients.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np
from etils import epath

from benchmarks import local_shapes
from experiments import cost
from experiments import protocol
from experiments import sweep
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import metrics as metrics_lib


def distinct_shapes(studies, scale: str = 'local') -> list[tuple[str, object, flops.Architecture]]:
  """(first member's name, its config, its architecture) for each distinct (architecture, batch,
  dispatch) of the studies' members, in order of hardware FLOPs per step."""
  seen = {}
  for study in studies:
    for member, c, arch in sweep.study_members(study, scale):
      key = (arch, c.train.batch_size, c.train.eval_batch_size, c.moe.dispatch, c.moe.block_rows)
      if key not in seen:
        tokens = c.train.batch_size * c.train.seq_len
        seen[key] = (
            flops.hardware_flops_per_token(arch) * tokens,
            f'{study}/{member.name}',
            c,
            arch,
        )
  return [shape[1:] for shape in sorted(seen.values(), key=lambda x: x[0])]


def time_shape(config, rounds: int) -> tuple[float, float]:
  """(seconds per training step, seconds per eval forward of one eval batch), medians."""
  timer = local_shapes.BareStep(config)
  program, t = timer.program, config.train
  eval_batch = config_lib.eval_batch_size(t)
  with jax.set_mesh(program.mesh):
    tokens = np.random.default_rng(1).integers(0, 256, (eval_batch, t.seq_len + 1))
    batch = program.batch(tokens.astype(np.int32))
    _, eval_loss = program.jit_steps()
    state = timer.state
    jax.block_until_ready(eval_loss(state.params, state.router_bias, batch))
    forwards = []
    for _ in range(rounds):
      start = time.perf_counter()
      jax.block_until_ready(eval_loss(state.params, state.router_bias, batch))
      forwards.append(time.perf_counter() - start)
  steps = [timer.time() for _ in range(rounds)]
  return statistics.median(steps), statistics.median(forwards)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--studies', default=','.join(protocol.LOCAL_STUDIES))
  parser.add_argument('--scale', default='local')
  parser.add_argument('--every', type=int, default=1, help='time every n-th distinct shape')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument(
      '--num_devices',
      type=int,
      default=0,
      help='devices of the mesh; 0: every device, as the members train here',
  )
  parser.add_argument('--json', default='', help='write every timing here')
  parser.add_argument('--from_json', default='', help='refit from an earlier --json, time nothing')
  parser.add_argument('--write', action='store_true', help=f'refit {cost.MODEL_FILE}')
  args = parser.parse_args(argv)
  if args.from_json:
    with open(args.from_json) as f:
      timings = json.load(f)['shapes']
  else:
    shapes = distinct_shapes(args.studies.split(','), args.scale)[:: args.every]
    print(f'JAX {jax.__version__} on {jax.devices()[0].device_kind}: {len(shapes)} shapes')
    timings = []
    for i, (name, c, arch) in enumerate(shapes):
      if args.num_devices:
        c = c.copy_and_resolve_references()
        c.unlock()
        c.mesh.num_devices = args.num_devices
      t, block = c.train, cost.block_rows(c)
      step_s, eval_s = time_shape(c, args.rounds)
      timings.append(
          dict(
              member=name,
              step_s=step_s,
              eval_s=eval_s,
              step_features=cost.features(arch, t.batch_size, t.seq_len, block),
              eval_features=cost.features(arch, config_lib.eval_batch_size(t), t.seq_len, block),
          )
      )
      print(
          f'{i + 1:>3}/{len(shapes)} {name:<40} {step_s * 1e3:8.2f} ms/step '
          f'{eval_s * 1e3:8.2f} ms/eval batch',
          flush=True,
      )
      if args.json:  # rewritten whole after every shape: an interrupted run keeps what it timed
        text = json.dumps(dict(jax=jax.__version__, shapes=timings), indent=1)
        metrics_lib.write_whole(epath.Path(args.json), text)
  if args.write:
    model = cost.fit(
        [r['step_features'] for r in timings],
        [r['step_s'] for r in timings],
        [r['eval_features'] for r in timings],
        [r['eval_s'] for r in timings],
    )
    cost.save(dict(model, startup_s=cost.load()['startup_s']))
    print(f'wrote {cost.MODEL_FILE}')
    for r in timings:
      step = cost.predict_seconds(model['coefficients'], r['step_features'])
      forward = cost.predict_seconds(model['eval_coefficients'], r['eval_features'])
      print(
          f'{r["member"]:<40} step {r["step_s"] * 1e3:8.2f} ms, model {step * 1e3:8.2f}; '
          f'eval {r["eval_s"] * 1e3:8.2f} ms, model {forward * 1e3:8.2f}'
      )


if __name__ == '__main__':
  main()
