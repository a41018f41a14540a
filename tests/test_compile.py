"""Slices, layouts and the ahead-of-time compile check (experiments/compile.py), deviceless:
TPU slices through libtpu, an 8-GPU H100 node through the CUDA plugin (both from the test extra).
"""

import itertools
import json
import math
import re
import subprocess
import sys

import jax
import pytest
from jax.sharding import AxisType

from configs import common
from configs import moe as moe_config
from experiments import compile as compile_lib
from experiments import hlo
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import hardware
from ling_jax import layout
from ling_jax import spec as spec_lib


def _smoke(**mesh):
  """The smoke MoE (2 layers, 8 experts) with a batch of 16 sequences and the given mesh."""
  c = moe_config.get_config('smoke')
  c.unlock()
  c.mesh.update(num_devices=0, **mesh)
  c.train.batch_size = 16
  c.lock()
  return c


# --- Slices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'name, chips, shape, kind',
    [
        ('v5p-128', 64, (4, 4, 4), 'TPU v5'),  # v5p names count TensorCores, two a chip
        ('v4-64', 32, (2, 4, 4), 'TPU v4'),
        ('v5e-256', 256, (16, 16), 'TPU v5 lite'),
        ('v6e-64', 64, (8, 8), 'TPU v6 lite'),
        ('2xv5p-16', 16, (2, 2, 2), 'TPU v5'),
        ('h100x8', 8, (8,), 'NVIDIA H100'),
    ],
)
def test_slice_names_give_the_published_shapes(name, chips, shape, kind):
  s = hardware.parse(name)
  assert (s.chips, s.shape, s.chip.device_kind) == (chips, shape, kind)


@pytest.mark.parametrize('name', ['v5e-16x', 'v5p-12', 'v5p:4x4x4', 'h100x7', 'a100x8', '2xh100x8'])
def test_unknown_or_impossible_slices_are_refused_with_the_known_ones(name):
  with pytest.raises(hardware.UnknownSlice, match='v5p-128.*h100x8'):
    hardware.parse(name)


def test_a_config_naming_an_unknown_slice_is_refused_at_validation():
  c = _smoke(slice='v5e-17')
  with pytest.raises(config_lib.ConfigError, match=r'config\.mesh\.slice.*v5e-16'):
    config_lib.validate(c)


def test_one_size_smaller():
  assert hardware.parse('v5p-128').one_size_smaller().name == 'v5p-64'
  assert hardware.parse('v5e-4').one_size_smaller().name == 'v5e-1'
  assert hardware.parse('h100x8').one_size_smaller() is None


# --- The torus rule against JAX's own mesh builder -------------------------------------------


@pytest.mark.parametrize('name', ['v5p-64', 'v5e-16', 'h100x8'])
def test_the_torus_rule_agrees_with_jax_make_mesh_on_every_mesh(name):
  s = hardware.parse(name)
  devices = hardware.slice_devices(s)
  n = len(devices)
  divisors = [d for d in range(1, n + 1) if n % d == 0]
  refused = 0
  for fsdp, expert in itertools.product(divisors, divisors):
    if n % (fsdp * expert):
      continue
    sizes = (n // (fsdp * expert), fsdp, expert, 1)
    try:
      jax.make_mesh(sizes, config_lib.MESH_AXES, axis_types=(AxisType.Auto,) * 4, devices=devices)
      built = True
    except Exception:  # pylint: disable=broad-except
      built = False
    assert layout.fits_torus(sizes, s) == built, sizes
    refused += not built
  # v5p-64 is a 2x4x4 torus: (8, 2, 2) splits a dimension of 4 and is refused.
  assert refused == (3 if name == 'v5p-64' else 0)


def test_a_mesh_that_splits_the_torus_is_refused_naming_the_axis():
  c = _smoke(slice='v5p-128', data=1, fsdp=8, expert=8)
  config_lib.validate(c)
  with pytest.raises(config_lib.ConfigError, match=r'config\.mesh\.fsdp=8.*4x4x4.*4, 16, 64'):
    layout.resolve(c)


# --- The batch rule and the planner -----------------------------------------------------------


def test_a_fixed_mesh_must_use_every_device():
  c = _smoke(data=2)
  with pytest.raises(config_lib.ConfigError, match=r'uses 2 devices of 8; set one axis to -1'):
    layout.resolve(c, 8)
  assert layout.resolve(c, 2).mesh.data == 2  # on two devices (config.mesh.num_devices=2)


def test_round_batch_by_hand():
  assert layout.round_batch(531, 16) == 528  # 33.19 shards of 16
  assert layout.round_batch(531, 128) == 512  # 4.15
  assert layout.round_batch(531, 1024) == 1024  # at least one multiple
  assert layout.round_batch(24, 16) == 32  # 1.5 rounds up


def test_an_exact_batch_rule_refuses_an_indivisible_batch_and_round_runs_the_nearest():
  c = _smoke(slice='v5e-16')
  c.unlock()
  c.train.batch_size = 531
  with pytest.raises(config_lib.ConfigError, match='must split over the 16 batch shards'):
    layout.resolve(c)
  c.train.batch_rule = 'round'
  resolved = layout.resolve(c)
  assert (resolved.train.batch_size, resolved.train.requested_batch_size) == (528, 531)


def test_the_paper_moe_is_planned_on_every_slice_it_fits_and_refused_on_one_too_small():
  c = moe_config.get_config('paper')
  arch = spec_lib.architecture(c)
  for name in ('v5p-128', 'v5e-256', 'h100x8'):
    s = hardware.parse(name)
    chosen = layout.plan(arch, c, s)
    assert math.prod(chosen.mesh) == s.chips and layout.fits_torus(chosen.mesh, s)
    assert chosen.batch_size % (chosen.batch_shards * chosen.microbatches) == 0
    assert abs(chosen.batch_size - 531) <= chosen.batch_shards * chosen.microbatches / 2
    budget = layout.PLAN_HBM_FRACTION * s.hbm_bytes
    assert layout.memory_bytes(arch, c, chosen)['total'] <= budget
  with pytest.raises(config_lib.ConfigError, match='no layout of moe_paper fits v5e-4'):
    layout.plan(arch, c, hardware.parse('v5e-4'))


def test_every_paper_config_names_a_slice_and_plans_its_layout():
  c = moe_config.get_config('paper')
  assert (c.mesh.slice, c.mesh.plan, c.train.batch_rule) == ('v5p-128', 'auto', 'round')


def test_a_paper_member_takes_the_largest_slice_that_keeps_its_batch_within_tolerance():
  # 98 sequences: at most 0.2 x 98 = 19.6 chips, so 16 (v5p-32); 228: 45.6, so 32 (v5p-64).
  assert [common.paper_slice(b) for b in (10, 98, 228, 531, 2048)] == [
      'v5p-8',
      'v5p-32',
      'v5p-64',
      'v5p-128',
      'v5p-128',
  ]
  from configs import granularity
  from experiments import sweep

  base = granularity.get_config('paper')
  for member in granularity.get_sweep('paper'):
    c = sweep.member_config(base, member)
    assert c.mesh.slice == common.paper_slice(c.train.batch_size)
    resolved = layout.resolve(compile_lib.for_slice(c, c.mesh.slice))
    shift = abs(resolved.train.batch_size - c.train.batch_size) / c.train.batch_size
    assert shift <= layout.PLAN_BATCH_TOLERANCE


def test_the_planner_refuses_to_move_the_batch_past_its_tolerance():
  c = moe_config.get_config('paper')
  c.unlock()
  # 20 sequences on 64 chips: at most 4 on the tensor axis (4 KV heads) leaves 16 batch shards,
  # and 16 or 32 are 20% or 60% away.
  c.train.batch_size = 20
  with pytest.raises(config_lib.ConfigError, match='more than 10% away.*smaller slice'):
    layout.plan(spec_lib.architecture(c), c, hardware.parse('v5p-128'))
  assert layout.plan(spec_lib.architecture(c), c, hardware.parse('v5p-8')).batch_size == 20


def test_the_planner_takes_full_remat_when_the_saved_activations_do_not_fit():
  """allocation's largest MoE (28 layers, d_model 1792, 7 KV heads, 329 sequences) on v5p-128:
  7 heads allow no tensor split, and microbatches would move the batch past 10%, so only 'full'
  remat brings its modelled activations (54.7 GiB a chip under dots_no_batch) within budget."""
  from configs import allocation
  from experiments import sweep

  base = allocation.get_config('paper')
  (member,) = [m for m in allocation.get_sweep('paper') if m.name == 'moe_C1e+20_M1.19e+10']
  c = sweep.member_config(base, member)
  assert c.model.remat == 'dots_no_batch'
  resolved = layout.resolve(c)
  assert (resolved.model.remat, resolved.mesh.tensor, resolved.train.grad_accum_steps) == (
      'full',
      1,
      1,
  )


# --- The compiled program's collectives, by hand -----------------------------------------------

_LOOP_HLO = """
HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(f32[] %a, f32[] %b)
}

%cond (p: (s32[], f32[8,16])) -> pred[] {
  %p = (s32[], f32[8,16]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %n = s32[]{:T(128)} constant(5)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%body (p: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %p = (s32[], f32[8,16]) parameter(0)
  %x = f32[8,16]{1,0} get-tuple-element(%p), index=1
  %r = f32[8,16]{1,0} all-reduce(%x), replica_groups={{0,1,2,3}}, to_apply=%add
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[8,16]) tuple(%i, %r)
}

ENTRY %main (x: f32[8,16]) -> f32[32,16] {
  %x = f32[8,16] parameter(0)
  %z = s32[] constant(0)
  %t = (s32[], f32[8,16]) tuple(%z, %x)
  %w = (s32[], f32[8,16]) while(%t), condition=%cond, body=%body
  %y = f32[8,16] get-tuple-element(%w), index=1
  ROOT %g = bf16[32,16]{1,0} all-gather(%y), replica_groups=[2,4]<=[8], dimensions={0}
}
"""


_REDUCE_SCATTER_HLO = """
HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(f32[] %a, f32[] %b)
}

%all-reduce-scatter.1 (input.1: f32[256,64]) -> f32[64,64] {
  %input.1 = f32[256,64]{1,0} parameter(0)
  %r = f32[256,64]{1,0} all-reduce(%input.1), replica_groups={{0,1,2,3}}, to_apply=%add
  %p = u32[] partition-id()
  %k = u32[] constant(64)
  %o = u32[] multiply(%p, %k)
  %z = u32[] constant(0)
  ROOT %d = f32[64,64]{1,0} dynamic-slice(%r, %o, %z), dynamic_slice_sizes={64,64}
}

ENTRY %main (x: f32[256,64]) -> f32[64,64] {
  %x = f32[256,64] parameter(0)
  ROOT %f = f32[64,64] fusion(%x), kind=kCustom, calls=%all-reduce-scatter.1
}
"""


def test_a_fused_all_reduce_and_slice_counts_as_the_reduce_scatter_it_is():
  (found,) = hlo.collectives(_REDUCE_SCATTER_HLO, 4)
  assert (found.kind, found.shapes, found.executions) == ('reduce-scatter', [('f32', (64, 64))], 1)
  assert found.bytes_sent_per_chip == 3 * 64 * 64 * 4


def test_collectives_count_loop_trips_and_ring_bytes_by_hand():
  found = {c.kind: c for c in hlo.collectives(_LOOP_HLO, 8)}
  reduce, gather = found['all-reduce'], found['all-gather']
  assert (reduce.executions, reduce.group_size, reduce.result_bytes) == (5, 4, 8 * 16 * 4)
  assert (gather.executions, gather.group_size, gather.result_bytes) == (1, 4, 32 * 16 * 2)
  summary = hlo.summarize(list(found.values()))
  assert summary['all-reduce']['bytes_per_chip'] == 5 * 2 * 3 / 4 * 512
  assert summary['all-gather']['bytes_per_chip'] == 3 / 4 * 1024


def test_the_estimate_runs_full_remats_forward_again_and_counts_only_the_models_flops_in_mfu():
  """By hand: the smoke MoE on v5e-4, compute-bound (no memory traffic, no collectives)."""
  c = layout.resolve(compile_lib.for_slice(_smoke(plan='auto', slice='v5e-4'), 'v5e-4'))
  arch = spec_lib.architecture(c)
  slice_ = hardware.parse('v5e-4')
  row = dict(memory=dict(argument_bytes=0, output_bytes=0, temp_bytes=0), collectives={})
  work = flops.hardware_flops_per_token(arch) * c.train.batch_size * c.train.seq_len / 4
  peak = slice_.chip.peak_bf16_flops_per_s
  estimates = {}
  for remat in ('dots_no_batch', 'full'):
    c.unlock()
    c.model.remat = remat
    c.lock()
    estimates[remat] = compile_lib.estimate(c, arch, slice_, row)
  assert estimates['dots_no_batch']['step_s'] == pytest.approx(work / peak)
  assert estimates['dots_no_batch']['mfu'] == pytest.approx(1.0)
  assert estimates['full']['step_s'] == pytest.approx(4 / 3 * work / peak)
  assert estimates['full']['mfu'] == pytest.approx(3 / 4)


def test_gpu_rows_past_jaxs_default_memory_pool_are_named_and_tpu_rows_never():
  gib = 2**30
  rows = [
      dict(name='low', slice='h100x8', fits=True, peak_bytes=59 * gib, hbm_bytes=80 * gib),
      dict(name='high', slice='h100x8', fits=True, peak_bytes=61 * gib, hbm_bytes=80 * gib),
      dict(name='unfit', slice='h100x8', fits=False, peak_bytes=90 * gib, hbm_bytes=80 * gib),
      dict(name='tpu', slice='v5p-128', fits=True, peak_bytes=93 * gib, hbm_bytes=95 * gib),
  ]
  assert [r['name'] for r in compile_lib.past_gpu_default_pool(rows)] == ['high']


# --- Compiling for a TPU slice and an 8-GPU node ------------------------------------------------


@pytest.mark.parametrize('slice_name', ['v5e-4', 'h100x8'])
def test_the_planned_layout_compiles_and_fits(slice_name):
  c = _smoke(plan='auto', slice=slice_name)
  row = compile_lib.compile_member(c, slice_name)
  assert row['fits'] and 0 < row['peak_bytes'] <= row['hbm_bytes']
  assert row['memory']['argument_bytes'] > 0 and row['eval_memory']['peak_bytes'] > 0
  assert math.prod(row['mesh'].values()) == hardware.parse(slice_name).chips
  if slice_name == 'h100x8':
    # The memory model's parameters and moments are what the compiled step takes as arguments
    # (beside a batch of ids). A TPU pads the smoke model's narrow arrays to its 128-lane tiles,
    # so only the GPU program is held to the count.
    chosen = layout.choose(compile_lib.for_slice(c, slice_name))
    arch = spec_lib.architecture(c)
    # By hand: three f32 copies of the parameters, the routed experts' (gate, up and down
    # projections) split over the expert axis and the rest replicated.
    experts = arch.num_moe_layers * arch.n_experts * 3 * arch.d_model * arch.d_expert
    per_chip = experts / row['mesh']['expert'] + flops.total_params(arch) - experts
    assert row['mesh']['fsdp'] == row['mesh']['tensor'] == 1, row['mesh']
    assert layout.memory_bytes(arch, c, chosen)['arguments'] == 3 * 4 * per_chip
    assert row['memory']['argument_bytes'] == pytest.approx(3 * 4 * per_chip, rel=0.01)
  assert row['estimate']['step_s'] > 0 and 0 < row['estimate']['mfu'] <= 1
  json.dumps(row)  # a row of the committed table


def _fsdp_row(vocab_size: int, d_model: int, **mesh) -> dict:
  c = _smoke(slice='v5e-4', **mesh)
  c.unlock()
  c.model.update(vocab_size=vocab_size, d_model=d_model, d_expert=d_model // 2)
  c.lock()
  return compile_lib.compile_member(c, 'v5e-4', False)


def test_under_fsdp_no_parameter_gradient_is_all_reduced_whole():
  row = _fsdp_row(4096, 256, data=1, fsdp=4)
  assert row['collectives']['reduce-scatter']['executions'] >= 1
  assert row['whole_parameter_all_reduces'] == []
  # The check can fail: XLA all-reduces tiny arrays whole (the 64 x 32 embeddings here) and
  # slices them, which the check reports.
  assert set(_fsdp_row(64, 32, data=1, fsdp=4)['whole_parameter_all_reduces']) == {
      'f32[64, 32]',
      'f32[32, 64]',
  }


def test_a_layout_too_large_is_refused_by_the_command_naming_member_and_memory(tmp_path):
  # Pure data parallelism: every chip holds the logits of 64 x 512 tokens over a 262,144-id
  # vocabulary, 8 GiB in f32, with their gradient and softmax beside them: past 16 GiB.
  out = tmp_path / 'compile.jsonl'
  command = [
      sys.executable,
      '-m',
      'experiments.compile',
      '--config=configs/moe.py:smoke',
      '--slice=v5e-4',
      '--config.mesh.num_devices=0',
      '--config.model.vocab_size=262144',
      '--config.train.seq_len=512',
      '--config.train.batch_size=256',
      '--config.train.tokens=262144',
      '--noeval',
      f'--out={out}',
  ]
  done = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1, done.stdout + done.stderr
  assert 'do not fit v5e-4: moe_smoke' in done.stderr
  (row,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert row['fits'] is False


@pytest.mark.parametrize(
    'device_kind, peak',
    [
        ('TPU v5 lite', 197e12),
        ('TPU v5', 459e12),
        ('TPU v6 lite', 918e12),
        ('NVIDIA H100 80GB HBM3', 989e12),
        ('cpu', None),
    ],
)
def test_mfu_reads_the_peak_of_the_chip_table_by_device_kind(device_kind, peak):
  from ling_jax import metrics

  assert metrics.peak_flops_per_device(0.0, device_kind) == peak
  assert metrics.peak_flops_per_device(1e12, device_kind) == 1e12  # configured wins


def test_two_slices_put_only_the_data_axis_across_the_data_center_network():
  c = _smoke(slice='2xv5p-16', plan='auto')
  row = compile_lib.compile_member(c, '2xv5p-16', False)
  assert row['fits'] and row['mesh']['data'] % 2 == 0
  from ling_jax import train

  trainer = train.Trainer.build(
      layout.resolve(compile_lib.for_slice(c, '2xv5p-16')),
      hardware.slice_devices(hardware.parse('2xv5p-16')),
  )
  grid = trainer.mesh.devices  # [data, fsdp, expert, tensor]
  half = grid.shape[0] // 2
  assert {d.slice_index for d in grid[:half].flat} == {0}
  assert {d.slice_index for d in grid[half:].flat} == {1}


def test_a_slice_with_no_layout_for_a_member_is_reported_without_compiling():
  done = subprocess.run(
      [sys.executable, '-m', 'experiments.compile', '--config=configs/moe.py', '--slice=v5e-4'],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert done.returncode == 1, done.stdout + done.stderr
  assert 'moe_paper' in done.stdout and 'NO LAYOUT' in done.stdout
  assert 'do not fit v5e-4: moe_paper (config.mesh.plan=auto: no layout' in done.stderr
  # The planner's refusal whole: the memory its model needs, the budget and the fix.
  assert re.search(r'needs [\d.]+ GiB of the memory model per chip', done.stderr), done.stderr
  assert 'use a larger slice (config.mesh.slice)' in done.stderr


@pytest.mark.parametrize('run', ['moe', 'ling_mini_beta', 'dense_6p1b', 'dense'])
def test_every_paper_single_run_has_a_layout_on_its_own_slice(run):
  import importlib

  c = importlib.import_module(f'configs.{run}').get_config('paper')
  assert c.mesh.slice == common.paper_slice(c.train.batch_size)
  resolved = layout.resolve(c)
  moved = abs(resolved.train.batch_size - c.train.batch_size) / c.train.batch_size
  assert moved <= layout.PLAN_BATCH_TOLERANCE


def test_a_microbatched_layout_evaluates_a_microbatch_at_a_time():
  c = moe_config.get_config('paper')
  c.unlock()
  c.mesh.slice = 'h100x8'  # 32 microbatches of 16 sequences
  resolved = layout.resolve(c)
  assert resolved.train.eval_batch_size == resolved.train.batch_size // (
      resolved.train.grad_accum_steps
  )
  assert resolved.train.grad_accum_steps > 1
  single = layout.resolve(_smoke(slice='v5e-4'))  # one microbatch: the eval batch as configured
  assert single.train.eval_batch_size == 0


def test_smaller_names_the_members_that_no_longer_fit_one_size_down(tmp_path):
  """The paper MoE's own slice is v5p-128; one size down is v5p-64 (32 chips of 95 GiB). At 1,024
  layers its f32 train state alone (206B parameters x 16 bytes) is 103 GiB a chip there."""
  command = [
      sys.executable,
      '-m',
      'experiments.compile',
      '--config=configs/moe.py',
      '--smaller',
      '--config.model.n_layers=1024',
  ]
  done = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1, done.stdout + done.stderr
  assert 'moe_paper' in done.stdout and 'v5p-64' in done.stdout and 'NO LAYOUT' in done.stdout
  assert 'do not fit v5p-64: moe_paper' in done.stderr


def test_list_at_paper_scale_reads_no_corpus_and_shows_the_batch_as_run():
  from configs import granularity
  from experiments import listing

  base = granularity.get_config('paper')
  assert base.data.source == 'tokens' and not base.data.paths  # no corpus named
  lines = listing.table(base, granularity.get_sweep('paper')).splitlines()
  g0 = [line for line in lines if ' g0_G2 ' in line]
  assert len(g0) == 1 and ' 96(98) ' in g0[0]  # Eq. 3's 98 sequences, run as 96 on v5p-32
