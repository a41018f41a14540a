"""Efficiency Leverage from runs: dense frontier, its inverse, EL points, both definitions.

Definitions (the reviewers found the paper ambiguous; every result names its definition):
  * 'per_run': EL = C_dense(L_run) / C_run, with C_dense the fitted dense frontier inverted at the
    MoE run's final loss (what Eq. 5 says for one MoE point);
  * 'per_architecture': fit one MoE architecture's own L(C) over its budgets, EL at a target
    budget = C_dense(L_arch(C_target)) / C_target (the paper's "fit a series of loss scaling
    curves").
EL points whose loss lies outside the dense losses observed are flagged as extrapolations and
left out of every law. Either activation ratio can enter the fits (`ACTIVATION_DEFINITIONS`).
"""

from __future__ import annotations

import collections
import math
import re

import numpy as np

from fitting import core
from fitting import laws


def budget_of(row: dict, cost_key: str = 'C') -> float:
  """A run's budget: its `budget` column, else its cost to 3 digits (whole steps move C)."""
  return row.get('budget') or float(f'{row[cost_key]:.3g}')


# What makes two runs the same design: all but their seeds. Runs that differ only in seed
# (experiments.member.seed_replicate names them `<member>_seed<s>`) are one point of a frontier, at
# their mean loss.
DESIGN_FIELDS = (
    'n_layers', 'd_model', 'n_heads', 'n_kv_heads', 'd_ffn', 'n_experts', 'top_k', 'n_shared',
    'd_expert', 'num_dense_layers', 'learning_rate', 'batch_size', 'seq_len',
)  # fmt: skip


def without_seed(member) -> str:
  """A member's name without its `_seed<s>` suffix."""
  return re.sub(r'_seed\d+$', '', str(member or ''))


def design_key(row: dict, cost_key: str = 'C') -> tuple:
  """The row's budget, member name and design, without its seed."""
  return (budget_of(row, cost_key), without_seed(row.get('member'))) + tuple(
      row.get(k) for k in DESIGN_FIELDS
  )


def designs(rows: list[dict], cost_key: str = 'C') -> list[list[dict]]:
  """The runs of each design (design_key), in the order of their first runs."""
  out = collections.defaultdict(list)
  for row in rows:
    out[design_key(row, cost_key)].append(row)
  return list(out.values())


def frontier_designs(rows: list[dict], loss_key: str, cost_key: str = 'C') -> list[list[dict]]:
  """Per budget (budget_of), rising, the runs of the design with the lowest mean loss over its
  seeds: an envelope where a budget trained several sizes. Taking each design's mean before the
  lowest keeps a lucky seed of one size from setting the envelope."""
  best = {}
  for runs in designs(rows, cost_key):
    budget, mean = budget_of(runs[0], cost_key), float(np.mean([r[loss_key] for r in runs]))
    if budget not in best or mean < best[budget][0]:
      best[budget] = (mean, runs)
  return [best[b][1] for b in sorted(best)]


def loss_noise_sd(row: dict, seed_sd: float, stderr_key: str = 'eval_loss_stderr') -> float:
  """The SD of a run's final loss as a measurement of its design: its eval standard error and,
  for a design trained with one seed, the measured seed-to-seed SD of its kind (`seed_sd`). A
  seed mean's standard error (seed_means) already holds both."""
  stderr = float(row.get(stderr_key) or 0.0)
  return stderr if row.get('n_seeds', 1) > 1 else float(np.hypot(stderr, seed_sd))


def seed_means(rows: list[dict], loss_key: str, stderr_key: str = 'eval_loss_stderr') -> list[dict]:
  """One row per design (design_key), in the order of their first runs: a design trained with
  several seeds becomes its first run's row at the mean loss, named without the seed, with
  `n_seeds`, `seed_losses` and, as its standard error, the seeds' SD over sqrt(n) (which holds
  the eval error as well as the seed's spread). A design of one run is its row, unchanged."""
  out = []
  for runs in designs(rows):
    if len(runs) == 1:
      out.append(runs[0])
      continue
    loss = np.array([r[loss_key] for r in runs], float)
    out.append(
        dict(
            runs[0],
            member=without_seed(runs[0].get('member')),
            C=float(np.mean([r['C'] for r in runs])),
            n_seeds=len(runs),
            seed_losses=loss.tolist(),
            **{
                loss_key: float(loss.mean()),
                stderr_key: float(loss.std(ddof=1) / np.sqrt(len(runs))),
            },
        )
    )
  return out


def frontier_runs(rows: list[dict], loss_key: str, cost_key: str = 'C') -> list[dict]:
  """The runs that make the frontier (every seed of each budget's best design), in their order in
  `rows`: what a bootstrap of the frontier resamples. Resampling every run would bias it: a draw
  can drop a budget's better size but never add a better one, so the envelope only rises."""
  on = {id(r) for runs in frontier_designs(rows, loss_key, cost_key) for r in runs}
  return [r for r in rows if id(r) in on]


def frontier_points(rows: list[dict], loss_key: str, cost_key: str = 'C'):
  """The compute-optimal frontier: per budget, the best design's mean cost and mean loss over its
  seeds (frontier_designs), and its first run."""
  designs = frontier_designs(rows, loss_key, cost_key)
  return (
      np.array([np.mean([r[cost_key] for r in runs]) for runs in designs]),
      np.array([np.mean([r[loss_key] for r in runs]) for runs in designs]),
      [runs[0] for runs in designs],
  )


def fit_frontier(
    cost, loss, form: str = 'power', objective: str = 'huber', what: str = '', identify=False
):
  law = laws.FRONTIER if form == 'power' else laws.FRONTIER_WITH_FLOOR
  bounds = None
  if form == 'floor':  # the floor lies below every observed loss
    bounds = list(law.bounds)
    bounds[0] = (bounds[0][0], float(np.log(np.min(loss))) - 1e-9)
  return law, core.fit(
      law, dict(C=cost), loss, objective=objective, bounds=bounds, what=what, identify=identify
  )


def interpolated_dense_cost(cost, loss, target):
  """C_dense read off the dense runs themselves, no law: ln C interpolated linearly in loss
  between the two frontier points whose losses bracket `target` (NaN outside them). Loss is
  taken as never rising with C (the running minimum), as an envelope does not. A check of a
  fitted frontier where the runs scatter about it."""
  order = np.argsort(cost)
  ln_c = np.log(np.asarray(cost, float)[order])
  envelope = np.minimum.accumulate(np.asarray(loss, float)[order])
  # np.interp wants rising x: the envelope falls with C, so read it from the largest C down.
  return np.exp(np.interp(target, envelope[::-1], ln_c[::-1], left=np.nan, right=np.nan))


def invert_frontier(law, theta, loss):
  """Cost at which the frontier reaches `loss`; NaN below a fitted floor."""
  return law.inverse(theta, loss)


ACTIVATION_DEFINITIONS = {
    'stated': 'A = (E_a + E_s) / (E + E_s), the definition of arXiv 2507.17702 Sec. 2.1',
    'routed': "A = E_a / E, the routed-only ratio behind the paper's printed 0.8% and 3.1%",
}


def activation(row: dict, definition: str) -> float | None:
  """The row's activation ratio under `definition` ('stated' or 'routed')."""
  return row.get('A') if definition == 'stated' else row.get('A_routed')


# What makes an MoE architecture the same across budgets: its ratios, not its widths (at fixed G
# the expert width grows with the model).
ARCHITECTURE_KEYS = ('A', 'G', 'S', 'top_k', 'num_dense_layers')


def family(row: dict) -> str:
  """The MoE architecture of a row, the same across its budget groups: the member name without
  its group prefix ('g3_E64' -> 'E64'), as the study configs name members; otherwise (a table
  from elsewhere) its ARCHITECTURE_KEYS, e.g. 'A=0.0625/G=8/S=0/top_k=8/num_dense_layers=1'."""
  member, group = str(row.get('member', '')), str(row.get('group', ''))
  if group and member.startswith(group + '_'):
    return member[len(group) + 1 :]

  def value(key):
    v = row.get(key)
    return f'{float(v):.4g}' if isinstance(v, (int, float)) and v == v else str(v)

  return '/'.join(f'{k}={value(k)}' for k in ARCHITECTURE_KEYS)


def budgets_per_family(moe_rows, cost_key='C') -> dict[str, int]:
  """{family: how many distinct budgets it ran}: el_per_architecture fits a family with 3."""
  seen = collections.defaultdict(set)
  for row in moe_rows:
    seen[family(row)].add(round(math.log10(budget_of(row, cost_key)), 2))
  return {name: len(budgets) for name, budgets in sorted(seen.items())}


def el_per_run(
    moe_rows,
    dense_law,
    dense_theta,
    dense_losses,
    loss_key,
    cost_key='C',
    activation_definition='stated',
):
  """One EL point per MoE run: C_dense(L_run) / C_run. A point whose loss lies outside the
  losses the dense frontier was fitted on is `extrapolated`: the laws leave it out."""
  lo, hi = float(np.min(dense_losses)), float(np.max(dense_losses))
  out = []
  for row in moe_rows:
    c_dense = float(invert_frontier(dense_law, dense_theta, row[loss_key]))
    out.append(
        dict(
            study=row.get('study'),
            member=row.get('member'),
            group=row.get('group'),
            family=family(row),
            A=activation(row, activation_definition),
            A_stated=row.get('A'),
            A_routed=row.get('A_routed'),
            G=row.get('G'),
            S=row.get('S'),
            C=row[cost_key],
            budget=row.get('budget'),
            loss=row[loss_key],
            C_dense=c_dense,
            EL=c_dense / row[cost_key],
            definition='per_run',
            n_seeds=row.get('n_seeds', 1),
            extrapolated=not lo <= row[loss_key] <= hi,
        )
    )
  return out


def el_per_architecture(
    moe_rows,
    dense_law,
    dense_theta,
    dense_losses,
    loss_key,
    cost_key='C',
    activation_definition='stated',
):
  """The paper's EL: each MoE architecture (family) gets its own power law L(C) over its budgets,
  and EL at each of those budgets is C_dense(L_arch(C)) / C. Families with fewer than 3 budgets
  are skipped; a target loss outside the dense losses is flagged `extrapolated`."""
  families = collections.defaultdict(list)
  for row in moe_rows:
    families[family(row)].append(row)
  lo, hi = float(np.min(dense_losses)), float(np.max(dense_losses))
  out = []
  for name, rows in sorted(families.items()):
    cost, loss, best = frontier_points(rows, loss_key, cost_key)
    if len(cost) < 3:
      continue
    law, result = fit_frontier(cost, loss, 'power', what=f'MoE family {name}')
    for c, row in zip(cost, best):
      target_loss = float(law.predict(result.theta, dict(C=np.array([c])))[0])
      c_dense = float(invert_frontier(dense_law, dense_theta, target_loss))
      out.append(
          dict(
              study=row.get('study'),
              family=name,
              group=row.get('group'),
              A=activation(row, activation_definition),
              A_stated=row.get('A'),
              A_routed=row.get('A_routed'),
              G=row.get('G'),
              S=row.get('S'),
              C=float(c),
              loss=target_loss,
              C_dense=c_dense,
              EL=c_dense / c,
              definition='per_architecture',
              n_budgets=len(cost),
              extrapolated=not lo <= target_loss <= hi,
          )
      )
  return out


def el_bootstrap(
    dense_rows,
    moe_rows,
    loss_key,
    form='power',
    n=200,
    seed=0,
    cost_key='C',
    activation_definition='stated',
    stderr_key='eval_loss_stderr',
    seed_sd: float = 0.0,
):
  """Per-run EL points with 95% intervals. Each draw refits the dense frontier to a resample of
  its points (frontier_runs) and moves each MoE run's loss by a normal draw of its noise
  (loss_noise_sd: the eval error, and `seed_sd`, the measured seed-to-seed SD of an MoE run, for
  a single-seed member), so an interval holds the frontier's uncertainty, the eval set's sampling
  error and the training noise of one run.

  Beside the law's EL, every point gets `EL_envelope`: C_dense read off the frontier's points
  themselves (interpolated_dense_cost), no law, with its interval from the same draws: the EL of
  a frontier that is the envelope of the runs wherever the law misses them."""
  cost, loss, _ = frontier_points(dense_rows, loss_key, cost_key)
  law, result = fit_frontier(cost, loss, form, what='dense frontier')
  points = el_per_run(moe_rows, law, result.theta, loss, loss_key, cost_key, activation_definition)
  stderr = np.array([loss_noise_sd(row, seed_sd, stderr_key) for row in moe_rows])
  for p, row in zip(points, moe_rows):
    p['loss_stderr'] = float(row.get(stderr_key) or 0.0)
    p['EL_envelope'] = float(interpolated_dense_cost(cost, loss, p['loss']) / p['C'])
  run_loss = np.array([p['loss'] for p in points], float)
  run_cost = np.array([p['C'] for p in points], float)
  rng = np.random.default_rng(seed)
  draws, envelope_draws = [], []
  dense_rows = frontier_runs(dense_rows, loss_key, cost_key)
  for _ in range(n):
    dense_sample = [dense_rows[i] for i in rng.integers(0, len(dense_rows), len(dense_rows))]
    noisy_loss = run_loss + stderr * rng.normal(size=len(points))
    c, l, _ = frontier_points(dense_sample, loss_key, cost_key)
    if len(c) < len(law.params) + 1:
      continue
    try:
      refit = core.fit(law, dict(C=c), l, starts=[result.theta])
    except core.FitError:
      continue
    draws.append(invert_frontier(law, refit.theta, noisy_loss) / run_cost)
    envelope_draws.append(interpolated_dense_cost(c, l, noisy_loss) / run_cost)
  for key, values in (('EL_interval', draws), ('EL_envelope_interval', envelope_draws)):
    values = np.array(values)
    for i, p in enumerate(points):
      finite = values[:, i][np.isfinite(values[:, i])] if len(values) else []
      if len(finite) >= max(2, len(values) // 2):
        p[key] = core.interval(finite)
  return law, result, points


def joint_bootstrap(
    dense_rows,
    moe_rows,
    statistic,
    n: int = 200,
    seed: int = 0,
    stratum=None,
    noise: tuple[str, float] | None = None,
) -> dict:
  """Percentile intervals of `statistic(dense_rows, moe_rows) -> {name: value}` over draws that
  resample the dense runs (pass the frontier's, frontier_runs) and the MoE runs together (each
  with replacement; MoE runs within their `stratum(row)`, e.g. the budget group, so that every
  draw keeps the design), so that the frontier's uncertainty reaches every EL-derived number.
  `noise=(loss_key, seed_sd)` also moves each drawn MoE run's loss by a normal draw of its
  loss_noise_sd. Returns the intervals, the draws each rests on, and the fraction of draws that
  failed."""
  rng = np.random.default_rng(seed)
  noise_rng = np.random.default_rng([seed, 1])  # its own stream: the resampling stays the same
  strata = collections.defaultdict(list)
  for row in moe_rows:
    strata[stratum(row) if stratum else None].append(row)
  values, failed = collections.defaultdict(list), 0
  for _ in range(n):
    dense = [dense_rows[i] for i in rng.integers(0, len(dense_rows), len(dense_rows))]
    moe = [rows[i] for rows in strata.values() for i in rng.integers(0, len(rows), len(rows))]
    if noise:
      loss_key, seed_sd = noise
      moe = [
          dict(r, **{loss_key: r[loss_key] + loss_noise_sd(r, seed_sd) * noise_rng.normal()})
          for r in moe
      ]
    try:
      out = statistic(dense, moe)
    except (core.FitError, ValueError, np.linalg.LinAlgError):
      failed += 1
      continue
    for key, value in out.items():
      if value is not None and np.isfinite(value):
        values[key].append(value)
  intervals = {k: core.interval(np.array(v)) for k, v in values.items() if len(v) >= max(2, n // 2)}
  return dict(
      intervals=intervals,
      draws={k: len(v) for k, v in values.items()},
      n=n,
      failed_fraction=failed / n if n else 0.0,
  )
