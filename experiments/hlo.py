"""What a compiled program communicates: its collectives, read from the optimized HLO text.

XLA prints a loop's body once, however many times it runs: a scanned layer stack, the
microbatch loop and the steps of a call each multiply what their bodies send. Trip counts are
read from each while loop's condition (JAX's loops compare a counter from 0 with a constant), and
every computation's count of executions per call is the sum over its callers, computed from the
entry computation down. `cost_analysis()` makes the same one-body mistake and is not used.

XLA:TPU runs a reduce-scatter as an all-reduce whose only use is each partition's slice of it,
fused into one kernel; such a pair is counted as the reduce-scatter it is.

Bytes per chip follow the ring algorithms: an all-reduce of S bytes over n chips sends
2 (n-1)/n S from each chip, an all-gather (n-1)/n of its output, a reduce-scatter (n-1) times
its output, an all-to-all (n-1)/n S, a collective-permute S.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

KINDS = (
    'all-reduce',
    'all-gather',
    'reduce-scatter',
    'all-to-all',
    'ragged-all-to-all',
    'collective-permute',
)
_BYTES = {
    'pred': 1,
    's8': 1,
    'u8': 1,
    'f8e4m3fn': 1,
    'f8e5m2': 1,
    'bf16': 2,
    'f16': 2,
    's16': 2,
    'u16': 2,
    'f32': 4,
    's32': 4,
    'u32': 4,
    'f64': 8,
    's64': 8,
    'u64': 8,
}
_HEADER = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\))?\s*->.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\((.*)$')
_ARRAY = re.compile(r'\b([a-z]+\d*(?:e\d+m\d+(?:fn)?)?)\[([\d,]*)\]')
_CALLEE = re.compile(r'\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)')
_BRANCHES = re.compile(r'(?:branch_computations|called_computations)=\{([^}]*)\}')
_CONSTANT = re.compile(r'\bs(?:32|64)\[\](?:\{[^}]*\})?\s+constant\((\d+)\)')


@dataclasses.dataclass
class Collective:
  kind: str
  shapes: list[tuple[str, tuple[int, ...]]]  # (dtype, dims) of its result arrays
  result_bytes: int
  group_size: int
  executions: int  # per call of the program
  computation: str

  @property
  def bytes_sent_per_chip(self) -> float:
    n, size = self.group_size, self.result_bytes
    share = (n - 1) / n if n > 1 else 0.0
    if self.kind == 'all-reduce':
      return 2 * share * size
    if self.kind == 'reduce-scatter':
      return (n - 1) * size
    if self.kind == 'collective-permute':
      return size
    return share * size


def _arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
  out = []
  for dtype, dims in _ARRAY.findall(type_text):
    if dtype in _BYTES:
      out.append((dtype, tuple(int(d) for d in dims.split(',') if d)))
  return out


def _nbytes(arrays) -> int:
  return sum(_BYTES[dtype] * math.prod(dims) for dtype, dims in arrays)


def _result_arrays(type_text: str, is_start: bool):
  """The arrays a collective produces. An async `-start` returns (operands, results[, scratch]):
  its results are the second element of the top-level tuple."""
  arrays = _arrays(type_text)
  if not is_start:
    return arrays
  parts, depth, start = [], 0, 0
  body = type_text.strip()
  if body.startswith('(') and body.endswith(')'):
    body = body[1:-1]
  for i, ch in enumerate(body):
    depth += ch in '([{'
    depth -= ch in ')]}'
    if ch == ',' and depth == 0:
      parts.append(body[start:i])
      start = i + 1
  parts.append(body[start:])
  return _arrays(parts[1]) if len(parts) >= 2 else arrays


def _group_size(rest: str, default: int) -> int:
  iota = re.search(r'replica_groups=\[(\d+),(\d+)\]<=', rest)
  if iota:
    return int(iota.group(2))
  listed = re.search(r'replica_groups=\{\{([\d,]*)\}', rest)
  if listed:
    return len([x for x in listed.group(1).split(',') if x])
  mesh = re.search(r'replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}', rest)
  if mesh:
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
    names = re.findall(r"'([^']+)'", mesh.group(2))
    return math.prod(int(sizes[n]) for n in names if n in sizes)
  return default


def _scattered_all_reduces(lines: list[str]) -> dict[str, list]:
  """All-reduces that are reduce-scatters: XLA:TPU emits a reduce-scatter as a computation
  (`all-reduce-scatter.N`, run as one fused kernel) whose root is a per-partition dynamic-slice
  of an all-reduce; {all-reduce name: the slice's arrays}."""
  out = {}
  for line in lines:
    if not line.lstrip().startswith('ROOT'):
      continue
    match = _INSTRUCTION.match(line)
    if match and match.group(3) == 'dynamic-slice':
      operand = re.match(r'\s*%?([\w.\-]+)', match.group(4))
      if operand:
        out[operand.group(1)] = _arrays(match.group(2))
  reduces = set()
  for line in lines:
    match = _INSTRUCTION.match(line)
    if match and match.group(3) == 'all-reduce':
      reduces.add(match.group(1))
  return {name: arrays for name, arrays in out.items() if name in reduces}


def collectives(hlo_text: str, num_devices: int) -> list[Collective]:
  """Every collective of an optimized HLO module, with its executions per program call."""
  computations: dict[str, list[str]] = {}
  order, current = [], None
  for line in hlo_text.splitlines():
    header = _HEADER.match(line)
    if header and not line.startswith(' '):
      current = header.group(1)
      computations[current] = []
      order.append((current, line.startswith('ENTRY')))
      continue
    if current is not None:
      computations[current].append(line)
  trips = {}
  for name, lines in computations.items():
    constants = [int(c) for line in lines for c in _CONSTANT.findall(line)]
    trips[name] = max(constants) if constants else 1
  executions = collections.Counter()
  entry = [name for name, is_entry in order if is_entry]
  executions[entry[-1] if entry else order[-1][0]] = 1
  # Callees are printed before their callers: in reverse order, a computation's count is
  # complete before it is passed on.
  for name, _ in reversed(order):
    count = executions[name]
    if not count:
      continue
    for line in computations[name]:
      body = re.search(r'\bbody=%?([\w.\-]+)', line)
      condition = re.search(r'\bcondition=%?([\w.\-]+)', line)
      for callee in _CALLEE.findall(line):
        factor = 1
        if body and callee == body.group(1) and condition:
          factor = trips.get(condition.group(1), 1)
        executions[callee] += count * factor
      for group in _BRANCHES.findall(line):
        for callee in re.findall(r'%?([\w.\-]+)', group):
          executions[callee] += count
  out = []
  for name, lines in computations.items():
    scattered = _scattered_all_reduces(lines)
    for line in lines:
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      type_text, op, rest = match.group(2), match.group(3), match.group(4)
      is_start = op.endswith('-start')
      kind = op.removesuffix('-start')
      if kind not in KINDS or op.endswith('-done'):
        continue
      arrays = _result_arrays(type_text, is_start)
      if match.group(1) in scattered:
        kind, arrays = 'reduce-scatter', scattered[match.group(1)]
      out.append(
          Collective(
              kind,
              arrays,
              _nbytes(arrays),
              _group_size(rest, num_devices),
              executions[name],
              name,
          )
      )
  return out


def summarize(found: list[Collective]) -> dict[str, dict[str, float]]:
  """Per kind: ops in the program text, executions per call, and bytes sent per chip per call."""
  out = {}
  for kind in KINDS:
    ops = [c for c in found if c.kind == kind]
    if ops:
      out[kind] = dict(
          ops=len(ops),
          executions=sum(c.executions for c in ops),
          bytes_per_chip=sum(c.executions * c.bytes_sent_per_chip for c in ops),
      )
  return out
