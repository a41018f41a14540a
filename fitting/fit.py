"""Fits the paper's laws to a results table and writes report.json and figures.

  python -m fitting.fit --results=/tmp/studies/results.jsonl --study=all --out=/tmp/fits
  python -m fitting.fit --results=gs://B/studies/results.csv --study=granularity --out=/tmp/g

Studies and what is fitted (loss = --loss: the held-out eval loss at the end of training by
default; the paper used the training loss):
  dense_baseline    the dense frontier L(C), with (ICLR) and without (v1) an irreducible term;
  seeds             the spread of the final loss over seeds of one dense and one MoE design;
  hparams           learning-rate and batch laws over the runs within 0.25% of each budget's best;
  allocation        IsoFLOP minima, M_opt(C) and D_opt(C) = C / M_opt;
  activation_ratio, granularity, shared_experts, dense_layers, attention_ratio
                    EL of every run (per_run) and of every architecture from its own L(C)
                    (per_architecture) against the dense frontier (needs dense_baseline rows in
                    the same table), FLOP EL and wall-clock EL; Eq. 10 / Eq. 11 per budget group,
                    Eq. 12 per architecture, intervals from a joint bootstrap of dense and MoE
                    runs; the unified law (Eq. 13) over activation_ratio + granularity points,
                    beside a direct loss law in A, G and C, both scored on held-out points.
                    Points that would extrapolate the dense frontier are listed, never fitted.
Failed, unfinished and NaN runs are excluded and listed in the report.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import tempfile
from typing import Callable

import numpy as np
from etils import epath

from fitting import allocation
from fitting import core
from fitting import el as el_lib
from fitting import hparams
from fitting import laws
from fitting import results as results_lib
from fitting import studies as studies_lib


def _plot(fn, *args):
  try:
    from fitting import plots  # pylint: disable=import-outside-toplevel
  except ImportError:  # a Python without matplotlib (a bare Colab runtime) still fits
    return None
  return getattr(plots, fn)(*args)


def fit_dense_baseline(rows, loss_key, out_dir, n_bootstrap):
  cost, loss, best = el_lib.frontier_points(rows, loss_key)
  frontier_runs = el_lib.frontier_runs(rows, loss_key)
  on_frontier = {id(r) for r in frontier_runs}
  off = [r for r in rows if id(r) not in on_frontier]
  report = {}
  if off:  # a budget that trained several sizes: the frontier is the lowest mean of them
    frontier_loss = {el_lib.budget_of(r): value for r, value in zip(best, loss)}
    report['off_frontier'] = [
        dict(
            member=r.get('member'),
            C=r['C'],
            loss=r[loss_key],
            above_frontier_point=r[loss_key] - frontier_loss[el_lib.budget_of(r)],
        )
        for r in off
    ]
  replicated = seed_replicates(rows, loss_key)
  if replicated:
    report['seed_replicates'] = replicated
  for form in ('power', 'floor'):
    law, result = el_lib.fit_frontier(
        cost, loss, form, what=f'dense_baseline ({form})', identify=True
    )
    core.bootstrap(law, dict(C=cost), loss, result, n=n_bootstrap)
    held = np.zeros(len(cost), bool)
    held[np.argmax(cost)] = True
    if len(cost) - 1 > len(law.params):  # refit without the largest budget, score it
      loo = core.fit(law, dict(C=cost[~held]), loss[~held], starts=[result.theta])
      core.goodness(law, loo, dict(C=cost), loss, held)
      result.goodness = dict(
          full=core.goodness(law, result, dict(C=cost), loss)['fitted'],
          largest_budget_held_out=loo.goodness['held_out'],
      )
    else:
      core.goodness(law, result, dict(C=cost), loss)
    report[form] = result.to_json()
    report[form]['formula'] = law.formula
    _plot(
        'frontier',
        cost,
        loss,
        law,
        result,
        os.path.join(out_dir, f'dense_frontier_{form}.png'),
        loss_key,
        'dense',
        (np.array([r['C'] for r in off]), np.array([r[loss_key] for r in off])),
        (np.array([r['C'] for r in frontier_runs]), np.array([r[loss_key] for r in frontier_runs])),
    )
  return report


def seed_replicates(rows, loss_key) -> list[dict]:
  """Each design trained with several seeds (fitting.el.design_key): its runs' losses, their
  mean (what the frontier takes) and standard deviation."""
  out = []
  for runs in el_lib.designs(rows):
    if len(runs) > 1:
      loss = np.array([r[loss_key] for r in runs], float)
      out.append(
          dict(
              members=[r.get('member') for r in runs],
              C=float(np.mean([r['C'] for r in runs])),
              loss=loss.tolist(),
              mean=float(loss.mean()),
              sd=float(loss.std(ddof=1)),
          )
      )
  return sorted(out, key=lambda d: (d['C'], d['members'][0]))


def fit_hparams(rows, loss_key, out_dir, n_bootstrap, seed_sd=None):
  report = dict(budgets=sorted({float(r['budget']) for r in rows}))
  for kind in ('moe', 'dense'):
    members = [
        dict(r, batch_tokens=r['batch_size'] * r['seq_len'])
        for r in rows
        if results_lib.is_moe(r) == (kind == 'moe')
    ]
    if not members:
      continue
    fitted = hparams.fit_laws(
        members,
        loss_key,
        group_keys=('budget',),
        n_bootstrap=n_bootstrap,
        what=f'hparams ({kind})',
        seed_sd=(seed_sd or {}).get(kind, 0.0),
    )
    report[kind] = fitted.to_json()
    report[kind]['design_laws'] = hparams.design_laws(members, loss_key, group_keys=('budget',))
    best = {}  # the lowest-loss run of each budget this arm ran
    for r in members:
      budget = float(r['budget'])
      if budget not in best or r[loss_key] < best[budget][loss_key]:
        best[budget] = r
    report[kind]['best_per_budget'] = {
        f'{budget:g}': {
            k: best[budget][k] for k in ('member', 'learning_rate', 'batch_tokens', loss_key)
        }
        for budget in sorted(best)
    }
    near = hparams.near_optimal(members, ('budget',), loss_key)
    _plot(
        'hyperparameter_bands',
        members,
        near,
        (fitted.learning_rate, fitted.batch),
        os.path.join(out_dir, f'hparams_{kind}.png'),
        fitted.left_out,
    )
    _plot(
        'hyperparameter_landscape',
        members,
        loss_key,
        os.path.join(out_dir, f'hparams_{kind}_landscape.png'),
    )
  return report


def seed_spread(rows, loss_key) -> dict:
  """Per design (dense, MoE): the final loss of each seed, its mean and standard deviation, and
  the deviation in units of the runs' eval standard error (above 1: training noise that a
  one-run-per-design law carries and the eval set's sampling error does not show)."""
  report = {}
  for kind in ('moe', 'dense'):
    members = [r for r in rows if results_lib.is_moe(r) == (kind == 'moe')]
    if len(members) < 2:
      continue
    loss = np.array([r[loss_key] for r in members], float)
    stderr = [r.get('eval_loss_stderr') for r in members]
    sd = float(loss.std(ddof=1))
    mean_stderr = float(np.mean(stderr)) if all(stderr) else None
    report[kind] = dict(
        members=[r['member'] for r in members],
        loss=loss.tolist(),
        mean=float(loss.mean()),
        sd=sd,
        relative_sd=sd / float(loss.mean()),
        mean_eval_stderr=mean_stderr,
        sd_over_eval_stderr=sd / mean_stderr if mean_stderr else None,
        C=float(np.mean([r['C'] for r in members])),
    )
  if not report:
    raise core.FitError('seeds: no design with 2 or more seeds.')
  return report


def fit_allocation_study(rows, loss_key, out_dir, n_bootstrap):
  report = {}
  for kind in ('moe', 'dense'):
    members = [r for r in rows if results_lib.is_moe(r) == (kind == 'moe')]
    if not members:
      continue
    try:
      report[kind] = allocation.fit_allocation(
          members, loss_key, n_bootstrap=n_bootstrap, what=f'allocation ({kind})'
      )
    except allocation.TooFewMinima as error:  # the other arm's law still stands: say what
      report[kind] = dict(error=str(error), **error.minima)  # this one lacks
    _plot(
        'isoflop',
        members,
        loss_key,
        os.path.join(out_dir, f'isoflop_{kind}.png'),
        'budget',
        report[kind],
    )
  if all('error' in arm for arm in report.values()):
    raise core.FitError('; '.join(arm['error'] for arm in report.values()))
  return report


def _fittable(points):
  """EL points a law may use: finite, positive, not an extrapolation of the dense frontier."""
  return [p for p in points if np.isfinite(p['EL']) and p['EL'] > 0 and not p['extrapolated']]


def _design(points, keys):
  return (
      {k: np.array([p[k] for p in points], float) for k in keys},
      np.array([p['EL'] for p in points], float),
  )


def single_factor_fits(points, law, covariate, starts=None) -> dict:
  """The law fitted to each budget group's points (the paper's Eq. 10 / 11 per C), as
  {group: FitResult}; groups whose covariate takes fewer distinct values than the law has
  parameters + 1 are skipped."""
  by_group = collections.defaultdict(list)
  for p in points:
    by_group[p['group']].append(p)
  out = {}
  for group, members in sorted(by_group.items()):
    X, y = _design(members, law.covariates)
    if len(np.unique(X[covariate])) <= len(law.params):
      continue
    out[group] = core.fit(
        law,
        X,
        y,
        starts=None if starts is None else [starts[group]],
        what=f'{law.name} group {group}',
        identify=starts is None,
    )
  return out


def compute_fits(points, starts=None, min_budgets: int = 3) -> dict:
  """Eq. 12, ln EL = a_C log10 C + c_C, for each architecture family with >= 3 budgets (a
  bootstrap draw, which may repeat a budget, needs 2)."""
  by_family = collections.defaultdict(list)
  for p in points:
    by_family[p['family']].append(p)
  out = {}
  for name, members in sorted(by_family.items()):
    if len({p['C'] for p in members}) < min_budgets:
      continue
    X, y = _design(members, ('C',))
    out[name] = core.fit(
        laws.EL_COMPUTE,
        X,
        y,
        starts=None if starts is None else [starts[name]],
        what=f'Eq. 12 {name}',
        identify=starts is None,
    )
  return out


def _single_factor_statistics(study, dense_rows, moe_rows, loss_key, activation_definition, starts):
  """Eq. 10 / 11 parameters per group from one (resampled) set of runs."""
  _, _, points = el_lib.el_bootstrap(
      dense_rows, moe_rows, loss_key, n=0, activation_definition=activation_definition
  )
  law, covariate = studies_lib.single_factor(study)
  points = [p for p in _fittable(points) if p['group'] in starts]
  fits = single_factor_fits(points, law, covariate, starts=starts)
  return {f'{law.name}/{g}/{k}': v for g, r in fits.items() for k, v in r.params.items()}


def _compute_statistics(dense_rows, moe_rows, loss_key, activation_definition, starts):
  """Eq. 12 parameters per architecture from one (resampled) set of runs."""
  _, _, points = el_lib.el_bootstrap(
      dense_rows, moe_rows, loss_key, n=0, activation_definition=activation_definition
  )
  points = [p for p in _fittable(points) if p['family'] in starts]
  fits = compute_fits(points, starts=starts, min_budgets=2)
  return {f'el_compute/{name}/{k}': v for name, r in fits.items() for k, v in r.params.items()}


def fit_el_study(
    study,
    study_rows,
    dense_rows,
    loss_key,
    n_bootstrap,
    activation_definition='stated',
    dense_twins=(),
    seed_sd: float = 0.0,
) -> dict:
  """EL of one study: per-run and per-architecture points, the single-factor law per budget
  group, Eq. 12 per architecture, and 95% intervals from a joint bootstrap of both arms.
  `dense_twins`: the study's dense runs at its groups' backbones, for the A = 1 check only.
  `seed_sd`: the measured MoE seed-to-seed SD, drawn into every single-seed member's loss."""
  frontier_law, frontier, points = el_lib.el_bootstrap(
      dense_rows,
      study_rows,
      loss_key,
      n=n_bootstrap,
      activation_definition=activation_definition,
      seed_sd=seed_sd,
  )
  entry = _el_points_entry(
      study_rows,
      dense_rows,
      points,
      (frontier_law, frontier.theta),
      loss_key,
      activation_definition,
  )
  fittable = _fittable(points)
  starts = _fit_el_laws_of_study(study, fittable, entry)
  if n_bootstrap:
    _add_joint_intervals(
        entry,
        study,
        el_lib.frontier_runs(dense_rows, loss_key),
        study_rows,
        starts,
        loss_key,
        activation_definition,
        n_bootstrap,
        seed_sd,
    )
  if dense_twins:
    entry['dense_twins'] = dense_twin_leverage(
        points, dense_twins, frontier_law, frontier.theta, loss_key
    )
    # Eq. 12 on the fixed-backbone leverage: how EL grows with C once each group's backbone
    # is divided out (point estimates; the intervals above are the paper's EL's).
    fixed = [dict(p, EL=p['EL_over_dense_twin']) for p in fittable if 'EL_over_dense_twin' in p]
    entry['el_compute_over_dense_twin'] = {
        name: r.to_json() for name, r in compute_fits(fixed).items()
    }
  a_equals_one_checks = [
      a_equals_one(
          p,
          study_rows,
          dense_rows,
          dense_twins,
          (frontier_law, frontier.theta),
          loss_key,
      )
      for p in points
      if p['A_stated'] is not None and abs(p['A_stated'] - 1) < 1e-9
  ]
  if a_equals_one_checks:
    entry['check_A_equals_1'] = a_equals_one_checks
  return entry


def _el_points_entry(study_rows, dense_rows, points, frontier, loss_key, activation_definition):
  """A study's report entry before its laws: the EL definition, the dense frontier's range, EL
  per run and per architecture, and the runs whose EL would extrapolate the frontier."""
  frontier_law, frontier_theta = frontier
  dense_cost, dense_loss, _ = el_lib.frontier_points(dense_rows, loss_key)
  per_arch = el_lib.el_per_architecture(
      study_rows,
      frontier_law,
      frontier_theta,
      dense_loss,
      loss_key,
      activation_definition=activation_definition,
  )
  entry = dict(
      activation_definition=el_lib.ACTIVATION_DEFINITIONS[activation_definition],
      definition="per_run: C_dense(L_run) / C_run; per_architecture: each family's own "
      'L = alpha C^-beta at each of its budgets, C_dense(L_arch(C)) / C; dense frontier '
      'L = alpha C^-beta fitted to dense_baseline',
      dense_frontier_range=dict(
          C=[float(dense_cost.min()), float(dense_cost.max())],
          loss=[float(dense_loss.min()), float(dense_loss.max())],
      ),
      points=points,
      per_architecture=per_arch,
  )
  if not per_arch:
    entry['per_architecture_note'] = (
        'no architecture ran 3 budgets, the fewest its own L(C) needs: budgets per '
        f'architecture {el_lib.budgets_per_family(study_rows)}'
    )
  entry['excluded_points'] = [
      dict(
          member=p['member'],
          loss=p['loss'],
          EL=p['EL'],
          reason="loss outside the dense frontier's fitted losses: EL would "
          'extrapolate the frontier',
      )
      for p in points
      if p['extrapolated']
  ]
  return entry


def _fit_el_laws_of_study(study: str, fittable: list[dict], entry: dict) -> dict:
  """The study's single-factor law per budget group (if it has one) and Eq. 12 per
  architecture, written into `entry`; returns their optima, the bootstrap's starting points."""
  starts = {}
  if single := studies_lib.single_factor(study):
    law, covariate = single
    fits = single_factor_fits(fittable, law, covariate)
    entry[law.name] = {g: dict(r.to_json(), **law.derived(r.theta)) for g, r in fits.items()}
    starts['single'] = {g: r.theta for g, r in fits.items()}
  fits = compute_fits(fittable)
  entry['el_compute'] = {name: r.to_json() for name, r in fits.items()}
  starts['compute'] = {name: r.theta for name, r in fits.items()}
  return starts


def _add_joint_intervals(
    entry,
    study,
    frontier_rows,
    study_rows,
    starts,
    loss_key,
    activation_definition,
    n_bootstrap,
    seed_sd,
) -> None:
  """95% intervals of the study's laws from a joint bootstrap of the dense frontier's runs and
  the MoE runs (these within their budget group for the single-factor law, within their
  architecture for Eq. 12), each law's intervals and draws written beside its fit."""
  bootstraps = []
  if starts.get('single'):
    bootstraps.append(
        el_lib.joint_bootstrap(
            frontier_rows,
            study_rows,
            lambda d, m: _single_factor_statistics(
                study, d, m, loss_key, activation_definition, starts['single']
            ),
            n=n_bootstrap,
            stratum=lambda r: r.get('group'),
            noise=(loss_key, seed_sd),
        )
    )
  if starts.get('compute'):
    bootstraps.append(
        el_lib.joint_bootstrap(
            frontier_rows,
            study_rows,
            lambda d, m: _compute_statistics(
                d, m, loss_key, activation_definition, starts['compute']
            ),
            n=n_bootstrap,
            seed=1,
            stratum=el_lib.family,
            noise=(loss_key, seed_sd),
        )
    )
  if not bootstraps:
    return
  entry['joint_bootstrap'] = dict(
      n=n_bootstrap,
      failed_fraction=max(b['failed_fraction'] for b in bootstraps),
      resampled='dense and MoE runs together (the dense runs that make the frontier; MoE '
      'within each budget group for Eq. 10/11, '
      'within each architecture for Eq. 12), each MoE loss moved by its eval error and, for '
      f'a single-seed member, the MoE seed SD ({seed_sd:.4g})',
  )
  for bootstrap in bootstraps:
    for key, interval in bootstrap['intervals'].items():
      law_name, group, param = key.split('/')
      target = entry.get(law_name, {}).get(group)
      if target is not None:
        target.setdefault('joint_intervals', {})[param] = interval
        target.setdefault('joint_draws', {})[param] = bootstrap['draws'][key]


def dense_twin_leverage(points, dense_twins, law, theta, loss_key) -> list[dict]:
  """Each group's dense twin (the group's backbone, no router) read off the dense frontier, and
  every EL point of its group divided by the twin's EL (`EL_over_dense_twin`, set on the point):
  the leverage at a fixed backbone, with what the backbone itself gains or loses against the
  compute-optimal dense models divided out."""
  out = []
  for twin in sorted(dense_twins, key=lambda r: str(r.get('group'))):
    el = float(el_lib.invert_frontier(law, theta, twin[loss_key]) / twin['C'])
    out.append(dict(member=twin.get('member'), group=twin.get('group'), loss=twin[loss_key], EL=el))
    for p in points:
      if p['group'] == twin.get('group'):
        p['EL_over_dense_twin'] = p['EL'] / el
  return out


def _holds(interval) -> bool:
  return bool(interval and interval[0] <= 1 <= interval[1])


def a_equals_one(point, study_rows, dense_rows, dense_twins, frontier, loss_key) -> dict:
  """The fairness check of the protocol, for an A = 1 member (E = E_a): its EL interval must hold
  1. `holds`: read off the dense frontier's runs (their envelope, EL_envelope), where the arms
  meet without a law between them; `holds_on_power_law`: read off the fitted power law, whose
  misses at a budget move it. Beside them, the loss against a dense run of the same budget (the
  study's dense twin in the member's group if it has one, else a dense_baseline run, each design
  at its mean over seeds, with the seeds' standard error), with that run's EL."""
  law, theta = frontier
  out = dict(
      member=point['member'],
      n_seeds=point.get('n_seeds', 1),
      EL=point['EL'],
      EL_interval=point.get('EL_interval'),
      holds_on_power_law=_holds(point.get('EL_interval')),
      EL_read_off_dense_runs=point['EL_envelope'],
      EL_read_off_dense_runs_interval=point.get('EL_envelope_interval'),
      holds=_holds(point.get('EL_envelope_interval')),
  )
  row = next(r for r in study_rows if r.get('member') == point['member'])
  same_group = [r for r in dense_twins if r.get('group') == row.get('group')]
  same_budget = [r for r in dense_rows if r.get('budget') and r.get('budget') == row.get('budget')]
  candidates = el_lib.seed_means(same_group or same_budget, loss_key)
  if candidates:
    dense = min(candidates, key=lambda r: r[loss_key])
    stderr = [float(r.get('eval_loss_stderr') or 0.0) for r in (row, dense)]
    out['same_budget_dense'] = dict(
        member=dense.get('member'),
        source='dense_twin' if same_group else 'dense_baseline',
        loss=dense[loss_key],
        EL=float(el_lib.invert_frontier(law, theta, dense[loss_key]) / dense['C']),
        loss_difference=row[loss_key] - dense[loss_key],  # MoE minus dense
        difference_stderr=float(np.hypot(*stderr)),
    )
  return out


def fit_el_laws(points, what, n_bootstrap):
  """Eq. 13 with the paper's split (EL < 6 fitted, EL >= 6 held out) and leave-the-largest-budget
  -out, over non-extrapolated points."""
  usable = [p for p in _fittable(points) if p.get('A') and p.get('G')]
  if not usable:
    raise core.FitError(f'{what}: no finite, non-extrapolated EL point to fit.')
  X = {k: np.array([p[k] for p in usable], float) for k in ('A', 'G', 'C')}
  y = np.array([p['EL'] for p in usable])
  report = {}
  train = y < 6
  distinct = {k: len(np.unique(v[train])) for k, v in X.items()}
  if min(distinct.values()) < 3:  # a term in a covariate with < 3 values is not identified
    report['unified_el'] = dict(
        error=f'{what}: the unified law has terms in A, G and C, each needing at least 3 '
        f'distinct values among the fitted points; got '
        + ', '.join(f'{k}: {n}' for k, n in distinct.items())
        + ' (fit activation_ratio and granularity runs together).'
    )
  elif train.sum() > len(laws.UNIFIED_EL.params):
    result = core.fit(
        laws.UNIFIED_EL, {k: v[train] for k, v in X.items()}, y[train], what=what, identify=True
    )
    core.bootstrap(
        laws.UNIFIED_EL, {k: v[train] for k, v in X.items()}, y[train], result, n=n_bootstrap
    )
    core.goodness(laws.UNIFIED_EL, result, X, y, held_out=~train)
    report['unified_el'] = dict(
        result.to_json(),
        split='EL < 6 fitted, EL >= 6 held out',
        G_star=laws.UNIFIED_EL.optimal_granularity(result.theta),
        draws=result.draws.tolist(),
    )
    largest = X['C'] >= X['C'].max() * (1 - 1e-9)
    if (~largest).sum() > len(laws.UNIFIED_EL.params):
      loo = core.fit(
          laws.UNIFIED_EL,
          {k: v[~largest] for k, v in X.items()},
          y[~largest],
          starts=[result.theta],
          what=what,
      )
      report['unified_el']['largest_budget_held_out'] = core.goodness(
          laws.UNIFIED_EL, loo, X, y, held_out=largest
      )['held_out']
  else:
    report['unified_el'] = dict(
        error=f'{what}: {int(train.sum())} EL points below 6; the '
        f'unified law needs more than {len(laws.UNIFIED_EL.params)}.'
    )
  return report


def fit_direct_loss(rows, loss_key, what):
  """The reviewers' alternative: one loss law in A, G and C, scored on the largest budget."""
  X = {k: np.array([r[k] for r in rows], float) for k in ('A', 'G', 'C')}
  y = np.array([r[loss_key] for r in rows])
  held = X['C'] >= X['C'].max() * (1 - 1e-9)
  if (~held).sum() <= len(laws.DIRECT_LOSS.params):
    raise core.FitError(
        f'{what}: {(~held).sum()} runs below the largest budget; the direct '
        f'loss law needs more than {len(laws.DIRECT_LOSS.params)}.'
    )
  result = core.fit(
      laws.DIRECT_LOSS, {k: v[~held] for k, v in X.items()}, y[~held], what=what, identify=True
  )
  core.goodness(laws.DIRECT_LOSS, result, X, y, held_out=held)
  return result.to_json()


@dataclasses.dataclass(frozen=True)
class Context:
  """What every study's fitter may read: all usable rows by study, and the run's options."""

  by_study: dict
  loss_key: str
  out_dir: str
  n_bootstrap: int
  activation: str
  seed_sd: dict  # {'dense': SD, 'moe': SD} of one run's final loss over seeds; {} if not measured


def _fit_dense_baseline(name, c: Context) -> dict:
  return fit_dense_baseline(c.by_study[name], c.loss_key, c.out_dir, c.n_bootstrap)


def _fit_hparams(name, c: Context) -> dict:
  return fit_hparams(c.by_study[name], c.loss_key, c.out_dir, c.n_bootstrap, c.seed_sd)


def _fit_seeds(name, c: Context) -> dict:
  return seed_spread(c.by_study[name], c.loss_key)


def _fit_allocation(name, c: Context) -> dict:
  return fit_allocation_study(c.by_study[name], c.loss_key, c.out_dir, c.n_bootstrap)


def _fit_el(name, c: Context) -> dict:
  dense = c.by_study.get('dense_baseline')
  # Seeds of one design are one point, at their mean (the dense frontier's points are too).
  rows = el_lib.seed_means([r for r in c.by_study[name] if results_lib.is_moe(r)], c.loss_key)
  dense_twins = [r for r in c.by_study[name] if not results_lib.is_moe(r)]  # the A = 1 check's
  if not dense:
    raise core.FitError(f'{name}: EL needs dense_baseline runs in the same results table.')
  entry = fit_el_study(
      name,
      rows,
      dense,
      c.loss_key,
      c.n_bootstrap,
      c.activation,
      dense_twins,
      c.seed_sd.get('moe', 0.0),
  )
  if all(r.get('wall_time_s') for r in rows + dense):
    _, _, wall = el_lib.el_bootstrap(dense, rows, c.loss_key, n=0, cost_key='wall_time_s')
    entry['wall_clock_EL'] = [dict(member=p['member'], EL=p['EL']) for p in wall]
  study = studies_lib.EL_STUDIES[name]
  for figure in study.figures:
    _draw(figure, study, rows, entry, c)
  return entry


def _draw(figure: studies_lib.Figure, study: studies_lib.ELStudy, rows, entry, c: Context) -> None:
  """One figure a study declares (fitting.studies.Figure), written beside the report."""
  path = os.path.join(c.out_dir, figure.file)
  if figure.kind == 'el_vs_factor':
    fits = {g: r['params'] for g, r in entry.get(study.law.name, {}).items()} if study.law else {}
    _plot('el_vs_factor', entry['points'], path, figure.factor, study.law, fits)
  elif figure.kind == 'loss_vs_G':
    _plot('loss_vs_granularity', rows, c.loss_key, path, c.seed_sd.get('moe', 0.0))
  elif figure.kind == 'loss_by_group':
    _plot('loss_by_group', entry['points'], path, figure.x, figure.xlabel, c.loss_key)
  else:
    raise ValueError(
        f'{study.name}: figure kind {figure.kind!r} is none of el_vs_factor, '
        'loss_vs_G, loss_by_group.'
    )


# The fitter of each study that is not an EL study (those are fitting.studies.EL_STUDIES).
FITTERS = {
    'dense_baseline': _fit_dense_baseline,
    'hparams': _fit_hparams,
    'allocation': _fit_allocation,
    'seeds': _fit_seeds,
}


def known_studies() -> tuple[str, ...]:
  """Every study a results table may hold, in the order `--study=all` fits them."""
  return ('dense_baseline', 'hparams', 'allocation', *studies_lib.EL_STUDIES, 'seeds')


def fitter(name: str) -> Callable:
  return _fit_el if name in studies_lib.EL_STUDIES else FITTERS[name]


def default_out(results_path: str) -> str:
  """Where fits go unless told: a `fits` folder beside the results table."""
  return str(epath.Path(results_path).parent / 'fits')


def run(
    results_path,
    study='all',
    out_dir=None,
    loss_key='final_eval_loss',
    n_bootstrap=1000,
    activation='stated',
    seeds_from=None,
) -> dict:
  """Fits `study` (or all) of a results table; writes report.json and figures to `out_dir`
  (default: `default_out`), a local folder or gs:// (written here first, then uploaded).

  The measured seed-to-seed SD of one run's loss (per kind, from the `seeds` study's runs in the
  table, else in the table `seeds_from`) is drawn into every bootstrap that resamples
  single-seed members; without one, the report says the intervals omit it."""
  out_dir = out_dir or default_out(results_path)
  args = (results_path, study, loss_key, n_bootstrap, activation, seeds_from)
  if '://' not in str(out_dir):
    return _run(*args, out_dir=out_dir)
  with tempfile.TemporaryDirectory() as local:
    report = _run(*args, out_dir=local)
    remote = epath.Path(out_dir)
    remote.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(local)):  # report.json last: present means complete
      if name != 'report.json':
        (remote / name).write_bytes(open(os.path.join(local, name), 'rb').read())
    (remote / 'report.json').write_bytes(open(os.path.join(local, 'report.json'), 'rb').read())
  return report


def measured_seed_sd(rows: list[dict], loss_key: str) -> dict[str, float]:
  """{'dense': SD, 'moe': SD} of one run's final loss from a table's `seeds` runs, or {}."""
  seeds = [r for r in rows if r.get('study') == 'seeds']
  if not seeds:
    return {}
  return {kind: spread['sd'] for kind, spread in seed_spread(seeds, loss_key).items()}


def _run(results_path, study, loss_key, n_bootstrap, activation, seeds_from, out_dir) -> dict:
  os.makedirs(out_dir, exist_ok=True)
  by_study, excluded = rows_by_study(results_path, loss_key)
  known = known_studies()
  wanted = [s for s in known if s in by_study] if study == 'all' else [study]
  if study != 'all' and study not in known:
    raise core.FitError(f'--study={study}: use one of {", ".join(known)} or all.')
  if activation not in el_lib.ACTIVATION_DEFINITIONS:
    raise core.FitError(
        f'--activation={activation}: use one of ' f'{", ".join(el_lib.ACTIVATION_DEFINITIONS)}.'
    )
  report = dict(
      results=results_path,
      loss=loss_key,
      activation_definition=el_lib.ACTIVATION_DEFINITIONS[activation],
      objective='huber (delta 1e-3, summed) on ' 'log residuals unless stated',
      bootstrap=n_bootstrap,
      excluded=excluded,
      studies={},
  )
  seed_sd, source = _seed_sd(by_study.get('seeds', []), loss_key, results_path, seeds_from)
  report['seed_sd'] = (
      dict(seed_sd, source=source)
      if seed_sd
      else dict(source='not measured: intervals omit the seed spread')
  )
  context = Context(by_study, loss_key, out_dir, n_bootstrap, activation, seed_sd)
  for name in wanted:
    if not by_study.get(name):
      raise core.FitError(f'--study={name}: no usable run of this study in {results_path}.')
    try:
      report['studies'][name] = fitter(name)(name, context)
    except core.FitError as error:
      if study != 'all':
        raise
      report['studies'][name] = dict(error=str(error))
  fit_across_studies(report, by_study, loss_key, n_bootstrap, out_dir)
  _write_json(report, os.path.join(out_dir, 'report.json'))
  return report


def rows_by_study(results_path, loss_key) -> tuple[dict[str, list[dict]], list[dict]]:
  """({study: its usable rows}, the excluded rows as a report lists them: study, member and
  reason) of a results table."""
  rows, excluded = _known_rows(results_path, loss_key)
  by_study = collections.defaultdict(list)
  for row in rows:
    by_study[row['study']].append(row)
  return by_study, [
      dict(study=r.get('study'), member=r.get('member'), reason=r['reason']) for r in excluded
  ]


def _known_rows(results_path, loss_key) -> tuple[list[dict], list[dict]]:
  """(usable rows of known studies, excluded rows each with its reason)."""
  rows, excluded = results_lib.clean(results_lib.load(results_path), loss_key)
  known = known_studies()
  unknown = [r for r in rows if r.get('study') not in known]
  excluded += [
      dict(r, reason=f"study {r.get('study')!r} is none of {', '.join(known)}") for r in unknown
  ]
  rows = [r for r in rows if r.get('study') in known]
  if not rows:
    raise core.FitError(
        f'--results={results_path}: no usable row of a known study ({len(excluded)} excluded, '
        f'e.g. {excluded[0]["reason"] if excluded else "none"}).'
    )
  return rows, excluded


def _seed_sd(rows, loss_key, results_path, seeds_from) -> tuple[dict, str]:
  """(the seed SDs measured in the fitted table, else in --seeds_from's, and their source)."""
  seed_sd, source = measured_seed_sd(rows, loss_key), str(results_path)
  if not seed_sd and seeds_from:
    seeds_rows, _ = results_lib.clean(results_lib.load(seeds_from), loss_key)
    seed_sd, source = measured_seed_sd(seeds_rows, loss_key), str(seeds_from)
    if not seed_sd:
      raise core.FitError(f'--seeds_from={seeds_from}: no run of the seeds study in it.')
  return seed_sd, source


def fit_across_studies(report, by_study, loss_key, n_bootstrap, out_dir) -> None:
  """The laws fitted to the EL points of the studies in `report` that enter the unified law
  together (Eq. 13 and the direct loss law), written into `report`, and the fitted Eq. 13's heat
  map; nothing when `report` holds no such study's points."""
  el_all = [
      point
      for name, entry in report['studies'].items()
      if name in studies_lib.EL_STUDIES and studies_lib.EL_STUDIES[name].unified
      for point in entry.get('points', [])
  ]
  if not el_all:
    return
  try:
    report['el_laws'] = fit_el_laws(el_all, 'EL laws', n_bootstrap)
  except core.FitError as error:
    report['el_laws'] = dict(error=str(error))
  moe_rows = [  # the activation-ratio groups' dense dense_twins have no G
      r
      for s in ('activation_ratio', 'granularity')
      for r in by_study.get(s, [])
      if results_lib.is_moe(r)
  ]
  try:
    report['direct_loss'] = fit_direct_loss(moe_rows, loss_key, 'direct loss law')
  except core.FitError as error:
    report['direct_loss'] = dict(error=str(error))
  unified = report['el_laws'].get('unified_el', {})
  if 'params' in unified:  # the heat map of the law fitted here, titled with its source
    fitted = [(p['A'], p['C']) for p in el_all if p.get('A') and p.get('C')]
    cost = [c for _, c in fitted]
    _plot(
        'el_heatmap',
        lambda A, G, C: laws.unified_el(A, G, C, unified['params']),
        os.path.join(out_dir, 'el_heatmap.png'),
        f'fitted Eq. 13 ({os.path.basename(str(report["results"]))}): EL(A, C) at G = 12',
        (min(cost), max(cost)),
        fitted,
    )


def _write_json(report: dict, path: str) -> None:
  """`report` written whole or not at all (a temporary file renamed over the old one)."""
  with open(path + '.tmp', 'w') as f:
    json.dump(report, f, indent=1, default=float)
  os.replace(path + '.tmp', path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--results', required=True, help='results .jsonl or .csv, local or gs://')
  parser.add_argument('--study', default='all')
  parser.add_argument(
      '--out', default=None, help='folder or gs://; default: fits/ beside --results'
  )
  parser.add_argument(
      '--loss',
      default='final_eval_loss',
      help='the loss every law is fitted to (held-out loss at the end of training)',
  )
  parser.add_argument(
      '--activation',
      default='stated',
      choices=sorted(el_lib.ACTIVATION_DEFINITIONS),
      help='A = (E_a+E_s)/(E+E_s) (stated) or E_a/E (routed)',
  )
  parser.add_argument('--bootstrap', type=int, default=1000)
  parser.add_argument(
      '--seeds_from',
      default=None,
      help="a results table with the seeds study's runs, when --results has none: their "
      'seed-to-seed SD enters every bootstrap of single-seed members',
  )
  args = parser.parse_args(argv)
  try:
    args.out = args.out or default_out(args.results)
    report = run(
        args.results,
        args.study,
        args.out,
        args.loss,
        args.bootstrap,
        args.activation,
        args.seeds_from,
    )
  except core.FitError as error:
    sys.exit(f'fitting.fit: {error}')
  for name, entry in report['studies'].items():
    print(f'{name}: {"ERROR " + entry["error"] if "error" in entry else "fitted"}')
  print(f"{len(report['excluded'])} rows excluded; report: {os.path.join(args.out, 'report.json')}")


if __name__ == '__main__':
  main()
