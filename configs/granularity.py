"""Expert granularity (paper Sec. 4.1.2, Table 8): G = 2 d_model / d_expert in {2, ..., 16}.

  python -m experiments.run --config=configs/granularity.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/granularity.py:local --workdir=/tmp/studies --list

(E, E_a, E_s) = (64, 2, 1) x k for k in {1, 2, 3, 4, 6, 8} with d_expert = 2 d_model / G, so M is
equal within each of 6 groups (36 members; the paper rounds widths down, e.g. 170 for 170.67).
Scales: `paper` (default; Table 8, 2e18-6e20 FLOPs; TPU pod), `local` (CPU; the three local
budgets, 1e11-3.2e12 FLOPs; `--list` gives each member's hours),
`smoke`. The paper found a U-shaped loss in log G with its optimum near G = 12 at every budget
(Eq. 11), shifting coarser when routing is poorly balanced.
"""

import math

from configs import common
from configs import paper_tables as tables

GRANULARITIES = [2, 4, 6, 8, 12, 16]


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = common.study_config('granularity', scale, __file__)
  c.model.update(n_experts=64, top_k=2, n_shared=1, d_expert=64, d_ffn=0)
  return c


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  shapes = tables.TABLE_8_EXPERTS if scale != 'smoke' else tables.TABLE_8_EXPERTS[:3]
  members = []
  for group in common.groups(scale):
    for (experts, active, shared), g in zip(shapes, GRANULARITIES):
      width = (
          tables.TABLE_8[group.index][1][GRANULARITIES.index(g)]
          if scale == 'paper'
          else math.floor(2 * group.d_model / g)
      )
      members.append(
          group.member(f'G{g}', n_experts=experts, top_k=active, n_shared=shared, d_expert=width)
      )
  return members
