"""Training loop: learning, exact resume, equivalences of the step's options, the schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dense as dense_config
from configs import moe as moe_config
from ling_jax import data as data_lib
from ling_jax import metrics as metrics_lib
from ling_jax import moe as moe_lib
from ling_jax import optim
from ling_jax import train as train_lib


def smoke(kind='moe', steps=10, **sections):
  c = (moe_config if kind == 'moe' else dense_config).get_config('smoke')
  c.train.tokens = steps * c.train.batch_size * c.train.seq_len
  c.train.async_checkpoint = False
  for section, fields in sections.items():
    c[section].update(fields)
  return c


@pytest.mark.parametrize(
    'kind,router', [('moe', 'softmax'), ('moe', 'sigmoid_bias'), ('dense', 'softmax')]
)
def test_fifty_steps_lower_the_loss(tmp_path, kind, router):
  c = smoke(kind, steps=50, moe=dict(router=router), train=dict(checkpoint_every=50))
  summary = train_lib.train(c, str(tmp_path))
  losses = metrics_lib.train_losses(tmp_path)
  assert len(losses) == 50 and summary['status'] == 'finished'
  assert np.mean(losses[-5:]) < losses[0] - 1.0  # uniform over 64 tokens starts at ln 64 = 4.16
  assert summary['final_eval_loss'] < losses[0] - 1.0


def test_stopped_and_resumed_run_repeats_the_uninterrupted_losses(tmp_path):
  c = smoke(steps=20, moe=dict(router='sigmoid_bias'), train=dict(checkpoint_every=5))
  train_lib.train(c, str(tmp_path / 'straight'))
  stopped = train_lib.train(c, str(tmp_path / 'resumed'), stop_at_step=10)
  assert stopped['status'] == 'stopped' and stopped['final_step'] == 10
  assert not (tmp_path / 'resumed' / metrics_lib.SUMMARY_FILE).exists()
  resumed = train_lib.train(c, str(tmp_path / 'resumed'))
  assert resumed['status'] == 'finished'
  np.testing.assert_allclose(
      metrics_lib.train_losses(tmp_path / 'resumed'),
      metrics_lib.train_losses(tmp_path / 'straight'),
      rtol=1e-6,
  )
  # A finished run asked again returns its summary without training.
  assert (
      train_lib.train(c, str(tmp_path / 'resumed'))['final_train_loss']
      == resumed['final_train_loss']
  )


def first_batch(c):
  return jnp.asarray(next(data_lib.Dataset(c).train_iterator()))


@pytest.mark.parametrize('remat', ['none', 'full', 'dots'])
def test_scan_unrolled_and_remat_give_the_same_loss_and_gradients(remat):
  results = []
  for scan in (True, False):
    c = smoke(model=dict(scan_layers=scan, remat=remat, n_layers=3, num_dense_layers=1))
    program = train_lib.Trainer.build(c)
    state = program.init_state()
    grad_fn = jax.jit(jax.value_and_grad(program.loss, has_aux=True))  # eager runs op by op
    (loss, _), grads = grad_fn(state.params, state.router_bias, first_batch(c))
    results.append((loss, grads))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_gradient_accumulation_matches_the_full_batch():
  results = []
  for accum in (1, 2):
    c = smoke('dense', train=dict(grad_accum_steps=accum))
    program = train_lib.Trainer.build(c)
    state = program.init_state()
    grads, aux = jax.jit(program.gradients)(state.params, state.router_bias, first_batch(c))
    results.append((grads, aux['ce'].mean()))
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)


def test_router_bias_moves_only_by_the_sign_rule():
  c = smoke(moe=dict(router='sigmoid_bias', bias_update_rate=0.01, load_balance_coef=0.0))
  program = train_lib.Trainer.build(c)
  state = program.init_state()
  batch = first_batch(c)
  _, aux = jax.jit(program.loss)(state.params, state.router_bias, batch)
  bias_before = state.router_bias['moe_layers']['ffn']['router_bias']
  expected = moe_lib.bias_update(bias_before, aux['stats']['expert_counts'], 0.01)
  assert 'router_bias' not in str(jax.tree_util.tree_structure(state.opt_state))
  new_state, _ = jax.jit(program.train_step)(state, batch)
  np.testing.assert_allclose(
      new_state.router_bias['moe_layers']['ffn']['router_bias'], expected, atol=1e-7
  )


def test_weight_decay_skips_norm_scales():
  c = smoke()
  params = train_lib.Trainer.build(c).init_state().params
  mask = optim.decay_mask(params)
  flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
  assert not any(m for path, m in flat.items() if 'norm' in path)
  assert all(m for path, m in flat.items() if 'kernel' in path or 'router' in path)


@pytest.mark.parametrize('shape', ['exponential', 'linear', 'cosine'])
def test_wsd_schedule_shape(shape):
  schedule = optim.wsd_schedule(
      1.0, 1000, warmup_fraction=0.01, decay_fraction=0.2, decay_shape=shape, final_fraction=0.1
  )
  assert float(schedule(0)) == pytest.approx(0.1)  # 1 / 10 warmup steps
  assert float(schedule(9)) == pytest.approx(1.0)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(799)) == pytest.approx(1.0)
  assert float(schedule(1000)) == pytest.approx(0.1, rel=1e-5)
  midpoint = {'exponential': 0.1**0.5, 'linear': 0.55, 'cosine': 0.55}[shape]
  assert float(schedule(900)) == pytest.approx(midpoint, rel=1e-4)


def _bf16_matmuls(config) -> int:
  """Matrix multiplications with bf16 operands in the train step's lowered program."""
  trainer = train_lib.Trainer.build(config)
  train_steps, _ = trainer.jit_steps()
  with jax.set_mesh(trainer.mesh):
    text = train_steps.lower(trainer.init_state(), trainer.batch_shape(1)).as_text()
  return sum('dot_general' in line and 'bf16' in line for line in text.splitlines())


def test_bf16_compute_on_f32_parameters_tracks_f32(tmp_path):
  losses, configs = {}, {}
  for dtype in ('float32', 'bfloat16'):
    c = configs[dtype] = smoke(
        steps=20,
        model=dict(compute_dtype=dtype),
        train=dict(checkpoint_every=20),
        metrics=dict(tensorboard=dtype == 'bfloat16'),
    )
    train_lib.train(c, str(tmp_path / dtype))
    losses[dtype] = metrics_lib.train_losses(tmp_path / dtype)
  params = train_lib.Trainer.build(c).init_state().params
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  np.testing.assert_allclose(losses['bfloat16'], losses['float32'], atol=0.1)
  # bf16 is really used: its matmuls take bf16 operands, f32's none, and the losses differ.
  assert _bf16_matmuls(configs['bfloat16']) >= 10 and _bf16_matmuls(configs['float32']) == 0
  assert losses['bfloat16'] != losses['float32']
  assert any(p.name.startswith('events') for p in (tmp_path / 'bfloat16' / 'tensorboard').iterdir())


def test_steps_per_call_changes_nothing_but_the_round_trips(tmp_path):
  """The same losses, evals and checkpoints, bit for bit, for 1 and 7 steps per jitted call."""
  runs = {}
  for spc in (1, 7):
    c = smoke(steps=23, train=dict(steps_per_call=spc, eval_every=5, checkpoint_every=10))
    summary = train_lib.train(c, str(tmp_path / str(spc)))
    records = metrics_lib.read_metrics(str(tmp_path / str(spc)))
    runs[spc] = (
        [r['loss'] for r in records if r['kind'] == 'train'],
        [(r['step'], r['eval_loss']) for r in records if r['kind'] == 'eval'],
        summary,
    )
  assert runs[1][0] == runs[7][0] and len(runs[1][0]) == 23
  assert runs[1][1] == runs[7][1] and [s for s, _ in runs[1][1]] == [5, 10, 15, 20, 23]
  assert sorted(p.name for p in (tmp_path / '7' / 'checkpoints').iterdir() if p.name.isdigit()) == [
      '20',
      '23',
  ]


def test_a_resumed_run_summarises_the_whole_run(tmp_path):
  """final_train_loss and the dropped share come from the whole metrics record, also when the
  log window spans the restart."""
  c = smoke(steps=12, train=dict(checkpoint_every=4, log_every=6))
  straight = train_lib.train(c, str(tmp_path / 'straight'))
  train_lib.train(c, str(tmp_path / 'resumed'), stop_at_step=8)
  resumed = train_lib.train(c, str(tmp_path / 'resumed'))
  losses = metrics_lib.train_losses(tmp_path / 'straight')
  assert (
      resumed['final_train_loss']
      == straight['final_train_loss']
      == pytest.approx(np.mean(losses[-6:]), rel=1e-12)
  )
  drops = [
      np.mean(r['dropped_fraction'])
      for r in metrics_lib.read_metrics(str(tmp_path / 'straight'))
      if r['kind'] == 'train'
  ]
  assert resumed['dropped_fraction'] == pytest.approx(np.mean(drops), rel=1e-12)


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_router_losses_are_reduced_over_layers_as_configured(reduction):
  c = smoke(model=dict(n_layers=3), moe=dict(router_loss_reduction=reduction))
  program = train_lib.Trainer.build(c)
  state = program._init()
  objective, aux = jax.jit(program.loss)(state.params, state.router_bias, first_batch(c))
  lb, z = np.asarray(aux['stats']['load_balance_loss']), np.asarray(aux['stats']['z_loss'])
  assert lb.shape == (3,)
  reduce = np.sum if reduction == 'sum' else np.mean
  expected = float(aux['ce']) + c.moe.load_balance_coef * reduce(lb) + c.moe.z_loss_coef * reduce(z)
  assert float(objective) == pytest.approx(expected, rel=1e-6)


def test_final_eval_reports_the_standard_error_of_the_fixed_set(tmp_path):
  # Dense: an MoE's capacity depends on the batch, so one sequence alone routes differently.
  c = smoke('dense', steps=6, train=dict(eval_sequences=16, eval_batch_size=8, eval_batches=1))
  summary = train_lib.train(c, str(tmp_path))
  program = train_lib.Trainer.build(c)
  assert summary['eval_tokens'] == 16 * c.train.seq_len
  # Naive reference: the checkpointed final state, each held-out sequence on its own.
  from ling_jax import checkpoint as checkpoint_lib

  ckpt = checkpoint_lib.Checkpointer(str(tmp_path / 'checkpoints'), 2, False)
  dataset = data_lib.Dataset(c)
  state, _ = ckpt.restore(6, program.init_state(), dataset.train_iterator())
  ckpt.close()
  per_sequence = []
  eval_loss = jax.jit(program.eval_loss)
  for batch in dataset.eval_batches():
    for row in batch:
      tokens = jnp.asarray(row[None])
      per_sequence.append(float(eval_loss(state.params, state.router_bias, tokens)[0]))
  assert len(per_sequence) == 16
  assert summary['final_eval_loss'] == pytest.approx(np.mean(per_sequence), rel=1e-5)
  assert summary['eval_loss_stderr'] == pytest.approx(np.std(per_sequence, ddof=1) / 4, rel=1e-4)


def test_an_unreadable_newest_checkpoint_is_moved_aside_and_the_previous_one_resumes(tmp_path):
  c = smoke(steps=15, train=dict(checkpoint_every=5, keep_checkpoints=3))
  train_lib.train(c, str(tmp_path / 'straight'))
  cut = tmp_path / 'cut'
  train_lib.train(c, str(cut), stop_at_step=10)
  newest = cut / 'checkpoints' / '10'
  state_files = [p for p in (newest / 'state').rglob('*') if p.is_file() and p.stat().st_size]
  for p in state_files:  # a disk that lost the arrays' data
    p.write_bytes(b'')
  resumed = train_lib.train(c, str(cut))
  assert resumed['status'] == 'finished' and resumed['final_step'] == 15
  kept = [p.name for p in (cut / 'checkpoints').iterdir() if p.name.startswith('10.unreadable-')]
  assert len(kept) == 1  # moved aside for a post-mortem, not deleted
  # Steps 6-10 were trained again from step 5: the records of every step are the straight run's.
  np.testing.assert_array_equal(
      metrics_lib.train_losses(cut), metrics_lib.train_losses(tmp_path / 'straight')
  )


def _state_files(step_dir):
  return sorted(p for p in (step_dir / 'state').rglob('*') if p.is_file() and p.stat().st_size)


def test_a_checkpoint_whose_values_changed_after_the_save_is_moved_aside(tmp_path, caplog):
  """Well-formed files holding other values (what orbax cannot see) fail the saved fingerprint."""
  import orbax.checkpoint as ocp

  c = smoke(steps=15, train=dict(checkpoint_every=5, keep_checkpoints=3))
  train_lib.train(c, str(tmp_path / 'straight'))
  cut = tmp_path / 'cut'
  train_lib.train(c, str(cut), stop_at_step=10)
  state_dir = cut / 'checkpoints' / '10' / 'state'
  with ocp.StandardCheckpointer() as io:
    values = jax.tree.map(np.array, io.restore(state_dir))
    leaf = values['params']['embed']['embedding']
    leaf.flat[0] = np.nextafter(leaf.flat[0], np.float32(np.inf))  # one bit of one weight
    io.save(tmp_path / 'changed', values)
  import shutil

  shutil.rmtree(state_dir)
  shutil.copytree(tmp_path / 'changed', state_dir)
  resumed = train_lib.train(c, str(cut))
  assert resumed['status'] == 'finished'
  assert any(
      'fingerprint' in r.getMessage() and 'step 10' in r.getMessage() for r in caplog.records
  )
  assert [p.name for p in (cut / 'checkpoints').iterdir() if p.name.startswith('10.unreadable-')]
  np.testing.assert_array_equal(
      metrics_lib.train_losses(cut), metrics_lib.train_losses(tmp_path / 'straight')
  )


def test_flipped_bytes_never_restore_a_different_state(tmp_path):
  """Bytes flipped anywhere in the arrays' files: the step restores bit-identical, or is refused."""
  import shutil

  from ling_jax import checkpoint as checkpoint_lib

  c = smoke(steps=10, train=dict(checkpoint_every=5, keep_checkpoints=3))
  train_lib.train(c, str(tmp_path / 'run'))
  pristine = tmp_path / 'run' / 'checkpoints'
  program, dataset = train_lib.Trainer.build(c), data_lib.Dataset(c)

  template = program.init_state()  # fixes shapes and shardings; its values are not read

  def restore_latest(directory):
    ckpt = checkpoint_lib.Checkpointer(str(directory), 3, False)
    try:
      return ckpt.restore_latest(template, dataset.train_iterator())
    finally:
      ckpt.close()

  step, reference, _ = restore_latest(pristine)
  assert step == 10
  biggest = max(_state_files(pristine / '10'), key=lambda p: p.stat().st_size)
  size = biggest.stat().st_size
  outcomes = []
  for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
    trial = tmp_path / f'flip{fraction}'
    shutil.copytree(pristine, trial)
    target = trial / biggest.relative_to(pristine)
    data = bytearray(target.read_bytes())
    at = int(fraction * size)
    data[at : at + 64] = bytes(b ^ 0xFF for b in data[at : at + 64])
    target.write_bytes(bytes(data))
    step, state, _ = restore_latest(trial)
    if step == 10:  # accepted: must be exactly what was saved
      for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    outcomes.append(step)
  assert set(outcomes) <= {5, 10} and 5 in outcomes  # the corruption is seen, not restored


def test_each_file_of_a_checkpoint_deleted_or_truncated_never_restores_a_different_state(
    tmp_path,
):
  """Every kind of file of a real checkpoint step (orbax's metadata and commit markers, the
  arrays' manifests and data, the data iterator's state, the meta item), deleted or cut to half:
  the step restores bit-identical, or the one before it does and the bad step is kept."""
  import re
  import shutil

  from ling_jax import checkpoint as checkpoint_lib

  c = smoke(steps=10, train=dict(checkpoint_every=5, keep_checkpoints=3))
  train_lib.train(c, str(tmp_path / 'run'))
  pristine = tmp_path / 'run' / 'checkpoints'
  program, dataset = train_lib.Trainer.build(c), data_lib.Dataset(c)
  template = program.init_state()

  def restore(directory, step=None):
    ckpt = checkpoint_lib.Checkpointer(str(directory), 3, False)
    try:
      if step is not None:
        return (step, *ckpt.restore(step, template, dataset.train_iterator()))
      return ckpt.restore_latest(template, dataset.train_iterator())
    finally:
      ckpt.close()

  saved = {step: restore(pristine, step)[1] for step in (5, 10)}
  kinds = {}  # one file per kind: content-addressed names (hex) count as one kind
  for path in sorted(p for p in (pristine / '10').rglob('*') if p.is_file()):
    kind = re.sub(r'[0-9a-f]{32}', '<hash>', str(path.relative_to(pristine / '10')))
    kinds.setdefault(kind, path)
  assert len(kinds) >= 10, sorted(kinds)
  outcomes = {}
  for kind, path in kinds.items():
    for damage in ('deleted', 'truncated'):
      trial = tmp_path / f'{damage}-{len(outcomes)}'
      shutil.copytree(pristine, trial)
      target = trial / path.relative_to(pristine)
      if damage == 'deleted':
        target.unlink()
      else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
      step, state, _ = restore(trial)
      assert step in (5, 10), (kind, damage, step)
      for a, b in zip(jax.tree.leaves(saved[step]), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f'{kind} {damage}')
      kept = [p.name for p in trial.iterdir() if p.name == '10' or p.name.startswith('10.')]
      assert kept, f'{kind} {damage}: step 10 was deleted'
      outcomes[(kind, damage)] = step
  refused = {k for k, step in outcomes.items() if step == 5}
  # Losing the arrays, their manifest, the data iterator's state, the meta item or the commit
  # marker refuses the step (the rest is metadata orbax does not need to restore).
  for kind in (
      'state/d/<hash>',
      'state/manifest.ocdbt',
      'state/_METADATA',
      'data/process_0-of-1.json',
      'meta/metadata',
      'commit_success.txt',
  ):
    assert (kind, 'deleted') in refused, (kind, outcomes)


def test_object_store_metrics_are_flushed_before_every_checkpoint(tmp_path, monkeypatch):
  """On gs:// lines wait for a chunk of `flush_every`; a crash after a checkpoint must not take
  the metrics of the steps that checkpoint holds with it."""
  monkeypatch.setattr(metrics_lib, 'is_remote', lambda path: True)  # chunked, as on gs://
  c = smoke(steps=12, train=dict(checkpoint_every=5), metrics=dict(flush_every=1000))
  train_lib.train(c, str(tmp_path), stop_at_step=10)  # as if killed right after step 10
  chunks = sorted((tmp_path / metrics_lib.CHUNK_DIR).iterdir())
  assert len(chunks) >= 2  # one at each checkpoint, not one at the end
  assert [r['step'] for r in metrics_lib.read_metrics(str(tmp_path)) if r['kind'] == 'train'] == [
      *range(1, 11)
  ]


def test_fingerprint_leaf_names_do_not_depend_on_the_container():
  from ling_jax import checkpoint as checkpoint_lib

  name = checkpoint_lib._leaf_name  # pylint: disable=protected-access
  assert name("['params']['embed']['embedding']") == 'params/embed/embedding'
  assert name(".params['embed']['embedding']") == 'params/embed/embedding'
  assert (
      name(".opt_state[1][0].mu['wo']")
      == name("['opt_state'][1][0].mu['wo']")
      == ('opt_state/1/0/mu/wo')
  )


@pytest.mark.parametrize(
    'dispatch, transport',
    [('einsum', ''), ('blocks', ''), ('einsum', 'a2a'), ('einsum', 'ring')],
)
def test_a_profile_can_tell_routing_dispatch_expert_matmuls_and_combine_apart(dispatch, transport):
  """The MoE layer's phases are named scopes: a profile's op names carry them."""
  import re

  moe = dict(dispatch=dispatch, capacity_factor=1.25 if dispatch == 'einsum' else 0.0)
  mesh, train = {}, {}
  if transport:  # an expert axis: the routed experts go through the transport
    moe['transport'] = transport
    mesh, train = dict(num_devices=0, data=2, expert=4), dict(batch_size=8)
  c = smoke(moe=moe, mesh=mesh, train=train)
  trainer = train_lib.Trainer.build(c)
  train_steps, _ = trainer.jit_steps()
  with jax.set_mesh(trainer.mesh):
    text = train_steps.lower(trainer.init_state(), trainer.batch_shape(1)).as_text(debug_info=True)
  scopes = ('router', 'dispatch_plan', 'expert_matmuls', 'combine')
  for scope in scopes + ((f'transport_{transport}',) if transport else ()):
    assert re.search(rf'loc\("(?:[^"]*/)?{scope}/', text), scope
