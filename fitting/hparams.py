"""Hyperparameter laws the paper's way (Sec. 2.2; DeepSeek, Step Law): per budget the runs within
0.25% of the best loss are near-optimal; power laws of learning rate and batch (tokens) are
fitted over them in log-log space.

The intervals come from a bootstrap of the whole procedure: each draw resamples the runs within
each budget (every budget stays in), adds to each run's loss a normal error of its eval standard
error where the table has one, chooses the near-optimal runs again and refits. Resampling only
the chosen runs would leave draws with a single budget, whose exponent is not identified, and
would ignore that measurement noise decides which runs count as near-optimal."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from fitting import core
from fitting import laws

BAND = 0.0025


def law_at(fit: dict, C: float) -> float:
  """A fitted law of this module (its report entry: ln y = log_coefficient + exponent_C ln C),
  evaluated at C FLOPs."""
  p = fit['params']
  return float(np.exp(p['log_coefficient']) * C ** p['exponent_C'])


def near_optimal(rows, group_keys, loss_key, band: float = BAND) -> list[dict]:
  """The rows within `band` (relative) of the lowest loss of their group."""
  groups = collections.defaultdict(list)
  for row in rows:
    groups[tuple(row[k] for k in group_keys)].append(row)
  out = []
  for members in groups.values():
    best = min(r[loss_key] for r in members)
    out += [r for r in members if r[loss_key] <= best * (1 + band)]
  return out


@dataclasses.dataclass
class HyperparameterLaws:
  learning_rate: core.FitResult
  batch: core.FitResult
  n_near_optimal: int
  n_groups: int

  def to_json(self) -> dict:
    return dict(
        learning_rate=self.learning_rate.to_json(),
        batch_tokens=self.batch.to_json(),
        n_near_optimal=self.n_near_optimal,
        n_groups=self.n_groups,
        band=BAND,
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
):
  """ln lr and ln batch linear in the log covariates, over the near-optimal runs.

  objective 'ls' is ordinary least squares in log space (as Step Law and DeepSeek); 'huber' the
  robust alternative.
  """
  groups = collections.defaultdict(list)
  for row in rows:
    groups[tuple(row[k] for k in group_keys)].append(row)
  if len(groups) < 2:
    raise core.FitError(f'{what}: {len(groups)} budget(s); a power law in C needs at least 2.')
  chosen = near_optimal(rows, group_keys, loss_key)
  targets = (('learning_rate', lr_covariates), (batch_key, batch_covariates))
  laws_ = [laws.log_linear(f'{target}_law', covariates, target) for target, covariates in targets]

  def design(points, target, covariates):
    X = {c: np.array([r[c] for r in points], float) for c in covariates}
    return X, np.array([r[target] for r in points], float)

  results = []
  for law, (target, covariates) in zip(laws_, targets):
    X, y = design(chosen, target, covariates)
    result = core.fit(law, X, y, objective=objective, what=what)
    core.goodness(law, result, X, y)
    results.append(result)
  rng = np.random.default_rng(seed)
  draws, failures = [[], []], 0
  for _ in range(n_bootstrap):
    sample = []
    for members in groups.values():
      for i in rng.integers(0, len(members), len(members)):
        noise = float(members[i].get(stderr_key) or 0.0) * rng.normal()
        sample.append(dict(members[i], **{loss_key: members[i][loss_key] + noise}))
    picked = near_optimal(sample, group_keys, loss_key)
    try:
      thetas = [
          core.fit(
              law, *design(picked, target, covariates), objective=objective, starts=[result.theta]
          ).theta
          for law, (target, covariates), result in zip(laws_, targets, results)
      ]
    except core.FitError:
      failures += 1
      continue
    for draw, theta in zip(draws, thetas):
      draw.append(theta)
  for law, result, draw in zip(laws_, results, draws):
    result.draws = np.array(draw).reshape(len(draw), len(law.params))
    if len(draw):
      result.intervals = {p: core.interval(result.draws[:, i]) for i, p in enumerate(law.params)}
    result.bootstrap_failures = failures
  return HyperparameterLaws(results[0], results[1], len(chosen), len(groups))
