"""Runs and fits on gs://, against a local GCS emulator: training, resume, outages, fitting.

The emulator (tests/gcs_emulator.py) serves one bucket on localhost for the whole module:
gcsfs (metrics, summaries, orbax's files) and tensorstore (checkpoint arrays) both read it.
"""

import json
import threading

import pytest
from etils import epath

from fitting import fit as fit_cli
from fitting import synthetic
from ling_jax import metrics as metrics_lib
from ling_jax import train as train_lib
from tests import gcs_emulator
from tests.test_train import smoke


@pytest.fixture(scope='module')
def bucket(tmp_path_factory):
  with gcs_emulator.running(str(tmp_path_factory.mktemp('gcs'))) as emulator:
    yield emulator


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """The losses of the uninterrupted local run every gs:// run is compared with."""
  workdir = tmp_path_factory.mktemp('straight')
  train_lib.train(run_config(), str(workdir))
  return metrics_lib.train_losses(workdir)


def run_config(**metrics):
  # flush_every is large: chunks are written at checkpoints (every 5 steps) and at the end.
  return smoke(steps=15, train=dict(checkpoint_every=5), metrics=dict(flush_every=1000, **metrics))


def gs(name: str) -> str:
  return f'gs://{gcs_emulator.BUCKET}/{name}'


@pytest.fixture
def quick_gcsfs_backoff(monkeypatch):
  """gcsfs waits 1, 2, 4, 8 and 16 s (plus jitter) between the tries of one request before an
  error reaches our retries; a tenth of that keeps the long-outage test short. The retry logic
  under test, ours, is unchanged."""
  import asyncio

  import gcsfs.retry

  real_sleep = asyncio.sleep
  fast = type('FastAsyncio', (), {'sleep': staticmethod(lambda s: real_sleep(s / 10))})
  monkeypatch.setattr(gcsfs.retry, 'asyncio', fast)


def outage_at_flush(monkeypatch, emulator, flush_number: int, seconds: float):
  """Takes the bucket away just before the run's `flush_number`-th metrics upload (the one
  before a checkpoint), for `seconds`; returns the thread that brings it back."""
  original, calls = metrics_lib.MetricWriter.flush, []
  back = threading.Timer(seconds, emulator.start)

  def flush(self):
    calls.extend([1] if self._buffer else [])
    if len(calls) == flush_number and self._buffer:
      emulator.stop()
      back.start()
    original(self)

  monkeypatch.setattr(metrics_lib.MetricWriter, 'flush', flush)
  return back


def test_a_run_on_gs_resumes_bit_identical(bucket, straight):
  workdir = gs('resumed')
  stopped = train_lib.train(run_config(), workdir, stop_at_step=10)
  assert stopped['status'] == 'stopped'
  resumed = train_lib.train(run_config(), workdir)
  assert resumed['status'] == 'finished' and resumed['final_step'] == 15
  assert metrics_lib.train_losses(workdir) == straight
  root = epath.Path(workdir)
  assert json.loads((root / metrics_lib.SUMMARY_FILE).read_text())['final_step'] == 15
  assert {p.name for p in (root / 'checkpoints').iterdir()} >= {'10', '15'}


def test_an_outage_shorter_than_the_deadline_only_pauses_the_run(bucket, straight, monkeypatch):
  back = outage_at_flush(monkeypatch, bucket, flush_number=2, seconds=4)
  summary = train_lib.train(run_config(), gs('short_outage'))
  back.join()
  assert summary['status'] == 'finished'
  assert metrics_lib.train_losses(gs('short_outage')) == straight  # every step's record landed


def test_an_outage_longer_than_the_deadline_stops_the_run_and_the_rerun_loses_nothing(
    bucket, straight, monkeypatch, quick_gcsfs_backoff
):
  config = run_config(remote_retry_s=3.0)
  # Longer than gcsfs's own tries of one attempt (about 3.5 s here) plus the deadline.
  back = outage_at_flush(monkeypatch, bucket, flush_number=2, seconds=12)
  with pytest.raises(Exception):  # the upload of steps 6-10 gives up
    train_lib.train(config, gs('long_outage'))
  back.join()
  monkeypatch.undo()
  checkpoints = epath.Path(gs('long_outage')) / 'checkpoints'
  assert [p.name for p in checkpoints.iterdir()] == ['5']  # step 10's was never started
  summary = train_lib.train(config, gs('long_outage'))  # resumes from the step-5 checkpoint
  assert summary['status'] == 'finished'
  assert metrics_lib.train_losses(gs('long_outage')) == straight


def test_a_fit_reads_and_writes_gs(bucket, tmp_path):
  rows = synthetic.table()
  text = '\n'.join(json.dumps(r) for r in rows) + '\n'
  epath.Path(gs('study/results.jsonl')).write_text(text)
  report = fit_cli.run(gs('study/results.jsonl'), 'dense_baseline', gs('study/fits'), n_bootstrap=5)
  uploaded = json.loads(epath.Path(gs('study/fits/report.json')).read_text())
  assert uploaded['studies'].keys() == report['studies'].keys() == {'dense_baseline'}
  assert epath.Path(gs('study/fits/dense_frontier_power.png')).stat().length > 1000
  assert uploaded['studies'] == json.loads(json.dumps(report['studies']))


@pytest.mark.parametrize('suffix', ['.bin', '.npy'])
def test_a_corpus_on_gs_trains_and_resumes_as_the_same_file_on_disk(bucket, tmp_path, suffix):
  """Token files are read where they lie (ranged reads): the same windows, the same losses and a
  bit-identical resume as the local copy, and the same refusal of ids outside the vocabulary."""
  import fsspec
  import numpy as np

  tokens = np.random.default_rng(1).integers(0, 64, 40_000).astype(np.uint16)
  local = tmp_path / f'train{suffix}'
  np.save(local, tokens) if suffix == '.npy' else tokens.tofile(local)
  remote = gs(f'tokens/train{suffix}')
  fs = fsspec.filesystem('gs')
  fs.put_file(str(local), remote.removeprefix('gs://'))

  def config(path):
    return smoke(
        steps=12,
        data=dict(source='tokens', paths=(path,), eval_paths=(path,), token_dtype='uint16'),
        train=dict(checkpoint_every=4),
    )

  on_disk = tmp_path / 'on_disk'
  train_lib.train(config(str(local)), str(on_disk))
  workdir = tmp_path / 'from_gs'
  assert train_lib.train(config(remote), str(workdir), stop_at_step=8)['status'] == 'stopped'
  assert train_lib.train(config(remote), str(workdir))['final_step'] == 12
  assert metrics_lib.train_losses(workdir) == metrics_lib.train_losses(on_disk)
  from ling_jax import data as data_lib

  window = data_lib.Dataset(config(remote)).train_source[5]
  L = config(remote).train.seq_len
  np.testing.assert_array_equal(window, tokens[5 * L : 6 * L + 1])
  bad = tokens.copy()
  bad[20_000] = 300
  bad.tofile(tmp_path / 'bad.bin')
  fs.put_file(str(tmp_path / 'bad.bin'), gs('tokens/bad.bin').removeprefix('gs://'))
  from ling_jax.config import ConfigError

  with pytest.raises(ConfigError, match=r'bad\.bin holds ids outside \[0, model\.vocab_size=64\)'):
    data_lib.Dataset(config(gs('tokens/bad.bin')))
