"""The per-study tables of docs/replication.md ("Step N, as it ran"), from the committed results.

Each table is a block between `<!-- <name>:begin -->` and `<!-- <name>:end -->` markers, written by
`python -m fitting.replication --write` and checked by `tests/test_replication.py`, like the
findings table: the numbers in the prose around them are the writer's, the tables are the data's.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Callable

import numpy as np

from fitting import el as el_lib
from fitting import laws
from fitting import studies as studies_lib


def markers(name: str) -> tuple[str, str]:
  return f'<!-- {name}:begin -->', f'<!-- {name}:end -->'


def block(name: str, lines: list[str]) -> str:
  begin, end = markers(name)
  return '\n'.join([begin, *lines, end])


def results_rows(study: str, results_dir: str) -> list[dict]:
  """The committed results table of a study (results.jsonl), or [] before it is committed."""
  path = os.path.join(results_dir, study, 'results.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _backbone(row: dict) -> str:
  return f'({int(row["n_layers"])}, {int(row["d_model"])})'


def _interval(value: float, bounds) -> str:
  return f'{value:.2f} [{bounds[0]:.2f}, {bounds[1]:.2f}]' if bounds else f'{value:.2f}'


# --- The dense frontier ------------------------------------------------------------------------


def power_frontier(entry: dict) -> Callable[[float], float]:
  """The dense_baseline report's fitted power law (laws.FRONTIER), as loss at C FLOPs."""
  theta = laws.FRONTIER.vector(entry['power']['params'])
  return lambda c: float(laws.FRONTIER.predict(theta, dict(C=np.array([c], float)))[0])


def dense_frontier(report: dict, rows: list[dict]) -> list[str] | None:
  """One line per design (budget and size): its seeds' held-out losses, their mean, whether it
  is the budget's frontier point, the fitted power law there and the mean's residual."""
  entry = report.get('studies', {}).get('dense_baseline')
  if not entry or 'power' not in entry or not rows:
    return None
  law = power_frontier(entry)
  on = {id(r) for r in el_lib.frontier_runs(rows, 'final_eval_loss')}
  lines = [
      '| C (FLOPs) | backbone (layers, d_model) | M (FLOPs/token) | held-out loss, by seed | mean '
      '| on the frontier | fitted law | residual |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  ordered = sorted(el_lib.designs(rows), key=lambda runs: (el_lib.budget_of(runs[0]), runs[0]['M']))
  for runs in ordered:
    c = sum(r['C'] for r in runs) / len(runs)
    mean = sum(r['final_eval_loss'] for r in runs) / len(runs)
    losses = ', '.join(f'{r["final_eval_loss"]:.4f}' for r in runs)
    lines.append(
        f'| {el_lib.budget_of(runs[0]):.2g} | {_backbone(runs[0])} | {runs[0]["M"]:.3g} | {losses} '
        f'| {mean:.4f} | {"yes" if id(runs[0]) in on else ""} | {law(c):.4f} '
        f'| {mean - law(c):+.4f} |'
    )
  return lines


# --- EL studies: a row per architecture, a column per budget group ------------------------------


def el_study(study: str, report: dict, rows: list[dict]) -> list[str] | None:
  """Per budget group (budget, backbone) each member's held-out loss (its mean over seeds where it
  has several) and its EL against the dense frontier with its 95% interval; beside it, where the
  group has a dense twin, the EL divided by the twin's (the leverage at a fixed backbone)."""
  entry = report.get('studies', {}).get(study)
  if not entry or 'points' not in entry or not rows:
    return None
  table = studies_lib.EL_STUDIES[study].table
  header, label, order = table.header, table.label, table.order
  by_member = {r['member']: r for r in rows if r.get('study') == study}
  points = [p for p in entry['points'] if p['member'] in by_member]
  groups = sorted(
      {p['group'] for p in points}, key=lambda g: min(p['C'] for p in points if p['group'] == g)
  )
  backbone = {p['group']: _backbone(by_member[p['member']]) for p in points}
  budget = {p['group']: p['budget'] or p['C'] for p in points}
  cells = collections.defaultdict(dict)
  keys = {}
  for p in points:
    row = by_member[p['member']]
    text = f'{p["loss"]:.4f}: EL {_interval(p["EL"], p.get("EL_interval"))}'
    if 'EL_over_dense_twin' in p:
      text += f', {p["EL_over_dense_twin"]:.2f}'
    if p.get('n_seeds', 1) > 1:
      text += f' (mean of {p["n_seeds"]} seeds)'
    if p['extrapolated']:
      text += ' (extrapolated, not fitted)'
    cells[label(row)][p['group']] = text
    keys[label(row)] = order(row)
  lines = [
      f'| {header} | ' + ' | '.join(f'{budget[g]:.2g} FLOPs, {backbone[g]}' for g in groups) + ' |',
      '| --- |' + ' --- |' * len(groups),
  ]
  for name in sorted(cells, key=lambda n: keys[n]):
    lines.append(f'| {name} | ' + ' | '.join(cells[name].get(g, '') for g in groups) + ' |')
  twin_of_group = {t['group']: t for t in entry.get('dense_twins', [])}
  if twin_of_group:
    lines.append(
        '| dense twin | '
        + ' | '.join(
            f'{twin_of_group[g]["loss"]:.4f}: EL {twin_of_group[g]["EL"]:.2f}'
            if g in twin_of_group
            else ''
            for g in groups
        )
        + ' |'
    )
  return lines


# Every block this module writes, by name (its markers' name in the doc).
def block_names() -> tuple[str, ...]:
  return ('dense_baseline', *(n for n, s in studies_lib.EL_STUDIES.items() if s.table))


def blocks(reports: dict, results_dir: str) -> dict[str, str]:
  """{block name: its markdown, markers included} for every committed study with a table."""
  out = {}
  dense = dense_frontier(
      reports.get('dense_baseline', {}), results_rows('dense_baseline', results_dir)
  )
  if dense:
    out['dense_baseline'] = block('dense_baseline', dense)
  for study in block_names()[1:]:
    lines = el_study(study, reports.get(study, {}), results_rows(study, results_dir))
    if lines:
      out[study] = block(study, lines)
  return out
