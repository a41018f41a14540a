"""Hyperparameter scaling (paper Sec. 2.2, Fig. 2, Eq. 3): learning rate x batch grid per budget.

  python -m experiments.run --config=configs/hparams.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/hparams.py:local --workdir=/tmp/studies --list

At each budget the model comes from an allocation law (fitting.model_design: MoE 64 experts / 4
active / 1 shared, G = 2, and dense), and every (learning rate, batch) of the grid trains it.
`paper` (default): log2 lr in {-11, -10.5, ..., -9}, log2 batch tokens in {18, ..., 21}, budgets
3e17, 3e18, 3e19, 3e20 FLOPs (the paper's range, one per decade): 2 x 4 x 5 x 4 = 160 members.
`local` (step 1 of the local protocol, docs/replication.md): budgets 1e11, 5.6e11 and 3.2e12
FLOPs (1.5 decades), models from Table 1 (this scale has no allocation law before this study),
learning rates 2^-3 .. 2^0 and batches 2^-1 .. 2^1 times Eq. 3 at each budget, a batch shrunk
where it would leave fewer than 1,000 steps (duplicates dropped); at 3.2e12 the grid moves past
the corner where the first runs found their best (see GRID). `smoke`: 2 x 2 x 2 x 1.
Near-optimal runs are those within 0.25% of the best loss of their budget; the paper fitted
lr = 1.1576 C^-0.1529 and B = 0.0694 C^0.3644 tokens for MoE and found MoE preferring larger
batches and slightly lower learning rates than dense at large budgets.
"""

import math

from configs import common
from experiments import protocol
from fitting import laws
from fitting import model_design as design_lib

GRID = {
    'paper': dict(
        budgets=[3e17, 3e18, 3e19, 3e20],
        log2_lr=[-11, -10.5, -10, -9.5, -9],
        log2_batch_tokens=[18, 19, 20, 21],
    ),
    # Local: offsets (log2) from Eq. 3 at each budget, not absolute values. The grid reaches
    # down to 1/8 of Eq. 3's learning rate, below where the first runs put the optimum (the
    # record: docs/replication.md), so that every optimum is bracketed.
    'local': dict(
        budgets=[1e11, 5.6e11, 3.2e12],
        log2_lr=[-3, -2, -1, 0],
        log2_batch_tokens=[-1, 0, 1],
        # An optimum on the grid's corner is censored: where the first runs put the best loss
        # there (at 3.2e12 FLOPs; the record: docs/replication.md), the grid leaves out Eq. 3's
        # own learning rate and reaches past the corner. Both arms get the same grid.
        log2_lr_at={3.2e12: [-3, -2, -1]},
        extra_at={3.2e12: [(-4, -2), (-4, -1), (-4, 0), (-3, -2), (-5, -1)]},
    ),
    'smoke': dict(budgets=[3e8], log2_lr=[-8, -6], log2_batch_tokens=[7, 8]),
}
SHAPES = {'moe': protocol.BASELINE_MOE, 'dense': design_lib.MoEShape()}


def get_config(arg=None):
  scale = common.parse_scale(arg)
  return common.study_config('hparams', scale, __file__, designed=True)


def design_options(scale):
  return common.SCALE[scale].design_options()


def _grid(scale, budget, seq_len, tokens):
  """(learning rate, batch sequences) pairs of one budget."""
  grid = GRID[scale]
  if scale != 'local':
    return [
        (2.0**lr, max(1, 2**b // seq_len))
        for lr in grid['log2_lr']
        for b in grid['log2_batch_tokens']
    ]
  lr0, batch0 = laws.MOE_LEARNING_RATE(budget), laws.MOE_BATCH_TOKENS(budget)
  batch = lambda b: protocol.local_batch_sequences(batch0 * 2.0**b, tokens)
  batches = sorted({batch(b) for b in grid['log2_batch_tokens']})
  log2_lrs = grid['log2_lr_at'].get(budget, grid['log2_lr'])
  pairs = [(lr0 * 2.0**lr, b) for lr in log2_lrs for b in batches]
  pairs += [(lr0 * 2.0**lr, batch(b)) for lr, b in grid['extra_at'].get(budget, [])]
  return list(dict.fromkeys(pairs))


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  seq_len = get_config(scale).train.seq_len
  members = []
  for kind, shape in SHAPES.items():
    for budget in GRID[scale]['budgets']:
      m_target = (laws.MOE_OPTIMAL_M if kind == 'moe' else laws.DENSE_OPTIMAL_M)(budget)
      if scale == 'smoke':
        m_target = common.optimal_m(budget, scale, kind)
      d = design_lib.design(budget, shape, **design_options(scale), m_target=m_target)
      for lr, batch in _grid(scale, budget, seq_len, d.tokens):
        members.append(
            common.design_member(
                f'{kind}_C{budget:.2g}_lr{math.log2(lr):+.2f}_b{batch}',
                f'{kind}_C{budget:.2g}',
                d,
                scale,
                kind,
                batch_sequences=batch,
                learning_rate=lr,
                needs_local_laws=(),
            )
        )
  return members
