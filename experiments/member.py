"""The record of a study's run, shared by the configs that list runs and the tools that run them.

A study config (configs/*.py) lists `Member`s; `experiments.sweep` trains them, `--list` and
`experiments.compile` show them. A `Group` is one budget row of the paper's ablation tables
(arXiv 2507.17702 Tables 7-11): a backbone with its budget, learning rate and batch, from which
the members of that row are made.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a study: config overrides (dotted keys) on top of the study's base config."""

  name: str
  overrides: dict[str, Any]
  group: str = ''  # members of a group share a budget (and, by design, M)
  provisional: str = ''  # why its design is not final yet (a law it needs is not fitted)


def seed_replicate(member: Member, seed: int) -> Member:
  """`member` trained again with another initialisation and data order: `<name>_seed<seed>` in
  the same group. Fits treat runs that differ only in seed as one design (fitting.el)."""
  overrides = dict(member.overrides, **{'train.seed': seed, 'data.seed': seed})
  return dataclasses.replace(member, name=f'{member.name}_seed{seed}', overrides=overrides)


@dataclasses.dataclass(frozen=True)
class Group:
  """A backbone and its training budget and hyperparameters: one row of Tables 7-11."""

  index: int
  n_layers: int
  d_model: int
  n_heads: int
  n_kv_heads: int
  budget: float  # FLOPs; 0 at smoke scale, which trains a fixed number of tokens
  learning_rate: float
  batch_size: int  # sequences
  provisional: str = ''  # why the design is not final (a local law it needs is not fitted)
  slice: str = ''  # paper scale: the slice its runs are laid out for (configs.common.paper_slice)

  @property
  def name(self) -> str:
    return f'g{self.index}'

  def member(self, suffix: str, **model) -> Member:
    """The member `<group>_<suffix>` of this group with these model fields."""
    return Member(f'{self.name}_{suffix}', self.overrides(**model), self.name, self.provisional)

  def overrides(self, **model) -> dict:
    out = {
        'model.n_layers': self.n_layers,
        'model.d_model': self.d_model,
        'model.n_heads': self.n_heads,
        'model.n_kv_heads': self.n_kv_heads,
        'train.learning_rate': self.learning_rate,
        'train.batch_size': self.batch_size,
    }
    if self.budget:
      out['train.compute_budget'] = self.budget
    if self.slice:
      out['mesh.slice'] = self.slice
    out.update({f'model.{k}': v for k, v in model.items()})
    return out

  @classmethod
  def of_design(cls, index: int, design, lr: float, sequences: int, provisional: str = ''):
    """The group with the backbone of a `fitting.model_design.Design` at its budget."""
    f = design.model
    return cls(
        index,
        f['n_layers'],
        f['d_model'],
        f['n_heads'],
        f['n_kv_heads'],
        design.compute_budget,
        lr,
        sequences,
        provisional,
    )
