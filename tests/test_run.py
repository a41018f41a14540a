"""The command line: a smoke run end to end, a bad config refused before compiling, preemption."""

import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1')
  return subprocess.run(
      [sys.executable, '-m', 'experiments.run', *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )


def test_smoke_run_writes_metrics_config_and_summary(tmp_path):
  result = run('--config=configs/moe.py:smoke', f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert 'finished: 10 steps' in result.stdout and 'metrics.jsonl' in result.stdout
  summary = json.loads((tmp_path / 'summary.json').read_text())
  for key in (
      'final_train_loss',
      'final_eval_loss',
      'N',
      'N_a',
      'M',
      'D',
      'C',
      'A',
      'A_routed',
      'G',
      'S',
      'wall_time_s',
      'tokens_per_s',
      'data_fingerprint',
  ):
    assert summary[key] is not None, key
  assert summary['C'] == summary['M'] * summary['D']
  assert json.loads((tmp_path / 'config.json').read_text())['model']['n_experts'] == 8


def test_invalid_override_is_refused_with_the_field(tmp_path):
  result = run('--config=configs/moe.py:smoke', '--config.model.top_k=20', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'config.model.top_k=20' in result.stderr
  assert not (tmp_path / 'checkpoints').exists()


def test_sigterm_checkpoints_exits_75_and_the_rerun_loses_no_step(tmp_path):
  """A real SIGTERM to a real run, as a TPU VM sends before preemption."""
  steps = 400
  args = [
      '--config=configs/moe.py:smoke',
      f'--config.train.tokens={steps * 4 * 32}',
      '--config.train.steps_per_call=1',
      '--config.train.log_every=1',
      '--config.train.eval_every=1000',
      '--config.train.checkpoint_every=1000',
      '--config.train.async_checkpoint=False',
  ]
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1')
  cut = tmp_path / 'cut'
  process = subprocess.Popen(
      [sys.executable, '-m', 'experiments.run', *args, f'--workdir={cut}'],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  metrics = cut / 'metrics.jsonl'
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.read_text().count('"kind": "train"') >= 3):
    assert process.poll() is None and time.time() < deadline, process.communicate()
    time.sleep(0.02)
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=120)
  assert process.returncode == 75, err
  assert 'preempted' in out and not (cut / 'summary.json').exists()
  saved = sorted(int(p.name) for p in (cut / 'checkpoints').iterdir() if p.name.isdigit())
  losses = {
      r['step']: r['loss']
      for r in map(json.loads, metrics.read_text().splitlines())
      if r['kind'] == 'train'
  }
  assert saved and saved[-1] == max(losses) < steps  # the checkpoint is the last step trained
  assert sorted(losses) == list(range(1, saved[-1] + 1))

  assert run(*args, f'--workdir={cut}').returncode == 0
  assert run(*args, f'--workdir={tmp_path / "straight"}').returncode == 0
  read = lambda d: [
      r['loss']
      for r in map(json.loads, (d / 'metrics.jsonl').read_text().splitlines())
      if r['kind'] == 'train'
  ]
  assert read(cut) == read(tmp_path / 'straight')  # bit-identical, every step once
