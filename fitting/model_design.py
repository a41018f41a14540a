"""Model designs from the scaling laws: given a compute budget and an MoE shape, the architecture
(allocation law, Table 1), learning rate and batch (hyperparameter law, Eq. 3), and why.

Pure Python (no JAX), used by the study configs and the `fitting.design` / `fitting.predict` tools.
"""

from __future__ import annotations

import dataclasses
import math

from fitting import laws
from ling_jax import flops

# The paper's training setting (arXiv 2507.17702, App. B): 4096-token sequences of a 126,464-token
# vocabulary, heads of 64 dimensions.
PAPER_SEQ_LEN = 4096
PAPER_VOCAB_SIZE = 126_464
PAPER_HEAD_DIM = 64
# Backbones (n_layers, d_model, n_heads, n_kv_heads) the paper used: Tables 7-11, in order.
PAPER_BACKBONES = [
    (8, 384, 8, 2),
    (8, 512, 8, 2),
    (10, 640, 10, 2),
    (14, 768, 12, 4),
    (16, 1024, 16, 4),
    (22, 1280, 20, 4),
]
# Median d_model / n_layers of those backbones; used to extend the ladder beyond them.
PAPER_ASPECT = 58


class DesignError(ValueError):
  """An impossible design; the message names the field."""


@dataclasses.dataclass(frozen=True)
class MoEShape:
  """What a study fixes; the design picks the rest. n_experts == 0 is a dense model."""

  n_experts: int = 0
  top_k: int = 0
  n_shared: int = 0
  granularity: float = 0.0  # G = 2 d_model / d_expert; or
  d_expert: int = 0  # a fixed expert width
  num_dense_layers: int = 0
  dense_ffn_ratio: float = 3.0  # dense d_ffn / d_model: (2 + 1) experts of width d_model


@dataclasses.dataclass(frozen=True)
class Design:
  model: dict  # config.model fields
  compute_budget: float  # FLOPs
  M_target: float  # FLOPs/token, from the allocation law
  M: float  # FLOPs/token of the chosen model
  tokens: float  # D = C / M
  learning_rate: float
  batch_tokens: float
  batch_sequences: int
  reasons: tuple[str, ...]


def _backbones(head_dim: int, kv_ratio: int, ladder):
  yield from ladder
  for heads in range(2, 257):
    d_model = heads * head_dim
    kv = max(1, heads // kv_ratio)
    while heads % kv:
      kv -= 1
    for stretch in (0.8, 0.9, 1.0, 1.1, 1.25):
      yield (max(2, round(stretch * d_model / PAPER_ASPECT)), d_model, heads, kv)


def model_fields(backbone, shape: MoEShape) -> dict:
  n_layers, d_model, heads, kv = backbone
  fields = dict(n_layers=n_layers, d_model=d_model, n_heads=heads, n_kv_heads=kv)
  if heads and d_model % heads:
    raise DesignError(f'model.n_heads={heads}: does not divide d_model={d_model}.')
  if heads % kv:
    raise DesignError(f'model.n_kv_heads={kv}: does not divide n_heads={heads}.')
  if not shape.n_experts:
    width = shape.dense_ffn_ratio * d_model
    if width != int(width):
      raise DesignError(f'model.d_ffn={width:g}: not a whole number; change dense_ffn_ratio.')
    return dict(fields, d_ffn=int(width))
  d_expert = shape.d_expert or math.floor(2 * d_model / shape.granularity)
  if d_expert < 1:
    raise DesignError(
        f'model.d_expert: G={shape.granularity} leaves no width at d_model='
        f'{d_model}; lower the granularity.'
    )
  return dict(
      fields,
      n_experts=shape.n_experts,
      top_k=shape.top_k,
      n_shared=shape.n_shared,
      d_expert=d_expert,
      num_dense_layers=shape.num_dense_layers,
      d_ffn=(shape.top_k + shape.n_shared) * d_expert if shape.num_dense_layers else 0,
  )


def architecture(fields: dict, seq_len: int, vocab_size: int) -> flops.Architecture:
  return flops.Architecture(seq_len=seq_len, vocab_size=vocab_size, **fields)


def _law_text(law: laws.PowerLaw) -> str:
  return f'{law.coefficient} C^{law.exponent}'


def design(
    compute: float,
    shape: MoEShape,
    *,
    seq_len: int = PAPER_SEQ_LEN,
    vocab_size: int = PAPER_VOCAB_SIZE,
    head_dim: int = PAPER_HEAD_DIM,
    kv_ratio: int = 4,
    ladder=PAPER_BACKBONES,
    m_target: float | None = None,
    side: str = '',
) -> Design:
  """The model the laws recommend at `compute` FLOPs, with its hyperparameters.

  The backbone is the one of `ladder` (the paper's own backbones by default), or of a ladder
  of head_dim-multiples with d_model / n_layers ~ 58 beyond it, whose M is closest in log to
  M_opt(C), or to `m_target` when given (IsoFLOP designs off the optimum); with `side` 'below'
  or 'above', the closest whose M is at most (or above) that target.
  """
  if side not in ('', 'below', 'above'):
    raise DesignError(f"side={side!r}: use '', 'below' or 'above'.")
  moe = shape.n_experts > 0
  m_law = laws.MOE_OPTIMAL_M if moe else laws.DENSE_OPTIMAL_M
  target = m_target or m_law(compute)
  best = None
  for backbone in _backbones(head_dim, kv_ratio, ladder):
    if moe and backbone[0] <= shape.num_dense_layers:
      continue
    try:
      fields = model_fields(backbone, shape)
    except DesignError:
      continue
    m = flops.paper_flops_per_token(architecture(fields, seq_len, vocab_size))
    if (side == 'below' and m > target) or (side == 'above' and m <= target):
      continue
    distance = abs(math.log(m / target))
    if best is None or distance < best[0]:
      best = (distance, fields, m)
  if best is None:
    raise DesignError(
        f'compute_budget={compute:g}: no backbone {side or "near M_opt"} fits the shape {shape}.'
    )
  _, fields, m = best
  lr, batch = laws.MOE_LEARNING_RATE(compute), laws.MOE_BATCH_TOKENS(compute)
  sequences = max(1, round(batch / seq_len))
  reasons = [
      f'M target {target:.3g} FLOPs/token (given)'
      if m_target
      else f'M_opt(C) = {_law_text(m_law)} = {target:.3g} FLOPs/token '
      f'({m_law.source}, {"MoE" if moe else "dense"})',
      f'backbone {fields["n_layers"]} layers x d_model {fields["d_model"]}, '
      f'{fields["n_heads"]}/{fields["n_kv_heads"]} heads: M = {m:.3g} '
      f'({m / target - 1:+.1%} from M_opt), D = C / M = {compute / m:.3g} tokens',
      f'learning rate = {_law_text(laws.MOE_LEARNING_RATE)} = {lr:.3g} (Eq. 3)',
      f'batch = {_law_text(laws.MOE_BATCH_TOKENS)} = {batch:.3g} tokens = {sequences} x '
      f'{seq_len} (Eq. 3)',
  ]
  if moe and shape.granularity and 2 * fields['d_model'] / shape.granularity != fields['d_expert']:
    reasons.append(
        f'd_expert = floor(2 d_model / G) = {fields["d_expert"]} (G in fact '
        f'{2 * fields["d_model"] / fields["d_expert"]:.3g}), as the paper rounded'
    )
  if not moe:
    reasons.append(
        'dense learning rate and batch: the paper did not publish its dense law; '
        'the MoE law is used'
    )
  return Design(fields, compute, target, m, compute / m, lr, batch, sequences, tuple(reasons))


def hyperparameter_gap(
    compute: float, learning_rate: float, batch_sequences: int, seq_len: int = 4096
) -> dict:
  """Printed hyperparameters against Eq. 3 at `compute` (arXiv 2507.17702 App. B: they differ)."""
  lr, batch = laws.MOE_LEARNING_RATE(compute), laws.MOE_BATCH_TOKENS(compute) / seq_len
  return dict(
      law_learning_rate=lr,
      learning_rate_ratio=learning_rate / lr,
      law_batch_sequences=batch,
      batch_ratio=batch_sequences / batch,
  )


def iso_flop_expert_width(base: flops.Architecture, d_model: int, n_heads: int) -> int:
  """The expert width that keeps M of `base` when d_model changes (Table 11's designs)."""
  probe = dataclasses.replace(
      base, d_model=d_model, n_heads=n_heads, head_dim=d_model // n_heads, d_expert=1
  )
  ffn_per_width = 6 * d_model * (base.top_k + base.n_shared) * base.num_moe_layers
  missing = flops.paper_forward_flops_per_token(base) - flops.paper_forward_flops_per_token(probe)
  width = 1 + missing / ffn_per_width
  if width < 1:
    raise DesignError(f'model.d_model={d_model}: attention alone exceeds the base M.')
  return round(width)
