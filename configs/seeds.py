"""Seed-to-seed spread of the final eval loss: one dense and one MoE design, trained with several
seeds (initialisation and data order) at one budget. Beyond the paper: one run per design is all
it reports, and its reviewers note the missing seed variance (arXiv 2507.17702, Sec. 2-4). The
spread is the noise every one-run-per-design law carries and no bootstrap of those runs sees:
EL intervals and the hparams study's 0.25% band are read against it (docs/replication.md).

  python -m experiments.run --config=configs/seeds.py:local --workdir=/tmp/studies

`local` (after the local hparams and allocation laws are fitted): the compute-optimal dense model
and the baseline MoE (64 experts, 4 active, 1 shared, G = 2) at 5e11 FLOPs, 4 seeds each, about
20 minutes. `smoke`: 2 seeds each, for tests. No `paper` scale: on a pod, repeat any study's
member with --config.train.seed and --config.data.seed.
"""

from configs import common
from configs import hparams
from experiments import member as member_lib
from fitting import model_design as design_lib
from ling_jax import config as config_lib

BUDGET = {'local': 5e11, 'smoke': 3e8}
SEEDS = {'local': 4, 'smoke': 2}


def _scale(arg) -> str:
  scale = common.parse_scale(arg or 'local')
  if scale == 'paper':
    raise config_lib.ConfigError(
        'configs/seeds.py has no paper scale; use :local or :smoke, or rerun any paper member '
        'with --config.train.seed and --config.data.seed.'
    )
  return scale


def get_config(arg=None):
  return common.study_config('seeds', _scale(arg), __file__, designed=True)


def get_sweep(arg=None):
  scale = _scale(arg)
  budget = BUDGET[scale]
  members = []
  for kind, shape in hparams.SHAPES.items():
    d = design_lib.design(
        budget,
        shape,
        m_target=common.optimal_m(budget, scale, kind),
        **common.fitted_design_options(scale),
    )
    one = common.design_member(kind, kind, d, scale, kind)
    members += [member_lib.seed_replicate(one, seed) for seed in range(SEEDS[scale])]
  return members
