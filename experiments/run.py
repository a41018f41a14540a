"""Runs one training job from an ml-collections config file.

  python -m experiments.run --config=configs/moe.py:local --workdir=/tmp/ling_jax/moe_local
  python -m experiments.run --config=configs/dense.py:local --config.train.learning_rate=1e-3 \
      --workdir=gs://bucket/runs/dense

The config is validated before anything is compiled; a rerun on the same workdir resumes.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, with an optional ":arg".',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Local folder or gs:// path for this run.')
flags.mark_flags_as_required(['config', 'workdir'])


def _quiet_libraries() -> None:
  """Shows ling_jax's progress lines; orbax and friends log through absl at INFO otherwise."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  progress = std_logging.getLogger('ling_jax')
  progress.setLevel(std_logging.INFO)
  handler = std_logging.StreamHandler(sys.stderr)
  handler.setFormatter(std_logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
  progress.addHandler(handler)
  progress.propagate = False


def main(argv):
  del argv
  _quiet_libraries()
  from ling_jax import config as config_lib  # after flags: JAX reads its env vars on import
  from ling_jax import train

  config = _CONFIG.value
  try:
    config_lib.validate(config)
  except config_lib.ConfigError as error:
    sys.exit(f'Invalid config: {error}')
  logging.info('Config:\n%s', config)
  summary = train.train(config, _WORKDIR.value)
  print(f"{summary['status']}: {summary['final_step']} steps, final train loss "
        f"{summary['final_train_loss']:.4f}, eval loss {summary['final_eval_loss']}, "
        f"{summary['wall_time_s']:.0f} s")
  print(f'Metrics: {os.path.join(_WORKDIR.value, "metrics.jsonl")} '
        f'(summary.json and config.json beside it)')


if __name__ == '__main__':
  app.run(main)
