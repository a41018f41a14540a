"""Expert-parallel dispatch: the routed experts inside one `jax.shard_map` over the mesh.

Tokens arrive sharded over the batch axes (data, fsdp, expert); expert weights sharded over
`expert` (gathered over fsdp at entry). Routing, router losses and expert counts are computed
before the shard_map on the global batch, so they are the global statistics. The transport
between the devices of the `expert` axis is pluggable:

  * 'a2a'        fixed per-destination capacity, `jax.lax.all_to_all` out and back, static
                 shapes. Send buffer per destination: C_send = ceil(cf T k / n) rows, dropless
                 T min(k, E_local) (the worst case: every local token sends all its k
                 assignments to one shard). Receive side: ceil(cf n T k / E) rows per local
                 expert, dropless n C_send. Assignments past either capacity are dropped in
                 token order (stable sort) and counted exactly.
  * 'ring'       all-gather the tokens over `expert`, compute the local experts on all of them,
                 `psum_scatter` the results back. Per local expert ceil(cf n T k / E) rows,
                 dropless n T.
  * 'ragged_a2a' dropless `jax.lax.ragged_all_to_all` (GPU/TPU only; XLA:CPU has no kernel).
                 Its offsets and sizes come from `ragged_a2a_params`, unit-tested on CPU.
Shape letters: T local tokens, K top-k, A = T K, n expert-axis size, El local experts, R rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ling_jax import dispatch as dispatch_lib

EXPERT_AXIS = 'expert'


def local_experts(src_NxD, ids_NxK, wg, wu, wo, slots: int):
  """Rows of `src` through the local experts `ids` (-1: not here). Returns y [N K, D] (zero for
  rows not computed) and the count of valid assignments dropped for capacity."""
  El = wg.shape[0]
  N, K = ids_NxK.shape
  bucket_NxK = jnp.where(ids_NxK >= 0, ids_NxK, El)  # bucket El collects the invalid ones
  plan = dispatch_lib.capacity_plan(bucket_NxK, El + 1, slots)
  n_rows = El * slots
  row_of_assignment = jnp.where(plan.row_of_assignment < n_rows, plan.row_of_assignment, n_rows)
  rows_RxD = dispatch_lib.permute_rows(
      src_NxD, plan.token_of_row[:n_rows], row_of_assignment.reshape(N, K)
  )
  y_RxD = dispatch_lib.swiglu_capacity(rows_RxD, wg, wu, wo)
  y_AxD = dispatch_lib.permute_rows(y_RxD, row_of_assignment, plan.assignment_of_row[:n_rows, None])
  valid_A = (ids_NxK >= 0).reshape(-1)
  dropped = jnp.sum(valid_A & (row_of_assignment >= n_rows))
  return y_AxD, dropped


@jax.named_scope('transport_local')
def local(x_TxD, experts_TxK, weights_TxK, wg, wu, wo, opts):
  """An expert axis of 1: each batch shard dispatches its own tokens to its full set of
  experts with the configured dispatch (capacity einsum or a dropless grouped matmul), no
  communication."""
  y_TxD, dropped = dispatch_lib.dispatch_local(x_TxD, experts_TxK, weights_TxK, wg, wu, wo, opts)
  return y_TxD, dropped, 0


@jax.named_scope('transport_a2a')
def a2a(x_TxD, experts_TxK, weights_TxK, wg, wu, wo, opts):
  """Returns (y [T, D] f32, dropped assignments, rows sent per direction)."""
  n = jax.lax.axis_size(EXPERT_AXIS)
  El = wg.shape[0]
  T, K = experts_TxK.shape
  D = x_TxD.shape[-1]
  c_send = dispatch_lib.capacity(T * K, n, T * min(K, El), opts.capacity_factor)
  send = dispatch_lib.capacity_plan(experts_TxK // El, n, c_send)
  send_rows = dispatch_lib.permute_rows(
      x_TxD, send.token_of_row, send.row_of_assignment.reshape(T, K)
  )
  local_ids = (experts_TxK % El).reshape(-1)
  send_ids = jnp.where(
      send.assignment_of_row < T * K, local_ids[jnp.minimum(send.assignment_of_row, T * K - 1)], -1
  )
  exchange = lambda a: jax.lax.all_to_all(
      a.reshape(n, c_send, *a.shape[1:]), EXPERT_AXIS, 0, 0, tiled=True
  ).reshape(a.shape)
  recv_rows, recv_ids = exchange(send_rows), exchange(send_ids)
  slots = dispatch_lib.capacity(n * T * K, n * El, n * c_send, opts.capacity_factor)
  y_recv, dropped_here = local_experts(recv_rows, recv_ids[:, None], wg, wu, wo, slots)
  y_back = exchange(y_recv.reshape(n * c_send, D))
  y_AxD = dispatch_lib.permute_rows(y_back, send.row_of_assignment, send.assignment_of_row[:, None])
  dropped = jnp.sum(~send.kept) + dropped_here
  return dispatch_lib.combine(y_AxD, weights_TxK), dropped, n * c_send


@jax.named_scope('transport_ring')
def ring(x_TxD, experts_TxK, weights_TxK, wg, wu, wo, opts):
  n = jax.lax.axis_size(EXPERT_AXIS)
  shard = jax.lax.axis_index(EXPERT_AXIS)
  El = wg.shape[0]
  T, K = experts_TxK.shape
  gather = lambda a: jax.lax.all_gather(a, EXPERT_AXIS, tiled=True)
  x_all, experts_all, weights_all = gather(x_TxD), gather(experts_TxK), gather(weights_TxK)
  index_here = experts_all - shard * El  # each assignment's expert among this shard's
  ids = jnp.where((index_here >= 0) & (index_here < El), index_here, -1)
  slots = dispatch_lib.capacity(n * T * K, n * El, n * T, opts.capacity_factor)
  y_AxD, dropped = local_experts(x_all, ids, wg, wu, wo, slots)
  y_all = dispatch_lib.combine(y_AxD, weights_all)
  y_TxD = jax.lax.psum_scatter(y_all, EXPERT_AXIS, scatter_dimension=0, tiled=True)
  return y_TxD, dropped, n * T  # rows received: the all-gathered tokens


def ragged_a2a_params(counts_NxN, shard):
  """Offsets and sizes for `jax.lax.ragged_all_to_all`, from the matrix counts[i, j] = rows
  shard i sends to shard j (every shard holds the same matrix after an all_gather).

  Returns (input_offsets, send_sizes, output_offsets, recv_sizes) of shard `shard`:
  its rows for shard j start at input_offsets[j] of its (destination-sorted) send buffer; they
  land at output_offsets[j] in shard j's receive buffer, after the rows of shards 0..shard-1.
  """
  send_sizes = counts_NxN[shard]
  input_offsets = jnp.cumsum(send_sizes) - send_sizes
  before_me = jnp.cumsum(counts_NxN, axis=0) - counts_NxN  # [i, j]: rows j gets from shards < i
  output_offsets = before_me[shard]
  recv_sizes = counts_NxN[:, shard]
  return input_offsets, send_sizes, output_offsets, recv_sizes


@jax.named_scope('transport_ragged_a2a')
def ragged_a2a(x_TxD, experts_TxK, weights_TxK, wg, wu, wo, opts):
  """Dropless exchange of exactly the rows each shard needs (accelerators only)."""
  matmul = opts.matmul() if opts.dropless else jax.lax.ragged_dot  # the exchange is dropless
  n = jax.lax.axis_size(EXPERT_AXIS)
  El = wg.shape[0]
  T, K = experts_TxK.shape
  plan = dispatch_lib.dropless_plan(experts_TxK, n * El)  # rows sorted by global expert
  rows = dispatch_lib.permute_rows(x_TxD, plan.token_of_row, plan.row_of_assignment.reshape(T, K))
  per_shard = plan.group_sizes.reshape(n, El).sum(axis=1)
  counts = jax.lax.all_gather(per_shard, EXPERT_AXIS)  # [n senders, n receivers]
  shard = jax.lax.axis_index(EXPERT_AXIS)
  params = ragged_a2a_params(counts, shard)
  recv_sizes = params[3]
  buffer = T * K * min(n, El)  # worst case: every shard sends all its rows here, k per token
  received = jax.lax.ragged_all_to_all(
      rows, jnp.zeros((buffer, rows.shape[1]), rows.dtype), *params, axis_name=EXPERT_AXIS
  )
  # Received rows come by sender, each sender's sorted by expert: rebuild each row's expert.
  group_sizes = jax.lax.all_gather(plan.group_sizes.reshape(n, El), EXPERT_AXIS)[:, shard]
  local_counts = group_sizes.sum(axis=0)
  source_rows = jnp.cumsum(group_sizes.reshape(-1))
  expert_of_row = jnp.searchsorted(source_rows, jnp.arange(buffer), side='right') % El
  valid = jnp.arange(buffer) < recv_sizes.sum()
  order = jnp.argsort(jnp.where(valid, expert_of_row, El), stable=True)
  h = dispatch_lib.swiglu_ragged(received[order], wg, wu, wo, local_counts, matmul)
  y_received = jnp.zeros_like(h).at[order].set(h)
  # The way back is the way out with senders and receivers swapped: the transposed counts.
  back = jax.lax.ragged_all_to_all(
      y_received, jnp.zeros_like(rows), *ragged_a2a_params(counts.T, shard), axis_name=EXPERT_AXIS
  )
  y_AxD = dispatch_lib.permute_rows(back, plan.row_of_assignment, plan.assignment_of_row[:, None])
  return dispatch_lib.combine(y_AxD, weights_TxK), jnp.zeros((), jnp.int32), buffer


TRANSPORTS = {'local': local, 'a2a': a2a, 'ring': ring, 'ragged_a2a': ragged_a2a}


def routed(x_TxD, experts_TxK, weights_TxK, wg, wu, wo, transport: str, opts):
  """The routed experts over the current mesh. Returns (y [T, D] f32, dropped assignments,
  a2a rows per device per direction)."""
  fn = TRANSPORTS[transport]
  batch = P(opts.batch_axes)
  weights = P(EXPERT_AXIS)

  def body(x, experts, w_k, wg, wu, wo):
    y, dropped, rows = fn(x, experts, w_k, wg, wu, wo, opts)
    return y, dropped.reshape(1), jnp.full((1,), rows, jnp.int32)

  y, dropped, rows = jax.shard_map(
      body,
      in_specs=(batch, batch, batch, weights, weights, weights),
      out_specs=(batch, batch, batch),
  )(x_TxD, experts_TxK, weights_TxK, wg, wu, wo)
  return y, dropped.sum(), rows
