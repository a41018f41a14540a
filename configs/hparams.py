"""Hyperparameter scaling (paper Sec. 2.2, Fig. 2, Eq. 3): learning rate x batch grid per budget.

  python -m experiments.run --config=configs/hparams.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/hparams.py:local --workdir=/tmp/studies --list

At each budget the model comes from the allocation law (ling_jax.design: MoE 64 experts / 4 active
/ 1 shared, G = 2, and dense), and every (learning rate, batch) of the grid trains it:
`paper` (default) log2 lr in {-11, -10.5, ..., -9}, log2 batch tokens in {18, ..., 21}, budgets
3e17, 3e18, 3e19, 3e20 FLOPs (the paper's range, one per decade): 2 x 4 x 5 x 4 = 160 members.
`local` shifts the grid to CPU scale (lr 2^-10 .. 2^-6, batch 2^12 .. 2^15 tokens, budgets
1e11 .. 3e12; about 1.5 hours); `smoke` is 2 x 2 x 2 x 1. Near-optimal runs are those within
0.25% of the best loss of their budget; the paper fitted lr = 1.1576 C^-0.1529 and
B = 0.0694 C^0.3644 tokens for MoE and found MoE preferring larger batches and slightly lower
learning rates than dense at large budgets.
"""

from configs import common
from ling_jax import design as design_lib

GRID = {
    'paper': dict(budgets=[3e17, 3e18, 3e19, 3e20], log2_lr=[-11, -10.5, -10, -9.5, -9],
                  log2_batch_tokens=[18, 19, 20, 21]),
    'local': dict(budgets=[1e11, 3e11, 1e12, 3e12], log2_lr=[-10, -9, -8, -7, -6],
                  log2_batch_tokens=[12, 13, 14, 15]),
    'smoke': dict(budgets=[3e8], log2_lr=[-8, -6], log2_batch_tokens=[7, 8]),
}
SHAPES = {'moe': design_lib.MoEShape(64, 4, 1, granularity=2.0), 'dense': design_lib.MoEShape()}


def get_config(arg=None):
  scale = common.parse_scale(arg)
  return common.study_config('hparams', scale, __file__, designed=True)


def design_options(scale):
  if scale == 'paper':
    return {}
  if scale == 'local':
    return common.local_design_options()
  return dict(seq_len=32, vocab_size=64, head_dim=8, ladder=common.SMOKE_BACKBONES)


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  grid, seq_len = GRID[scale], get_config(scale).train.seq_len
  members = []
  for kind, shape in SHAPES.items():
    for budget in grid['budgets']:
      d = design_lib.design(budget, shape, **design_options(scale), m_target=common.scaled_optimal_m(
          budget, scale, kind == 'moe'))
      for log2_lr in grid['log2_lr']:
        for log2_batch in grid['log2_batch_tokens']:
          members.append(common.design_member(
              f'{kind}_C{budget:.0e}_lr{log2_lr:g}_b{log2_batch}', f'{kind}_C{budget:.0e}', d,
              scale, batch_sequences=max(1, 2 ** log2_batch // seq_len),
              learning_rate=2.0 ** log2_lr))
  return members
