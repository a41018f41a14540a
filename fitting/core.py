"""Robust fitting of a `laws.Law`: multi-start L-BFGS-B with exact gradients, bootstrap, goodness.

Objectives (named in every result):
  * 'huber' (default): sum_i Huber_delta(log f(x_i) - log y_i), delta = 1e-3, summed over points,
    not averaged: a mean-reduced objective with scipy's default tolerances stops early, which is
    how the original Chinchilla fit went wrong (Besiroglu et al. 2024, arXiv 2404.10102);
  * 'ls': sum_i (log f - log y)^2 / 2;
  * 'vpnls': least squares in y itself with the linear coefficients solved by non-negative least
    squares for every value of the nonlinear ones (variable projection); for laws that are sums of
    non-negative terms (Chinchilla, the frontier with a floor).

Identification (`fit(..., identify=True)`): a fitted parameter is a measurement only when the data
pin it down. Its profile (the objective with the parameter fixed and every other one refitted) must
rise by more than the likelihood-ratio threshold on both sides before the parameter's bounds; a
parameter on a bound, or whose profile stays under the threshold up to a bound, is "not
identified" (Raue et al. 2009, Bioinformatics 25:1923, practical identifiability). The threshold
is the 95% likelihood-ratio test with the residuals' scale estimated from the fit itself: a
relative rise of chi2_1(0.95) / (n - p) in a least-squares objective, half that in the Huber one
(`profile_threshold`). Bounds keep the optimizer sane; they never decide a sign, because a
profile that reaches one is reported as open.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Mapping

import numpy as np
from scipy import optimize
from scipy import stats

from fitting import laws as laws_lib

OPTIONS = dict(ftol=1e-15, gtol=1e-12, maxiter=10_000, maxfun=20_000)


class FitError(ValueError):
  """Input a law cannot be fitted from; the message says which and why."""


@dataclasses.dataclass
class FitResult:
  law: str
  params: dict[str, float]
  objective: str
  delta: float
  value: float  # objective at the optimum
  n_points: int
  n_starts: int
  starts_at_best: float  # fraction of starts that reached the best value
  converged: bool
  message: str
  at_bounds: list[str]  # parameters on a bound: unidentified, not estimates
  intervals: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
  draws: np.ndarray | None = None  # bootstrap parameter vectors [B, p]
  bootstrap_failures: int = 0
  goodness: dict = dataclasses.field(default_factory=dict)
  # {param: {'identified': bool, 'why': str, 'profile_interval': [low, high]}}, see `profile`
  identification: dict[str, dict] = dataclasses.field(default_factory=dict)

  @property
  def theta(self) -> np.ndarray:
    return np.array(list(self.params.values()), float)

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out.pop('draws')
    out['n_bootstrap'] = 0 if self.draws is None else len(self.draws)
    return out


def huber(r: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
  """Summed Huber loss and its derivative (psi) per residual."""
  a = np.abs(r)
  quadratic = a <= delta
  value = np.where(quadratic, 0.5 * r * r, delta * (a - 0.5 * delta)).sum()
  return float(value), np.clip(r, -delta, delta)


def _columns(X: Mapping[str, np.ndarray], idx=None) -> dict[str, np.ndarray]:
  return {
      k: np.asarray(v, float) if idx is None else np.asarray(v, float)[idx] for k, v in X.items()
  }


def check_inputs(law: laws_lib.Law, X, y, minimum: int | None = None, what: str = '') -> None:
  y = np.asarray(y, float)
  need = minimum or len(law.params) + 1
  if len(y) < need:
    raise FitError(
        f'{what or law.name}: {len(y)} usable points, {law.name} needs at least '
        f'{need} ({len(law.params)} parameters).'
    )
  if not np.all(np.isfinite(y)) or np.any(y <= 0):
    raise FitError(f'{what or law.name}: {law.target} must be finite and positive.')
  for name in law.covariates:
    values = np.asarray(X[name], float)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
      raise FitError(f'{what or law.name}: covariate {name} must be finite and positive.')


def _objective(law, X, log_y, objective, delta):
  def f(theta):
    r = law.log_predict(theta, X) - log_y
    if not np.all(np.isfinite(r)):
      return 1e300, np.zeros_like(theta)
    J = law.jacobian(theta, X)
    if objective == 'huber':
      value, psi = huber(r, delta)
    else:
      value, psi = 0.5 * float(r @ r), r
    return value, J.T @ psi

  return f


def _minimize(f, start, bounds):
  return optimize.minimize(f, start, jac=True, method='L-BFGS-B', bounds=bounds, options=OPTIONS)


def fit(
    law: laws_lib.Law,
    X: Mapping[str, np.ndarray],
    y,
    objective: str = 'huber',
    delta: float = 1e-3,
    starts=None,
    bounds=None,
    what: str = '',
    identify: bool = False,
) -> FitResult:
  """Best of a grid of L-BFGS-B starts (the law's grid unless `starts` is given); with `identify`,
  each parameter's profile says whether the data identify it (`profile`)."""
  check_inputs(law, X, y, what=what)
  if objective == 'vpnls':
    return _vpnls(law, X, y)
  if objective not in ('huber', 'ls'):
    raise FitError(f"objective={objective!r}: use 'huber', 'ls' or 'vpnls'.")
  X = _columns(X)
  log_y = np.log(np.asarray(y, float))
  bounds = list(bounds or law.bounds)
  f = _objective(law, X, log_y, objective, delta)
  starts = np.array(list(starts if starts is not None else itertools.product(*law.grid)), float)
  starts = np.clip(starts, [b[0] for b in bounds], [b[1] for b in bounds])
  results = [_minimize(f, s, bounds) for s in starts]
  values = np.array([r.fun for r in results])
  best = results[int(np.argmin(values))]
  tolerance = 1e-6 * max(abs(best.fun), 1e-300) + 1e-14
  result = FitResult(
      law=law.name,
      params=law.named(best.x),
      objective=objective,
      delta=delta,
      value=float(best.fun),
      n_points=len(log_y),
      n_starts=len(starts),
      starts_at_best=float(np.mean(values <= best.fun + tolerance)),
      converged=bool(best.success),
      message=str(best.message),
      at_bounds=[
          p
          for p, v, (lo, hi) in zip(law.params, best.x, bounds)
          if np.isclose(v, lo, atol=1e-6) or np.isclose(v, hi, atol=1e-6)
      ],
  )
  if identify:
    result.identification = profile(law, f, result, bounds)
  return result


PROFILE_LEVEL = 0.95
PROFILE_STEPS = np.geomspace(1e-3, 1.0, 16)  # fractions of the way from the optimum to a bound
PROFILE_BISECTIONS = 30  # halvings of the bracketing step: its end to ~1e-9 of the step


def profile_threshold(result: FitResult, n_params: int, level: float = PROFILE_LEVEL) -> float:
  """The objective a parameter's profile must exceed on each side: the optimum times
  1 + chi2_1(level) / (n - p) for least squares (Gaussian residuals, their variance profiled
  out), and 1 + chi2_1(level) / (2 (n - p)) for the Huber objective, which at these fits'
  residuals (far above delta) is an absolute-value loss, a Laplace likelihood whose scale is
  profiled out the same way; infinite without a residual degree of freedom."""
  dof = result.n_points - n_params
  if dof <= 0:
    return math.inf
  per_dof = 2 * dof if result.objective == 'huber' else dof
  return result.value * (1.0 + stats.chi2.ppf(level, 1) / per_dof)


def profile(law: laws_lib.Law, f, result: FitResult, bounds) -> dict[str, dict]:
  """Walks each parameter from the optimum towards each bound (PROFILE_STEPS), refitting the others
  warm-started from the previous step, until the objective `f` passes `profile_threshold`. The
  crossing points (_profile_side) are the profile-likelihood interval; a side that reaches its
  bound below the threshold leaves the parameter not identified."""
  threshold = profile_threshold(result, len(law.params))
  theta = result.theta
  out = {}
  for j, name in enumerate(law.params):
    ends, open_sides = [], []
    for side, bound in (('low', bounds[j][0]), ('high', bounds[j][1])):
      end = _profile_side(f, theta, j, bound, bounds, threshold)
      ends.append(bound if end is None else end)
      if end is None:
        open_sides.append(side)
    if name in result.at_bounds:
      why = 'on a bound of the fit'
    elif math.isinf(threshold):
      why = 'no residual degree of freedom'
    elif open_sides:
      why = f'profile flat to the {" and ".join(open_sides)} bound'
    else:
      why = f'profile closes inside the bounds at {PROFILE_LEVEL:.0%}'
    out[name] = dict(
        identified=not open_sides and name not in result.at_bounds and not math.isinf(threshold),
        why=why,
        profile_interval=[float(e) for e in ends],
    )
  return out


def _profile_side(f, theta, j, bound, bounds, threshold) -> float | None:
  """Where the profile of parameter j first passes `threshold` between theta[j] and `bound`
  (bracketed by PROFILE_STEPS, then bisected PROFILE_BISECTIONS times), or None if it does not
  before the bound."""
  start = theta.copy()

  def excess(x):  # the profile at x minus the threshold, warm-started from the last refit
    nonlocal start
    fixed = list(bounds)
    fixed[j] = (x, x)
    start = np.clip(start, [b[0] for b in fixed], [b[1] for b in fixed])
    refit = _minimize(f, start, fixed)
    start = refit.x
    return refit.fun - threshold

  previous_x = theta[j]
  for step in PROFILE_STEPS:
    x = theta[j] + (bound - theta[j]) * step
    if excess(x) > 0:
      below, above = previous_x, x
      for _ in range(PROFILE_BISECTIONS):
        middle = (below + above) / 2
        below, above = (below, middle) if excess(middle) > 0 else (middle, above)
      return float((below + above) / 2)
    previous_x = x
  return None


# --- Variable projection ------------------------------------------------------------------------


def _vpnls(law, X, y) -> FitResult:
  if not law.n_nonlinear:
    raise FitError(f'vpnls: {law.name} is not a sum of non-negative terms; use huber or ls.')
  X = _columns(X)
  y = np.asarray(y, float)

  def projected(nonlinear):
    basis = law.vp_basis(nonlinear, X)
    scale = basis.max(axis=0)
    coefficients, residual = optimize.nnls(basis / scale, y)
    return residual**2, coefficients / scale

  n_nonlinear = law.n_nonlinear
  grid = np.linspace(0.02, 1.5, 64)
  candidates = itertools.product(*[grid] * n_nonlinear)
  start = min(candidates, key=lambda c: projected(c)[0])
  refined = optimize.minimize(
      lambda c: projected(c)[0],
      start,
      method='Nelder-Mead',
      options=dict(xatol=1e-10, fatol=1e-14, maxiter=20_000),
  )
  nonlinear = refined.x
  value, coefficients = projected(nonlinear)
  logs = np.log(np.maximum(coefficients, 1e-300))
  theta = law.vp_theta(logs, nonlinear)
  return FitResult(
      law=law.name,
      params=law.named(theta),
      objective='vpnls',
      delta=0.0,
      value=float(value),
      n_points=len(y),
      n_starts=64**n_nonlinear,
      starts_at_best=float('nan'),
      converged=bool(refined.success),
      message=str(refined.message),
      at_bounds=[p for p, c in zip(law.params, coefficients) if c <= 0],
  )


# --- Uncertainty and goodness of fit ------------------------------------------------------------


def bootstrap(
    law: laws_lib.Law,
    X,
    y,
    result: FitResult,
    n: int = 1000,
    seed: int = 0,
    clusters=None,
    level: float = 0.95,
) -> FitResult:
  """Resamples runs (or clusters of rows) with replacement, refits warm-started from the full-data
  optimum, and attaches percentile intervals and the draws to `result`."""
  X = _columns(X)
  y = np.asarray(y, float)
  rng = np.random.default_rng(seed)
  clusters = np.arange(len(y)) if clusters is None else np.asarray(clusters)
  labels = np.unique(clusters)
  members = {c: np.flatnonzero(clusters == c) for c in labels}
  draws, failures = [], 0
  for _ in range(n):
    idx = np.concatenate([members[c] for c in rng.choice(labels, len(labels))])
    try:
      refit = (
          fit(law, _columns(X, idx), y[idx], result.objective, result.delta, starts=[result.theta])
          if result.objective != 'vpnls'
          else _vpnls(law, _columns(X, idx), y[idx])
      )
      draws.append(refit.theta)
    except FitError:
      failures += 1
  result.draws = np.array(draws).reshape(len(draws), len(law.params))
  if len(draws):
    result.intervals = {p: interval(result.draws[:, i], level) for i, p in enumerate(law.params)}
  result.bootstrap_failures = failures
  return result


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
  return float(np.percentile(values, lo)), float(np.percentile(values, hi))


def goodness(law: laws_lib.Law, result: FitResult, X, y, held_out=None) -> dict:
  """R^2 and RMSE (in the target's units and in log space) on fitted and held-out points."""
  X, y = _columns(X), np.asarray(y, float)
  held_out = np.zeros(len(y), bool) if held_out is None else np.asarray(held_out, bool)
  prediction = law.predict(result.theta, X)

  def stats(mask):
    if not mask.any():
      return None
    r = prediction[mask] - y[mask]
    total = np.sum((y[mask] - y[mask].mean()) ** 2)
    return dict(
        n=int(mask.sum()),
        rmse=float(np.sqrt(np.mean(r**2))),
        rmse_log=float(np.sqrt(np.mean((np.log(prediction[mask]) - np.log(y[mask])) ** 2))),
        r2=float(1 - np.sum(r**2) / total) if total > 0 else None,
    )

  out = dict(
      fitted=stats(~held_out),
      held_out=stats(held_out),
      residuals=(np.log(prediction) - np.log(y)).tolist(),
  )
  result.goodness = out
  return out
