"""The packages' layering: configs and fitting start no JAX, ling_jax never imports fitting,
and no module imports itself back through others."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('ling_jax', 'configs', 'experiments', 'fitting', 'benchmarks')


def _modules() -> dict[str, str]:
  """Module name -> file, for every module of the repository's packages."""
  out = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith('.py'):
          rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, '.')
          out[rel.removesuffix('.__init__')] = os.path.join(folder, name)
  return out


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """The repository modules a file imports at module level or inside functions."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
    else:
      continue
    for name in names:
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name:
        found.add(name)
  return found


def _printed_by(code: str) -> str:
  """What `code` prints, run in a fresh interpreter at the repository's root."""
  out = subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True
  )
  return out.stdout.strip()


def _graph():
  modules = _modules()
  return {m: _imports(path, modules) - {m} for m, path in modules.items()}


def test_no_module_imports_itself_back():
  graph = _graph()
  state: dict[str, int] = {}  # 1: on the current path, 2: done

  def visit(module, path):
    state[module] = 1
    for target in sorted(graph[module]):
      if state.get(target) == 1:
        cycle = path[path.index(target) :] + [target]
        raise AssertionError('import cycle: ' + ' -> '.join(cycle))
      if target not in state:
        visit(target, path + [target])
    state[module] = 2

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])


def test_packages_import_in_one_direction():
  """ling_jax is the bottom; fitting never reaches the trainer or experiments."""
  graph = _graph()
  forbidden = {
      'ling_jax': ('fitting', 'configs', 'experiments', 'benchmarks'),
      'fitting': (
          'configs',
          'experiments',
          'benchmarks',
          'ling_jax.train',
          'ling_jax.model',
          'ling_jax.moe',
      ),
  }
  wrong = [
      f'{m} imports {t}'
      for m, targets in graph.items()
      for t in targets
      for bad in forbidden.get(m.split('.')[0], ())
      if t == bad or t.startswith(bad + '.')
  ]
  assert not wrong, wrong
  # The check itself sees edges: configs import fitting's model designs.
  assert 'fitting.model_design' in graph['configs.common']


@pytest.mark.parametrize(
    'package',
    [
        'configs',
        'fitting',
        'experiments.sweep',
        'experiments.listing',
        'experiments.collect',
        'experiments.cost',
    ],
)
def test_no_jax_on_import(package):
  """Loading a study config or fitting a law never starts JAX (Colab fits, --list)."""
  names = sorted(m for m in _modules() if m == package or m.startswith(package + '.'))
  names = [n for n in names if not n.endswith('__main__')]
  code = (
      'import importlib, sys\n'
      f'for name in {names!r}:\n'
      '  importlib.import_module(name)\n'
      "print(sorted(k for k in ('jax', 'flax', 'optax', 'orbax') if k in sys.modules))"
  )
  printed = _printed_by(code)
  assert printed == '[]', (names, printed)


def test_importing_a_config_reads_no_file():
  """A config is a pure function of its argument: importing every config module opens no file
  (the local protocol reads its committed fits when a local sweep is designed, not before)."""
  names = sorted(m for m in _modules() if m.startswith('configs.'))
  code = (
      'import builtins, importlib, os\n'
      'opened = []\n'
      'real_open = builtins.open\n'
      'builtins.open = lambda *a, **k: opened.append(a[0]) or real_open(*a, **k)\n'
      f'for name in {names!r}:\n'
      '  importlib.import_module(name)\n'
      'print([p for p in opened if "results" in str(p) or str(p).endswith((".csv", ".json"))])\n'
  )
  printed = _printed_by(code)
  assert printed == '[]', printed


def test_configs_do_not_import_the_sweep_runner():
  """Configs and the tools that run them share the member record, not each other's code."""
  graph = _graph()
  for module, targets in graph.items():
    if module.startswith('configs.'):
      assert 'experiments.sweep' not in targets, module
