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
  c.mesh.num_devices = 1  # tests set meshes of their own
  return c


# --- Studies -------------------------------------------------------------------------------------

import dataclasses

from configs import paper_tables as tables
from experiments.sweep import Member
from fitting import laws
from ling_jax import design as design_lib
from ling_jax import flops

# CPU backbones (n_layers, d_model, n_heads, n_kv_heads), one per budget, mirroring the paper's
# six groups; d_model is a multiple of 48 so that 2 d_model / G is whole for every G of Table 8.
# Budgets in FLOPs (paper convention).
LOCAL_BACKBONES = [(2, 48, 2, 1), (2, 96, 3, 1), (3, 144, 4, 2), (4, 192, 6, 2), (4, 240, 6, 2),
                   (5, 288, 8, 2)]
LOCAL_BUDGETS = [5e11, 1e12, 2e12, 4e12, 8e12, 1.6e13]
SMOKE_BACKBONES = [(2, 48, 4, 2), (2, 96, 4, 2)]


@dataclasses.dataclass(frozen=True)
class Group:
  """A backbone and its training budget and hyperparameters: one row of Tables 7-11."""

  index: int
  n_layers: int
  d_model: int
  n_heads: int
  n_kv_heads: int
  budget: float  # FLOPs; 0 at smoke scale, which trains a fixed number of tokens
  learning_rate: float
  batch_size: int  # sequences

  @property
  def name(self) -> str:
    return f'g{self.index}'

  def overrides(self, **model) -> dict:
    out = {'model.n_layers': self.n_layers, 'model.d_model': self.d_model,
           'model.n_heads': self.n_heads, 'model.n_kv_heads': self.n_kv_heads,
           'train.learning_rate': self.learning_rate, 'train.batch_size': self.batch_size}
    if self.budget:
      out['train.compute_budget'] = self.budget
    out.update({f'model.{k}': v for k, v in model.items()})
    return out


def groups(scale: str, batches=tables.GROUP_BATCH) -> list[Group]:
  if scale == 'paper':
    return [Group(i, L, d, h, kv, c, lr, b) for i, ((L, d, h, kv), c, lr, b) in enumerate(zip(
        design_lib.PAPER_BACKBONES, tables.GROUP_MAX_FLOPS, tables.GROUP_LR, batches))]
  if scale == 'local':
    return [Group(i, L, d, h, kv, c, 3e-3, 16)
            for i, ((L, d, h, kv), c) in enumerate(zip(LOCAL_BACKBONES, LOCAL_BUDGETS))]
  return [Group(i, L, d, h, kv, 0.0, 1e-2, 4) for i, (L, d, h, kv) in enumerate(SMOKE_BACKBONES)]


def study_config(name: str, scale: str, source: str, designed: bool = False):
  """The base config of a study at a scale; its members override the model and budget.

  `designed` studies give every member a compute budget, also at smoke scale.
  """
  c = config_lib.base_config()
  if scale == 'paper':
    paper_training(c, learning_rate=1e-3, batch_sequences=128, compute_budget=1e18)
  elif scale == 'local':
    local_training(c, compute_budget=1e12)
    c.train.update(eval_every=200, checkpoint_every=200, log_every=50)
  else:
    smoke_training(c)
    c.train.update(tokens=0 if designed else 4 * 32 * 4, eval_every=100, checkpoint_every=2)
  c.name = name
  c.sweep.update(source=source, arg=scale)
  return c


def table3_run(c, row: dict):
  """Paper Table 3's validation runs: 1T tokens of 8192-token sequences, as printed."""
  fields = dict(row)
  c.train.update(learning_rate=fields.pop('learning_rate'), batch_size=fields.pop('batch_size'),
                 seq_len=8192, compute_budget=0.0, tokens=10 ** 12)
  c.model.update(**fields)
  return c


def local_design_options() -> dict:
  """design() arguments for the CPU scale: bytes, 256-token sequences, head dim 32."""
  return dict(seq_len=256, vocab_size=256, head_dim=32, ladder=LOCAL_BACKBONES)


def scaled_optimal_m(compute: float, scale: str, moe: bool) -> float | None:
  """M target at `compute` for the CPU and test scales, None at paper scale (the Table 1 law).

  Table 1's laws were fitted at 1e18+ FLOPs with 4096-token sequences and a 126k vocabulary;
  below 1e13 FLOPs they ask for models smaller than any byte-level backbone. The small scales
  keep the law's exponent and move its coefficient so that the middle budget lands on the
  middle backbone of the ladder.
  """
  if scale == 'paper':
    return None
  law = laws.MOE_OPTIMAL_M if moe else laws.DENSE_OPTIMAL_M
  budgets, ladder = ((LOCAL_BUDGETS, LOCAL_BACKBONES) if scale == 'local' else
                     ([3e8, 6e8], SMOKE_BACKBONES))
  seq_len, vocab = (256, 256) if scale == 'local' else (32, 64)
  middle = len(ladder) // 2
  shape = design_lib.MoEShape(64, 4, 1, granularity=2.0) if moe else design_lib.MoEShape()
  reference = flops.paper_flops_per_token(design_lib.architecture(
      design_lib.model_fields(ladder[middle], shape), seq_len, vocab))
  return reference * (compute / budgets[middle]) ** law.exponent


def design_member(name: str, group: str, d: design_lib.Design, scale: str,
                  batch_sequences: int | None = None, learning_rate: float | None = None) -> Member:
  """A member from a design; off paper scale the laws' learning rates and batches do not apply,
  and the scale's defaults are used unless a grid sets them."""
  overrides = {f'model.{k}': v for k, v in d.model.items()}
  if scale != 'paper':
    defaults = dict(local=(16, 3e-3), smoke=(4, 1e-2))[scale]
    batch_sequences, learning_rate = (batch_sequences or defaults[0],
                                      learning_rate or defaults[1])
  overrides.update({'train.compute_budget': d.compute_budget,
                    'train.learning_rate': learning_rate or d.learning_rate,
                    'train.batch_size': batch_sequences or d.batch_sequences})
  return Member(name, overrides, group)
