"""The findings table of docs/replication.md, computed from the committed local results.

Each finding of arXiv 2507.17702 that the local replication tests is one row: the paper's
statement and number, ours with its 95% bootstrap interval, and a verdict by a stated rule. The
rows are computed from `results/local/<study>/report.json`; `tests/test_replication.py` refits
every committed `results.csv` and checks that the table in the docs is what the refit gives, so
the report cannot drift from its data.

  python -m fitting.replication            # print the table
  python -m fitting.replication --write    # replace the table in docs/replication.md
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, 'results', 'local')
DOC = os.path.join(ROOT, 'docs', 'replication.md')
BEGIN, END = '<!-- findings:begin -->', '<!-- findings:end -->'
N_BOOTSTRAP = 1000  # draws of every committed fit (fitting.fit --bootstrap)

REPRODUCED = 'reproduced'
DIFFERS = 'not at this scale'
INCONCLUSIVE = 'inconclusive'
PENDING = 'pending'


@dataclasses.dataclass(frozen=True)
class Row:
  finding: str
  paper: str
  ours: str
  verdict: str


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


def _interval(result: dict, param: str) -> tuple[float, float] | None:
  bounds = result.get('intervals', {}).get(param)
  if not bounds or not all(math.isfinite(b) for b in bounds):
    return None
  return float(bounds[0]), float(bounds[1])


def _estimate(result: dict, param: str) -> str:
  value = result['params'][param]
  bounds = _interval(result, param)
  return f'{value:.3f} [{bounds[0]:.3f}, {bounds[1]:.3f}]' if bounds else f'{value:.3f} (no CI)'


def interval_verdict(paper_value: float, bounds: tuple[float, float] | None) -> str:
  """Reproduced when the paper's value lies in our 95% interval; not at this scale when it lies
  outside an interval narrower than the value itself; otherwise inconclusive."""
  if bounds is None:
    return INCONCLUSIVE
  low, high = bounds
  if low <= paper_value <= high:
    return REPRODUCED
  if high - low < abs(paper_value):
    return DIFFERS
  return INCONCLUSIVE


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
    return Row(
        finding,
        paper,
        f'b = {_estimate(result, "exponent_C")}, from {entry["moe"]["n_near_optimal"]} '
        f'near-optimal runs at {entry["moe"]["n_groups"]} budgets',
        interval_verdict(paper_law.exponent, _interval(result, 'exponent_C')),
    )

  return row


def hparams_moe_versus_dense(reports: dict) -> Row:
  finding = 'MoE prefers a larger batch and a slightly lower learning rate than dense (Sec. 2.2)'
  paper = 'stated, from Fig. 2 (dense law not printed)'
  entry = _study(reports, 'hparams')
  if entry is None or not {'moe', 'dense'} <= set(entry):
    return _pending(finding, paper, 'hparams')
  C = max(entry['budgets'])
  ratio = {
      target: hparams.law_at(entry['moe'][target], C) / hparams.law_at(entry['dense'][target], C)
      for target in ('learning_rate', 'batch_tokens')
  }
  return Row(
      finding,
      paper,
      f'at C = {C:.2g} FLOPs the fitted laws give MoE/dense learning rate '
      f'x{ratio["learning_rate"]:.2f}, batch x{ratio["batch_tokens"]:.2f} (point estimates)',
      REPRODUCED if ratio['learning_rate'] < 1 < ratio['batch_tokens'] else DIFFERS,
  )


def allocation_exponent(kind: str, paper_law: laws.PowerLaw) -> Callable:
  def row(reports: dict) -> Row:
    finding = (
        f'{"MoE" if kind == "moe" else "Dense"} compute-optimal M grows as C^a (Sec. 2.3, Table 1)'
    )
    paper = f'a = {paper_law.exponent:.4f}'
    entry = _study(reports, 'allocation')
    if entry is None or kind not in entry or 'error' in entry[kind]:
      return _pending(finding, paper, 'allocation')
    result = entry[kind]['M_opt']['fit']
    return Row(
        finding,
        paper,
        f'a = {_estimate(result, "exponent_C")} over {len(entry[kind]["budgets"])} budgets',
        interval_verdict(paper_law.exponent, _interval(result, 'exponent_C')),
    )

  return row


FINDINGS = (
    hparams_exponent('learning_rate', laws.MOE_LEARNING_RATE, 'optimal learning rate'),
    hparams_exponent('batch_tokens', laws.MOE_BATCH_TOKENS, 'optimal batch (tokens)'),
    hparams_moe_versus_dense,
    allocation_exponent('moe', laws.MOE_OPTIMAL_M),
    allocation_exponent('dense', laws.DENSE_OPTIMAL_M),
    lambda r: _pending(
        'EL rises as the activation ratio A falls (Sec. 4.1.1, Eq. 10)',
        'monotonic, lowest A (0.8%) best',
        'activation_ratio',
    ),
    lambda r: _pending(
        'Loss is U-shaped in granularity G (Sec. 4.1.2, Eq. 11)',
        'interior optimum, G around 12 (8-12)',
        'granularity',
    ),
    lambda r: _pending(
        'A low non-zero shared-expert ratio is best (Sec. 4.1.3)',
        'S = 16.7% (2 of 12) at C <= 1e20',
        'shared_experts',
    ),
    lambda r: _pending(
        'A few first dense layers are about neutral in loss (Sec. 4.1.4)',
        'small effect',
        'dense_layers',
    ),
    lambda r: _pending(
        'EL rises with compute C (Sec. 4.2.1, Eq. 12)', 'a_C > 0', 'activation_ratio'
    ),
    lambda r: _pending(
        'Unified EL law coefficients (Sec. 4.2.2, Eq. 13)', 'Table 2', 'granularity'
    ),
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


def write(doc: str = DOC, reports: dict | None = None) -> None:
  with open(doc) as f:
    text = f.read()
  new = text.replace(documented_table(doc), table(reports or committed_reports()))
  with open(doc + '.tmp', 'w') as f:
    f.write(new)
  os.replace(doc + '.tmp', doc)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--write', action='store_true', help=f'replace the table in {DOC}')
  args = parser.parse_args(argv)
  if args.write:
    write()
    print(f'wrote the findings table of {DOC}')
  else:
    print(table(committed_reports()))


if __name__ == '__main__':
  main()
