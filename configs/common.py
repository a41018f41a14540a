"""Scales shared by the config files: the paper's TPU setting, a CPU setting, a test setting."""

from ling_jax import config as config_lib

SCALES = ('paper', 'local', 'smoke')


def parse_scale(arg) -> str:
  scale = arg or 'paper'
  if scale not in SCALES:
    raise config_lib.ConfigError(f'config argument {scale!r}: use one of {", ".join(SCALES)} '
                                 '(e.g. --config=configs/moe.py:local).')
  return scale


def paper_training(c, learning_rate: float, batch_sequences: int, compute_budget: float):
  """Paper App. B: vocabulary 126,464, 4096-token sequences, AdamW (0.9, 0.95, wd 0.1), WSD with
  1% warmup decaying to 10% of the peak, bf16 compute; the data must be supplied (tokens files)."""
  c.model.update(vocab_size=126_464, compute_dtype='bfloat16', remat='dots_no_batch')
  c.train.update(seq_len=4096, batch_size=batch_sequences, learning_rate=learning_rate,
                 compute_budget=compute_budget, eval_every=1000, log_every=50,
                 checkpoint_every=1000, eval_batches=16)
  c.data.source = 'tokens'
  return c


def local_training(c, compute_budget: float):
  """Two CPU cores, minutes: the built-in stdlib byte corpus, 256-token sequences."""
  c.model.update(vocab_size=256)
  c.train.update(seq_len=256, batch_size=16, learning_rate=3e-3, compute_budget=compute_budget,
                 eval_every=100, log_every=20, checkpoint_every=100, eval_batches=4)
  c.data.source = 'stdlib'
  return c


def smoke_training(c):
  """Seconds, for tests: synthetic tokens, tiny model."""
  c.model.update(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=64)
  c.train.update(seq_len=32, batch_size=4, learning_rate=1e-2, tokens=4 * 32 * 10,
                 eval_every=5, log_every=5, checkpoint_every=5, eval_batches=2)
  c.data.source = 'synthetic'
  return c
