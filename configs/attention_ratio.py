"""Attention vs FFN compute (paper Sec. 4.1.4, App. D, Table 11): wider d_model, narrower experts.

  python -m experiments.run --config=configs/attention_ratio.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/attention_ratio.py:local --workdir=/tmp/studies

E = 64, E_a = 2, E_s = 1; five (d_model, d_expert) variants per group at equal M (6 groups, 30
members). `paper` (default) takes Table 11 as printed, with its own batches and the learning
rates of Tables 7-10 (Table 11's last three are 10x, a typo). `local` and `smoke` derive the
variants: d_model x {0.875, 0.9375, 1, 1.0625, 1.125}, the expert width solved for equal M
(design.iso_flop_expert_width). The paper found attention shares of 30-40% best and the effect
minor across 20-50%.
"""

from configs import common
from configs import paper_tables as tables
from fitting import model_design as design_lib

SCALES = [0.875, 0.9375, 1.0, 1.0625, 1.125]


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = common.study_config('attention_ratio', scale, __file__)
  c.model.update(n_experts=64 if scale != 'smoke' else 8, top_k=2, n_shared=1, d_expert=64)
  return c


def variants(group, scale, seq_len, vocab):
  if scale == 'paper':
    return tables.TABLE_11[group.index][1]
  base = design_lib.architecture(
      dict(
          n_layers=group.n_layers,
          d_model=group.d_model,
          n_heads=group.n_heads,
          n_kv_heads=group.n_kv_heads,
          n_experts=64,
          top_k=2,
          n_shared=1,
          d_expert=group.d_model,
      ),
      seq_len,
      vocab,
  )
  step = 2 * group.n_heads  # keeps an even head dim
  widths = sorted({max(step, round(f * group.d_model / step) * step) for f in SCALES})
  return [(d, design_lib.iso_flop_expert_width(base, d, group.n_heads)) for d in widths]


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  c = get_config(scale)
  members = []
  for group in common.groups(scale, batches=tables.TABLE_11_BATCH):
    for d_model, d_expert in variants(group, scale, c.train.seq_len, c.model.vocab_size):
      members.append(
          group.member(
              f'd{d_model}_e{d_expert}',
              d_model=d_model,
              d_expert=d_expert,
              head_dim=d_model // group.n_heads,
          )
      )
  return members
