"""A single Ling-style MoE run.

  python -m experiments.run --config=configs/moe.py:local --workdir=/tmp/ling_jax/moe_local
  python -m experiments.run --config=configs/moe.py --workdir=gs://BUCKET/moe \
      --config.data.paths=gs://BUCKET/tokens/train.bin --config.data.eval_paths=gs://BUCKET/tokens/eval.bin

Scales (the ':arg'):
  paper -- the default. Paper Table 8's (16 layers, d_model 1024) group at G = 2: 64 experts of
           width 1024, 2 active + 1 shared, the group's 2e20 FLOPs budget, lr 8.1e-4, 531
           sequences of 4096 tokens; for a TPU pod.
  local -- 4 layers (1 dense of width 192), d_model 128, 16 experts of width 64 (G = 4), top-2
           + 1 shared, 1.5e13 FLOPs (810 steps of 16 x 256 bytes of the stdlib corpus): about
           3.5 minutes on 2 CPU cores; the eval loss falls from ln 256 = 5.5 to about 1.4.
  smoke -- seconds, synthetic data, for tests.
"""

from configs import common
from ling_jax import config as config_lib


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = config_lib.base_config()
  c.name = f'moe_{scale}'
  if scale == 'paper':
    c.model.update(
        n_layers=16,
        d_model=1024,
        n_heads=16,
        n_kv_heads=4,
        n_experts=64,
        top_k=2,
        n_shared=1,
        d_expert=1024,
        d_ffn=0,
    )
    return common.paper_training(c, learning_rate=8.1e-4, batch_sequences=531, compute_budget=2e20)
  if scale == 'local':
    c.model.update(
        n_layers=4,
        d_model=128,
        n_heads=4,
        n_kv_heads=2,
        num_dense_layers=1,
        d_ffn=192,
        n_experts=16,
        top_k=2,
        n_shared=1,
        granularity=4.0,
    )
    return common.local_training(c, compute_budget=1.5e13)
  c.model.update(n_experts=8, top_k=2, n_shared=1, d_expert=16)
  return common.smoke_training(c)
