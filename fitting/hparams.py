"""Hyperparameter laws the paper's way (Sec. 2.2; DeepSeek, Step Law): per budget the runs within
0.25% of the best loss are near-optimal; power laws of learning rate and batch (tokens) are
fitted over them in log-log space, with a bootstrap of the near-optimal set."""

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
):
  """ln lr and ln batch linear in the log covariates, over the near-optimal runs.

  objective 'ls' is ordinary least squares in log space (as Step Law and DeepSeek); 'huber' the
  robust alternative.
  """
  groups = {tuple(r[k] for k in group_keys) for r in rows}
  if len(groups) < 2:
    raise core.FitError(f'{what}: {len(groups)} budget(s); a power law in C needs at least 2.')
  chosen = near_optimal(rows, group_keys, loss_key)
  results = []
  for target, covariates in (('learning_rate', lr_covariates), (batch_key, batch_covariates)):
    law = laws.log_linear(f'{target}_law', covariates, target)
    X = {c: np.array([r[c] for r in chosen], float) for c in covariates}
    y = np.array([r[target] for r in chosen], float)
    result = core.fit(law, X, y, objective=objective, what=what)
    core.bootstrap(law, X, y, result, n=n_bootstrap, seed=seed)
    core.goodness(law, result, X, y)
    results.append(result)
  return HyperparameterLaws(results[0], results[1], len(chosen), len(groups))
