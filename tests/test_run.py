"""The command line: a smoke run end to end, and a bad config refused before compiling."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1')
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_smoke_run_writes_metrics_config_and_summary(tmp_path):
  result = run('--config=configs/moe.py:smoke', f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert 'finished: 10 steps' in result.stdout and 'metrics.jsonl' in result.stdout
  summary = json.loads((tmp_path / 'summary.json').read_text())
  for key in ('final_train_loss', 'final_eval_loss', 'N', 'N_a', 'M', 'D', 'C', 'A', 'A_routed',
              'G', 'S', 'wall_time_s', 'tokens_per_s', 'data_fingerprint'):
    assert summary[key] is not None, key
  assert summary['C'] == summary['M'] * summary['D']
  assert json.loads((tmp_path / 'config.json').read_text())['model']['n_experts'] == 8


def test_invalid_override_is_refused_with_the_field(tmp_path):
  result = run('--config=configs/moe.py:smoke', '--config.model.top_k=20', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'config.model.top_k=20' in result.stderr
  assert not (tmp_path / 'checkpoints').exists()
