"""Runs a config: one training job, or every member of a study in sequence.

  python -m experiments.run --config=configs/moe.py:local --workdir=/tmp/ling_jax/moe_local
  python -m experiments.run --config=configs/granularity.py:local --workdir=/tmp/studies --list
  python -m experiments.run --config=configs/granularity.py --workdir=gs://B/studies \
      --config.data.paths=gs://B/tokens/train.bin --sweep_index=7     # one member, job arrays

Every config (every member of a study) is validated before anything is compiled; a rerun on the
same workdir resumes: finished members are skipped, interrupted ones continue from their
checkpoint.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import console

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, with an optional ":arg".', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Local folder or gs:// path.')
_SWEEP_INDEX = flags.DEFINE_integer('sweep_index', None, 'Run only this member of a study.')
_LIST = flags.DEFINE_bool('list', False, "Print the study's members and their cost; train nothing.")
_RETRY_FAILED = flags.DEFINE_bool('retry_failed', False, 'Rerun members recorded as failed.')
_ALLOW_PROVISIONAL = flags.DEFINE_bool(
    'allow_provisional', False, 'Train local members whose laws are not fitted yet.'
)
_COORDINATOR = flags.DEFINE_string(
    'coordinator',
    None,
    'host:port of process 0, multi-process ' 'runs off TPU (or LING_JAX_COORDINATOR).',
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes - 1.')


def _run_one(config, workdir):
  from ling_jax import train  # pylint: disable=import-outside-toplevel

  summary = train.train(config, workdir)
  if summary['status'] == 'preempted':
    console.exit_preempted(f"step {summary['final_step']}")
  number = lambda key, spec: 'n/a' if summary.get(key) is None else format(summary[key], spec)
  print(
      f"{summary['status']}: {summary['final_step']} steps, final train loss "
      f"{number('final_train_loss', '.4f')}, eval loss {number('final_eval_loss', '.4f')}, "
      f"{number('wall_time_s', '.0f')} s"
  )
  print(
      f'Metrics: {os.path.join(workdir, "metrics.jsonl")} '
      '(summary.json and config.json beside it)'
  )


def main(argv):
  del argv
  console.show_progress()
  # Imported after flag parsing: JAX reads its environment when first imported.
  from experiments import listing  # pylint: disable=import-outside-toplevel
  from experiments import sweep  # pylint: disable=import-outside-toplevel
  from ling_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from ling_jax import distributed  # pylint: disable=import-outside-toplevel

  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)

  config = _CONFIG.value
  try:
    members = sweep.load_members(config)
    if members is None:
      config_lib.validate(config)
      if _LIST.value:
        print(f'{config.name}: a single run, not a study.')
        return
      if _WORKDIR.value is None:
        sys.exit('--workdir is required.')
      _run_one(config, _WORKDIR.value)
      return
    sweep.check_flag_overrides(members, config_flags.get_override_values(flags.FLAGS['config']))
    if _LIST.value:
      print(listing.table(config, members, _WORKDIR.value))
      return
    if _WORKDIR.value is None:
      sys.exit('--workdir is required.')
    outcome = sweep.run(
        config,
        members,
        _WORKDIR.value,
        _SWEEP_INDEX.value,
        _RETRY_FAILED.value,
        allow_provisional=_ALLOW_PROVISIONAL.value,
    )
  except config_lib.ConfigError as error:
    sys.exit(f'Invalid config: {error}')
  preempted = [m for m, s in outcome.items() if s == 'preempted']
  if preempted:
    console.exit_preempted(f'{config.name}/{preempted[0]}')
  counts = {s: list(outcome.values()).count(s) for s in sorted(set(outcome.values()))}
  print(
      f'{config.name}: {counts} in {os.path.join(_WORKDIR.value, config.name)}; gather with '
      f'python -m experiments.collect --workdir={_WORKDIR.value}'
  )


if __name__ == '__main__':
  app.run(main)
