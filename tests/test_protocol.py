"""The local protocol (docs/replication.md): budgets, steps, one eval set, provisional designs."""

import collections
import dataclasses
import importlib
import math
import re

import pytest

from configs import allocation
from configs import common
from configs import shared_experts
from experiments import member as member_lib
from experiments import protocol
from experiments import sweep
from fitting import model_design as design_lib
from fitting import results as results_lib
from ling_jax import config as config_lib
from ling_jax import data as data_lib
from ling_jax import flops

STUDIES = list(protocol.LOCAL_STUDIES)


def members_of(name, scale='local'):
  module = importlib.import_module(f'configs.{name}')
  base = module.get_config(scale)
  return base, sweep.validate_all(base, sweep.load_members(base))


@pytest.mark.parametrize('name', STUDIES)
def test_every_local_member_trains_at_least_1000_steps(name):
  _, validated = members_of(name)
  steps = [config_lib.num_steps(c, arch) for _, c, arch in validated]
  assert min(steps) >= protocol.LOCAL_MIN_STEPS, name


@pytest.mark.parametrize('name', STUDIES)
def test_local_budgets_span_at_least_one_and_a_half_decades(name):
  _, validated = members_of(name)
  budgets = [c.train.compute_budget for _, c, _ in validated]
  assert math.log10(max(budgets) / min(budgets)) >= 1.5 - 1e-3, name


@pytest.mark.parametrize('name', STUDIES)
def test_every_local_member_shares_one_eval_set_and_convention(name):
  _, validated = members_of(name)
  for _, c, _ in validated:
    assert c.train.eval_sequences == protocol.LOCAL_EVAL_SEQUENCES
    assert c.train.eval_batch_size == protocol.LOCAL_EVAL_BATCH
    assert c.moe.router_loss_reduction == 'sum'
    assert c.moe.dispatch == 'blocks' and c.moe.capacity_factor <= 0  # dropless
    assert c.train.seq_len == protocol.LOCAL_SEQ_LEN


def test_the_eval_set_does_not_depend_on_the_training_batch():
  base, validated = members_of('hparams')
  batches = {c.train.batch_size: c for _, c, _ in validated}
  small, large = batches[min(batches)], batches[max(batches)]
  assert small.train.batch_size != large.train.batch_size
  first, second = (data_lib.Dataset(c).eval_batches() for c in (small, large))
  assert len(first) * protocol.LOCAL_EVAL_BATCH == protocol.LOCAL_EVAL_SEQUENCES
  assert all((a == b).all() for a, b in zip(first, second)) and len(first) == len(second)
  # Drawn across the held-out files, not the first few of them in file order.
  in_file_order = data_lib.Dataset(small).eval_source
  assert not (first[0][:8] == [in_file_order[i] for i in range(8)]).all()


@pytest.mark.parametrize('scale', common.SCALES)
def test_shared_expert_grid_has_the_papers_optimum_at_every_scale(scale):
  members = shared_experts.get_sweep(scale)
  assert any(m.name.endswith('Ea10_Es2') for m in members)


def local_rung_m(backbone, shape) -> float:
  """M (FLOPs per token, counted by flops.paper_flops_per_token) of a local backbone."""
  local = common.SCALE['local']
  fields = design_lib.model_fields(backbone, shape)
  return flops.paper_flops_per_token(
      design_lib.architecture(fields, local.seq_len, local.vocab_size)
  )


def test_models_follow_the_allocation_law_and_batches_keep_the_steps():
  # Each ablation group is the backbone on which a dense model with the A = 1 member's FFN
  # (d_ffn = 3 d_model) lies nearest in log to the local dense M_opt(C), among the fitted
  # ladder's rungs with d_model a multiple of 24: found here by a plain loop with M counted by
  # flops.paper_flops_per_token. The A = 1 member has that M too.
  groups = common.groups('local')
  for group, budget in zip(groups, protocol.LOCAL_BUDGETS):
    target = protocol.committed().optimal_m(budget, 'dense').value
    distances = {}
    for backbone in protocol.LOCAL_FITTED_LADDER:
      if backbone[1] % 24:
        continue
      m = local_rung_m(backbone, design_lib.MoEShape(dense_ffn_ratio=3.0))
      distances[backbone[:2]] = abs(math.log(m / target))
    assert (group.n_layers, group.d_model) == min(distances, key=distances.get), budget
    a_equals_one = local_rung_m(
        (group.n_layers, group.d_model, group.n_heads, group.n_kv_heads),
        design_lib.MoEShape(2, 2, 1, d_expert=group.d_model),
    )
    dense = local_rung_m(
        (group.n_layers, group.d_model, group.n_heads, group.n_kv_heads),
        design_lib.MoEShape(dense_ffn_ratio=3.0),
    )
    assert a_equals_one == pytest.approx(dense, rel=0.01)  # the router's d_model x 2 aside
  sizes = [(g.n_layers, g.d_model) for g in groups]
  assert sizes == sorted(sizes)  # never smaller at a larger budget
  # Shrinking the batch keeps the steps: 10 sequences wanted, 5 allowed.
  tokens = 5 * protocol.LOCAL_SEQ_LEN * protocol.LOCAL_MIN_STEPS
  assert protocol.local_batch_sequences(10 * protocol.LOCAL_SEQ_LEN, tokens) == 5
  assert protocol.local_batch_sequences(3 * protocol.LOCAL_SEQ_LEN, tokens) == 3


def test_the_dense_reference_follows_the_dense_law_down_to_the_one_layer_rungs():
  # No rung of the one-layer rungs or the ladder lies nearer in log to the local dense M_opt(C)
  # than each dense_baseline member (the design may also take an off-ladder backbone nearer
  # still); M counted by flops.paper_flops_per_token in a plain loop.
  # Each budget also trains the nearest backbone on the other side of M_opt (the frontier is
  # the lower loss of the two): no rung on that side lies nearer either.
  _, validated = members_of('dense_baseline')
  sides = collections.defaultdict(set)
  for member, c, arch in validated:
    target = protocol.committed().optimal_m(c.train.compute_budget, 'dense').value
    m_chosen = flops.paper_flops_per_token(arch)
    name = re.sub(r'_seed\d+$', '', member.name)
    side = name.rpartition('_')[2] if name.endswith(('_above', '_below')) else ''
    sides[member.group].add(side or ('below' if m_chosen <= target else 'above'))
    for backbone in protocol.LOCAL_FITTED_LADDER:
      m = local_rung_m(backbone, design_lib.MoEShape())
      if side and (m <= target) != (side == 'below'):
        continue
      assert abs(math.log(m_chosen / target)) <= abs(math.log(m / target)) + 1e-9, (
          member.name,
          backbone,
      )
    if side:
      assert (m_chosen <= target) == (side == 'below'), member.name
  assert all(s == {'below', 'above'} for s in sides.values()), sides
  assert min(c.model.n_layers for _, c, _ in validated) == 1


def test_the_dense_frontier_budgets_bracketing_the_ablations_train_three_seeds():
  # Every member up to 4e12 FLOPs comes back as <member>_seed1 and _seed2, differing only in
  # its seeds, and the fits take the three as one design; the seed-0 members keep their sweep
  # indices (0-15), so that a workdir of the earlier sweep stays valid.
  from configs import dense_baseline
  from fitting import el as el_lib

  members = dense_baseline.get_sweep('local')
  first = [m for m in members if '_seed' not in m.name]
  assert members[: len(first)] == first and len(first) == 16
  seeded = [m for m in first if m.overrides['train.compute_budget'] <= 4e12]
  assert len(seeded) == 12
  by_name = {m.name: m for m in members}
  assert len(members) == 16 + 2 * 12
  row = lambda m: dict(
      {k.rpartition('.')[2]: v for k, v in m.overrides.items()},
      member=m.name,
      budget=m.overrides['train.compute_budget'],
  )
  for m in seeded:
    for seed in (1, 2):
      replicate = by_name[f'{m.name}_seed{seed}']
      assert replicate.group == m.group
      assert replicate.overrides == dict(m.overrides, **{'train.seed': seed, 'data.seed': seed})
      assert el_lib.design_key(row(replicate)) == el_lib.design_key(row(m))
  assert el_lib.design_key(row(first[0])) != el_lib.design_key(row(first[1]))


def test_the_a_equals_1_members_train_three_seeds_after_the_rest_of_the_sweep():
  from configs import activation_ratio

  members = activation_ratio.get_sweep('local')
  assert [m.name for m in members[27:]] == [
      f'g{g}_E2_seed{s}' for s in (1, 2) for g in range(3)
  ] and len(members) == 33
  by_name = {m.name: m for m in members}
  for m in members[27:]:
    first = by_name[m.name.rpartition('_seed')[0]]
    seed = int(m.name.rpartition('_seed')[2])
    assert first.overrides['model.n_experts'] == first.overrides['model.top_k'] == 2  # A = 1
    assert m.overrides == dict(first.overrides, **{'train.seed': seed, 'data.seed': seed})


def test_provisional_members_are_refused_until_their_laws_are_fitted(tmp_path, monkeypatch):
  monkeypatch.setattr(protocol, 'RESULTS_DIR', str(tmp_path / 'none'))
  base, members = members_of('dense_baseline')[0], sweep.load_members(
      members_of('dense_baseline')[0]
  )
  assert all(m.provisional for m in members)
  with pytest.raises(config_lib.ConfigError, match='allow_provisional'):
    sweep.run(base, members, str(tmp_path), train_fn=lambda c, d: pytest.fail('trained'))
  hparams_base, _ = members_of('hparams')
  assert not any(m.provisional for m in sweep.load_members(hparams_base))


def test_fitted_local_laws_replace_the_provisional_ones(tmp_path, monkeypatch):
  import json
  import os

  monkeypatch.setattr(protocol, 'RESULTS_DIR', str(tmp_path))  # what the sweeps design from
  evidence = protocol.Evidence(str(tmp_path))
  law = lambda c, e: dict(params=dict(log_coefficient=math.log(c), exponent_C=e))
  # The protocol places runs with the design laws (every budget), not the measured ones, which
  # leave out budgets whose grid located no optimum and may have no law at all.
  arm = lambda lr, batch: dict(
      learning_rate=law(9.0, -0.5),
      batch_tokens=dict(error='the batch_tokens optimum is located at 1 budget(s)'),
      design_laws=dict(learning_rate=lr, batch_tokens=batch),
  )
  os.makedirs(tmp_path / 'hparams')
  with open(tmp_path / 'hparams' / 'report.json', 'w') as f:
    json.dump(
        dict(
            studies=dict(
                hparams=dict(
                    moe=arm(law(2.0, -0.2), law(0.5, 0.3)),
                    dense=arm(law(3.0, -0.2), law(0.5, 0.3)),
                )
            )
        ),
        f,
    )
  sweep_members = sweep.load_members(members_of('hparams')[0])
  hparams_members = [m.name for m in sweep_members]
  lr_of = {m.name: m.overrides['train.learning_rate'] for m in sweep_members}

  def write_results(names, lr_scale=None):
    lr_scale = lr_scale or {}
    with open(tmp_path / 'hparams' / 'results.csv', 'w') as f:
      f.write('study,member,status,learning_rate\n')
      for name in names:
        f.write(f'hparams,{name},finished,{lr_of[name] * lr_scale.get(name, 1.0)!r}\n')

  write_results(hparams_members[1:])  # a fit of part of the study designs nothing
  assert '1 member(s) of configs/hparams.py:local' in evidence.provisional(('hparams',))
  assert hparams_members[0] in evidence.provisional(('hparams',))
  # Nor does a table of an earlier design: a member whose row ran another learning rate.
  write_results(hparams_members, {hparams_members[2]: 1.5})
  assert hparams_members[2] in evidence.provisional(('hparams',))
  write_results(hparams_members)
  lr, batch = evidence.hyperparameters(1e12, 'dense')
  assert lr.value == pytest.approx(3.0 * 1e12**-0.2) and not lr.provisional
  assert batch.value == pytest.approx(0.5 * 1e12**0.3)
  assert evidence.optimal_m(1e12, 'dense').provisional  # allocation not fitted yet
  assert evidence.provisional(('hparams',)) == ''
  assert 'allocation' in evidence.provisional() and 'hparams' not in evidence.provisional()
  # The demo keeps Eq. 3 at half its learning rate whatever is committed: its budgets lie below
  # the fitted law's range, and the README quotes its numbers.
  from fitting import laws  # pylint: disable=import-outside-toplevel

  plenty = 1e9  # tokens: Eq. 3's batch needs no shrinking for 1,000 steps
  lr, sequences = protocol.demo_hyperparameters(5e10, 'dense', plenty)
  assert lr == pytest.approx(0.5 * laws.MOE_LEARNING_RATE(5e10))
  assert sequences == round(laws.MOE_BATCH_TOKENS(5e10) / protocol.LOCAL_SEQ_LEN)
  # ... and with the tokens of a 5e10-FLOP member, as few sequences as give it 1,000 steps.
  _, sequences = protocol.demo_hyperparameters(5e10, 'dense', 306_000)
  assert sequences == 2 and 306_000 / (sequences * protocol.LOCAL_SEQ_LEN) >= 1000


def _cost_shapes(deep: bool = False):
  from ling_jax import flops

  dense = [(2, 24), (4, 144), (7, 336)] if not deep else [(2, 48), (9, 24)]
  moe = [(2, 48), (4, 144), (7, 336)] if not deep else [(2, 24), (4, 144), (12, 48)]
  shapes = [flops.Architecture(L, d, max(d // 24, 1), 1, 128, 256, d_ffn=3 * d) for L, d in dense]
  shapes += [
      flops.Architecture(
          L, d, max(d // 24, 1), 1, 128, 256, n_experts=e, top_k=k, n_shared=1, d_expert=2 * d // g
      )
      for L, d in moe
      for e, k, g in ((64, 2, 2), (256, 8, 8))
  ]
  return shapes


def _cost_config(block_rows=16, **train):
  import types

  return types.SimpleNamespace(
      train=types.SimpleNamespace(**train),
      moe=types.SimpleNamespace(
          dispatch='blocks' if block_rows else 'einsum', block_rows=block_rows
      ),
  )


PLANTED_STEP = dict(
    step=0.002,
    layers=0.0005,
    dense_flops=2e-11,
    score_flops=4e-11,
    expert_flops=5e-11,
    buffer_values=1e-8,
    block_weights=2e-9,
    parameters=3e-9,
)
PLANTED_EVAL = dict(
    step=0.001,
    layers=0.0003,
    dense_flops=7e-12,
    score_flops=1e-11,
    expert_flops=2e-11,
    buffer_values=4e-9,
    block_weights=1e-9,
    parameters=0.0,
)


def test_blocks_dispatch_rows_are_each_experts_assignments_padded_to_whole_blocks():
  import jax.numpy as jnp
  import numpy as np

  from experiments import cost
  from ling_jax import dispatch
  from ling_jax import flops

  # The buffer the dispatch allocates, against each expert's rows padded to whole blocks by hand:
  # it holds them for any routing (each expert wastes at most 15 rows), here a skewed one.
  experts_TxK = jnp.asarray(np.random.default_rng(0).zipf(1.5, (37, 2)) % 4, jnp.int32)
  plan, _ = dispatch.block_plan(experts_TxK, 4, 16)
  counts = np.bincount(np.asarray(experts_TxK).ravel(), minlength=4)
  assert plan.token_of_row.shape[0] == flops.block_buffer_rows(74, 4, 16)
  assert sum(-(-c // 16) * 16 for c in counts) <= flops.block_buffer_rows(74, 4, 16)
  assert flops.block_buffer_rows(74, 4, 16) < 74 + 4 * 15 + 16
  arch = flops.Architecture(3, 48, 2, 1, 128, 256, n_experts=64, top_k=2, n_shared=1, d_expert=24)
  arch = dataclasses.replace(arch, num_dense_layers=1, d_ffn=144)
  padded = cost.features(arch, 1, 128, block_rows=16)
  bare = cost.features(arch, 1, 128)
  rows = flops.block_buffer_rows(256, 64, 16)  # one sequence of 128 tokens, top-2
  assert padded['buffer_values'] == rows * 48 * 2 and bare['buffer_values'] == 256 * 48 * 2
  # forward and backward (3) of three matmuls (3) of 2 d_model d_expert FLOPs a row, per MoE layer
  assert padded['expert_flops'] == rows * 3 * 3 * 2 * 48 * 24 * 2
  assert padded['block_weights'] == rows // 16 * 3 * 48 * 24 * 2 and bare['block_weights'] == 0
  assert padded['dense_flops'] == bare['dense_flops']


def test_cost_model_recovers_planted_step_and_eval_times_and_adds_up_a_run():
  from experiments import cost

  shapes = _cost_shapes()
  steps = [cost.features(a, b, 128, 16) for a in shapes for b in (1, 4, 16)]
  evals = [cost.features(a, 64, 128, 16) for a in shapes] + [
      cost.features(a, 128, 128, 16) for a in shapes
  ]
  step_s = [cost.predict_seconds(PLANTED_STEP, r) for r in steps]
  eval_s = [cost.predict_seconds(PLANTED_EVAL, r) for r in evals]
  model = cost.fit(steps, step_s, evals, eval_s)
  for r, s in zip(steps, step_s):
    assert cost.predict_seconds(model['coefficients'], r) == pytest.approx(s, rel=1e-6)
  for r, s in zip(evals, eval_s):
    assert cost.predict_seconds(model['eval_coefficients'], r) == pytest.approx(s, rel=1e-6)

  config = _cost_config(
      batch_size=4,
      seq_len=128,
      eval_every=1000,
      eval_batches=4,
      eval_sequences=4096,
      eval_batch_size=64,
  )
  arch = shapes[4]
  step = cost.predict_seconds(PLANTED_STEP, cost.features(arch, 4, 128, 16))
  forward = cost.predict_seconds(PLANTED_EVAL, cost.features(arch, 64, 128, 16))
  # 2,500 steps: evals of 4 batches at steps 1,000 and 2,000, then 4,096 / 64 = 64 batches at
  # the end, each batch a forward of 64 sequences.
  expected = model['startup_s'] + 2500 * step + (2 * 4 + 64) * forward
  assert cost.run_seconds(model, arch, config, 2500) == pytest.approx(expected, rel=1e-6)


def test_cost_model_calibrates_to_whole_runs_read_from_a_workdir(tmp_path):
  import json

  from experiments import cost

  planted = dict(startup_s=25.0, coefficients=PLANTED_STEP, eval_coefficients=PLANTED_EVAL)
  train = dict(
      seq_len=128, eval_every=500, eval_batches=2, eval_sequences=1024, eval_batch_size=128
  )
  moe = dict(dispatch='blocks', block_rows=16)
  shapes = _cost_shapes(deep=True)
  for i, arch in enumerate(shapes):
    for steps in (1000, 3000):
      folder = tmp_path / 'study' / f'm{i}_{steps}'
      folder.mkdir(parents=True)
      t = dict(train, batch_size=1 if i % 2 else 8)
      # The hand count: start-up, the steps, and forwards of 128 sequences: 2 batches at each
      # of the (steps - 1) // 500 periodic evals and 1024 / 128 = 8 at the end.
      evals = (steps - 1) // 500 * 2 + 8
      step = cost.predict_seconds(PLANTED_STEP, cost.features(arch, t['batch_size'], 128, 16))
      forward = cost.predict_seconds(PLANTED_EVAL, cost.features(arch, 128, 128, 16))
      elapsed = 25.0 + steps * step + evals * forward
      summary = dict(architecture=dataclasses.asdict(arch), steps=steps, elapsed_s=elapsed)
      (folder / 'summary.json').write_text(json.dumps(summary))
      (folder / 'config.json').write_text(json.dumps(dict(train=t, moe=moe, name='x')))
  (tmp_path / 'study' / 'unfinished').mkdir()
  runs = cost.finished_runs(str(tmp_path))
  assert len(runs) == 2 * len(shapes)
  for run in runs:
    assert cost.run_seconds(planted, run['arch'], run['config'], run['steps']) == pytest.approx(
        run['elapsed_s'], rel=1e-9
    )
  assert '(ratio 1.000)' in cost.comparison(planted, runs)
  # From bare timings whose steps read 30% low and whole evals 20% high, the start-up and the
  # two factors are recovered.
  bare = dict(
      planted,
      startup_s=15.0,
      coefficients={k: 0.7 * v for k, v in PLANTED_STEP.items()},
      eval_coefficients={k: 1.2 * v for k, v in PLANTED_EVAL.items()},
  )
  model = cost.calibrate(runs, bare)
  assert model['startup_s'] == pytest.approx(25.0, rel=1e-6)
  assert model['coefficients']['dense_flops'] == pytest.approx(2e-11, rel=1e-6)
  assert model['eval_coefficients']['dense_flops'] == pytest.approx(7e-12, rel=1e-6)
  # Members that trained beside other work (here: twice as slow) are held out of the refit by
  # pattern, and the comparison reports them apart, flagged.
  for run in runs:
    if run['member'].endswith('_3000'):
      run['elapsed_s'] *= 2.0
  out = cost.held_out(runs, ['study/*_3000'])
  assert sum(out) == len(shapes)
  model = cost.calibrate([r for r, held in zip(runs, out) if not held], bare)
  assert model['startup_s'] == pytest.approx(25.0, rel=1e-6)
  report = cost.comparison(model, runs, out)
  assert f'in the fit: {len(shapes)} members' in report and '(ratio 1.000)' in report
  assert f'out of sample (*): {len(shapes)} members' in report
  assert sum(line.endswith(' *') for line in report.splitlines()) == len(shapes)


def test_study_shapes_times_each_distinct_shape_once_and_refits_the_model(tmp_path, monkeypatch):
  import json
  import shutil

  from benchmarks import study_shapes
  from experiments import cost

  # dense_layers: 3 groups x 0-3 first dense layers, every member its own shape; the dense
  # baseline's seed replicates repeat their member's shape and are timed once.
  assert len(study_shapes.distinct_shapes(['dense_layers'])) == 12
  dense = study_shapes.distinct_shapes(['dense_baseline'])
  _, validated = members_of('dense_baseline')
  assert len(dense) == len({(arch, c.train.batch_size) for _, c, arch in validated}) < 40
  assert not any('_seed' in name for name, *_ in dense)

  startup = cost.load()['startup_s']
  model_file = tmp_path / 'cost_model.json'
  shutil.copy(cost.MODEL_FILE, model_file)
  monkeypatch.setattr(cost, 'MODEL_FILE', str(model_file))
  timings = tmp_path / 'shapes.json'
  study_shapes.main(
      [
          '--studies=dense_baseline',
          '--every=100',
          '--rounds=1',
          '--num_devices=1',
          f'--json={timings}',
          '--write',
      ]
  )
  (row,) = json.loads(timings.read_text())['shapes']
  assert row['member'] == dense[0][0] and row['step_s'] > 0 and row['eval_s'] > 0
  model = cost.load()
  assert model['startup_s'] == startup  # whole runs calibrate it, not bare timings
  # One shape: the non-negative fit reproduces its two timings.
  assert cost.predict_seconds(model['coefficients'], row['step_features']) == pytest.approx(
      row['step_s'], rel=1e-6
  )
  assert cost.predict_seconds(model['eval_coefficients'], row['eval_features']) == pytest.approx(
      row['eval_s'], rel=1e-6
  )


def test_cost_comparison_reads_committed_results_with_their_study_configs(tmp_path):
  """A results table's rows come back with the config their study gives them today, and a row
  whose design has changed since is left out rather than priced as another model."""
  import json

  from experiments import cost

  _, validated = members_of('dense_layers')
  member, config, arch = validated[5]
  row = dict(
      study='dense_layers',
      member=member.name,
      status='finished',
      steps=1100,
      elapsed_s=200.0,
      **{k: getattr(arch, k) for k in results_lib.MODEL_FIELDS},
  )
  stale = dict(row, member=validated[6][0].name, d_model=arch.d_model + 8)
  table = tmp_path / 'results.jsonl'
  table.write_text('\n'.join(json.dumps(r) for r in (row, stale, dict(row, elapsed_s=None))))
  runs = cost.committed_runs([str(table)], 'local')
  assert [r['member'] for r in runs] == [f'dense_layers/{member.name}']
  assert runs[0]['arch'] == arch and runs[0]['steps'] == 1100
  assert cost.block_rows(runs[0]['config']) == config.moe.block_rows == 16
  expected = cost.run_seconds(cost.load(), arch, config, 1100)
  assert cost.run_seconds(cost.load(), runs[0]['arch'], runs[0]['config'], 1100) == expected


def test_demo_scale_is_the_dense_baseline_and_activation_ratio_only():
  from configs import granularity  # pylint: disable=import-outside-toplevel

  for name in ('dense_baseline', 'activation_ratio'):
    base, validated = members_of(name, 'demo')
    assert base.data.source == 'stdlib' and base.moe.dispatch == 'blocks'
    assert not any(m.provisional for m, _, _ in validated)  # the demo never waits for a law
  with pytest.raises(config_lib.ConfigError, match='paper, local, smoke'):
    granularity.get_config('demo')


def test_demo_frontier_reaches_above_every_moe_budget():
  """EL up to 4 reads off fitted dense points: the dense budgets reach 4x the MoE budgets."""
  _, dense = members_of('dense_baseline', 'demo')
  _, moe = members_of('activation_ratio', 'demo')
  top = max(c.train.compute_budget for _, c, _ in moe)
  assert max(c.train.compute_budget for _, c, _ in dense) >= 4 * top
  assert min(c.train.compute_budget for _, c, _ in dense) <= min(
      c.train.compute_budget for _, c, _ in moe
  )
  # One A = 1 design per group, in 3 seeds as the dense runs of its budget: the check that the
  # arms are treated alike, read on seed means.
  a_one = [c.train.compute_budget for _, c, arch in moe if arch.n_experts == arch.top_k]
  assert sorted(a_one) == sorted(protocol.DEMO_GROUP_BUDGETS * 3)
  dense_budgets = [c.train.compute_budget for _, c, _ in dense]
  assert all(dense_budgets.count(b) == 3 for b in protocol.DEMO_GROUP_BUDGETS)
  # Both arms alike at each MoE budget: the same learning rate, batch and steps (at least 1,000).
  for budget in protocol.DEMO_GROUP_BUDGETS:
    arms = [c.train for _, c, _ in dense + moe if c.train.compute_budget == budget]
    assert len({(t.learning_rate, t.batch_size) for t in arms}) == 1
    steps = {
        config_lib.num_steps(c, arch)
        for _, c, arch in dense + moe
        if c.train.compute_budget == budget
    }
    assert len(steps) == 1 and min(steps) >= 1000


def test_demo_el_table_lists_every_run_and_the_a_equals_1_check():
  from experiments import demo  # pylint: disable=import-outside-toplevel

  point = lambda m, A, el, lo, hi, ext=False: dict(
      member=m, A=A, C=5e10, loss=2.0, EL=el, EL_interval=[lo, hi], extrapolated=ext
  )
  report = dict(
      studies=dict(
          activation_ratio=dict(
              points=[
                  point('g0_E2', 1.0, 0.98, 0.9, 1.1),
                  point('g0_E32', 0.091, 1.7, 1.5, 1.9, True),
              ],
              check_A_equals_1=[
                  dict(
                      member='g0_E2',
                      EL=0.98,
                      EL_read_off_dense_runs=1.02,
                      EL_read_off_dense_runs_interval=[0.93, 1.2],
                      holds=True,
                  )
              ],
          )
      )
  )
  lines = demo.el_table(report).splitlines()
  assert lines[1].startswith('g0_E2') and '0.98  [0.90, 1.10]' in lines[1]
  assert lines[2].startswith('g0_E32') and 'not fitted' in lines[2]
  assert lines[3] == (
      'A = 1 check (g0_E2): EL 1.02 [0.93, 1.20] read off the dense runs (0.98 off the power '
      'law), interval contains 1: yes'
  )


def test_a_failed_demo_check_names_its_measured_cause():
  from experiments import demo  # pylint: disable=import-outside-toplevel

  check = lambda gap: dict(
      member='g1_E2',
      n_seeds=3,
      EL=1.3,
      EL_read_off_dense_runs=1.29,
      EL_read_off_dense_runs_interval=[1.2, 1.76],
      holds=False,
      same_budget_dense=dict(loss_difference=gap, difference_stderr=0.01, EL=1.0),
  )
  report = lambda c: dict(studies=dict(activation_ratio=dict(points=[], check_A_equals_1=[c])))
  apart = demo.el_table(report(check(-0.035))).splitlines()[-1]
  assert apart.startswith('A = 1 check (g1_E2, mean of 3 seeds): EL 1.29 [1.20, 1.76]')
  assert 'NO: its loss is 0.0350 below the dense run of its budget (3.5 standard errors' in apart
  near = demo.el_table(report(check(-0.015))).splitlines()[-1]
  assert 'NO: its loss is within noise of the dense run of its budget (-0.0150 +- 0.0100)' in near


@pytest.mark.parametrize('name', STUDIES)
def test_no_local_member_trains_past_its_epochs(name):
  # Only the allocation study repeats data (its small models at large budgets), up to 4 epochs.
  epochs = allocation.LOCAL_MAX_EPOCHS if name == 'allocation' else 1
  _, validated = members_of(name)
  for member, c, arch in validated:
    tokens = config_lib.num_steps(c, arch) * c.train.batch_size * c.train.seq_len
    assert tokens <= epochs * protocol.LOCAL_TRAIN_TOKENS, (member.name, tokens)


def test_the_train_split_holds_the_tokens_the_protocol_counts_on():
  base, _ = members_of('dense_baseline')
  train, _, fingerprint = data_lib.stdlib_corpus(base.data.eval_fraction)
  if fingerprint.startswith('stdlib-py3.11-'):
    assert len(train) == protocol.LOCAL_TRAIN_TOKENS
  else:  # another Python's standard library: the constant must not promise more than it holds
    assert len(train) >= protocol.LOCAL_TRAIN_TOKENS, (fingerprint, len(train))


def test_each_activation_ratio_group_has_a_dense_twin_of_its_a_equals_1_member():
  # The twin differs from the A = 1 member (E = E_a = 2) only by the router: same backbone,
  # budget, learning rate, batch and steps, and the same FLOPs per token.
  _, validated = members_of('activation_ratio')
  by_name = {m.name: (c, arch) for m, c, arch in validated}
  for group in common.groups('local'):
    (twin, twin_arch), (moe, moe_arch) = by_name[f'{group.name}_dense'], by_name[f'{group.name}_E2']
    assert twin.model.n_experts == 0 and moe.model.n_experts == moe.model.top_k == 2
    for field in ('n_layers', 'd_model', 'n_heads', 'n_kv_heads'):
      assert twin.model[field] == moe.model[field]
    for field in ('compute_budget', 'learning_rate', 'batch_size'):
      assert twin.train[field] == moe.train[field]
    assert config_lib.num_steps(twin, twin_arch) == config_lib.num_steps(moe, moe_arch)
    # M by hand: the twin's FFN (3 d_model wide) is the 2 routed + 1 shared experts of width
    # d_model; the router's FLOPs are the only difference.
    assert flops.paper_flops_per_token(twin_arch) == pytest.approx(
        flops.paper_flops_per_token(moe_arch), rel=0.02
    )


def test_a_budget_too_small_for_any_dense_layers_stack_names_the_field():
  from configs import dense_layers  # pylint: disable=import-outside-toplevel

  tiny = member_lib.Group(0, 1, 24, 1, 1, budget=1e9, learning_rate=1e-2, batch_size=3)
  with pytest.raises(config_lib.ConfigError, match='model.n_layers: .*train.compute_budget=1e'):
    dense_layers.local_layers(tiny)
