"""The local protocol's evidence: the fitted laws and finished runs that local designs are made
from (docs/replication.md, "The protocol").

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

from experiments.member import Member
from fitting import hparams as hparams_lib
from fitting import laws
from fitting import replication

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
