"""The local protocol (docs/replication.md, "The protocol"): the rules every `local` study
follows, its budget groups and demo groups, and the evidence its designs are made from (the
fitted laws and finished runs committed under `results/local/`).

Local-scale studies take their models from this scale's own allocation law and their learning
rates and batches from its own hyperparameter law, both read from the fits committed under
`results/local/`. Until those fits exist (for every member of their study), the paper's laws
(arXiv 2507.17702 Eq. 3, Table 1) stand in and the designs are *provisional*: `experiments.run`
refuses to train them. This module is the one place that reads those files, and what it reads is
its explicit input: an `Evidence` names the results folder, and `committed()` is the one in the
repository. Configs stay pure functions of their argument; a local sweep asks `committed()`.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import math
import os

from experiments.member import Group
from experiments.member import Member
from fitting import hparams as hparams_lib
from fitting import laws
from fitting import model_design as design_lib
from fitting import replication

# --- The rules -----------------------------------------------------------------------------
#
# Every study at `local` scale follows one protocol on the built-in byte corpus:
#  * budgets in FLOPs (paper convention) spanning at least 1.5 decades;
#  * every member trains at least LOCAL_MIN_STEPS optimizer steps: where a law's batch would give
#    fewer, the batch shrinks (never the steps);
#  * models come from this scale's own allocation law, learning rates and batches from this
#    scale's own hyperparameter law, both read from the fits committed under results/local/
#    (Evidence, below); before those fits exist the paper's laws (Eq. 3, Table 1) stand in, the
#    members are marked provisional, and `experiments.run` refuses to train them;
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
# Local studies train 128-byte sequences: at d_model 32-320 the attention scores (4 s d per
# layer) would otherwise dominate M, and shorter sequences leave more optimizer steps per budget.
LOCAL_SEQ_LEN = 128
BASELINE_MOE = design_lib.MoEShape(64, 4, 1, granularity=2.0)  # the paper's Sec. 2 shape
LOCAL_VOCAB_SIZE = 256  # bytes


def design_options() -> dict:
  """design() arguments for the CPU scale: bytes, LOCAL_SEQ_LEN-byte sequences, the local ladder."""
  return dict(
      seq_len=LOCAL_SEQ_LEN,
      vocab_size=LOCAL_VOCAB_SIZE,
      head_dim=LOCAL_HEAD_DIM,
      ladder=tuple(LOCAL_LADDER),
  )


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


# --- Budget groups ----------------------------------------------------------------------


def local_group(index: int, budget: float, evidence: Evidence) -> Group:
  """The group of a local budget: the backbone on which a dense model (the A = 1 member without
  its router) is compute-optimal by the local dense law, and the local MoE laws' learning rate
  and batch (shrunk to keep LOCAL_MIN_STEPS steps).

  The paper defines EL = 1 at A = 1 (arXiv 2507.17702 Sec. 3, Eq. 5): the A = 1 member must sit
  on the dense frontier, which only a dense-optimal backbone allows (a backbone sized for the
  baseline MoE's optimum puts it below; docs/replication.md, "Record"). Sparser members keep
  this backbone: their EL is read at a backbone above their own optimum, a lower bound on what
  their own optimum reaches.
  """
  options = dict(design_options(), ladder=tuple(LOCAL_GROUP_LADDER))
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
      budget, BASELINE_MOE, m_target=laws.MOE_OPTIMAL_M(budget), **design_options()
  )
  backbone = next(b for b in LOCAL_LADDER if b[:2] == (d.model['n_layers'], d.model['d_model']))
  dense = design_lib.design(
      budget, design_lib.MoEShape(), **dict(design_options(), ladder=(backbone,))
  )
  lr, sequences = demo_hyperparameters(budget, 'moe', dense.tokens)
  return Group.of_design(index, d, lr, sequences)


# --- Evidence -------------------------------------------------------------------------------

RESULTS_DIR = replication.RESULTS_DIR
# Results-table columns of the overrides that are not model fields of the same name.
_RESULT_COLUMNS = {
    'train.compute_budget': 'budget',
    'train.learning_rate': 'learning_rate',
    'train.batch_size': 'batch_size',
}
_UNRUN = {}  # (results table, its mtime and size) -> unrun members: each sweep designed once


@dataclasses.dataclass(frozen=True)
class LocalLaw:
  """A value of a local law and where it came from."""

  value: float
  source: str
  provisional: bool


@dataclasses.dataclass(frozen=True)
class Evidence:
  """The committed fits (`<results_dir>/<study>/report.json`) and results tables
  (`<results_dir>/<study>/results.csv`) of the local studies."""

  results_dir: str

  def report(self, study: str) -> dict | None:
    """The fit of a local study, or None: also when one of its arms could not be fitted (its
    report says why), so that no law is half taken."""
    report = replication.committed_report(study, self.results_dir)
    entry = None if report is None else report['studies'].get(study)
    if entry and any(isinstance(arm, dict) and 'error' in arm for arm in entry.values()):
      return None
    return entry

  def hyperparameters(self, C: float, kind: str) -> tuple[LocalLaw, LocalLaw]:
    """(peak learning rate, batch in tokens) at C FLOPs for 'moe' or 'dense': the hparams
    study's design laws (fitting.hparams.design_laws), else Eq. 3."""
    report = self.report('hparams')
    if report and kind in report:
      design_laws = report[kind]['design_laws']
      source = f'results/local/hparams ({kind} design law)'
      return (
          LocalLaw(hparams_lib.law_at(design_laws['learning_rate'], C), source, False),
          LocalLaw(hparams_lib.law_at(design_laws['batch_tokens'], C), source, False),
      )
    source = 'provisional: arXiv 2507.17702 Eq. 3 (hparams:local not fitted yet)'
    return (
        LocalLaw(laws.MOE_LEARNING_RATE(C), source, True),
        LocalLaw(laws.MOE_BATCH_TOKENS(C), source, True),
    )

  def optimal_m(self, C: float, kind: str) -> LocalLaw:
    """Compute-optimal M (FLOPs/token) at C for 'moe' (64/4/1, G = 2) or 'dense': the allocation
    study's M_opt law, else Table 1's."""
    report = self.report('allocation')
    if report and kind in report:
      law = report[kind]['M_opt']
      return LocalLaw(
          law['coefficient'] * C ** law['exponent'],
          f'results/local/allocation ({kind} M_opt law)',
          False,
      )
    law = laws.MOE_OPTIMAL_M if kind == 'moe' else laws.DENSE_OPTIMAL_M
    source = 'provisional: arXiv 2507.17702 Table 1 (allocation:local not fitted yet)'
    return LocalLaw(law(C), source, True)

  def unrun_members(self, study: str) -> list[str]:
    """The members of `configs/<study>.py:local` that the study's results table does not hold as
    finished: a fit of part of a study, or of an earlier version of its sweep, must not design
    the next step."""
    path = os.path.join(self.results_dir, study, 'results.csv')
    if not os.path.exists(path):
      return ['(no results table)']
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _UNRUN:
      wanted = importlib.import_module(f'configs.{study}').get_sweep('local')
      with open(path, newline='') as f:
        finished = {
            row['member']: row
            for row in csv.DictReader(f)
            if row['status'] == 'finished' and row['study'] == study
        }
      _UNRUN[key] = [
          m.name for m in wanted if m.name not in finished or _redesigned(m, finished[m.name])
      ]
    return _UNRUN[key]

  def provisional(self, needs=('hparams', 'allocation')) -> str:
    """Why local designs are provisional: '' once the local laws they need are fitted on every
    member of their study."""
    reasons = []
    missing = [s for s in needs if self.report(s) is None]
    if missing:
      reasons.append(
          f'the local {" and ".join(missing)} law(s) are not fitted yet, or not for every arm '
          f'(results/local/{{{",".join(missing)}}}/report.json)'
      )
    for study in needs:
      unrun = [] if study in missing else self.unrun_members(study)
      if unrun:
        reasons.append(
            f'{len(unrun)} member(s) of configs/{study}.py:local are not in its committed '
            f'results (e.g. {unrun[0]}); run them, then collect and fit the study again'
        )
    return '; '.join(reasons)


def committed() -> Evidence:
  """The evidence committed in this repository (results/local/)."""
  return Evidence(RESULTS_DIR)


def _redesigned(member: Member, row: dict) -> bool:
  """Whether a results row ran another design than `member` (a field both hold differs)."""
  for key, value in member.overrides.items():
    column = _RESULT_COLUMNS.get(key, key.removeprefix('model.'))
    if column in row and row[column] not in ('', None):
      if not math.isclose(float(row[column]), float(value), rel_tol=1e-9):
        return True
  return False
