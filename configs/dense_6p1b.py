"""Dense-6.1B, the paper's dense counterpart of Ling-mini-beta (Sec. 5, Table 3).

  python -m experiments.run --config=configs/dense_6p1b.py --workdir=gs://BUCKET/dense_6p1b \
      --config.data.paths=gs://BUCKET/tokens/train.bin
  python -m experiments.run --config=configs/dense_6p1b.py:local --workdir=/tmp/dense_6p1b

`paper` (default): 28 layers, d_model 4096, d_ffn 14336, 32/8 heads, 1T tokens of 8192, lr
2.93e-4, batch 2048 sequences, clip 1.0 (N = 6.11B). `local`: a 4-layer d_model-256 dense
model, 3e13 FLOPs on CPU (about 10 minutes), beside configs/ling_mini_beta.py:local. The paper
found its loss matched by Ling-mini-beta at 1/7 of the active parameters.
"""

from configs import common
from configs import paper_tables as tables


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = common.study_config('dense_6p1b', scale, __file__)
  c.sweep.source = ''  # a single run
  if scale == 'paper':
    common.table3_run(c, tables.DENSE_6P1B)
  elif scale == 'local':
    c.model.update(n_layers=4, d_model=256, n_heads=8, n_kv_heads=2, d_ffn=896)
    c.train.compute_budget = 3e13
  else:
    c.model.update(d_ffn=64)
  return c
