"""What a run costs on the CPU the `local` studies run on: a step-time model fitted to measurements.

Pure Python (no JAX), for `--list`. One optimizer step of a shape takes

  t = c_step + c_layer * L + (dense matmul FLOPs) / r_dense + (attention-score FLOPs) / r_scores
      + (routed-expert FLOPs) / r_experts + c_row * (dispatched rows) + c_expert * (E * L_moe)
      + c_param * (parameters)

seconds, with every FLOP count per step in the hardware convention (ling_jax.flops), and the
optimizer's per-parameter work, which for an MoE grows with all its experts, not the active ones.
The coefficients are fitted (non-negative least squares on relative error) to the step times
`python -m benchmarks.local_shapes --fit_cost_model` measures at the local studies' shapes, and
kept in cost_model.json beside this file with the date and machine they were measured on. A run
adds a fixed start-up (data, compilation) and its evaluations (a forward pass is a third of a step).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ling_jax import flops

MODEL_FILE = os.path.join(os.path.dirname(__file__), 'cost_model.json')
FEATURES = (
    'step',
    'layers',
    'dense_flops',
    'score_flops',
    'expert_flops',
    'dispatched_rows',
    'expert_layers',
    'parameters',
)


def features(arch: flops.Architecture, batch_size: int, seq_len: int) -> dict[str, float]:
  """The model's covariates of one optimizer step of `batch_size` x `seq_len` tokens."""
  tokens = batch_size * seq_len
  hardware = flops.hardware_flops_per_token(arch)
  scores = 3 * arch.n_layers * 4 * seq_len * arch.n_heads * arch.hd / 2
  experts = 3 * arch.num_moe_layers * 6 * arch.d_model * arch.top_k * arch.d_expert
  return dict(
      step=1.0,
      layers=float(arch.n_layers),
      dense_flops=tokens * (hardware - scores - experts),
      score_flops=tokens * scores,
      expert_flops=tokens * experts,
      dispatched_rows=float(tokens * arch.top_k * arch.num_moe_layers),
      expert_layers=float(arch.n_experts * arch.num_moe_layers),
      # AdamW reads and writes every parameter each step, routed experts included.
      parameters=float(flops.total_params(arch)),
  )


def fit(rows: list[dict], seconds: list[float]) -> dict:
  """Non-negative coefficients minimising the relative error of the predicted step times."""
  from scipy import optimize  # pylint: disable=import-outside-toplevel

  X = np.array([[r[k] for k in FEATURES] for r in rows], float)
  y = np.asarray(seconds, float)
  scale = X.max(axis=0)
  scale[scale == 0] = 1.0
  coef, _ = optimize.nnls((X / scale) / y[:, None], np.ones_like(y))
  return dict(
      coefficients=dict(zip(FEATURES, (coef / scale).tolist())),
      startup_s=STARTUP_S,
      eval_forward_fraction=1 / 3,
  )


STARTUP_S = 15.0  # data, model init, compilation of the train and eval steps


def load(path: str = MODEL_FILE) -> dict:
  with open(path) as f:
    return json.load(f)


def save(model: dict, path: str = MODEL_FILE) -> None:
  import datetime  # pylint: disable=import-outside-toplevel
  import platform  # pylint: disable=import-outside-toplevel

  model = dict(
      model,
      measured=datetime.date.today().isoformat(),
      machine=f'{platform.machine()}, {os.cpu_count()} cores',
  )
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(model, f, indent=1)
  os.replace(tmp, path)


def predict_seconds_per_step(model: dict, row: dict) -> float:
  return float(sum(model['coefficients'][k] * row[k] for k in FEATURES))


def run_seconds(model: dict, arch: flops.Architecture, train_cfg, steps: int) -> float:
  """Predicted wall seconds of a whole run here: start-up, steps and evaluations (a forward pass
  over each periodic eval's sequences, and over the whole fixed set at the end)."""
  t = train_cfg
  step = predict_seconds_per_step(model, features(arch, t.batch_size, t.seq_len))
  per_token = step / (t.batch_size * t.seq_len)
  eval_batch = getattr(t, 'eval_batch_size', 0) or t.batch_size
  periodic = (steps - 1) // t.eval_every * t.eval_batches * eval_batch
  final = getattr(t, 'eval_sequences', 0) or t.eval_batches * t.batch_size
  eval_s = (periodic + final) * t.seq_len * per_token * model['eval_forward_fraction']
  return model['startup_s'] + steps * step + eval_s
