"""The Colab notebook executes headless, cell by cell, and no cell fails."""

import json
import os

import matplotlib
import numpy as np

from fitting import replication

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
  # Section 3 refits a committed study from its committed results table: every fitted law's
  # point estimate must be the committed report's (the fit is deterministic on one processor;
  # across processors to replication.REFIT_RTOL; intervals resample).
  if os.path.isdir(os.path.join('results', 'local')):
    study = namespace['study']
    with open(os.path.join('results', 'local', study, 'report.json')) as f:
      committed = _fitted_params(json.load(f)['studies'][study])
    assert committed, f'no fitted law in the committed {study} report'
    refit = _fitted_params(namespace['refit']['studies'][study])
    assert refit.keys() == committed.keys()
    for path, params in committed.items():
      assert refit[path].keys() == params.keys(), path
      for name, value in params.items():
        np.testing.assert_allclose(
            refit[path][name], value, rtol=replication.REFIT_RTOL, err_msg=f'{path} {name}'
        )


def _fitted_params(tree, path=()):
  """{path: params} of every fitted law (a dict with 'law' and 'params') in a report tree."""
  if not isinstance(tree, dict):
    return {}
  if 'law' in tree and 'params' in tree:
    return {path: tree['params']}
  found = {}
  for key, value in tree.items():
    found.update(_fitted_params(value, path + (key,)))
  return found
