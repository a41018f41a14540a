"""What a run costs on the CPU the `local` studies run on: a cost model fitted to measurements.

Pure Python (no JAX), for `--list`. One optimizer step of a shape takes

  t = c_step + c_layer * L + (dense matmul FLOPs) / r_dense + (attention-score FLOPs) / r_scores
      + (routed-expert FLOPs) / r_experts + c_row * (dispatched rows) + c_expert * (E * L_moe)
      + c_param * (parameters)

seconds, with every FLOP count per step in the hardware convention (ling_jax.flops), and the
optimizer's per-parameter work, which for an MoE grows with all its experts, not the active ones.
A run takes a start-up (data, model, compilation) plus its steps and its evaluations (a forward
pass is a third of a step).

The coefficients live in cost_model.json beside this file, with the date, the machine and what
they were fitted to. Two sources can write them, both by non-negative least squares on relative
error:
  python -m experiments.cost --workdir=W --write   # whole runs: finished study members' elapsed_s
  python -m benchmarks.local_shapes --fit_cost_model   # bare step times of the local shapes
The first is what --list should use: it prices what a member really costs (start-up, evals,
checkpoints and the loop included). It fits the start-up and one factor on the benchmarked step
times (or, with --all_coefficients, every coefficient, which needs runs of many shapes). Without
--write it compares the current model's prediction with every finished member's measured time.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import types

import numpy as np

from ling_jax import flops

MODEL_FILE = os.path.join(os.path.dirname(__file__), 'cost_model.json')
FEATURES = (
    'step',
    'layers',
    'dense_flops',
    'score_flops',
    'expert_flops',
    'dispatched_rows',
    'expert_layers',
    'parameters',
)


def features(arch: flops.Architecture, batch_size: int, seq_len: int) -> dict[str, float]:
  """The model's covariates of one optimizer step of `batch_size` x `seq_len` tokens."""
  tokens = batch_size * seq_len
  hardware = flops.hardware_flops_per_token(arch)
  scores = 3 * arch.n_layers * 4 * seq_len * arch.n_heads * arch.hd / 2
  experts = 3 * arch.num_moe_layers * 6 * arch.d_model * arch.top_k * arch.d_expert
  return dict(
      step=1.0,
      layers=float(arch.n_layers),
      dense_flops=tokens * (hardware - scores - experts),
      score_flops=tokens * scores,
      expert_flops=tokens * experts,
      dispatched_rows=float(tokens * arch.top_k * arch.num_moe_layers),
      expert_layers=float(arch.n_experts * arch.num_moe_layers),
      # AdamW reads and writes every parameter each step, routed experts included.
      parameters=float(flops.total_params(arch)),
  )


def _relative_nnls(X: np.ndarray, seconds) -> np.ndarray:
  """Non-negative coefficients c minimising the relative errors of X @ c against `seconds`
  (columns scaled to 1 for the solver)."""
  from scipy import optimize  # pylint: disable=import-outside-toplevel

  y = np.asarray(seconds, float)
  scale = X.max(axis=0)
  scale[scale == 0] = 1.0
  coef, _ = optimize.nnls((X / scale) / y[:, None], np.ones_like(y))
  return coef / scale


def fit(rows: list[dict], seconds: list[float]) -> dict:
  """Non-negative coefficients minimising the relative error of the predicted step times."""
  X = np.array([[r[k] for k in FEATURES] for r in rows], float)
  coef = _relative_nnls(X, seconds)
  return dict(
      coefficients=dict(zip(FEATURES, coef.tolist())),
      startup_s=STARTUP_S,
      eval_forward_fraction=EVAL_FORWARD_FRACTION,
      fitted_to=f'step times of {len(rows)} benchmarked shapes, start-up assumed',
  )


STARTUP_S = 15.0  # data, model init, compilation of the train and eval steps


def load(path: str = MODEL_FILE) -> dict:
  with open(path) as f:
    return json.load(f)


def save(model: dict, path: str = MODEL_FILE) -> None:
  import datetime  # pylint: disable=import-outside-toplevel
  import platform  # pylint: disable=import-outside-toplevel

  model = dict(
      model,
      measured=datetime.date.today().isoformat(),
      machine=f'{platform.machine()}, {os.cpu_count()} cores',
  )
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(model, f, indent=1)
  os.replace(tmp, path)


def predict_seconds_per_step(model: dict, row: dict) -> float:
  return float(sum(model['coefficients'][k] * row[k] for k in FEATURES))


def run_features(arch: flops.Architecture, train_cfg, steps: int) -> dict[str, float]:
  """The covariates of a whole run: every step feature times the run's step-equivalents (its
  steps, plus a forward pass over each periodic eval's sequences and over the whole fixed set at
  the end), and 1 for its start-up."""
  t = train_cfg
  per_step = features(arch, t.batch_size, t.seq_len)
  eval_batch = getattr(t, 'eval_batch_size', 0) or t.batch_size
  periodic = (steps - 1) // t.eval_every * t.eval_batches * eval_batch
  final = getattr(t, 'eval_sequences', 0) or t.eval_batches * t.batch_size
  equivalents = steps + (periodic + final) / t.batch_size * EVAL_FORWARD_FRACTION
  return dict({k: v * equivalents for k, v in per_step.items()}, startup=1.0)


EVAL_FORWARD_FRACTION = 1 / 3  # a forward pass's share of a training step's work


def run_seconds(model: dict, arch: flops.Architecture, train_cfg, steps: int) -> float:
  """Predicted wall seconds of a whole run here: start-up, steps and evaluations."""
  f = run_features(arch, train_cfg, steps)
  return model['startup_s'] + sum(model['coefficients'][k] * f[k] for k in FEATURES)


def finished_runs(workdir: str) -> list[dict]:
  """Every finished member under workdir/<study>/<member>/ whose summary measured its elapsed
  seconds: {member, arch, train (the config's train section), steps, elapsed_s}."""
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, '*', '*', 'summary.json'))):
    with open(path) as f:
      summary = json.load(f)
    config_path = os.path.join(os.path.dirname(path), 'config.json')
    if not summary.get('elapsed_s') or 'architecture' not in summary:
      continue
    with open(config_path) as f:
      train_cfg = types.SimpleNamespace(**json.load(f)['train'])
    out.append(
        dict(
            member=os.path.relpath(os.path.dirname(path), workdir),
            arch=flops.Architecture(**summary['architecture']),
            train=train_cfg,
            steps=int(summary['steps']),
            elapsed_s=float(summary['elapsed_s']),
        )
    )
  return out


def calibrate(runs: list[dict], steps_from: dict | None = None) -> dict:
  """Start-up and step coefficients fitted to whole runs' measured elapsed seconds.

  With `steps_from` (a model whose step coefficients came from benchmarked shapes), only the
  start-up and one factor on its step times are fitted: what a few runs of similar shapes can
  determine. Without it, every coefficient is refitted: runs of many shapes are needed.
  """
  if steps_from is None:
    keys = ('startup', *FEATURES)
    X = np.array([[run_features(r['arch'], r['train'], r['steps'])[k] for k in keys] for r in runs])
  else:
    keys = ('startup', 'factor')
    X = np.array(
        [
            [1.0, run_seconds(dict(steps_from, startup_s=0.0), r['arch'], r['train'], r['steps'])]
            for r in runs
        ]
    )
  coef = dict(zip(keys, _relative_nnls(X, [r['elapsed_s'] for r in runs]).tolist()))
  startup = coef.pop('startup')
  if steps_from is not None:
    factor = coef.pop('factor')
    coef = {k: v * factor for k, v in steps_from['coefficients'].items()}
  how = (
      'every coefficient'
      if steps_from is None
      else (
          f'start-up and a factor {factor:.3f} on the step times of '
          + steps_from.get('fitted_to', f'the model measured {steps_from.get("measured")}')
      )
  )
  return dict(
      coefficients=coef,
      startup_s=startup,
      eval_forward_fraction=EVAL_FORWARD_FRACTION,
      fitted_to=f'{how}, to the elapsed_s of {len(runs)} finished study members',
  )


def held_out(runs: list[dict], patterns: list[str]) -> list[bool]:
  """Which runs match one of the fnmatch patterns (on `<study>/<member>`)."""
  return [any(fnmatch.fnmatch(r['member'], p) for p in patterns) for r in runs]


def comparison(model: dict, runs: list[dict], out_of_sample: list[bool] | None = None) -> str:
  """Predicted against measured seconds, per member and in total; members marked out of sample
  (left out of the fit) are flagged with * and summarised on their own line."""
  out_of_sample = out_of_sample or [False] * len(runs)
  lines = [f'{"member":<44} {"predicted":>10} {"measured":>10} {"ratio":>6}']
  predicted = [run_seconds(model, r['arch'], r['train'], r['steps']) for r in runs]
  for r, p, held in zip(runs, predicted, out_of_sample):
    lines.append(
        f'{r["member"]:<44} {p:>9.0f}s {r["elapsed_s"]:>9.0f}s {p / r["elapsed_s"]:>6.2f}'
        + (' *' if held else '')
    )
  groups = [('', [True] * len(runs))]
  if any(out_of_sample):
    groups += [
        ('in the fit: ', [not h for h in out_of_sample]),
        ('out of sample (*): ', out_of_sample),
    ]
  for label, keep in groups:
    if not any(keep):
      continue
    p = np.array([x for x, k in zip(predicted, keep) if k])
    m = np.array([r['elapsed_s'] for r, k in zip(runs, keep) if k])
    ratios = p / m
    lines.append(
        f'{label}{len(p)} members: predicted {p.sum() / 3600:.3g} h, measured '
        f'{m.sum() / 3600:.3g} h (ratio {p.sum() / m.sum():.3f}); per member the ratio '
        f'lies in [{ratios.min():.2f}, {ratios.max():.2f}], within 25% for '
        f'{np.mean(np.abs(ratios - 1) <= 0.25):.0%}'
    )
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='where the studies ran')
  parser.add_argument('--write', action='store_true', help=f'refit {MODEL_FILE} from its runs')
  parser.add_argument(
      '--all_coefficients',
      action='store_true',
      help='refit every step coefficient (runs of many shapes); default: start-up and one factor '
      'on the current step times',
  )
  parser.add_argument(
      '--held_out',
      default='',
      help='comma-separated fnmatch patterns on <study>/<member>: members left out of the refit '
      'and reported as out of sample (a study kept for validation, or members that trained beside '
      'other work on the machine), e.g. --held_out="allocation/*"',
  )
  args = parser.parse_args(argv)
  runs = finished_runs(args.workdir)
  if not runs:
    raise SystemExit(f'--workdir={args.workdir}: no finished member with elapsed_s in its summary.')
  out_of_sample = held_out(runs, [p for p in args.held_out.split(',') if p])
  if args.write and all(out_of_sample):
    raise SystemExit(f'--held_out={args.held_out} leaves no member to fit; narrow the patterns.')
  model = load()
  if args.write:
    fitted = [r for r, held in zip(runs, out_of_sample) if not held]
    model = calibrate(fitted, None if args.all_coefficients else model)
    save(model)
    print(f'wrote {MODEL_FILE}')
  print(comparison(model, runs, out_of_sample))


if __name__ == '__main__':
  main()
