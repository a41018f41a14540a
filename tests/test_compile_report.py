"""The compile table's report (experiments/compile_report.py) and the docs generated from it."""

import os

from experiments import compile as compile_lib
from experiments import compile_report
from ling_jax import config as config_lib
from ling_jax import layout
from ling_jax import spec as spec_lib

ROOT = os.path.dirname(os.path.dirname(__file__))
TABLE = os.path.join(ROOT, 'results', 'paper', 'compile.jsonl')


def _first_granularity_member():
  study, config = next(compile_report.member_configs())
  assert study == 'granularity'
  return config


def _planted_row(config, peak_over_model: float) -> dict:
  """A row for `config` on its own slice whose compiled peak is `peak_over_model` times the
  memory model of the layout the planner chooses, worked out here without the report."""
  c = compile_lib.for_slice(config, config.mesh.slice)
  config_lib.validate(c)
  chosen = layout.choose(c)
  modelled = layout.memory_bytes(spec_lib.architecture(c), c, chosen)['total']
  resolved = layout.resolve(c)
  return dict(
      name=config.name,
      study='granularity',
      key=compile_lib.shape_key(resolved),
      slice=config.mesh.slice,
      default_slice=config.mesh.slice,
      mesh=dict(zip(layout.MESH_AXES, chosen.mesh)),
      microbatches=chosen.microbatches,
      batch_size=chosen.batch_size,
      requested_batch_size=chosen.requested_batch_size,
      remat=resolved.model.remat,
      peak_bytes=peak_over_model * modelled,
  )


def test_the_memory_model_table_divides_the_compiled_peak_by_the_model_of_the_rows_layout():
  config = _first_granularity_member()
  row = _planted_row(config, 2.5)
  lines = compile_report.memory_model_lines([row])
  assert len(lines) == 3, lines  # the header, its rule and one family
  family = compile_report._layout_family(row)  # pylint: disable=protected-access
  assert lines[2].startswith(f'| {family} | 1 | 2.50, 2.50, 2.50 |'), lines[2]
  assert config.name in lines[2]


def test_the_memory_model_table_leaves_out_variants_and_rows_of_no_member():
  config = _first_granularity_member()
  variant = dict(_planted_row(config, 2.5), overrides={'moe.dispatch': 'ragged'})
  stranger = dict(_planted_row(config, 2.5), key='0' * 16)
  assert len(compile_report.memory_model_lines([variant, stranger])) == 2  # the header alone


def test_a_layout_family_names_the_axes_that_split_the_state():
  row = dict(mesh=dict(data=16, fsdp=4, expert=1, tensor=2))
  assert compile_report._layout_family(row) == 'fsdp + tensor'  # pylint: disable=protected-access
  row = dict(mesh=dict(data=64, fsdp=1, expert=1, tensor=1))
  assert compile_report._layout_family(row).startswith('data only')  # pylint: disable=protected-access


def test_the_docs_tables_are_the_report_of_the_committed_table():
  """docs/paper_scale.md ends with the report of results/paper/compile.jsonl: regenerate it
  (`python -m experiments.compile_report`) whenever the table grows."""
  with open(os.path.join(ROOT, 'docs', 'paper_scale.md')) as f:
    doc = f.read()
  start = doc.index('| study | shapes compiled')
  report = compile_report.report(compile_report.load(TABLE), compile_report.distinct_shapes())
  assert doc[start:].strip() == report.strip()
  rows = len(compile_report.load(TABLE))
  assert f'({rows} so far;' in doc or f'({rows} rows;' in doc


def test_every_row_of_the_committed_table_is_whole():
  rows = compile_report.load(TABLE)
  assert rows
  for row in rows:
    assert {'name', 'slice', 'key', 'fits'} <= set(row), row.get('name')
    if row['fits']:
      assert row['peak_bytes'] <= row['hbm_bytes'], row['name']
      assert row['estimate']['chip_hours'] > 0, row['name']
      assert set(row['mesh']) == set(layout.MESH_AXES), row['name']
