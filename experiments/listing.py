"""`--list`: a study's members, each with its design, its cost here and its status.

python -m experiments.run --config=configs/granularity.py:local --workdir=/tmp/studies --list
"""

from __future__ import annotations

import json

from etils import epath

from experiments import cost
from experiments import member as member_lib
from experiments import sweep
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import metrics as metrics_lib


def table(base, members: list[member_lib.Member], workdir: str | None = None) -> str:
  """One line per member: N, N_a, M, D, C, A, G, S, learning rate, batch, cost here, status."""
  header = (
      f'{"#":>3} {"member":<28} {"N":>9} {"N_a":>9} {"M":>9} {"D":>9} {"C":>9} {"A":>6} '
      f'{"A_rt":>6} {"G":>5} {"S":>5} {"lr":>8} {"batch":>9} {"cost_here":>10} status'
  )
  lines = [header]
  total_hours = 0.0
  finished_hours = [0.0, 0.0]  # predicted, measured: of the finished members that measured it
  model = cost.load()
  for i, (member, c, arch) in enumerate(sweep.validate_all(base, members, read_data=False)):
    s = flops.summary(arch)
    steps = config_lib.num_steps(c, arch)
    tokens = steps * c.train.batch_size * c.train.seq_len
    compute = s['M'] * tokens
    hours = cost.run_seconds(model, arch, c, steps) / 3600
    total_hours += hours
    directory = sweep.member_dir(workdir, base, member) if workdir else None
    state = sweep.status(directory) if directory else '-'
    if directory and sweep.design_change(directory, member):
      state += ' (an earlier design: move it away to train this one)'
    measured = _elapsed_hours(directory) if state == 'finished' else None
    if measured:
      state += f' in {measured:.3g}h'
      finished_hours[0] += hours
      finished_hours[1] += measured
    state += ' (provisional)' if member.provisional else ''
    lines.append(
        f'{i:>3} {member.name:<28} {s["N"]:>9.3g} {s["N_a"]:>9.3g} {s["M"]:>9.3g} '
        f'{tokens:>9.3g} {compute:>9.3g} {s["A"]:>6.3f} {s["A_routed"]:>6.3f} '
        f'{s["G"]:>5.3g} {s["S"]:>5.2f} {c.train.learning_rate:>8.2e} '
        f'{_batch(c.train):>9} {hours:>9.3g}h {state}'
    )
  notes = sorted({m.provisional for m in members if m.provisional})
  lines += [f'provisional: {note}' for note in notes]
  lines.append(
      f'{len(members)} members, C in FLOPs (paper convention), D in tokens; cost_here '
      f'is the cost model of experiments/cost.py (measured {model["measured"]} on '
      f'{model["machine"]}): {total_hours:.3g} h in all'
  )
  if finished_hours[1]:
    lines.append(
        f'finished members: predicted {finished_hours[0]:.3g} h, '
        f'measured {finished_hours[1]:.3g} h '
        f'(python -m experiments.cost --workdir=WORKDIR compares member by member)'
    )
  return '\n'.join(lines)


def _batch(train) -> str:
  """The batch as run, with the batch asked for in brackets where the layout rounded it."""
  asked = train.requested_batch_size
  return f'{train.batch_size}' + (f'({asked})' if asked and asked != train.batch_size else '')


def _elapsed_hours(directory: epath.Path) -> float | None:
  """The measured hours of a finished member (summary's elapsed_s), if it recorded them."""
  summary = json.loads((directory / metrics_lib.SUMMARY_FILE).read_text())
  return summary['elapsed_s'] / 3600 if summary.get('elapsed_s') else None
