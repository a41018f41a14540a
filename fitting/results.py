"""Reading results tables (experiments.collect output, or any table with the same columns).

A table is JSONL or CSV at a local path or gs:// (etils epath; gs:// needs gcsfs). Rows that
cannot enter a fit are excluded with a reason and listed in every report, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math

from etils import epath

from fitting.core import FitError

# The columns of a results table (experiments.collect writes them, in this order): who the run
# is, its resolved architecture, its size and budget, its hyperparameters, what it measured.
MODEL_FIELDS = (
    'n_layers',
    'd_model',
    'n_heads',
    'n_kv_heads',
    'd_ffn',
    'num_dense_layers',
    'n_experts',
    'top_k',
    'n_shared',
    'd_expert',
)
MEASURED = (
    'N',
    'N_a',
    'M',
    'D',
    'C',
    'A',
    'A_routed',
    'G',
    'S',
    'learning_rate',
    'batch_size',
    'seq_len',
    'final_train_loss',
    'final_eval_loss',
    'eval_tokens',
    'eval_loss_stderr',
    'dropped_fraction',
    'max_dropped_fraction',
    'wall_time_s',
    'elapsed_s',
    'tokens_per_s',
    'steady_tokens_per_s',
    'steps',
)
COLUMNS = (
    ('study', 'member', 'group', 'status', 'budget')
    + MODEL_FIELDS
    + MEASURED
    + ('data_fingerprint', 'reason')
)
NUMERIC = ('budget',) + MODEL_FIELDS + MEASURED  # read as numbers from a CSV


def _number(value):
  if value in (None, '', 'None', 'null'):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return value


def load(path: str) -> list[dict]:
  """Rows of a results table; FitError if it cannot be read or holds no row."""
  try:
    text = epath.Path(path).read_text()
  except Exception as error:  # pylint: disable=broad-except
    raise FitError(f'--results={path}: cannot read it ({type(error).__name__}: {error}).') from None
  if str(path).endswith('.csv'):
    rows = list(csv.DictReader(io.StringIO(text)))
    header = next(iter(rows[0])) if rows else ''
    if rows and len(rows[0]) == 1 and any(sep in header for sep in ';\t|'):
      raise FitError(
          f'--results={path}: one column named {header[:60]!r}...: not comma-separated; '
          'write it with commas (experiments.collect does).'
      )
  else:
    try:
      if text.lstrip().startswith('['):  # one JSON array of rows, not JSON lines
        rows = json.loads(text)
      else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
      raise FitError(
          f'--results={path}: not JSON lines ({error}); pass a .jsonl or .csv.'
      ) from None
    if not all(isinstance(row, dict) for row in rows):
      raise FitError(f'--results={path}: every row must be a JSON object of column: value.')
  if not rows:
    raise FitError(f'--results={path}: the table is empty.')
  if not any('study' in row for row in rows):
    raise FitError(
        f'--results={path}: no `study` column; the fits are per study (columns: '
        f'{", ".join(sorted(rows[0])[:12])}...).'
    )
  for row in rows:
    for key in NUMERIC:
      if key in row:
        row[key] = _number(row[key])
  return rows


# Covariates every law takes logs of: a row whose value is not a positive number cannot enter.
COVARIATES = ('C', 'M', 'D', 'N', 'A', 'A_routed', 'G', 'learning_rate', 'batch_size')
MAX_DROPPED_FRACTION = 0.01  # a run that dropped more tokens measured its dispatch, not its design


# What each study's fit reads beyond C (and A and G on MoE rows): the schema of its rows.
REQUIRED = {
    'hparams': ('budget', 'learning_rate', 'batch_size', 'seq_len'),
    'allocation': ('budget', 'M'),
}
FRACTIONS = ('A', 'A_routed')  # shares of the experts: in (0, 1]


def _bad_covariate(row: dict) -> str | None:
  """The first covariate a law would take the log of that is not a positive number (or, for A,
  not in (0, 1]): C on every row, A and G on MoE rows and the study's REQUIRED keys must be
  there; the others only where given (NaN: not applicable)."""
  required = ('C', 'A', 'G') if is_moe(row) else ('C',)
  required += REQUIRED.get(row.get('study'), ())
  for key in COVARIATES + tuple(k for k in required if k not in COVARIATES):
    value = row.get(key)
    absent = value is None or (isinstance(value, float) and math.isnan(value))
    if absent and key not in required:
      continue
    if absent or not (isinstance(value, float) and math.isfinite(value) and value > 0):
      return key
    if key in FRACTIONS and value > 1:
      return key
  return None


def clean(rows: list[dict], loss_key: str = 'final_eval_loss') -> tuple[list[dict], list[dict]]:
  """(usable rows, excluded rows with 'reason'): failed or unfinished runs, missing, NaN, inf or
  non-positive losses, runs that dropped 1% of their expert assignments or more, and repeated
  (study, member) rows (the last one is kept)."""
  if not any(loss_key in row for row in rows):
    raise FitError(
        f'--loss={loss_key}: no row has this column; use one of '
        f'{", ".join(k for k in sorted(rows[0]) if "loss" in k) or "the table loss columns"}.'
    )
  usable, excluded, seen = [], [], {}
  for row in rows:
    key = (row.get('study'), row.get('member'))
    if key in seen and key != (None, None):
      earlier = seen[key].get(loss_key)
      conflict = f' with a different {loss_key} ({earlier} vs {row.get(loss_key)})'
      excluded.append(
          dict(
              seen[key],
              reason=f'duplicate row{conflict if earlier != row.get(loss_key) else ""}; the '
              'later one is kept',
          )
      )
      usable.remove(seen[key])
    loss = row.get(loss_key)
    reason = None
    bad_covariate = _bad_covariate(row)
    if row.get('status', 'finished') != 'finished':
      reason = f"status {row.get('status')}" + (f": {row['reason']}" if row.get('reason') else '')
    elif loss is None:
      reason = f'{loss_key} missing'
    elif not isinstance(loss, float) or not math.isfinite(loss):
      reason = f'{loss_key} is {loss}'
    elif loss <= 0:
      reason = f'{loss_key} is not positive ({loss})'
    elif bad_covariate:
      reason = f'{bad_covariate} is {row.get(bad_covariate)!r}: ' + (
          'a share of the experts must be in (0, 1]'
          if bad_covariate in FRACTIONS
          and isinstance(row.get(bad_covariate), float)
          and row[bad_covariate] > 1
          else f'{row.get("study")} rows need a positive number'
      )
    elif isinstance(row.get('dropped_fraction'), float) and (
        row['dropped_fraction'] >= MAX_DROPPED_FRACTION
    ):
      reason = (
          f"dropped {row['dropped_fraction']:.2%} of its expert assignments (at most "
          f'{MAX_DROPPED_FRACTION:.0%}); raise moe.capacity_factor or run dropless'
      )
    if reason:
      excluded.append(dict(row, reason=reason))
      seen.pop(key, None)
    else:
      usable.append(row)
      seen[key] = row
  return usable, excluded


def is_moe(row: dict) -> bool:
  return bool(row.get('n_experts'))
