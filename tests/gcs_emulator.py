"""A local Google Cloud Storage for tests: gcp-storage-emulator, with what tensorstore reads added.

tensorstore's `gcs` driver takes an object's generation from the `x-goog-generation` header of a
media download, which gcp-storage-emulator does not send (it reports the generation only in the
object's JSON); without it every read of a checkpoint fails with "Malformed StorageGeneration".
The emulator does not enforce `ifGenerationMatch` preconditions either, so it stands for a
bucket with one writer, which is what a run is.
"""

from __future__ import annotations

import contextlib
import os
import socket

from gcp_storage_emulator import exceptions
from gcp_storage_emulator import server as emulator
from gcp_storage_emulator.handlers import objects

BUCKET = 'ling-jax-test'


_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
  except exceptions.NotFound:
    return
  response['x-goog-generation'] = obj['generation']
  response['x-goog-metageneration'] = obj['metageneration']


# Both the download routes and `objects.get` (which serves ?alt=media, what tensorstore asks
# for) reach the download through these names.
objects.download = _download_with_generation
for _, methods in emulator.HANDLERS:
  for method, handler in methods.items():
    if handler is _download:
      methods[method] = _download_with_generation


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Emulator:
  """A GCS emulator on localhost keeping its objects in `data_dir`, so that it can be stopped
  (an outage) and started again with the same objects."""

  def __init__(self, data_dir: str, port: int | None = None):
    self.data_dir, self.port = data_dir, port or free_port()
    self.url = f'http://127.0.0.1:{self.port}'
    self._server = None

  def start(self) -> None:
    self._server = emulator.create_server(
        '127.0.0.1', self.port, in_memory=False, default_bucket=BUCKET, data_dir=self.data_dir
    )
    self._server.start()

  def stop(self) -> None:
    if self._server is not None:
      self._server.stop()
      self._server = None

  def environment(self) -> dict[str, str]:
    """What points gcsfs and tensorstore at this emulator instead of Google."""
    return {
        'STORAGE_EMULATOR_HOST': self.url,
        'TENSORSTORE_GCS_HTTP_URL': self.url,
        'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test',
        'NO_GCE_CHECK': 'True',  # google-auth: no probing for a metadata server
    }


@contextlib.contextmanager
def running(data_dir: str):
  e = Emulator(data_dir)
  e.start()
  saved = {k: os.environ.get(k) for k in e.environment()}
  os.environ.update(e.environment())
  try:
    yield e
  finally:
    e.stop()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
