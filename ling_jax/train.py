"""Training: the train state, the jitted train and eval steps (`Trainer`), and the loop with
evals, checkpoints and metrics (`train`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ling_jax import checkpoint as checkpoint_lib
from ling_jax import config as config_lib
from ling_jax import data as data_lib
from ling_jax import flops
from ling_jax import layout as layout_lib
from ling_jax import metrics as metrics_lib
from ling_jax import model as model_lib
from ling_jax import moe as moe_lib
from ling_jax import optim
from ling_jax import preemption
from ling_jax import sharding as sharding_lib
from ling_jax.spec import ModelSpec

log = logging.getLogger('ling_jax')


@flax.struct.dataclass
class TrainState:
  """What a run carries from step to step and saves: arrays only (pure dicts of the model's
  variables), so that orbax, optax and the shardings see nothing else."""

  params: Any  # every nnx.Param, trained by AdamW
  router_bias: Any  # the router's own state, which it updates itself (moe.next_router_bias)
  opt_state: Any  # optax state of params
  step: jax.Array  # optimizer steps taken


@dataclasses.dataclass
class Trainer:
  """Everything static about a run (its architecture, model graph, optimizer, step count and
  mesh) and the jitted steps built from them."""

  config: Any
  spec: ModelSpec  # the model as validation resolved it
  graphdef: Any
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  total_steps: int
  mesh: jax.sharding.Mesh
  parameter_axes: dict  # {path: logical axis names} of every parameter and router bias

  @classmethod
  def build(cls, config, devices=None) -> 'Trainer':
    """The trainer of `config`, its layout resolved (ling_jax.layout), on `devices`: by default
    the devices there are; a slice's deviceless devices to compile for it (experiments.compile)."""
    spec = config_lib.validate(config)
    devices = list(jax.devices() if devices is None else devices)
    count = config.mesh.num_devices or len(devices)
    config = layout_lib.resolve(config, count)  # the mesh, microbatches and batch as run
    mesh = sharding_lib.make_mesh(config, devices)
    total_steps = config_lib.num_steps(config, spec.arch)
    optimizer, schedule = optim.make_optimizer(config.train, total_steps)
    abstract = nnx.eval_shape(lambda: model_lib.Transformer(spec, rngs=nnx.Rngs(0)))
    axes = sharding_lib.parameter_axes(*nnx.state(abstract, nnx.Param, moe_lib.RouterBias))
    graphdef = nnx.graphdef(abstract)
    return cls(config, spec, graphdef, optimizer, schedule, total_steps, mesh, axes)

  @property
  def arch(self) -> flops.Architecture:
    return self.spec.arch

  @property
  def tokens_per_step(self) -> int:
    return self.config.train.batch_size * self.config.train.seq_len

  def _init(self) -> TrainState:
    model = model_lib.Transformer(self.spec, rngs=nnx.Rngs(params=self.config.train.seed))
    _, params, router_bias = nnx.split(model, nnx.Param, moe_lib.RouterBias)
    params, router_bias = nnx.to_pure_dict(params), nnx.to_pure_dict(router_bias)
    return TrainState(
        params=params,
        router_bias=router_bias,
        opt_state=self.optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
    )

  def state_shardings(self):
    state = jax.eval_shape(self._init)
    return sharding_lib.state_shardings(self.spec, self.mesh, state, self.parameter_axes)

  def init_state(self) -> TrainState:
    """The initial state, created already sharded over the mesh."""
    with jax.set_mesh(self.mesh):
      return jax.jit(self._init, out_shardings=self.state_shardings())()

  def batch(self, local_tokens) -> jax.Array:
    """This process's rows of a batch [b, L+1], or of S batches [S, b, L+1], as one global array
    sharded over the batch axes."""
    return sharding_lib.global_batch(self.spec, self.mesh, np.asarray(local_tokens))

  def jit_steps(self):
    """(train_steps, eval_loss), each one jax.jit with explicit shardings; the state is donated.

    `train_steps(state, tokens_SxBxL1)` takes S optimizer steps in one call (a scan of
    `train_step` over S batches) and returns every step's metrics stacked [S, ...]: small models
    spend most of a one-step call in dispatch and host round trips.
    """
    state = self.state_shardings()
    batch = NamedSharding(self.mesh, sharding_lib.batch_spec(self.spec))
    batches = NamedSharding(self.mesh, sharding_lib.batch_spec(self.spec, leading=1))
    replicated = NamedSharding(self.mesh, P())
    train_steps = jax.jit(
        self.train_steps,
        in_shardings=(state, batches),
        out_shardings=(state, replicated),
        donate_argnums=(0,),
    )
    eval_loss = jax.jit(
        self.eval_loss,
        in_shardings=(state.params, state.router_bias, batch),
        out_shardings=replicated,
    )
    return train_steps, eval_loss

  def batch_shape(self, steps: int) -> jax.ShapeDtypeStruct:
    """The global array of `steps` batches a train call takes, as a shape for compiling."""
    t = self.config.train
    return jax.ShapeDtypeStruct(
        (steps, t.batch_size, t.seq_len + 1),
        jnp.int32,
        sharding=NamedSharding(self.mesh, sharding_lib.batch_spec(self.spec, leading=1)),
    )

  def model(self, params, router_bias) -> model_lib.Transformer:
    return nnx.merge(self.graphdef, params, router_bias)

  # --- Loss ----------------------------------------------------------------------------------

  def loss(self, params, router_bias, tokens_BxL1):
    """(training objective, aux): cross-entropy plus the router losses of the MoE layers, summed
    over layers (or averaged: config.moe.router_loss_reduction)."""
    logits_BxLxV, stats = self.model(params, router_bias)(tokens_BxL1[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, tokens_BxL1[:, 1:]).mean()
    objective = ce
    if stats:
      moe = self.config.moe
      reduce = jnp.sum if moe.router_loss_reduction == 'sum' else jnp.mean
      objective += moe.load_balance_coef * reduce(
          stats['load_balance_loss']
      ) + moe.z_loss_coef * reduce(stats['z_loss'])
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

  def train_step(self, state: TrainState, tokens_BxL1) -> tuple[TrainState, dict]:
    grads, aux = self.gradients(state.params, state.router_bias, tokens_BxL1)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    stats = moe_lib.logged_statistics(aux['stats'])
    metrics = dict(
        loss=aux['ce'].mean(),
        objective=aux['objective'].mean(),
        grad_norm=optax.tree.norm(grads),
        learning_rate=self.schedule(state.step),
        **stats,
    )
    new_state = TrainState(
        params=optax.apply_updates(state.params, updates),
        router_bias=moe_lib.next_router_bias(state.router_bias, aux['stats'], self.config.moe),
        opt_state=opt_state,
        step=state.step + 1,
    )
    return new_state, metrics

  def train_steps(self, state: TrainState, tokens_SxBxL1) -> tuple[TrainState, dict]:
    return jax.lax.scan(self.train_step, state, tokens_SxBxL1)

  def eval_loss(self, params, router_bias, tokens_BxL1):
    """Mean cross-entropy of each sequence [B] (nats per token)."""
    logits_BxLxV, _ = self.model(params, router_bias)(tokens_BxL1[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, tokens_BxL1[:, 1:]).mean(
        axis=-1
    )


# --- The loop ----------------------------------------------------------------------------------


def _run_summary(trainer: Trainer, dataset, **extra) -> dict:
  c = trainer.config
  s = flops.summary(trainer.arch)
  tokens = trainer.total_steps * trainer.tokens_per_step
  return dict(
      name=c.name,
      data_fingerprint=dataset.fingerprint,
      # The resolved architecture (d_expert from G, head_dim), so that no reader rebuilds it.
      architecture=dataclasses.asdict(trainer.arch),
      steps=trainer.total_steps,
      tokens_per_step=trainer.tokens_per_step,
      D=tokens,
      C=s['M'] * tokens,
      learning_rate=c.train.learning_rate,
      batch_size=c.train.batch_size,  # as run (ling_jax.layout)
      requested_batch_size=c.train.requested_batch_size or c.train.batch_size,
      seq_len=c.train.seq_len,
      **s,
      **extra,
  )


def _record_summary(records: list[dict], final_step: int, window: int) -> dict:
  """Train-loss and routing figures of the whole run, read back from its metrics record, so that
  resumed runs report the same numbers as uninterrupted ones."""
  train = [r for r in records if r.get('kind') == 'train' and r['step'] <= final_step]
  last = [r['loss'] for r in train if r['step'] > final_step - window]
  out = dict(final_train_loss=float(np.mean(last)) if last else None)
  dropped = [np.mean(r['dropped_fraction']) for r in train if 'dropped_fraction' in r]
  if dropped:
    out.update(
        dropped_fraction=float(np.mean(dropped)),
        max_dropped_fraction=float(np.max([np.max(r['dropped_fraction']) for r in train])),
    )
  return out


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def train(config, workdir: str, stop_at_step: int | None = None) -> dict:
  """Trains (or resumes) the run of `config` in `workdir`; returns its summary record.

  `stop_at_step` ends the loop early after checkpointing, as a preemption would. A SIGTERM or
  SIGINT from here on, start-up included, stops the run at its next checkpointable step.
  """
  entered = time.perf_counter()
  with preemption.StopRequest() as stop:
    trainer = Trainer.build(config)
    with jax.set_mesh(trainer.mesh):
      return _train_loop(trainer, workdir, stop_at_step, entered, stop)


def last_step(trainer: Trainer, stop_at_step: int | None) -> int:
  return min(trainer.total_steps if stop_at_step is None else stop_at_step, trainer.total_steps)


def _call_lengths(start: int, last: int, config) -> set[int]:
  """The distinct numbers of steps the calls from `start` to `last` take."""
  lengths, step = set(), start
  while step < last:
    end = _chunk_end(step, last, config)
    lengths.add(end - step)
    step = end
  return lengths


def _chunk_end(step: int, last: int, config) -> int:
  """The last step of the call that starts after `step`: `train.steps_per_call` steps, cut short
  at the next eval, checkpoint or the end, so that those happen at the same steps for any
  steps_per_call."""
  t = config.train
  end = min(step + t.steps_per_call, last)
  for every in (t.eval_every, t.checkpoint_every):
    end = min(end, (step // every + 1) * every)
  return end


class _Recorder:
  """Writes each step's metrics record and logs a line every `log_every` steps, with the loop's
  throughput over the steps since the last line."""

  def __init__(self, trainer: Trainer, writer, last: int):
    self.trainer, self.writer, self.last = trainer, writer, last
    self.peak = metrics_lib.peak_flops_per_device(
        trainer.config.metrics.peak_flops_per_device, jax.devices()[0].device_kind
    )
    self.hw_flops_per_token = flops.hardware_flops_per_token(trainer.arch)
    self.window_start, self.window_steps = time.perf_counter(), 0
    self.steady = None  # (time, step) when the first call's metrics arrived: compiled by then

  def __call__(self, first_step: int, chunk_metrics) -> None:
    """The records of steps first_step, first_step + 1, ... of one call."""
    trainer, config = self.trainer, self.trainer.config
    host = jax.device_get(chunk_metrics)
    n = len(host['loss'])
    if self.steady is None:
      self.steady = (time.perf_counter(), first_step + n - 1)
    self.window_steps += n
    elapsed = time.perf_counter() - self.window_start
    tokens_per_s = self.window_steps * trainer.tokens_per_step / max(elapsed, 1e-9)
    flops_per_s = tokens_per_s * self.hw_flops_per_token
    for i in range(n):
      step = first_step + i
      record = dict(
          kind='train',
          step=step,
          tokens=step * trainer.tokens_per_step,
          **{k: v[i] for k, v in host.items()},
          tokens_per_s=tokens_per_s,
          model_flops_per_s=flops_per_s,
          mfu=flops_per_s / (self.peak * jax.device_count()) if self.peak else None,
      )
      self.writer.write(record)
      if not np.isfinite(record['loss']):
        raise FloatingPointError(f'loss is {record["loss"]} at step {step}')
    step = first_step + n - 1
    if step // config.train.log_every > (first_step - 1) // config.train.log_every or (
        step == self.last
    ):
      eta = (trainer.total_steps - step) * elapsed / self.window_steps
      log.info(
          'step %d/%d loss %.4f grad_norm %.3f lr %.2e tokens/s %.0f ETA %s',
          step,
          trainer.total_steps,
          record['loss'],
          record['grad_norm'],
          record['learning_rate'],
          tokens_per_s,
          _format_eta(eta),
      )
      self.window_start, self.window_steps = time.perf_counter(), 0


@dataclasses.dataclass
class _Run:
  """What one process's pass over a run holds: its data, metric writer, checkpointer, the state
  and data position it trains from, and the cost already spent on it (`meta`: wall_time_s of
  training loops and elapsed_s of whole processes, restored from the newest checkpoint)."""

  trainer: Trainer
  workdir: str
  dataset: data_lib.Dataset
  writer: metrics_lib.MetricWriter
  ckpt: checkpoint_lib.Checkpointer
  state: Any
  train_iter: Any
  meta: dict
  loop_start: float = 0.0  # perf_counter when the cost in `meta` was last brought up to date
  elapsed_before: float = 0.0  # elapsed_s of the processes before this one

  @property
  def step(self) -> int:
    return int(self.state.step)

  def close(self) -> None:
    self.ckpt.close()
    self.writer.close()


def _open(trainer: Trainer, workdir: str) -> _Run:
  """The run's writer and checkpointer, and its state resumed from the newest readable
  checkpoint (a fresh one without)."""
  config = trainer.config
  dataset = data_lib.Dataset(config)
  writer = metrics_lib.MetricWriter(
      workdir,
      config.metrics.tensorboard,
      config.metrics.flush_every,
      active=jax.process_index() == 0,
      retry_deadline_s=config.metrics.remote_retry_s,
  )
  writer.write_json(metrics_lib.CONFIG_FILE, config.to_dict())
  ckpt = checkpoint_lib.Checkpointer(
      str(epath.Path(workdir) / 'checkpoints'),
      config.train.keep_checkpoints,
      config.train.async_checkpoint,
  )
  state = trainer.init_state()
  train_iter = dataset.train_iterator()
  meta = dict(wall_time_s=0.0)
  restored = ckpt.restore_latest(state, train_iter)
  if restored is not None:
    start, state, meta = restored
    log.info('Resumed from step %d in %s', start, workdir)
  return _Run(trainer, workdir, dataset, writer, ckpt, state, train_iter, meta)


def _compile(run: _Run, last: int):
  """Everything compiled before the first step, not in the middle of training: the eval step and
  the train call for each number of steps a call will take (steps_per_call, and the shorter
  calls that end at an eval, a checkpoint or the last step). Returns ({steps: train call}, the
  eval step, the eval batches)."""
  trainer = run.trainer
  eval_batches = [trainer.batch(b) for b in run.dataset.eval_batches()]
  train_steps, eval_loss = trainer.jit_steps()
  if eval_batches:
    eval_loss = eval_loss.lower(run.state.params, run.state.router_bias, eval_batches[0]).compile()
  compiled = {
      n: train_steps.lower(run.state, trainer.batch_shape(n)).compile()
      for n in _call_lengths(run.step, last, trainer.config)
  }
  return compiled, eval_loss, eval_batches


def _evaluate(run: _Run, eval_loss, eval_batches, step: int, final: bool = False) -> dict:
  """Eval loss (nats per token) on the held-out set (with train.eval_sequences, its first
  `eval_batches` batches unless `final`), with the standard error over its sequences and its
  size in tokens; written to the metrics and the log."""
  config = run.trainer.config
  periodic = config.train.eval_batches if config.train.eval_sequences else len(eval_batches)
  batches = eval_batches if final else eval_batches[:periodic]
  if not batches:
    return dict(final_eval_loss=None)
  losses = np.concatenate(
      jax.device_get([eval_loss(run.state.params, run.state.router_bias, b) for b in batches])
  ).astype(np.float64)
  result = dict(
      final_eval_loss=float(losses.mean()),
      eval_loss_stderr=float(losses.std(ddof=1) / np.sqrt(len(losses)))
      if len(losses) > 1
      else None,
      eval_tokens=int(losses.size * config.train.seq_len),
  )
  run.writer.write(
      dict(
          kind='eval',
          step=step,
          tokens=step * run.trainer.tokens_per_step,
          eval_loss=result['final_eval_loss'],
          eval_loss_stderr=result['eval_loss_stderr'],
          eval_tokens=result['eval_tokens'],
      )
  )
  log.info(
      'step %d eval_loss %.4f +- %.4f',
      step,
      result['final_eval_loss'],
      result['eval_loss_stderr'] or 0.0,
  )
  return result


def _train_loop(
    trainer: Trainer,
    workdir: str,
    stop_at_step: int | None,
    entered: float,
    stop: preemption.StopRequest,
) -> dict:
  """The loop of `train` in its steps: open (resume), compile, train in chunks with evals and
  checkpoints, summarise. `entered` is when `train` was called (perf_counter seconds)."""
  run = _open(trainer, workdir)
  try:
    summary_path = epath.Path(workdir) / metrics_lib.SUMMARY_FILE
    if run.step >= trainer.total_steps and summary_path.exists():
      return json.loads(summary_path.read_text())
    last = last_step(trainer, stop_at_step)
    compiled, eval_loss, eval_batches = _compile(run, last)
    evaluate = functools.partial(_evaluate, run, eval_loss, eval_batches)
    eval_result, preempted, record = _train_chunks(run, compiled, evaluate, last, entered, stop)
    return _finish(run, evaluate, eval_result, preempted, record, entered)
  finally:
    run.close()


def _train_chunks(run: _Run, compiled, evaluate, last: int, entered: float, stop):
  """Trains from the run's step to `last`, a call of compiled steps at a time, with the evals and
  checkpoints the config asks for, until the end or a preemption. Returns the last eval's
  result, whether it was preempted and the metrics recorder."""
  trainer, config = run.trainer, run.trainer.config
  # The member's whole cost here, for the cost model of --list: set-up, compilation, the loop and
  # the evaluations, summed over every process that trained it (checkpoints before this field
  # existed count from their restore).
  run.elapsed_before = run.meta.get('elapsed_s', 0.0)
  record = _Recorder(trainer, run.writer, last)
  eval_result = dict(final_eval_loss=None)
  run.loop_start = time.perf_counter()
  # The metrics of calls not yet read, oldest first: the newest call's are read while the next
  # call runs, except where an eval, a checkpoint or the end needs every record written first.
  unread = []
  preempted = False  # a signal reached this process or, in a multi-process run, any of them
  step = run.step
  while step < last:
    end = _chunk_end(step, last, config)
    tokens = np.stack([next(run.train_iter) for _ in range(end - step)])
    run.state, chunk_metrics = compiled[end - step](run.state, trainer.batch(tokens))
    unread.append((step + 1, chunk_metrics))
    step = end
    preempted = stop.requested()
    at_eval = step % config.train.eval_every == 0 and step < trainer.total_steps
    at_eval = at_eval and not preempted
    at_checkpoint = step % config.train.checkpoint_every == 0 or step == last or preempted
    keep = 0 if at_eval or at_checkpoint else 1
    while len(unread) > keep:
      record(*unread.pop(0))
    if at_eval:
      eval_result = evaluate(step)
    if at_checkpoint:
      now = time.perf_counter()
      run.meta = dict(
          wall_time_s=run.meta['wall_time_s'] + now - run.loop_start,
          elapsed_s=run.elapsed_before + now - entered,
      )
      run.loop_start = now
      # Every metric up to a checkpoint is durable before it: a crash loses only steps the
      # rerun trains (and logs) again, also on gs://, where lines wait for a chunk.
      run.writer.flush()
      run.ckpt.save(step, run.state, run.train_iter, run.meta)
    if preempted:
      break
  return eval_result, preempted, record


def _finish(run: _Run, evaluate, eval_result, preempted, record, entered) -> dict:
  """The final evaluation of a finished run and the run's summary (written when finished)."""
  trainer = run.trainer
  now = time.perf_counter()
  wall = run.meta['wall_time_s'] + now - run.loop_start
  final_step = run.step
  finished = final_step >= trainer.total_steps
  if finished:
    eval_result = evaluate(trainer.total_steps, final=True)
  run.writer.flush()
  steady_time, steady_step = record.steady or (now, final_step)
  summary = _run_summary(
      trainer,
      run.dataset,
      status='finished' if finished else 'preempted' if preempted else 'stopped',
      final_step=final_step,
      **eval_result,
      wall_time_s=wall,
      elapsed_s=run.elapsed_before + time.perf_counter() - entered,
      tokens_per_s=final_step * trainer.tokens_per_step / max(wall, 1e-9),
      # The loop's speed after compilation: evals, checkpoints, data and metrics included.
      steady_tokens_per_s=(
          (final_step - steady_step) * trainer.tokens_per_step / max(now - steady_time, 1e-9)
          if final_step > steady_step
          else None
      ),
      **_record_summary(
          metrics_lib.read_metrics(run.workdir), final_step, trainer.config.train.log_every
      ),
  )
  if finished:
    run.writer.write_json(metrics_lib.SUMMARY_FILE, summary)
  return summary
