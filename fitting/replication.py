"""The findings table of docs/replication.md, computed from the committed local results.

Each finding of arXiv 2507.17702 that the local replication tests is one row: the paper's
statement and number, ours with its 95% bootstrap interval, and a verdict by a stated rule. The
rows are computed from `results/local/<study>/report.json`; `tests/test_replication.py` refits
every committed `results.csv` and checks that the table in the docs is what the refit gives, so
the report cannot drift from its data.

  python -m fitting.replication            # print the table
  python -m fitting.replication --write    # replace the tables in docs/replication.md

The per-study tables of the same doc ("Step N, as it ran") come from fitting.study_tables and are
written and checked the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import Callable

from fitting import hparams
from fitting import laws
from fitting import study_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, 'results', 'local')
DOC = os.path.join(ROOT, 'docs', 'replication.md')
BEGIN, END = '<!-- findings:begin -->', '<!-- findings:end -->'
N_BOOTSTRAP = 1000  # draws of every committed fit (fitting.fit --bootstrap)
# How far a refit of a committed table on another processor may move an identified number
# (identified_view): floating point moves a well-posed fit in its last digits, and a bootstrap
# percentile only where one of its draws lands elsewhere, which moves an interval end by the gap
# between neighbouring order statistics (a few percent of the interval at 1000 draws).
REFIT_RTOL = 0.05
# What a refit may change without changing a finding: where the optimizer stopped and how.
OPTIMIZER_DIAGNOSTICS = ('message', 'converged', 'starts_at_best', 'n_starts', 'at_bounds')
# Numbers derived from parameters: compared only when those parameters are identified.
DERIVED = {'G_star': ('b_G', 'c_G')}

# The verdicts (docs/replication.md, "How a row is judged"). A number's verdict:
REPRODUCED = 'reproduced'  # the paper's value inside our interval, which excludes every alternative
CONSISTENT = 'consistent with'  # the paper's value inside, but an alternative is not excluded
DIFFERS = 'not at this scale'  # our interval (or the stated test) excludes the paper's claim
INCONCLUSIVE = 'inconclusive'  # the interval holds the paper's value and every alternative
NOT_IDENTIFIED = 'not identified at this scale'  # the parameter's profile is open (fitting.core)
# A protocol check's:
HOLDS = 'holds'
FAILS = 'fails'
PENDING = 'pending'
BEYOND = 'beyond the paper'  # a measurement the paper does not make: no verdict


@dataclasses.dataclass(frozen=True)
class Row:
  finding: str
  paper: str
  ours: str
  verdict: str


def identified_view(node):
  """A report with what its data do not identify left out: in every fit (a node with `params`
  and `identification`), the parameters whose profile is open, their intervals and draw counts,
  the numbers derived from them, and the optimizer's diagnostics. What remains is what a refit on
  another machine of the same kind must reproduce to REFIT_RTOL."""
  if isinstance(node, list):
    return [identified_view(v) for v in node]
  if not isinstance(node, dict):
    return node
  node = {k: v for k, v in node.items() if k not in OPTIMIZER_DIAGNOSTICS}
  if 'params' in node and 'identification' in node:
    keep = {p for p, i in node['identification'].items() if i['identified']}
    for key in ('params', 'intervals', 'joint_intervals', 'joint_draws'):
      if key in node:
        node[key] = {p: v for p, v in node[key].items() if p in keep}
    node['identification'] = {
        p: i if p in keep else dict(identified=False) for p, i in node['identification'].items()
    }
    for key, needs in DERIVED.items():
      if key in node and not set(needs) <= keep:
        del node[key]
  return {k: identified_view(v) for k, v in node.items()}


def committed_report(study: str, results_dir: str = RESULTS_DIR) -> dict | None:
  """The committed report.json of a study (results/local/<study>/), or None."""
  path = os.path.join(results_dir, study, 'report.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def committed_reports(results_dir: str = RESULTS_DIR) -> dict[str, dict]:
  """{study: its committed report.json}, for the studies that have one."""
  studies = sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []
  reports = {study: committed_report(study, results_dir) for study in studies}
  return {study: report for study, report in reports.items() if report is not None}


def _interval(result: dict, param: str, key: str = 'intervals') -> tuple[float, float] | None:
  """A fit's 95% interval of `param`: its own bootstrap's (`intervals`), or the joint dense and
  MoE bootstrap's of a per-group EL law (`joint_intervals`); None where missing or infinite."""
  bounds = result.get(key, {}).get(param)
  if not bounds or not all(math.isfinite(b) for b in bounds):
    return None
  return float(bounds[0]), float(bounds[1])


def _fmt_bounds(value: float, bounds, digits: int = 2) -> str:
  f = lambda x: f'{x:.{digits}f}'
  return f'{f(value)} [{f(bounds[0])}, {f(bounds[1])}]' if bounds else f'{f(value)} (no CI)'


def alternatives(paper_value: float) -> tuple[float, ...]:
  """What a number must exclude to count as reproduced, unless its row names others: first the
  claim's rival, no dependence at all (0), then a law half and twice as strong as the paper's."""
  return (0.0, paper_value / 2, paper_value * 2)


def _identification(result: dict, param: str) -> dict | None:
  """A fit's report of `param`'s profile (fitting.core.profile), or None where not computed."""
  return result.get('identification', {}).get(param)


def identified(result: dict, param: str) -> bool:
  """Whether a fit's report shows `param` identified; a report without the profile has not."""
  return bool((_identification(result, param) or {}).get('identified'))


def interval_verdict(
    paper_value: float,
    bounds: tuple[float, float] | None,
    others: tuple[float, ...] | None = None,
    is_identified: bool = True,
) -> str:
  """A number against the paper's: not identified when its profile is open; not at this scale
  when the interval excludes the paper's value; reproduced when it holds the paper's value and
  excludes every alternative (`others`, default `alternatives`; the first is the claim's rival);
  consistent with it when it excludes the rival but not every other; inconclusive when it holds
  the rival, or without an interval."""
  if not is_identified:
    return NOT_IDENTIFIED
  if bounds is None:
    return INCONCLUSIVE
  low, high = bounds
  if not low <= paper_value <= high:
    return DIFFERS
  others = alternatives(paper_value) if others is None else others
  excluded = [not low <= a <= high for a in others]
  if all(excluded):
    return REPRODUCED
  return CONSISTENT if excluded[0] else INCONCLUSIVE


def sign_verdict(result: dict, param: str, bounds, sign: int) -> str:
  """A claimed sign of `param` (+1 or -1). Its profile (fitting.core.profile) must lie on one
  side of 0, even when open towards a bound (the magnitude is then not identified, the sign is),
  and so must its bootstrap interval `bounds`: on the paper's side, reproduced when the parameter
  is identified and consistent with it when only its sign is (its interval runs to a bound); on
  the other side, not at this scale; inconclusive when either straddles 0; not identified
  without a profile."""
  profile = _identification(result, param)
  if profile is None:
    return NOT_IDENTIFIED
  low, high = profile['profile_interval']
  if low <= 0 <= high or bounds is None or bounds[0] <= 0 <= bounds[1]:
    return INCONCLUSIVE
  if sign * bounds[0] < 0:
    return DIFFERS
  return REPRODUCED if profile['identified'] else CONSISTENT


def combined_verdict(verdicts: list[str]) -> str:
  """A finding made of parts (budgets, architectures, coefficients): not at this scale when any
  part is; reproduced (consistent with) when every part is (at least); not identified when no
  part is identified; otherwise inconclusive."""
  if not verdicts:
    return INCONCLUSIVE
  if set(verdicts) == {NOT_IDENTIFIED}:
    return NOT_IDENTIFIED
  if DIFFERS in verdicts:
    return DIFFERS
  if set(verdicts) == {REPRODUCED}:
    return REPRODUCED
  return CONSISTENT if set(verdicts) <= {REPRODUCED, CONSISTENT} else INCONCLUSIVE


def _magnitude(result: dict, param: str) -> str:
  """Why a parameter is not written as a number ('' where it is one)."""
  profile = _identification(result, param)
  if profile is None:
    return 'identification not computed'
  return '' if profile['identified'] else f'not identified: {profile["why"]}'


def _fmt_param(result: dict, param: str, bounds, digits: int = 2, name: str = '') -> str:
  """`param` (written as `name`, default its own) with its interval when identified, else the
  sign its bootstrap shows and why its magnitude is not a measurement."""
  name = name or param
  why = _magnitude(result, param)
  if not why:
    return f'{name} = {_fmt_bounds(result["params"][param], bounds, digits)}'
  side = ''
  if bounds and bounds[1] < 0:
    side = f' < 0 (bootstrap up to {bounds[1]:.2f})'
  elif bounds and bounds[0] > 0:
    side = f' > 0 (bootstrap from {bounds[0]:.2f})'
  return f'{name}{side} ({why})'


def _study(reports: dict, study: str) -> dict | None:
  entry = reports.get(study, {}).get('studies', {}).get(study)
  return None if entry is None or 'error' in entry else entry


def _pending(finding: str, paper: str, study: str) -> Row:
  return Row(finding, paper, f'`{study}` not run yet', PENDING)


def hparams_exponent(target: str, paper_law: laws.PowerLaw, label: str) -> Callable:
  def row(reports: dict) -> Row:
    finding = f'MoE {label} grows as C^b (Sec. 2.2, Eq. 3)'
    paper = f'b = {paper_law.exponent:.4f}'
    entry = _study(reports, 'hparams')
    if entry is None or 'moe' not in entry:
      return _pending(finding, paper, 'hparams')
    result = entry['moe'][target]
    if 'error' in result:
      return Row(finding, paper, f'not fitted: {result["error"]}', INCONCLUSIVE)
    left_out = entry['moe'].get('left_out', {}).get(target, {})
    note = ''.join(
        f'; {budget} FLOPs left out (its grid locates no optimum): {why}'
        for budget, why in left_out.items()
    )
    bounds = _interval(result, 'exponent_C')
    return Row(
        finding,
        paper,
        f'{_fmt_param(result, "exponent_C", bounds, 3, name="b")}, from '
        f'{entry["moe"]["n_near_optimal"]} near-optimal runs at {entry["moe"]["n_groups"]} '
        f'budgets{note}',
        interval_verdict(
            paper_law.exponent, bounds, is_identified=identified(result, 'exponent_C')
        ),
    )

  return row


def hparams_moe_versus_dense(reports: dict) -> Row:
  finding = 'MoE prefers a larger batch and a slightly lower learning rate than dense (Sec. 2.2)'
  paper = 'stated, from Fig. 2 (dense law not printed)'
  entry = _study(reports, 'hparams')
  if entry is None or not {'moe', 'dense'} <= set(entry):
    return _pending(finding, paper, 'hparams')
  C = max(entry['budgets'])
  fitted = lambda t: all('params' in entry[k][t] for k in ('moe', 'dense'))
  ratio = {
      target: hparams.law_at(entry['moe'][target], C) / hparams.law_at(entry['dense'][target], C)
      for target in ('learning_rate', 'batch_tokens')
      if fitted(target)
  }
  # The runs themselves: the best MoE run's learning rate and batch over the best dense run's.
  bests = [
      {
          t: entry['moe']['best_per_budget'][b][t] / entry['dense']['best_per_budget'][b][t]
          for t in ('learning_rate', 'batch_tokens')
      }
      for b in entry['moe'].get('best_per_budget', {})
  ]
  runs = '; '.join(
      f'{b}: x{r["learning_rate"]:.2g} / x{r["batch_tokens"]:.2g}'
      for b, r in zip(entry['moe'].get('best_per_budget', {}), bests)
  )
  agree = lambda r: r['learning_rate'] <= 1 <= r['batch_tokens']
  oppose = lambda r: r['learning_rate'] > 1 and r['batch_tokens'] < 1
  both = len(ratio) == 2
  verdict = (
      REPRODUCED
      if both and agree(ratio) and bests and all(agree(r) for r in bests)
      else DIFFERS
      if both and oppose(ratio) and bests and all(oppose(r) for r in bests)
      else INCONCLUSIVE
  )
  laws_text = ', '.join(f'{t.split("_")[0]} x{r:.2f}' for t, r in ratio.items())
  missing = [t for t in ('learning_rate', 'batch_tokens') if t not in ratio]
  return Row(
      finding,
      paper,
      f'fitted laws at C = {C:.2g} FLOPs (MoE/dense): {laws_text or "none"}'
      + (f' ({" and ".join(missing)}: an arm has no law)' if missing else '')
      + f'; best runs per budget (learning rate / batch): {runs or "not in this report"}',
      verdict,
  )


def allocation_exponent(kind: str, paper_law: laws.PowerLaw) -> Callable:
  def row(reports: dict) -> Row:
    finding = (
        f'{"MoE" if kind == "moe" else "Dense"} compute-optimal M grows as C^a (Sec. 2.3, Table 1)'
    )
    paper = f'a = {paper_law.exponent:.4f}'
    entry = _study(reports, 'allocation')
    if entry is None or kind not in entry:
      return _pending(finding, paper, 'allocation')
    arm = entry[kind]
    if 'error' in arm:
      skipped = '; '.join(
          f'C = {s["budget"]:.2g}: {s["cause"].split(";")[0]}' for s in arm['skipped_budgets']
      )
      return Row(
          finding,
          paper,
          f'not fitted: {len(arm["budgets"])} budget(s) with a bracketed optimum'
          + (f' ({skipped})' if skipped else ''),
          INCONCLUSIVE,
      )
    result = arm['M_opt']['fit']
    failed = result.get('bootstrap_failures') or 0
    bounds = _interval(result, 'exponent_C')
    return Row(
        finding,
        paper,
        f'{_fmt_param(result, "exponent_C", bounds, 3, name="a")} over '
        f'{len(arm["budgets"])} budgets'
        + (
            f'; {failed} of {failed + result["n_bootstrap"]} bootstrap draws put a budget\'s '
            'best run at the edge of its sizes and are left out'
            if failed
            else ''
        ),
        interval_verdict(
            paper_law.exponent, bounds, ALLOCATION_ALTERNATIVES, identified(result, 'exponent_C')
        ),
    )

  return row


# Compute-optimal allocation exponents: the rival is Kaplan et al.'s (arXiv 2001.08361, Sec. 6.1:
# N grows as C^0.73), then its data-heavy mirror; Chinchilla's 0.5 is the paper's neighbourhood.
ALLOCATION_ALTERNATIVES = (0.73, 0.27)


def _groups(points: list[dict]) -> dict[str, list[dict]]:
  out = {}
  for p in points:
    if not p['extrapolated']:
      out.setdefault(p['group'], []).append(p)
  return dict(sorted(out.items(), key=lambda item: item[1][0]['C']))


def _bounds(result: dict, param: str) -> tuple[float, float] | None:
  return _interval(result, param, key='joint_intervals')


def el_versus_activation(reports: dict) -> Row:
  """The sign of a_A in Eq. 10 at each budget (sign_verdict): the law's bounds allow either."""
  finding = 'EL rises as the activation ratio A falls (Sec. 4.1.1, Eq. 10)'
  paper = 'a_A < 0'
  entry = _study(reports, 'activation_ratio')
  if entry is None or not entry.get(laws.EL_ACTIVATION.name):
    return _pending(finding, paper, 'activation_ratio')
  budgets = {p['group']: p['C'] for p in entry['points']}
  fits = sorted(entry[laws.EL_ACTIVATION.name].items(), key=lambda item: budgets[item[0]])
  parts, verdicts = [], []
  for group, result in fits:
    bounds = _bounds(result, 'a_A')
    parts.append(f'{budgets[group]:.2g} FLOPs: {_fmt_param(result, "a_A", bounds)}')
    verdicts.append(sign_verdict(result, 'a_A', bounds, -1))
  return Row(finding, paper, '; '.join(parts), combined_verdict(verdicts))


def lowest_activation_best(reports: dict) -> Row:
  """Per budget group, the lowest-A member against the member of lowest loss (loss_gap): not at
  this scale where another member beats it by more than 2 SD of a difference of two runs;
  reproduced where it beats every other member by that much; otherwise inconclusive."""
  finding = 'EL is monotonic in A: the lowest activation ratio is best (Sec. 4.1.1, Fig. 5)'
  paper = 'lowest A tested (0.8%) has the highest EL at every budget'
  entry = _study(reports, 'activation_ratio')
  if entry is None:
    return _pending(finding, paper, 'activation_ratio')
  seed_sd = moe_seed_sd(reports)
  parts, verdicts = [], []
  for points in _groups(entry['points']).values():
    lowest = min(points, key=lambda p: p['A'])
    others = [p for p in points if p is not lowest]
    if not others:
      continue
    best_other = min(others, key=lambda p: p['loss'])
    gap, sd = loss_gap(lowest, best_other, seed_sd)
    parts.append(
        f'{points[0]["C"]:.2g} FLOPs: A = {lowest["A"]:.1%} {gap:+.4f} +- {sd:.4f} against the '
        f'best other ({best_other["family"]}, A = {best_other["A"]:.1%}; EL '
        f'{lowest["EL"]:.2f} against {best_other["EL"]:.2f})'
    )
    verdicts.append(_gap_verdict(gap, sd))
  ours = '; '.join(parts) + f' ({_noise_note(seed_sd)})'
  return Row(finding, paper, ours, combined_verdict(verdicts))


def a_equals_one(reports: dict) -> Row:
  """Decided on the EL read off the dense runs (their envelope, fitting.fit.a_equals_one); the
  power law's EL and the loss against the dense twin stand beside it."""
  finding = 'Protocol check, not a finding: the A = 1 member (E = E_a) matches dense'
  paper = 'EL = 1: with every routed expert active, an MoE is a dense model'
  entry = _study(reports, 'activation_ratio')
  if entry is None or not entry.get('check_A_equals_1'):
    return _pending(finding, paper, 'activation_ratio')
  budgets = {p['member']: p['C'] for p in entry['points']}
  checks = sorted(entry['check_A_equals_1'], key=lambda c: budgets[c['member']])
  parts = []
  for check in checks:
    seeds = check.get('n_seeds', 1)
    envelope = check['EL_read_off_dense_runs'], check.get('EL_read_off_dense_runs_interval')
    text = (
        f'{budgets[check["member"]]:.2g} FLOPs'
        + (f' (mean of {seeds} seeds)' if seeds > 1 else '')
        + f': EL {_fmt_bounds(*envelope)} read off the dense runs, '
        f'{_fmt_bounds(check["EL"], check["EL_interval"])} off the power law'
    )
    twin = check.get('same_budget_dense')
    if twin:
      against = (
          'its dense twin (same backbone, '
          if twin['source'] == 'dense_twin'
          else 'the dense_baseline run of that budget ('
      )
      text += (
          f', loss {twin["loss_difference"]:+.4f} +- {twin["difference_stderr"]:.4f} against '
          f'{against}EL {twin["EL"]:.2f})'
      )
    parts.append(text)
  verdict = HOLDS if all(c['holds'] for c in checks) else FAILS
  return Row(finding, paper, '; '.join(parts), verdict)


def frontier_is_a_power_law(reports: dict) -> Row:
  """Each seeded frontier point's miss of the fitted power law, in units of its own standard
  error (its seeds' SD over sqrt n): reproduced when every miss is within 2, not at this scale
  when one is beyond 3, else inconclusive. The EL of every law is read off that power law."""
  finding = 'Protocol check, not a finding: the dense frontier is a power law in C (Sec. 3)'
  paper = 'L = alpha C^-beta, EL read off it'
  entry = _study(reports, 'dense_baseline')
  if entry is None or 'power' not in entry or not entry.get('seed_replicates'):
    return _pending(finding, paper, 'dense_baseline (with seeds)')
  law = study_tables.power_frontier(entry)
  on = {p['member'] for p in entry.get('off_frontier', [])}
  points = [d for d in entry['seed_replicates'] if not set(d['members']) & on]
  misses = [(d['C'], d['mean'] - law(d['C']), d['sd'] / math.sqrt(len(d['loss']))) for d in points]
  ours = ', '.join(f'{c:.2g}: {m:+.3f} ({m / se:+.1f} SE)' for c, m, se in misses)
  worst = max(abs(m / se) for _, m, se in misses)
  ours = (
      f"frontier points (mean of each budget's best size over its seeds) minus the fitted law, "
      f"in loss and in the point's standard errors: {ours}"
  )
  verdict = HOLDS if worst <= 2 else FAILS if worst > 3 else INCONCLUSIVE
  return Row(finding, paper, ours, verdict)


def _within(g: float, tested: list[float]) -> str:
  """G for the findings table, within the tested G: beyond them it is the fit's bounds speaking,
  not the runs."""
  if g < tested[0]:
    return f'<{tested[0]:g}'
  if g > tested[-1]:
    return f'>{tested[-1]:g}'
  return f'{g:.1f}'


def loss_versus_granularity(reports: dict) -> Row:
  finding = 'Loss is U-shaped in granularity G (Sec. 4.1.2, Eq. 11)'
  paper = 'b_G < 0 (an interior optimum), G* around 12 (8-12)'
  entry = _study(reports, 'granularity')
  if entry is None or not entry.get(laws.EL_GRANULARITY.name):
    return _pending(finding, paper, 'granularity')
  fits = entry[laws.EL_GRANULARITY.name]
  budgets = {p['group']: p['C'] for p in entry['points']}
  tested = sorted({p['G'] for p in entry['points']})
  parts, verdicts = [], []
  for group, result in sorted(fits.items(), key=lambda i: budgets[i[0]]):
    b_bounds, c_bounds = _bounds(result, 'b_G'), _bounds(result, 'c_G')
    verdict = sign_verdict(result, 'b_G', b_bounds, -1)
    star = result.get('G_star')
    located = identified(result, 'c_G') and star is not None and tested[0] <= star <= tested[-1]
    if verdict == REPRODUCED and not located:  # a parabola that opens down, its top not found
      verdict = INCONCLUSIVE
    verdicts.append(verdict)
    where = 'no interior optimum'
    if not identified(result, 'c_G'):
      where = f'no optimum located (c_G {_magnitude(result, "c_G") or "identified"})'
    elif star is not None:
      # G* = 2^(-c_G / 2) falls as c_G rises: the c_G interval maps to a G* interval.
      where = f'G* = {_within(star, tested)}' + (
          f' [{_within(2 ** (-c_bounds[1] / 2), tested)}, '
          f'{_within(2 ** (-c_bounds[0] / 2), tested)}]'
          if c_bounds
          else ''
      )
    parts.append(f'{budgets[group]:.2g} FLOPs: {_fmt_param(result, "b_G", b_bounds)}, {where}')
  ours = '; '.join(parts) + f' (G tested: {", ".join(f"{g:g}" for g in tested)})'
  return Row(finding, paper, ours, combined_verdict(verdicts))


def moe_seed_sd(reports: dict) -> float | None:
  """The MoE seed-to-seed SD of the final loss (the seeds study), or None before it is run."""
  entry = _study(reports, 'seeds')
  return entry['moe']['sd'] if entry and 'moe' in entry else None


def loss_gap(p: dict, q: dict, seed_sd: float | None) -> tuple[float, float]:
  """p's loss minus q's, both runs of one budget group, and the SD of that difference between
  two single runs: both eval errors and, when measured, a seed's spread for each. Within a group
  the dense frontier is common to both, so the EL intervals (which carry it) would hide a real
  difference; the loss difference does not."""
  variance = p.get('loss_stderr', 0.0) ** 2 + q.get('loss_stderr', 0.0) ** 2
  return p['loss'] - q['loss'], math.sqrt(variance + 2 * (seed_sd or 0.0) ** 2)


def _gap_verdict(gap: float, sd: float) -> str:
  """A loss difference (the paper's choice minus its rival: below 0 is the paper's side) against
  2 SD of a difference of two runs (loss_gap): reproduced or not at this scale beyond it, else
  inconclusive."""
  if gap < -2 * sd:
    return REPRODUCED
  return DIFFERS if gap > 2 * sd else INCONCLUSIVE


def _noise_note(seed_sd: float | None) -> str:
  spread = f'and the MoE seed SD {seed_sd:.4f}' if seed_sd else '(no seed spread measured yet)'
  return f'loss differences +- 1 SD of two single runs: both eval errors {spread}'


LOW_SHARED_RATIO = 0.25  # "low": at most 3 of 12 active experts shared


def shared_expert_ratio(reports: dict) -> Row:
  """Per budget group the best S by loss, against S = 0: reproduced where a low non-zero S
  beats S = 0 by more than 2 SD of a difference of two runs (loss_gap); not at this scale where
  S = 0 or a high S beats every low non-zero S by that much."""
  finding = 'A low non-zero shared-expert ratio is best (Sec. 4.1.3)'
  paper = 'S = 16.7% (2 of 12) at C <= 1e20'
  entry = _study(reports, 'shared_experts')
  if entry is None:
    return _pending(finding, paper, 'shared_experts')
  seed_sd = moe_seed_sd(reports)
  verdicts, parts = [], []
  for points in _groups(entry['points']).values():
    best = min(points, key=lambda p: p['loss'])
    none = next((p for p in points if not p['S']), None)
    low = [p for p in points if 0 < p['S'] <= LOW_SHARED_RATIO]
    if none is None or not low:
      verdicts.append(INCONCLUSIVE)
      continue
    best_low = min(low, key=lambda p: p['loss'])
    gap, sd = loss_gap(best_low, none, seed_sd)
    text = (
        f'{points[0]["C"]:.2g} FLOPs: best S = {best["S"]:.1%}; best low S '
        f'({best_low["S"]:.1%}) {gap:+.4f} +- {sd:.4f} against S = 0'
    )
    if best is not none and best is not best_low:
      high_gap, high_sd = loss_gap(best, best_low, seed_sd)
      text += f', S = {best["S"]:.1%} {high_gap:+.4f} +- {high_sd:.4f} against it'
      verdicts.append(DIFFERS if high_gap < -2 * high_sd else INCONCLUSIVE)
    else:
      verdicts.append(_gap_verdict(gap, sd))
    parts.append(text)
  ours = '; '.join(parts) + f' ({_noise_note(seed_sd)})'
  return Row(finding, paper, ours, combined_verdict(verdicts))


def first_dense_layers(reports: dict) -> Row:
  """Every member with first dense layers against its group's 0-dense member, by loss
  (loss_gap) and EL ratio: reproduced when every difference lies within 2 SD of a difference of
  two runs, not at this scale when one lies beyond it."""
  finding = 'A few first dense layers are about neutral in loss (Sec. 4.1.4)'
  paper = 'EL about 1 for 0-3 dense layers'
  entry = _study(reports, 'dense_layers')
  if entry is None:
    return _pending(finding, paper, 'dense_layers')
  seed_sd = moe_seed_sd(reports)
  parts, beyond, total = [], 0, 0
  for points in _groups(entry['points']).values():
    none = next((p for p in points if p['family'] == 'dense0'), None)
    if none is None:
      continue
    gaps = []
    for p in sorted(points, key=lambda p: p['family']):
      if p is not none:
        gap, sd = loss_gap(p, none, seed_sd)
        total += 1
        beyond += abs(gap) > 2 * sd
        gaps.append(f'{p["family"]} {gap:+.4f} +- {sd:.4f} (EL x{p["EL"] / none["EL"]:.2f})')
    parts.append(f'{points[0]["C"]:.2g} FLOPs: ' + ', '.join(gaps))
  ours = '; '.join(parts) + f' against dense0 ({_noise_note(seed_sd)})'
  verdict = INCONCLUSIVE if not total else DIFFERS if beyond else REPRODUCED
  return Row(finding, paper, ours, verdict)


def el_versus_compute(reports: dict) -> Row:
  finding = 'EL rises with compute C (Sec. 4.2.1, Eq. 12)'
  paper = 'a_C > 0 for every sparse architecture'
  entry = _study(reports, 'activation_ratio')
  if entry is None or not entry.get('el_compute'):
    return _pending(finding, paper, 'activation_ratio')
  # An A = 1 architecture (as many routed experts as active) is the dense model's twin: its EL is
  # 1 at every C by the protocol's own check, so it has no rise to show.
  sparse = {p['family'] for p in entry['points'] if (p['A_stated'] or 0) < 1 - 1e-9}
  fits = {name: r for name, r in entry['el_compute'].items() if name in sparse}
  bounds = [_bounds(r, 'a_C') for r in fits.values()]
  ours = '; '.join(
      f'{name}: {_fmt_param(r, "a_C", b)}' for (name, r), b in zip(fits.items(), bounds)
  )
  verdict = combined_verdict([sign_verdict(r, 'a_C', b, +1) for r, b in zip(fits.values(), bounds)])
  # Each group's dense twin shows what its backbone alone gains or loses against the dense
  # frontier; divided out, a slope of the other sign means the backbones, not C, set the trend.
  fixed = {n: r for n, r in entry.get('el_compute_over_dense_twin', {}).items() if n in sparse}
  if fixed:
    slopes = [r['params']['a_C'] for r in fixed.values()]
    ours += "; over each group's dense twin (fixed backbone, no CI): " + ', '.join(
        f'{name} {r["params"]["a_C"]:+.2f}' for name, r in fixed.items()
    )
    if verdict == DIFFERS and all(a > 0 for a in slopes):
      verdict = INCONCLUSIVE
  return Row(finding, paper, ours, verdict)


def unified_law(reports: dict) -> Row:
  finding = 'Unified EL law coefficients (Sec. 4.2.2, Eq. 13)'
  names = ('a', 'd', 'gamma', 'beta')
  paper = ', '.join(f'{k} = {laws.PAPER_UNIFIED_EL[k]:.3g}' for k in names) + ' (Table 2)'
  entry = reports.get(UNIFIED, {}).get('el_laws', {}).get('unified_el')
  if not entry or 'params' not in entry:
    return _pending(finding, paper, UNIFIED)
  verdicts = [
      interval_verdict(
          laws.PAPER_UNIFIED_EL[k], _interval(entry, k), is_identified=identified(entry, k)
      )
      for k in names
  ]
  ours = ', '.join(_fmt_param(entry, k, _interval(entry, k), 3) for k in names)
  return Row(finding, paper, ours, combined_verdict(verdicts))


def seed_variance(reports: dict) -> Row:
  finding = 'Seed-to-seed spread of the final loss (not in the paper; its reviewers ask for it)'
  paper = 'one run per design'
  entry = _study(reports, 'seeds')
  if entry is None:
    return _pending(finding, paper, 'seeds')
  parts = []
  for kind in ('dense', 'moe'):
    if kind in entry:
      e = entry[kind]
      ratio = e['sd_over_eval_stderr']
      parts.append(
          f'{kind}: SD {e["sd"]:.4f} ({e["relative_sd"]:.2%} of the loss'
          + (f', {ratio:.1f} eval standard errors' if ratio else '')
          + f') over {len(e["loss"])} seeds at {e["C"]:.2g} FLOPs'
      )
  return Row(finding, paper, '; '.join(parts), BEYOND)


# The folder under results/local/ whose table holds dense_baseline, activation_ratio and
# granularity runs together, fitted with --study=all: the unified law needs both EL studies.
UNIFIED = 'unified'

FINDINGS = (
    hparams_exponent('learning_rate', laws.MOE_LEARNING_RATE, 'optimal learning rate'),
    hparams_exponent('batch_tokens', laws.MOE_BATCH_TOKENS, 'optimal batch (tokens)'),
    hparams_moe_versus_dense,
    allocation_exponent('moe', laws.MOE_OPTIMAL_M),
    allocation_exponent('dense', laws.DENSE_OPTIMAL_M),
    el_versus_activation,
    lowest_activation_best,
    frontier_is_a_power_law,
    a_equals_one,
    loss_versus_granularity,
    shared_expert_ratio,
    first_dense_layers,
    el_versus_compute,
    unified_law,
    seed_variance,
)


def rows(reports: dict) -> list[Row]:
  return [finding(reports) for finding in FINDINGS]


def table(reports: dict) -> str:
  """The findings block of docs/replication.md (markdown, between the markers)."""
  lines = [
      BEGIN,
      '| Finding (arXiv 2507.17702) | Paper | Ours, local scale (95% interval) | Verdict |',
      '| --- | --- | --- | --- |',
  ]
  lines += [f'| {r.finding} | {r.paper} | {r.ours} | {r.verdict} |' for r in rows(reports)]
  lines.append(END)
  return '\n'.join(lines)


def documented_table(doc: str = DOC) -> str:
  """The findings block as it stands in the docs."""
  with open(doc) as f:
    text = f.read()
  return text[text.index(BEGIN) : text.index(END) + len(END)]


def documented_blocks(doc: str = DOC) -> dict[str, str]:
  """The per-study table blocks (fitting.study_tables) as they stand in the docs."""
  with open(doc) as f:
    text = f.read()
  out = {}
  for name in study_tables.block_names():
    begin, end = study_tables.markers(name)
    if begin in text:
      out[name] = text[text.index(begin) : text.index(end) + len(end)]
  return out


def write(doc: str = DOC, reports: dict | None = None, results_dir: str = RESULTS_DIR) -> None:
  """Replaces the findings table and every per-study table whose markers the doc holds."""
  reports = reports or committed_reports(results_dir)
  with open(doc) as f:
    new = f.read().replace(documented_table(doc), table(reports))
  generated = study_tables.blocks(reports, results_dir)
  for name, old in documented_blocks(doc).items():
    new = new.replace(old, generated.get(name, old))
  with open(doc + '.tmp', 'w') as f:
    f.write(new)
  os.replace(doc + '.tmp', doc)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--write', action='store_true', help=f'replace the tables in {DOC}')
  args = parser.parse_args(argv)
  if args.write:
    write()
    print(f'wrote the findings table and the per-study tables of {DOC}')
  else:
    print(table(committed_reports()))


if __name__ == '__main__':
  main()
