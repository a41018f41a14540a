"""Eight fake CPU devices for every test; must run before anything imports JAX.

The tests build many trainers whose jitted programs are identical (a run, its resumed
twin, the same run on another mesh, subprocesses of the command line). JAX's persistent
compilation cache, in a folder fresh for each session, compiles each such program once:
it keys on the program and the compiler's version and flags, so no test can see a stale
entry, and a clean session still compiles everything it runs once.

The tests' programs are tiny and compiled far more often than they run: LLVM's backend
optimizations (XLA's default level) cost more than they save, and level 0 takes about 40% off
the JAX tests' time. Benchmarks and training are not run under this file and keep the default.
"""

import os
import shutil
import sys
import tempfile

os.environ.setdefault('JAX_NUM_CPU_DEVICES', '8')
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')  # as fitting/__init__.py: its fits run faster
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Compiling for GPUs that are not here (tests/test_compile.py): the CUDA plugin loads without
# checking for CUDA libraries.
os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
# libtpu locks itself to one process unless told otherwise; compiling needs no TPU to share.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0'
  ).strip()
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='ling_jax_test_xla_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pyproject.toml): one worker per core, at most 4; each holds a JAX runtime with
  eight fake devices, and the compilation cache above is shared between them."""
  del config
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return max(1, min(cores or 1, 4))


def pytest_unconfigure(config):
  """The session's cache goes with it (the controlling process only: workers share it)."""
  if _OWN_CACHE and not hasattr(config, 'workerinput'):
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
