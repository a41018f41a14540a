"""The dense loss frontier that Efficiency Leverage is measured against (paper Sec. 3, Eq. 5).

  python -m experiments.run --config=configs/dense_baseline.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/dense_baseline.py:local --workdir=/tmp/studies

One compute-optimal dense model per budget (ling_jax.design with the dense allocation law of
Table 1), at the budgets of the MoE ablations, so that L_dense(C) can be fitted and inverted at
each MoE run's loss. `paper` (default): 2e18 .. 6e20 FLOPs (6 members, the Tables 7-11 budgets)
plus 1e18 and 2e21 to bracket them. `local`: the local ablation budgets and two beyond (about
20 minutes). `smoke`: 2 members.
"""

from configs import common
from configs import hparams
from configs import paper_tables as tables
from ling_jax import design as design_lib

BUDGETS = {'paper': [1e18] + tables.GROUP_MAX_FLOPS + [2e21],
           'local': [2.5e11] + common.LOCAL_BUDGETS + [3.2e13], 'smoke': [3e8, 6e8]}


def get_config(arg=None):
  scale = common.parse_scale(arg)
  return common.study_config('dense_baseline', scale, __file__, designed=True)


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  members = []
  for budget in BUDGETS[scale]:
    d = design_lib.design(budget, design_lib.MoEShape(), **hparams.design_options(scale),
                          m_target=common.scaled_optimal_m(budget, scale, moe=False))
    members.append(common.design_member(f'dense_C{budget:.0e}', f'C{budget:.0e}', d, scale))
  return members
