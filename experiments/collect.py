"""Gathers every study member's summary into one results table (JSONL and CSV) for fitting/.

  python -m experiments.collect --workdir=/tmp/studies [--out=/tmp/studies/results]
  python -m experiments.collect --workdir=/tmp/studies --study=hparams --out=/tmp/hparams/results
  python -m experiments.collect --workdir=/tmp/studies --study=dense_baseline,granularity \
      --out=/tmp/granularity/results    # an EL study with the dense runs its EL is read from
  python -m experiments.collect --workdir=/tmp/studies --study=dense_baseline,granularity \
      --base=results/local/dense_baseline/results.jsonl --out=/tmp/granularity/results
      # the same, where the dense runs are a committed table rather than run directories

Reads WORKDIR/<study>/<member>/{member.json, summary.json, failure.json, config.json}; members
still running or interrupted are listed as such. With --base, the rows of earlier results tables
(of the same studies) stand for members WORKDIR holds no run of: a study completed or rerun in
part in another workdir, on another machine, or after its workdir was lost. Writes OUT.jsonl and
OUT.csv (default WORKDIR/results.*), each whole or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import sys

from absl import app
from absl import flags
from etils import epath

from experiments import sweep
from fitting import results as results_lib
from ling_jax import metrics as metrics_lib

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command line's flags, defined only when run as one: `rows` and `write` are a library
  too (experiments.demo), and absl refuses a flag defined twice in one process."""
  flags.DEFINE_string('workdir', None, 'The workdir the studies ran in.', required=True)
  flags.DEFINE_list('study', None, 'Only these studies (default: every study in WORKDIR).')
  flags.DEFINE_string('out', None, 'Output path without extension; default WORKDIR/results.')
  flags.DEFINE_list(
      'base',
      [],
      'Earlier results tables (.jsonl or .csv, as collect writes them) whose rows stand for '
      'members that WORKDIR holds no run of; a run in WORKDIR replaces its row.',
  )


MODEL_FIELDS = results_lib.MODEL_FIELDS
COLUMNS = results_lib.COLUMNS


def _read_json(path: epath.Path):
  return json.loads(path.read_text()) if path.exists() else None


def rows(workdir: str, studies: str | list[str] | None = None) -> list[dict]:
  """One row per member of every study in `workdir` (or of `studies` only, in their order)."""
  out = []
  root = epath.Path(workdir)
  patterns = [studies] if isinstance(studies, str) else studies or ['*']
  member_files = [f for p in patterns for f in sorted(root.glob(f'{p}/*/{sweep.MEMBER_FILE}'))]
  for member_json in member_files:
    directory = member_json.parent
    member = _read_json(member_json)
    summary = _read_json(directory / metrics_lib.SUMMARY_FILE) or {}
    failure = _read_json(directory / sweep.FAILURE_FILE) or {}
    config = _read_json(directory / metrics_lib.CONFIG_FILE) or {}
    row = dict(
        study=member['study'],
        member=member['member'],
        group=member['group'],
        status=summary.get('status') or sweep.status(directory),
        budget=config.get('train', {}).get('compute_budget'),
        reason=failure.get('reason'),
    )
    # The summary's resolved architecture; summaries written before it was recorded fall back
    # to the config, where a granularity study leaves d_expert 0 (G sets it).
    architecture = summary.get('architecture') or config.get('model', {})
    row.update({k: architecture.get(k) for k in MODEL_FIELDS})
    if row['n_experts'] and not row['d_expert'] and summary.get('G'):
      row['d_expert'] = round(2 * row['d_model'] / summary['G'])
    row.update({k: v for k, v in summary.items() if k in COLUMNS and row.get(k) is None})
    out.append(row)
  return out


def with_base(table: list[dict], base: list[dict], studies: list[str] | None = None) -> list[dict]:
  """`table` and the rows of `base` (of `studies` only, when given) whose (study, member) it does
  not hold: base rows first, in their order, then the new ones."""
  have = {(r['study'], r['member']) for r in table}
  kept = [
      r
      for r in base
      if (r['study'], r['member']) not in have and (not studies or r['study'] in studies)
  ]
  return kept + table


def write(table: list[dict], out: str) -> None:
  jsonl = ''.join(json.dumps(r) + '\n' for r in table)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction='ignore')
  writer.writeheader()
  writer.writerows(table)
  epath.Path(out).parent.mkdir(parents=True, exist_ok=True)
  metrics_lib.write_whole(epath.Path(out + '.jsonl'), jsonl)
  metrics_lib.write_whole(epath.Path(out + '.csv'), buffer.getvalue())


def main(argv):
  del argv
  table = rows(FLAGS.workdir, FLAGS.study)
  for path in FLAGS.base:
    try:
      base = results_lib.load(path)
    except results_lib.FitError as error:
      sys.exit(f'--base: {error}')
    table = with_base(table, base, FLAGS.study)
  if not table:
    where = f'{FLAGS.workdir}/{",".join(FLAGS.study or ["<study>"])}'
    sys.exit(f'No study members under {where} (expected {where}/<member>/member.json).')
  out = FLAGS.out or str(epath.Path(FLAGS.workdir) / 'results')
  write(table, out)
  counts = {s: sum(r['status'] == s for r in table) for s in sorted({r['status'] for r in table})}
  print(f'{len(table)} members {counts} -> {out}.jsonl, {out}.csv')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
