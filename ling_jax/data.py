"""Token pipelines on grain: every source yields int32 windows of seq_len + 1 tokens.

Sources (config.data.source):
  * 'stdlib'       -- the built-in offline corpus: this Python's standard-library sources as
                      bytes (vocab 256), files split train/eval by a hash of their path;
  * 'synthetic'    -- a fixed random Markov chain (loss floor ln 2), for tests;
  * 'tokens'       -- pre-tokenized .npy or raw .bin files: memory-mapped when local, read by
                      byte ranges where they lie on gs:// (each process only its windows);
  * 'array_record' -- one document of tokens per record, packed into windows (local or mounted
                      disks: the reader does not open gs://).
Each window is one example; a batch is `batch_size / process_count` windows of this process's
shard. The iterator state (a position in a deterministic order) is checkpointed with the model.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import os
import sysconfig
import zlib

import grain
import jax
import numpy as np

from ling_jax import config as config_lib

DOCUMENT_SEPARATOR = 0  # NUL byte between stdlib files; never occurs in Python source
EVAL_ORDER_SEED = 0  # the fixed order the held-out set is drawn in, whatever data.seed is


class WindowSource(grain.sources.RandomAccessDataSource):
  """Non-overlapping windows of `length` + 1 tokens (each shares its last token with the next)
  over one or more 1-D token arrays; windows never cross array boundaries."""

  def __init__(self, arrays, length: int, vocab_size: int | None = None, names=None):
    self._arrays = list(arrays)
    self._length = length
    self._vocab_size = vocab_size  # when given, every window is checked to hold token ids
    self._names = list(names or [f'array {i}' for i in range(len(self._arrays))])
    counts = [max(0, (len(a) - 1) // length) for a in self._arrays]
    self._ends = np.cumsum(counts)

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getitem__(self, index: int) -> np.ndarray:
    which = int(np.searchsorted(self._ends, index, side='right'))
    start = (index - (self._ends[which - 1] if which else 0)) * self._length
    raw = np.asarray(self._arrays[which][start : start + self._length + 1])
    if self._vocab_size is not None and (raw.min() < 0 or raw.max() >= self._vocab_size):
      # Out-of-range ids would be clipped or wrap silently in the embedding gather and show up
      # as a NaN (or a wrong loss) steps later; stop here, naming the file and the place.
      raise ValueError(
          f'{self._names[which]}: tokens {start}..{start + self._length} hold ids in '
          f'[{raw.min()}, {raw.max()}], outside [0, model.vocab_size={self._vocab_size}); check '
          'config.data.token_dtype and the tokenizer that wrote the file.'
      )
    return raw.astype(np.int32)


class SyntheticSource(grain.sources.RandomAccessDataSource):
  """A fixed random Markov chain: each token is followed by one of `branching` successors, so the
  best achievable loss is ln(branching) nats. Record i depends only on (seed, i)."""

  def __init__(self, num_records: int, length: int, vocab_size: int, seed: int, branching: int = 2):
    self._n, self._length, self._vocab, self._seed = num_records, length, vocab_size, seed
    self.successors = np.random.default_rng(seed).integers(0, vocab_size, (vocab_size, branching))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> np.ndarray:
    rng = np.random.default_rng((self._seed, int(index)))
    choices = rng.integers(0, self.successors.shape[1], self._length)
    tokens = np.empty(self._length + 1, np.int32)
    tokens[0] = rng.integers(0, self._vocab)
    for j, choice in enumerate(choices):
      tokens[j + 1] = self.successors[tokens[j], choice]
    return tokens


@functools.lru_cache(maxsize=2)
def stdlib_corpus(eval_fraction: float) -> tuple[np.ndarray, np.ndarray, str]:
  """(train bytes, eval bytes, fingerprint) of this interpreter's standard-library sources."""
  root = sysconfig.get_paths()['stdlib']
  paths = []
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in ('site-packages', '__pycache__'))
    paths += [os.path.join(directory, f) for f in sorted(files) if f.endswith('.py')]
  splits = {True: [], False: []}
  digest = hashlib.sha256()
  for path in sorted(paths):
    relative = os.path.relpath(path, root)
    with open(path, 'rb') as f:
      text = f.read().replace(bytes([DOCUMENT_SEPARATOR]), b'')
    held_out = zlib.crc32(relative.encode()) % 10_000 < eval_fraction * 10_000
    splits[held_out].append(text + bytes([DOCUMENT_SEPARATOR]))
    digest.update(relative.encode() + b'\0' + text)
  train, held = (np.frombuffer(b''.join(splits[k]), np.uint8) for k in (False, True))
  fingerprint = f'stdlib-py{sysconfig.get_python_version()}-{digest.hexdigest()[:16]}'
  return train, held, fingerprint


class RangedTokenFile:
  """A file of token ids where a pod keeps its corpus (`gs://...`, any fsspec filesystem), read
  where it lies: indexing reads just the requested ids with one ranged read, so a process reads
  only the windows it trains on and no host downloads the file. Raw .bin files hold ids of
  `dtype`; a .npy file's header gives its dtype and where the ids start."""

  def __init__(self, path: str, dtype: str):
    import fsspec  # pylint: disable=import-outside-toplevel  # installed with gcsfs ('.[gcs]')

    self.path = path
    self._fs, self._key = fsspec.core.url_to_fs(path)
    size = self._fs.size(self._key)
    self._offset, self.dtype = 0, np.dtype(dtype)
    if path.endswith('.npy'):
      header = io.BytesIO(self._fs.cat_file(self._key, 0, min(size, 65_536)))
      version = np.lib.format.read_magic(header)
      reader = {(1, 0): np.lib.format.read_array_header_1_0}.get(
          version, np.lib.format.read_array_header_2_0
      )
      shape, fortran, self.dtype = reader(header)
      if fortran and len(shape) > 1:
        raise ValueError(f'{path}: a Fortran-ordered array; save it C-ordered (np.save default)')
      self._offset = header.tell()
    self.nbytes = size - self._offset
    if self.nbytes % self.dtype.itemsize:
      raise ValueError(
          f'{path} has {self.nbytes} bytes of ids, not a whole number of {self.dtype.itemsize}-'
          'byte ids; set config.data.token_dtype to the dtype the file was written with'
      )
    self.size = self.nbytes // self.dtype.itemsize

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self[int(key) : int(key) + 1][0]
    start, stop, step = key.indices(self.size)
    if step != 1 or stop <= start:
      return np.zeros(0, self.dtype) if stop <= start else self[start:stop][::step]
    item = self.dtype.itemsize
    data = self._fs.cat_file(self._key, self._offset + start * item, self._offset + stop * item)
    return np.frombuffer(data, self.dtype)


def _is_remote(path: str) -> bool:
  return '://' in path


def _file_size(path: str) -> int:
  if _is_remote(path):
    import fsspec  # pylint: disable=import-outside-toplevel

    fs, key = fsspec.core.url_to_fs(path)
    return fs.size(key)
  return os.path.getsize(path)


RANGE_CHECK_CHUNKS = 64  # evenly spaced chunks of a token file whose ids are checked at open
RANGE_CHECK_CHUNK = 16_384  # ids per chunk: files up to 1M ids are checked whole


def _load_token_file(path: str, dtype: str, vocab_size: int, min_ids: int, field: str):
  """A file of token ids, memory-mapped, refused (naming `field` and the file) when it cannot be
  read, holds no integers, is shorter than `min_ids`, or a sample of its ids falls outside
  [0, vocab_size). Windows read later are checked whole (WindowSource)."""
  from ling_jax.config import ConfigError  # pylint: disable=import-outside-toplevel

  try:
    if _is_remote(path):
      array = RangedTokenFile(path, dtype)
      if not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(
            f'config.{field}: {path} holds {array.dtype} values, not integer token ids; '
            "save the tokenizer's ids (e.g. np.uint16 or np.int32)."
        )
    elif path.endswith('.npy'):
      array = np.load(path, mmap_mode='r')  # no pickles: object arrays are refused here
      if not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(
            f'config.{field}: {path} holds {array.dtype} values, not integer token ids; '
            "save the tokenizer's ids (e.g. np.uint16 or np.int32)."
        )
      array = array.reshape(-1)
    else:
      itemsize = np.dtype(dtype).itemsize
      size = os.path.getsize(path)
      if size % itemsize:
        raise ConfigError(
            f'config.data.token_dtype={dtype!r}: {path} has {size} bytes, not a whole number of '
            f'{itemsize}-byte ids; set the dtype the file was written with.'
        )
      array = np.memmap(path, dtype=np.dtype(dtype), mode='r') if size else np.zeros(0, dtype)
  except ConfigError:
    raise
  except (OSError, ValueError, EOFError, ImportError) as error:  # missing, a folder, a broken
    # .npy header, or no filesystem for the path's scheme (gs:// needs gcsfs: '.[gcs]')
    raise ConfigError(
        f'config.{field}: {path} cannot be read as token ids ({type(error).__name__}: {error}).'
    ) from error
  if array.size < min_ids:
    raise ConfigError(
        f'config.{field}: {path} holds {array.size} token ids, fewer than one window of '
        f'train.seq_len + 1 = {min_ids}; leave it out or shorten train.seq_len.'
    )
  starts = np.unique(
      np.linspace(0, max(0, array.size - RANGE_CHECK_CHUNK), RANGE_CHECK_CHUNKS).astype(np.int64)
  )
  checked, bad, first = 0, 0, None
  for start in starts:
    ids = np.asarray(array[start : start + RANGE_CHECK_CHUNK])
    outside = (ids < 0) | (ids >= vocab_size)
    checked += ids.size
    bad += int(outside.sum())
    if first is None and outside.any():
      first = int(start + np.argmax(outside))
  if bad:
    raise ConfigError(
        f'config.{field}: {path} holds ids outside [0, model.vocab_size={vocab_size}) at {bad} '
        f'of {checked} checked positions (the first at token {first}, id {int(array[first])}); '
        'check config.data.token_dtype and the tokenizer that wrote the file.'
    )
  return array


def _file_fingerprint(paths) -> str:
  digest = hashlib.sha256()
  for path in paths:
    digest.update(f'{path}:{_file_size(path)}'.encode())
  return digest.hexdigest()[:16]


class Dataset:
  """Train and eval pipelines of one config, with the fingerprint of the data behind them."""

  def __init__(self, config):
    d, length = config.data, config.train.seq_len
    self.seq_len = length
    if d.source == 'stdlib':
      train, held, self.fingerprint = stdlib_corpus(d.eval_fraction)
      self.train_source, self.eval_source = WindowSource([train], length), WindowSource(
          [held], length
      )
    elif d.source == 'synthetic':
      n_eval = max(64, int(65_536 * d.eval_fraction))
      self.train_source = SyntheticSource(65_536, length, config.model.vocab_size, d.seed)
      # Same chain (seed), records past the training range: held out, same distribution.
      self.eval_source = grain.MapDataset.source(
          SyntheticSource(65_536 + n_eval, length, config.model.vocab_size, d.seed)
      )[65_536:]
      self.fingerprint = f'synthetic-v{config.model.vocab_size}-s{d.seed}'
    elif d.source == 'tokens':
      vocab = config.model.vocab_size
      opened = {
          field: [_load_token_file(p, d.token_dtype, vocab, length + 1, field) for p in paths]
          for field, paths in (('data.paths', d.paths), ('data.eval_paths', d.eval_paths))
      }
      self.train_source = WindowSource(opened['data.paths'], length, vocab, d.paths)
      self.eval_source = WindowSource(opened['data.eval_paths'], length, vocab, d.eval_paths)
      self.fingerprint = f'tokens-{_file_fingerprint(list(d.paths) + list(d.eval_paths))}'
    else:
      self.train_source = grain.sources.ArrayRecordDataSource(list(d.paths))
      self.eval_source = (
          grain.sources.ArrayRecordDataSource(list(d.eval_paths)) if d.eval_paths else None
      )
      self.fingerprint = f'array_record-{_file_fingerprint(list(d.paths) + list(d.eval_paths))}'
    self._config = config
    if len(self.train_source) == 0:
      from ling_jax.config import ConfigError

      raise ConfigError(
          f'config.data: source {d.source!r} holds no training window of '
          f'train.seq_len + 1 = {length + 1} tokens; add data or shorten seq_len.'
      )

  def _batched(self, source, batch_size: int, seed: int | None, repeat: bool) -> grain.IterDataset:
    d = self._config.data
    per_process = batch_size // jax.process_count()
    ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
    if d.source == 'array_record':
      dtype = np.dtype(d.token_dtype)
      ds = ds.map(lambda record: {'tokens': np.frombuffer(record, dtype).astype(np.int32)})
    if seed is not None:
      ds = ds.shuffle(seed=seed)
    if repeat:
      ds = ds.repeat()
    ds = ds[jax.process_index() :: jax.process_count()]
    if d.source == 'array_record':
      iter_ds = grain.experimental.ConcatThenSplitIterDataset(
          ds.to_iter_dataset(), length_struct={'tokens': self.seq_len + 1}
      )
      return iter_ds.map(lambda x: x['tokens']).batch(per_process, drop_remainder=True)
    return ds.batch(per_process, drop_remainder=True).to_iter_dataset()

  def train_iterator(self):
    """Endless shuffled batches [batch_size / process_count, seq_len + 1]; checkpointable."""
    t = self._config.train
    return iter(self._batched(self.train_source, t.batch_size, self._config.data.seed, True))

  def eval_batches(self) -> list[np.ndarray]:
    """The fixed held-out set, the same at every evaluation and for every run of a data source.

    With `train.eval_sequences` set: that many windows drawn once in a fixed shuffled order (so
    the set spans the held-out files) in batches of `train.eval_batch_size` (or batch_size), the
    same whatever the run's training batch; otherwise the first `train.eval_batches` x
    `batch_size` windows in file order, in batches of `train.eval_batch_size` (or batch_size).
    """
    t = self._config.train
    if self.eval_source is None or len(self.eval_source) == 0:
      return []
    if not t.eval_sequences:
      # The first eval_batches x batch_size windows, in batches of the eval batch: a smaller eval
      # batch (a microbatched layout's, ling_jax.layout) splits the same windows.
      size = config_lib.eval_batch_size(t)
      count = -(-t.eval_batches * t.batch_size // size)
      batches = []
      for batch in self._batched(self.eval_source, size, None, True):
        batches.append(batch)
        if len(batches) == count:
          break
      return batches
    if self._config.data.source != 'array_record' and len(self.eval_source) < t.eval_sequences:
      from ling_jax.config import ConfigError

      raise ConfigError(
          f'config.train.eval_sequences={t.eval_sequences}: the held-out data holds '
          f'{len(self.eval_source)} windows of {self.seq_len + 1} tokens; lower it '
          'or hold out more data (data.eval_fraction).'
      )
    size = config_lib.eval_batch_size(t)
    # Only the batches the set needs are read, not the whole held-out split.
    return list(
        itertools.islice(
            self._batched(self.eval_source, size, EVAL_ORDER_SEED, False), t.eval_sequences // size
        )
    )
