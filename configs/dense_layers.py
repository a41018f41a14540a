"""First-k dense layers (paper Sec. 4.1.4, App. D, Table 10): 0, 1, 2 or 3 of 60 layers dense.

  python -m experiments.run --config=configs/dense_layers.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/dense_layers.py:local --workdir=/tmp/studies

E = 64, E_a = 2, E_s = 1, d_expert = d_model; 6 groups x 4 = 24 members. `paper` (default) uses
Table 10 as printed: 60 layers and d_ffn = 4 d_model (mostly), which is wider than the 3 d_model of
the activated experts, so M grows slightly with the number of dense layers (the text says it
matches; arXiv 2507.17702 §4.1.4, App. D, Table 10). `local` (CPU; the three local budgets, at
each group's width) sets d_ffn = 3 d_expert, iso-M as the text intends, and stacks as many layers
as the budget allows, at most 12, while the run keeps LOCAL_MIN_STEPS steps of at least one
sequence (9, 12 and 12 layers; local_layers); the batch shrinks to keep the steps. The paper
found almost no effect (EL ~ 1), the best count growing with budget: 0 at 1e18, 2-3 of 60 at 3e20.
"""

import dataclasses

from configs import common
from configs import paper_tables as tables
from experiments import member as member_lib
from experiments import protocol
from fitting import model_design as design_lib
from ling_jax import config as config_lib
from ling_jax import flops

LAYERS = {'paper': 60, 'local': 12, 'smoke': 4}


def local_layers(group: member_lib.Group) -> tuple[int, int]:
  """(layers, batch in sequences) of a local group's members: the deepest stack, at most
  LAYERS['local'], whose tokens at the group's budget fill LOCAL_MIN_STEPS steps of one
  sequence, and the group's batch shrunk to keep those steps."""
  local = common.SCALE['local']
  for n_layers in range(LAYERS['local'], max(tables.TABLE_10_DENSE), -1):
    backbone = (n_layers, group.d_model, group.n_heads, group.n_kv_heads)
    fields = design_lib.model_fields(
        backbone, design_lib.MoEShape(64, 2, 1, d_expert=group.d_model)
    )
    m = flops.paper_flops_per_token(
        design_lib.architecture(fields, local.seq_len, local.vocab_size)
    )
    tokens = group.budget / m
    if tokens >= protocol.LOCAL_MIN_STEPS * protocol.LOCAL_SEQ_LEN:
      batch_tokens = group.batch_size * protocol.LOCAL_SEQ_LEN
      return n_layers, protocol.local_batch_sequences(batch_tokens, tokens)
  raise config_lib.ConfigError(
      f'model.n_layers: no stack of {max(tables.TABLE_10_DENSE) + 1} to {LAYERS["local"]} layers '
      f'at d_model {group.d_model} trains LOCAL_MIN_STEPS={protocol.LOCAL_MIN_STEPS} steps '
      f'within train.compute_budget={group.budget:g} FLOPs; raise that budget in '
      'experiments/protocol.py:LOCAL_BUDGETS or narrow the group backbone.'
  )


def get_config(arg=None):
  scale = common.parse_scale(arg)
  c = common.study_config('dense_layers', scale, __file__)
  c.model.update(n_layers=LAYERS[scale], n_experts=64, top_k=2, n_shared=1, d_expert=64)
  if scale == 'smoke':
    c.model.n_experts = 8
  return c


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  members = []
  for group in common.groups(scale):
    n_layers, extra = LAYERS[scale], {}
    if scale == 'paper':
      _, d_ffn, _, d_expert = tables.TABLE_10[group.index]
    else:
      d_expert = group.d_model
      d_ffn = 3 * d_expert
    if scale == 'local':
      n_layers, batch = local_layers(group)
      extra = {'train.batch_size': batch}
    for dense in tables.TABLE_10_DENSE:
      member = group.member(
          f'dense{dense}',
          n_layers=n_layers,
          num_dense_layers=dense,
          d_ffn=d_ffn,
          d_expert=d_expert,
      )
      members.append(dataclasses.replace(member, overrides={**member.overrides, **extra}))
  return members
