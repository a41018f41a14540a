"""Results tables simulated from known laws on the paper's own design grid, for parameter
recovery tests and the notebook: a dense frontier, and MoE runs of Tables 7 and 8 whose EL
follows the unified law (paper Table 2 coefficients by default)."""

from __future__ import annotations

import numpy as np

from fitting import laws

# The six budgets of Tables 7-11 (Max training FLOPs).
BUDGETS = [2e18, 6e18, 2e19, 6e19, 2e20, 6e20]
TABLE_7_A = [(2 + 1) / (E + 1) for E in (2, 4, 8, 16, 32, 64, 128, 256)]  # E_a = 2, E_s = 1
TABLE_8_G = [2, 4, 6, 8, 12, 16]
TABLE_8_A = (2 + 1) / (64 + 1)  # G varies at fixed A
DENSE = dict(log_b=np.log(1.6), log_alpha=np.log(60.0), beta=0.08)


def dense_loss(C, params=DENSE):
  return laws.FRONTIER_WITH_FLOOR.predict(
      laws.FRONTIER_WITH_FLOOR.vector(params), dict(C=np.atleast_1d(np.asarray(C, float)))
  )


def power_dense(C, alpha=20.0, beta=0.05):
  return alpha * np.asarray(C, float) ** -beta


def table(
    noise: float = 0.002, seed: int = 0, el_coefficients=laws.PAPER_UNIFIED_EL, dense_budgets=None
) -> list[dict]:
  """Rows like experiments.collect writes: dense_baseline, activation_ratio, granularity; the loss
  under both keys (final_eval_loss, final_train_loss).

  MoE loss = dense loss at EL x C (the definition of EL), times lognormal noise; the dense arm
  follows a pure power frontier so that per-run EL inverts it exactly.
  """
  rng = np.random.default_rng(seed)
  rows = []
  for C in dense_budgets or np.geomspace(1e18, 1e23, 11):
    rows.append(
        dict(
            study='dense_baseline',
            member=f'dense_C{C:.0e}',
            status='finished',
            C=C,
            budget=C,
            A=1.0,
            G=None,
            n_experts=0,
            final_eval_loss=float(power_dense(C) * np.exp(noise * rng.normal())),
            wall_time_s=C / 1e15,
        )
    )
  designs = [('activation_ratio', A, 2.0) for A in TABLE_7_A] + [
      ('granularity', TABLE_8_A, G) for G in TABLE_8_G
  ]
  for study, A, G in designs:
    for C in BUDGETS:
      el = float(laws.unified_el(A, G, C, el_coefficients)[0])
      loss = float(power_dense(el * C) * np.exp(noise * rng.normal()))
      group = f'C{C:.0e}'
      rows.append(
          dict(
              study=study,
              member=f'{group}_A{A:.4f}_G{G:g}',
              status='finished',
              C=C,
              budget=C,
              A=A,
              A_routed=A,
              G=G,
              S=1 / 3,
              n_experts=64,
              final_eval_loss=loss,
              group=group,
              wall_time_s=1.3 * C / 1e15,
          )
      )
  for row in rows:
    row['final_train_loss'] = row['final_eval_loss']
  return rows
