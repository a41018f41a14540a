"""The compile table (experiments/compile.py --out) summarised per study, in Markdown.

  python -m experiments.compile_report --table=results/paper/compile.jsonl

Per study, from the members compiled on their own slices: how many of the study's distinct
shapes the table holds, the slices and layouts, the peak memory per chip against HBM, the
estimated MFU range and the estimated chip-hours of the members compiled. Then the largest
members compiled on a slice one size smaller (the margin), the variants compiled with
`--config.*` flags (other dispatches, other slices), and for the EL studies how a FLOP of each
MoE member compares in time with a FLOP of the dense run nearest its budget on the same slice:
the factor by which its FLOP EL would be multiplied to give a wall-clock EL. Every time here is
the compile check's estimate, not a measurement.
"""

from __future__ import annotations

import collections
import importlib
import json
import math
import re
import statistics
import sys

from absl import app
from absl import flags
from etils import epath

from fitting import studies as studies_lib
from ling_jax import metrics

_TABLE = flags.DEFINE_string('table', 'results/paper/compile.jsonl', 'JSON-lines compile table.')
_DOCS = flags.DEFINE_string(
    'docs',
    None,
    'A Markdown file whose generated part (from its first study table to the end, and the '
    "'(N so far;' row count) to rewrite with the report, e.g. docs/paper_scale.md.",
)
_REESTIMATE = flags.DEFINE_bool(
    'reestimate',
    False,
    "Recompute every member row's estimate from its compiled facts (memory, collectives) with "
    'the current estimate (experiments/compile.py:estimate) and rewrite the table whole, '
    'before the report. Stop any job appending to the table first.',
)

GIB = 2**30
PAPER_STUDIES = (
    'granularity',
    'activation_ratio',
    'shared_experts',
    'dense_layers',
    'attention_ratio',
    'hparams',
    'allocation',
    'dense_baseline',
)
EL_STUDIES = tuple(studies_lib.EL_STUDIES)
SINGLE_RUNS = ('moe', 'ling_mini_beta', 'dense_6p1b')  # configs that are one run, not a study


def load(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# The GPU node every paper member is also compiled for (item: where one node can hold it).
GPU_NODE = 'h100x8'


def is_member(row: dict) -> bool:
  """A row of a member as its study defines it: its own slice, no --config.* flags."""
  return not row.get('overrides') and row['slice'] == row.get('default_slice', row['slice'])


def is_on_node(row: dict) -> bool:
  """A row of a member as its study defines it, compiled for the GPU node instead of its slice."""
  return not row.get('overrides') and row['slice'] == GPU_NODE != row.get('default_slice')


def member_configs():
  """(study or single run's name, config) of every paper member, as its config defines it."""
  from experiments import sweep  # pylint: disable=import-outside-toplevel

  for study in PAPER_STUDIES:
    module = importlib.import_module(f'configs.{study}')
    base = module.get_config('paper')
    for member in module.get_sweep('paper'):
      yield study, sweep.member_config(base, member)
  for run in SINGLE_RUNS:
    c = importlib.import_module(f'configs.{run}').get_config('paper')
    yield c.name, c


def _resolved(config, slice_name: str):
  """`config` compiled for `slice_name`: its layout planned and its batch as run."""
  from experiments import compile as compile_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import layout  # pylint: disable=import-outside-toplevel

  return layout.resolve(compile_lib.for_slice(config, slice_name))


def _shape(config, slice_name: str) -> tuple[str, int]:
  """A member's compile key on the slice and the optimizer steps it runs there."""
  from experiments import compile as compile_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import spec as spec_lib  # pylint: disable=import-outside-toplevel

  resolved = _resolved(config, slice_name)
  steps = config_lib.num_steps(resolved, spec_lib.architecture(resolved))
  return compile_lib.shape_key(resolved), steps


class Plans:
  """Paper members, each planned at most once per slice the report asks about.

  The report asks about every member on its own slice and on GPU_NODE (the study tables) and
  about the members that compiled a row one size smaller too (the memory-model table); planning
  is the slow part of the report, so a (member, slice) is planned when first asked and kept.
  """

  def __init__(self, members=None):
    """`members`: (study or single run's name, config) pairs; every paper member by default."""
    self.members = list(member_configs() if members is None else members)
    self._planned: dict[tuple[int, str], tuple[str, int] | Exception] = {}

  def shape(self, index: int, slice_name: str, required: bool = False) -> tuple[str, int] | None:
    """(compile key, optimizer steps) of member `index` on the slice; None when no layout of
    it fits there, or with `required` the planner's error raised."""
    from ling_jax import config as config_lib  # pylint: disable=import-outside-toplevel

    if (index, slice_name) not in self._planned:
      try:
        self._planned[index, slice_name] = _shape(self.members[index][1], slice_name)
      except config_lib.ConfigError as e:
        self._planned[index, slice_name] = e
    planned = self._planned[index, slice_name]
    if isinstance(planned, Exception):
      if required:
        raise planned
      return None
    return planned


def distinct_shapes(plans: Plans, node: bool = False) -> dict[str, dict[str, list[int]]]:
  """{study or single run's name: {compile key: the steps of each member of that shape}}, its
  members on their own slices or on GPU_NODE (members the planner cannot place there left out).
  Members share a shape when only their learning rate or seed differs."""
  out: dict[str, dict[str, list[int]]] = collections.defaultdict(dict)
  for index, (study, c) in enumerate(plans.members):
    shapes = out[study]
    planned = plans.shape(index, GPU_NODE if node else c.mesh.slice, required=not node)
    if planned is not None:
      key, steps = planned
      shapes.setdefault(key, []).append(steps)
  return dict(out)


def _range(values, spec: str) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return '-'
  low, high = min(values), max(values)
  return format(low, spec) if low == high else f'{low:{spec}}-{high:{spec}}'


def _mesh(row: dict) -> str:
  sizes = ', '.join(f'{a}={n}' for a, n in row['mesh'].items() if n > 1) or 'one chip'
  remat = ', full remat' if row.get('remat') == 'full' else ''
  return f'{sizes} x{row["microbatches"]} mb{remat}'


def _fit(rows: list[dict]) -> str:
  return f'{sum(bool(r.get("fits")) for r in rows)} of {len(rows)}'


def _member_hours(row: dict, steps: list[int]) -> float:
  """Estimated chip-hours of the members of one shape: the row's per step, at each one's steps."""
  return row['estimate']['chip_hours'] / row['estimate']['steps'] * sum(steps)


def study_lines(
    rows: list[dict], shapes: dict[str, dict[str, list[int]]], node: bool = False
) -> list[str]:
  """Per study, its members on their own slices (or, with `node`, on GPU_NODE). A shape's
  chip-hours count every member of that shape, each at its own steps."""
  picked = is_on_node if node else is_member
  hbm = ' or '.join(
      f'{b / GIB:.0f}'
      for b in sorted({r['hbm_bytes'] for r in rows if picked(r) and 'hbm_bytes' in r})
  )
  unit = 'GPU' if node else 'chip'
  lines = [
      f'| study | shapes compiled | slices | layouts | peak GiB per {unit}'
      f'{f" (HBM {hbm})" if hbm else ""} | fit '
      f'| MFU bound | est. {unit}-hours of the members compiled that fit |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for study in shapes:
    # By shape, not by the study a row was compiled under: studies share shapes (the paper
    # MoE is a member of the granularity study).
    group = [r for r in rows if picked(r) and r.get('key') in shapes.get(study, ())]
    done = [r for r in group if r.get('estimate')]
    compiled = {r['key'] for r in group}
    slices = collections.Counter(r['slice'] for r in group)
    layouts = collections.Counter(_mesh(r) for r in done).most_common()
    shown = '; '.join(m for m, _ in layouts[:3]) + (
        f'; {len(layouts) - 3} more' if len(layouts) > 3 else ''
    )
    if not shapes.get(study):
      lines.append(f'| {study} | no layout the planner can place | - | - | - | - | - | - |')
      continue
    fitting = [r for r in done if r['fits']]
    mfu = _range([100 * r['estimate']['mfu'] for r in done], '.0f')
    lines.append(
        f'| {study} | {len(compiled)} of {len(shapes.get(study, ()))} | '
        f'{", ".join(f"{s} ({n})" for s, n in sorted(slices.items())) or "-"} | {shown or "-"} | '
        f'{_range([r["peak_bytes"] / GIB for r in done], ".1f")} | '
        f'{_fit(group) if group else "-"} | '
        f'{mfu + "%" if done else "-"} | '
        f'{sum(_member_hours(r, shapes[study][r["key"]]) for r in fitting):.4g} |'
    )
  return lines


def other_lines(rows: list[dict]) -> list[str]:
  """Rows off a member's own design: another slice (the margin, a GPU node) or --config.* flags."""
  lines = [
      '| run | slice (own) | flags | layout | peak GiB per chip / HBM | fits | MFU bound '
      '| collectives GiB per step |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for r in rows:
    if is_member(r) or is_on_node(r):
      continue
    flags_text = ', '.join(f'{k}={v}' for k, v in sorted(r.get('overrides', {}).items())) or '-'
    if not r.get('estimate'):
      lines.append(
          f'| {r["name"]} | {r["slice"]} ({r.get("default_slice", "?")}) | {flags_text} | - | - | '
          f'no: {r.get("error", "")[:80]} | - | - |'
      )
      continue
    sent = sum(k['bytes_per_chip'] for k in r['collectives'].values()) / GIB
    lines.append(
        f'| {r["name"]} | {r["slice"]} ({r.get("default_slice", "?")}) | {flags_text} | '
        f'{_mesh(r)} | {r["peak_bytes"] / GIB:.1f} / {r["hbm_bytes"] / GIB:.0f} | '
        f'{"yes" if r["fits"] else "NO"} | {100 * r["estimate"]["mfu"]:.0f}% | {sent:.1f} |'
    )
  return lines


def _dense_time_per_flop(rows: list[dict], slice_name: str, budget: float) -> float | None:
  dense = [
      r
      for r in rows
      if (is_member(r) or is_on_node(r))
      and r.get('fits')
      and r['kind'] == 'dense'
      and r['slice'] == slice_name
  ]
  if not dense:
    return None
  nearest = min(dense, key=lambda r: abs(math.log(r['C'] / budget)))
  return nearest['estimate']['seconds_per_flop_of_C']


def wall_clock_lines(rows: list[dict]) -> list[str]:
  """Per EL study and slice: (dense seconds per FLOP) / (MoE seconds per FLOP) over its MoE
  members, each against the dense member nearest its budget on its slice."""
  lines = [
      '| study | slice | MoE members | dense time per FLOP / MoE time per FLOP: min, median, max |',
      '| --- | --- | --- | --- |',
  ]
  for study in EL_STUDIES:
    ratios: dict[str, list[float]] = {}
    for r in rows:
      if r['study'] != study or r['kind'] != 'moe' or not r.get('fits'):
        continue
      if not (is_member(r) or is_on_node(r)):
        continue
      dense = _dense_time_per_flop(rows, r['slice'], r['C'])
      if dense:
        ratios.setdefault(r['slice'], []).append(dense / r['estimate']['seconds_per_flop_of_C'])
    for slice_name, values in sorted(ratios.items()):
      lines.append(f'| {study} | {slice_name} | {len(values)} | {_spread(values)} |')
  return lines


def _layout_family(row: dict) -> str:
  split = [axis for axis in ('fsdp', 'expert', 'tensor') if row['mesh'].get(axis, 1) > 1]
  return f"{row['chip']}: " + (' + '.join(split) if split else 'data only (replicated state)')


def _modelled_memory(config, row: dict) -> dict[str, float]:
  """`layout.memory_bytes` of the row's layout, in bytes."""
  from ling_jax import layout  # pylint: disable=import-outside-toplevel
  from ling_jax import spec as spec_lib  # pylint: disable=import-outside-toplevel

  chosen = layout.Layout(
      mesh=tuple(row['mesh'][axis] for axis in layout.MESH_AXES),
      microbatches=row['microbatches'],
      batch_size=row['batch_size'],
      requested_batch_size=row['requested_batch_size'],
      remat=row['remat'],
  )
  return layout.memory_bytes(spec_lib.architecture(config), config, chosen)


def memory_model_lines(rows: list[dict], plans: Plans) -> list[str]:
  """The planner's memory model against the compiled peak, per chip and layout family, over
  every member row compiled on its own slice, one size smaller or on GPU_NODE."""
  from experiments import compile as compile_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import hardware  # pylint: disable=import-outside-toplevel

  by_key = {
      (r['key'], r['slice']): r for r in rows if r.get('peak_bytes') and not r.get('overrides')
  }
  ratios: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
  # A row is found through the member that compiled it: only those members are planned.
  named = {r['name'] for r in by_key.values()}
  seen = set()
  for index, (_, c) in enumerate(plans.members):
    if c.name not in named:
      continue
    smaller = hardware.parse(c.mesh.slice).one_size_smaller()
    for slice_name in [c.mesh.slice, GPU_NODE] + ([smaller.name] if smaller else []):
      planned = plans.shape(index, slice_name)
      if planned is None:  # no layout fits the slice
        continue
      key, _ = planned
      row = by_key.get((key, slice_name))
      if row is None or (key, slice_name) in seen:
        continue
      seen.add((key, slice_name))
      modelled = _modelled_memory(compile_lib.for_slice(c, slice_name), row)
      label = (
          f'{c.name} on {slice_name}: {row["peak_bytes"] / GIB:.1f} GiB, '
          f'model {modelled["total"] / GIB:.1f}'
      )
      # The train step's arguments are the parameters and Adam's moments; its temporaries hold
      # everything else the model counts (gradients, activations, transients).
      parts = (
          row['memory']['argument_bytes'] / modelled['arguments'],
          row['memory']['temp_bytes'] / (modelled['total'] - modelled['arguments']),
      )
      ratios[_layout_family(row)].append((row['peak_bytes'] / modelled['total'], label, parts))
  lines = [
      '| layout family | rows | compiled peak / model: min, median, max | arguments / model: '
      'min, max | temporaries / model: min, median, max | highest peak / model |',
      '| --- | --- | --- | --- | --- | --- |',
  ]
  for family, values in sorted(ratios.items(), key=lambda kv: -len(kv[1])):
    values.sort(key=lambda v: v[0])
    arguments = [p[0] for _, _, p in values]
    temporaries = [p[1] for _, _, p in values]
    lines.append(
        f'| {family} | {len(values)} | {_spread(v for v, _, _ in values)} | '
        f'{min(arguments):.2f}, {max(arguments):.2f} | {_spread(temporaries)} | '
        f'{values[-1][1]} |'
    )
  return lines


def _spread(values) -> str:
  values = sorted(values)
  return f'{values[0]:.2f}, {statistics.median(values):.2f}, {values[-1]:.2f}'


def _row_config(row: dict, members: dict):
  """The resolved config a row was compiled from (its member, --config.* flags and slice), or
  None when no paper member gives the row's shape any more."""
  from experiments import compile as compile_lib  # pylint: disable=import-outside-toplevel

  config = members.get(row['name'])
  if config is None:
    return None
  if row.get('overrides'):
    config = config.copy_and_resolve_references()
    config.unlock()
    config.update_from_flattened_dict(row['overrides'])
    config.lock()
  resolved = _resolved(config, row['slice'])
  return resolved if compile_lib.shape_key(resolved) == row['key'] else None


def reestimate(path: str) -> tuple[int, list[str]]:
  """Rewrites the table at `path` whole with every row's estimate recomputed: (rows
  re-estimated, names of the rows whose member no longer gives their shape, left as they were)."""
  from experiments import compile as compile_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import hardware  # pylint: disable=import-outside-toplevel
  from ling_jax import spec as spec_lib  # pylint: disable=import-outside-toplevel

  rows = load(path)
  members = {c.name: c for _, c in member_configs()}
  done, stale = 0, []
  for row in rows:
    if not row.get('estimate'):
      continue
    config = _row_config(row, members)
    if config is None:
      stale.append(f'{row["name"]} on {row["slice"]}')
      continue
    row['estimate'] = compile_lib.estimate(
        config, spec_lib.architecture(config), hardware.parse(row['slice']), row
    )
    done += 1
  text = ''.join(json.dumps(row, sort_keys=True) + '\n' for row in rows)
  metrics.write_whole(epath.Path(path), text)
  return done, stale


def report(rows: list[dict], plans: Plans) -> str:
  return '\n'.join(
      study_lines(rows, distinct_shapes(plans))
      + [
          '',
          f'The same members compiled for one {GPU_NODE} node (8 GPUs; estimates):',
          '',
      ]
      + study_lines(rows, distinct_shapes(plans, node=True), node=True)
      + [
          '',
          "Runs off a member's own design: another slice (one size smaller: the margin) or "
          '`--config.*` flags (another dispatch):',
          '',
      ]
      + other_lines(rows)
      + [
          '',
          'Time per FLOP, each MoE member against the dense member nearest its budget on '
          'its slice (the factor that turns a FLOP EL into a wall-clock EL; estimates):',
          '',
      ]
      + wall_clock_lines(rows)
      + [
          '',
          "The planner's memory model (`layout.memory_bytes`) against the compiled peak, "
          f'per chip and layout family, over the members compiled on their own slice, one size '
          f'smaller or on {GPU_NODE}:',
          '',
      ]
      + memory_model_lines(rows, plans)
  )


GENERATED_FROM = '| study | shapes compiled'  # where a doc's generated part begins


def with_report(doc: str, report_text: str, rows: int) -> str:
  """`doc` with its generated part replaced by `report_text` and its row count set to `rows`."""
  if GENERATED_FROM not in doc:
    raise ValueError(f'the doc has no generated part: no line starts with {GENERATED_FROM!r}')
  doc = doc[: doc.index(GENERATED_FROM)] + report_text.strip() + '\n'
  return re.sub(r'\((\d+) so far;', f'({rows} so far;', doc, count=1)


def main(argv):
  del argv
  if _REESTIMATE.value:
    done, stale = reestimate(_TABLE.value)
    print(
        f'{done} rows re-estimated; left as they were (no member gives their shape): '
        f'{", ".join(stale) or "none"}',
        file=sys.stderr,
    )
  rows = load(_TABLE.value)
  text = report(rows, Plans())
  if _DOCS.value:
    path = epath.Path(_DOCS.value)
    metrics.write_whole(path, with_report(path.read_text(), text, len(rows)))
  print(text)


if __name__ == '__main__':
  app.run(main)
