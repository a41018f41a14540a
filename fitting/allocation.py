"""Allocation laws from IsoFLOP sweeps (Sec. 2.3, Table 1): per budget, a parabola of loss in
ln M gives M_opt(C); then M_opt = k C^a and D_opt = C / M_opt, so C = M D holds exactly."""

from __future__ import annotations

import collections

import numpy as np

from fitting import core
from fitting import laws


def _parabola(x, loss):
  """(c2, c1, c0) of the least-squares parabola of loss in x - center, and center = mean of x
  (centred for a well-conditioned fit)."""
  center = x.mean()
  return np.polyfit(x - center, loss, 2), center


class NoMinimum(core.FitError):
  """An IsoFLOP profile without a bracketed minimum; `cause` says why, without the budget."""

  def __init__(self, budget: float, cause: str):
    super().__init__(f'IsoFLOP at C={budget:.3g}: {cause}')
    self.cause = cause


class TooFewMinima(core.FitError):
  """Fewer than 2 budgets with a minimum; carries the minima found and the budgets skipped."""

  def __init__(self, message: str, budgets, optima, skipped):
    super().__init__(message)
    self.minima = dict(budgets=budgets.tolist(), minima=optima.tolist(), skipped_budgets=skipped)


def isoflop_minimum(m, loss, budget: float) -> float:
  """argmin of a least-squares parabola of loss in ln M; refuses a profile whose best run is one of
  its end sizes, a concave one, and a vertex outside the sizes tried."""
  if len(np.unique(m)) < 3:
    raise NoMinimum(budget, f'{len(np.unique(m))} distinct model sizes, a parabola needs 3.')
  x = np.log(m)
  best = x[int(np.argmin(loss))]
  if best in (x.min(), x.max()):
    # A parabola through a profile that only rises (or falls) can still put its vertex inside
    # the sizes tried; the optimum is bracketed only when the best run has a size on each side.
    raise NoMinimum(
        budget,
        f'the best run is at the edge of the sizes tried (M = {np.exp(best):.3g}); widen the '
        'sweep past it.',
    )
  try:
    (c2, c1, _), center = _parabola(x, loss)
  except np.linalg.LinAlgError as error:
    raise NoMinimum(budget, f'the parabola fit failed ({error}).') from None
  if c2 <= 0:
    raise NoMinimum(budget, 'loss is not convex in ln M (no minimum).')
  vertex = center - c1 / (2 * c2)
  if not x.min() <= vertex <= x.max():
    raise NoMinimum(
        budget,
        f'the minimum lies outside the sizes tried (M_opt ~ {np.exp(vertex):.3g}); widen the '
        'sweep.',
    )
  return float(np.exp(vertex))


def minima(rows, loss_key: str, budget_key: str = 'budget', skip: bool = False):
  """(budgets, M_opt per budget, skipped): with `skip`, a budget without an interior minimum is
  listed in `skipped` with its reason and left out; without, it raises."""
  by_budget = collections.defaultdict(list)
  for row in rows:
    by_budget[row[budget_key]].append(row)
  budgets, optima, skipped = [], [], []
  for c in sorted(by_budget):
    m = np.array([r['M'] for r in by_budget[c]])
    loss = np.array([r[loss_key] for r in by_budget[c]])
    try:
      optima.append(isoflop_minimum(m, loss, c))
      budgets.append(c)
    except NoMinimum as error:
      if not skip:
        raise
      skipped.append(dict(budget=float(c), reason=str(error), cause=error.cause))
  return np.array(budgets, float), np.array(optima), skipped


def fit_allocation(
    rows,
    loss_key: str,
    budget_key: str = 'budget',
    n_bootstrap: int = 1000,
    seed: int = 0,
    what: str = 'allocation',
    stderr_key: str = 'eval_loss_stderr',
) -> dict:
  """M_opt(C) with intervals, and the implied D_opt.

  The intervals come from a parametric bootstrap of the losses: each draw adds to every run's
  loss a normal error with the scatter of the runs about their budget's parabola (pooled over
  budgets with more than 3 sizes) and the run's own eval standard error, and refits every
  parabola and the law. Resampling runs within a budget cannot serve an IsoFLOP profile of 3-5
  sizes: a draw that repeats a size leaves too few for a parabola, and for 3 sizes the only
  draws that fit are the original points reordered.
  """
  budgets, optima, skipped = minima(rows, loss_key, budget_key, skip=True)
  if len(budgets) < 2:
    reasons = '; '.join(s['reason'] for s in skipped)
    raise TooFewMinima(
        f'{what}: {len(budgets)} budget(s) with an IsoFLOP minimum; a power law in C needs at '
        f'least 2{" (" + reasons + ")" if reasons else ""}.',
        budgets,
        optima,
        skipped,
    )
  law = laws.log_linear('M_opt_law', ['C'], 'M_opt')
  result = core.fit(law, dict(C=budgets), optima, objective='ls', what=what, identify=True)
  kept = [r for r in rows if r[budget_key] in budgets]  # skipped budgets stay out of every draw
  residual_sd, dof = parabola_residual_sd(kept, loss_key, budget_key)
  sd = np.array([np.hypot(residual_sd, float(r.get(stderr_key) or 0.0)) for r in kept])
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(n_bootstrap):
    noise = rng.normal(size=len(kept)) * sd
    sample = [dict(r, **{loss_key: r[loss_key] + e}) for r, e in zip(kept, noise)]
    try:
      b, o, _ = minima(sample, loss_key, budget_key)
      draws.append(core.fit(law, dict(C=b), o, objective='ls', starts=[result.theta]).theta)
    except core.FitError:  # a draw whose noise moved a minimum past the sizes tried
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
      skipped_budgets=skipped,
      bootstrap_noise=dict(
          residual_sd=residual_sd,
          residual_dof=dof,
          note='per-run loss error: hypot(residual_sd, eval_loss_stderr)',
      ),
  )


def parabola_residual_sd(rows, loss_key: str, budget_key: str = 'budget') -> tuple[float, int]:
  """(standard deviation of the runs' losses about their budget's parabola in ln M, its degrees
  of freedom), pooled over the budgets with more than 3 sizes; (0, 0) when none has."""
  by_budget = collections.defaultdict(list)
  for row in rows:
    by_budget[row[budget_key]].append(row)
  rss, dof = 0.0, 0
  for group in by_budget.values():
    if len(group) <= 3:
      continue
    x = np.log([r['M'] for r in group])
    y = np.array([r[loss_key] for r in group])
    coef, center = _parabola(x, y)
    rss += float(np.sum((y - np.polyval(coef, x - center)) ** 2))
    dof += len(group) - 3
  return (float(np.sqrt(rss / dof)) if dof else 0.0), dof
