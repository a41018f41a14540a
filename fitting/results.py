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

NUMERIC = ('budget', 'N', 'N_a', 'M', 'D', 'C', 'A', 'A_routed', 'G', 'S', 'learning_rate',
           'batch_size', 'seq_len', 'final_train_loss', 'final_eval_loss', 'wall_time_s',
           'tokens_per_s', 'steady_tokens_per_s', 'dropped_fraction', 'max_dropped_fraction',
           'eval_tokens', 'eval_loss_stderr', 'steps', 'n_layers', 'd_model', 'n_experts',
           'top_k', 'n_shared', 'd_expert', 'num_dense_layers')


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
  else:
    try:
      rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
      raise FitError(
          f'--results={path}: not JSON lines ({error}); pass a .jsonl or .csv.'
      ) from None
  if not rows:
    raise FitError(f'--results={path}: the table is empty.')
  for row in rows:
    for key in NUMERIC:
      if key in row:
        row[key] = _number(row[key])
  return rows


MAX_DROPPED_FRACTION = 0.01  # a run that dropped more tokens measured its dispatch, not its design


def clean(rows: list[dict], loss_key: str = 'final_eval_loss') -> tuple[list[dict], list[dict]]:
  """(usable rows, excluded rows with 'reason'): failed or unfinished runs, missing, NaN, inf or
  non-positive losses, runs that dropped 1% of their expert assignments or more, and repeated
  (study, member) rows (the last one is kept)."""
  usable, excluded, seen = [], [], {}
  for row in rows:
    key = (row.get('study'), row.get('member'))
    if key in seen and key != (None, None):
      excluded.append(dict(seen[key], reason='duplicate row; the later one is kept'))
      usable.remove(seen[key])
    loss = row.get(loss_key)
    reason = None
    if row.get('status', 'finished') != 'finished':
      reason = f"status {row.get('status')}" + (f": {row['reason']}" if row.get('reason') else '')
    elif loss is None:
      reason = f'{loss_key} missing'
    elif not isinstance(loss, float) or not math.isfinite(loss):
      reason = f'{loss_key} is {loss}'
    elif loss <= 0:
      reason = f'{loss_key} is not positive ({loss})'
    elif isinstance(row.get('dropped_fraction'), float) and (
        row['dropped_fraction'] >= MAX_DROPPED_FRACTION):
      reason = (f"dropped {row['dropped_fraction']:.2%} of its expert assignments (at most "
                f'{MAX_DROPPED_FRACTION:.0%}); raise moe.capacity_factor or run dropless')
    if reason:
      excluded.append(dict(row, reason=reason))
      seen.pop(key, None)
    else:
      usable.append(row)
      seen[key] = row
  return usable, excluded


def is_moe(row: dict) -> bool:
  return bool(row.get('n_experts'))
