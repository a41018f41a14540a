"""What a run costs on the CPU the `local` studies run on: a cost model fitted to measurements.

Pure Python (no JAX), for `--list`. A run takes

  t = start-up + steps x (train step) + eval batches x (eval forward)

seconds: start-up is data, model and compilation; the eval batches are the periodic evaluations'
and the final one's over the fixed held-out set, at `train.eval_batch_size` sequences each. At
the local scale the final eval (32,768 sequences) is most of a small member's cost, so it is
priced at its own batch, not as a fraction of a training step. A training step and an eval
forward each cost a non-negative combination of

  a constant, per-layer work, dense matmul FLOPs, attention-score FLOPs, routed-expert FLOPs on
  the rows the dispatch computes, values moved into and out of the expert buffer, expert weights
  gathered per block, and parameters

with every FLOP count in the hardware convention (ling_jax.flops). The 'blocks' dispatch of the
local studies pads each expert's rows to whole blocks (flops.block_buffer_rows), which at 1-4
sequences a step is most of the rows; the optimizer's per-parameter work grows with all the
experts, not the active ones.

The model lives in cost_model.json beside this file, with the date, the machine and what it was
fitted to, written in two steps:
  python -m benchmarks.study_shapes --write     # the step and eval coefficients: the local
                                                # studies' own shapes, timed bare
  python -m experiments.cost --workdir=W --write   # start-up and one factor each on the step
                                                   # and the eval times: whole runs' elapsed_s
Without --write, `experiments.cost` compares the model with every finished member of a workdir,
or (--results) with the members of committed results tables, member by member and per study.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import glob
import json
import os
import sys

import ml_collections
import numpy as np
from etils import epath

from experiments import sweep
from fitting import results as results_lib
from fitting.core import FitError
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import metrics as metrics_lib

MODEL_FILE = os.path.join(os.path.dirname(__file__), 'cost_model.json')
FEATURES = (
    'step',
    'layers',
    'dense_flops',
    'score_flops',
    'expert_flops',
    'buffer_values',
    'block_weights',
    'parameters',
)


def features(
    arch: flops.Architecture, batch_size: int, seq_len: int, block_rows: int = 0
) -> dict[str, float]:
  """The covariates of one training step (or one eval forward) of `batch_size` x `seq_len`
  tokens; `block_rows` > 0 for the 'blocks' dispatch, whose rows are padded per expert."""
  tokens = batch_size * seq_len
  assignments = tokens * arch.top_k
  rows = (
      flops.block_buffer_rows(assignments, arch.n_experts, block_rows)
      if block_rows and arch.is_moe
      else assignments
  )
  hardware = flops.hardware_flops_per_token(arch)
  scores = 3 * arch.n_layers * 4 * seq_len * arch.n_heads * arch.head_dim / 2
  active_experts = 3 * arch.num_moe_layers * 6 * arch.d_model * arch.top_k * arch.d_expert
  per_row = 3 * arch.num_moe_layers * 6 * arch.d_model * arch.d_expert
  return dict(
      step=1.0,
      layers=float(arch.n_layers),
      dense_flops=tokens * (hardware - scores - active_experts),
      score_flops=tokens * scores,
      expert_flops=float(rows * per_row),
      buffer_values=float(rows * arch.d_model * arch.num_moe_layers),
      block_weights=(
          float(rows // block_rows * 3 * arch.d_model * arch.d_expert * arch.num_moe_layers)
          if block_rows
          else 0.0
      ),
      # AdamW reads and writes every parameter each step, routed experts included.
      parameters=float(flops.total_params(arch)),
  )


def block_rows(config) -> int:
  """The dispatch's rows per expert block, 0 when it does not pad to blocks."""
  return config.moe.block_rows if config.moe.dispatch == 'blocks' else 0


def _relative_nnls(X: np.ndarray, seconds) -> np.ndarray:
  """Non-negative coefficients c minimising the relative errors of X @ c against `seconds`
  (columns scaled to 1 for the solver)."""
  from scipy import optimize  # pylint: disable=import-outside-toplevel

  y = np.asarray(seconds, float)
  scale = X.max(axis=0)
  scale[scale == 0] = 1.0
  coef, _ = optimize.nnls((X / scale) / y[:, None], np.ones_like(y))
  return coef / scale


def _coefficients(rows: list[dict], seconds: list[float]) -> dict[str, float]:
  X = np.array([[r[k] for k in FEATURES] for r in rows], float)
  return dict(zip(FEATURES, _relative_nnls(X, seconds).tolist()))


def fit(steps: list[dict], step_seconds: list[float], evals: list[dict], eval_seconds) -> dict:
  """A model from bare timings: coefficients of the training step's features (`steps`, each
  timed `step_seconds`) and of the eval forward's (`evals`, `eval_seconds`); the start-up is
  assumed until whole runs calibrate it."""
  return dict(
      coefficients=_coefficients(steps, step_seconds),
      eval_coefficients=_coefficients(evals, eval_seconds),
      startup_s=STARTUP_S,
      fitted_to=f'bare step and eval times of {len(steps)} benchmarked shapes, start-up assumed',
  )


STARTUP_S = 15.0  # data, model init, compilation of the train and eval steps


def load(path: str | None = None) -> dict:
  with open(path or MODEL_FILE) as f:
    return json.load(f)


def save(model: dict, path: str | None = None) -> None:
  import datetime  # pylint: disable=import-outside-toplevel
  import platform  # pylint: disable=import-outside-toplevel

  model = dict(
      model,
      measured=datetime.date.today().isoformat(),
      machine=f'{platform.machine()}, {os.cpu_count()} cores',
  )
  metrics_lib.write_whole(epath.Path(path or MODEL_FILE), json.dumps(model, indent=1))


def predict_seconds(coefficients: dict, row: dict) -> float:
  """Seconds of one step (or one eval forward) with these features."""
  return float(sum(coefficients[k] * row[k] for k in FEATURES))


def eval_forwards(train_cfg, steps: int) -> int:
  """Eval forwards of a run of `steps` steps: `eval_batches` every `eval_every` steps before the
  end, then the whole fixed set (`eval_sequences` in batches of the eval batch) at the end."""
  t = train_cfg
  periodic = (steps - 1) // t.eval_every * t.eval_batches
  final = t.eval_sequences // config_lib.eval_batch_size(t) if t.eval_sequences else t.eval_batches
  return periodic + final


def run_parts(model: dict, arch: flops.Architecture, config, steps: int) -> tuple[float, float]:
  """Predicted seconds of a run's training steps and of its eval forwards, start-up excluded."""
  t, block = config.train, block_rows(config)
  step = predict_seconds(model['coefficients'], features(arch, t.batch_size, t.seq_len, block))
  forward = predict_seconds(
      model['eval_coefficients'], features(arch, config_lib.eval_batch_size(t), t.seq_len, block)
  )
  return steps * step, eval_forwards(t, steps) * forward


def run_seconds(model: dict, arch: flops.Architecture, config, steps: int) -> float:
  """Predicted wall seconds of a whole run here (config: its `train` and `moe` sections)."""
  return model['startup_s'] + sum(run_parts(model, arch, config, steps))


def finished_runs(workdir: str) -> list[dict]:
  """Every finished member under workdir/<study>/<member>/ whose summary measured its elapsed
  seconds: {member, arch, config (its train and moe sections), steps, elapsed_s}."""
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, '*', '*', metrics_lib.SUMMARY_FILE))):
    with open(path) as f:
      summary = json.load(f)
    if not summary.get('elapsed_s') or 'architecture' not in summary:
      continue
    with open(os.path.join(os.path.dirname(path), metrics_lib.CONFIG_FILE)) as f:
      config = ml_collections.ConfigDict(json.load(f))
    out.append(
        dict(
            member=os.path.relpath(os.path.dirname(path), workdir),
            arch=flops.Architecture(**summary['architecture']),
            config=config,
            steps=int(summary['steps']),
            elapsed_s=float(summary['elapsed_s']),
        )
    )
  return out


def committed_runs(tables: list[str], scale: str) -> list[dict]:
  """The finished members of results tables (as experiments.collect writes them) that measured
  `elapsed_s`, each with its config rebuilt from its study's config file at `scale`
  (configs/<study>.py), once per member however many tables list it. A row whose model no
  longer matches its study's design is left out and named on stderr."""
  rows = {}
  for path in tables:
    for r in results_lib.load(path):
      if r.get('status') == 'finished' and r.get('elapsed_s'):
        rows[(r['study'], r['member'])] = r
  studies = {}
  out = []
  for (study, name), r in sorted(rows.items()):
    if study not in studies:
      studies[study] = {m.name: (c, arch) for m, c, arch in sweep.study_members(study, scale)}
    if name not in studies[study]:
      print(
          f'{study}/{name}: not a member of configs/{study}.py:{scale}, left out', file=sys.stderr
      )
      continue
    config, arch = studies[study][name]
    if any(getattr(arch, k) != r.get(k) for k in results_lib.MODEL_FIELDS):
      print(f'{study}/{name}: its design changed since it ran, left out', file=sys.stderr)
      continue
    out.append(
        dict(
            member=f'{study}/{name}',
            arch=arch,
            config=config,
            steps=int(r['steps']),
            elapsed_s=float(r['elapsed_s']),
        )
    )
  return out


def calibrate(runs: list[dict], steps_from: dict) -> dict:
  """Start-up and a factor each on the step and the eval coefficients of `steps_from` (fitted
  to bare timings), fitted to whole runs' measured elapsed seconds: what the loop, the data
  pipeline, checkpoints and compilation add to the bare timings."""
  parts = [run_parts(steps_from, r['arch'], r['config'], r['steps']) for r in runs]
  X = np.array([[1.0, train, evaluation] for train, evaluation in parts])
  startup, step_factor, eval_factor = _relative_nnls(X, [r['elapsed_s'] for r in runs]).tolist()
  return dict(
      coefficients={k: v * step_factor for k, v in steps_from['coefficients'].items()},
      eval_coefficients={k: v * eval_factor for k, v in steps_from['eval_coefficients'].items()},
      startup_s=startup,
      fitted_to=(
          f'start-up {startup:.1f} s and factors {step_factor:.3f} (steps) and {eval_factor:.3f} '
          f'(evals) fitted to the elapsed_s of {len(runs)} finished study members, on '
          + steps_from.get('fitted_to', f'the model measured {steps_from.get("measured")}')
      ),
  )


def held_out(runs: list[dict], patterns: list[str]) -> list[bool]:
  """Which runs match one of the fnmatch patterns (on `<study>/<member>`)."""
  return [any(fnmatch.fnmatch(r['member'], p) for p in patterns) for r in runs]


def _summary_line(label: str, predicted: np.ndarray, measured: np.ndarray) -> str:
  ratios = predicted / measured
  return (
      f'{label}{len(predicted)} members: predicted {predicted.sum() / 3600:.3g} h, measured '
      f'{measured.sum() / 3600:.3g} h (ratio {predicted.sum() / measured.sum():.3f}); per member '
      f'the ratio lies in [{ratios.min():.2f}, {ratios.max():.2f}], within 25% for '
      f'{np.mean(np.abs(ratios - 1) <= 0.25):.0%}'
  )


def comparison(model: dict, runs: list[dict], out_of_sample: list[bool] | None = None) -> str:
  """Predicted against measured seconds, per member, per study and in total; members marked
  out of sample (left out of the fit) are flagged with * and summarised on their own line."""
  out_of_sample = out_of_sample or [False] * len(runs)
  lines = [f'{"member":<44} {"predicted":>10} {"measured":>10} {"ratio":>6}']
  predicted = np.array([run_seconds(model, r['arch'], r['config'], r['steps']) for r in runs])
  measured = np.array([r['elapsed_s'] for r in runs])
  for r, p, held in zip(runs, predicted, out_of_sample):
    lines.append(
        f'{r["member"]:<44} {p:>9.0f}s {r["elapsed_s"]:>9.0f}s {p / r["elapsed_s"]:>6.2f}'
        + (' *' if held else '')
    )
  by_study = collections.defaultdict(list)
  for i, r in enumerate(runs):
    by_study[r['member'].split('/')[0]].append(i)
  if len(by_study) > 1:
    for study, index in by_study.items():
      lines.append(_summary_line(f'{study}: ', predicted[index], measured[index]))
  groups = [('', np.ones(len(runs), bool))]
  if any(out_of_sample):
    held = np.array(out_of_sample)
    groups += [('in the fit: ', ~held), ('out of sample (*): ', held)]
  for label, keep in groups:
    if keep.any():
      lines.append(_summary_line(label, predicted[keep], measured[keep]))
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='where the studies ran')
  source.add_argument(
      '--results',
      help='comma-separated results tables (.jsonl, globs allowed) of finished studies, e.g. '
      '"results/local/*/results.jsonl"; their configs are rebuilt from configs/ at --scale',
  )
  parser.add_argument('--scale', default='local', help='the scale the --results studies ran at')
  parser.add_argument(
      '--write', action='store_true', help=f'recalibrate {MODEL_FILE} to these runs'
  )
  parser.add_argument(
      '--held_out',
      default='',
      help='comma-separated fnmatch patterns on <study>/<member>: members left out of the refit '
      'and reported as out of sample (a study kept for validation, or members that trained beside '
      'other work on the machine), e.g. --held_out="allocation/*"',
  )
  args = parser.parse_args(argv)
  if args.workdir:
    runs = finished_runs(args.workdir)
  else:
    tables = sorted({p for pattern in args.results.split(',') for p in glob.glob(pattern)})
    try:
      runs = committed_runs(tables, args.scale)
    except FitError as error:
      raise SystemExit(str(error)) from None
  if not runs:
    where = f'--workdir={args.workdir}' if args.workdir else f'--results={args.results}'
    raise SystemExit(f'{where}: no finished member with elapsed_s.')
  out_of_sample = held_out(runs, [p for p in args.held_out.split(',') if p])
  if args.write and all(out_of_sample):
    raise SystemExit(f'--held_out={args.held_out} leaves no member to fit; narrow the patterns.')
  model = load()
  if args.write:
    model = calibrate([r for r, held in zip(runs, out_of_sample) if not held], model)
    save(model)
    print(f'wrote {MODEL_FILE}')
  print(comparison(model, runs, out_of_sample))


if __name__ == '__main__':
  main()
