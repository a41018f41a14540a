"""Metric files: one record per (kind, step) after resumes, chunked writes, whole-or-absent."""

import json

import pytest

from ling_jax import metrics as metrics_lib


def test_local_records_read_back_with_resume_duplicates_replaced(tmp_path):
  w = metrics_lib.MetricWriter(str(tmp_path))
  for step in (1, 2, 3):
    w.write(dict(kind='train', step=step, loss=10.0 - step))
  w.close()
  w = metrics_lib.MetricWriter(str(tmp_path))  # a resumed run repeats step 3
  w.write(dict(kind='train', step=3, loss=1.5))
  w.write(dict(kind='eval', step=3, eval_loss=2.0))
  w.close()
  records = metrics_lib.read_metrics(str(tmp_path))
  assert [(r['kind'], r['step']) for r in records] == [
      ('train', 1),
      ('train', 2),
      ('eval', 3),
      ('train', 3),
  ]
  assert records[-1]['loss'] == 1.5


def test_a_line_cut_off_by_a_crash_loses_only_itself(tmp_path):
  w = metrics_lib.MetricWriter(str(tmp_path))
  w.write(dict(kind='train', step=1, loss=1.0))
  w.close()
  with open(tmp_path / metrics_lib.METRICS_FILE, 'a') as f:
    f.write('{"kind": "train", "step": 2, "lo')
  w = metrics_lib.MetricWriter(str(tmp_path))
  w.write(dict(kind='train', step=2, loss=2.0))
  w.close()
  assert [r['loss'] for r in metrics_lib.read_metrics(str(tmp_path))] == [1.0, 2.0]


def test_chunked_writer_for_object_stores(tmp_path):
  w = metrics_lib.MetricWriter(str(tmp_path), flush_every=2)
  w.remote, w._file = True, None  # what a gs:// workdir does, on a local folder
  (tmp_path / metrics_lib.CHUNK_DIR).mkdir()
  for step in range(1, 6):
    w.write(dict(kind='train', step=step, loss=float(step), nan=float('nan')))
  w.close()
  chunks = sorted((tmp_path / metrics_lib.CHUNK_DIR).iterdir())
  assert len(chunks) == 3  # 2 + 2 + the final flush of 1
  records = metrics_lib.read_metrics(str(tmp_path))
  assert [r['step'] for r in records] == [1, 2, 3, 4, 5]
  assert records[0]['nan'] == 'nan'


def test_whole_files_leave_no_temporary_behind(tmp_path):
  w = metrics_lib.MetricWriter(str(tmp_path))
  w.write_json('summary.json', dict(a=1))
  w.close()
  assert json.loads((tmp_path / 'summary.json').read_text()) == {'a': 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.jsonl', 'summary.json']


class FlakyRemote:
  """A gs:// object that refuses the first `failures` uploads, as during an outage."""

  def __init__(self, failures):
    self.failures, self.attempts, self.text = failures, 0, None

  def __str__(self):
    return 'gs://bucket/run/summary.json'

  def write_text(self, text):
    self.attempts += 1
    if self.attempts <= self.failures:
      raise OSError('503 Service Unavailable')
    self.text = text


class FakeClock:
  """time.monotonic and time.sleep of a process whose only passing time is its sleeps."""

  def __init__(self):
    self.now, self.waits = 0.0, []

  def monotonic(self):
    return self.now

  def sleep(self, seconds):
    self.waits.append(seconds)
    self.now += seconds


def test_remote_writes_retry_through_an_outage_and_give_up_after_the_deadline(monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(metrics_lib, 'time', clock)
  outage = FlakyRemote(failures=3)
  metrics_lib.write_whole(outage, '{"a": 1}', deadline_s=15)
  assert outage.text == '{"a": 1}' and outage.attempts == 4 and clock.waits == [1, 2, 4]
  clock.waits.clear()
  longer = FlakyRemote(failures=100)
  with pytest.raises(OSError):  # an outage longer than the deadline surfaces
    metrics_lib.write_whole(longer, 'x', deadline_s=5)
  assert longer.text is None and clock.waits == [1, 2, 2] and longer.attempts == 4


def test_the_default_deadline_rides_out_ten_minutes_of_outage(monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(metrics_lib, 'time', clock)
  with pytest.raises(OSError):
    metrics_lib.write_whole(FlakyRemote(failures=10**6), 'x')
  assert sum(clock.waits) == 600 and max(clock.waits) == 128 and clock.waits[:4] == [1, 2, 4, 8]
