"""Allocation laws from IsoFLOP sweeps (Sec. 2.3, Table 1): per budget, a parabola of loss in
ln M gives M_opt(C); then M_opt = k C^a and D_opt = C / M_opt, so C = M D holds exactly."""

from __future__ import annotations

import collections

import numpy as np

from fitting import core
from fitting import laws


def isoflop_minimum(m, loss, budget: float) -> float:
  """argmin of a least-squares parabola of loss in ln M; refuses an edge or concave profile."""
  if len(m) < 3:
    raise core.FitError(f'IsoFLOP at C={budget:.3g}: {len(m)} model sizes, a parabola needs 3.')
  x = np.log(m)
  center = x.mean()  # centred for a well-conditioned fit
  c2, c1, _ = np.polyfit(x - center, loss, 2)
  if c2 <= 0:
    raise core.FitError(f'IsoFLOP at C={budget:.3g}: loss is not convex in ln M (no minimum).')
  vertex = center - c1 / (2 * c2)
  if not x.min() <= vertex <= x.max():
    raise core.FitError(
        f'IsoFLOP at C={budget:.3g}: the minimum lies outside the sizes tried '
        f'(M_opt ~ {np.exp(vertex):.3g}); widen the sweep.'
    )
  return float(np.exp(vertex))


def minima(rows, loss_key: str, budget_key: str = 'budget'):
  by_budget = collections.defaultdict(list)
  for row in rows:
    by_budget[row[budget_key]].append(row)
  budgets = sorted(by_budget)
  optima = [
      isoflop_minimum(
          np.array([r['M'] for r in by_budget[c]]), np.array([r[loss_key] for r in by_budget[c]]), c
      )
      for c in budgets
  ]
  return np.array(budgets, float), np.array(optima)


def fit_allocation(
    rows,
    loss_key: str,
    budget_key: str = 'budget',
    n_bootstrap: int = 1000,
    seed: int = 0,
    what: str = 'allocation',
) -> dict:
  """M_opt(C) with intervals (bootstrap over runs within each budget), and the implied D_opt."""
  budgets, optima = minima(rows, loss_key, budget_key)
  if len(budgets) < 2:
    raise core.FitError(f'{what}: {len(budgets)} budget(s); a power law in C needs at least 2.')
  law = laws.log_linear('M_opt_law', ['C'], 'M_opt')
  result = core.fit(law, dict(C=budgets), optima, objective='ls', what=what)
  rng = np.random.default_rng(seed)
  by_budget = collections.defaultdict(list)
  for row in rows:
    by_budget[row[budget_key]].append(row)
  draws = []
  for _ in range(n_bootstrap):
    sample = [
        r
        for c in budgets
        for r in (by_budget[c][i] for i in rng.integers(0, len(by_budget[c]), len(by_budget[c])))
    ]
    try:
      b, o = minima(sample, loss_key, budget_key)
      draws.append(core.fit(law, dict(C=b), o, objective='ls', starts=[result.theta]).theta)
    except core.FitError:
      continue
  draws = np.array(draws)
  result.draws = draws
  result.bootstrap_failures = n_bootstrap - len(draws)
  if len(draws):
    result.intervals = {p: core.interval(draws[:, i]) for i, p in enumerate(law.params)}
  k, a = float(np.exp(result.theta[0])), float(result.theta[1])
  return dict(
      M_opt=dict(coefficient=k, exponent=a, fit=result.to_json()),
      D_opt=dict(coefficient=1 / k, exponent=1 - a),
      budgets=budgets.tolist(),
      minima=optima.tolist(),
  )
