"""Hyperparameter laws the paper's way (Sec. 2.2; DeepSeek, Step Law): per budget the runs within
0.25% of the best loss are near-optimal; power laws of learning rate and batch (tokens) are
fitted over them in log-log space.

The intervals come from a bootstrap of the whole procedure: each draw resamples the runs within
each budget (every budget stays in), adds to each run's loss a normal error of its eval standard
error where the table has one and of the measured seed-to-seed SD of its kind (`seed_sd`),
chooses the near-optimal runs again and refits. Resampling only
the chosen runs would leave draws with a single budget, whose exponent is not identified, and
would ignore that measurement noise decides which runs count as near-optimal."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from fitting import core
from fitting import el as el_lib
from fitting import laws

BAND = 0.0025


def law_at(fit: dict, C: float) -> float:
  """A fitted law of this module (its report entry: ln y = log_coefficient + exponent_C ln C),
  evaluated at C FLOPs."""
  p = fit['params']
  return float(np.exp(p['log_coefficient']) * C ** p['exponent_C'])


def groups_of(rows, group_keys) -> dict[tuple, list[dict]]:
  """The rows by group (budget): {their `group_keys` values: rows}, in first-seen order."""
  groups = collections.defaultdict(list)
  for row in rows:
    groups[tuple(row[k] for k in group_keys)].append(row)
  return groups


def group_label(group: tuple) -> str:
  """A group's key as the report names it, e.g. '1e+11'."""
  return '/'.join(f'{float(v):g}' for v in group)


def near_optimal(rows, group_keys, loss_key, band: float = BAND) -> list[dict]:
  """The rows within `band` (relative) of the lowest loss of their group."""
  out = []
  for members in groups_of(rows, group_keys).values():
    best = min(r[loss_key] for r in members)
    out += [r for r in members if r[loss_key] <= best * (1 + band)]
  return out


def design_laws(rows, loss_key, group_keys=('C',), covariates=('C',), objective='ls') -> dict:
  """The laws the local protocol places its runs with: ln lr and ln batch fitted to the
  near-optimal runs of every budget, located optimum or not (no interval). A design needs a value
  at every budget; a measurement of the optimum (fit_laws) leaves out the budgets whose grid did
  not locate it, so the two differ where a grid was capped."""
  chosen = near_optimal(rows, group_keys, loss_key)
  out = {}
  for target in ('learning_rate', 'batch_tokens'):
    law = laws.log_linear(f'{target}_law', covariates, target)
    X = {c: np.array([r[c] for r in chosen], float) for c in covariates}
    y = np.array([r[target] for r in chosen], float)
    out[target] = dict(params=core.fit(law, X, y, objective=objective, what='design law').params)
  return out


def _json(law: core.FitResult | str) -> dict:
  return dict(error=law) if isinstance(law, str) else law.to_json()


def unbracketed(rows, group_keys, loss_key, target) -> dict[tuple, str]:
  """The groups (budgets) whose grid does not locate an optimum of `target`, with the reason: one
  value tried, or the lowest-loss run at the smallest or largest value tried. Their best run is
  where the grid stopped, not an optimum, so a law of the optimum leaves them out."""
  out = {}
  for key, members in groups_of(rows, group_keys).items():
    tried = sorted({float(r[target]) for r in members})
    best = float(min(members, key=lambda r: r[loss_key])[target])
    if len(tried) == 1:
      out[key] = f'one {target} tried ({tried[0]:g})'
    elif best in (tried[0], tried[-1]):
      edge = 'smallest' if best == tried[0] else 'largest'
      out[key] = f'best {target} {best:g} is the {edge} of {", ".join(f"{t:g}" for t in tried)}'
  return out


@dataclasses.dataclass
class HyperparameterLaws:
  learning_rate: core.FitResult | str  # a law, or why it was not fitted
  batch: core.FitResult | str
  n_near_optimal: int
  n_groups: int
  left_out: dict[str, dict[str, str]]  # {target: {group: why its optimum is not located}}

  def to_json(self) -> dict:
    return dict(
        learning_rate=_json(self.learning_rate),
        batch_tokens=_json(self.batch),
        n_near_optimal=self.n_near_optimal,
        n_groups=self.n_groups,
        band=BAND,
        left_out=self.left_out,
    )


def fit_laws(
    rows,
    loss_key: str,
    lr_covariates=('C',),
    batch_covariates=('C',),
    batch_key: str = 'batch_tokens',
    group_keys=('C',),
    objective: str = 'ls',
    n_bootstrap: int = 1000,
    seed: int = 0,
    what: str = 'hyperparameters',
    stderr_key: str = 'eval_loss_stderr',
    seed_sd: float = 0.0,
):
  """ln lr and ln batch linear in the log covariates, over the near-optimal runs.

  objective 'ls' is ordinary least squares in log space (as Step Law and DeepSeek); 'huber' the
  robust alternative.
  """
  groups = groups_of(rows, group_keys)
  if len(groups) < 2:
    raise core.FitError(f'{what}: {len(groups)} budget(s); a power law in C needs at least 2.')
  chosen = near_optimal(rows, group_keys, loss_key)
  targets = (('learning_rate', lr_covariates), (batch_key, batch_covariates))
  laws_ = [laws.log_linear(f'{target}_law', covariates, target) for target, covariates in targets]
  left_out = {target: unbracketed(rows, group_keys, loss_key, target) for target, _ in targets}
  group_of = lambda r: tuple(r[k] for k in group_keys)

  def design(points, target, covariates):
    points = [r for r in points if group_of(r) not in left_out[target]]
    X = {c: np.array([r[c] for r in points], float) for c in covariates}
    return X, np.array([r[target] for r in points], float)

  results = []  # per target its FitResult, or why it has none
  for law, (target, covariates) in zip(laws_, targets):
    located = len(groups) - len(left_out[target])
    if located < 2:
      why = '; '.join(f'{group_label(k)}: {v}' for k, v in left_out[target].items())
      results.append(
          f'{what}: the {target} optimum is located at {located} budget(s) ({why}); a power '
          'law in C needs at least 2.'
      )
      continue
    X, y = design(chosen, target, covariates)
    result = core.fit(law, X, y, objective=objective, what=what, identify=True)
    core.goodness(law, result, X, y)
    results.append(result)
  fitted = [
      (law, target, r) for law, target, r in zip(laws_, targets, results) if not isinstance(r, str)
  ]
  rng = np.random.default_rng(seed)
  draws, failures = [[] for _ in fitted], 0
  for _ in range(n_bootstrap):
    sample = []
    for members in groups.values():
      for i in rng.integers(0, len(members), len(members)):
        noise = el_lib.loss_noise_sd(members[i], seed_sd, stderr_key) * rng.normal()
        sample.append(dict(members[i], **{loss_key: members[i][loss_key] + noise}))
    picked = near_optimal(sample, group_keys, loss_key)
    try:
      thetas = [
          core.fit(law, *design(picked, target, cov), objective=objective, starts=[r.theta]).theta
          for law, (target, cov), r in fitted
      ]
    except core.FitError:
      failures += 1
      continue
    for draw, theta in zip(draws, thetas):
      draw.append(theta)
  for (law, _, result), draw in zip(fitted, draws):
    result.draws = np.array(draw).reshape(len(draw), len(law.params))
    if len(draw):
      result.intervals = {p: core.interval(result.draws[:, i]) for i, p in enumerate(law.params)}
    result.bootstrap_failures = failures
  left_out = {t: {group_label(k): v for k, v in by.items()} for t, by in left_out.items()}
  return HyperparameterLaws(results[0], results[1], len(chosen), len(groups), left_out)
