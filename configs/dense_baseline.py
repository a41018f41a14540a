"""The dense loss frontier that Efficiency Leverage is measured against (paper Sec. 3, Eq. 5).

  python -m experiments.run --config=configs/dense_baseline.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/dense_baseline.py:local --workdir=/tmp/studies

One compute-optimal dense model per budget (fitting.model_design at the dense M_opt(C)), so that
L_dense(C) can be fitted and inverted at each MoE run's loss. At `local`, where neighbouring
backbones differ by 2-3x in M, each budget also trains the nearest backbone on the other side of
M_opt (`dense_C<budget>_above` or `_below`), and the frontier takes the lower loss of the two:
an envelope of the sizes tried, as the paper's frontier is of the optimal allocation. Members at
the budgets up to 4e12 train with three seeds, and the envelope compares each size's mean. The
budgets bracket the MoE budgets: half the smallest below, and 6 (local) to 8 (paper) times the
largest above, so that an MoE run with an EL up to 6-8 reads its dense compute off fitted
points, not an extrapolation.
`paper` (default): 1e18 .. 2e21 FLOPs, Table 1's M_opt. `local` (step 3 of the local protocol,
docs/replication.md): 5e10 .. 2e13 FLOPs (half the smallest ablation budget to 6 times the
largest) at this scale's fitted dense M_opt(C), learning rate and batch from its
hyperparameter law. `demo` (the dense half of `python -m experiments.demo`): 2.5e10 .. 4e11
FLOPs. `smoke`: 2 members.
"""

from configs import common
from configs import paper_tables as tables
from experiments import member as member_lib
from experiments import protocol
from fitting import model_design as design_lib

BUDGETS = {
    'paper': [1e18] + tables.GROUP_MAX_FLOPS + [2e21],
    'local': [5e10, 1e11, 2.5e11, 6.3e11, 1.6e12, 4e12, 1e13, 2e13],
    'smoke': [3e8, 6e8],
    common.DEMO: protocol.DEMO_DENSE_BUDGETS,
}


def get_config(arg=None):
  scale = common.parse_scale(arg, demo=True)
  return common.study_config('dense_baseline', scale, __file__, designed=True)


# Scales that also train, at each budget, the nearest model on the other side of M_opt: the
# frontier is the lower of the two (fitting.el.frontier_designs).
BRACKETED = ('local',)

# Seeds per member at the budgets in SEEDED_RANGE (FLOPs), appended after the seed-0 members
# (`<member>_seed<s>`, s >= 1) so that sweep indices 0-15 keep their members. The frontier takes
# each size's mean over its seeds: at `local` a small dense model's seed spread is of the size
# of the differences the frontier resolves, and the lower of two single runs is a lucky draw
# more often than not (measured: docs/replication.md, "Record"). The seeded budgets bracket every
# ablation budget, where the A = 1 members' losses are read.
# The demo seeds the budgets where its A = 1 members' losses are read, for the same reason.
SEEDS = {'local': 3, common.DEMO: 3}
SEEDED_RANGE = {
    'local': (0.0, 4e12),
    common.DEMO: (min(protocol.DEMO_GROUP_BUDGETS), max(protocol.DEMO_GROUP_BUDGETS)),
}


def get_sweep(arg=None):
  scale = common.parse_scale(arg, demo=True)
  members = []
  for budget in BUDGETS[scale]:
    options = dict(
        common.fitted_design_options(scale), m_target=common.optimal_m(budget, scale, 'dense')
    )
    d = design_lib.design(budget, design_lib.MoEShape(), **options)
    name, group = f'dense_C{budget:.2g}', f'C{budget:.2g}'
    members.append(common.design_member(name, group, d, scale, 'dense'))
    if scale in BRACKETED:
      side = 'above' if d.M <= options['m_target'] else 'below'
      other = design_lib.design(budget, design_lib.MoEShape(), side=side, **options)
      members.append(common.design_member(f'{name}_{side}', group, other, scale, 'dense'))
  low, high = SEEDED_RANGE.get(scale, (0.0, -1.0))
  seeded = [m for m in members if low <= m.overrides['train.compute_budget'] <= high]
  for seed in range(1, SEEDS.get(scale, 1)):
    members += [member_lib.seed_replicate(m, seed) for m in seeded]
  return members
