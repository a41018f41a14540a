"""FLOP and parameter accounting against numbers printed in the paper and hand counts."""

import subprocess
import sys

import jax
import pytest
from flax import nnx

from configs import paper_tables as tables
from fitting import laws
from ling_jax import config as config_lib
from ling_jax import flops
from ling_jax import model as model_lib


def arch(
    n_layers,
    d_model,
    n_heads,
    n_kv_heads,
    n_experts=0,
    top_k=0,
    n_shared=0,
    d_expert=0,
    head_dim=None,
    **kw,
):
  return flops.Architecture(
      n_layers=n_layers,
      d_model=d_model,
      n_heads=n_heads,
      n_kv_heads=n_kv_heads,
      seq_len=kw.pop('seq_len', 4096),
      vocab_size=126_464,
      n_experts=n_experts,
      top_k=top_k,
      n_shared=n_shared,
      d_expert=d_expert,
      head_dim=head_dim,
      **kw,
  )


def spread(values):
  return max(values) / min(values) - 1


@pytest.mark.parametrize('group', tables.TABLE_7)
def test_table7_groups_are_iso_flop(group):
  n_layers, d_model, d_expert, heads, kv = group
  rows = [arch(n_layers, d_model, heads, kv, E, 2, 1, d_expert) for E in tables.TABLE_7_EXPERTS]
  assert spread([flops.paper_flops_per_token(a) for a in rows]) == 0
  # The rows differ only in E, which M leaves out: the equality alone holds for any formula. By
  # hand (arXiv 2507.17702 App. C, s = 4096, g = heads / kv): M = 3 x layers x (4 d^2 + 4 d^2 / g
  # + 4 s d + 6 d (E_a + E_s) d_expert).
  d, g = d_model, heads / kv
  by_hand = 3 * n_layers * (4 * d * d + 4 * d * d / g + 4 * 4096 * d + 6 * d * 3 * d_expert)
  assert flops.paper_flops_per_token(rows[0]) == by_hand
  totals = [flops.non_embedding_params(a) for a in rows]
  assert totals == sorted(totals) and totals[0] < totals[-1]  # more experts, more parameters


@pytest.mark.parametrize('group', tables.TABLE_8)
def test_table8_groups_are_iso_flop_up_to_rounded_widths(group):
  (n_layers, d_model, heads, kv), widths = group
  rows = [
      arch(n_layers, d_model, heads, kv, E, Ea, Es, w)
      for (E, Ea, Es), w in zip(tables.TABLE_8_EXPERTS, widths)
  ]
  # The printed widths are 2*d_model/G rounded down (e.g. 106 for 106.67): at most 0.23% off.
  assert spread([flops.paper_flops_per_token(a) for a in rows]) < 2.5e-3
  assert [round(flops.granularity(a)) for a in rows] == [2, 4, 6, 8, 12, 16]


@pytest.mark.parametrize('group', tables.TABLE_9)
def test_table9_groups_are_iso_flop(group):
  n_layers, d_model, heads, kv, d_expert = group
  rows = [
      arch(n_layers, d_model, heads, kv, 256, Ea, Es, d_expert) for Ea, Es in tables.TABLE_9_SPLITS
  ]
  assert spread([flops.paper_flops_per_token(a) for a in rows]) == 0
  assert [round(flops.shared_ratio(a), 3) for a in rows] == [0.833, 0.667, 0.5, 0.333, 0.083, 0]


@pytest.mark.parametrize('group', tables.TABLE_11)
def test_table11_groups_are_iso_flop_only_in_the_papers_convention(group):
  (n_layers, heads, kv), variants = group
  rows = [arch(n_layers, d, heads, kv, 64, 2, 1, w, head_dim=d // heads) for d, w in variants]
  assert spread([flops.paper_flops_per_token(a) for a in rows]) < 2e-3
  # App. C as printed, d^2 (2 + 2/g) for the projections, breaks the designs' iso-FLOP property.
  printed = [
      3
      * (
          a.n_layers * (a.d_model**2 * (2 + 2 * kv / heads) + 4 * 4096 * a.d_model)
          + a.n_layers * 6 * a.d_model * 3 * a.d_expert
      )
      for a in rows
  ]
  assert spread(printed) > 5e-3


def test_ling_mini_beta_parameter_counts():
  # Table 3: 20 layers, d 2048, 16/4 heads, 384 experts of 384, top-12 + 1 shared, N = 17.5B,
  # N_a = 0.85B. The first layer is dense with d_ffn 5120 (arXiv 2507.17702 §5, Table 3).
  a = arch(20, 2048, 16, 4, 384, 12, 1, 384, num_dense_layers=1, d_ffn=5120, seq_len=8192)
  assert flops.non_embedding_params(a) == pytest.approx(17.5e9, rel=0.02)
  assert flops.non_embedding_params(a, active=True) == pytest.approx(0.85e9, rel=0.02)
  assert flops.activation_ratio(a) == pytest.approx(13 / 385)
  assert flops.routed_activation_ratio(a) == pytest.approx(0.03125)


def test_dense_6p1b_parameter_count():
  a = arch(28, 4096, 32, 8, d_ffn=14336, seq_len=8192)
  assert flops.non_embedding_params(a) == pytest.approx(6.11e9, rel=0.01)
  assert flops.activation_ratio(a) == 1.0


def test_hand_counted_flops_of_a_tiny_moe():
  # 2 layers (1 dense of width 8), d 4, 2 heads of 2, 1 kv head, s 3, E 4 of width 2, top-1 + 1
  # shared, vocab 5. Per layer: q,o 2*2*4*4 = 64, k,v 2*2*4*2 = 32, scores 4*3*4 = 48.
  a = flops.Architecture(
      n_layers=2,
      d_model=4,
      n_heads=2,
      n_kv_heads=1,
      seq_len=3,
      vocab_size=5,
      d_ffn=8,
      num_dense_layers=1,
      n_experts=4,
      top_k=1,
      n_shared=1,
      d_expert=2,
  )
  attention = 64 + 32 + 48
  dense_ffn, moe_ffn = 6 * 4 * 8, 6 * 4 * 2 * 2
  assert flops.paper_flops_per_token(a) == 3 * (2 * attention + dense_ffn + moe_ffn)
  hardware = 3 * (2 * (96 + 24) + dense_ffn + moe_ffn + 2 * 4 * 4 + 2 * 4 * 5)
  assert flops.hardware_flops_per_token(a) == hardware
  # Parameters: per layer 2 norms (8) + attention 4*4 + 4*2 + 4*2 + 4*4 = 48.
  dense_layer = 8 + 48 + 3 * 4 * 8
  moe_total = 8 + 48 + 4 * 4 + 3 * 4 * 2 * 5
  moe_active = 8 + 48 + 4 * 4 + 3 * 4 * 2 * 2
  assert flops.non_embedding_params(a) == dense_layer + moe_total + 4
  assert flops.non_embedding_params(a, active=True) == dense_layer + moe_active + 4
  assert flops.six_n_flops_per_token(a) == 6 * (dense_layer + moe_active + 4)
  assert flops.granularity(a) == 4.0 and flops.shared_ratio(a) == 0.5


SMALL_MODELS = [
    dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_ffn=64),
    dict(
        n_layers=3,
        d_model=32,
        n_heads=4,
        n_kv_heads=1,
        d_ffn=48,
        n_experts=8,
        top_k=2,
        n_shared=1,
        d_expert=16,
        num_dense_layers=1,
    ),
    dict(
        n_layers=2,
        d_model=48,
        n_heads=4,
        n_kv_heads=4,
        n_experts=6,
        top_k=3,
        n_shared=2,
        granularity=6.0,
        tie_embeddings=True,
        qk_norm=True,
        head_dim=16,
    ),
    dict(
        n_layers=4,
        d_model=32,
        n_heads=2,
        n_kv_heads=1,
        d_ffn=40,
        n_experts=4,
        top_k=1,
        d_expert=8,
        num_dense_layers=3,
        vocab_size=300,
    ),
]


@pytest.mark.parametrize('fields', SMALL_MODELS)
def test_parameter_count_equals_instantiated_model(fields):
  c = config_lib.base_config()
  c.model.update(**fields)
  c.train.tokens = 10**6
  spec = config_lib.validate(c)
  a = spec.arch
  abstract = nnx.eval_shape(lambda: model_lib.Transformer(spec, rngs=nnx.Rngs(0)))
  counted = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert counted == flops.total_params(a)
  embedding = c.model.vocab_size * c.model.d_model * (1 if c.model.tie_embeddings else 2)
  assert counted - embedding == flops.non_embedding_params(a)


def test_flops_and_laws_import_without_jax():
  code = (
      'import sys; import ling_jax.flops, fitting.model_design, fitting.laws, fitting.fit, '
      'fitting.predict, fitting.design, fitting.synthetic; '
      'assert "jax" not in sys.modules, sorted(m for m in sys.modules if "jax" in m)'
  )
  subprocess.run([sys.executable, '-c', code], check=True)


# Ling 2.0 Table 1 (arXiv 2510.22115): 20T tokens, 4 KV heads, 256 experts, top-8 + 1 shared.
LING_2 = [
    ('mini', arch(20, 2048, 16, 4, 256, 8, 1, 512, num_dense_layers=1, d_ffn=5120), 3.36e-4, 4400),
    (
        'flash',
        arch(32, 4096, 32, 4, 256, 8, 1, 1024, num_dense_layers=1, d_ffn=9216),
        2.61e-4,
        8352,
    ),
    ('1T', arch(80, 8192, 64, 4, 256, 8, 1, 2048, num_dense_layers=4, d_ffn=18432), 1.86e-4, 18144),
]


@pytest.mark.parametrize('name,a,lr,batch_sequences', LING_2)
def test_hyperparameter_law_reproduces_ling2_table1(name, a, lr, batch_sequences):
  compute = flops.paper_flops_per_token(a) * 20e12
  assert laws.MOE_LEARNING_RATE(compute) == pytest.approx(lr, rel=0.01)
  assert laws.MOE_BATCH_TOKENS(compute) / 4096 == pytest.approx(batch_sequences, rel=0.04)


def test_allocation_laws_multiply_to_compute():
  for compute in (1e18, 1e21, 1e24):
    assert laws.MOE_OPTIMAL_M(compute) * laws.MOE_OPTIMAL_D(compute) == pytest.approx(
        compute, rel=1e-3
    )
    assert laws.DENSE_OPTIMAL_M(compute) * laws.DENSE_OPTIMAL_D(compute) == pytest.approx(
        compute, rel=1e-3
    )
