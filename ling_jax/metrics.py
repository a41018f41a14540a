"""Metrics for a workdir that is a local folder or gs://.

Process 0 writes JSON lines. Locally they are appended to `metrics.jsonl`; on object stores,
which cannot append, every `flush_every` records become one immutable chunk file under
`metrics/`. Readers keep the last record per (kind, step), so steps repeated after a resume
replace the earlier ones. Whole files (config, summary) are written to a temporary name and
renamed, so they are complete or absent.

No JAX here: the sweep and the study configs read these files without starting JAX, so the
trainer passes in what only JAX knows (the device kind, whether this process writes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import numpy as np
from etils import epath

from ling_jax import hardware

METRICS_FILE = 'metrics.jsonl'
CHUNK_DIR = 'metrics'
SUMMARY_FILE = 'summary.json'
CONFIG_FILE = 'config.json'

log = logging.getLogger('ling_jax')


def peak_flops_per_device(configured: float, device_kind: str) -> float | None:
  """bf16 dense peak FLOP/s of one device, for MFU: `configured` (config.metrics
  .peak_flops_per_device) when set, else the chip table's (ling_jax.hardware.CHIPS); None for a
  device it does not hold (the CPU)."""
  if configured:
    return configured
  chip = hardware.chip_of_device_kind(device_kind)
  return chip.peak_bf16_flops_per_s if chip else None


def is_remote(path: str) -> bool:
  return '://' in str(path)


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if hasattr(value, '__array__') and not isinstance(value, (np.floating, np.integer)):
    return _jsonable(np.asarray(value).tolist())  # numpy and jax arrays alike
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else str(value)  # 'nan' / 'inf' stay readable
  if isinstance(value, np.integer):
    return int(value)
  return value


# Remote writes ride out an object store's outage: attempts with doubling waits between them
# (1 s, 2 s, ... at most 128 s) until an attempt fails 10 minutes (config.metrics.remote_retry_s)
# after the first began; then the error reaches the run, whose checkpoint decides what is lost.
# gcsfs retries each attempt itself for about 30 s, so an outage shorter than that never shows.
REMOTE_RETRY_DEADLINE_S = 600.0
_LONGEST_WAIT_S = 128.0


def write_whole(path: epath.Path, text: str, deadline_s: float = REMOTE_RETRY_DEADLINE_S) -> None:
  """Writes a complete file or nothing (rename locally; single-object upload remotely, retried
  through outages of up to `deadline_s` seconds)."""
  if is_remote(path):
    start, wait = time.monotonic(), 1.0
    while True:
      try:
        path.write_text(text)
        return
      except Exception as error:  # pylint: disable=broad-except  # gcsfs raises many kinds
        left = deadline_s - (time.monotonic() - start)
        if left <= 0:
          raise
        wait = min(wait, _LONGEST_WAIT_S, left)
        log.warning(
            'writing %s failed (%s: %s); retrying in %.3g s (%.0f s left before giving up)',
            path,
            type(error).__name__,
            str(error)[:200],
            wait,
            left,
        )
        time.sleep(wait)
        wait *= 2
  tmp = path.parent / f'.{path.name}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class MetricWriter:
  """JSONL (and optional TensorBoard) metrics of one run; a no-op unless `active`.

  Multi-process runs pass active = (jax.process_index() == 0): one process writes.
  """

  def __init__(
      self,
      workdir: str,
      tensorboard: bool = False,
      flush_every: int = 10,
      active: bool = True,
      retry_deadline_s: float = REMOTE_RETRY_DEADLINE_S,
  ):
    self.active = active
    self.retry_deadline_s = retry_deadline_s
    self.workdir = epath.Path(workdir)
    self.remote = is_remote(workdir)
    self.flush_every = flush_every
    self._buffer: list[str] = []
    self._file = None
    self._tb = None
    if not self.active:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    if self.remote:
      (self.workdir / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
    else:
      self._file = open(self.workdir / METRICS_FILE, 'a+')
      self._file.seek(0, os.SEEK_END)
      if self._file.tell():  # end a line a crash cut off, so the next record parses
        self._file.seek(self._file.tell() - 1)
        if self._file.read(1) != '\n':
          self._file.write('\n')
    if tensorboard:
      import tensorboardX  # optional dependency: pip install ling-jax[tensorboard]

      self._tb = tensorboardX.SummaryWriter(str(self.workdir / 'tensorboard'))

  def write(self, record: dict[str, Any]) -> None:
    if not self.active:
      return
    line = json.dumps(_jsonable(record))
    if self._file is not None:
      self._file.write(line + '\n')
      self._file.flush()
    else:
      self._buffer.append(line)
      if len(self._buffer) >= self.flush_every:
        self.flush()
    if self._tb is not None:
      prefix = record.get('kind', 'train')
      for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != 'step':
          self._tb.add_scalar(f'{prefix}/{key}', value, record['step'])

  def flush(self) -> None:
    if not self.active or not self._buffer:
      return
    first = json.loads(self._buffer[0]).get('step', 0)
    name = f'{time.time_ns():020d}-step{first:09d}.jsonl'
    text = '\n'.join(self._buffer) + '\n'
    write_whole(self.workdir / CHUNK_DIR / name, text, self.retry_deadline_s)
    self._buffer = []

  def write_json(self, name: str, payload: dict[str, Any]) -> None:
    if self.active:
      text = json.dumps(_jsonable(payload), indent=2, sort_keys=True)
      write_whole(self.workdir / name, text, self.retry_deadline_s)

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of a run in step order, the last one kept per (kind, step)."""
  root = epath.Path(workdir)
  texts = []
  if (root / METRICS_FILE).exists():
    texts.append((root / METRICS_FILE).read_text())
  if (root / CHUNK_DIR).exists():
    texts += [p.read_text() for p in sorted((root / CHUNK_DIR).iterdir())]
  latest = {}
  for text in texts:
    for line in text.splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:  # a line cut off by a crash mid-write
        continue
      if isinstance(record, dict):
        latest[(record.get('kind', 'train'), record.get('step'))] = record
  return sorted(latest.values(), key=lambda r: (r.get('step', 0), r.get('kind', '')))


def train_losses(workdir: str) -> list[float]:
  """The training loss of every step of a run, in step order (a step trained twice, before and
  after a restart, counts once: its last record)."""
  return [r['loss'] for r in read_metrics(str(workdir)) if r['kind'] == 'train']
