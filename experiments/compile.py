"""Compiles a run or every member of a study for a named slice, without the slice: the check
that a paper-scale layout fits before a pod is booked (the ahead-of-time twin of `--list`).

  python -m experiments.compile --config=configs/granularity.py            # its default slice
  python -m experiments.compile --config=configs/granularity.py --smaller  # one size smaller
  python -m experiments.compile --config=configs/granularity.py --slice=v5p-64 --sweep_index=0
  python -m experiments.compile --config=configs/moe.py --slice=h100x8 --out=/tmp/compile.jsonl

Needs the compiler of the slice's chip (`pip install -e '.[tpu]'` or `'.[gpu]'`), no data and no
accelerator. Per member it builds the exact train step and eval step a run compiles (the layout
as `ling_jax.layout` resolves it: mesh, microbatches, batch as run), compiles them for the
slice's devices and prints the per-chip memory of `memory_analysis()` against the chip's HBM,
the collectives of the compiled program (bytes per chip per step, loops counted,
experiments/hlo.py) and an *estimated* step time, MFU and chip-hours (ling_jax.layout
.step_seconds: a roofline on the project's FLOP count, not a measurement). Exits 1 naming every
member that does not fit. With --out, each shape's row is appended to a JSON-lines table as it
is compiled; a rerun skips the shapes already there (resume after an interruption).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import console

# Compiling for a slice needs no local accelerator: JAX runs on the CPU here, and the CUDA
# plugin, when installed, describes GPUs without checking for CUDA libraries.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
# libtpu locks itself to one process unless told otherwise; compiling needs no TPU to share.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, with an optional ":arg".', lock_config=True
)
_SLICE = flags.DEFINE_string(
    'slice',
    None,
    'Slice to compile for (product name: v5p-128, v5e-256, h100x8, 2xv5p-128); '
    "default: the config's config.mesh.slice.",
)
_SWEEP_INDEX = flags.DEFINE_integer('sweep_index', None, 'Compile only this member of a study.')
_OUT = flags.DEFINE_string('out', None, 'JSON-lines table to append rows to (and resume from).')
_EVAL = flags.DEFINE_bool('eval', True, 'Compile the eval step as well as the train step.')
_SMALLER = flags.DEFINE_bool(
    'smaller',
    False,
    'Compile each member for the slice one size smaller than its own (the margin).',
)
_LARGEST = flags.DEFINE_bool(
    'largest', False, 'Compile only the member with the most parameters (the margin check).'
)

GIB = 2**30
# JAX's default GPU memory pool is this share of each GPU's memory (JAX's "GPU memory
# allocation" page); versions that do not grow the pool past it need XLA_PYTHON_CLIENT_MEM_FRACTION
# raised for a program above it. TPUs have no such pool.
GPU_DEFAULT_POOL_FRACTION = 0.75


def for_slice(config, slice_name: str):
  """The config as the compile check builds it: on `slice_name`, with synthetic data in place
  of the corpus (the train step's program does not depend on where its tokens come from)."""
  from ling_jax import config as config_lib  # pylint: disable=import-outside-toplevel

  c = config_lib.without_data(config)
  c.unlock()
  c.mesh.update(slice=slice_name, num_devices=0)
  c.lock()
  return c


def shape_key(config) -> str:
  """What decides a compiled program: model, routing, batch and layout (not the budget, the
  learning rate or the seed)."""
  t = config.train
  fields = dict(
      model=config.model.to_dict(),
      moe=config.moe.to_dict(),
      mesh=config.mesh.to_dict(),
      rules=[list(r) for r in config.sharding_rules],
      train=[t.seq_len, t.batch_size, t.grad_accum_steps, t.steps_per_call, t.eval_batch_size],
  )
  return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _abstract_state(trainer):
  import jax  # pylint: disable=import-outside-toplevel

  shardings = trainer.state_shardings()
  shapes = jax.eval_shape(trainer._init)  # pylint: disable=protected-access
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings
  )


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  peak = (
      m.generated_code_size_in_bytes
      + m.argument_size_in_bytes
      + m.output_size_in_bytes
      - m.alias_size_in_bytes
      + m.temp_size_in_bytes
  )
  return dict(
      argument_bytes=m.argument_size_in_bytes,
      output_bytes=m.output_size_in_bytes,
      alias_bytes=m.alias_size_in_bytes,
      temp_bytes=m.temp_size_in_bytes,
      peak_bytes=peak,
  )


def _whole_parameter_all_reduces(found, state, mesh) -> list[str]:
  """All-reduces of a whole (unsharded) parameter of two or more dimensions whose layout is
  sharded: under FSDP such a gradient should be reduce-scattered instead."""
  import jax  # pylint: disable=import-outside-toplevel

  whole = set()
  for leaf in jax.tree.leaves(state.params):
    if len(leaf.shape) >= 2 and leaf.sharding.shard_shape(leaf.shape) != leaf.shape:
      whole.add(tuple(leaf.shape))
  out = []
  for c in found:
    if c.kind == 'all-reduce':
      out += [f'{dtype}{list(dims)}' for dtype, dims in c.shapes if dims in whole]
  return sorted(set(out))


def compile_member(config, slice_name: str, compile_eval: bool = True) -> dict:
  """Compiles one config's train (and eval) step for the slice; its row of the table."""
  import jax  # pylint: disable=import-outside-toplevel

  from experiments import hlo  # pylint: disable=import-outside-toplevel
  from ling_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import flops  # pylint: disable=import-outside-toplevel
  from ling_jax import hardware  # pylint: disable=import-outside-toplevel
  from ling_jax import layout as layout_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import train  # pylint: disable=import-outside-toplevel

  slice_ = hardware.parse(slice_name)
  c = for_slice(config, slice_name)
  arch = config_lib.validate(c).arch
  c = layout_lib.resolve(c, slice_.chips)
  tokens_per_step = c.train.batch_size * c.train.seq_len
  steps = config_lib.num_steps(c, arch)
  row = dict(
      name=config.name,
      study=config.name.split('/')[0],
      kind='moe' if arch.is_moe else 'dense',
      C=flops.paper_flops_per_token(arch) * tokens_per_step * steps,  # FLOPs, as run
      A=flops.activation_ratio(arch),
      slice=slice_.name,
      default_slice=config.mesh.slice,  # the member's own; another is a margin or variant check
      chip=slice_.chip.name,
      chips=slice_.chips,
      key=shape_key(c),
      mesh={a: c.mesh[a] for a in config_lib.MESH_AXES},
      microbatches=c.train.grad_accum_steps,
      remat=c.model.remat,
      batch_size=c.train.batch_size,
      requested_batch_size=c.train.requested_batch_size,
      dispatch=c.moe.dispatch if arch.is_moe else 'dense',
      capacity_factor=c.moe.capacity_factor if arch.is_moe else None,
      transport=c.moe.transport if arch.is_moe else None,
      total_params=flops.total_params(arch),
      hbm_bytes=slice_.hbm_bytes,
      jax_version=jax.__version__,
  )
  started = time.perf_counter()
  trainer = train.Trainer.build(c, hardware.slice_devices(slice_))
  train_steps, eval_loss = trainer.jit_steps()
  state = _abstract_state(trainer)
  t = c.train
  eval_batch = jax.ShapeDtypeStruct(
      (config_lib.eval_batch_size(t), t.seq_len + 1),
      jax.numpy.int32,
      sharding=jax.sharding.NamedSharding(trainer.mesh, sharding_lib.batch_spec(trainer.spec)),
  )
  try:
    with jax.set_mesh(trainer.mesh):
      compiled = train_steps.lower(state, trainer.batch_shape(t.steps_per_call)).compile()
      evaluated = (
          eval_loss.lower(state.params, state.router_bias, eval_batch).compile()
          if compile_eval
          else None
      )
  except Exception as error:  # pylint: disable=broad-except
    text = str(error)
    if 'RESOURCE_EXHAUSTED' not in text and 'exceeds available' not in text.lower():
      raise
    row.update(
        fits=False, error=text.splitlines()[0][:500], compile_s=time.perf_counter() - started
    )
    return row
  row['compile_s'] = time.perf_counter() - started
  row['memory'] = _memory(compiled)
  if evaluated is not None:
    row['eval_memory'] = _memory(evaluated)
  peak = max(row['memory']['peak_bytes'], row.get('eval_memory', {}).get('peak_bytes', 0))
  row['peak_bytes'] = peak
  row['fits'] = peak <= slice_.hbm_bytes
  found = hlo.collectives(compiled.as_text(), slice_.chips)
  row['collectives'] = hlo.summarize(found)
  row['whole_parameter_all_reduces'] = _whole_parameter_all_reduces(found, state, trainer.mesh)
  row['estimate'] = estimate(c, arch, slice_, row)
  return row


def estimate(config, arch, slice_, row: dict) -> dict:
  """Estimated step time, MFU and chip-hours of a compiled member (labelled estimates).

  Work per chip is the project's hardware FLOP count (flops.hardware_flops_per_token) of the
  step's tokens, times what the remat policy runs again (layout.recompute_factor); the MFU
  counts the model's FLOPs alone, so recomputation lowers it. HBM traffic is the train state
  read and written once (the program's arguments and outputs) plus its temporaries written and
  read once per microbatch; collective bytes are the compiled program's (experiments/hlo.py).
  They combine as layout.step_seconds says.
  """
  from ling_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import flops  # pylint: disable=import-outside-toplevel
  from ling_jax import layout as layout_lib  # pylint: disable=import-outside-toplevel

  per_call = config.train.steps_per_call
  tokens = config.train.batch_size * config.train.seq_len
  work = flops.hardware_flops_per_token(arch) * tokens / slice_.chips
  memory = row['memory']
  traffic = (
      memory['argument_bytes']
      + memory['output_bytes']
      + 2 * memory['temp_bytes'] * config.train.grad_accum_steps
  ) / per_call
  sent = sum(k['bytes_per_chip'] for k in row['collectives'].values()) / per_call
  executed = work * layout_lib.recompute_factor(config.model.remat)
  times = layout_lib.step_seconds(executed, traffic, sent, slice_.chip)
  steps = config_lib.num_steps(config, arch)
  model_compute_s = work / slice_.chip.peak_bf16_flops_per_s
  return dict(
      **times,
      mfu=model_compute_s / times['step_s'],
      steps=steps,
      seconds_per_flop_of_C=times['step_s'] / (flops.paper_flops_per_token(arch) * tokens),
      chip_hours=steps * times['step_s'] * slice_.chips / 3600,
  )


def _load(path: str) -> dict[str, dict]:
  if not path or not os.path.exists(path):
    return {}
  rows = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows[(row['key'], row['slice'])] = row
  return rows


def _append(path: str, row: dict) -> None:
  """One whole line per row: a row is appended with a single write and flushed to disk."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  with open(path, 'a') as f:
    f.write(json.dumps(row, sort_keys=True) + '\n')
    f.flush()
    os.fsync(f.fileno())


def past_gpu_default_pool(rows: list[dict]) -> list[dict]:
  """The fitting GPU rows whose peak is above JAX's default GPU memory pool."""
  from ling_jax import hardware  # pylint: disable=import-outside-toplevel

  return [
      r
      for r in rows
      if r.get('fits')
      and hardware.parse(r['slice']).chip.platform == 'cuda'
      and r['peak_bytes'] > GPU_DEFAULT_POOL_FRACTION * r['hbm_bytes']
  ]


def line(row: dict) -> str:
  mesh = ','.join(f'{a[0]}{n}' for a, n in row['mesh'].items() if n > 1) or '1'
  batch = f'{row["batch_size"]}' + (
      f'({row["requested_batch_size"]})'
      if row['requested_batch_size'] and row['requested_batch_size'] != row['batch_size']
      else ''
  )
  head = f'{row["name"]:<34} {row["slice"]:<9} {mesh:<14} {row["microbatches"]:>3} {batch:>9}'
  if not row.get('memory'):
    return f'{head}  DOES NOT FIT: {row.get("error", "")[:120]}'
  e = row['estimate']
  traffic = sum(k['bytes_per_chip'] for k in row['collectives'].values()) / GIB
  m = row['memory']
  return (
      f'{head} {m["argument_bytes"] / GIB:>6.1f} {m["temp_bytes"] / GIB:>6.1f} '
      f'{row["peak_bytes"] / GIB:>7.1f} / {row["hbm_bytes"] / GIB:<5.0f} '
      f'{"yes" if row["fits"] else "NO":<4} {traffic:>8.2f} {e["step_s"]:>8.3f} '
      f'{e["mfu"]:>6.1%} {e["chip_hours"]:>10.3g}'
  )


HEADER = (
    f'{"member":<34} {"slice":<9} {"mesh":<14} {"mb":>3} {"batch":>9} {"args":>6} {"temps":>6} '
    f'{"peak GiB/HBM":>13} '
    f'{"fits":<4} {"coll GiB":>8} {"est s/st":>8} {"MFU<=":>6} {"chip-h est":>10}'
)


def _parameters(config) -> int:
  from ling_jax import flops  # pylint: disable=import-outside-toplevel
  from ling_jax import spec as spec_lib  # pylint: disable=import-outside-toplevel

  return flops.total_params(spec_lib.architecture(config))


def _why_unfit(row: dict) -> str:
  """Why one member does not fit, with what to change: the planner's refusal whole (it names the
  memory its model needs, the budget and the fix), else the compiled peak or the compiler's
  refusal."""
  if 'key' not in row:  # the planner placed no layout, nothing was compiled
    return f'{row["name"]} ({row["error"]})'
  fix = 'use a larger slice (--slice) or let the planner shard more (config.mesh.plan=auto)'
  if row.get('peak_bytes'):
    needed = f'needs {row["peak_bytes"] / GIB:.1f} GiB per chip of {row["hbm_bytes"] / GIB:.0f}'
    return f'{row["name"]} {needed}: {fix}'
  return f'{row["name"]} ({row.get("error", "")}): {fix}'


def main(argv):
  del argv
  console.show_progress()
  from experiments import sweep  # pylint: disable=import-outside-toplevel
  from ling_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import hardware  # pylint: disable=import-outside-toplevel
  from ling_jax import layout as layout_lib  # pylint: disable=import-outside-toplevel

  config = _CONFIG.value
  members = sweep.load_members(config)
  if members is None:
    configs = [config]
  else:
    chosen = members if _SWEEP_INDEX.value is None else [members[_SWEEP_INDEX.value]]
    configs = [sweep.member_config(config, m) for m in chosen]
    if _LARGEST.value:
      configs = [max(configs, key=_parameters)]
  done = _load(_OUT.value)
  print(HEADER + '   (memory per chip in GiB; times, MFU and chip-hours are estimates)')
  rows = []
  for c in configs:
    slice_name = _SLICE.value or c.mesh.slice  # by default each member's own
    if not slice_name:
      sys.exit(f'{c.name}: no slice; pass --slice=<name> (v5p-128, v5e-256, h100x8, ...).')
    if _SMALLER.value:
      smaller = hardware.parse(slice_name).one_size_smaller()
      if smaller is None:
        sys.exit(f'{c.name}: {slice_name} is the smallest slice of its chip.')
      slice_name = smaller.name
    try:
      key_config = for_slice(c, slice_name)
      config_lib.validate(key_config)
    except config_lib.ConfigError as error:
      sys.exit(f'Invalid config {c.name}: {error}')
    try:
      key = shape_key(layout_lib.resolve(key_config))
    except config_lib.ConfigError as error:  # no layout of it fits the slice: a finding
      row = dict(name=c.name, slice=slice_name, fits=False, error=str(error))
      rows.append(row)
      print(f'{c.name:<34} {slice_name:<9} NO LAYOUT: {error}', flush=True)
      continue
    row = done.get((key, slice_name))
    if row is None:
      row = compile_member(c, slice_name, _EVAL.value)
      # A variant of the study's design (--config.* flags) is kept apart from its members.
      row['overrides'] = {
          k: v for k, v in config_flags.get_override_values(flags.FLAGS['config']).items()
      }
      if _OUT.value:
        _append(_OUT.value, row)
      done[(key, slice_name)] = row
    row = dict(row, name=c.name)
    rows.append(row)
    print(line(row), flush=True)
  hours = sum(r['estimate']['chip_hours'] for r in rows if r.get('estimate'))
  slices = ', '.join(sorted({r['slice'] for r in rows}))
  print(f'{len(rows)} member(s) on {slices}: {hours:.4g} chip-hours estimated in all.')
  crowded = past_gpu_default_pool(rows)
  if crowded:
    print(
        f'{", ".join(r["name"] for r in crowded)}: above {GPU_DEFAULT_POOL_FRACTION:.0%} of GPU '
        "memory, JAX's default pool; run with XLA_PYTHON_CLIENT_MEM_FRACTION=.95 unless your JAX "
        'grows the pool past it (docs/paper_scale.md).'
    )
  unfit = [r for r in rows if not r.get('fits')]
  if unfit:
    sys.exit(
        f'{len(unfit)} member(s) do not fit {slices}: {"; ".join(_why_unfit(r) for r in unfit)}'
    )


if __name__ == '__main__':
  app.run(main)
