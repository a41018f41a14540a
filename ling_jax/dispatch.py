"""Routed experts' dispatch on one device: sort-by-expert plans, row permutations, the grouped
matmuls and the combine; the expert-parallel transports (`expert_parallel`) build on these.

Shape letters: T tokens, K experts per token (top_k), A = T*K assignments, E experts,
C capacity slots per expert, R rows of the expert-grouped buffer, N blocks, D d_model, F d_expert.

Dispatch sorts the A assignments by expert (stable, so earlier tokens win when an expert is
full) and moves token rows into an expert-grouped buffer:
  * 'einsum': a capacity-padded [E, C, D] buffer and batched matmuls; fast everywhere, drops
    assignments past capacity (counted and logged);
  * 'blocks': each expert's rows padded to whole blocks, every block through its expert's
    gathered weights in one batched matmul; dropless with static shapes (the CPU's dropless
    dispatch: byte-level tokens route by identity, and capacity limits drop 15-25% of them);
  * 'ragged_dot' / 'tokamax': an [A, D] buffer and a grouped matmul (`grouped_matmul`);
    dropless (use on accelerators, XLA:CPU lowers ragged_dot to a masked dense matmul).
Both directions of the row permutation are gathers, also in the backward pass (`permute_rows`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ling_jax import flops
from ling_jax import grouped_matmul
from ling_jax.spec import MoEOptions

# --- Row permutation with a gather-only backward pass ---------------------------------------------


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


@jax.named_scope('dispatch_plan')
def dropless_plan(experts_TxK, n_experts: int) -> DispatchPlan:
  """Rows are the assignments in expert order: [A] rows, nothing dropped."""
  _, order_A, counts_E, _, rank_A = _sort_by_expert(experts_TxK, n_experts)
  K = experts_TxK.shape[1]
  return DispatchPlan(order_A // K, rank_A, order_A, counts_E, jnp.ones_like(rank_A, bool))


@jax.named_scope('dispatch_plan')
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
  n_rows = flops.block_buffer_rows(A, n_experts, block)
  row_of_assignment = padded_starts_E[flat_A] + rank_A - starts_E[flat_A]
  row_R = jnp.arange(n_rows)
  expert_R = jnp.minimum(jnp.searchsorted(ends_E, row_R, side='right'), n_experts - 1)
  position_R = row_R - padded_starts_E[expert_R]
  filled_R = (row_R < ends_E[-1]) & (position_R < counts_E[expert_R])
  assignment_of_row = jnp.where(
      filled_R, order_A[jnp.minimum(starts_E[expert_R] + position_R, A - 1)], A
  )
  plan = DispatchPlan(
      assignment_of_row // K,
      row_of_assignment,
      assignment_of_row,
      counts_E,
      jnp.ones_like(rank_A, bool),
  )
  return plan, expert_R[::block]


@jax.named_scope('dispatch_plan')
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
  return DispatchPlan(
      assignment_of_row // K,
      row_of_assignment,
      assignment_of_row,
      jnp.minimum(counts_E, slots),
      kept_A,
  )


# --- Expert computation --------------------------------------------------------------------------


@jax.named_scope('expert_matmuls')
def swiglu_capacity(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD):
  E = wg_ExDxF.shape[0]
  x_ExCxD = rows_RxD.reshape(E, -1, rows_RxD.shape[-1])
  h_ExCxF = jax.nn.silu(jnp.einsum('ecd,edf->ecf', x_ExCxD, wg_ExDxF)) * jnp.einsum(
      'ecd,edf->ecf', x_ExCxD, wu_ExDxF
  )
  return jnp.einsum('ecf,efd->ecd', h_ExCxF, wo_ExFxD).reshape(rows_RxD.shape)


@jax.named_scope('expert_matmuls')
def swiglu_blocks(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD, expert_N):
  """Blocks of rows, each through its own expert's weights (gathered per block)."""
  N = expert_N.shape[0]
  x_NxBxD = rows_RxD.reshape(N, -1, rows_RxD.shape[-1])
  take = lambda w: jnp.take(w, expert_N, axis=0)
  h_NxBxF = jax.nn.silu(jnp.einsum('nbd,ndf->nbf', x_NxBxD, take(wg_ExDxF))) * jnp.einsum(
      'nbd,ndf->nbf', x_NxBxD, take(wu_ExDxF)
  )
  return jnp.einsum('nbf,nfd->nbd', h_NxBxF, take(wo_ExFxD)).reshape(rows_RxD.shape)


@jax.named_scope('expert_matmuls')
def swiglu_ragged(
    rows_RxD,
    wg_ExDxF,
    wu_ExDxF,
    wo_ExFxD,
    group_sizes_E,
    matmul: grouped_matmul.GroupedMatmul = jax.lax.ragged_dot,
):
  h_RxF = jax.nn.silu(matmul(rows_RxD, wg_ExDxF, group_sizes_E)) * matmul(
      rows_RxD, wu_ExDxF, group_sizes_E
  )
  return matmul(h_RxF, wo_ExFxD, group_sizes_E)


@jax.named_scope('combine')
def combine(y_AxD, weights_TxK):
  """Each token's expert outputs, weighted and summed over its k assignments, in f32."""
  T, K = weights_TxK.shape
  return jnp.einsum('tkd,tk->td', y_AxD.reshape(T, K, -1).astype(jnp.float32), weights_TxK)


def dispatch_local(x_TxD, experts_TxK, weights_TxK, wg_ExDxF, wu_ExDxF, wo_ExFxD, opts: MoEOptions):
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
    y_RxD = swiglu_ragged(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD, plan.group_sizes, opts.matmul())
  else:
    y_RxD = swiglu_capacity(rows_RxD, wg_ExDxF, wu_ExDxF, wo_ExFxD)
  y_AxD = permute_rows(y_RxD, plan.row_of_assignment, plan.assignment_of_row[:, None])
  return combine(y_AxD, weights_TxK), jnp.sum(~plan.kept)
