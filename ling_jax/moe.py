"""Ling-style MoE feed-forward layer: router, sort-by-expert dispatch, grouped matmul, combine.

Shape letters: T tokens, K experts per token (top_k), A = T*K assignments, E experts,
C capacity slots per expert, R rows of the expert-grouped buffer, D d_model, F d_expert.

Dispatch sorts the A assignments by expert (stable, so earlier tokens win when an expert is
full) and moves token rows into an expert-grouped buffer:
  * 'einsum': a capacity-padded [E, C, D] buffer and batched matmuls; fast everywhere, drops
    assignments past capacity (counted and logged);
  * 'blocks': each expert's rows padded to whole blocks, every block through its expert's
    gathered weights in one batched matmul; dropless with static shapes (the CPU's dropless
    dispatch: byte-level tokens route by identity, and capacity limits drop 15-25% of them);
  * 'ragged_dot': an [A, D] buffer and `jax.lax.ragged_dot`; dropless (use on accelerators,
    XLA:CPU lowers it to a masked dense matmul).
Both directions of the row permutation are gathers, also in the backward pass (`permute_rows`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ling_jax import grouped_matmul
from ling_jax import layers


class RouterBias(nnx.Variable):
  """Per-expert selection bias of the aux-loss-free router: not trained, not decayed, saved."""


# --- Row permutation with a gather-only backward pass ----------------------------------------------


@jax.custom_vjp
def permute_rows(src_NxD, take_M, inverse_NxJ):
  """out[m] = src[take[m]] (zero where take[m] >= N).

  `inverse[n]` lists every m with take[m] == n (padded with an index >= M), so the backward pass
  is a gather and a sum instead of a scatter-add.
  """
  return jnp.take(src_NxD, take_M, axis=0, mode='fill', fill_value=0)


def _permute_rows_fwd(src_NxD, take_M, inverse_NxJ):
  return permute_rows(src_NxD, take_M, inverse_NxJ), (take_M, inverse_NxJ)


def _permute_rows_bwd(residuals, g_MxD):
  _, inverse_NxJ = residuals
  g_NxJxD = jnp.take(g_MxD, inverse_NxJ, axis=0, mode='fill', fill_value=0)
  return g_NxJxD.sum(axis=1), None, None


permute_rows.defvjp(_permute_rows_fwd, _permute_rows_bwd)


# --- Routing ----------------------------------------------------------------------------------------


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
  return Routing(weights_TxK, experts_TxK, counts_E, load_balance_loss(probs_TxE, counts_E),
                 z_loss(logits_TxE))


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


def sigmoid_bias_router(logits_TxE, bias_E, top_k: int, routed_scaling: float, n_groups: int,
                        top_groups: int) -> Routing:
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


# --- Dispatch plans -----------------------------------------------------------------------------


class DispatchPlan(NamedTuple):
  token_of_row: jax.Array  # [R] token feeding each buffer row; T marks an empty row
  row_of_assignment: jax.Array  # [A] buffer row of each assignment; R marks a dropped one
  assignment_of_row: jax.Array  # [R] the inverse; A marks an empty row
  group_sizes: jax.Array  # [E] rows per expert in the buffer (int32)
  kept: jax.Array  # [A] bool


def capacity(n_assignments: int, n_experts: int, n_tokens: int, capacity_factor: float) -> int:
  """Slots per expert: ceil(cf * assignments / experts), at most n_tokens (an expert gets each
  token at most once), so cf <= 0 (dropless) gives n_tokens. The one capacity formula of every
  dispatch path."""
  if capacity_factor <= 0:
    return n_tokens
  return max(1, min(n_tokens, math.ceil(capacity_factor * n_assignments / n_experts)))


def _sort_by_expert(experts_TxK, n_experts):
  flat_A = experts_TxK.reshape(-1)
  order_A = jnp.argsort(flat_A, stable=True)  # assignments sorted by expert, token order kept
  counts_E = jnp.bincount(flat_A, length=n_experts).astype(jnp.int32)
  starts_E = jnp.cumsum(counts_E) - counts_E
  rank_A = jnp.zeros_like(order_A).at[order_A].set(jnp.arange(flat_A.size, dtype=order_A.dtype))
  return flat_A, order_A, counts_E, starts_E, rank_A


def dropless_plan(experts_TxK, n_experts: int) -> DispatchPlan:
  """Rows are the assignments in expert order: [A] rows, nothing dropped."""
  _, order_A, counts_E, _, rank_A = _sort_by_expert(experts_TxK, n_experts)
  K = experts_TxK.shape[1]
  return DispatchPlan(order_A // K, rank_A, order_A, counts_E, jnp.ones_like(rank_A, bool))


def block_plan(experts_TxK, n_experts: int, block: int) -> tuple[DispatchPlan, jax.Array]:
  """Dropless with static shapes: each expert's assignments padded to a whole number of
  `block`-row blocks, ceil((A + E (block - 1)) / block) blocks in all (each expert wastes fewer
  than `block` rows). Returns the plan and the expert of each block [N]."""
  T, K = experts_TxK.shape
  A = T * K
  flat_A, order_A, counts_E, starts_E, rank_A = _sort_by_expert(experts_TxK, n_experts)
  padded_E = (counts_E + block - 1) // block * block
  ends_E = jnp.cumsum(padded_E)
  padded_starts_E = ends_E - padded_E
  n_rows = -(-(A + n_experts * (block - 1)) // block) * block
  row_of_assignment = padded_starts_E[flat_A] + rank_A - starts_E[flat_A]
  row_R = jnp.arange(n_rows)
  expert_R = jnp.minimum(jnp.searchsorted(ends_E, row_R, side='right'), n_experts - 1)
  position_R = row_R - padded_starts_E[expert_R]
  filled_R = (row_R < ends_E[-1]) & (position_R < counts_E[expert_R])
  assignment_of_row = jnp.where(filled_R, order_A[jnp.minimum(starts_E[expert_R] + position_R,
                                                              A - 1)], A)
  plan = DispatchPlan(assignment_of_row // K, row_of_assignment, assignment_of_row, counts_E,
                      jnp.ones_like(rank_A, bool))
  return plan, expert_R[::block]


def capacity_plan(experts_TxK, n_experts: int, slots: int) -> DispatchPlan:
  """Rows are E blocks of `slots`; an expert's assignments past its capacity are dropped."""
  T, K = experts_TxK.shape
  A = T * K
  flat_A, order_A, counts_E, starts_E, rank_A = _sort_by_expert(experts_TxK, n_experts)
  position_A = rank_A - starts_E[flat_A]
  kept_A = position_A < slots
  row_of_assignment = jnp.where(kept_A, flat_A * slots + position_A, n_experts * slots)
  slot_ExC = jnp.arange(slots)[None, :]
  filled_ExC = slot_ExC < counts_E[:, None]
  sorted_index = jnp.minimum(starts_E[:, None] + slot_ExC, A - 1)
  assignment_of_row = jnp.where(filled_ExC, order_A[sorted_index], A).reshape(-1)
  return DispatchPlan(assignment_of_row // K, row_of_assignment, assignment_of_row,
                      jnp.minimum(counts_E, slots), kept_A)


# --- Expert computation --------------------------------------------------------------------------


def swiglu_capacity(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD):
  E = wg_ExDxF.shape[0]
  x_ExCxD = rows_RxD.reshape(E, -1, rows_RxD.shape[-1])
  h_ExCxF = (jax.nn.silu(jnp.einsum('ecd,edf->ecf', x_ExCxD, wg_ExDxF)) *
             jnp.einsum('ecd,edf->ecf', x_ExCxD, wu_ExDxF))
  return jnp.einsum('ecf,efd->ecd', h_ExCxF, wo_ExFxD).reshape(rows_RxD.shape)


def swiglu_blocks(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD, expert_N):
  """Blocks of rows, each through its own expert's weights (gathered per block)."""
  N = expert_N.shape[0]
  x_NxBxD = rows_RxD.reshape(N, -1, rows_RxD.shape[-1])
  take = lambda w: jnp.take(w, expert_N, axis=0)
  h_NxBxF = (jax.nn.silu(jnp.einsum('nbd,ndf->nbf', x_NxBxD, take(wg_ExDxF))) *
             jnp.einsum('nbd,ndf->nbf', x_NxBxD, take(wu_ExDxF)))
  return jnp.einsum('nbf,nfd->nbd', h_NxBxF, take(wo_ExFxD)).reshape(rows_RxD.shape)


def swiglu_ragged(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD, group_sizes_E,
                  matmul: grouped_matmul.GroupedMatmul = jax.lax.ragged_dot):
  h_RxF = (jax.nn.silu(matmul(rows_RxD, wg_ExDxF, group_sizes_E)) *
           matmul(rows_RxD, wu_ExDxF, group_sizes_E))
  return matmul(h_RxF, wo_ExFxD, group_sizes_E)


def combine(y_AxD, weights_TxK):
  """Each token's expert outputs, weighted and summed over its k assignments, in f32."""
  T, K = weights_TxK.shape
  return jnp.einsum('tkd,tk->td', y_AxD.reshape(T, K, -1).astype(jnp.float32), weights_TxK)


def dispatch_local(x_TxD, experts_TxK, weights_TxK, wg_ExDxF, wu_ExDxF, wo_ExFxD,
                   opts: 'MoEOptions'):
  """Routed experts on one device (or one batch shard): (y [T, D] f32, dropped assignments).

  'einsum': a capacity-padded buffer and batched matmuls; 'blocks': every assignment, each
  expert's padded to whole blocks of `block_rows`, blocks through batched matmuls with their
  expert's weights (dropless, static shapes, CPU-friendly); 'ragged_dot' / 'tokamax': every
  assignment, grouped by expert, through a grouped matmul (dropless).
  """
  T, K = experts_TxK.shape
  E = wg_ExDxF.shape[0]
  if opts.dispatch == 'blocks':
    plan, expert_N = block_plan(experts_TxK, E, opts.block_rows)
  elif opts.dropless:
    plan = dropless_plan(experts_TxK, E)
  else:
    plan = capacity_plan(experts_TxK, E, capacity(T * K, E, T, opts.capacity_factor))
  rows_RxD = permute_rows(x_TxD, plan.token_of_row, plan.row_of_assignment.reshape(T, K))
  if opts.dispatch == 'blocks':
    y_RxD = swiglu_blocks(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD, expert_N)
  elif opts.dropless:
    y_RxD = swiglu_ragged(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD, plan.group_sizes,
                          opts.matmul())
  else:
    y_RxD = swiglu_capacity(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD)
  y_AxD = permute_rows(y_RxD, plan.row_of_assignment, plan.assignment_of_row[:, None])
  return combine(y_AxD, weights_TxK), jnp.sum(~plan.kept)


class MoEOptions(NamedTuple):
  """The routing and dispatch fields of `config.moe`, as static hashable values."""
  router: str
  renormalize: bool
  routed_scaling: float
  n_groups: int
  top_groups: int
  dispatch: str
  capacity_factor: float
  transport: str
  tokamax_implementation: str = ''
  tokamax_tiles: tuple = ()
  block_rows: int = 16
  batch_axes: tuple = ('data', 'fsdp', 'expert')

  @property
  def dropless(self) -> bool:
    return self.dispatch == 'blocks' or self.dispatch in grouped_matmul.BACKENDS

  def matmul(self) -> grouped_matmul.GroupedMatmul:
    return grouped_matmul.make(self.dispatch, self.tokamax_implementation, self.tokamax_tiles)


class MoE(nnx.Module):
  """Routed experts + shared experts. Returns (y_BxLxD, per-layer statistics)."""

  def __init__(self, model_cfg, moe_cfg, d_expert: int, *, rngs: nnx.Rngs,
               batch_axes=('data', 'fsdp', 'expert')):
    D, E, F = model_cfg.d_model, model_cfg.n_experts, d_expert
    self.top_k = model_cfg.top_k
    fields = {k: moe_cfg[k] for k in MoEOptions._fields if k != 'batch_axes'}
    fields['tokamax_tiles'] = tuple(fields['tokamax_tiles'])
    self.cfg = MoEOptions(**fields, batch_axes=tuple(batch_axes))
    self.compute_dtype = jnp.dtype(model_cfg.compute_dtype)
    init = nnx.initializers.normal(model_cfg.init_std)
    dtype = jnp.dtype(model_cfg.param_dtype)
    self.router = nnx.Param(init(rngs.params(), (D, E), dtype))
    self.wi_gate = nnx.Param(init(rngs.params(), (E, D, F), dtype))
    self.wi_up = nnx.Param(init(rngs.params(), (E, D, F), dtype))
    self.wo = nnx.Param(init(rngs.params(), (E, F, D), dtype))
    if moe_cfg.router == 'sigmoid_bias':
      self.router_bias = RouterBias(jnp.zeros((E,), jnp.float32))
    self.shared = nnx.data(layers.SwiGLU(D, model_cfg.n_shared * F, model_cfg, rngs=rngs)
                           if model_cfg.n_shared else None)

  def route(self, x_TxD) -> Routing:
    logits_TxE = x_TxD.astype(jnp.float32) @ self.router[...].astype(jnp.float32)
    if self.cfg.router == 'softmax':
      return softmax_router(logits_TxE, self.top_k, self.cfg.renormalize)
    return sigmoid_bias_router(logits_TxE, self.router_bias[...], self.top_k,
                               self.cfg.routed_scaling, self.cfg.n_groups, self.cfg.top_groups)

  def __call__(self, x_BxLxD):
    B, L, D = x_BxLxD.shape
    T, K, E = B * L, self.top_k, self.wi_gate.shape[0]
    x_TxD = x_BxLxD.reshape(T, D)
    routing = self.route(x_TxD)
    cast = lambda w: w[...].astype(self.compute_dtype)
    x_TxD = x_TxD.astype(self.compute_dtype)
    mesh = jax.sharding.get_abstract_mesh()
    stats = {}
    if mesh.empty or mesh.size == 1:
      y_TxD, dropped = dispatch_local(x_TxD, routing.experts_TxK, routing.weights_TxK,
                                      cast(self.wi_gate), cast(self.wi_up), cast(self.wo), self.cfg)
    else:
      # Imported here: expert_parallel builds on this module's plans and permutations.
      from ling_jax import expert_parallel  # pylint: disable=import-outside-toplevel
      ep = mesh.shape.get('expert', 1) > 1
      y_TxD, dropped, rows = expert_parallel.routed(
          x_TxD, routing.experts_TxK, routing.weights_TxK, cast(self.wi_gate), cast(self.wi_up),
          cast(self.wo), self.cfg.transport if ep else 'local', self.cfg)
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
