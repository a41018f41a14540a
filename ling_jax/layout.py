"""A run's layout on a named slice: the mesh, the microbatches and the batch as run.

`resolve(config, num_devices)` is the one place a config's layout becomes concrete, before
anything is compiled; the trainer, `--list` and the compile check (experiments/compile.py) all
call it. Three rules:

* **The batch as run.** With `train.batch_rule='round'` (the paper scale's), a batch that does not
  split over the batch shards x microbatches is rounded to the nearest multiple of them (at least
  one): Eq. 3's 531 sequences run as 512 on 16 or 64 batch shards. The config then holds the batch
  as run, and `train.requested_batch_size` the batch asked for; every report (summary, FLOP
  accounting, `--list`) reads the batch as run. With 'exact' an indivisible batch is an error.
* **The torus.** On 3-D tori (v4, v5p) every mesh axis must be a product of whole torus
  dimensions (JAX assigns each mesh axis to a set of physical axes and never splits one);
  2-D slices (v5e, v6e) and NVLink nodes take any factorisation. A mesh that breaks the rule
  is refused naming the axis and sizes that fit.
* **The planner** (`mesh.plan='auto'`, the paper scale's default): every mesh (data, fsdp,
  expert, and tensor up to PLAN_MAX_TENSOR with heads kept whole) and power-of-two
  microbatching the slice allows, with the config's remat policy or 'full' (which keeps only each
  layer's input, for 4/3 of the compute), is priced with
  `memory_bytes` (an explicit per-chip memory model) and `step_seconds` (a roofline with
  collectives, below); the fastest layout whose modelled memory stays within PLAN_HBM_FRACTION
  of the chip's HBM wins. The model only ranks layouts: the compiled program's
  `memory_analysis()` is the check (experiments/compile.py).

Pure Python: no JAX.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import hardware
from ling_jax import spec as spec_lib

ConfigError = config_lib.ConfigError
MESH_AXES = config_lib.MESH_AXES
# The planner keeps its memory model's per-chip total under this share of HBM: the model leaves
# out XLA's fusion buffers and fragmentation, which the compile check then measures.
PLAN_HBM_FRACTION = 0.7
# The planner keeps the batch as run within this share of the batch asked for: Eq. 3's optimum is
# a broad basin, a batch rounded by a third is another experiment.
PLAN_BATCH_TOLERANCE = 0.1
_BYTES = {'float32': 4, 'bfloat16': 2}


@dataclasses.dataclass(frozen=True)
class Layout:
  """A mesh (devices per axis, in MESH_AXES order), microbatches, and the batch as run."""

  mesh: tuple[int, int, int, int]
  microbatches: int
  batch_size: int  # sequences per optimizer step, as run
  requested_batch_size: int  # as configured (Eq. 3 at paper scale)
  remat: str = ''  # the remat policy as run ('' keeps the config's)

  @property
  def batch_shards(self) -> int:
    data, fsdp, expert, _ = self.mesh
    return data * fsdp * expert

  def describe(self) -> str:
    sizes = ', '.join(f'{a}={n}' for a, n in zip(MESH_AXES, self.mesh) if n > 1) or 'one device'
    batch = f'batch {self.batch_size}'
    if self.batch_size != self.requested_batch_size:
      batch += f' (asked {self.requested_batch_size})'
    remat = f'; remat {self.remat}' if self.remat else ''
    return f'{sizes}; {self.microbatches} microbatch(es); {batch}{remat}'


# --- The torus -----------------------------------------------------------------------------------


def fits_torus(sizes: tuple[int, ...], slice_: hardware.Slice) -> bool:
  """Whether mesh axes of `sizes` can be laid on the slice (module docstring). With several
  slices the data axis spans them: it must hold the slice count, the rest lies within a slice."""
  sizes = list(sizes)
  if math.prod(sizes) != slice_.chips:
    return False
  if slice_.num_slices > 1:
    if sizes[0] % slice_.num_slices:
      return False
    sizes[0] //= slice_.num_slices
  if slice_.chip.torus_dims != 3:
    return True
  axes = [s for s in sizes if s > 1]
  for owner in itertools.product(range(len(axes)), repeat=len(slice_.shape)):
    got = [1] * len(axes)
    for dim, axis in zip(slice_.shape, owner):
      got[axis] *= dim
    if got == axes:
      return True
  return not axes


def _check_torus(sizes: tuple[int, ...], slice_: hardware.Slice) -> None:
  if fits_torus(sizes, slice_):
    return
  if math.prod(sizes) != slice_.chips:
    raise ConfigError(
        f'config.mesh={dict(zip(MESH_AXES, sizes))}: uses {math.prod(sizes)} devices, but '
        f'{slice_.name} has {slice_.chips} chips; set one axis to -1, or mesh.plan=auto.'
    )
  bad = [a for a, s in zip(MESH_AXES, sizes) if s > 1 and s not in torus_products(slice_)]
  axis = bad[0] if bad else next(a for a, s in zip(MESH_AXES, sizes) if s > 1)
  raise ConfigError(
      f'config.mesh.{axis}={sizes[MESH_AXES.index(axis)]}: the {slice_.name} torus is '
      f'{"x".join(map(str, slice_.shape))} chips, and on a 3-D torus every mesh axis must be a '
      f'product of whole torus dimensions ({", ".join(map(str, torus_products(slice_)))}), '
      'together using each dimension once; choose such sizes, or set config.mesh.plan=auto.'
  )


def torus_products(slice_: hardware.Slice) -> list[int]:
  """The sizes one mesh axis can take on the slice's torus (products of its dimensions)."""
  dims = slice_.shape
  return sorted(
      {math.prod(c) for r in range(1, len(dims) + 1) for c in itertools.combinations(dims, r)}
  )


# --- Memory and time models ----------------------------------------------------------------------


def _expert_params(arch: flops.Architecture) -> int:
  return arch.num_moe_layers * arch.n_experts * 3 * arch.d_model * arch.d_expert


def memory_bytes(arch: flops.Architecture, config, layout: Layout) -> dict[str, float]:
  """The per-chip memory model of a layout, in bytes: the train state (parameters, gradients and
  Adam's two moments, sharded as the sharding rules shard them; of these, `arguments` are what
  the compiled step takes as its inputs: all but the gradients), one layer's gathered weights,
  the activations a remat policy of 'dots_no_batch' keeps for the backward pass (every layer's
  projections), and the largest transients (one layer's attention scores, the logits)."""
  m, t = config.model, config.train
  param, compute = _BYTES[m.param_dtype], _BYTES[m.compute_dtype]
  data, fsdp, expert, tensor = layout.mesh
  experts = _expert_params(arch)
  others = flops.total_params(arch) - experts
  # Four parameter-sized copies: the parameters and Adam's two moments (the step's arguments)
  # and the gradients.
  copy = param * (experts / (expert * fsdp * tensor) + others / (fsdp * tensor))
  state = 4 * copy
  gathered = 2 * compute * (experts / max(arch.num_moe_layers, 1) / (expert * tensor))
  sequences = layout.batch_size / layout.microbatches / layout.batch_shards
  tokens = sequences * t.seq_len
  d, hd = arch.d_model, arch.head_dim
  # Heads and widths split over the tensor axis; the model's width d and the router do not.
  attention = (2 * arch.n_heads * hd + 2 * arch.n_kv_heads * hd) / tensor + d
  if arch.is_moe:
    slots = arch.top_k * max(config.moe.capacity_factor, 1.0)
    ffn = slots * (2 * arch.d_expert / tensor + 2 * d) + arch.n_shared * 2 * arch.d_expert / tensor
    ffn += d + 2 * arch.n_experts  # the output, router logits and probabilities
  else:
    ffn = 2 * arch.d_ffn / tensor + d
  per_token_layer = compute * (attention + ffn) + 4 * d  # + the f32 residual stream
  # 'full' remat keeps only each layer's input and recomputes the rest in the backward pass.
  remat = layout.remat or m.remat
  saved = arch.n_layers * tokens * (4 * d if remat == 'full' else per_token_layer)
  scores = sequences * arch.n_heads / tensor * t.seq_len**2 * (4 + 4 + compute)
  logits = tokens * arch.vocab_size / tensor * 3 * 4
  transient = max(scores + 4 * tokens * per_token_layer, logits)
  total = state + gathered + saved + transient
  return dict(state=state, arguments=3 * copy, activations=saved, transient=transient, total=total)


def step_seconds(
    flops_per_chip: float, hbm_bytes: float, collective_bytes: float, chip: hardware.Chip
) -> dict[str, float]:
  """An estimated step time, in seconds, from a step's work per chip.

  Compute (at the chip's bf16 peak) and HBM traffic (at its bandwidth) overlap, so the slower
  of the two counts (a roofline); collectives are taken as not overlapped with either, at half
  the chip's two-way interconnect bandwidth. Real steps also lose time to kernel efficiency
  below peak, so the estimate is a lower bound on time and an upper bound on MFU.
  """
  compute = flops_per_chip / chip.peak_bf16_flops_per_s
  memory = hbm_bytes / chip.hbm_bytes_per_s
  network = collective_bytes / (chip.interconnect_bytes_per_s / 2)
  return dict(
      compute_s=compute, hbm_s=memory, collective_s=network, step_s=max(compute, memory) + network
  )


def _modelled_collective_bytes(arch: flops.Architecture, config, layout: Layout) -> float:
  """Bytes each chip sends per step in the planner's model: FSDP's weight all-gathers (forward
  and backward) and gradient reduce-scatters per microbatch, the gradient all-reduce over the
  data axis, and the expert all-to-alls (dispatch and combine, forward and backward)."""
  compute, param = _BYTES[config.model.compute_dtype], _BYTES[config.model.param_dtype]
  data, fsdp, expert, tensor = layout.mesh
  experts = _expert_params(arch)
  local = experts / (expert * tensor) + (flops.total_params(arch) - experts) / tensor
  share = lambda n: (n - 1) / n
  fsdp_bytes = layout.microbatches * share(fsdp) * local * (2 * compute + param)
  # Gradients are all-reduced over the axes a weight is replicated on: experts over data, the
  # rest over data and expert (outside the MoE block the expert axis is a batch axis).
  others = (flops.total_params(arch) - experts) / (fsdp * tensor)
  data_bytes = (
      2 * param * (share(data) * experts / (expert * fsdp * tensor) + share(data * expert) * others)
  )
  tokens = layout.batch_size * config.train.seq_len / layout.batch_shards
  slots = arch.top_k * max(config.moe.capacity_factor, 1.0)
  a2a = 4 * arch.num_moe_layers * tokens * slots * arch.d_model * compute * share(expert)
  # Tensor parallelism all-reduces each layer's partial outputs, forward and backward: the
  # attention's and the FFN's, which in an MoE layer is the whole expert buffer (every routed
  # slot of every token) plus the shared experts' output.
  outputs = arch.n_layers + arch.num_ffn_dense_layers + arch.num_moe_layers * (slots + 1)
  tensor_bytes = 2 * 2 * share(tensor) * tokens * outputs * arch.d_model * compute
  return fsdp_bytes + data_bytes + a2a + tensor_bytes


def recompute_factor(remat: str) -> float:
  """The FLOPs a chip executes per FLOP of the model under a remat policy: 'full' runs each
  layer's forward pass again in the backward (forward 1 + backward 2, plus 1). The other
  policies keep every matmul's output and recompute only elementwise work, counted as none."""
  return 4 / 3 if remat == 'full' else 1.0


def modelled_seconds(arch: flops.Architecture, config, layout: Layout, chip) -> float:
  tokens = layout.batch_size * config.train.seq_len
  chips = math.prod(layout.mesh)
  work = flops.hardware_flops_per_token(arch) * tokens / chips
  work *= recompute_factor(layout.remat or config.model.remat)
  state = memory_bytes(arch, config, layout)['state']
  return step_seconds(work, 2 * state, _modelled_collective_bytes(arch, config, layout), chip)[
      'step_s'
  ]


# --- The batch and the plan ----------------------------------------------------------------------


def round_batch(batch: int, multiple: int) -> int:
  """The multiple of `multiple` nearest to `batch` (halves round up), at least one multiple."""
  return max(multiple, int(math.floor(batch / multiple + 0.5)) * multiple)


def _layout(config, sizes: tuple[int, ...], microbatches: int) -> Layout | None:
  t = config.train
  shards = sizes[0] * sizes[1] * sizes[2]
  step = shards * microbatches
  if t.batch_rule == 'round':
    batch = round_batch(t.batch_size, step)
  elif t.batch_size % step:
    return None
  else:
    batch = t.batch_size
  return Layout(tuple(sizes), microbatches, batch, t.batch_size)


# The most chips the planner splits one layer's heads and widths over (tensor parallelism costs
# two all-reduces of the activations per layer and direction; beyond 8 they dominate).
PLAN_MAX_TENSOR = 8


def _tensor_sizes(arch: flops.Architecture, chips: int) -> list[int]:
  """Tensor-axis sizes that keep every head whole and split every width evenly."""
  widths = [arch.n_kv_heads, arch.vocab_size]
  widths += [arch.d_ffn] if arch.d_ffn else []
  widths += [arch.d_expert] if arch.is_moe else []
  return [
      t
      for t in range(1, min(chips, PLAN_MAX_TENSOR) + 1)
      if chips % t == 0 and all(w % t == 0 for w in widths)
  ]


def _candidates(arch: flops.Architecture, config, chips: int, slice_):
  divisors = [n for n in range(1, chips + 1) if chips % n == 0]
  experts = arch.n_experts or 1
  for tensor, fsdp, expert in itertools.product(_tensor_sizes(arch, chips), divisors, divisors):
    if chips % (tensor * fsdp * expert) or experts % expert or arch.d_model % fsdp:
      continue
    sizes = (chips // (tensor * fsdp * expert), fsdp, expert, tensor)
    if slice_ is not None and not fits_torus(sizes, slice_):
      continue
    microbatches = 1
    while microbatches <= config.train.batch_size:
      layout = _layout(config, sizes, microbatches)
      if layout is not None:
        yield layout
        if config.model.remat != 'full':
          yield dataclasses.replace(layout, remat='full')
      microbatches *= 2


def plan(arch: flops.Architecture, config, slice_: hardware.Slice) -> Layout:
  """The fastest modelled layout on the slice that fits PLAN_HBM_FRACTION of its HBM."""
  budget = PLAN_HBM_FRACTION * slice_.hbm_bytes
  best, smallest, moved = None, None, None
  for layout in _candidates(arch, config, slice_.chips, slice_):
    shift = abs(layout.batch_size - layout.requested_batch_size) / layout.requested_batch_size
    if shift > PLAN_BATCH_TOLERANCE:
      moved = layout if moved is None or layout.batch_shards < moved.batch_shards else moved
      continue
    need = memory_bytes(arch, config, layout)['total']
    if smallest is None or need < smallest[0]:
      smallest = (need, layout)
    if need > budget:
      continue
    seconds = modelled_seconds(arch, config, layout, slice_.chip)
    if best is None or seconds < best[0]:
      best = (seconds, layout)
  if best is None and smallest is None:
    raise ConfigError(
        f'config.train.batch_size={config.train.batch_size}: on {slice_.name} every layout '
        f'runs a batch more than {PLAN_BATCH_TOLERANCE:.0%} away from it (at best '
        f'{moved.batch_size} on {moved.batch_shards} batch shards); use a smaller slice '
        '(config.mesh.slice) or a mesh of your own (mesh.plan=manual).'
    )
  if best is None:
    need, layout = smallest
    raise ConfigError(
        f'config.mesh.plan=auto: no layout of {config.name} fits {slice_.name}: the smallest '
        f'({layout.describe()}) needs {need / 2**30:.1f} GiB of the memory model per chip, '
        f'{PLAN_HBM_FRACTION:.0%} of {slice_.hbm_bytes / 2**30:.0f} GiB is '
        f'{budget / 2**30:.1f}; use a larger slice (config.mesh.slice).'
    )
  return best[1]


def manual(config, num_devices: int, slice_: hardware.Slice | None = None) -> Layout:
  """The layout of a config's own mesh sizes on `num_devices` devices (of `slice_`, whose torus
  the sizes must fit)."""
  m = config.mesh
  sizes = [m[a] for a in MESH_AXES]
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise ConfigError(
          f'config.mesh: {num_devices} devices are not a multiple of the fixed axes '
          f'({fixed}); change the mesh sizes.'
      )
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ConfigError(
        f'config.mesh={dict(zip(MESH_AXES, sizes))}: uses {math.prod(sizes)} devices of '
        f'{num_devices}; set one axis to -1 or config.mesh.num_devices.'
    )
  if slice_ is not None:
    _check_torus(tuple(sizes), slice_)
  accum = config.train.grad_accum_steps
  layout = _layout(config, tuple(sizes), accum)
  if layout is None:
    shards = sizes[0] * sizes[1] * sizes[2]
    raise ConfigError(
        f'config.train.batch_size={config.train.batch_size}: each of the {accum} microbatches '
        f'must split over the {shards} batch shards of config.mesh; change the batch, '
        "grad_accum_steps or the mesh, or set train.batch_rule='round'."
    )
  return layout


def slice_of(config) -> hardware.Slice | None:
  """The slice a config names (config.mesh.slice), or None for the devices there are."""
  if not config.mesh.slice:
    return None
  try:
    return hardware.parse(config.mesh.slice)
  except hardware.UnknownSlice as error:
    raise ConfigError(f'config.mesh.slice: {error}') from error


def choose(config, num_devices: int | None = None) -> Layout:
  """The layout of a validated config: planned (mesh.plan='auto') or its own mesh, on its slice
  (mesh.slice) or on `num_devices`; refused when the mesh breaks the slice's torus."""
  arch = spec_lib.architecture(config)
  slice_ = slice_of(config)
  if slice_ is not None and num_devices is not None and num_devices != slice_.chips:
    raise ConfigError(
        f'config.mesh.slice={slice_.name!r}: has {slice_.chips} chips, but this job has '
        f'{num_devices} devices; name the slice the job runs on (or leave mesh.slice empty).'
    )
  chips = slice_.chips if slice_ is not None else num_devices
  if chips is None:
    raise ConfigError('config.mesh.slice is empty: name a slice (v5p-128) to plan without devices.')
  if config.mesh.plan == 'auto':
    if slice_ is None:
      raise ConfigError(
          "config.mesh.plan='auto': plans for a named slice; set config.mesh.slice (e.g. "
          "'v5p-128', 'h100x8'), or mesh.plan='manual' with mesh sizes."
      )
    return plan(arch, config, slice_)
  return manual(config, chips, slice_)


def resolve(config, num_devices: int | None = None):
  """A copy of `config` with its layout made concrete (`choose`): mesh sizes, microbatches and
  the batch as run, the batch asked for kept in train.requested_batch_size."""
  layout = choose(config, num_devices)
  c = config.copy_and_resolve_references()
  c.unlock()
  c.mesh.update(dict(zip(MESH_AXES, layout.mesh)), plan='manual')
  c.train.update(
      batch_size=layout.batch_size,
      grad_accum_steps=layout.microbatches,
      requested_batch_size=config.train.requested_batch_size or layout.requested_batch_size,
  )
  if layout.remat:
    c.model.remat = layout.remat
  # A microbatched step evaluates a microbatch at a time: the eval forward has no microbatch
  # loop, and a whole training batch's f32 logits (B x L x vocab) need not fit a chip.
  micro = layout.batch_size // layout.microbatches
  t = config.train
  if layout.microbatches > 1 and not t.eval_batch_size and t.eval_sequences % micro == 0:
    c.train.eval_batch_size = micro
  c.lock()
  return c
