"""Efficiency Leverage from runs: dense frontier, its inverse, EL points, both definitions.

Definitions (the reviewers found the paper ambiguous; every result names its definition):
  * 'per_run': EL = C_dense(L_run) / C_run, with C_dense the fitted dense frontier inverted at the
    MoE run's final loss (what Eq. 5 says for one MoE point);
  * 'per_architecture': fit one MoE architecture's own L(C) over its budgets, EL at a target
    budget = C_dense(L_arch(C_target)) / C_target (the paper's "fit a series of loss scaling
    curves").
EL points whose loss lies outside the dense losses observed are flagged as extrapolations.
"""

from __future__ import annotations

import collections

import numpy as np

from fitting import core
from fitting import laws


def frontier_points(rows: list[dict], loss_key: str, cost_key: str = 'C'):
  """The compute-optimal frontier: per budget (cost rounded to 3 digits), the lowest loss."""
  best = {}
  for row in rows:
    budget = float(f'{row[cost_key]:.3g}')
    if budget not in best or row[loss_key] < best[budget][loss_key]:
      best[budget] = row
  budgets = sorted(best)
  return (np.array([best[b][cost_key] for b in budgets]),
          np.array([best[b][loss_key] for b in budgets]), [best[b] for b in budgets])


def fit_frontier(cost, loss, form: str = 'power', objective: str = 'huber', what: str = ''):
  law = laws.FRONTIER if form == 'power' else laws.FRONTIER_WITH_FLOOR
  bounds = None
  if form == 'floor':  # the floor lies below every observed loss
    bounds = list(law.bounds)
    bounds[0] = (bounds[0][0], float(np.log(np.min(loss))) - 1e-9)
  return law, core.fit(law, dict(C=cost), loss, objective=objective, bounds=bounds, what=what)


def invert_frontier(law, theta, loss):
  """Cost at which the frontier reaches `loss`; NaN below a fitted floor."""
  loss = np.asarray(loss, float)
  if law.name == 'frontier':
    log_coefficient, exponent = theta
    return np.exp((np.log(loss) - log_coefficient) / exponent)
  log_b, log_alpha, beta = theta
  excess = loss - np.exp(log_b)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(excess > 0, np.exp((np.log(excess) - log_alpha) / -beta), np.nan)


def el_per_run(moe_rows, dense_law, dense_theta, dense_losses, loss_key, cost_key='C'):
  """One EL point per MoE run: C_dense(L_run) / C_run."""
  lo, hi = float(np.min(dense_losses)), float(np.max(dense_losses))
  out = []
  for row in moe_rows:
    c_dense = float(invert_frontier(dense_law, dense_theta, row[loss_key]))
    out.append(dict(study=row.get('study'), member=row.get('member'), A=row.get('A'),
                    A_routed=row.get('A_routed'), G=row.get('G'), S=row.get('S'),
                    C=row[cost_key], loss=row[loss_key], C_dense=c_dense,
                    EL=c_dense / row[cost_key], definition='per_run',
                    extrapolated=not lo <= row[loss_key] <= hi))
  return out


def architecture_key(row) -> tuple:
  return tuple(row.get(k) for k in ('n_experts', 'top_k', 'n_shared', 'G', 'num_dense_layers',
                                    'A', 'S'))


def el_per_architecture(moe_rows, dense_law, dense_theta, target_cost, loss_key, cost_key='C'):
  """EL at `target_cost` from each MoE architecture's own power-law frontier."""
  families = collections.defaultdict(list)
  for row in moe_rows:
    families[architecture_key(row)].append(row)
  out = []
  for key, rows in families.items():
    cost, loss, _ = frontier_points(rows, loss_key, cost_key)
    if len(cost) < 2:
      continue
    law, result = fit_frontier(cost, loss, 'power', what=f'MoE family {key}')
    target_loss = float(law.predict(result.theta, dict(C=np.array([target_cost])))[0])
    c_dense = float(invert_frontier(dense_law, dense_theta, target_loss))
    out.append(dict(A=rows[0].get('A'), A_routed=rows[0].get('A_routed'), G=rows[0].get('G'),
                    S=rows[0].get('S'), C=target_cost, loss=target_loss, C_dense=c_dense,
                    EL=c_dense / target_cost, definition='per_architecture', n_budgets=len(cost)))
  return out


def el_bootstrap(dense_rows, moe_rows, loss_key, form='power', n=200, seed=0, cost_key='C'):
  """Per-run EL points with 95% intervals from a joint run-level bootstrap of both arms."""
  cost, loss, _ = frontier_points(dense_rows, loss_key, cost_key)
  law, result = fit_frontier(cost, loss, form, what='dense frontier')
  points = el_per_run(moe_rows, law, result.theta, loss, loss_key, cost_key)
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(n):
    dense_sample = [dense_rows[i] for i in rng.integers(0, len(dense_rows), len(dense_rows))]
    c, l, _ = frontier_points(dense_sample, loss_key, cost_key)
    if len(c) < len(law.params) + 1:
      continue
    try:
      refit = core.fit(law, dict(C=c), l, starts=[result.theta])
    except core.FitError:
      continue
    draws.append([float(invert_frontier(law, refit.theta, p['loss'])) / p['C'] for p in points])
  draws = np.array(draws)
  for i, p in enumerate(points):
    if len(draws):
      p['EL_interval'] = core.interval(draws[:, i][np.isfinite(draws[:, i])])
  return law, result, points
