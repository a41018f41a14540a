"""A single dense run: the MoE config's backbone with one SwiGLU of the same active width.

  python -m experiments.run --config=configs/dense.py:local --workdir=/tmp/ling_jax/dense_local

Scales (the ':arg'):
  paper -- the default. 16 layers, d_model 1024, d_ffn 3072 (= (E_a + E_s) * d_expert of
           configs/moe.py, so M is equal), 2e20 FLOPs, lr 8.1e-4, 531 x 4096-token batches.
  local -- 4 layers, d_model 128, d_ffn 192 (equal M to configs/moe.py:local), 1.5e13 FLOPs on
           the stdlib corpus, about 3 minutes on 2 CPU cores.
  smoke -- seconds, synthetic data, for tests.
"""

from configs import common
from ling_jax import config as config_lib


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = config_lib.base_config()
  c.name = f'dense_{scale}'
  if scale == 'paper':
    c.model.update(n_layers=16, d_model=1024, n_heads=16, n_kv_heads=4, d_ffn=3072)
    return common.paper_training(c, learning_rate=8.1e-4, batch_sequences=531, compute_budget=2e20)
  if scale == 'local':
    c.model.update(n_layers=4, d_model=128, n_heads=4, n_kv_heads=2, d_ffn=192)
    return common.local_training(c, compute_budget=1.5e13)
  c.model.update(d_ffn=48)
  return common.smoke_training(c)
