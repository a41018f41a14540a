"""Figures in the paper's style (matplotlib, Agg backend: works headless and in Colab)."""

from __future__ import annotations

import collections

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from fitting import el as el_lib
from fitting import hparams
from fitting import laws


def _save(fig, path):
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return str(path)


def _band(ax, law, result, covariate, grid, color):
  """The 95% band of a law's prediction over its bootstrap draws, where it has any."""
  draws = getattr(result, 'draws', None)
  if draws is None or not len(draws):
    return
  curves = np.array([law.predict(t, {covariate: grid}) for t in draws])
  lo, hi = np.nanpercentile(curves, [2.5, 97.5], axis=0)
  ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0, label='95% bootstrap band')


def frontier(cost, loss, law, result, path, loss_key='loss', label='dense', off=None, seeds=None):
  """Runs, the fitted frontier and its bootstrap band; the fitted range shaded off outside.
  `off`: (cost, loss) of runs a budget trained beside its frontier point, drawn hollow;
  `seeds`: (cost, loss) of each seed of a frontier point that is a mean over seeds, drawn small."""
  fig, ax = plt.subplots(figsize=(5, 4))
  has_off = off is not None and len(off[0]) > 0
  has_seeds = seeds is not None and len(seeds[0]) > len(cost)
  notes = ['frontier'] * has_off + ['mean over seeds'] * has_seeds
  ax.scatter(
      cost, loss, label=f'{label} runs' + (f' ({", ".join(notes)})' if notes else ''), zorder=3
  )
  if has_seeds:
    ax.scatter(*seeds, s=8, color='0.2', label='each seed', zorder=4)
  if has_off:
    ax.scatter(*off, facecolors='none', edgecolors='0.4', label='other size, same budget', zorder=3)
  grid = np.geomspace(min(cost) / 2, max(cost) * 4, 100)
  line = ax.plot(grid, law.predict(result.theta, dict(C=grid)), label=law.formula.split(';')[0])
  _band(ax, law, result, 'C', grid, line[0].get_color())
  for lo, hi in ((grid[0], min(cost)), (max(cost), grid[-1])):
    ax.axvspan(lo, hi, color='0.92', lw=0, zorder=0)
  ax.set(
      xscale='log',
      xlabel='C (FLOPs)',
      ylabel=loss_key,
      title=f'{label} loss frontier (grey: beyond the runs)',
  )
  ax.legend(fontsize=7)
  return _save(fig, path)


def loss_vs_granularity(rows, loss_key, path, noise_sd=0.0):
  """Loss against G per budget, each run with 1 SD of its noise (eval error and, for a single
  seed, `noise_sd`, the measured MoE seed SD), and a least-squares parabola in log2 G per budget
  (the loss-space form of Eq. 11's U, drawn to show the curvature the fit sees)."""
  fig, ax = plt.subplots(figsize=(5, 4))
  groups = collections.defaultdict(list)
  for r in rows:
    groups[r.get('group') or f"{r['C']:.2g}"].append(r)
  for i, (_, members) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0]['C'])):
    color = f'C{i % 10}'
    g = np.array([m['G'] for m in members], float)
    loss = np.array([m[loss_key] for m in members], float)
    sd = [el_lib.loss_noise_sd(m, noise_sd) for m in members]
    ax.errorbar(
        g,
        loss,
        yerr=sd,
        fmt='o',
        ms=4,
        capsize=2,
        color=color,
        label=f"C = {np.mean([m['C'] for m in members]):.2g} FLOPs",
    )
    if len(np.unique(g)) >= 3:
      c = np.polyfit(np.log2(g), loss, 2)
      grid = np.geomspace(g.min(), g.max(), 50)
      ax.plot(grid, np.polyval(c, np.log2(grid)), color=color, lw=1)
  ax.set(
      xscale='log',
      xlabel='granularity G',
      ylabel=loss_key,
      title='loss vs G per budget (1 SD; lines: parabola in log2 G)',
  )
  ticks = sorted({r['G'] for r in rows})
  ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.legend(fontsize=6)
  return _save(fig, path)


LABELS = {'A': 'activation ratio A', 'G': 'granularity G'}


def el_vs_factor(points, path, covariate, law=None, fits=None):
  """EL against one factor (A or G) per budget: 95% intervals, extrapolated points hollow (never
  fitted), and the fitted single-factor law (Eq. 10 or 11) of each budget group (`fits`: group ->
  params) over its points."""
  fig, ax = plt.subplots(figsize=(5, 4))
  groups = collections.defaultdict(list)
  for p in points:
    groups[p.get('group') or f"{p['C']:.2g}"].append(p)
  for i, (name, members) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0]['C'])):
    members = sorted(members, key=lambda m: m[covariate])
    color = f'C{i}'
    x = np.array([m[covariate] for m in members], float)
    el = np.array([m['EL'] for m in members])
    lo_hi = np.array([m.get('EL_interval') or (np.nan, np.nan) for m in members], float)
    extrapolated = np.array([bool(m.get('extrapolated')) for m in members])
    err = np.abs(lo_hi.T - el)
    ax.errorbar(x, el, yerr=err, fmt='none', capsize=2, lw=0.8, color=color)
    ax.scatter(
        x[~extrapolated],
        el[~extrapolated],
        color=color,
        s=16,
        zorder=3,
        label=f"C = {members[0]['C']:.2g} FLOPs",
    )
    ax.scatter(
        x[extrapolated], el[extrapolated], facecolors='none', edgecolors=color, s=16, zorder=3
    )
    if law is not None and fits and name in fits:
      grid = np.geomspace(x.min(), x.max(), 50)
      ax.plot(grid, law.predict(law.vector(fits[name]), {covariate: grid}), color=color, lw=1)
  ax.axhline(1.0, color='0.6', lw=0.8, ls='--')
  ax.set(
      xscale='log',
      yscale='log',
      xlabel=LABELS[covariate],
      ylabel='EL (FLOPs)',
      title=f'EL of each member vs {covariate} (95% intervals)\nlines: Eq. '
      f'{10 if covariate == "A" else 11} per budget; hollow: extrapolated, not fitted',
  )
  ax.title.set_fontsize(9)
  if covariate == 'G':  # the few granularities tried, labelled as numbers
    ticks = sorted({p['G'] for p in points})
    ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.legend(fontsize=6)
  return _save(fig, path)


def loss_by_group(points, path, x, xlabel, loss_key='loss'):
  """Each budget group's loss against a design factor on a linear axis (`x(point)`: the shared
  ratio S, the count of first dense layers), with each point's standard error (paper Fig. 7 and
  13): the factors that take the value 0, which a log axis cannot show."""
  fig, ax = plt.subplots(figsize=(5, 4))
  groups = collections.defaultdict(list)
  for p in points:
    groups[p.get('group') or f"{p['C']:.2g}"].append(p)
  for name, members in sorted(groups.items(), key=lambda kv: kv[1][0]['C']):
    members = sorted(members, key=x)
    ax.errorbar(
        [x(m) for m in members],
        [m['loss'] for m in members],
        yerr=[m.get('loss_stderr') or 0.0 for m in members],
        marker='o',
        ms=4,
        capsize=2,
        lw=1,
        label=f"{name}: C={members[0]['C']:.2g}",
    )
  ax.set(xlabel=xlabel, ylabel=loss_key, title=f'{loss_key} vs {xlabel} per budget group')
  ax.legend(fontsize=6)
  return _save(fig, path)


def el_heatmap(el_fn, path, title, c_range=(1e18, 1e23), points=()):
  """EL over (A, C) at G = 12 from `el_fn`, over `c_range` (FLOPs: the paper's by default, a
  fit's own budgets for a fitted law, so that the map shows no extrapolation); `title` says whose
  law it is; `points`, (A, C) pairs, the runs it was fitted to."""
  a = np.geomspace(0.005, 1, 60)
  c = np.geomspace(*c_range, 60)
  A, Cm = np.meshgrid(a, c)
  el = el_fn(A.ravel(), np.full(A.size, 12.0), Cm.ravel()).reshape(A.shape)
  fig, ax = plt.subplots(figsize=(5, 4))
  mesh = ax.pcolormesh(a, c, el, shading='auto', cmap='viridis')
  fig.colorbar(mesh, ax=ax, label='EL')
  if len(points):
    ax.scatter(*np.array(points, float).T, s=8, c='white', edgecolors='black', linewidths=0.4)
  ax.set(xscale='log', yscale='log', xlabel='activation ratio A', ylabel='C (FLOPs)', title=title)
  return _save(fig, path)


def isoflop(rows, loss_key, path, budget_key='budget', arm=None):
  """Left: each budget's IsoFLOP profile (runs with their eval standard error), its least-squares
  parabola in ln M and that parabola's minimum (paper Fig. 3). Right: the minima against C with
  the fitted M_opt = k C^a (`arm`: fitting.allocation.fit_allocation's report of this arm)."""
  from fitting import allocation  # pylint: disable=import-outside-toplevel

  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
  groups = collections.defaultdict(list)
  for r in rows:
    groups[r[budget_key]].append(r)
  for i, (budget, members) in enumerate(sorted(groups.items())):
    color = f'C{i % 10}'
    m = np.array([r['M'] for r in members], float)
    loss = np.array([r[loss_key] for r in members], float)
    stderr = [float(r.get('eval_loss_stderr') or 0.0) for r in members]
    left.errorbar(
        m, loss, yerr=stderr, fmt='o', ms=3, capsize=2, color=color, label=f'C = {budget:.2g} FLOPs'
    )
    if len(np.unique(m)) < 3:
      continue
    (c2, c1, c0), center = allocation._parabola(np.log(m), loss)  # pylint: disable=protected-access
    grid = np.geomspace(m.min(), m.max(), 60)
    left.plot(grid, np.polyval((c2, c1, c0), np.log(grid) - center), color=color, lw=1)
    try:
      best = allocation.isoflop_minimum(m, loss, budget)
    except allocation.NoMinimum:
      continue
    left.plot(best, np.polyval((c2, c1, c0), np.log(best) - center), 'x', color=color, ms=8, mew=2)
  left.set(
      xscale='log',
      xlabel='M (FLOPs/token)',
      ylabel=loss_key,
      title='IsoFLOP profiles, parabolas in ln M, minima (x)',
  )
  left.legend(fontsize=6)
  if arm and 'M_opt' in arm:
    budgets, minima = np.array(arm['budgets'], float), np.array(arm['minima'], float)
    right.scatter(budgets, minima, color='k', zorder=3, label='parabola minima')
    fit = arm['M_opt']
    grid = np.geomspace(budgets.min() / 2, budgets.max() * 2, 50)
    interval = fit['fit'].get('intervals', {}).get('exponent_C')
    label = f"M_opt = {fit['coefficient']:.3g} C^{fit['exponent']:.3f}" + (
        f' (a in [{interval[0]:.2f}, {interval[1]:.2f}])' if interval else ''
    )
    right.plot(grid, fit['coefficient'] * grid ** fit['exponent'], label=label)
    for skipped in arm.get('skipped_budgets', []):
      right.axvline(skipped['budget'], color='0.7', ls=':', lw=1)
    right.set(
        xscale='log',
        yscale='log',
        xlabel='C (FLOPs)',
        ylabel='M_opt (FLOPs/token)',
        title='M_opt against C (dotted: no minimum)',
    )
    right.legend(fontsize=7)
  else:
    right.set_axis_off()
    right.text(0.5, 0.5, 'no M_opt law: fewer than 2 budgets with a minimum', ha='center')
  return _save(fig, path)


def hyperparameter_bands(rows, near, law_fits, path, left_out=None):
  """Learning rate and batch of every run against C, the near-optimal ones marked (hollow where
  their budget's grid located no optimum and the law leaves it out: `left_out`, {target:
  {budget: why}}), the fitted power laws with their bootstrap bands (paper Fig. 2, right)."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 4))
  for ax, key, fit in zip(axes, ('learning_rate', 'batch_tokens'), law_fits):
    chosen = {id(r) for r in near}
    rest = [r for r in rows if id(r) not in chosen]
    ax.scatter([r['C'] for r in rest], [r[key] for r in rest], s=8, color='0.7', label='other runs')
    out = (left_out or {}).get(key, {})
    kept = [r for r in near if hparams.group_label((r['budget'],)) not in out]
    dropped = [r for r in near if hparams.group_label((r['budget'],)) in out]
    ax.scatter([r['C'] for r in kept], [r[key] for r in kept], s=14, label='within 0.25% of best')
    if dropped:
      ax.scatter(
          [r['C'] for r in dropped],
          [r[key] for r in dropped],
          s=14,
          facecolors='none',
          edgecolors='C0',
          label='budget left out: no optimum located',
      )
    ax.set(xscale='log', yscale='log', xlabel='C (FLOPs)', ylabel=key)
    if isinstance(fit, str):  # not fitted: the runs alone, and why
      ax.set_title('no law: the optimum is located at fewer than 2 budgets', fontsize=8)
      ax.legend(fontsize=7)
      continue
    grid = np.geomspace(min(r['C'] for r in rows) / 2, max(r['C'] for r in rows) * 4, 50)
    law = laws.log_linear(f'{key}_law', ['C'], key)  # the form fitting.hparams fits
    k, e = fit.params['log_coefficient'], fit.params['exponent_C']
    line = ax.plot(grid, law.predict(fit.theta, dict(C=grid)), label=f'{np.exp(k):.3g} C^{e:.3f}')
    _band(ax, law, fit, 'C', grid, line[0].get_color())
    ax.set(xscale='log', yscale='log', xlabel='C (FLOPs)', ylabel=key)
    ax.legend(fontsize=7)
  return _save(fig, path)


def hyperparameter_landscape(rows, loss_key, path):
  """Loss against learning rate, one panel per budget and one line per batch (paper Fig. 2,
  left): where the near-optimal band sits, and how flat it is."""
  budget_of = lambda r: r.get('budget') or r['C']  # a budget's runs differ in C by rounding
  budgets = sorted({budget_of(r) for r in rows})
  fig, axes = plt.subplots(1, len(budgets), figsize=(3.4 * len(budgets), 3.4), squeeze=False)
  for ax, budget in zip(axes[0], budgets):
    members = [r for r in rows if budget_of(r) == budget]
    best = min(r[loss_key] for r in members)
    for batch in sorted({r['batch_tokens'] for r in members}):
      line = sorted(
          (r['learning_rate'], r[loss_key]) for r in members if r['batch_tokens'] == batch
      )
      ax.plot(*zip(*line), 'o-', ms=3, label=f'batch {batch:.0f} tokens')
    ax.axhspan(best, best * 1.0025, color='0.85', lw=0, label='within 0.25% of best')
    ax.set(xscale='log', xlabel='peak learning rate', ylabel=loss_key, title=f'C = {budget:.2g}')
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels would overlap
    ax.legend(fontsize=6)
  return _save(fig, path)
