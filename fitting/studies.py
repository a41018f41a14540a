"""The EL studies (arXiv 2507.17702 Sec. 4.1), each declared once: its fit, figures and table.

An EL study varies one MoE factor at fixed budgets and reads every run's Efficiency Leverage off
the dense frontier (fitting.fit). What differs between studies is declared here and nowhere
else: the single-factor law fitted per budget group (Eq. 10 in A, Eq. 11 in G), whether its
points enter the unified law (Eq. 13), the figures beyond the EL table, and how
docs/replication.md's per-study table labels and orders its rows. `fitting.fit`,
`fitting.study_tables` and the tests read `EL_STUDIES`.

Adding an EL study is its config file (`configs/<name>.py`, whose members carry the study's
name) and one `register(ELStudy(...))`: tests/test_fitting.py registers a planted one and fits
it end to end.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from fitting import laws


@dataclasses.dataclass(frozen=True)
class Figure:
  """A figure of one study, written beside report.json as `file`.

  kind: 'el_vs_factor' (EL of each member against `factor`, with the study's law), 'loss_vs_G'
    (loss against G per budget) or 'loss_by_group' (loss against `x(point)` per budget group, on
    a linear axis for factors that take 0).
  """

  kind: str
  file: str
  factor: str = ''
  x: Callable[[dict], float] | None = None
  xlabel: str = ''


@dataclasses.dataclass(frozen=True)
class Table:
  """The study's table in docs/replication.md: the first column's header, and each row's label
  and sort key from its results row."""

  header: str
  label: Callable[[dict], str]
  order: Callable[[dict], float]


@dataclasses.dataclass(frozen=True)
class ELStudy:
  """One EL study.

  name: the `study` column of its runs (its config file's name).
  law, factor: the law fitted to each budget group's EL against `factor` (a point key), if any.
  unified: whether its points enter the unified law (Eq. 13), which needs A, G and C to vary.
  figures, table: what it draws, and its table in docs/replication.md (None: no table).
  """

  name: str
  law: laws.Law | None = None
  factor: str = ''
  unified: bool = False
  figures: tuple[Figure, ...] = ()
  table: Table | None = None


EL_STUDIES: dict[str, ELStudy] = {}


def register(study: ELStudy) -> ELStudy:
  """Adds (or replaces) a study in EL_STUDIES."""
  if (study.law is None) != (not study.factor):
    raise ValueError(f'{study.name}: a single-factor law needs its factor, and a factor its law.')
  EL_STUDIES[study.name] = study
  return study


def single_factor(name: str) -> tuple[laws.Law, str] | None:
  """(law, factor) of a study fitted per budget group, else None."""
  study = EL_STUDIES.get(name)
  return (study.law, study.factor) if study and study.law else None


def _el_figure(factor: str) -> Figure:
  return Figure('el_vs_factor', f'el_vs_{factor}.png', factor=factor)


register(
    ELStudy(
        'activation_ratio',
        law=laws.EL_ACTIVATION,
        factor='A',
        unified=True,
        figures=(_el_figure('A'),),
        table=Table(
            'E (A, A routed)',
            lambda r: f'{int(r["n_experts"])} ({r["A"]:.1%}, {r["A_routed"]:.1%})',
            lambda r: r['n_experts'],
        ),
    )
)
register(
    ELStudy(
        'granularity',
        law=laws.EL_GRANULARITY,
        factor='G',
        unified=True,
        figures=(Figure('loss_vs_G', 'loss_vs_G.png'), _el_figure('G')),
        table=Table(
            'G (expert width)', lambda r: f'{r["G"]:g} (2 d_model / {r["G"]:g})', lambda r: r['G']
        ),
    )
)
register(
    ELStudy(
        'shared_experts',
        figures=(
            Figure('loss_by_group', 'loss_vs_S.png', x=lambda p: p['S'], xlabel='shared ratio S'),
        ),
        table=Table(
            'E_a, E_s (S)',
            lambda r: f'{int(r["top_k"])}, {int(r["n_shared"])} ({r["S"]:.1%})',
            lambda r: r['S'],
        ),
    )
)
register(
    ELStudy(
        'dense_layers',
        figures=(
            Figure(
                'loss_by_group',
                'loss_vs_dense_layers.png',
                x=lambda p: int(p['family'].removeprefix('dense')),
                xlabel='first dense layers',
            ),
        ),
        table=Table(
            'first dense layers (of the layers in the column)',
            lambda r: f'{int(r["num_dense_layers"])}',
            lambda r: r['num_dense_layers'],
        ),
    )
)
register(ELStudy('attention_ratio'))
