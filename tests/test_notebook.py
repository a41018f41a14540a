"""The Colab notebook executes headless, cell by cell, and no cell fails."""

import json
import os

import matplotlib

NOTEBOOK = os.path.join(
    os.path.dirname(__file__), '..', 'fitting', 'notebooks', 'reproduce_el_laws.ipynb'
)


def test_notebook_runs(tmp_path, monkeypatch):
  matplotlib.use('Agg')
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with open(NOTEBOOK) as f:
    cells = [c for c in json.load(f)['cells'] if c['cell_type'] == 'code']
  assert any('n_bootstrap=100' in ''.join(c['source']) for c in cells)  # what is shortened
  namespace = {}
  for i, cell in enumerate(cells):
    # Fewer bootstrap draws than a reader's run: the cells' code is under test, not the intervals.
    source = ''.join(cell['source']).replace('n_bootstrap=100', 'n_bootstrap=20')
    try:
      exec(compile(source, f'cell {i}', 'exec'), namespace)  # pylint: disable=exec-used
    except Exception as error:
      raise AssertionError(f'notebook cell {i} failed: {error!r}\n{source}') from error
  assert abs(namespace['el'] - 7.24) < 0.01
  unified = namespace['unified']
  lo, hi = unified['intervals']['d']
  assert lo < -0.0761 < hi
