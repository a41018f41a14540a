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


# --- The local protocol (docs/replication.md) ----------------------------------------------------
#
# Every study at `local` scale follows one protocol on the built-in byte corpus:
#  * budgets in FLOPs (paper convention) spanning at least 1.5 decades;
#  * every member trains at least LOCAL_MIN_STEPS optimizer steps: where a law's batch would give
#    fewer, the batch shrinks (never the steps);
#  * models come from this scale's own allocation law, learning rates and batches from this
#    scale's own hyperparameter law, both read from the fits committed under results/local/
#    (experiments.protocol, the one module that reads them); before those fits exist the
#    paper's laws (Eq. 3, Table 1) stand in, the members are marked provisional, and
#    `experiments.run` refuses to train them;
#  * each arm (dense, MoE) trains at its own compute-optimal allocation, D = C / M_opt(C);
#  * the loss every fit uses is the held-out loss on one fixed set of LOCAL_EVAL_SEQUENCES
#    sequences, the same for every member.

LOCAL_MIN_STEPS = 1000
# The studies with a `local` scale, in the paper's order (docs/replication.md); attention_ratio
# has none.
LOCAL_STUDIES = (
    'hparams',
    'allocation',
    'dense_baseline',
    'activation_ratio',
    'granularity',
    'shared_experts',
    'dense_layers',
)
# Bytes (tokens) in the train split of the stdlib corpus at eval_fraction 0.15 under Python 3.11
# (tests/test_protocol.py reads the corpus and checks it). Local members train on one epoch
# of it at most, except the allocation study's (configs/allocation.LOCAL_MAX_EPOCHS): past one
# epoch a run measures repetition as well as its budget.
LOCAL_TRAIN_TOKENS = 25_255_230
# The fixed held-out set, in sequences: large enough that the eval's standard error stays under
# the 0.2% of the loss the fits need down to the lowest local losses (the per-sequence spread
# grows relative to the loss as it falls; measured in docs/replication.md, "Record").
LOCAL_EVAL_SEQUENCES = 32_768
LOCAL_EVAL_BATCH = 128
# The ablations' budget groups, one backbone per budget from the allocation law: the budgets the
# hyperparameter law was measured at (configs/hparams.py), so that no ablation extrapolates it;
# 1.5 decades; three groups, the fewest Eq. 12 (EL against C per architecture) can be fitted to,
# keep each ablation within about 2 hours here (docs/replication.md).
LOCAL_BUDGETS = [1e11, 5.6e11, 3.2e12]
# Backbones (n_layers, d_model, n_heads, n_kv_heads) the designs choose from: head dim 24 and
# d_model a multiple of 24, so that 2 d_model / G is whole for every G of Table 8 and the
# granularity groups stay exactly iso-FLOP.
LOCAL_LADDER = [
    (2, 24, 1, 1),
    (2, 48, 2, 1),
    (3, 72, 3, 1),
    (3, 96, 4, 2),
    (4, 120, 5, 1),
    (4, 144, 6, 2),
    (5, 168, 7, 1),
    (5, 192, 8, 2),
    (6, 240, 10, 2),
    (6, 288, 12, 4),
    (7, 336, 14, 2),
]
# Two one-layer rungs below LOCAL_LADDER, so that a design whose fitted M_opt lies below the
# smallest two-layer backbone can reach it (the allocation study brackets its smallest budgets
# with them; its report, results/local/allocation, gives the optima): the designs made from the
# fitted local laws choose from LOCAL_FITTED_LADDER. The hparams study, designed from Table 1
# before any local law, and the demo keep LOCAL_LADDER.
LOCAL_ONE_LAYER_RUNGS = [(1, 12, 1, 1), (1, 24, 1, 1)]
LOCAL_FITTED_LADDER = LOCAL_ONE_LAYER_RUNGS + LOCAL_LADDER
# The ablation groups' backbones serve the granularity study too, whose expert width 2 d_model / G
# must be whole for every G of Table 8 (2 .. 16): d_model a multiple of 24.
LOCAL_GROUP_LADDER = [b for b in LOCAL_FITTED_LADDER if b[1] % 24 == 0]
LOCAL_HEAD_DIM = 24
SMOKE_BACKBONES = [(2, 48, 4, 2), (2, 96, 4, 2)]
# Local studies train 128-byte sequences: at d_model 32-320 the attention scores (4 s d per
# layer) would otherwise dominate M, and shorter sequences leave more optimizer steps per budget.
LOCAL_SEQ_LEN = 128
BASELINE_MOE = design_lib.MoEShape(64, 4, 1, granularity=2.0)  # the paper's Sec. 2 shape


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


# --- The demo scale ---------------------------------------------------------------------------
#
# The local protocol shrunk to minutes: five dense budgets (a frontier reaching 4x above the
# largest MoE budget, so that EL up to 4 reads off fitted points) and two activation-ratio
# groups, on the same corpus, designs and dispatch as `local`, every run at least
# LOCAL_MIN_STEPS steps (the batch shrinks, as at `local`), the A = 1 members and the dense runs
# of their budgets in three seeds; small batches and a small held-out set, so its intervals are
# wide. Learning rate: Eq. 3 at half (the best of Eq. 3 x 2^{-3..0} in the local study's first
# runs at 1e11 FLOPs), for both arms (demo_hyperparameters).
DEMO_DENSE_BUDGETS = [2.5e10, 5e10, 1e11, 2e11, 4e11]
DEMO_GROUP_BUDGETS = [5e10, 1e11]
DEMO_EVAL_SEQUENCES = 2048
DEMO_EQ3_LR_FACTOR = 0.5


def demo_hyperparameters(C: float, kind: str, tokens: float) -> tuple[float, int]:
  """(peak learning rate, batch in sequences) of a demo member at C FLOPs training on `tokens`:
  Eq. 3 at DEMO_EQ3_LR_FACTOR of its learning rate, for both arms, the batch shrunk as at
  `local` so that the run takes LOCAL_MIN_STEPS steps (local_batch_sequences). The demo's
  budgets lie below the range the local hyperparameter law was fitted on (1e11-3.2e12 FLOPs),
  and the README's numbers must not move when a local law is committed."""
  del kind
  lr = laws.MOE_LEARNING_RATE(C) * DEMO_EQ3_LR_FACTOR
  return lr, local_batch_sequences(laws.MOE_BATCH_TOKENS(C), tokens)


def local_batch_sequences(batch_tokens: float, tokens: float) -> int:
  """The law's batch in sequences, shrunk where needed so the run takes LOCAL_MIN_STEPS steps."""
  wanted = max(1, round(batch_tokens / LOCAL_SEQ_LEN))
  most = max(1, int(tokens / (LOCAL_MIN_STEPS * LOCAL_SEQ_LEN)))
  return min(wanted, most)


class PaperScale(Scale):
  """The paper's setting (App. B) on your pre-tokenized data, on TPU pods."""

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
    """The ladder with its one-layer rungs (LOCAL_FITTED_LADDER)."""
    return dict(self.design_options(), ladder=tuple(LOCAL_FITTED_LADDER))

  def train(self, c, designed: bool) -> None:
    del designed
    local_training(c, compute_budget=1e12, seq_len=LOCAL_SEQ_LEN)
    c.train.update(
        eval_every=1000,
        checkpoint_every=1000,
        log_every=100,
        eval_batches=4,
        eval_sequences=LOCAL_EVAL_SEQUENCES,
        eval_batch_size=LOCAL_EVAL_BATCH,
    )
    c.data.eval_fraction = 0.15  # room for LOCAL_EVAL_SEQUENCES windows held out
    # Dropless: bytes route by their identity (Python source is largely spaces), so capacity
    # limits drop a large share of assignments at any practical capacity factor.
    c.moe.update(dispatch='blocks', capacity_factor=0.0)

  def groups(self, batches) -> list[Group]:
    """One group per LOCAL_BUDGETS, with the backbone of the dense M_opt(C) (local_group)."""
    del batches
    evidence = protocol.committed()
    return [local_group(i, c, evidence) for i, c in enumerate(LOCAL_BUDGETS)]

  def optimal_m(self, compute: float, kind: str) -> float:
    return protocol.committed().optimal_m(compute, kind).value

  def hyperparameters(self, d: design_lib.Design, kind: str, needs: tuple) -> tuple:
    """The local laws' learning rate and batch (shrunk to keep LOCAL_MIN_STEPS steps)."""
    evidence = protocol.committed()
    lr, batch = evidence.hyperparameters(d.compute_budget, kind)
    return lr.value, local_batch_sequences(batch.value, d.tokens), evidence.provisional(needs)


class DemoScale(LocalScale):
  """The local protocol in miniature: the same data and designs, Table 1 and Eq. 3 in place of
  the local laws (demo_hyperparameters), a small held-out set."""

  fitted_design_options = Scale.fitted_design_options

  def train(self, c, designed: bool) -> None:
    super().train(c, designed)
    c.train.update(eval_every=10_000, eval_sequences=DEMO_EVAL_SEQUENCES)

  def groups(self, batches) -> list[Group]:
    del batches
    return [demo_group(i, c) for i, c in enumerate(DEMO_GROUP_BUDGETS)]

  optimal_m = Scale.optimal_m

  def hyperparameters(self, d: design_lib.Design, kind: str, needs: tuple) -> tuple:
    del needs
    return (*demo_hyperparameters(d.compute_budget, kind, d.tokens), '')


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
    shape = BASELINE_MOE if moe else design_lib.MoEShape()
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
    'local': LocalScale('stdlib', LOCAL_SEQ_LEN, 256, LOCAL_HEAD_DIM, tuple(LOCAL_LADDER)),
    DEMO: DemoScale('stdlib', LOCAL_SEQ_LEN, 256, LOCAL_HEAD_DIM, tuple(LOCAL_LADDER)),
    'smoke': SmokeScale('synthetic', 32, 64, 8, tuple(SMOKE_BACKBONES)),
}


def groups(scale: str, batches=tables.GROUP_BATCH) -> list[Group]:
  """The budget groups of the ablations (Tables 7-11): the paper's six, or at local scale one per
  LOCAL_BUDGETS with the backbone of the dense M_opt(C) (see local_group)."""
  return SCALE[scale].groups(batches)


def local_group(index: int, budget: float, evidence: protocol.Evidence) -> Group:
  """The group of a local budget: the backbone on which a dense model (the A = 1 member without
  its router) is compute-optimal by the local dense law, and the local MoE laws' learning rate
  and batch (shrunk to keep LOCAL_MIN_STEPS steps).

  The paper defines EL = 1 at A = 1 (arXiv 2507.17702 Sec. 3, Eq. 5): the A = 1 member must sit
  on the dense frontier, which only a dense-optimal backbone allows (a backbone sized for the
  baseline MoE's optimum puts it below; docs/replication.md, "Record"). Sparser members keep
  this backbone: their EL is read at a backbone above their own optimum, a lower bound on what
  their own optimum reaches.
  """
  options = dict(local_design_options(), ladder=tuple(LOCAL_GROUP_LADDER))
  d = design_lib.design(
      budget, design_lib.MoEShape(), m_target=evidence.optimal_m(budget, 'dense').value, **options
  )
  lr, batch = evidence.hyperparameters(budget, 'moe')
  sequences = local_batch_sequences(batch.value, d.tokens)
  return Group.of_design(index, d, lr.value, sequences, evidence.provisional())


def demo_group(index: int, budget: float) -> Group:
  """A demo group: the baseline MoE's Table 1 backbone at `budget` on the local ladder. Its batch
  follows the tokens of its A = 1 member, the dense model of that backbone (every member of a
  group has its M), so that the step floor shrinks both arms' batches alike."""
  d = design_lib.design(
      budget, BASELINE_MOE, m_target=laws.MOE_OPTIMAL_M(budget), **local_design_options()
  )
  backbone = next(
      b for b in SCALE['local'].ladder if b[:2] == (d.model['n_layers'], d.model['d_model'])
  )
  dense = design_lib.design(
      budget, design_lib.MoEShape(), **dict(local_design_options(), ladder=(backbone,))
  )
  lr, sequences = demo_hyperparameters(budget, 'moe', dense.tokens)
  return Group.of_design(index, d, lr, sequences)


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


def local_design_options() -> dict:
  """design() arguments for the CPU scale: bytes, LOCAL_SEQ_LEN-byte sequences, the local ladder."""
  return SCALE['local'].design_options()


def fitted_design_options(scale: str) -> dict:
  """design() arguments for a design made from the scale's fitted allocation law: at local scale
  the ladder with its one-layer rungs (LOCAL_FITTED_LADDER), elsewhere the scale's own."""
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
  scale the local laws' (batch shrunk to keep LOCAL_MIN_STEPS steps); at smoke scale fixed
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
  if scale == 'paper':
    overrides['mesh.slice'] = paper_slice(overrides['train.batch_size'])
  return Member(name, overrides, group, provisional)
