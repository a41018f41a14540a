"""Sweeps: a study config lists its members; each runs in WORKDIR/<study>/<member>/.

A config file is a study when it defines `get_sweep(arg)` beside `get_config(arg)`; the config
records where it came from in `config.sweep.source` and `config.sweep.arg`. Finished members
(summary.json present) are skipped, interrupted ones resume from their checkpoint, and a member
that fails is recorded in failure.json with its reason while the sweep goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import traceback
from typing import Any, Callable

import ml_collections
from etils import epath

from experiments.member import Member
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import layout
from ling_jax import metrics as metrics_lib

log = logging.getLogger('ling_jax')

MEMBER_FILE = 'member.json'
FAILURE_FILE = 'failure.json'


def load_members(config) -> list[Member] | None:
  """The members of a study config, or None for a single-run config."""
  if 'sweep' not in config or not config.sweep.source:
    return None
  spec = importlib.util.spec_from_file_location('_ling_jax_study', config.sweep.source)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_sweep(config.sweep.arg or None)


def member_config(base, member: Member):
  c = base.copy_and_resolve_references()
  c.unlock()
  for key, value in member.overrides.items():
    section, field = key.split('.')
    if field not in c[section]:
      raise config_lib.ConfigError(f'sweep member {member.name}: config.{key} does not exist.')
    c[section][field] = value
  c.name = f'{base.name}/{member.name}'
  c.lock()
  return c


def check_flag_overrides(members: list[Member], flagged) -> None:
  """ConfigError if a command-line override (`--config.<section>.<field>`, in `flagged`) sets a
  field that a member's design sets too: the member's value would win and the flag be lost."""
  for key in sorted(flagged):
    setting = [m.name for m in members if key in m.overrides]
    if setting:
      raise config_lib.ConfigError(
          f'--config.{key}: {len(setting)} member(s) of this study set {key} in their design '
          f"(e.g. {setting[0]}), which would override the flag. Change it in the study's "
          'config file (as a new design, in a new workdir), or train one model with a '
          'single-run config such as configs/moe.py.'
      )


def member_dir(workdir: str, base, member: Member) -> epath.Path:
  return epath.Path(workdir) / base.name / member.name


def status(directory: epath.Path) -> str:
  if (directory / metrics_lib.SUMMARY_FILE).exists():
    return 'finished'
  if (directory / FAILURE_FILE).exists():
    return 'failed'
  if (directory / 'checkpoints').exists():
    return 'interrupted'
  return 'pending'


def design_change(directory: epath.Path, member: Member) -> str:
  """'' when the run in `directory` was started from `member`'s overrides (or never started);
  else the first field whose value the study has changed since."""
  path = directory / MEMBER_FILE
  if not path.exists():
    return ''
  recorded = json.loads(path.read_text())['overrides']
  current = json.loads(json.dumps(member.overrides))  # as member.json holds them
  for key in sorted(set(recorded) | set(current)):
    if recorded.get(key) != current.get(key):
      return f'{key} was {recorded.get(key)!r}, the study now sets {current.get(key)!r}'
  return ''


def validate_all(
    base, members: list[Member], read_data: bool = True
) -> list[tuple[Member, Any, flops.Architecture]]:
  """Every member's config, validated before any member compiles (its data too, unless
  `read_data` is False: a listing reads none)."""
  out = []
  for member in members:
    c = member_config(base, member)
    if not read_data:
      c = config_lib.without_data(c)
    try:
      arch = config_lib.validate(c).arch
      if c.mesh.slice:  # laid out for a named slice: the batch as run
        c = layout.resolve(c)
      out.append((member, c, arch))
    except config_lib.ConfigError as error:
      raise config_lib.ConfigError(f'sweep member {member.name}: {error}') from None
  return out


def study_members(study: str, scale: str) -> list[tuple[Member, Any, flops.Architecture]]:
  """Every member of configs/<study>.py at `scale`, with its config and architecture, validated."""
  base = importlib.import_module(f'configs.{study}').get_config(scale)
  return validate_all(base, load_members(base))


def run(
    base: ml_collections.ConfigDict,
    members: list[Member],
    workdir: str,
    index: int | None = None,
    retry_failed: bool = False,
    train_fn: Callable[[ml_collections.ConfigDict, str], dict] | None = None,
    allow_provisional: bool = False,
) -> dict[str, str]:
  """Runs the members (all, or the one at `index`) in order; returns member -> status.

  Args:
    base: the study's base config (its `name` names the study's folder under `workdir`).
    members: the study's sweep (`load_members`), each a set of overrides of `base`.
    workdir: the local folder or gs:// path holding `<study>/<member>/` run directories.
    index: train only the member at this index (a TPU job array's task), else all in order.
    retry_failed: train members whose last run failed again (else they are skipped).
    train_fn: what trains one member, `(config, directory) -> summary`; `ling_jax.train.train`
      by default (tests pass a stand-in).
    allow_provisional: train members whose design is provisional (a law of an earlier protocol
      step is not fitted yet); refused otherwise, as their results would not answer the study's
      question.

  Returns:
    {member name: 'finished' | 'failed' | 'preempted' | 'stopped' | ...}: a preempted member
    ends the pass (it checkpointed; rerunning the same command resumes it).
  """
  if train_fn is None:
    from ling_jax import train as train_lib  # JAX only when something trains

    train_fn = train_lib.train
  validated = _selected(base, members, index)
  _refuse_unrunnable(base, validated, workdir, allow_provisional)
  outcome = {}
  for member, c, _ in validated:
    directory = member_dir(workdir, base, member)
    state = status(directory)
    if state == 'finished' or (state == 'failed' and not retry_failed):
      log.info('%s: %s, skipped', member.name, state)
      outcome[member.name] = state
      continue
    outcome[member.name] = _train_member(base, member, c, directory, state, train_fn)
    if outcome[member.name] == 'preempted':  # checkpointed; the rest waits for the rerun
      break
  return outcome


def _selected(base, members: list[Member], index: int | None) -> list:
  """Every member validated (`validate_all`), then the one at `index` if given."""
  validated = validate_all(base, members)
  if index is None:
    return validated
  if not 0 <= index < len(members):
    raise config_lib.ConfigError(
        f'--sweep_index={index}: the study has {len(members)} members '
        f'(0..{len(members) - 1}); see --list.'
    )
  return [validated[index]]


def _refuse_unrunnable(base, validated: list, workdir: str, allow_provisional: bool) -> None:
  """Stops before any training when a member's design is provisional (unless allowed) or when
  its directory ran an earlier design of the study."""
  provisional = [m for m, _, _ in validated if m.provisional]
  if provisional and not allow_provisional:
    raise config_lib.ConfigError(
        f'{base.name}: {len(provisional)} member(s) are provisional because '
        f'{provisional[0].provisional}; run and fit the earlier steps of the protocol first '
        '(docs/replication.md), or pass --allow_provisional to train them anyway.'
    )
  changed = [
      (m, change)
      for m, _, _ in validated
      if (change := design_change(member_dir(workdir, base, m), m))
  ]
  if changed:
    member, change = changed[0]
    raise config_lib.ConfigError(
        f'{base.name}: {len(changed)} member(s) in {workdir} ran an earlier design of the study '
        f'(e.g. {member.name}: {change}); move their directories out of '
        f'{member_dir(workdir, base, member).parent} (or pass a new --workdir) to train the '
        'current design. Nothing was deleted.'
    )


def _train_member(base, member: Member, c, directory, state: str, train_fn) -> str:
  """Trains one member in `directory` (recording its design first), returns its status; a
  failure is written to FAILURE_FILE with its traceback, not raised."""
  directory.mkdir(parents=True, exist_ok=True)
  metrics_lib.write_whole(
      directory / MEMBER_FILE,
      json.dumps(
          dict(study=base.name, member=member.name, group=member.group, overrides=member.overrides),
          indent=2,
      ),
  )
  if (directory / FAILURE_FILE).exists():
    (directory / FAILURE_FILE).unlink()
  log.info('%s: %s', member.name, 'resuming' if state == 'interrupted' else 'starting')
  try:
    summary = train_fn(c, str(directory))
  except Exception as error:  # pylint: disable=broad-except
    reason = f'{type(error).__name__}: {error}'
    log.error('%s failed: %s', member.name, reason)
    metrics_lib.write_whole(
        directory / FAILURE_FILE,
        json.dumps(
            dict(
                study=base.name,
                member=member.name,
                reason=reason,
                traceback=traceback.format_exc()[-4000:],
            ),
            indent=2,
        ),
    )
    return 'failed'
  if summary['status'] == 'preempted':
    log.warning(
        '%s: preempted at step %d; rerun the same command to resume',
        member.name,
        summary['final_step'],
    )
  return summary['status']
