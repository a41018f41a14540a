"""Activation ratio (paper Sec. 4.1.1, Table 7): E in {2, ..., 256}, E_a = 2, E_s = 1.

  python -m experiments.run --config=configs/activation_ratio.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID   # one member
  python -m experiments.run --config=configs/activation_ratio.py:local --workdir=/tmp/studies

Sweeps 8 expert counts at fixed active compute in each of 6 backbone groups (48 members); only
total parameters change, so M is equal within a group. Scales: `paper` (default; Table 7's
backbones, budgets 2e18-6e20 FLOPs, its learning rates and batches; TPU pod), `local` (CPU, the
three local budgets 1e11-3.2e12 FLOPs; `--list` estimates each member), `demo`
(the MoE half of `python -m experiments.demo`: E in {2, 8, 32} at 5e10 and 1e11 FLOPs), `smoke`.
At `local` each group also trains its dense twin (`g<i>_dense`, see dense_twin), beyond the
paper. The paper found the loss falling monotonically as A falls, 0.8% best at every budget, and
EL growing as A falls and as C grows (Eq. 10).
"""

from configs import common
from configs import paper_tables as tables
from experiments import member as member_lib

EXPERTS = {
    'paper': tables.TABLE_7_EXPERTS,
    'local': tables.TABLE_7_EXPERTS,
    'smoke': [2, 4, 8],
    common.DEMO: [2, 8, 32],
}


def get_config(arg=None):
  scale = common.parse_scale(arg, demo=True)
  c = common.study_config('activation_ratio', scale, __file__)
  c.model.update(n_experts=2, top_k=2, n_shared=1, d_expert=64, d_ffn=0)
  return c


def get_sweep(arg=None):
  scale = common.parse_scale(arg, demo=True)
  members = []
  for group in common.groups(scale):
    d_expert = tables.TABLE_7[group.index][2] if scale == 'paper' else group.d_model
    for experts in EXPERTS[scale]:
      members.append(
          group.member(f'E{experts}', n_experts=experts, top_k=2, n_shared=1, d_expert=d_expert)
      )
    if scale == 'local':
      members.append(dense_twin(group))
  if scale in ('local', common.DEMO):  # after the rest, so sweep indices 0-26 keep their members
    a_equals_one_members = [m for m in members if m.name.endswith(f'_E{A_EQUALS_1_EXPERTS}')]
    members += [member_lib.seed_replicate(m, seed) for seed in (1, 2) for m in a_equals_one_members]
  return members


# The A = 1 member (as many routed experts as active) trains with seeds 1 and 2 as well at
# `local`: the fairness check compares it with the dense frontier, whose points there are means
# over 3 seeds (configs/dense_baseline.py), so it is one too; a single run's seed spread is of the
# size of the gap the check looks for (measured: docs/replication.md, "Record"). Fits take the
# three as one point.
A_EQUALS_1_EXPERTS = 2


def dense_twin(group: member_lib.Group) -> member_lib.Member:
  """The A = 1 member without its router: a dense model of the group's backbone, budget,
  learning rate and batch, d_ffn = 3 d_model (the A = 1 member's 2 routed + 1 shared experts of
  width d_model). The protocol's fairness check compares the two; both against the dense
  frontier, it tells what the group's backbone costs from what sparsity gains."""
  return group.member(
      'dense', n_experts=0, top_k=0, n_shared=0, d_expert=0, d_ffn=3 * group.d_model
  )
