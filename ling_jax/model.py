"""Decoder-only Ling-style transformer: first-k dense layers, then MoE layers.

Each kind of layer is one stacked module (parameters with a leading layer axis) run either by
`jax.lax.scan` or by an unrolled loop over the same parameters, so checkpoints do not depend on
that choice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ling_jax import layers
from ling_jax import moe as moe_lib
from ling_jax import sharding
from ling_jax.spec import ModelSpec

REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_saveable,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nnx.Module):
  """Pre-norm residual block: attention, then a dense SwiGLU or an MoE FFN."""

  def __init__(self, spec: ModelSpec, moe: bool, *, rngs: nnx.Rngs):
    d_model = spec.arch.d_model
    self.attn_norm = layers.rms_norm(d_model, spec, rngs)
    self.attn = layers.Attention(spec, rngs=rngs)
    self.ffn_norm = layers.rms_norm(d_model, spec, rngs)
    if moe:
      self.ffn = moe_lib.MoE(spec, rngs=rngs)
    else:
      self.ffn = layers.SwiGLU(d_model, spec.arch.d_ffn, spec, rngs=rngs)

  def __call__(self, x_BxLxD):
    h_BxLxD = x_BxLxD + self.attn(self.attn_norm(x_BxLxD))
    ffn_out = self.ffn(self.ffn_norm(h_BxLxD))
    y_BxLxD, stats = ffn_out if isinstance(ffn_out, tuple) else (ffn_out, {})
    return h_BxLxD + y_BxLxD, stats


def _stack(n: int, make, rngs: nnx.Rngs):
  @nnx.split_rngs(splits=n)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: 'layers'})
  def make_stacked(rngs):
    return make(rngs)

  return make_stacked(rngs)


class Transformer(nnx.Module):
  """Token ids [B, L] -> (logits [B, L, V] in f32, per-MoE-layer statistics stacked on axis 0).

  Takes only the resolved model spec (`ling_jax.config.validate` returns it)."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    arch = spec.arch
    self.scan_layers = spec.scan_layers
    self.remat = spec.remat
    self.compute_dtype = jnp.dtype(spec.compute_dtype)
    self.batch_axes = spec.batch_axes
    self.embed = nnx.Embed(
        arch.vocab_size,
        arch.d_model,
        rngs=rngs,
        embedding_init=layers.annotated(nnx.initializers.normal(spec.init_std), 'vocab', 'embed'),
        param_dtype=jnp.dtype(spec.param_dtype),
        dtype=self.compute_dtype,
    )
    self.dense_layers = nnx.data(
        _stack(arch.num_ffn_dense_layers, lambda r: Block(spec, False, rngs=r), rngs)
        if arch.num_ffn_dense_layers
        else None
    )
    self.moe_layers = nnx.data(
        _stack(arch.num_moe_layers, lambda r: Block(spec, True, rngs=r), rngs)
        if arch.num_moe_layers
        else None
    )
    self.final_norm = layers.rms_norm(arch.d_model, spec, rngs)
    self.unembed = nnx.data(
        None
        if arch.tie_embeddings
        else layers.linear(arch.d_model, arch.vocab_size, spec, rngs, ('embed', 'vocab'))
    )

  def _run_stack(self, stack, x_BxLxD):
    graphdef, state = nnx.split(stack)

    def body(x, layer_state):
      x, stats = nnx.merge(graphdef, layer_state)(x)
      return sharding.keep_batch_sharded(x, self.batch_axes), stats

    if self.remat != 'none':
      body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat])
    if self.scan_layers:
      return jax.lax.scan(body, x_BxLxD, state)
    n = jax.tree.leaves(state)[0].shape[0]
    all_stats = []
    for i in range(n):
      x_BxLxD, stats = body(x_BxLxD, jax.tree.map(lambda a: a[i], state))
      all_stats.append(stats)
    return x_BxLxD, jax.tree.map(lambda *s: jnp.stack(s), *all_stats)

  def __call__(self, tokens_BxL):
    x_BxLxD = sharding.keep_batch_sharded(self.embed(tokens_BxL), self.batch_axes)
    stats = {}
    if self.dense_layers is not None:
      x_BxLxD, _ = self._run_stack(self.dense_layers, x_BxLxD)
    if self.moe_layers is not None:
      x_BxLxD, stats = self._run_stack(self.moe_layers, x_BxLxD)
    x_BxLxD = self.final_norm(x_BxLxD)
    if self.unembed is None:
      logits_BxLxV = self.embed.attend(x_BxLxD.astype(jnp.float32))
    else:
      logits_BxLxV = x_BxLxD.astype(jnp.float32) @ self.unembed.kernel[...].astype(jnp.float32)
    logits_BxLxV = sharding.keep_batch_sharded(logits_BxLxV, self.batch_axes)
    return logits_BxLxV.astype(jnp.float32), stats
