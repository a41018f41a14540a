"""Figures in the paper's style (matplotlib, Agg backend: works headless and in Colab)."""

from __future__ import annotations

import collections

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def _save(fig, path):
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return str(path)


def frontier(cost, loss, law, theta, path, label='dense'):
  fig, ax = plt.subplots(figsize=(5, 4))
  ax.scatter(cost, loss, label=f'{label} runs')
  grid = np.geomspace(min(cost) / 2, max(cost) * 4, 100)
  ax.plot(grid, law.predict(theta, dict(C=grid)), label=law.formula.split(';')[0])
  ax.set(xscale='log', xlabel='C (FLOPs)', ylabel='final loss', title=f'{label} loss frontier')
  ax.legend(fontsize=7)
  return _save(fig, path)


def loss_vs_granularity(rows, loss_key, path, fits=None):
  """Loss against G per budget group, with fitted U-curves (quadratic in log2 G)."""
  fig, ax = plt.subplots(figsize=(5, 4))
  groups = collections.defaultdict(list)
  for r in rows:
    groups[r.get('group') or f"{r['C']:.2g}"].append(r)
  for name, members in sorted(groups.items()):
    g = np.array([m['G'] for m in members])
    loss = np.array([m[loss_key] for m in members])
    order = np.argsort(g)
    points = ax.plot(g[order], loss[order], 'o', label=f'{name}')
    if len(g) >= 3:
      c = np.polyfit(np.log2(g), loss, 2)
      grid = np.geomspace(g.min(), g.max(), 50)
      ax.plot(grid, np.polyval(c, np.log2(grid)), color=points[0].get_color())
  ax.set(xscale='log', xlabel='granularity G', ylabel='final loss', title='loss vs G')
  ax.legend(fontsize=6)
  return _save(fig, path)


def el_vs_activation(points, path):
  fig, ax = plt.subplots(figsize=(5, 4))
  groups = collections.defaultdict(list)
  for p in points:
    groups[f"{p['C']:.2g}"].append(p)
  for name, members in sorted(groups.items(), key=lambda kv: float(kv[0])):
    a = np.array([m['A'] for m in members])
    el = np.array([m['EL'] for m in members])
    order = np.argsort(a)
    ax.plot(a[order], el[order], 'o-', label=f'C={name}')
  ax.set(xscale='log', yscale='log', xlabel='activation ratio A', ylabel='EL',
         title='EL vs A per budget')
  ax.legend(fontsize=6)
  return _save(fig, path)


def el_heatmap(el_fn, path, title='EL(A, C) at G = 12'):
  a = np.geomspace(0.005, 1, 60)
  c = np.geomspace(1e18, 1e23, 60)
  A, Cm = np.meshgrid(a, c)
  el = el_fn(A.ravel(), np.full(A.size, 12.0), Cm.ravel()).reshape(A.shape)
  fig, ax = plt.subplots(figsize=(5, 4))
  mesh = ax.pcolormesh(a, c, el, shading='auto', cmap='viridis')
  fig.colorbar(mesh, ax=ax, label='EL')
  ax.set(xscale='log', yscale='log', xlabel='activation ratio A', ylabel='C (FLOPs)', title=title)
  return _save(fig, path)


def isoflop(rows, loss_key, path, budget_key='budget'):
  fig, ax = plt.subplots(figsize=(5, 4))
  groups = collections.defaultdict(list)
  for r in rows:
    groups[r[budget_key]].append(r)
  for budget, members in sorted(groups.items()):
    m = np.array([r['M'] for r in members])
    loss = np.array([r[loss_key] for r in members])
    order = np.argsort(m)
    ax.plot(m[order], loss[order], 'o-', label=f'C={budget:.2g}')
  ax.set(xscale='log', xlabel='M (FLOPs/token)', ylabel='final loss', title='IsoFLOP profiles')
  ax.legend(fontsize=6)
  return _save(fig, path)


def hyperparameter_bands(rows, near, law_fits, path):
  fig, axes = plt.subplots(1, 2, figsize=(9, 4))
  for ax, key, fit in zip(axes, ('learning_rate', 'batch_tokens'), law_fits):
    ax.scatter([r['C'] for r in rows], [r[key] for r in rows], s=8, color='0.7', label='all runs')
    ax.scatter([r['C'] for r in near], [r[key] for r in near], s=14, label='within 0.25% of best')
    grid = np.geomspace(min(r['C'] for r in rows) / 2, max(r['C'] for r in rows) * 4, 50)
    k, e = fit.params['log_coefficient'], fit.params['exponent_C']
    ax.plot(grid, np.exp(k) * grid ** e, label=f'{np.exp(k):.3g} C^{e:.3f}')
    ax.set(xscale='log', yscale='log', xlabel='C (FLOPs)', ylabel=key)
    ax.legend(fontsize=7)
  return _save(fig, path)
