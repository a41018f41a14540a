"""Sharded training on eight CPU devices against the single-device model."""

import collections
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import moe as moe_config
from ling_jax import config as config_lib
from ling_jax import data as data_lib
from ling_jax import dispatch
from ling_jax import expert_parallel
from ling_jax import metrics as metrics_lib
from ling_jax import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHES = {
    'data8': dict(data=8),
    'data2_expert4': dict(data=2, expert=4),
    'fsdp2_expert4': dict(data=1, fsdp=2, expert=4),
    'expert8': dict(data=1, expert=8),
    'data2_fsdp2_expert2': dict(data=2, fsdp=2, expert=2),
}


def config(mesh=None, transport='a2a', capacity_factor=0.0, steps=4, dispatch='einsum', **model):
  c = moe_config.get_config('smoke')
  c.model.update(n_experts=8, top_k=2, n_shared=1, d_expert=16, **model)
  c.moe.update(transport=transport, capacity_factor=capacity_factor, dispatch=dispatch)
  c.train.update(
      batch_size=8, seq_len=16, tokens=steps * 8 * 16, checkpoint_every=2, async_checkpoint=False
  )
  if mesh is None:
    c.mesh.update(num_devices=1, data=1)
  else:
    c.mesh.update(num_devices=8, data=-1, fsdp=1, expert=1, tensor=1)
    c.mesh.update(**mesh)
  return c


_SINGLE_DEVICE = {}


def single_device(dispatch='einsum', **moe):
  """The single-device reference of config(), computed once per dispatch for all meshes."""
  key = (dispatch, tuple(sorted(moe.items())))
  if key not in _SINGLE_DEVICE:
    c = config(dispatch=dispatch)
    c.moe.update(**moe)
    _SINGLE_DEVICE[key] = loss_and_grads(c)
  return _SINGLE_DEVICE[key]


def loss_and_grads(c):
  program = train_lib.Trainer.build(c)
  with jax.set_mesh(program.mesh):
    state = program.init_state()
    tokens = program.batch(next(data_lib.Dataset(c).train_iterator()))
    fn = jax.jit(lambda s, t: program.gradients(s.params, s.router_bias, t))
    grads, aux = fn(state, tokens)
    return float(aux['ce'].mean()), jax.device_get(grads), jax.device_get(aux['stats'])


@pytest.mark.parametrize('transport', ['a2a', 'ring'])
@pytest.mark.parametrize('mesh', list(MESHES))
def test_loss_and_gradients_equal_the_single_device_model(mesh, transport):
  loss, grads, _ = single_device()
  sharded_loss, sharded_grads, stats = loss_and_grads(config(MESHES[mesh], transport))
  assert sharded_loss == pytest.approx(loss, rel=1e-5)
  assert float(np.max(stats['dropped_fraction'])) == 0.0
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(sharded_grads)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    'mesh,dispatch',
    [('data8', 'ragged_dot'), ('data8', 'tokamax'), ('data2_expert4', 'ragged_dot')],
)
def test_dropless_dispatch_on_meshes_equals_the_single_device_model(mesh, dispatch, monkeypatch):
  """The grouped-matmul dispatches run on data-parallel meshes too (the batch shards' own
  dispatch) and with an expert axis (dropless exchange), with the single device's loss and
  gradients."""
  from ling_jax import grouped_matmul

  calls = []
  make = grouped_matmul.make
  monkeypatch.setattr(grouped_matmul, 'make', lambda *a: calls.append(a) or make(*a))
  extra = dict(tokamax_implementation='xla') if dispatch == 'tokamax' else {}
  loss, grads, _ = single_device(dispatch, **extra)
  sharded = config(MESHES[mesh], 'ring', dispatch=dispatch)
  sharded.moe.update(**extra)
  calls.clear()
  sharded_loss, sharded_grads, stats = loss_and_grads(sharded)
  if mesh == 'data8':  # the local path: each batch shard through the configured grouped matmul
    assert calls and calls[0][0] == dispatch
  assert sharded_loss == pytest.approx(loss, rel=1e-5)
  assert float(np.max(stats['dropped_fraction'])) == 0.0
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(sharded_grads)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('mesh', [dict(data=2, tensor=2, expert=2), dict(data=2, fsdp=2, tensor=2)])
def test_tensor_parallel_meshes_match_the_single_device_model(mesh):
  loss, grads, _ = single_device()
  sharded_loss, sharded_grads, _ = loss_and_grads(config(mesh))
  assert sharded_loss == pytest.approx(loss, rel=1e-5)
  # Matmuls split over `tensor` sum their partial products in another order: f32 rounding.
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(sharded_grads)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_parameters_are_sharded_as_the_rules_say():
  c = config(dict(data=1, fsdp=2, expert=4))
  program = train_lib.Trainer.build(c)
  state = program.init_state()
  wi = state.params['moe_layers']['ffn']['wi_gate']  # [layers, E, D, F]
  assert wi.sharding.spec == jax.sharding.PartitionSpec(None, 'expert', 'fsdp', 'tensor')
  assert wi.addressable_shards[0].data.shape == (2, 2, 16, 16)
  mu = state.opt_state[1][0].mu['moe_layers']['ffn']['wi_gate']
  assert mu.sharding.spec == wi.sharding.spec


@pytest.fixture(scope='module')
def single_run_losses(tmp_path_factory):
  """The losses of the unsharded 20-step run, trained once for every mesh compared with it."""
  workdir = tmp_path_factory.mktemp('single')
  train_lib.train(config(steps=20), str(workdir))
  return metrics_lib.train_losses(workdir)


@pytest.mark.parametrize(
    'mesh,transport', [('data2_expert4', 'a2a'), ('fsdp2_expert4', 'ring'), ('data8', 'a2a')]
)
def test_twenty_sharded_steps_repeat_the_unsharded_losses(
    tmp_path, mesh, transport, single_run_losses
):
  train_lib.train(config(MESHES[mesh], transport, steps=20), str(tmp_path / 'sharded'))
  np.testing.assert_allclose(
      metrics_lib.train_losses(tmp_path / 'sharded'), single_run_losses, rtol=2e-5
  )


def naive_a2a_drops(experts_BxTxK, n_data, n_expert, n_experts, capacity_factor):
  """The a2a drop rule by hand: per source shard and destination, first come first served in
  token order; then per destination expert, in order of source shard and arrival."""
  shards = experts_BxTxK.reshape(n_data * n_expert, -1, experts_BxTxK.shape[-1])
  T, K = shards.shape[1:]
  El = n_experts // n_expert
  c_send = dispatch.capacity(T * K, n_expert, T * min(K, El), capacity_factor)
  slots = dispatch.capacity(n_expert * T * K, n_experts, n_expert * c_send, capacity_factor)
  dropped = 0
  for d in range(n_data):
    arrivals = collections.defaultdict(list)  # destination -> local experts in arrival order
    for s in range(n_expert):
      sent = collections.Counter()
      for e in shards[d * n_expert + s].reshape(-1):
        if sent[e // El] < c_send:
          sent[e // El] += 1
          arrivals[e // El].append(e % El)
        else:
          dropped += 1
      for dest in range(n_expert):  # the rest of the send buffer is padding
        arrivals[dest] += [-1] * (c_send - sent[dest])
    for experts in arrivals.values():  # the receive buffer: source by source, slot by slot
      load = collections.Counter()
      for e in experts:
        if e < 0:
          continue
        load[e] += 1
        dropped += load[e] > slots
  return dropped


def first_layer_experts(c):
  """(dropped fraction of the first MoE layer under the mesh of `c`, run twice identically;
  that layer's routing recomputed on one device)."""
  program = train_lib.Trainer.build(c)
  with jax.set_mesh(program.mesh):
    state = program.init_state()
    tokens = program.batch(next(data_lib.Dataset(c).train_iterator()))
    run = jax.jit(lambda s, t: program.model(s.params, s.router_bias)(t[:, :-1]))
    (logits, stats), (logits2, _) = run(state, tokens), run(state, tokens)
    np.testing.assert_array_equal(logits, logits2)
  model = program.model(jax.device_get(state.params), jax.device_get(state.router_bias))
  x = model.embed(jnp.asarray(jax.device_get(tokens))[:, :-1])
  layer = jax.tree.map(lambda a: a[0], model.moe_layers)
  h = x + layer.attn(layer.attn_norm(x))
  routing = layer.ffn.route(layer.ffn_norm(h).reshape(-1, x.shape[-1]))
  return float(stats['dropped_fraction'][0]), np.asarray(routing.experts_TxK)


def test_small_capacity_drops_exactly_and_deterministically():
  dropped, experts = first_layer_experts(config(dict(data=2, expert=4), 'a2a', capacity_factor=0.5))
  experts = experts.reshape(8, -1, 2)
  expected = naive_a2a_drops(experts, 2, 4, 8, 0.5)
  assert expected > 0
  assert round(dropped * experts.size) == expected


def test_data_parallel_capacity_is_per_shard_and_exact():
  dropped, experts = first_layer_experts(config(dict(data=8), capacity_factor=0.5))
  shards = experts.reshape(8, -1, 2)
  slots = dispatch.capacity(shards.shape[1] * 2, 8, shards.shape[1], 0.5)
  expected = 0
  for shard in shards:  # first come, first served per expert, in token order
    load = collections.Counter()
    for e in shard.reshape(-1):
      load[e] += 1
      expected += load[e] > slots
  assert expected > 0
  assert round(dropped * experts.size) == expected


def test_checkpoint_written_under_one_mesh_restores_under_another(tmp_path):
  straight = tmp_path / 'straight'
  moved = tmp_path / 'moved'
  train_lib.train(config(dict(data=8), steps=8), str(straight))
  stopped = train_lib.train(config(dict(data=8), steps=8), str(moved), stop_at_step=4)
  assert stopped['final_step'] == 4
  resumed = train_lib.train(config(dict(data=2, expert=4), steps=8), str(moved))
  assert resumed['status'] == 'finished'
  # Restored, not retrained: the state's fingerprint does not depend on its sharding.
  assert not [p.name for p in (moved / 'checkpoints').iterdir() if 'unreadable' in p.name]
  np.testing.assert_allclose(
      metrics_lib.train_losses(moved), metrics_lib.train_losses(straight), rtol=2e-5
  )


def test_ragged_a2a_offsets_on_a_worked_example():
  # counts[i, j]: rows shard i sends to shard j.
  counts = jnp.array([[1, 2, 0], [3, 4, 1], [0, 2, 5]])
  expected = {  # (input_offsets, send_sizes, output_offsets, recv_sizes)
      0: ([0, 1, 3], [1, 2, 0], [0, 0, 0], [1, 3, 0]),
      1: ([0, 3, 7], [3, 4, 1], [1, 2, 0], [2, 4, 2]),
      2: ([0, 0, 2], [0, 2, 5], [4, 6, 1], [0, 1, 5]),
  }
  for shard, want in expected.items():
    got = expert_parallel.ragged_a2a_params(counts, shard)
    for g, w in zip(got, want):
      np.testing.assert_array_equal(g, w)
  # Every receiver's slices tile its buffer exactly: offsets are the senders' running sums.
  for receiver in range(3):
    starts = [int(expert_parallel.ragged_a2a_params(counts, s)[2][receiver]) for s in range(3)]
    sizes = [int(counts[s, receiver]) for s in range(3)]
    assert starts == list(np.cumsum([0] + sizes[:-1]))


def test_mesh_and_batch_errors_name_the_field():
  c = config(dict(data=8))
  c.train.update(batch_size=4, tokens=4 * 4 * 16)
  with pytest.raises(config_lib.ConfigError, match='config.train.batch_size=4'):
    train_lib.Trainer.build(c)
  bad = config(dict(data=3))
  with pytest.raises(config_lib.ConfigError, match='config.mesh'):
    train_lib.Trainer.build(bad)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_on_one_mesh_and_a_signal_to_either_stops_both(tmp_path):
  """Two processes of four devices each train one eight-device mesh; a SIGTERM to the process
  that writes no metrics stops both after the same step with one checkpoint (exit 75), and the
  rerun finishes with the single-process losses, every step once. (Over more steps the two
  processes' reduction order moves the losses apart by more than the tolerance: 1e-4 by step
  80.)"""
  steps = 60
  reference = config(dict(data=2, expert=4), steps=steps)
  reference.train.update(checkpoint_every=1000, eval_every=1000)
  train_lib.train(reference, str(tmp_path / 'single'))
  multi = tmp_path / 'multi'
  args = [
      '--config=configs/moe.py:smoke',
      f'--workdir={multi}',
      '--config.model.n_experts=8',
      '--config.model.d_expert=16',
      '--config.moe.capacity_factor=0',
      '--config.train.batch_size=8',
      '--config.train.seq_len=16',
      f'--config.train.tokens={steps * 8 * 16}',
      '--config.train.checkpoint_every=1000',
      '--config.train.eval_every=1000',
      '--config.train.log_every=1',
      '--config.train.async_checkpoint=False',
      '--config.mesh.num_devices=8',
      '--config.mesh.data=2',
      '--config.mesh.expert=4',
      '--num_processes=2',
  ]
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='4')

  def launch():
    port = _free_port()
    return [
        subprocess.Popen(
            [
                sys.executable,
                '-m',
                'experiments.run',
                *args,
                f'--coordinator=127.0.0.1:{port}',
                f'--process_id={i}',
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]

  procs = launch()
  metrics, deadline = multi / 'metrics.jsonl', time.time() + 400
  while not (metrics.exists() and metrics.read_text().count('"kind": "train"') >= 5):
    assert all(p.poll() is None for p in procs) and time.time() < deadline, [
        p.communicate()[0] for p in procs
    ]
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGTERM)
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [75, 75], outputs
  saved = [int(p.name) for p in (multi / 'checkpoints').iterdir() if p.name.isdigit()]
  trained = [r['step'] for r in metrics_lib.read_metrics(str(multi)) if r['kind'] == 'train']
  assert len(saved) == 1 and saved[0] == max(trained) < steps, (saved, max(trained))

  procs = launch()
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outputs
  records = [r for r in metrics_lib.read_metrics(str(multi)) if r['kind'] == 'train']
  assert [r['step'] for r in records] == list(range(1, steps + 1))
  np.testing.assert_allclose(
      metrics_lib.train_losses(multi), metrics_lib.train_losses(tmp_path / 'single'), rtol=2e-5
  )


def test_parameters_carry_their_logical_axes_from_where_they_are_created():
  """The names flax's metadata gives each parameter, against a list written out by hand."""
  program = train_lib.Trainer.build(config(dict(data=8)))
  expected = {
      ('embed', 'embedding'): ('vocab', 'embed'),
      ('unembed', 'kernel'): ('embed', 'vocab'),
      ('final_norm', 'scale'): (None,),
      ('moe_layers', 'attn', 'q', 'kernel'): ('layers', 'embed', 'heads'),
      ('moe_layers', 'attn', 'o', 'kernel'): ('layers', 'heads', 'embed'),
      ('moe_layers', 'ffn', 'router'): ('layers', 'embed', None),
      ('moe_layers', 'ffn', 'wi_gate'): ('layers', 'exp', 'embed', 'exp_mlp'),
      ('moe_layers', 'ffn', 'wo'): ('layers', 'exp', 'exp_mlp', 'embed'),
  }
  for path, names in expected.items():
    assert program.parameter_axes[path] == names, path


def test_a_parameter_without_logical_axes_is_an_error_naming_it():
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from ling_jax import sharding  # pylint: disable=import-outside-toplevel

  class WithNewWeight(nnx.Module):

    def __init__(self):
      self.new_weight = nnx.Param(jnp.zeros((4, 2)))  # no out_sharding

  with pytest.raises(ValueError, match='new_weight: a 2-dimensional Param without logical axes'):
    sharding.parameter_axes(nnx.state(WithNewWeight(), nnx.Param))
  axes = {('ffn', 'wi_gate'): ('exp', 'embed', 'exp_mlp')}
  assert (
      sharding.logical_axes(('opt_state', 'mu', 'ffn', 'wi_gate'), 3, axes)
      == axes[('ffn', 'wi_gate')]
  )
  with pytest.raises(ValueError, match='opt_state/stray: a 2-dimensional train-state leaf'):
    sharding.logical_axes(('opt_state', 'stray'), 2, axes)
  with pytest.raises(ValueError, match='ffn/wi_gate: 4 dimensions'):
    sharding.logical_axes(('ffn', 'wi_gate'), 4, axes)
