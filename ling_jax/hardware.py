"""Accelerators and slices by their product names: the one table of chip figures (peak FLOP/s,
HBM, bandwidths) that MFU, the compile check and the layout planner read.

Pure Python (no JAX at import): `config.validate` and `--list` read it. `slice_devices` gives a
slice's devices without the hardware (JAX's deviceless topologies: libtpu for TPUs, the CUDA
plugin for GPUs), so that a program can be compiled for a pod before one is booked
(experiments/compile.py).

Names follow Google Cloud's accelerator types: `v5e-N` and `v6e-N` count chips, `v4-N` and
`v5p-N` count TensorCores (two a chip); `h100x8` and `h200x8` are one 8-GPU node. A leading
`Kx` names K slices joined by the data-center network (`2xv5p-128`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip, with its figures as published (sources in `source`).

  `interconnect_bytes_per_s` is the chip-to-chip bandwidth of one chip, both directions
  together (TPU ICI, NVLink): a collective that sends b bytes from each chip takes at least
  b / (interconnect_bytes_per_s / 2) seconds.
  """

  name: str
  platform: str  # 'tpu' | 'cuda'
  device_kind: str  # how JAX names it (Device.device_kind), as a prefix
  hbm_bytes: int
  peak_bf16_flops_per_s: float  # dense, no sparsity
  hbm_bytes_per_s: float
  interconnect_bytes_per_s: float
  torus_dims: int  # 2 (v5e, v6e), 3 (v4, v5p); 1 for an NVLink node (all-to-all switch)
  cores_per_chip: int  # what a v4-N / v5p-N name counts per chip
  source: str
  gpu_cores: int = 0  # GPUs: streaming multiprocessors, for the compiler's target description
  gpu_compute_capability: tuple[int, int] = (0, 0)
  gpu_clock_ghz: float = 0.0
  gpu_l2_bytes: int = 0


_CLOUD_TPU = 'Google Cloud TPU documentation, "TPU {}" system architecture table'
CHIPS = {
    'v4': Chip(
        'v4',
        'tpu',
        'TPU v4',
        32 * GIB,
        275e12,
        1200e9,
        300e9,
        3,
        2,
        _CLOUD_TPU.format('v4') + '; ICI: six links of 50 GB/s (Jouppi et al., ISCA 2023, '
        'arXiv 2304.01433)',
    ),
    'v5e': Chip(
        'v5e', 'tpu', 'TPU v5 lite', 16 * GIB, 197e12, 819e9, 200e9, 2, 1, _CLOUD_TPU.format('v5e')
    ),
    'v5p': Chip(
        'v5p', 'tpu', 'TPU v5', 95 * GIB, 459e12, 2765e9, 1200e9, 3, 2, _CLOUD_TPU.format('v5p')
    ),
    'v6e': Chip(
        'v6e', 'tpu', 'TPU v6 lite', 32 * GIB, 918e12, 1640e9, 800e9, 2, 1, _CLOUD_TPU.format('v6e')
    ),
    'h100': Chip(
        'h100',
        'cuda',
        'NVIDIA H100',
        80 * GIB,
        989e12,
        3.35e12,
        900e9,
        1,
        1,
        'NVIDIA H100 Tensor Core GPU datasheet (SXM5: 989 TFLOP/s dense BF16, 80 GB HBM3 at '
        '3.35 TB/s, NVLink 900 GB/s; 132 SMs, compute capability 9.0)',
        gpu_cores=132,
        gpu_compute_capability=(9, 0),
        gpu_clock_ghz=1.98,
        gpu_l2_bytes=50 * 2**20,
    ),
}
# The H200 is the H100's compute die with larger, faster HBM: its other figures are the H100's.
CHIPS['h200'] = dataclasses.replace(
    CHIPS['h100'],
    name='h200',
    device_kind='NVIDIA H200',
    hbm_bytes=141 * 10**9,
    hbm_bytes_per_s=4.8e12,
    source='NVIDIA H200 Tensor Core GPU datasheet (SXM: 989 TFLOP/s dense BF16, 141 GB HBM3e at '
    '4.8 TB/s, NVLink 900 GB/s; 132 SMs, compute capability 9.0)',
)

# Slice shapes in chips, by the number in the product name (Google Cloud's supported slice
# shapes for each generation; v4 and v5p names count TensorCores).
_TORUS_3D = {
    8: (2, 2, 1),
    16: (2, 2, 2),
    32: (2, 2, 4),
    64: (2, 4, 4),
    128: (4, 4, 4),
    256: (4, 4, 8),
    512: (4, 8, 8),
    1024: (8, 8, 8),
    2048: (8, 8, 16),
    4096: (8, 16, 16),
}
_TORUS_2D = {
    1: (1, 1),
    4: (2, 2),
    8: (2, 4),
    16: (4, 4),
    32: (4, 8),
    64: (8, 8),
    128: (8, 16),
    256: (16, 16),
}
SHAPES = {'v4': _TORUS_3D, 'v5p': _TORUS_3D, 'v5e': _TORUS_2D, 'v6e': _TORUS_2D, 'h100': {8: (8,)}}
SHAPES['h200'] = SHAPES['h100']


class UnknownSlice(ValueError):
  """A slice name that is not in the table; the message lists the known ones."""


@dataclasses.dataclass(frozen=True)
class Slice:
  """A named slice: `num_slices` x a torus of `shape` chips of one kind."""

  name: str
  chip: Chip
  shape: tuple[int, ...]
  num_slices: int = 1

  @property
  def chips(self) -> int:
    return math.prod(self.shape) * self.num_slices

  @property
  def topology_name(self) -> str:
    """The name JAX's deviceless topologies take ('v5p:4x4x4')."""
    return f'{self.chip.name}:{"x".join(map(str, self.shape))}'

  @property
  def hbm_bytes(self) -> int:
    return self.chip.hbm_bytes

  def one_size_smaller(self) -> 'Slice | None':
    """The next smaller slice of the same chip (to show a layout's margin), or None."""
    sizes = sorted(
        n for n, s in SHAPES[self.chip.name].items() if math.prod(s) < math.prod(self.shape)
    )
    if not sizes:
      return None
    return parse(_name(self.chip, sizes[-1], self.num_slices))


def _name(chip: Chip, number: int, num_slices: int) -> str:
  base = f'{chip.name}x{number}' if chip.platform == 'cuda' else f'{chip.name}-{number}'
  return base if num_slices == 1 else f'{num_slices}x{base}'


def known_names() -> list[str]:
  return [_name(CHIPS[c], n, 1) for c, shapes in SHAPES.items() for n in shapes]


_PATTERN = re.compile(r'^(?:(\d+)x)?(v4|v5e|v5p|v6e)-(\d+)$|^(h100|h200)x(\d+)$')


def parse(name: str) -> Slice:
  """The slice a product name names; UnknownSlice (listing the known names) otherwise."""
  match = _PATTERN.match(name.strip().lower())
  if not match:
    raise UnknownSlice(_unknown(name))
  slices, tpu, tpu_number, gpu, gpu_number = match.groups()
  chip = CHIPS[tpu or gpu]
  number = int(tpu_number or gpu_number)
  shape = SHAPES[chip.name].get(number)
  if shape is None or (slices is not None and (int(slices) < 1 or gpu)):
    raise UnknownSlice(_unknown(name))
  return Slice(name, chip, shape, int(slices or 1))


def _unknown(name: str) -> str:
  return (
      f'slice {name!r} is not known: use one of {", ".join(known_names())}, or K x a TPU slice '
      'for K slices (2xv5p-128).'
  )


def chip_of_device_kind(device_kind: str) -> Chip | None:
  """The chip JAX reports as `device_kind` (longest prefix wins), or None."""
  for chip in sorted(CHIPS.values(), key=lambda c: len(c.device_kind), reverse=True):
    if device_kind.startswith(chip.device_kind):
      return chip
  return None


def gpu_target_config(chip: Chip) -> str:
  """XLA's GpuTargetConfig (text proto) of a GPU from its published figures: what the GPU
  compiler needs to compile for it without the hardware."""
  major, minor = chip.gpu_compute_capability
  return f"""
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: {chip.gpu_cores}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(chip.hbm_bytes_per_s)}
  l2_cache_size: {chip.gpu_l2_bytes}
  clock_rate_ghz: {chip.gpu_clock_ghz}
  device_memory_size: {chip.hbm_bytes}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 10 }}
device_description_str: "{chip.device_kind}"
"""


def slice_devices(slice_: Slice) -> list:
  """The slice's devices for ahead-of-time compilation, without the hardware.

  TPUs need libtpu (`pip install -e '.[tpu]'`), GPUs the CUDA plugin (`'.[gpu]'`); either
  raises RuntimeError naming the install when it is missing.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  chip = slice_.chip
  try:
    if chip.platform == 'cuda':
      # The plugin checks the CUDA libraries of this machine when it loads; a compile for a GPU
      # that is not here needs none of them.
      os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
      topology = topologies.get_topology_desc(
          topology_name=chip.name,
          platform='cuda',
          target_config=gpu_target_config(chip),
          topology=f'1x1x{math.prod(slice_.shape)}',
      )
    else:
      options = dict(chip_config_name='megacore') if chip.name == 'v4' else {}
      if slice_.num_slices > 1:
        options['num_slices'] = slice_.num_slices
      topology = topologies.get_topology_desc(
          topology_name=slice_.topology_name, platform='tpu', **options
      )
  except (NotImplementedError, RuntimeError, jax.errors.JaxRuntimeError) as error:
    extra = 'tpu' if chip.platform == 'tpu' else 'gpu'
    raise RuntimeError(
        f'{slice_.name}: cannot describe its devices here ({type(error).__name__}: {error}); '
        f"install the compiler for it: pip install -e '.[{extra}]'."
    ) from error
  devices = list(topology.devices)
  if len(devices) != slice_.chips:
    raise RuntimeError(f'{slice_.name}: {len(devices)} devices, expected {slice_.chips} chips.')
  return devices
