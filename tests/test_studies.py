"""Study configs: every paper config validates, groups are iso-FLOP, designs follow the laws,
and a smoke study runs end to end (sweep, skip, resume, failure, collect)."""

import collections
import csv
import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys

import pytest

from configs import common
from configs import paper_tables as tables
from experiments import collect
from experiments import listing
from experiments import member as member_lib
from experiments import protocol
from experiments import sweep
from fitting import laws
from fitting import model_design as design_lib
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import metrics as metrics_lib

STUDIES = [*protocol.LOCAL_STUDIES, 'attention_ratio']
SINGLE_RUNS = ['ling_mini_beta', 'dense_6p1b', 'moe', 'dense']
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def study(name, scale):
  module = importlib.import_module(f'configs.{name}')
  base = module.get_config(scale)
  if scale == 'paper':
    base.data.paths = ('gs://bucket/tokens.bin',)
  return base, sweep.load_members(base)


@pytest.mark.parametrize('scale', common.SCALES)
@pytest.mark.parametrize('name', STUDIES)
def test_every_member_validates_and_names_are_unique(name, scale):
  base, members = study(name, scale)
  validated = sweep.validate_all(base, members)
  assert len(validated) == len(members) > 1
  assert len({m.name for m in members}) == len(members)


@pytest.mark.parametrize('name', SINGLE_RUNS)
@pytest.mark.parametrize('scale', common.SCALES)
def test_single_run_configs_validate(name, scale):
  base, members = study(name, scale)
  assert members is None
  config_lib.validate(base)


def group_ms(name, scale):
  base, members = study(name, scale)
  by_group = collections.defaultdict(list)
  for member, _, arch in sweep.validate_all(base, members):
    by_group[member.group].append(flops.paper_flops_per_token(arch))
  return by_group


@pytest.mark.parametrize('scale', ['paper', 'local'])
@pytest.mark.parametrize(
    'name,tolerance',
    [
        ('activation_ratio', 0),
        ('granularity', 2.5e-3),
        ('shared_experts', 0),
        ('attention_ratio', 5e-3),
    ],
)
def test_ablation_groups_are_iso_flop(name, tolerance, scale):
  if name == 'attention_ratio' and scale == 'local':
    tolerance = 1.5e-2  # whole expert widths at d_model 24-48 cannot match M closer
  groups = group_ms(name, scale)
  assert len(groups) == len(common.groups(scale)) >= 3  # Eq. 12 needs 3 budgets
  for ms in groups.values():
    assert max(ms) / min(ms) - 1 <= tolerance


def test_paper_granularity_rows_are_table_8():
  _, members = study('granularity', 'paper')
  widths = [m.overrides['model.d_expert'] for m in members]
  assert widths == [w for _, row in tables.TABLE_8 for w in row]


def test_dense_layer_study_is_iso_flop_where_the_text_says_so():
  local = group_ms('dense_layers', 'local')
  assert all(max(ms) == min(ms) for ms in local.values())
  # As printed (d_ffn = 4 d_model), more dense layers mean more FLOPs per token.
  paper = group_ms('dense_layers', 'paper')
  assert all(ms == sorted(ms) and ms[-1] > ms[0] for ms in list(paper.values())[1:])


@pytest.mark.parametrize('index', range(6))
def test_design_returns_the_papers_backbone_at_its_compute_optimal_budget(index):
  shape = design_lib.MoEShape(64, 2, 1, granularity=2.0)
  backbone = design_lib.PAPER_BACKBONES[index]
  m = flops.paper_flops_per_token(
      design_lib.architecture(design_lib.model_fields(backbone, shape), 4096, 126_464)
  )
  # Hand inversion of Table 1's MoE law: C_opt = (M / 0.1915) ** (1 / 0.5095).
  c_opt = (m / 0.1915) ** (1 / 0.5095)
  d = design_lib.design(c_opt, shape)
  assert (d.model['n_layers'], d.model['d_model']) == backbone[:2]
  assert d.M == pytest.approx(m)
  # "over three times its optimal number of tokens" (paper 4.0): Max FLOPs / C_opt.
  assert 2.9 < tables.GROUP_MAX_FLOPS[index] / c_opt < 4.8
  assert d.learning_rate == pytest.approx(1.1576 * c_opt**-0.1529)
  assert any('Eq. 3' in r for r in d.reasons) and any('Table 1' in r for r in d.reasons)


def test_design_reports_the_papers_hyperparameters_differ_from_the_law():
  for budget, lr, batch in zip(tables.GROUP_MAX_FLOPS, tables.GROUP_LR, tables.GROUP_BATCH):
    gap = design_lib.hyperparameter_gap(budget, lr, batch)
    assert gap['law_learning_rate'] == pytest.approx(1.1576 * budget**-0.1529)
    assert 0.8 < gap['learning_rate_ratio'] < 0.92  # printed lr below law(C_max)
    assert 1.2 < gap['batch_ratio'] < 1.3  # printed batch above law(C_max)


def test_design_follows_the_allocation_law_beyond_the_papers_backbones():
  d = design_lib.design(1e22, design_lib.MoEShape(384, 12, 1, granularity=12))
  assert d.M == pytest.approx(laws.MOE_OPTIMAL_M(1e22), rel=0.05)
  assert d.model['d_model'] % d.model['n_heads'] == 0
  assert d.batch_sequences == round(0.0694 * 1e22**0.3644 / 4096)


def test_invalid_designs_name_the_field():
  with pytest.raises(design_lib.DesignError, match='model.n_heads=5'):
    design_lib.model_fields((4, 128, 5, 1), design_lib.MoEShape())
  with pytest.raises(design_lib.DesignError, match='model.d_expert'):
    design_lib.model_fields((4, 64, 2, 1), design_lib.MoEShape(8, 2, 1, granularity=256))
  with pytest.raises(design_lib.DesignError, match='model.d_ffn'):
    design_lib.model_fields((4, 64, 2, 1), design_lib.MoEShape(dense_ffn_ratio=2.7))


def test_smoke_study_end_to_end(tmp_path):
  from ling_jax import train as train_lib

  base, members = study('granularity', 'smoke')
  members = members[:3] + [
      member_lib.Member(
          'diverges', dict(members[0].overrides, **{'train.learning_rate': 1e30}), 'g0'
      )
  ]
  workdir = str(tmp_path)
  # An interrupted member: stopped after 2 of its 4 steps.
  interrupted = members[1]
  train_lib.train(
      sweep.member_config(base, interrupted),
      str(sweep.member_dir(workdir, base, interrupted)),
      stop_at_step=2,
  )
  assert sweep.status(sweep.member_dir(workdir, base, interrupted)) == 'interrupted'

  outcome = sweep.run(base, members, workdir)
  assert outcome == {
      members[0].name: 'finished',
      members[1].name: 'finished',
      members[2].name: 'finished',
      'diverges': 'failed',
  }
  failure = json.loads(
      (sweep.member_dir(workdir, base, members[3]) / sweep.FAILURE_FILE).read_text()
  )
  assert 'FloatingPointError' in failure['reason']
  records = metrics_lib.read_metrics(str(sweep.member_dir(workdir, base, interrupted)))
  assert [r['step'] for r in records if r['kind'] == 'train'] == [1, 2, 3, 4]

  # A second pass skips what is finished or failed.
  calls = []
  again = sweep.run(base, members, workdir, train_fn=lambda c, d: calls.append(d))
  assert calls == [] and again['diverges'] == 'failed'
  # A study whose design changed under finished runs of the same names: refused before anything
  # trains, listed as an earlier design, and the old run's files stay.
  redesigned = [
      dataclasses.replace(m, overrides={**m.overrides, 'train.learning_rate': 3e-3})
      if i == 1
      else m
      for i, m in enumerate(members)
  ]
  with pytest.raises(config_lib.ConfigError, match=rf'{members[1].name}: train.learning_rate'):
    sweep.run(base, redesigned, workdir, train_fn=lambda c, d: calls.append(d))
  assert calls == []
  assert sweep.status(sweep.member_dir(workdir, base, members[1])) == 'finished'
  assert listing.table(base, redesigned, workdir).count('an earlier design') == 1

  table = collect.rows(workdir)
  assert len(table) == 4
  finished = [r for r in table if r['status'] == 'finished']
  assert len(finished) == 3
  for row in finished:
    assert row['C'] == row['M'] * row['D'] and math.isfinite(row['final_train_loss'])
    assert row['study'] == 'granularity' and row['group'] in ('g0', 'g1')
  assert {r['G'] for r in finished} == {2.0, 4.0, 6.0}
  for row in finished:  # d_expert = 2 d_model / G, resolved by the run and read from its summary
    summary = json.loads(
        (
            sweep.member_dir(workdir, base, members[0]).parent / row['member'] / 'summary.json'
        ).read_text()
    )
    assert summary['architecture']['d_expert'] == row['d_expert'] == 2 * row['d_model'] / row['G']
  assert collect.rows(workdir, ['dense_baseline', 'granularity']) == table
  assert collect.rows(workdir, ['dense_baseline']) == []
  # Rows of an earlier table stand for members the workdir holds no run of; a run replaces its
  # row; rows of studies not asked for stay out.
  stale = dict(finished[0], final_eval_loss=99.0)
  dense = dict(finished[0], study='dense_baseline', member='dense_C1e+11')
  other = dict(finished[0], study='shared_experts', member='g0_S0')
  merged = collect.with_base(table, [stale, dense, other], ['dense_baseline', 'granularity'])
  assert merged == [dense] + table
  assert len(collect.with_base(table, [stale, dense, other])) == len(table) + 2
  assert all(r['elapsed_s'] > 0 for r in finished)  # the member's whole cost, for --list
  listed = listing.table(base, members, workdir)
  assert listed.count('finished in ') == 3 and 'finished members: predicted' in listed
  out = tmp_path / 'results' / 'granularity'  # a folder that does not exist yet
  collect.write(table, str(out / 'results'))
  with open(out / 'results.csv') as f:
    assert len(list(csv.DictReader(f))) == 4
  assert len((out / 'results.jsonl').read_text().splitlines()) == 4


def test_cli_lists_members_and_runs_one_by_index(tmp_path):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1')
  run = lambda *a: subprocess.run(
      [sys.executable, '-m', 'experiments.run', *a],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  listed = run('--config=configs/activation_ratio.py:smoke', '--list')
  assert listed.returncode == 0 and 'g1_E8' in listed.stdout and '6 members' in listed.stdout
  # A flag on a field the members' design sets would be lost under it: refused, named.
  clash = run(
      '--config=configs/activation_ratio.py:smoke', '--config.train.learning_rate=0.5', '--list'
  )
  assert clash.returncode != 0 and '--config.train.learning_rate: 6 member(s)' in clash.stderr
  seeded = run('--config=configs/activation_ratio.py:smoke', '--config.train.seed=3', '--list')
  assert seeded.returncode == 0  # a field no member sets is the flag's to set
  one = run(
      '--config=configs/activation_ratio.py:smoke', '--sweep_index=5', f'--workdir={tmp_path}'
  )
  assert one.returncode == 0, one.stderr
  assert (tmp_path / 'activation_ratio' / 'g1_E8' / 'summary.json').exists()
  assert not (tmp_path / 'activation_ratio' / 'g0_E2').exists()
  bad = run(
      '--config=configs/activation_ratio.py:smoke', '--sweep_index=9', f'--workdir={tmp_path}'
  )
  assert bad.returncode != 0 and '--sweep_index=9' in bad.stderr
  gathered = subprocess.run(
      [sys.executable, '-m', 'experiments.collect', f'--workdir={tmp_path}'],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert gathered.returncode == 0 and (tmp_path / 'results.csv').exists()
  # The table as a base of a second collect: the committed rows of a lost workdir come back.
  (tmp_path / 'kept').mkdir()
  (tmp_path / 'results.csv').rename(tmp_path / 'kept' / 'results.csv')
  empty = tmp_path / 'elsewhere'
  empty.mkdir()
  again = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.collect',
          f'--workdir={empty}',
          f'--base={tmp_path / "kept" / "results.csv"}',
          f'--out={tmp_path / "merged"}',
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert again.returncode == 0, again.stderr
  with open(tmp_path / 'merged.csv') as f:
    assert [r['member'] for r in csv.DictReader(f)] == ['g1_E8']


def test_seed_members_repeat_one_design_per_arm_with_their_own_seeds():
  base, members = study('seeds', 'smoke')
  for kind in ('moe', 'dense'):
    same = [m for m in members if m.name.startswith(f'{kind}_seed')]
    assert len(same) == 2
    seeds = [(m.overrides['train.seed'], m.overrides['data.seed']) for m in same]
    assert seeds == [(0, 0), (1, 1)]
    strip = lambda o: {k: v for k, v in o.items() if not k.endswith('.seed')}
    assert strip(same[0].overrides) == strip(same[1].overrides)
  assert sweep.validate_all(base, members)
  with pytest.raises(config_lib.ConfigError, match='no paper scale'):
    study('seeds', 'paper')
