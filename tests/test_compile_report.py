"""The compile table's report (experiments/compile_report.py) and the docs generated from it."""

import json
import os

import pytest

from experiments import compile as compile_lib
from experiments import compile_report
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import hardware
from ling_jax import layout
from ling_jax import spec as spec_lib

ROOT = os.path.dirname(os.path.dirname(__file__))
TABLE = os.path.join(ROOT, 'results', 'paper', 'compile.jsonl')


def _first_granularity_member():
  study, config = next(compile_report.member_configs())
  assert study == 'granularity'
  return config


def _plans_of(config) -> compile_report.Plans:
  return compile_report.Plans([('granularity', config)])


def _planted_row(
    config, peak_over_model: float, arguments_over_model: float = 1.0, temps_over_model: float = 1.0
) -> dict:
  """A row for `config` on its own slice whose compiled peak, arguments and temporaries are the
  given multiples of the memory model of the layout the planner chooses (its total, its
  parameters and moments, and the rest), worked out here without the report."""
  c = compile_lib.for_slice(config, config.mesh.slice)
  config_lib.validate(c)
  chosen = layout.choose(c)
  model = layout.memory_bytes(spec_lib.architecture(c), c, chosen)
  modelled = model['total']
  # The step's arguments counted from the model's state, not read from its `arguments`: the
  # parameters and Adam's two moments, three of the state's four parameter-sized copies.
  arguments = 3 / 4 * model['state']
  resolved = layout.resolve(c)
  return dict(
      name=config.name,
      study='granularity',
      key=compile_lib.shape_key(resolved),
      slice=config.mesh.slice,
      default_slice=config.mesh.slice,
      chip=hardware.parse(config.mesh.slice).chip.name,
      mesh=dict(zip(layout.MESH_AXES, chosen.mesh)),
      microbatches=chosen.microbatches,
      batch_size=chosen.batch_size,
      requested_batch_size=chosen.requested_batch_size,
      remat=resolved.model.remat,
      peak_bytes=peak_over_model * modelled,
      memory=dict(
          argument_bytes=arguments_over_model * arguments,
          temp_bytes=temps_over_model * (modelled - arguments),
      ),
  )


def test_the_memory_model_table_divides_the_compiled_peak_by_the_model_of_the_rows_layout():
  config = _first_granularity_member()
  row = _planted_row(config, 2.5, arguments_over_model=1.25, temps_over_model=0.4)
  lines = compile_report.memory_model_lines([row], _plans_of(config))
  assert len(lines) == 3, lines  # the header, its rule and one family
  family = compile_report._layout_family(row)  # pylint: disable=protected-access
  assert lines[2].startswith(f'| {family} | 1 | 2.50, 2.50, 2.50 | 1.25, 1.25 | 0.40, 0.40, 0.40 |')
  assert config.name in lines[2]


def test_the_report_plans_each_member_once_per_slice(monkeypatch):
  """The study tables and the memory-model table share one planning pass: the member is planned
  on its own slice, on the GPU node and one size smaller, once each."""
  config = _first_granularity_member()
  planned = []
  shape = compile_report._shape  # pylint: disable=protected-access

  def counted(c, slice_name):
    planned.append(slice_name)
    return shape(c, slice_name)

  monkeypatch.setattr(compile_report, '_shape', counted)
  compile_report.report([dict(_planted_row(config, 1.0), kind='moe')], _plans_of(config))
  smaller = hardware.parse(config.mesh.slice).one_size_smaller().name
  assert sorted(planned) == sorted([config.mesh.slice, compile_report.GPU_NODE, smaller])


def test_the_memory_model_table_leaves_out_variants_and_rows_of_no_member():
  config = _first_granularity_member()
  variant = dict(_planted_row(config, 2.5), overrides={'moe.dispatch': 'ragged'})
  stranger = dict(_planted_row(config, 2.5), key='0' * 16)
  lines = compile_report.memory_model_lines([variant, stranger], _plans_of(config))
  assert len(lines) == 2, lines  # the header alone


def test_a_layout_family_names_the_axes_that_split_the_state():
  family = compile_report._layout_family  # pylint: disable=protected-access
  assert family(dict(chip='v5p', mesh=dict(data=16, fsdp=4, expert=1, tensor=2))) == (
      'v5p: fsdp + tensor'
  )
  assert family(dict(chip='h100', mesh=dict(data=8, fsdp=1, expert=1, tensor=1))) == (
      'h100: data only (replicated state)'
  )


def test_a_studys_chip_hours_count_every_member_of_a_shape_at_its_own_steps():
  """Members that differ only in learning rate share one compiled shape; each is a run."""
  config = _first_granularity_member()
  row = dict(
      _planted_row(config, 0.5),
      fits=True,
      estimate=dict(chip_hours=10.0, steps=100, mfu=0.5),
  )
  shapes = {'granularity': {row['key']: [100, 300], 'f' * 16: [50]}}
  line = compile_report.study_lines([row], shapes)[2]
  cells = [cell.strip() for cell in line.strip('|').split('|')]
  assert cells[1] == '1 of 2'  # one of the study's two shapes compiled
  assert cells[-1] == '40'  # 10 chip-hours per 100 steps, for 100 + 300 steps
  node_line = compile_report.study_lines([row], {'granularity': {}}, node=True)[2]
  assert 'no layout' in node_line


def test_the_docs_tables_are_the_report_of_the_committed_table():
  with open(os.path.join(ROOT, 'docs', 'paper_scale.md')) as f:
    doc = f.read()
  rows = compile_report.load(TABLE)
  report = compile_report.report(rows, compile_report.Plans())
  assert compile_report.with_report(doc, report, len(rows)) == doc, (
      'docs/paper_scale.md is not the report of results/paper/compile.jsonl: regenerate it with '
      'python -m experiments.compile_report --docs=docs/paper_scale.md'
  )


def test_with_report_replaces_the_generated_part_and_the_row_count_only():
  doc = 'Intro (7 so far; JAX).\n\n| study | shapes compiled |\n| old |\n'
  assert compile_report.with_report(doc, '| study | shapes compiled |\n| new |', 9) == (
      'Intro (9 so far; JAX).\n\n| study | shapes compiled |\n| new |\n'
  )
  with pytest.raises(ValueError, match='no generated part'):
    compile_report.with_report('no tables here', '| study | shapes compiled |', 1)


def test_every_row_of_the_committed_table_is_whole():
  rows = compile_report.load(TABLE)
  assert rows
  for row in rows:
    assert {'name', 'slice', 'key', 'fits'} <= set(row), row.get('name')
    if row['fits']:
      assert row['peak_bytes'] <= row['hbm_bytes'], row['name']
      assert row['estimate']['chip_hours'] > 0, row['name']
      assert set(row['mesh']) == set(layout.MESH_AXES), row['name']


def _committed_row(name: str, slice_name: str, flagged: bool = False) -> dict:
  for row in compile_report.load(TABLE):
    if row['name'] == name and row['slice'] == slice_name and bool(row.get('overrides')) == flagged:
      return row
  raise AssertionError(f'{name} on {slice_name} is not in the committed table')


def test_reestimate_recomputes_member_rows_from_their_compiled_facts_and_keeps_the_rest(tmp_path):
  remat = dict(_committed_row('granularity/g5_G16', 'v5p-128'), estimate={'mfu': 5.0})
  flagged = dict(_committed_row('moe_paper', 'v5p-128', flagged=True), estimate={'mfu': 5.0})
  stale = dict(remat, key='0' * 16, name='granularity/g5_G16')
  table = tmp_path / 'compile.jsonl'
  table.write_text(''.join(json.dumps(r) + '\n' for r in (remat, flagged, stale)))

  done, left = compile_report.reestimate(str(table))

  assert (done, left) == (2, ['granularity/g5_G16 on v5p-128'])
  rows = compile_report.load(str(table))
  assert rows[2] == stale  # untouched, as it was
  assert rows[1]['estimate']['mfu'] < 1
  # The full-remat member by hand: the model's FLOPs per chip at peak, run 4/3 times.
  assert remat['remat'] == 'full'
  config = next(c for _, c in compile_report.member_configs() if c.name == remat['name'])
  arch = spec_lib.architecture(config)
  slice_ = hardware.parse('v5p-128')
  tokens = remat['batch_size'] * config.train.seq_len
  model_s = flops.hardware_flops_per_token(arch) * tokens / slice_.chips
  model_s /= slice_.chip.peak_bf16_flops_per_s
  got = rows[0]['estimate']
  assert got['compute_s'] == pytest.approx(4 / 3 * model_s)
  assert got['step_s'] == pytest.approx(max(got['compute_s'], got['hbm_s']) + got['collective_s'])
  assert got['mfu'] == pytest.approx(model_s / got['step_s'])
