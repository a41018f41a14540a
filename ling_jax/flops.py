"""FLOP and parameter accounting: the one source of truth for both halves of ling-jax.

Pure Python on purpose (no JAX): `fitting/` imports it in any scientific Python.

Three FLOP counts, each per *token* of training (forward + backward), named for what they are:

* `paper_flops_per_token` -- the paper's model scale M (arXiv 2507.17702 Eq. 2, App. C, in the
  convention that makes its iso-FLOP tables exactly iso-FLOP; §2.1 Eq. 2, App. C Eqs. 14-16):
  M = 3 x non-embedding forward FLOPs, per layer 4 d^2 + 4 d^2 / g + 4 s d for attention
  (g = n_heads / n_kv_heads, s = training sequence length, no causal halving) plus
  6 d d_ffn (dense layer) or 6 d (E_a + E_s) d_expert (MoE layer). Router, embeddings and logits
  are excluded. Compute is C = M * D.
* `six_n_flops_per_token` -- 6 * N_a, the count most other scaling-law papers use.
* `hardware_flops_per_token` -- what the chip actually multiplies (MaxText's MFU convention):
  router, causal halving of attention scores, and the logit projection are counted.

Units: FLOPs are floating-point operations (a multiply-add is 2), parameters are counts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Architecture:
  """The shape of a Ling-style decoder. `n_experts == 0` is a dense model."""

  n_layers: int
  d_model: int
  n_heads: int
  n_kv_heads: int
  seq_len: int
  vocab_size: int
  d_ffn: int = 0  # width of dense FFN layers (all layers of a dense model, the first-k of an MoE)
  head_dim: int = 0  # 0 (or None): d_model // n_heads, filled in when built
  num_dense_layers: int = 0  # first-k dense layers of an MoE model
  n_experts: int = 0  # E, routed experts
  top_k: int = 0  # E_a, activated routed experts per token
  n_shared: int = 0  # E_s, shared experts (one SwiGLU of width n_shared * d_expert)
  d_expert: int = 0
  tie_embeddings: bool = False
  qk_norm: bool = False

  @classmethod
  def from_config(cls, model: Mapping[str, Any], seq_len: int) -> 'Architecture':
    """Builds from a `config.model` mapping (see ling_jax/config.py)."""
    names = {f.name for f in dataclasses.fields(cls)} - {'seq_len'}
    return cls(seq_len=seq_len, **{k: model[k] for k in names if k in model})

  def __post_init__(self):
    # The one place the default head width is worked out: every reader sees it resolved.
    if not self.head_dim:
      object.__setattr__(self, 'head_dim', self.d_model // self.n_heads)

  @property
  def is_moe(self) -> bool:
    return self.n_experts > 0

  @property
  def num_moe_layers(self) -> int:
    return self.n_layers - self.num_dense_layers if self.is_moe else 0

  @property
  def num_ffn_dense_layers(self) -> int:
    return self.n_layers - self.num_moe_layers


# --- Derived ratios (arXiv 2507.17702 §2.1, App. A) -----------------------------------------


def activation_ratio(arch: Architecture) -> float:
  """A = (E_a + E_s) / (E + E_s), the paper's stated definition; 1 for a dense model."""
  if not arch.is_moe:
    return 1.0
  return (arch.top_k + arch.n_shared) / (arch.n_experts + arch.n_shared)


def routed_activation_ratio(arch: Architecture) -> float:
  """E_a / E, the routed-only ratio several of the paper's printed A values actually use."""
  return arch.top_k / arch.n_experts if arch.is_moe else 1.0


def granularity(arch: Architecture) -> float:
  """G = 2 d_model / d_expert (the paper's; Ludziejewski et al. use 4 d_model / d_expert)."""
  return 2 * arch.d_model / arch.d_expert if arch.is_moe else float('nan')


def shared_ratio(arch: Architecture) -> float:
  """S = E_s / (E_a + E_s)."""
  return arch.n_shared / (arch.top_k + arch.n_shared) if arch.is_moe else float('nan')


# --- Parameters --------------------------------------------------------------------------------


def _attention_params(arch: Architecture) -> int:
  d, hd = arch.d_model, arch.head_dim
  projections = 2 * d * arch.n_heads * hd + 2 * d * arch.n_kv_heads * hd
  return projections + (2 * hd if arch.qk_norm else 0)


def _swiglu_params(d_model: int, width: int) -> int:
  return 3 * d_model * width


def _layer_params(arch: Architecture, moe: bool, active: bool) -> int:
  norms = 2 * arch.d_model
  if not moe:
    return norms + _attention_params(arch) + _swiglu_params(arch.d_model, arch.d_ffn)
  routed = arch.top_k if active else arch.n_experts
  router = arch.d_model * arch.n_experts
  ffn = _swiglu_params(arch.d_model, (routed + arch.n_shared) * arch.d_expert)
  return norms + _attention_params(arch) + router + ffn


def non_embedding_params(arch: Architecture, active: bool = False) -> int:
  """N (total) or N_a (active=True): every trainable parameter except embedding and logits."""
  dense = arch.num_ffn_dense_layers * _layer_params(arch, moe=False, active=active)
  moe = arch.num_moe_layers * _layer_params(arch, moe=True, active=active)
  return dense + moe + arch.d_model  # + final norm


def embedding_params(arch: Architecture) -> int:
  return arch.vocab_size * arch.d_model * (1 if arch.tie_embeddings else 2)


def total_params(arch: Architecture) -> int:
  return non_embedding_params(arch) + embedding_params(arch)


# --- FLOPs per token -----------------------------------------------------------------------------


def _attention_projection_forward_flops(arch: Architecture) -> int:
  # q and o: 2 * d * (n_heads * hd) each; k and v: 2 * d * (n_kv_heads * hd) each.
  return 4 * arch.d_model * arch.head_dim * (arch.n_heads + arch.n_kv_heads)


def _ffn_forward_flops(arch: Architecture, moe: bool) -> int:
  width = (arch.top_k + arch.n_shared) * arch.d_expert if moe else arch.d_ffn
  return 6 * arch.d_model * width


def paper_forward_flops_per_token(arch: Architecture) -> int:
  """Non-embedding forward FLOPs per token in the paper's convention (M / 3)."""
  scores = 4 * arch.seq_len * arch.n_heads * arch.head_dim  # = 4 s d when n_heads * hd = d
  attention = _attention_projection_forward_flops(arch) + scores
  return (
      arch.n_layers * attention
      + arch.num_ffn_dense_layers * _ffn_forward_flops(arch, moe=False)
      + arch.num_moe_layers * _ffn_forward_flops(arch, moe=True)
  )


def paper_flops_per_token(arch: Architecture) -> int:
  """M: the paper's training FLOPs per token (3 x forward, non-embedding, no causal halving)."""
  return 3 * paper_forward_flops_per_token(arch)


def six_n_flops_per_token(arch: Architecture) -> int:
  """6 * N_a: the Kaplan/Chinchilla-style count."""
  return 6 * non_embedding_params(arch, active=True)


def hardware_flops_per_token(arch: Architecture) -> float:
  """Training FLOPs per token the hardware executes for the model (MFU numerator, MaxText's way).

  Counts the router matmul, causal attention scores (half of s x s), and the logit projection;
  excludes remat recomputation, dispatch gathers and capacity padding.
  """
  scores = 4 * arch.seq_len * arch.n_heads * arch.head_dim / 2
  router = 2 * arch.d_model * arch.n_experts if arch.is_moe else 0
  per_layer_attention = _attention_projection_forward_flops(arch) + scores
  forward = (
      arch.n_layers * per_layer_attention
      + arch.num_ffn_dense_layers * _ffn_forward_flops(arch, moe=False)
      + arch.num_moe_layers * (_ffn_forward_flops(arch, moe=True) + router)
      + 2 * arch.d_model * arch.vocab_size
  )
  return 3 * forward


def block_buffer_rows(n_assignments: int, n_experts: int, block_rows: int) -> int:
  """Rows the dropless 'blocks' dispatch computes for one MoE layer: each expert's assignments
  padded to whole blocks of `block_rows`, ceil((A + E (block - 1)) / block) blocks in all. The
  padding is real work on the hardware, which `hardware_flops_per_token` leaves out."""
  return -(-(n_assignments + n_experts * (block_rows - 1)) // block_rows) * block_rows


# --- Budgets -------------------------------------------------------------------------------------


def tokens_for_budget(arch: Architecture, compute_flops: float) -> float:
  """D = C / M (paper Eq. 2)."""
  return compute_flops / paper_flops_per_token(arch)


def steps_for_tokens(tokens: float, tokens_per_step: int) -> int:
  """Whole optimizer steps closest to `tokens` training tokens."""
  return int(round(tokens / tokens_per_step))


def summary(arch: Architecture) -> dict[str, float]:
  """Every derived quantity of an architecture, keyed as in results tables."""
  return {
      'N': non_embedding_params(arch),
      'N_a': non_embedding_params(arch, active=True),
      'N_total_with_embeddings': total_params(arch),
      'M': paper_flops_per_token(arch),
      'six_N_a': six_n_flops_per_token(arch),
      'hardware_flops_per_token': hardware_flops_per_token(arch),
      'A': activation_ratio(arch),
      'A_routed': routed_activation_ratio(arch),
      'G': granularity(arch),
      'S': shared_ratio(arch),
  }
