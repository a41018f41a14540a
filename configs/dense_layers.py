"""First-k dense layers (paper Sec. 4.1.4, App. D, Table 10): 0, 1, 2 or 3 of 60 layers dense.

  python -m experiments.run --config=configs/dense_layers.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/dense_layers.py:local --workdir=/tmp/studies

E = 64, E_a = 2, E_s = 1, d_expert = d_model; 6 groups x 4 = 24 members. `paper` (default) uses
Table 10 as printed: 60 layers and d_ffn = 4 d_model (mostly), which is wider than the 3 d_model of
the activated experts, so M grows slightly with the number of dense layers (the text says it
matches; arXiv 2507.17702 §4.1.4, App. D, Table 10). `local` (CPU; 12 layers, the three local
budgets) sets d_ffn = 3 d_expert, iso-M as the text intends. The paper found almost no effect
(EL ~ 1), the best count growing with budget: 0 at 1e18, 2-3 of 60 at 3e20.
"""

from configs import common
from configs import paper_tables as tables

LAYERS = {'paper': 60, 'local': 12, 'smoke': 4}


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = common.study_config('dense_layers', scale, __file__)
  c.model.update(n_layers=LAYERS[scale], n_experts=64, top_k=2, n_shared=1, d_expert=64)
  if scale == 'smoke':
    c.model.n_experts = 8
  return c


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  members = []
  for group in common.groups(scale):
    if scale == 'paper':
      _, d_ffn, _, d_expert = tables.TABLE_10[group.index]
    else:
      d_expert = group.d_model
      d_ffn = 3 * d_expert
    for dense in tables.TABLE_10_DENSE:
      members.append(
          group.member(
              f'dense{dense}',
              n_layers=LAYERS[scale],
              num_dense_layers=dense,
              d_ffn=d_ffn,
              d_expert=d_expert,
          )
      )
  return members
