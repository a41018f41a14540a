"""Interruption campaign: runs killed at random moments resume to the uninterrupted run, exactly.

  python -m benchmarks.kill_campaign --trials=16 --workdir=/tmp/ling_jax/kill_campaign

A smoke run stretched to `--steps` steps with a checkpoint every 5 is trained once without a
break (the reference). Each trial trains the same run in a fresh workdir, interrupts it 1 to 3
times at random moments (SIGKILL, as an out-of-memory kill or a vanished machine; or SIGTERM,
as a preemption, which must exit 75), reruns the same command after each interruption, and
lets the last rerun finish. A trial holds when every step's training loss, the final eval loss
and the summary's losses equal the reference's, bit for bit. Prints one line per trial and the
count that held (docs/reliability.md records a run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREEMPTED_EXIT_CODE = 75  # ling_jax.preemption.PREEMPTED_EXIT_CODE, without importing JAX here


def command(steps: int, workdir: str) -> list[str]:
  return [
      sys.executable,
      '-m',
      'experiments.run',
      '--config=configs/moe.py:smoke',
      f'--config.train.tokens={steps * 4 * 32}',
      '--config.train.checkpoint_every=5',
      '--config.train.eval_every=20',
      '--config.train.log_every=1',
      f'--workdir={workdir}',
  ]


def train_losses(workdir: str) -> dict[int, float]:
  """The last record of each step, as ling_jax.metrics.read_metrics keeps it."""
  losses = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if record['kind'] == 'train':
        losses[record['step']] = record['loss']
  return losses


def outcome(workdir: str) -> tuple[dict, dict]:
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  keep = ('final_train_loss', 'final_eval_loss', 'eval_loss_stderr', 'final_step')
  return train_losses(workdir), {k: summary.get(k) for k in keep}


def interrupted_run(steps: int, workdir: str, kills: list[tuple[float, int]], env) -> dict:
  """Runs to the end, sending each (delay s, signal) of `kills` to a fresh attempt."""
  log = []
  for delay, signum in kills:
    process = subprocess.Popen(
        command(steps, workdir),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    process.send_signal(signum)
    code = process.wait(timeout=600)
    log.append(dict(signal=signal.Signals(signum).name, after_s=round(delay, 1), exit=code))
    if signum == signal.SIGTERM and code not in (PREEMPTED_EXIT_CODE, 0):
      log[-1]['error'] = f'exit {code} after SIGTERM (expected {PREEMPTED_EXIT_CODE}, or 0 if done)'
  final = subprocess.run(
      command(steps, workdir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  log.append(dict(final_exit=final.returncode))
  return dict(attempts=log, stderr=final.stderr[-2000:] if final.returncode else '')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', type=int, default=16)
  parser.add_argument('--steps', type=int, default=60)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workdir', required=True, help='a scratch folder; emptied first')
  args = parser.parse_args(argv)
  shutil.rmtree(args.workdir, ignore_errors=True)
  os.makedirs(args.workdir)
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1', JAX_PLATFORMS='cpu')
  rng = random.Random(args.seed)

  reference_dir = os.path.join(args.workdir, 'reference')
  start = time.perf_counter()
  subprocess.run(
      command(args.steps, reference_dir), cwd=ROOT, env=env, check=True, capture_output=True
  )
  duration = time.perf_counter() - start
  reference = outcome(reference_dir)
  print(f'reference: {args.steps} steps in {duration:.0f} s (start-up included)', flush=True)

  held = 0
  for trial in range(args.trials):
    workdir = os.path.join(args.workdir, f'trial{trial}')
    kills = [
        (rng.uniform(0.3, 1.0) * duration, rng.choice([signal.SIGKILL, signal.SIGTERM]))
        for _ in range(rng.randint(1, 3))
    ]
    record = interrupted_run(args.steps, workdir, kills, env)
    errors = [a['error'] for a in record['attempts'] if 'error' in a]
    if record['attempts'][-1]['final_exit'] != 0:
      errors.append(f'the last rerun failed: {record["stderr"]}')
    else:
      losses, summary = outcome(workdir)
      if losses != reference[0]:
        differ = [s for s in reference[0] if losses.get(s) != reference[0][s]]
        errors.append(f'{len(differ)} steps differ from the reference, first {differ[:3]}')
      if summary != reference[1]:
        errors.append(f'summary {summary} != reference {reference[1]}')
    held += not errors
    attempts = ', '.join(
        f'{a["signal"]} at {a["after_s"]} s -> {a["exit"]}' for a in record['attempts'][:-1]
    )
    print(f'trial {trial}: {attempts}: {"holds" if not errors else "; ".join(errors)}', flush=True)
  print(f'{held} of {args.trials} trials resumed to the reference bit for bit')
  return 0 if held == args.trials else 1


if __name__ == '__main__':
  sys.exit(main())
