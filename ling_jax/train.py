"""Training: state, jitted train and eval steps, and the loop with eval, checkpoints, metrics.

The train state is a plain pytree of pure dicts, so orbax, optax and shardings see arrays only:
  params       -- every nnx.Param (trained, AdamW)
  router_bias  -- the aux-loss-free router's selection bias (updated by the sign rule only)
  opt_state    -- optax state of params
  step         -- optimizer steps taken
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
from etils import epath
from flax import nnx

from ling_jax import checkpoint as checkpoint_lib
from ling_jax import config as config_lib
from ling_jax import data as data_lib
from ling_jax import flops
from ling_jax import metrics as metrics_lib
from ling_jax import model as model_lib
from ling_jax import moe as moe_lib
from ling_jax import optim
from ling_jax import sharding as sharding_lib

log = logging.getLogger('ling_jax')


@dataclasses.dataclass
class Program:
  """Everything static about a run: its architecture, model graph, optimizer and step count."""

  config: Any
  arch: flops.Architecture
  graphdef: Any
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  total_steps: int
  mesh: jax.sharding.Mesh

  @classmethod
  def build(cls, config) -> 'Program':
    arch = config_lib.validate(config)
    mesh = sharding_lib.make_mesh(config)
    shards = sharding_lib.batch_shards(config, mesh)
    micro = config.train.batch_size // config.train.grad_accum_steps
    if micro % shards:
      raise config_lib.ConfigError(
          f'config.train.batch_size={config.train.batch_size}: each of the '
          f'{config.train.grad_accum_steps} microbatches must split over the {shards} batch '
          'shards of config.mesh; change the batch, grad_accum_steps or the mesh.')
    total_steps = config_lib.num_steps(config, arch)
    optimizer, schedule = optim.make_optimizer(config.train, total_steps)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: model_lib.Transformer(config, rngs=nnx.Rngs(0))))
    return cls(config, arch, graphdef, optimizer, schedule, total_steps, mesh)

  def _init(self) -> dict:
    model = model_lib.Transformer(self.config, rngs=nnx.Rngs(params=self.config.train.seed))
    _, params, router_bias = nnx.split(model, nnx.Param, moe_lib.RouterBias)
    params, router_bias = nnx.to_pure_dict(params), nnx.to_pure_dict(router_bias)
    return dict(params=params, router_bias=router_bias, opt_state=self.optimizer.init(params),
                step=jnp.zeros((), jnp.int32))

  def state_shardings(self):
    return sharding_lib.state_shardings(self.config, self.mesh, jax.eval_shape(self._init))

  def init_state(self) -> dict:
    """The initial state, created already sharded over the mesh."""
    with jax.set_mesh(self.mesh):
      return jax.jit(self._init, out_shardings=self.state_shardings())()

  def batch(self, local_tokens) -> jax.Array:
    """This process's rows of a batch as one global array sharded over the batch axes."""
    return sharding_lib.global_batch(self.config, self.mesh, np.asarray(local_tokens))

  def jit_steps(self):
    """(train_step, eval_loss), each one jax.jit with explicit shardings; the state is donated."""
    state = self.state_shardings()
    batch = NamedSharding(self.mesh, sharding_lib.batch_spec(self.config))
    replicated = NamedSharding(self.mesh, P())
    train_step = jax.jit(self.train_step, in_shardings=(state, batch),
                         out_shardings=(state, replicated), donate_argnums=(0,))
    eval_loss = jax.jit(self.eval_loss, in_shardings=(state['params'], state['router_bias'], batch),
                        out_shardings=replicated)
    return train_step, eval_loss

  def model(self, params, router_bias) -> model_lib.Transformer:
    return nnx.merge(self.graphdef, params, router_bias)

  # --- Loss ----------------------------------------------------------------------------------

  def loss(self, params, router_bias, tokens_BxL1):
    """(training objective, aux): cross-entropy plus the mean over MoE layers of the router losses."""
    logits_BxLxV, stats = self.model(params, router_bias)(tokens_BxL1[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, tokens_BxL1[:, 1:]).mean()
    objective = ce
    if stats:
      moe = self.config.moe
      objective += (moe.load_balance_coef * stats['load_balance_loss'].mean() +
                    moe.z_loss_coef * stats['z_loss'].mean())
    return objective, dict(ce=ce, stats=stats)

  # --- Steps ---------------------------------------------------------------------------------

  def gradients(self, params, router_bias, tokens_BxL1):
    """(mean gradient of the objective, aux per microbatch) over `grad_accum_steps` microbatches."""
    accum = self.config.train.grad_accum_steps
    micro_MxbxL1 = tokens_BxL1.reshape(accum, -1, tokens_BxL1.shape[-1])
    grad_fn = jax.value_and_grad(self.loss, has_aux=True)

    def micro_step(grads_sum, tokens_bxL1):
      (objective, aux), grads = grad_fn(params, router_bias, tokens_bxL1)
      return jax.tree.map(jnp.add, grads_sum, grads), dict(objective=objective, **aux)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, aux = jax.lax.scan(micro_step, zeros, micro_MxbxL1)
    return jax.tree.map(lambda g: g / accum, grads), aux

  def train_step(self, state: dict, tokens_BxL1) -> tuple[dict, dict]:
    grads, aux = self.gradients(state['params'], state['router_bias'], tokens_BxL1)
    updates, opt_state = self.optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)

    router_bias = state['router_bias']
    stats = jax.tree.map(lambda s: s.mean(axis=0), aux['stats'])
    if router_bias:
      counts_LxE = aux['stats']['expert_counts'].sum(axis=0)
      rate = self.config.moe.bias_update_rate
      router_bias = jax.tree.map(lambda b: moe_lib.bias_update(b, counts_LxE, rate), router_bias)
    metrics = dict(loss=aux['ce'].mean(), objective=aux['objective'].mean(),
                   grad_norm=optax.tree.norm(grads), learning_rate=self.schedule(state['step']),
                   **{k: v for k, v in stats.items() if k != 'expert_counts'})
    new_state = dict(params=params, router_bias=router_bias, opt_state=opt_state,
                     step=state['step'] + 1)
    return new_state, metrics

  def eval_loss(self, params, router_bias, tokens_BxL1):
    return self.loss(params, router_bias, tokens_BxL1)[1]['ce']


# --- The loop ----------------------------------------------------------------------------------


def _run_summary(program: Program, dataset, **extra) -> dict:
  c = program.config
  tokens_per_step = c.train.batch_size * c.train.seq_len
  tokens = program.total_steps * tokens_per_step
  s = flops.summary(program.arch)
  return dict(name=c.name, data_fingerprint=dataset.fingerprint, steps=program.total_steps,
              tokens_per_step=tokens_per_step, D=tokens, C=s['M'] * tokens,
              learning_rate=c.train.learning_rate, batch_size=c.train.batch_size,
              seq_len=c.train.seq_len, **s, **extra)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def train(config, workdir: str, stop_at_step: int | None = None) -> dict:
  """Trains (or resumes) the run of `config` in `workdir`; returns its summary record.

  `stop_at_step` ends the loop early after checkpointing, as a preemption would.
  """
  program = Program.build(config)
  with jax.set_mesh(program.mesh):
    return _train_loop(program, workdir, stop_at_step)


def _train_loop(program: Program, workdir: str, stop_at_step: int | None) -> dict:
  config = program.config
  dataset = data_lib.Dataset(config)
  workdir_path = epath.Path(workdir)
  writer = metrics_lib.MetricWriter(workdir, config.metrics.tensorboard, config.metrics.flush_every)
  writer.write_json(metrics_lib.CONFIG_FILE, config.to_dict())
  ckpt = checkpoint_lib.Checkpointer(str(workdir_path / 'checkpoints'), config.train.keep_checkpoints,
                                     config.train.async_checkpoint)

  state = program.init_state()
  train_iter = dataset.train_iterator()
  meta = dict(wall_time_s=0.0)
  start = ckpt.latest_step()
  if start is not None:
    state, meta = ckpt.restore(start, state, train_iter)
    log.info('Resumed from step %d in %s', start, workdir)
  start = int(state['step'])
  summary_path = workdir_path / metrics_lib.SUMMARY_FILE
  if start >= program.total_steps and summary_path.exists():
    ckpt.close()
    writer.close()
    return json.loads(summary_path.read_text())
  eval_batches = [program.batch(b) for b in dataset.eval_batches()]
  train_step, eval_loss = program.jit_steps()

  tokens_per_step = config.train.batch_size * config.train.seq_len
  hw_flops_per_token = flops.hardware_flops_per_token(program.arch)
  peak = metrics_lib.peak_flops_per_device(config.metrics.peak_flops_per_device)
  last = stop_at_step if stop_at_step is not None else program.total_steps
  last = min(last, program.total_steps)

  def evaluate(step: int) -> float | None:
    if not eval_batches:
      return None
    losses = [eval_loss(state['params'], state['router_bias'], b) for b in eval_batches]
    value = float(np.mean(jax.device_get(losses)))
    writer.write(dict(kind='eval', step=step, tokens=step * tokens_per_step, eval_loss=value))
    log.info('step %d eval_loss %.4f', step, value)
    return value

  recent_losses: list[float] = []
  eval_value = None
  run_start = time.perf_counter()
  window_start, window_steps = time.perf_counter(), 0
  pending = None

  def record(step: int, step_metrics) -> None:
    nonlocal window_start, window_steps
    host = jax.device_get(step_metrics)
    window_steps += 1
    recent_losses.append(float(host['loss']))
    del recent_losses[:-config.train.log_every]
    elapsed = time.perf_counter() - window_start
    tokens_per_s = window_steps * tokens_per_step / max(elapsed, 1e-9)
    flops_per_s = tokens_per_s * hw_flops_per_token
    rec = dict(kind='train', step=step, tokens=step * tokens_per_step, **host,
               tokens_per_s=tokens_per_s, model_flops_per_s=flops_per_s,
               mfu=flops_per_s / (peak * jax.device_count()) if peak else None)
    writer.write(rec)
    if not np.isfinite(rec['loss']):
      raise FloatingPointError(f'loss is {rec["loss"]} at step {step}')
    if step % config.train.log_every == 0 or step == last:
      eta = (program.total_steps - step) * elapsed / window_steps
      log.info('step %d/%d loss %.4f grad_norm %.3f lr %.2e tokens/s %.0f ETA %s', step,
               program.total_steps, rec['loss'], rec['grad_norm'], rec['learning_rate'],
               tokens_per_s, _format_eta(eta))
      window_start, window_steps = time.perf_counter(), 0

  try:
    for step in range(start + 1, last + 1):
      batch = program.batch(next(train_iter))
      state, step_metrics = train_step(state, batch)
      if pending is not None:  # fetch the previous step's metrics while this one runs
        record(*pending)
      pending = (step, step_metrics)
      if step % config.train.eval_every == 0 and step != program.total_steps:
        record(*pending)
        pending = None
        eval_value = evaluate(step)
      if step % config.train.checkpoint_every == 0 or step == last:
        if pending is not None:
          record(*pending)
          pending = None
        meta = dict(wall_time_s=meta['wall_time_s'] + time.perf_counter() - run_start)
        run_start = time.perf_counter()
        ckpt.save(step, state, train_iter, meta)
    if pending is not None:
      record(*pending)
    wall = meta['wall_time_s'] + time.perf_counter() - run_start
    finished = int(state['step']) >= program.total_steps
    if finished:
      eval_value = evaluate(program.total_steps)
    summary = _run_summary(
        program, dataset, status='finished' if finished else 'stopped',
        final_step=int(state['step']),
        final_train_loss=float(np.mean(recent_losses)) if recent_losses else None,
        final_eval_loss=eval_value, wall_time_s=wall,
        tokens_per_s=int(state['step']) * tokens_per_step / max(wall, 1e-9))
    if finished:
      writer.write_json(metrics_lib.SUMMARY_FILE, summary)
    return summary
  finally:
    ckpt.close()
    writer.close()
