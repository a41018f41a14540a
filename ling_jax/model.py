"""Decoder-only Ling-style transformer: first-k dense layers, then MoE layers.

Each kind of layer is one stacked module (parameters with a leading layer axis) run either by
`jax.lax.scan` or by an unrolled loop over the same parameters, so checkpoints do not depend on
that choice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ling_jax import config as config_lib
from ling_jax import layers
from ling_jax import moe as moe_lib
from ling_jax import sharding

REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_saveable,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nnx.Module):
  """Pre-norm residual block: attention, then a dense SwiGLU or an MoE FFN."""

  def __init__(
      self,
      model_cfg,
      moe_cfg,
      moe: bool,
      d_expert: int,
      *,
      rngs: nnx.Rngs,
      batch_axes=('data', 'fsdp', 'expert'),
  ):
    self.attn_norm = layers.rms_norm(model_cfg.d_model, model_cfg, rngs)
    self.attn = layers.Attention(model_cfg, rngs=rngs)
    self.ffn_norm = layers.rms_norm(model_cfg.d_model, model_cfg, rngs)
    if moe:
      self.ffn = moe_lib.MoE(model_cfg, moe_cfg, d_expert, rngs=rngs, batch_axes=batch_axes)
    else:
      self.ffn = layers.SwiGLU(model_cfg.d_model, model_cfg.d_ffn, model_cfg, rngs=rngs)

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
  """Token ids [B, L] -> (logits [B, L, V] in f32, per-MoE-layer statistics stacked on axis 0)."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    m = config.model
    self.scan_layers = m.scan_layers
    self.remat = m.remat
    self.compute_dtype = jnp.dtype(m.compute_dtype)
    self.embed = nnx.Embed(
        m.vocab_size,
        m.d_model,
        rngs=rngs,
        embedding_init=layers.annotated(nnx.initializers.normal(m.init_std), 'vocab', 'embed'),
        param_dtype=jnp.dtype(m.param_dtype),
        dtype=self.compute_dtype,
    )
    n_moe = m.n_layers - m.num_dense_layers if m.n_experts else 0
    d_expert = config_lib.resolve_d_expert(m) if n_moe else 0
    self.dense_layers = nnx.data(
        None
        if m.n_layers == n_moe
        else _stack(m.n_layers - n_moe, lambda r: Block(m, config.moe, False, 0, rngs=r), rngs)
    )
    batch_axes = self.batch_axes = sharding.batch_axes(config)
    self.moe_layers = nnx.data(
        None
        if not n_moe
        else _stack(
            n_moe,
            lambda r: Block(m, config.moe, True, d_expert, rngs=r, batch_axes=batch_axes),
            rngs,
        )
    )
    self.final_norm = layers.rms_norm(m.d_model, m, rngs)
    self.unembed = nnx.data(
        None
        if m.tie_embeddings
        else layers.linear(m.d_model, m.vocab_size, m, rngs, ('embed', 'vocab'))
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
