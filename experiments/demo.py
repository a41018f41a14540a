"""The paper's method in miniature: train, collect, fit, and read Efficiency Leverage off it.

  python -m experiments.demo --workdir=/tmp/ling_jax/demo

Trains the `demo` scale of two studies on the built-in byte corpus (CPU, minutes): the dense
baseline (five budgets, 2.5e10-4e11 FLOPs) and the activation-ratio study (E = 2, 8, 32
routed experts, top-2 + 1 shared, at 5e10 and 1e11 FLOPs), every run at least 1,000 steps, the
A = 1 member and the dense runs of its budgets in three seeds each. At these budgets the
compute-optimal model is below the smallest backbone of the local ladder, so every member has
the same (2, 24) backbone and the frontier is that backbone's loss against training compute.
It then gathers the results table (`experiments.collect`), fits the dense frontier and every
MoE run's EL with a bootstrap (`fitting.fit`), and prints the EL table, the A = 1 check (with
its likely measured cause where it fails) and where the figures are. Small runs and a
2,048-sequence held-out set: wide intervals. The real replication, in the paper's order and at
budgets where the model grows with compute, is docs/replication.md.

A rerun of the same command skips what is done and resumes what was interrupted.
"""

from __future__ import annotations

import importlib
import math
import os
import sys

from absl import app
from absl import flags

from experiments import console

FLAGS = flags.FLAGS

STUDIES = ('dense_baseline', 'activation_ratio')


def train_studies(workdir: str) -> None:
  from experiments import sweep  # pylint: disable=import-outside-toplevel

  for study in STUDIES:
    module = importlib.import_module(f'configs.{study}')
    base, members = module.get_config('demo'), module.get_sweep('demo')
    outcome = sweep.run(base, members, workdir)
    preempted = [m for m, s in outcome.items() if s == 'preempted']
    if preempted:
      console.exit_preempted(f'{study}/{preempted[0]}')
    failed = [m for m, s in outcome.items() if s == 'failed']
    if failed:
      sys.exit(
          f'{study}: {len(failed)} member(s) failed ({", ".join(failed)}); see '
          f'{os.path.join(workdir, study)}/<member>/failure.json'
      )


def el_table(report: dict) -> str:
  """One line per MoE run: its activation ratio, budget, loss and EL with the 95% interval."""
  entry = report['studies']['activation_ratio']
  lines = [f"{'member':10} {'A':>6} {'C (FLOPs)':>10} {'eval loss':>9} {'EL':>6}  95% interval"]
  for p in sorted(entry['points'], key=lambda p: (p['C'], -p['A'])):
    lo, hi = p.get('EL_interval') or (float('nan'), float('nan'))
    note = '  (extrapolates the frontier: not fitted)' if p['extrapolated'] else ''
    lines.append(
        f"{p['member']:10} {p['A']:6.3f} {p['C']:10.3g} {p['loss']:9.4f} "
        f"{p['EL']:6.2f}  [{lo:.2f}, {hi:.2f}]{note}"
    )
  for check in entry.get('check_A_equals_1', []):
    lo, hi = check.get('EL_read_off_dense_runs_interval') or (float('nan'), float('nan'))
    seeds = check.get('n_seeds', 1)
    lines.append(
        f"A = 1 check ({check['member']}"
        + (f', mean of {seeds} seeds' if seeds > 1 else '')
        + f"): EL {check['EL_read_off_dense_runs']:.2f} [{lo:.2f}, {hi:.2f}] read off the dense "
        f"runs ({check['EL']:.2f} off the power law), interval contains 1: "
        + ('yes' if check['holds'] else f'NO: {likely_cause(check)}')
    )
  return '\n'.join(lines)


def likely_cause(check: dict) -> str:
  """The measured cause a failed A = 1 check most likely has: the loss against the dense run of
  the same budget (same backbone here), in units of that difference's standard error."""
  twin = check.get('same_budget_dense')
  if not twin or not twin.get('difference_stderr'):
    return 'no dense run at its budget to compare its loss with'
  gap, sd = twin['loss_difference'], twin['difference_stderr']
  if abs(gap) > 2 * sd:
    side = 'below' if gap < 0 else 'above'
    return (
        f'its loss is {abs(gap):.4f} {side} the dense run of its budget ({abs(gap) / sd:.1f} '
        'standard errors of the difference): the arms differ at this size, not by noise'
    )
  return (
      f'its loss is within noise of the dense run of its budget ({gap:+.4f} +- {sd:.4f}): the '
      "dense runs' envelope around that budget, not the member, moves its EL"
  )


def main(argv):
  del argv
  console.show_progress()
  from experiments import collect  # pylint: disable=import-outside-toplevel
  from fitting import fit  # pylint: disable=import-outside-toplevel

  workdir = FLAGS.workdir
  train_studies(workdir)
  table = [r for study in STUDIES for r in collect.rows(workdir, study)]
  results = os.path.join(workdir, 'results')
  collect.write(table, results)
  out = os.path.join(workdir, 'fits')
  report = fit.run(results + '.csv', 'all', out, n_bootstrap=FLAGS.bootstrap)
  print(f'\nResults: {results}.csv ({len(table)} runs); fits: {out}/report.json')
  power = report['studies']['dense_baseline']['power']['params']
  print(
      f"Dense frontier (power law): L = {math.exp(power['log_coefficient']):.3g} "
      f"C^{power['exponent_C']:.4f}, C in FLOPs"
  )
  print(el_table(report))
  figures = sorted(f for f in os.listdir(out) if f.endswith('.png'))
  print(f'Figures: {", ".join(os.path.join(out, f) for f in figures)}')
  print(
      "The full replication, six studies in the paper's order (hours each on two cores): "
      'docs/replication.md'
  )


if __name__ == '__main__':  # flags defined here: el_table is imported by tests
  flags.DEFINE_string('workdir', '/tmp/ling_jax/demo', 'Local folder or gs:// path.')
  flags.DEFINE_integer('bootstrap', 200, 'Bootstrap draws for the EL intervals.')
  app.run(main)
