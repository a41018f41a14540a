"""Dense building blocks: RMSNorm, rotary embeddings, GQA attention, SwiGLU.

Shape letters: B batch, L sequence, D d_model, N query heads, G kv heads, H head dim, F width.
"""

from __future__ import annotations

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from ling_jax.spec import ModelSpec

# Logical axis names as flax's `out_sharding` metadata, which config.sharding_rules maps to mesh
# axes. Not applied at creation (no mesh is set then): jit's out_shardings places the arrays.
_LAYOUT = dict(eager_sharding=False)


def annotated(init, *axes):
  """`init` whose parameter carries the logical axis names `axes`."""
  return nnx.with_partitioning(init, axes, **_LAYOUT)


def annotated_variable(kind, value, *axes):
  """A variable of type `kind` (nnx.Param, ...) holding `value`, with logical axis names."""
  return kind(value, out_sharding=axes, **_LAYOUT)


def linear(
    d_in: int, d_out: int, spec: ModelSpec, rngs: nnx.Rngs, axes: tuple[str, str]
) -> nnx.Linear:
  return nnx.Linear(
      d_in,
      d_out,
      use_bias=False,
      rngs=rngs,
      kernel_init=annotated(nnx.initializers.normal(spec.init_std), *axes),
      dtype=jnp.dtype(spec.compute_dtype),
      param_dtype=jnp.dtype(spec.param_dtype),
  )


def rms_norm(dim: int, spec: ModelSpec, rngs: nnx.Rngs) -> nnx.RMSNorm:
  return nnx.RMSNorm(
      dim,
      epsilon=spec.norm_eps,
      rngs=rngs,
      scale_init=annotated(nnx.initializers.ones, None),
      dtype=jnp.dtype(spec.compute_dtype),
      param_dtype=jnp.dtype(spec.param_dtype),
  )


class SwiGLU(nnx.Module):
  """silu(x W_gate) * (x W_up) W_out: the FFN of dense layers and of shared experts."""

  def __init__(self, d_model: int, width: int, spec: ModelSpec, *, rngs: nnx.Rngs):
    self.gate = linear(d_model, width, spec, rngs, ('embed', 'mlp'))
    self.up = linear(d_model, width, spec, rngs, ('embed', 'mlp'))
    self.out = linear(width, d_model, spec, rngs, ('mlp', 'embed'))

  def __call__(self, x_BxLxD):
    # Matmuls on 2-D [tokens, features]: XLA:CPU runs the 3-D backward passes slower
    # (docs/performance.md).
    x_TxD = x_BxLxD.reshape(-1, x_BxLxD.shape[-1])
    y_TxD = self.out(jax.nn.silu(self.gate(x_TxD)) * self.up(x_TxD))
    return y_TxD.reshape(x_BxLxD.shape)


def apply_rope(x_BxLxNxH, base: float, rotated_dims: int):
  """Rotary embedding on the first `rotated_dims` of each head (half-split convention)."""
  if rotated_dims == 0:
    return x_BxLxNxH
  L = x_BxLxNxH.shape[1]
  half = rotated_dims // 2
  inv_freq_h = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_Lxh = jnp.arange(L, dtype=jnp.float32)[:, None] * inv_freq_h[None, :]
  cos, sin = jnp.cos(angle_Lxh)[None, :, None, :], jnp.sin(angle_Lxh)[None, :, None, :]
  x = x_BxLxNxH.astype(jnp.float32)
  x1, x2, rest = x[..., :half], x[..., half:rotated_dims], x[..., rotated_dims:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)
  return rotated.astype(x_BxLxNxH.dtype)


class Attention(nnx.Module):
  """Causal grouped-query attention with RoPE and optional QK-norm."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    arch = spec.arch
    self.n_heads, self.n_kv_heads, self.head_dim = arch.n_heads, arch.n_kv_heads, arch.head_dim
    self.rope_base = spec.rope_base
    self.rotated_dims = spec.rotated_dims
    self.impl = spec.attention_impl or None
    D, H = arch.d_model, self.head_dim
    self.q = linear(D, self.n_heads * H, spec, rngs, ('embed', 'heads'))
    self.k = linear(D, self.n_kv_heads * H, spec, rngs, ('embed', 'heads'))
    self.v = linear(D, self.n_kv_heads * H, spec, rngs, ('embed', 'heads'))
    self.o = linear(self.n_heads * H, D, spec, rngs, ('heads', 'embed'))
    self.q_norm = nnx.data(rms_norm(H, spec, rngs) if arch.qk_norm else None)
    self.k_norm = nnx.data(rms_norm(H, spec, rngs) if arch.qk_norm else None)

  def __call__(self, x_BxLxD):
    B, L, D = x_BxLxD.shape
    x_TxD = x_BxLxD.reshape(B * L, D)  # 2-D matmuls, as in SwiGLU
    heads = lambda y_TxF: einops.rearrange(y_TxF, '(b l) (n h) -> b l n h', b=B, h=self.head_dim)
    q_BxLxNxH = heads(self.q(x_TxD))
    k_BxLxGxH, v_BxLxGxH = heads(self.k(x_TxD)), heads(self.v(x_TxD))
    if self.q_norm is not None:
      q_BxLxNxH, k_BxLxGxH = self.q_norm(q_BxLxNxH), self.k_norm(k_BxLxGxH)
    q_BxLxNxH = apply_rope(q_BxLxNxH, self.rope_base, self.rotated_dims)
    k_BxLxGxH = apply_rope(k_BxLxGxH, self.rope_base, self.rotated_dims)
    out_BxLxNxH = jax.nn.dot_product_attention(
        q_BxLxNxH, k_BxLxGxH, v_BxLxGxH, is_causal=True, implementation=self.impl
    )
    out_TxF = einops.rearrange(out_BxLxNxH, 'b l n h -> (b l) (n h)')
    return self.o(out_TxF).reshape(B, L, D)
