"""The committed compile table (experiments/compile.py --out) summarised per study, in Markdown.

  python -m experiments.compile_report --table=results/paper/compile.jsonl

Per study: the members compiled and their shapes, the slice, the layouts chosen, the peak memory
per chip against HBM, the estimated MFU range and the estimated chip-hours of the whole study;
the largest member on the slice one size smaller where that was compiled; and, for the EL
studies, how a FLOP of each MoE member compares in time with a FLOP of the dense run nearest its
budget on the same slice (the wall-clock factor by which its FLOP EL would be multiplied). Every
time here is the compile check's estimate, not a measurement.
"""

from __future__ import annotations

import json
import math
import statistics

from absl import app
from absl import flags

_TABLE = flags.DEFINE_string('table', 'results/paper/compile.jsonl', 'JSON-lines compile table.')

GIB = 2**30
EL_STUDIES = ('activation_ratio', 'granularity', 'shared_experts', 'dense_layers')
DENSE_SOURCES = ('dense_baseline', 'allocation', 'hparams')


def load(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _range(values, spec: str) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return '-'
  low, high = min(values), max(values)
  return format(low, spec) if low == high else f'{low:{spec}}-{high:{spec}}'


def _mesh(row: dict) -> str:
  sizes = ', '.join(f'{a}={n}' for a, n in row['mesh'].items() if n > 1) or 'one chip'
  return f'{sizes} x{row["microbatches"]} mb'


def _dense_time_per_flop(rows: list[dict], slice_name: str, budget: float) -> float | None:
  dense = [
      r for r in rows if r.get('estimate') and r['kind'] == 'dense' and r['slice'] == slice_name
  ]
  if not dense:
    return None
  nearest = min(dense, key=lambda r: abs(math.log(r['C'] / budget)))
  return nearest['estimate']['seconds_per_flop_of_C']


def study_lines(rows: list[dict]) -> list[str]:
  """The per-study table: one line per study and default slice."""
  lines = [
      '| study | slice | members | layouts | peak GiB per chip / HBM | fit | est. MFU '
      '| est. chip-hours |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  by_study: dict[tuple[str, str], list[dict]] = {}
  for row in rows:
    by_study.setdefault((row['study'], row['slice']), []).append(row)
  for (study, slice_name), group in sorted(by_study.items()):
    done = [r for r in group if r.get('estimate')]
    layouts = sorted({_mesh(r) for r in done})
    fits = sum(bool(r.get('fits')) for r in group)
    lines.append(
        f'| {study} | {slice_name} | {len(group)} | {"; ".join(layouts) or "-"} | '
        f'{_range([r["peak_bytes"] / GIB for r in done], ".1f")} / '
        f'{group[0]["hbm_bytes"] / GIB:.0f} | {fits} of {len(group)} | '
        f'{_range([100 * r["estimate"]["mfu"] for r in done], ".0f")}% | '
        f'{sum(r["estimate"]["chip_hours"] for r in done):.3g} |'
    )
  return lines


def wall_clock_lines(rows: list[dict]) -> list[str]:
  """Per EL study: the ratio (dense seconds per FLOP) / (MoE seconds per FLOP) over its MoE
  members, each against the dense run nearest its budget on its slice."""
  lines = [
      '| study | slice | MoE members '
      '| dense time per FLOP / MoE time per FLOP (min, median, max) |',
      '| --- | --- | --- | --- |',
  ]
  for study in EL_STUDIES:
    ratios: dict[str, list[float]] = {}
    for row in rows:
      if row['study'] != study or row['kind'] != 'moe' or not row.get('estimate'):
        continue
      dense = _dense_time_per_flop(rows, row['slice'], row['C'])
      if dense:
        ratios.setdefault(row['slice'], []).append(dense / row['estimate']['seconds_per_flop_of_C'])
    for slice_name, values in sorted(ratios.items()):
      lines.append(
          f'| {study} | {slice_name} | {len(values)} | {min(values):.2f}, '
          f'{statistics.median(values):.2f}, {max(values):.2f} |'
      )
  return lines


def report(rows: list[dict]) -> str:
  return '\n'.join(study_lines(rows) + [''] + wall_clock_lines(rows))


def main(argv):
  del argv
  print(report(load(_TABLE.value)))


if __name__ == '__main__':
  app.run(main)
