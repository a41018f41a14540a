"""The MoE layer against a naive per-token loop over experts, and the routers' rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ling_jax import config as config_lib
from ling_jax import dispatch as dispatch_lib
from ling_jax import layers
from ling_jax import moe as moe_lib
from ling_jax import spec as spec_lib

T_BATCH, T_LEN, D, E, K, F = 2, 8, 16, 8, 2, 12


def make_moe(
    router='softmax',
    dispatch='einsum',
    capacity_factor=0.0,
    n_experts=E,
    top_k=K,
    n_shared=1,
    renormalize=False,
    n_groups=1,
    top_groups=1,
    seed=0,
    **moe
):
  c = config_lib.base_config()
  c.model.update(
      d_model=D, n_experts=n_experts, top_k=top_k, n_shared=n_shared, d_expert=F, init_std=0.3
  )
  c.moe.update(
      router=router,
      dispatch=dispatch,
      capacity_factor=capacity_factor,
      renormalize=renormalize,
      routed_scaling=2.5 if router == 'sigmoid_bias' else 1.0,
      n_groups=n_groups,
      top_groups=top_groups,
      **moe
  )
  layer = moe_lib.MoE(spec_lib.build(c), rngs=nnx.Rngs(seed))
  if router == 'sigmoid_bias':  # a non-zero bias, so that selection and weights differ
    layer.router_bias[...] = jax.random.normal(jax.random.key(seed + 1), (n_experts,)) * 0.2
  return layer


def swiglu(x, wg, wu, wo):
  return (jax.nn.silu(x @ wg) * (x @ wu)) @ wo


def naive_moe(params, bias, x_BxLxD, layer, chosen):
  """Token by token, expert by expert; `chosen[t]` are the experts picked for token t."""
  x_TxD = x_BxLxD.reshape(-1, x_BxLxD.shape[-1])
  outputs = []
  for t in range(x_TxD.shape[0]):
    logits = x_TxD[t] @ params['router']
    if layer.cfg.router == 'softmax':
      weights = jax.nn.softmax(logits)[chosen[t]]
      if layer.cfg.renormalize:
        weights = weights / weights.sum()
    else:
      weights = jax.nn.sigmoid(logits)[chosen[t]]
      weights = weights / weights.sum() * layer.cfg.routed_scaling
    y = jnp.zeros(x_TxD.shape[-1])
    for weight, e in zip(weights, chosen[t]):
      y = y + weight * swiglu(x_TxD[t], params['wi_gate'][e], params['wi_up'][e], params['wo'][e])
    if 'shared' in params:
      s = params['shared']
      y = y + swiglu(x_TxD[t], s['gate']['kernel'], s['up']['kernel'], s['out']['kernel'])
    outputs.append(y)
  return jnp.stack(outputs).reshape(x_BxLxD.shape)


def naive_choice(params, bias, x_BxLxD, layer):
  x_TxD = np.asarray(x_BxLxD).reshape(-1, D)
  logits = x_TxD @ np.asarray(params['router'])
  if layer.cfg.router == 'softmax':
    score = logits  # softmax is monotone
  else:
    score = 1 / (1 + np.exp(-logits)) + np.asarray(bias)
  return [np.argsort(-row, kind='stable')[: layer.top_k] for row in score]


# renormalize is a softmax-router option: the sigmoid router always normalises its weights.
@pytest.mark.parametrize(
    'router, renormalize', [('softmax', False), ('softmax', True), ('sigmoid_bias', False)]
)
@pytest.mark.parametrize('dispatch', ['einsum', 'blocks', 'ragged_dot', 'tokamax'])
def test_matches_naive_loop_forward_and_gradients(router, dispatch, renormalize):
  # tokamax through its XLA implementation: its Pallas kernels do not run on CPU.
  extra = dict(tokamax_implementation='xla') if dispatch == 'tokamax' else {}
  layer = make_moe(router, dispatch, renormalize=renormalize, **extra)
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  bias = layer.router_bias[...] if router == 'sigmoid_bias' else None
  x = jax.random.normal(jax.random.key(3), (T_BATCH, T_LEN, D))
  chosen = naive_choice(params, bias, x, layer)
  target = jax.random.normal(jax.random.key(4), x.shape)

  def loss_layer(p, x):
    y, stats = nnx.merge(graphdef, p, rest)(x)
    assert float(stats['dropped_fraction']) == 0.0
    return jnp.sum(y * target)

  def loss_naive(p, x):
    return jnp.sum(naive_moe(p, bias, x, layer, chosen) * target)

  y_layer, _ = nnx.merge(graphdef, params, rest)(x)
  np.testing.assert_allclose(
      y_layer, naive_moe(params, bias, x, layer, chosen), rtol=2e-5, atol=2e-6
  )
  g_layer = jax.grad(loss_layer, argnums=(0, 1))(params, x)
  g_naive = jax.grad(loss_naive, argnums=(0, 1))(params, x)
  for got, want in zip(jax.tree.leaves(g_layer), jax.tree.leaves(g_naive)):
    # float32 sums differ in order between the two: absolute error scales with the largest term.
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6 * float(np.max(np.abs(want))))


@pytest.mark.parametrize('dispatch', ['einsum', 'blocks', 'ragged_dot'])
def test_one_expert_top1_equals_dense_ffn(dispatch):
  layer = make_moe(dispatch=dispatch, n_experts=1, top_k=1, n_shared=0)
  c = config_lib.base_config()
  dense = layers.SwiGLU(D, F, spec_lib.build(c), rngs=nnx.Rngs(0))
  dense.gate.kernel[...] = layer.wi_gate[0]
  dense.up.kernel[...] = layer.wi_up[0]
  dense.out.kernel[...] = layer.wo[0]
  x = jax.random.normal(jax.random.key(5), (T_BATCH, T_LEN, D))
  np.testing.assert_allclose(layer(x)[0], dense(x), rtol=1e-5, atol=1e-6)


def naive_drop_count(experts_TxK, n_experts, slots):
  """Assignments in token-major order fill each expert's slots first come, first served."""
  used = [0] * n_experts
  dropped = 0
  for row in experts_TxK:
    for e in row:
      if used[e] < slots:
        used[e] += 1
      else:
        dropped += 1
  return dropped


@pytest.mark.parametrize('capacity_factor', [0.5, 1.0])
def test_capacity_drops_exactly_the_late_assignments(capacity_factor):
  rng = np.random.default_rng(0)
  T = 40
  experts_TxK = np.stack(
      [rng.choice(E, size=K, replace=False, p=np.linspace(1, 3, E) / 16) for _ in range(T)]
  )
  slots = dispatch_lib.capacity(T * K, E, T, capacity_factor)
  plan = dispatch_lib.capacity_plan(jnp.asarray(experts_TxK), E, slots)
  assert int((~plan.kept).sum()) == naive_drop_count(experts_TxK, E, slots) > 0
  # Each kept assignment sits in its expert's block of rows, and the inverse maps are consistent.
  rows = np.asarray(plan.row_of_assignment)
  kept = np.asarray(plan.kept)
  assert np.all(rows[kept] // slots == experts_TxK.reshape(-1)[kept])
  assert np.all(np.asarray(plan.assignment_of_row)[rows[kept]] == np.flatnonzero(kept))


def test_capacity_einsum_output_drops_match_naive():
  layer = make_moe(capacity_factor=0.5, n_shared=0)
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  x = jax.random.normal(jax.random.key(7), (T_BATCH, T_LEN, D))
  y, stats = layer(x)
  chosen = naive_choice(params, None, x, layer)
  slots = dispatch_lib.capacity(T_BATCH * T_LEN * K, E, T_BATCH * T_LEN, 0.5)
  used, kept_chosen = [0] * E, []
  for row in chosen:  # drop assignments past capacity, first come first served
    kept_row = []
    for e in row:
      kept_row.append(used[e] < slots)
      used[e] += 1
    kept_chosen.append(kept_row)
  x_TxD = x.reshape(-1, D)
  expected = []
  for t, row in enumerate(chosen):
    probs = jax.nn.softmax(x_TxD[t] @ params['router'])
    expected.append(
        sum(
            (
                probs[e]
                * swiglu(x_TxD[t], params['wi_gate'][e], params['wi_up'][e], params['wo'][e])
                for e, keep in zip(row, kept_chosen[t])
                if keep
            ),
            jnp.zeros(D),
        )
    )
  np.testing.assert_allclose(y, jnp.stack(expected).reshape(x.shape), rtol=2e-5, atol=2e-6)
  n_dropped = sum(not k for row in kept_chosen for k in row)
  assert float(stats['dropped_fraction']) == pytest.approx(n_dropped / (T_BATCH * T_LEN * K))


def test_load_balance_loss_is_one_when_balanced_and_hand_counted():
  probs = jnp.full((4, 4), 0.25)
  counts = moe_lib.expert_counts(jnp.array([[0], [1], [2], [3]]), 4)
  assert float(moe_lib.load_balance_loss(probs, counts)) == pytest.approx(1.0)
  probs = jnp.array([[0.7, 0.1, 0.1, 0.1]] * 2)
  counts = moe_lib.expert_counts(jnp.array([[0], [0]]), 4)
  # E * sum_e f_e P_e = 4 * (1.0 * 0.7)
  assert float(moe_lib.load_balance_loss(probs, counts)) == pytest.approx(2.8)


def test_group_limited_routing_picks_only_from_the_best_groups():
  rng = np.random.default_rng(1)
  choice = rng.normal(size=(32, 16)).astype(np.float32)
  mask = np.asarray(moe_lib.group_limited_mask(jnp.asarray(choice), n_groups=4, top_groups=2))
  for row, keep in zip(choice, mask):
    group_scores = [sorted(g)[-2:] for g in row.reshape(4, 4)]
    best = np.argsort([-sum(s) for s in group_scores])[:2]
    expected = np.zeros(16, bool)
    for g in best:
      expected[g * 4 : (g + 1) * 4] = True
    np.testing.assert_array_equal(keep, expected)


def test_bias_update_is_zero_centred_sign_rule():
  counts = jnp.array([[10.0, 2.0, 4.0, 0.0]])
  new = moe_lib.bias_update(jnp.zeros((1, 4)), counts, rate=0.1)
  # mean load 4: signs of (4 - load) are -1, +1, 0, +1; their mean 0.25 is subtracted.
  np.testing.assert_allclose(new, [[0.1 * (-1.25), 0.1 * 0.75, 0.1 * -0.25, 0.1 * 0.75]])


def test_bias_rule_balances_a_skewed_router():
  layer = make_moe('sigmoid_bias', n_shared=0)
  layer.router_bias[...] = jnp.zeros(E)
  layer.router[...] = layer.router[...].at[:, 0].add(0.3).at[:, 1].add(0.2)
  x = jax.random.normal(jax.random.key(9), (4, 16, D)) + 0.5  # so experts 0 and 1 win most

  def imbalance():
    routing = layer.route(x.reshape(-1, D))
    counts = moe_lib.expert_counts(routing.experts_TxK, E)
    return float(counts.max() / counts.mean()), counts

  before, counts = imbalance()
  for _ in range(200):
    layer.router_bias[...] = moe_lib.bias_update(layer.router_bias[...], counts, rate=0.01)
    after, counts = imbalance()
  assert before > 2.0
  assert after < 1.5
  assert after < before / 2


@pytest.mark.parametrize(
    'backend,implementation,tiles',
    [
        ('ragged_dot', '', ()),
        ('tokamax', 'xla', ()),
        ('tokamax', '', ()),
        ('tokamax', '', (128, 128, 128)),
    ],
)
def test_grouped_matmul_matches_a_row_loop(backend, implementation, tiles):
  """Each row times its group's matrix; on CPU tokamax falls back to XLA, tiles included."""
  from ling_jax import grouped_matmul

  x = jax.random.normal(jax.random.key(0), (12, 8))
  w = jax.random.normal(jax.random.key(1), (3, 8, 5))
  sizes = np.array([4, 0, 8])
  group_of_row = np.repeat(np.arange(3), sizes)
  expected = np.stack([np.asarray(x[r]) @ np.asarray(w[g]) for r, g in enumerate(group_of_row)])
  out = grouped_matmul.make(backend, implementation, tiles)(x, w, jnp.asarray(sizes, jnp.int32))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('block', [1, 4, 16])
def test_block_plan_places_every_assignment_once_in_its_experts_blocks(block):
  """Hand count: each expert's rows start on a block boundary, in token order, nothing dropped,
  and every block belongs to one expert."""
  experts = np.random.default_rng(0).integers(0, 5, (11, 3))
  experts[:, 1] = (experts[:, 0] + 1) % 5  # distinct experts per token
  experts[:, 2] = (experts[:, 0] + 2) % 5
  plan, expert_of_block = dispatch_lib.block_plan(jnp.asarray(experts), 5, block)
  rows = np.asarray(plan.row_of_assignment)
  assert len(set(rows.tolist())) == experts.size  # one row each, none dropped
  start = 0
  for e in range(5):
    mine = [a for a in range(experts.size) if experts.reshape(-1)[a] == e]  # token order
    assert rows[mine].tolist() == list(range(start, start + len(mine)))
    assert all(int(expert_of_block[r // block]) == e for r in rows[mine])
    start += -(-len(mine) // block) * block
  assignment_of_row = np.asarray(plan.assignment_of_row)
  assert [assignment_of_row[r] for r in rows] == list(range(experts.size))
  assert (assignment_of_row == experts.size).sum() == len(assignment_of_row) - experts.size
