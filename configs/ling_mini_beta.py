"""Ling-mini-beta (MoE-mini), the paper's validation model (Sec. 5, Table 3): 17.5B / 0.85B.

  python -m experiments.run --config=configs/ling_mini_beta.py --workdir=gs://BUCKET/mini_beta \
      --config.data.paths=gs://BUCKET/tokens/train.bin
  python -m experiments.run --config=configs/ling_mini_beta.py:local --workdir=/tmp/mini_beta

`paper` (default): 20 layers (the first dense, d_ffn 5120), d_model 2048, 16/4 heads, 384 experts
of width 384 (G = 10.67; the paper says 12), top-12 + 1 shared, 1T tokens of 8192-token
sequences, lr 3.78e-4, batch 1792 sequences, clip 1.0. About 7e21 FLOPs by M (paper convention).
`local`: the same sparsity (384 experts, top-12 + 1 shared, G = 12) on a 4-layer d_model-192
backbone, 3e13 FLOPs (about 15 minutes on CPU). The paper reports loss comparable to
configs/dense_6p1b.py with 7x fewer active parameters, and EL > 7 predicted at 1e22.
"""

from configs import common
from configs import paper_tables as tables


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = common.study_config('ling_mini_beta', scale, __file__)
  c.sweep.source = ''  # a single run
  if scale == 'paper':
    common.table3_run(c, tables.LING_MINI_BETA)
  elif scale == 'local':
    c.model.update(
        n_layers=4,
        d_model=192,
        n_heads=6,
        n_kv_heads=2,
        n_experts=384,
        top_k=12,
        n_shared=1,
        granularity=12.0,
        num_dense_layers=1,
        d_ffn=13 * 32,
    )
    c.train.compute_budget = 3e13
  else:
    c.model.update(n_experts=24, top_k=3, n_shared=1, d_expert=8, num_dense_layers=1, d_ffn=32)
  return c
