"""Scales shared by the config files: the paper's TPU setting, a CPU setting, a test setting."""

import dataclasses
import math

from configs import paper_tables as tables
from experiments import protocol
from experiments.member import Group
from experiments.member import Member
from fitting import laws
from fitting import model_design as design_lib
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import hardware
from ling_jax import layout

SCALES = ('paper', 'local', 'smoke')
# The largest slice a paper-scale config is laid out for (a v5p cube: 64 chips of 95 GiB); each
# run takes the largest v5p slice up to it that keeps its batch within the planner's tolerance
# (paper_slice). `experiments.compile --slice=...` compiles for another.
PAPER_SLICE = 'v5p-128'
PAPER_CHIP = 'v5p'


def paper_slice(batch_sequences: int) -> str:
  """The v5p slice a paper-scale run of this batch is laid out for: the largest, up to
  PAPER_SLICE, whose chips (its batch shards) are at most 2 x layout.PLAN_BATCH_TOLERANCE of the
  batch, so that the batch as run moves from Eq. 3's by at most that tolerance (98 sequences
  take 16 chips, v5p-32; 531 take 64, v5p-128)."""
  largest = hardware.parse(PAPER_SLICE).chips
  most = 2 * layout.PLAN_BATCH_TOLERANCE * batch_sequences
  fitting = [
      n
      for n, shape in hardware.SHAPES[PAPER_CHIP].items()
      if math.prod(shape) <= min(most, largest)
  ]
  size = max(fitting) if fitting else min(hardware.SHAPES[PAPER_CHIP])
  return f'{PAPER_CHIP}-{size}'


# The method in miniature (`python -m experiments.demo`): a scale of the dense baseline and the
# activation-ratio study only.
DEMO = 'demo'


def parse_scale(arg, demo: bool = False) -> str:
  """The scale a config argument names; `demo` where the config has a demo scale."""
  scale = arg or 'paper'
  allowed = SCALES + ((DEMO,) if demo else ())
  if scale not in allowed:
    raise config_lib.ConfigError(
        f'config argument {scale!r}: use one of {", ".join(allowed)} '
        '(e.g. --config=configs/moe.py:local).'
    )
  return scale


def paper_training(c, learning_rate: float, batch_sequences: int, compute_budget: float):
  """Paper App. B: the paper scale's vocabulary and sequences, AdamW (0.9, 0.95, wd 0.1), WSD with
  1% warmup decaying to 10% of the peak, bf16 compute; the data must be supplied (tokens files)."""
  scale = SCALE['paper']
  c.model.update(vocab_size=scale.vocab_size, compute_dtype='bfloat16', remat='dots_no_batch')
  c.train.update(
      seq_len=scale.seq_len,
      batch_size=batch_sequences,
      learning_rate=learning_rate,
      compute_budget=compute_budget,
      eval_every=1000,
      log_every=50,
      checkpoint_every=1000,
      eval_batches=16,
  )
  c.data.source = scale.data_source
  # A TPU pod: the layout is planned for the slice (ling_jax.layout) and Eq. 3's batch runs at
  # the nearest multiple of the batch shards x microbatches; `python -m experiments.compile`
  # checks that every member fits before the slice is booked.
  c.mesh.update(slice=paper_slice(batch_sequences), plan='auto')
  c.train.batch_rule = 'round'
  return c


def local_training(c, compute_budget: float, seq_len: int = 256):
  """Two CPU cores, minutes: the built-in stdlib byte corpus."""
  c.model.update(vocab_size=SCALE['local'].vocab_size)
  c.train.update(
      seq_len=seq_len,
      batch_size=16,
      learning_rate=3e-3,
      compute_budget=compute_budget,
      eval_every=100,
      log_every=20,
      checkpoint_every=100,
      eval_batches=4,
      steps_per_call=10,
  )
  c.data.source = SCALE['local'].data_source
  return c


def smoke_training(c):
  """Seconds, for tests: synthetic tokens, tiny model."""
  scale = SCALE['smoke']
  c.model.update(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=scale.vocab_size)
  c.train.update(
      seq_len=scale.seq_len,
      batch_size=4,
      learning_rate=1e-2,
      tokens=4 * 32 * 10,
      eval_every=5,
      log_every=5,
      checkpoint_every=5,
      eval_batches=2,
  )
  c.data.source = scale.data_source
  c.mesh.num_devices = 1  # tests set meshes of their own
  return c


SMOKE_BACKBONES = [(2, 48, 4, 2), (2, 96, 4, 2)]


@dataclasses.dataclass(frozen=True)
class Scale:
  """What a scale fixes for every config at it: the data, the sequences and vocabulary, the
  backbones (n_layers, d_model, n_heads, n_kv_heads) its designs choose from, and how it sets a
  study's training, budget groups, compute-optimal sizes and hyperparameters. One subclass per
  scale; the functions below look the scale up in SCALE instead of branching on its name."""

  data_source: str
  seq_len: int  # tokens per sequence
  vocab_size: int
  head_dim: int
  ladder: tuple

  def design_options(self) -> dict:
    """The arguments fitting.model_design.design takes from a scale."""
    return dict(
        seq_len=self.seq_len, vocab_size=self.vocab_size, head_dim=self.head_dim, ladder=self.ladder
    )

  def fitted_design_options(self) -> dict:
    """design() arguments for a design made from the scale's fitted allocation law."""
    return self.design_options()

  def train(self, c, designed: bool) -> None:
    """A study's base training setup at this scale (`designed`: members set their budgets)."""
    raise NotImplementedError

  def groups(self, batches) -> list[Group]:
    """The ablations' budget groups (Tables 7-11) at this scale."""
    raise NotImplementedError

  def optimal_m(self, compute: float, kind: str) -> float:
    """M_opt(C) in FLOPs/token for 'moe' (the baseline shape) or 'dense': Table 1's law."""
    return (laws.MOE_OPTIMAL_M if kind == 'moe' else laws.DENSE_OPTIMAL_M)(compute)

  def hyperparameters(self, d: design_lib.Design, kind: str, needs: tuple) -> tuple:
    """(learning rate, batch in sequences, why provisional) of a member designed as `d`; None
    for a value the design itself gives (Eq. 3 at its budget)."""
    del d, kind, needs
    return None, None, ''

  def slice_for(self, batch_sequences: int) -> str:
    """The slice a run of this batch is laid out for; '' for the devices there are."""
    del batch_sequences
    return ''


def local_study_training(c) -> None:
  """A study's training on two CPU cores under the local protocol: the byte corpus, the fixed
  held-out set, dropless dispatch."""
  local_training(c, compute_budget=1e12, seq_len=protocol.LOCAL_SEQ_LEN)
  c.train.update(
      eval_every=1000,
      checkpoint_every=1000,
      log_every=100,
      eval_batches=4,
      eval_sequences=protocol.LOCAL_EVAL_SEQUENCES,
      eval_batch_size=protocol.LOCAL_EVAL_BATCH,
  )
  c.data.eval_fraction = 0.15  # room for protocol.LOCAL_EVAL_SEQUENCES windows held out
  # Dropless: bytes route by their identity (Python source is largely spaces), so capacity
  # limits drop a large share of assignments at any practical capacity factor.
  c.moe.update(dispatch='blocks', capacity_factor=0.0)


class PaperScale(Scale):
  """The paper's setting (App. B) on your pre-tokenized data, on TPU pods."""

  def slice_for(self, batch_sequences: int) -> str:
    return paper_slice(batch_sequences)

  def train(self, c, designed: bool) -> None:
    del designed
    paper_training(c, learning_rate=1e-3, batch_sequences=128, compute_budget=1e18)

  def groups(self, batches) -> list[Group]:
    """The paper's six groups, as printed."""
    return [
        Group(i, L, d, h, kv, c, lr, b, slice=paper_slice(b))
        for i, ((L, d, h, kv), c, lr, b) in enumerate(
            zip(design_lib.PAPER_BACKBONES, tables.GROUP_MAX_FLOPS, tables.GROUP_LR, batches)
        )
    ]


class LocalScale(Scale):
  """Two CPU cores: the built-in byte corpus, short sequences, the local ladder, and designs
  from this scale's own fitted laws (experiments.protocol)."""

  def fitted_design_options(self) -> dict:
    """The ladder with its one-layer rungs (protocol.LOCAL_FITTED_LADDER)."""
    return dict(self.design_options(), ladder=tuple(protocol.LOCAL_FITTED_LADDER))

  def train(self, c, designed: bool) -> None:
    del designed
    local_study_training(c)

  def groups(self, batches) -> list[Group]:
    """One group per local budget, on the backbone of the dense M_opt(C) (protocol.local_group)."""
    del batches
    evidence = protocol.committed()
    return [protocol.local_group(i, c, evidence) for i, c in enumerate(protocol.LOCAL_BUDGETS)]

  def optimal_m(self, compute: float, kind: str) -> float:
    return protocol.committed().optimal_m(compute, kind).value

  def hyperparameters(self, d: design_lib.Design, kind: str, needs: tuple) -> tuple:
    """The local laws' learning rate and batch (shrunk to keep protocol.LOCAL_MIN_STEPS steps)."""
    evidence = protocol.committed()
    lr, batch = evidence.hyperparameters(d.compute_budget, kind)
    sequences = protocol.local_batch_sequences(batch.value, d.tokens)
    return lr.value, sequences, evidence.provisional(needs)


class DemoScale(Scale):
  """The local protocol in miniature: the same data, training and designs, Table 1 and Eq. 3 in
  place of the local laws (demo_hyperparameters), a small held-out set."""

  def train(self, c, designed: bool) -> None:
    del designed
    local_study_training(c)
    c.train.update(eval_every=10_000, eval_sequences=protocol.DEMO_EVAL_SEQUENCES)

  def groups(self, batches) -> list[Group]:
    del batches
    return [protocol.demo_group(i, c) for i, c in enumerate(protocol.DEMO_GROUP_BUDGETS)]

  def hyperparameters(self, d: design_lib.Design, kind: str, needs: tuple) -> tuple:
    del needs
    return (*protocol.demo_hyperparameters(d.compute_budget, kind, d.tokens), '')


class SmokeScale(Scale):
  """Seconds, for tests: a synthetic Markov chain, tiny models, fixed hyperparameters."""

  def train(self, c, designed: bool) -> None:
    smoke_training(c)
    c.train.update(tokens=0 if designed else 4 * 32 * 4, eval_every=100, checkpoint_every=2)

  def groups(self, batches) -> list[Group]:
    del batches
    return [Group(i, L, d, h, kv, 0.0, 1e-2, 4) for i, (L, d, h, kv) in enumerate(SMOKE_BACKBONES)]

  def optimal_m(self, compute: float, kind: str) -> float:
    """Table 1's exponent with the coefficient moved so that 3e8 FLOPs picks the first smoke
    backbone."""
    moe = kind == 'moe'
    law = laws.MOE_OPTIMAL_M if moe else laws.DENSE_OPTIMAL_M
    shape = protocol.BASELINE_MOE if moe else design_lib.MoEShape()
    reference = flops.paper_flops_per_token(
        design_lib.architecture(design_lib.model_fields(SMOKE_BACKBONES[0], shape), 32, 64)
    )
    return reference * (compute / 3e8) ** law.exponent

  def hyperparameters(self, d: design_lib.Design, kind: str, needs: tuple) -> tuple:
    del d, kind, needs
    return 1e-2, 4, ''


SCALE = {
    'paper': PaperScale(
        'tokens',
        design_lib.PAPER_SEQ_LEN,
        design_lib.PAPER_VOCAB_SIZE,
        design_lib.PAPER_HEAD_DIM,
        tuple(design_lib.PAPER_BACKBONES),
    ),
    'local': LocalScale(
        'stdlib', protocol.LOCAL_SEQ_LEN, 256, protocol.LOCAL_HEAD_DIM, tuple(protocol.LOCAL_LADDER)
    ),
    DEMO: DemoScale(
        'stdlib', protocol.LOCAL_SEQ_LEN, 256, protocol.LOCAL_HEAD_DIM, tuple(protocol.LOCAL_LADDER)
    ),
    'smoke': SmokeScale('synthetic', 32, 64, 8, tuple(SMOKE_BACKBONES)),
}


def groups(scale: str, batches=tables.GROUP_BATCH) -> list[Group]:
  """The budget groups of the ablations (Tables 7-11): the paper's six, or at local scale one per
  protocol.LOCAL_BUDGETS with the backbone of the dense M_opt(C) (see local_group)."""
  return SCALE[scale].groups(batches)


def study_config(name: str, scale: str, source: str, designed: bool = False):
  """The base config of a study at a scale; its members override the model and budget.

  `designed` studies give every member a compute budget, also at smoke scale.
  """
  c = config_lib.base_config()
  SCALE[scale].train(c, designed)
  c.name = name
  c.sweep.update(source=source, arg=scale)
  return c


def table3_run(c, row: dict):
  """Paper Table 3's validation runs: 1T tokens of 8192-token sequences, as printed."""
  fields = dict(row)
  c.train.update(
      learning_rate=fields.pop('learning_rate'),
      batch_size=fields.pop('batch_size'),
      seq_len=8192,
      compute_budget=0.0,
      tokens=10**12,
  )
  c.mesh.slice = paper_slice(c.train.batch_size)
  c.model.update(**fields)
  return c


def fitted_design_options(scale: str) -> dict:
  """design() arguments for a design made from the scale's fitted allocation law: at local scale
  the ladder with its one-layer rungs (protocol.LOCAL_FITTED_LADDER), elsewhere the scale's own."""
  return SCALE[scale].fitted_design_options()


def optimal_m(compute: float, scale: str, kind: str) -> float:
  """M_opt(C) in FLOPs/token: Table 1 at paper and demo scale, the local law at local scale; at
  smoke scale Table 1's exponent with the coefficient moved so that 3e8 FLOPs picks the first
  smoke backbone (tests only)."""
  return SCALE[scale].optimal_m(compute, kind)


def design_member(
    name: str,
    group: str,
    d: design_lib.Design,
    scale: str,
    kind: str = 'moe',
    batch_sequences: int | None = None,
    learning_rate: float | None = None,
    needs_local_laws=('hparams', 'allocation'),
) -> Member:
  """A member from a design. At paper scale the design's Eq. 3 learning rate and batch; at local
  scale the local laws' (batch shrunk to keep protocol.LOCAL_MIN_STEPS steps); at smoke scale fixed
  values; a grid may set either."""
  lr, batch, provisional = SCALE[scale].hyperparameters(d, kind, needs_local_laws)
  overrides = {f'model.{k}': v for k, v in d.model.items()}
  overrides.update(
      {
          'train.compute_budget': d.compute_budget,
          'train.learning_rate': learning_rate or lr or d.learning_rate,
          'train.batch_size': batch_sequences or batch or d.batch_sequences,
      }
  )
  if slice_name := SCALE[scale].slice_for(overrides['train.batch_size']):
    overrides['mesh.slice'] = slice_name
  return Member(name, overrides, group, provisional)
