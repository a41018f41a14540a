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


def _ids(n=5000, dtype=np.int32, **at):
  """n random ids of the smoke vocabulary (64), with `at`'s {position: id} planted."""
  tokens = np.random.default_rng(0).integers(0, 64, n).astype(dtype)
  for position, value in at.items():
    tokens[int(position[1:])] = value
  return tokens


def _truncated_npy(path):
  np.save(path, _ids())
  with open(path, 'r+b') as f:
    f.truncate(4000)  # the header promises 5000 int32 ids


def _object_npy(path):
  np.save(path, np.array([1, 'a', None], dtype=object), allow_pickle=True)


# (file name, what writes it (None: nothing), which field names it, what the message says)
BAD_TOKEN_FILES = [
    ('missing.bin', None, 'data.paths', 'cannot be read.*FileNotFoundError'),
    ('folder.bin', lambda p: p.mkdir(), 'data.paths', 'cannot be read'),
    ('empty.bin', lambda p: p.write_bytes(b''), 'data.paths', 'holds 0 token ids'),
    ('empty.npy', lambda p: np.save(p, np.zeros(0, np.int32)), 'data.paths', 'holds 0 token ids'),
    ('short.bin', lambda p: _ids(20, np.uint16).tofile(p), 'data.paths', 'fewer than one window'),
    ('floats.npy', lambda p: np.save(p, _ids().astype(float) / 64), 'data.paths', 'float64'),
    ('bools.npy', lambda p: np.save(p, _ids() > 31), 'data.paths', 'bool values'),
    ('objects.npy', _object_npy, 'data.paths', 'cannot be read'),
    (
        'garbage.npy',
        lambda p: p.write_bytes(b'not a numpy file' * 64),
        'data.paths',
        'cannot be read',
    ),
    ('truncated.npy', _truncated_npy, 'data.paths', 'cannot be read'),
    (
        'odd.bin',
        lambda p: np.arange(4001, dtype=np.uint8).tofile(p),
        'data.token_dtype',
        '4001 bytes',
    ),
    ('vocab.npy', lambda p: np.save(p, _ids(a1234=64)), 'data.paths', r'at 1 of 5000.*token 1234'),
    ('max.bin', lambda p: _ids(dtype=np.uint16, a4999=65_535).tofile(p), 'data.paths', 'id 65535'),
    ('negative.npy', lambda p: np.save(p, _ids(a0=-1)), 'data.paths', 'token 0, id -1'),
    ('huge.npy', lambda p: np.save(p, _ids(dtype=np.int64, a17=2**40)), 'data.paths', 'token 17'),
    ('eval_vocab.npy', lambda p: np.save(p, _ids(a99=100)), 'data.eval_paths', 'token 99'),
]


@pytest.mark.parametrize(
    'name, write, field, words', BAD_TOKEN_FILES, ids=[c[0] for c in BAD_TOKEN_FILES]
)
def test_bad_token_files_are_refused_at_open_naming_the_file(tmp_path, name, write, field, words):
  good = str(tmp_path / 'good.npy')
  np.save(good, _ids())
  bad = tmp_path / name
  if write is not None:
    write(bad)
  paths = dict(paths=(good,), eval_paths=(str(bad),))
  if field != 'data.eval_paths':
    paths = dict(paths=(good, str(bad)), eval_paths=(good,))
  with pytest.raises(config_lib.ConfigError, match=words) as refused:
    data_lib.Dataset(config('tokens', token_dtype='uint16', **paths))
  message = str(refused.value)
  assert name in message and f'config.{field}' in message, message


def test_a_large_file_is_checked_in_spread_chunks_with_the_count(tmp_path, monkeypatch):
  monkeypatch.setattr(data_lib, 'RANGE_CHECK_CHUNK', 100)
  monkeypatch.setattr(data_lib, 'RANGE_CHECK_CHUNKS', 8)
  tokens = _ids(100_000)
  tokens[[5, 42_850, 99_999]] = 70  # in the first, the fourth and the last chunk
  tokens[30_000] = 70  # between chunks: the windows' own check finds it when read
  path = str(tmp_path / 'large.npy')
  np.save(path, tokens)
  with pytest.raises(config_lib.ConfigError, match=r'at 3 of 800 checked positions .*token 5'):
    data_lib.Dataset(config('tokens', paths=(path,), eval_paths=(path,)))


@pytest.mark.parametrize('bad', [64, 65_535, -1])
def test_every_window_read_checks_its_ids_naming_the_file_and_place(bad):
  tokens = _ids()
  tokens[1234] = bad  # vocab_size is 64 at smoke scale
  L = 32
  source = data_lib.WindowSource([tokens], L, 64, ['train.npy'])
  window = 1234 // L  # 1234 is inside this window, not at its edges
  assert 0 < 1234 % L
  np.testing.assert_array_equal(source[window - 1], tokens[(window - 1) * L : window * L + 1])
  with pytest.raises(ValueError, match=r'train.npy: tokens .* outside \[0, model.vocab_size=64\)'):
    source[window]


def test_a_smaller_eval_batch_splits_the_same_held_out_windows():
  whole = config()
  whole.train.update(batch_size=8, eval_batches=3)
  split = config()
  split.train.update(batch_size=8, eval_batches=3, eval_batch_size=2)
  a = data_lib.Dataset(whole).eval_batches()
  b = data_lib.Dataset(split).eval_batches()
  assert [x.shape[0] for x in a] == [8] * 3 and [x.shape[0] for x in b] == [2] * 12
  np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
