"""Ling-style MoE feed-forward layer: routers, routed and shared experts, per-layer statistics.

Shape letters: T tokens, K experts per token (top_k), E experts, D d_model, F d_expert.
The routed experts' dispatch (plans, permutations, grouped matmuls, combine) is `dispatch`;
across devices, `expert_parallel`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ling_jax import dispatch as dispatch_lib
from ling_jax import expert_parallel
from ling_jax import layers
from ling_jax.spec import ModelSpec


class RouterBias(nnx.Variable):
  """Per-expert selection bias of the aux-loss-free router: not trained, not decayed, saved."""


# --- Routing --------------------------------------------------------------------------------------


class Routing(NamedTuple):
  weights_TxK: jax.Array  # f32 combine weights
  experts_TxK: jax.Array  # int32 expert ids
  counts_E: jax.Array  # f32 assignments per expert
  load_balance_loss: jax.Array  # scalar, 1.0 at perfect balance
  z_loss: jax.Array  # scalar


def expert_counts(experts_TxK: jax.Array, n_experts: int) -> jax.Array:
  return jnp.bincount(experts_TxK.reshape(-1), length=n_experts).astype(jnp.float32)


def load_balance_loss(probs_TxE: jax.Array, counts_E: jax.Array) -> jax.Array:
  """GShard/Switch auxiliary loss E * sum_e f_e * P_e, with f_e the share of assignments routed
  to expert e and P_e its mean router probability; 1.0 when perfectly balanced."""
  n_experts = probs_TxE.shape[-1]
  f_E = counts_E / counts_E.sum()
  return n_experts * jnp.sum(f_E * probs_TxE.mean(axis=0))


def z_loss(logits_TxE: jax.Array) -> jax.Array:
  """ST-MoE router z-loss: mean squared log-partition function."""
  return jnp.mean(jax.nn.logsumexp(logits_TxE, axis=-1) ** 2)


def _routing(weights_TxK, experts_TxK, probs_TxE, logits_TxE) -> Routing:
  counts_E = expert_counts(experts_TxK, probs_TxE.shape[-1])
  return Routing(
      weights_TxK, experts_TxK, counts_E, load_balance_loss(probs_TxE, counts_E), z_loss(logits_TxE)
  )


def softmax_router(logits_TxE, top_k: int, renormalize: bool) -> Routing:
  """The paper's router (App. B): softmax over all E, top-k, GShard aux loss and z-loss."""
  probs_TxE = jax.nn.softmax(logits_TxE, axis=-1)
  weights_TxK, experts_TxK = jax.lax.top_k(probs_TxE, top_k)
  if renormalize:
    weights_TxK = weights_TxK / weights_TxK.sum(axis=-1, keepdims=True)
  return _routing(weights_TxK, experts_TxK, probs_TxE, logits_TxE)


def group_limited_mask(choice_TxE, n_groups: int, top_groups: int) -> jax.Array:
  """Keeps the experts of the `top_groups` groups whose two best choice scores sum highest."""
  T, E = choice_TxE.shape
  groups_TxGxM = choice_TxE.reshape(T, n_groups, E // n_groups)
  group_score_TxG = jax.lax.top_k(groups_TxGxM, 2)[0].sum(axis=-1)
  _, kept_groups = jax.lax.top_k(group_score_TxG, top_groups)
  keep_TxG = jnp.zeros((T, n_groups), bool).at[jnp.arange(T)[:, None], kept_groups].set(True)
  return jnp.repeat(keep_TxG, E // n_groups, axis=-1)


def sigmoid_bias_router(
    logits_TxE, bias_E, top_k: int, routed_scaling: float, n_groups: int, top_groups: int
) -> Routing:
  """Ling 2.0's aux-loss-free router: the bias only chooses experts, weights come from the
  unbiased sigmoid scores, normalised over the k chosen and scaled by `routed_scaling`."""
  scores_TxE = jax.nn.sigmoid(logits_TxE)
  choice_TxE = scores_TxE + bias_E
  if n_groups > 1:
    keep_TxE = group_limited_mask(choice_TxE, n_groups, top_groups)
    choice_TxE = jnp.where(keep_TxE, choice_TxE, -jnp.inf)
  _, experts_TxK = jax.lax.top_k(choice_TxE, top_k)
  weights_TxK = jnp.take_along_axis(scores_TxE, experts_TxK, axis=-1)
  if top_k > 1:
    weights_TxK = weights_TxK / (weights_TxK.sum(axis=-1, keepdims=True) + 1e-20)
  probs_TxE = scores_TxE / scores_TxE.sum(axis=-1, keepdims=True)
  return _routing(weights_TxK * routed_scaling, experts_TxK, probs_TxE, logits_TxE)


def bias_update(bias_E: jax.Array, counts_E: jax.Array, rate: float) -> jax.Array:
  """Zero-centred sign rule (Ling 2.0): raise the bias of under-loaded experts, lower it of
  over-loaded ones, b_i += u * (sign(e_i) - mean(sign(e))), e_i = mean load - load_i."""
  sign_E = jnp.sign(counts_E.mean(axis=-1, keepdims=True) - counts_E)
  return bias_E + rate * (sign_E - sign_E.mean(axis=-1, keepdims=True))


def next_router_bias(router_bias, stats, moe_cfg):
  """The router biases after an optimizer step: the sign rule on the expert loads of the step
  (`stats`: the MoE layers' statistics per microbatch, [M, L, ...]). Without biases (a softmax
  router, a dense model) there is nothing to update."""
  if not router_bias:
    return router_bias
  counts_LxE = stats['expert_counts'].sum(axis=0)
  rate = moe_cfg.bias_update_rate
  return jax.tree.map(lambda b: bias_update(b, counts_LxE, rate), router_bias)


def logged_statistics(stats) -> dict:
  """The MoE layers' statistics a step logs, averaged over its microbatches: per-layer losses,
  loads and dropped shares, without the raw expert counts the router keeps for itself."""
  return {k: v.mean(axis=0) for k, v in stats.items() if k != 'expert_counts'}


class MoE(nnx.Module):
  """Routed experts + shared experts. Returns (y_BxLxD, per-layer statistics)."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    arch = spec.arch
    D, E, F = arch.d_model, arch.n_experts, arch.d_expert
    self.top_k = arch.top_k
    self.cfg = spec.moe
    self.compute_dtype = jnp.dtype(spec.compute_dtype)
    init = nnx.initializers.normal(spec.init_std)
    dtype = jnp.dtype(spec.param_dtype)
    param = lambda shape, *axes: layers.annotated_variable(
        nnx.Param, init(rngs.params(), shape, dtype), *axes
    )
    self.router = param((D, E), 'embed', None)
    self.wi_gate = param((E, D, F), 'exp', 'embed', 'exp_mlp')
    self.wi_up = param((E, D, F), 'exp', 'embed', 'exp_mlp')
    self.wo = param((E, F, D), 'exp', 'exp_mlp', 'embed')
    if spec.moe.router == 'sigmoid_bias':
      self.router_bias = layers.annotated_variable(RouterBias, jnp.zeros((E,), jnp.float32), 'exp')
    self.shared = nnx.data(
        layers.SwiGLU(D, arch.n_shared * F, spec, rngs=rngs) if arch.n_shared else None
    )

  @jax.named_scope('router')
  def route(self, x_TxD) -> Routing:
    logits_TxE = x_TxD.astype(jnp.float32) @ self.router[...].astype(jnp.float32)
    if self.cfg.router == 'softmax':
      return softmax_router(logits_TxE, self.top_k, self.cfg.renormalize)
    return sigmoid_bias_router(
        logits_TxE,
        self.router_bias[...],
        self.top_k,
        self.cfg.routed_scaling,
        self.cfg.n_groups,
        self.cfg.top_groups,
    )

  def __call__(self, x_BxLxD):
    B, L, D = x_BxLxD.shape
    T, K = B * L, self.top_k
    x_TxD = x_BxLxD.reshape(T, D)
    routing = self.route(x_TxD)
    cast = lambda w: w[...].astype(self.compute_dtype)
    x_TxD = x_TxD.astype(self.compute_dtype)
    mesh = jax.sharding.get_abstract_mesh()
    stats = {}
    if mesh.empty or mesh.size == 1:
      y_TxD, dropped = dispatch_lib.dispatch_local(
          x_TxD,
          routing.experts_TxK,
          routing.weights_TxK,
          cast(self.wi_gate),
          cast(self.wi_up),
          cast(self.wo),
          self.cfg,
      )
    else:
      ep = mesh.shape.get('expert', 1) > 1
      y_TxD, dropped, rows = expert_parallel.routed(
          x_TxD,
          routing.experts_TxK,
          routing.weights_TxK,
          cast(self.wi_gate),
          cast(self.wi_up),
          cast(self.wo),
          self.cfg.transport if ep else 'local',
          self.cfg,
      )
      if ep:  # bytes each device moves per local token, both ways; ideal: k rows each way
        row_bytes = D * jnp.dtype(self.compute_dtype).itemsize
        stats['a2a_bytes_per_token'] = 2 * row_bytes * rows.mean() / (T // rows.size)
        stats['a2a_ideal_bytes_per_token'] = jnp.asarray(2.0 * K * row_bytes)
    y_BxLxD = y_TxD.reshape(B, L, D).astype(self.compute_dtype)
    if self.shared is not None:
      y_BxLxD = y_BxLxD + self.shared(x_BxLxD)

    counts_E = routing.counts_E
    stats.update(
        load_balance_loss=routing.load_balance_loss,
        z_loss=routing.z_loss,
        expert_counts=counts_E,
        dropped_fraction=dropped / (T * K),
        max_over_mean_load=counts_E.max() / counts_E.mean(),
    )
    return y_BxLxD, stats
