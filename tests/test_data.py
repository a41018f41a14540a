"""Data sources: windows against naive slicing, files, ArrayRecord packing, exact resume."""

import numpy as np
import pytest

from configs import moe as moe_config
from ling_jax import config as config_lib
from ling_jax import data as data_lib


def config(source='synthetic', **data):
  c = moe_config.get_config('smoke')
  c.data.source = source
  c.data.update(**data)
  return c


def test_windows_match_naive_slicing_and_never_cross_files():
  a, b = np.arange(100), np.arange(1000, 1025)
  source = data_lib.WindowSource([a, b], length=8)
  expected = [a[i : i + 9] for i in range(0, 100 - 8, 8)] + [
      b[i : i + 9] for i in range(0, 25 - 8, 8)
  ]
  assert len(source) == len(expected) == 12 + 3
  for i, window in enumerate(expected):
    np.testing.assert_array_equal(source[i], window)


def test_synthetic_records_are_deterministic_and_follow_the_chain():
  s = data_lib.SyntheticSource(100, 16, 64, seed=3)
  np.testing.assert_array_equal(s[7], data_lib.SyntheticSource(100, 16, 64, seed=3)[7])
  record = s[7]
  for prev, nxt in zip(record[:-1], record[1:]):
    assert nxt in s.successors[prev]


@pytest.mark.parametrize('suffix', ['.bin', '.npy'])
def test_token_files_round_trip(tmp_path, suffix):
  tokens = np.random.default_rng(0).integers(0, 60_000, 5000).astype(np.uint16)
  path = str(tmp_path / f'train{suffix}')
  np.save(path, tokens) if suffix == '.npy' else tokens.tofile(path)
  c = config('tokens', paths=(path,), eval_paths=(path,), token_dtype='uint16')
  c.model.vocab_size = 65_536
  config_lib.validate(c)
  ds = data_lib.Dataset(c)
  L = c.train.seq_len
  assert len(ds.train_source) == (5000 - 1) // L
  np.testing.assert_array_equal(ds.train_source[3], tokens[3 * L : 4 * L + 1])
  batch = next(ds.train_iterator())
  assert batch.shape == (c.train.batch_size, L + 1) and batch.dtype == np.int32
  assert ds.fingerprint.startswith('tokens-')


def test_array_record_documents_are_packed_in_order(tmp_path):
  from array_record.python.array_record_module import ArrayRecordWriter

  path = str(tmp_path / 'docs.array_record')
  writer = ArrayRecordWriter(path, 'group_size:1')
  docs = [
      np.arange(start, start + n, dtype=np.uint32)
      for start, n in [(0, 50), (1000, 7), (2000, 120), (3000, 33)] * 20
  ]
  for doc in docs:
    writer.write(doc.tobytes())
  writer.close()
  c = config('array_record', paths=(path,), token_dtype='uint32')
  c.model.vocab_size = 4000
  c.data.seed = 0
  ds = data_lib.Dataset(c)
  batch = next(ds.train_iterator())
  L1 = c.train.seq_len + 1
  assert batch.shape == (c.train.batch_size, L1)
  every_token = set(np.concatenate(docs).tolist())
  assert set(batch.reshape(-1).tolist()) <= every_token
  # Inside a packed row, consecutive tokens of one document stay consecutive.
  row = batch[0]
  assert np.sum(np.diff(row) == 1) >= L1 - 1 - 4


def test_stdlib_corpus_is_offline_deterministic_and_split_by_file():
  train, held, fingerprint = data_lib.stdlib_corpus(0.02)
  assert train.size > 1_000_000 and 0 < held.size < train.size / 10
  assert fingerprint.startswith('stdlib-py')
  assert data_lib.stdlib_corpus.__wrapped__(0.02)[2] == fingerprint
  assert train.max() < 256 and np.count_nonzero(train == data_lib.DOCUMENT_SEPARATOR) > 100


def test_iterator_state_resumes_at_exactly_the_next_batch():
  ds = data_lib.Dataset(config())
  it = ds.train_iterator()
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  resumed = data_lib.Dataset(config()).train_iterator()
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed), want)


def test_eval_batches_are_the_same_at_every_evaluation():
  ds = data_lib.Dataset(config())
  first, second = ds.eval_batches(), ds.eval_batches()
  assert len(first) == 2
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)


def test_empty_token_file_is_refused(tmp_path):
  path = tmp_path / 'tiny.bin'
  np.arange(5, dtype=np.uint16).tofile(path)
  c = config('tokens', paths=(str(path),))
  with pytest.raises(config_lib.ConfigError, match='no training window'):
    data_lib.Dataset(c)


def test_floats_in_an_npy_file_are_refused_by_name(tmp_path):
  path = str(tmp_path / 'probabilities.npy')
  np.save(path, np.random.default_rng(0).random(5000))  # once trained as all-zero tokens
  with pytest.raises(config_lib.ConfigError, match='float64 values, not integer token ids'):
    data_lib.Dataset(config('tokens', paths=(path,), eval_paths=(path,)))


def test_a_raw_file_of_the_wrong_width_is_refused(tmp_path):
  path = str(tmp_path / 'odd.bin')
  np.arange(4001, dtype=np.uint8).tofile(path)  # 4001 bytes: not whole uint16 ids
  with pytest.raises(config_lib.ConfigError, match=r"token_dtype='uint16'.*4001 bytes"):
    data_lib.Dataset(config('tokens', paths=(path,), eval_paths=(path,), token_dtype='uint16'))


@pytest.mark.parametrize('bad', [64, 65_535, -1])
def test_ids_outside_the_vocabulary_name_the_file_and_place(tmp_path, bad):
  tokens = np.random.default_rng(0).integers(0, 64, 5000).astype(np.int32)
  tokens[1234] = bad  # vocab_size is 64 at smoke scale
  path = str(tmp_path / 'train.npy')
  np.save(path, tokens)
  ds = data_lib.Dataset(config('tokens', paths=(path,), eval_paths=(path,)))
  L = ds.seq_len
  window = 1234 // L  # 1234 is inside this window, not at its edges (L = 32)
  assert 0 < 1234 % L
  np.testing.assert_array_equal(
      ds.train_source[window - 1], tokens[(window - 1) * L : window * L + 1]
  )
  with pytest.raises(ValueError, match=r'train.npy: tokens .* outside \[0, model.vocab_size=64\)'):
    ds.train_source[window]
