"""Multi-process start-up: one process per host (or several per machine in tests)."""

from __future__ import annotations

import os

import jax


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
  """Joins the processes of a run before any device is used.

  An explicit coordinator (flag or LING_JAX_COORDINATOR, with LING_JAX_NUM_PROCESSES and
  LING_JAX_PROCESS_ID) starts a gloo-backed group, as on CPU or GPU hosts; on TPU pods, whose
  runtime knows its peers, `jax.distributed.initialize()` is called without arguments. A single
  process does nothing.
  """
  coordinator = coordinator or os.environ.get('LING_JAX_COORDINATOR')
  if coordinator:
    num_processes = num_processes or int(os.environ['LING_JAX_NUM_PROCESSES'])
    process_id = process_id if process_id is not None else int(os.environ['LING_JAX_PROCESS_ID'])
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator, num_processes, process_id)
  elif os.environ.get('TPU_WORKER_HOSTNAMES', '').count(',') > 0:
    jax.distributed.initialize()
