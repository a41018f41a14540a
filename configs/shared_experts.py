"""Shared-expert ratio (paper Sec. 4.1.3, Table 9): E = 256, E_a + E_s = 12, S from 0 to 83%.

  python -m experiments.run --config=configs/shared_experts.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/shared_experts.py:local --workdir=/tmp/studies

(E_a, E_s) in {(2, 10), (4, 8), (6, 6), (8, 4), (10, 2), (11, 1), (12, 0)}: Table 9's six splits
and (10, 2), the S = 16.7% the text reports best, which the table omits; d_expert = d_model / 4
(G = 8), M equal within a group. Scales: `paper` (default; Table 9, 2e18-6e20 FLOPs),
`local` (CPU; the three local budgets, 1e11-3.2e12 FLOPs), `smoke`. The paper found a U shape:
best S = 16.7% up to 1e20 FLOPs and 8.3% (one shared expert) beyond; S = 0 is usually worse.
"""

from configs import common
from configs import paper_tables as tables

# Table 9's splits plus (E_a, E_s) = (10, 2), S = 16.7%: the optimum the paper reports below
# 1e20 FLOPs (Sec. 4.1.3), which the printed table does not list.
SPLITS = sorted(tables.TABLE_9_SPLITS + [(10, 2)])


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = common.study_config('shared_experts', scale, __file__)
  c.model.update(n_experts=256, top_k=11, n_shared=1, d_expert=16, d_ffn=0)
  if scale == 'smoke':
    c.model.n_experts = 32
  return c


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  splits = SPLITS if scale != 'smoke' else SPLITS[::2]  # (10, 2) at every scale
  members = []
  for group in common.groups(scale):
    for active, shared in splits:
      members.append(
          group.member(
              f'Ea{active}_Es{shared}', top_k=active, n_shared=shared, d_expert=group.d_model // 4
          )
      )
  return members
