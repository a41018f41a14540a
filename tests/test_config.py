"""Every invalid config is refused before compilation, with the field named."""

import importlib

import pytest

from configs import common
from ling_jax import config as config_lib


def moe_config(**model):
  c = config_lib.base_config()
  c.model.update(n_experts=8, top_k=2, n_shared=1, d_expert=32)
  c.model.update(**model)
  c.train.tokens = 10**6
  return c


def refused(c, *words):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate(c)
  for word in words:
    assert word in str(error.value)
  return str(error.value)


def test_valid_moe_config_passes():
  a = config_lib.validate(moe_config()).arch
  assert a.n_experts == 8 and a.d_expert == 32


def test_top_k_above_experts():
  refused(moe_config(top_k=9), 'config.model.top_k=9', 'n_experts=8')


def test_heads_not_dividing_d_model():
  refused(moe_config(n_heads=5), 'config.model.n_heads=5', 'd_model=128')


def test_kv_heads_not_dividing_heads():
  refused(moe_config(n_kv_heads=3), 'config.model.n_kv_heads=3', 'n_heads=4')


def test_granularity_giving_fractional_width():
  refused(moe_config(d_expert=0, granularity=3.0), 'config.model.granularity=3.0', '85.3333')


def test_expert_width_required():
  refused(moe_config(d_expert=0), 'config.model.d_expert=0')


def test_fractional_width_refused_by_type():
  c = moe_config()
  with pytest.raises(TypeError):
    c.model.d_expert = 170.5  # ml-collections keeps the field an int


def test_budget_too_small_for_one_step():
  c = moe_config()
  c.train.tokens = 0
  c.train.compute_budget = 1e6
  refused(c, 'config.train.compute_budget', 'less than one step')


def test_both_or_neither_training_length():
  c = moe_config()
  c.train.compute_budget = 1e15
  refused(c, 'config.train.tokens', 'set exactly one')


def test_missing_data_path():
  c = moe_config()
  c.data.source = 'tokens'
  refused(c, 'config.data.paths is empty')
  c.data.paths = ('/no/such/file.bin',)
  refused(c, 'config.data.paths', '/no/such/file.bin')


def test_array_record_files_on_a_bucket_are_refused_and_token_files_are_not():
  c = moe_config()
  c.data.update(source='array_record', paths=('gs://bucket/corpus.array_record',))
  refused(c, 'config.data.paths', 'array_record files are read from a local or mounted disk')
  c.data.update(source='tokens', paths=('gs://bucket/corpus.bin',))
  config_lib.validate(c)


def test_ragged_dot_refuses_a_capacity_factor():
  c = moe_config()
  c.moe.dispatch = 'ragged_dot'
  refused(c, 'config.moe.capacity_factor')


def test_group_limited_routing_must_divide_experts():
  c = moe_config()
  c.moe.update(router='sigmoid_bias', n_groups=3)
  refused(c, 'config.moe.n_groups=3')


def test_dense_layers_must_leave_an_moe_layer():
  refused(moe_config(num_dense_layers=2), 'config.model.num_dense_layers=2')


def test_odd_rotary_dims():
  refused(moe_config(rope_fraction=0.3), 'config.model.rope_fraction=0.3')


@pytest.mark.parametrize('name', ['moe', 'dense'])
@pytest.mark.parametrize('scale', common.SCALES)
def test_shipped_configs_validate(name, scale):
  c = importlib.import_module(f'configs.{name}').get_config(scale)
  if scale == 'paper':
    c.data.paths = ('gs://bucket/train.bin',)  # paper scale reads the user's tokens
  a = config_lib.validate(c).arch
  assert config_lib.num_steps(c, a) >= 1


def test_unknown_scale_names_the_choices():
  with pytest.raises(config_lib.ConfigError, match='paper, local, smoke'):
    common.parse_scale('huge')


def test_local_moe_and_dense_are_iso_flop():
  from ling_jax import flops

  moe, dense = (
      config_lib.validate(importlib.import_module(f'configs.{n}').get_config('local')).arch
      for n in ('moe', 'dense')
  )
  assert flops.paper_flops_per_token(moe) == flops.paper_flops_per_token(dense)


NAN, INF = float('nan'), float('inf')

# One bad value per row, each refused before anything compiles with a message that names its
# field: shapes, counts, choices, and the numbers that once trained silently or went NaN later.
# (Values of the wrong type for a field, e.g. a string for a bool, ml_collections refuses at
# assignment, on the command line too.) (section, field, value, other fields the case needs)
BAD_VALUES = [
    ('model', 'n_layers', 0, {}),
    ('model', 'd_model', -128, {}),
    ('model', 'n_heads', 0, {}),
    ('model', 'n_heads', 3, {}),  # does not divide d_model
    ('model', 'n_kv_heads', 3, {}),  # does not divide n_heads
    ('model', 'n_kv_heads', 0, {}),
    ('model', 'vocab_size', 0, {}),
    ('model', 'vocab_size', 200, {}),  # the stdlib corpus is bytes
    ('model', 'head_dim', -1, {}),
    ('model', 'd_ffn', -1, {}),
    ('model', 'd_ffn', 0, dict(n_experts=0, top_k=0, n_shared=0)),  # a dense model's FFN
    ('model', 'd_ffn', 0, dict(num_dense_layers=1)),  # its first dense layer
    ('model', 'n_experts', -8, {}),
    ('model', 'top_k', 0, {}),
    ('model', 'top_k', 9, {}),
    ('model', 'top_k', 2, dict(n_experts=0)),  # a dense model has no routed experts
    ('model', 'n_shared', -1, {}),
    ('model', 'num_dense_layers', 2, {}),  # every layer dense
    ('model', 'd_expert', -32, {}),
    ('model', 'granularity', 3.0, dict(d_expert=0)),  # 2 * 128 / 3 is not whole
    ('model', 'granularity', 0.0, dict(d_expert=0)),
    ('model', 'rope_fraction', 1.5, {}),
    ('model', 'rope_fraction', 0.3, {}),  # an odd number of rotated dims
    ('model', 'rope_base', 0.0, {}),
    ('model', 'rope_base', NAN, {}),
    ('model', 'norm_eps', 0.0, {}),
    ('model', 'norm_eps', -1e-6, {}),
    ('model', 'init_std', -0.006, {}),
    ('model', 'init_std', 0.0, {}),
    ('model', 'init_std', NAN, {}),
    ('model', 'compute_dtype', 'float16', {}),
    ('model', 'param_dtype', 'int8', {}),
    ('model', 'remat', 'some', {}),
    ('model', 'attention_impl', 'flash', {}),
    ('moe', 'router', 'topk', {}),
    ('moe', 'router_loss_reduction', 'max', {}),
    ('moe', 'dispatch', 'scatter', {}),
    ('moe', 'capacity_factor', 1.25, dict(dispatch='blocks')),  # a dropless dispatch
    ('moe', 'capacity_factor', NAN, {}),
    ('moe', 'block_rows', 0, {}),
    ('moe', 'tokamax_tiles', (128, 128), {}),
    ('moe', 'tokamax_implementation', 'cuda', {}),
    ('moe', 'transport', 'p2p', {}),
    ('moe', 'load_balance_coef', -0.01, {}),
    ('moe', 'z_loss_coef', NAN, {}),
    ('moe', 'bias_update_rate', INF, {}),
    ('moe', 'routed_scaling', -2.5, {}),
    ('moe', 'routed_scaling', 0.0, {}),
    ('moe', 'n_groups', 3, dict(router='sigmoid_bias')),  # does not divide 8 experts
    ('moe', 'top_groups', 0, dict(router='sigmoid_bias', n_groups=2)),
    ('moe', 'top_groups', 1, dict(router='sigmoid_bias', n_groups=4, top_k=3)),  # too few
    ('data', 'source', 'web', {}),
    ('data', 'eval_fraction', 0.0, {}),
    ('data', 'eval_fraction', 1.5, {}),
    ('data', 'eval_fraction', NAN, {}),
    ('data', 'paths', (), dict(source='tokens')),
    ('data', 'paths', ('/no/such/file.bin',), dict(source='tokens')),
    ('data', 'eval_paths', ('/no/such/eval.bin',), dict(source='tokens', paths=(__file__,))),
    ('data', 'token_dtype', 'float32', dict(source='tokens', paths=(__file__,))),
    ('data', 'seed', -1, {}),
    ('train', 'seq_len', 0, {}),
    ('train', 'batch_size', 0, {}),
    ('train', 'grad_accum_steps', 0, {}),
    ('train', 'grad_accum_steps', 3, {}),  # does not divide the batch
    ('train', 'steps_per_call', 0, {}),
    ('train', 'eval_every', 0, {}),
    ('train', 'eval_batches', -1, {}),
    ('train', 'log_every', 0, {}),
    ('train', 'checkpoint_every', 0, {}),
    ('train', 'keep_checkpoints', 0, {}),
    ('train', 'eval_sequences', -1, {}),
    ('train', 'eval_sequences', 100, {}),  # not whole eval batches
    ('train', 'eval_batch_size', -1, {}),
    ('train', 'tokens', -5, {}),
    ('train', 'tokens', 100, {}),  # less than one step
    ('train', 'compute_budget', 1e18, {}),  # besides tokens
    ('train', 'compute_budget', NAN, dict(tokens=0)),
    ('train', 'compute_budget', -1e18, dict(tokens=0)),
    ('train', 'warmup_fraction', -0.1, {}),
    ('train', 'warmup_fraction', NAN, {}),
    ('train', 'decay_fraction', 1.5, {}),
    ('train', 'final_lr_fraction', 0.0, {}),
    ('train', 'final_lr_fraction', 1.5, {}),
    ('train', 'learning_rate', 0.0, {}),
    ('train', 'learning_rate', INF, {}),
    ('train', 'decay_shape', 'step', {}),
    ('train', 'b1', 1.2, {}),  # AdamW moments that grow instead of decaying
    ('train', 'b2', 1.0, {}),
    ('train', 'b2', NAN, {}),
    ('train', 'eps', 0.0, {}),
    ('train', 'weight_decay', -0.1, {}),
    ('train', 'clip_norm', -1.0, {}),
    ('train', 'clip_norm', NAN, {}),
    ('train', 'seed', -1, {}),
    ('mesh', 'data', 0, {}),
    ('mesh', 'expert', -2, {}),
    ('mesh', 'fsdp', -1, {}),  # a second -1 beside data's
    ('mesh', 'num_devices', -1, {}),
    ('metrics', 'flush_every', 0, {}),
    ('metrics', 'remote_retry_s', -1.0, {}),
    ('metrics', 'remote_retry_s', INF, {}),
    ('metrics', 'peak_flops_per_device', NAN, {}),
    ('metrics', 'peak_flops_per_device', -1.0, {}),
]


@pytest.mark.parametrize(
    'section,field,value,others',
    BAD_VALUES,
    ids=[f'{s}.{f}={v!r}' for s, f, v, _ in BAD_VALUES],
)
def test_every_bad_value_is_refused_naming_its_field(section, field, value, others):
  c = moe_config()
  c.unlock()
  for key, other in others.items():
    where = (
        section
        if key in c[section]
        else next(s for s in ('model', 'moe', 'data', 'train') if key in c[s])
    )
    c[where][key] = other
  c[section][field] = value
  refused(c, f'config.{section}.{field}')


def test_the_bad_value_table_is_large_and_covers_every_section():
  assert len(BAD_VALUES) >= 60
  assert {s for s, *_ in BAD_VALUES} == {'model', 'moe', 'data', 'train', 'mesh', 'metrics'}


def test_each_enumerated_field_has_one_list_and_its_implementations_match_it():
  from ling_jax import expert_parallel  # pylint: disable=import-outside-toplevel
  from ling_jax import model  # pylint: disable=import-outside-toplevel
  from ling_jax import optim  # pylint: disable=import-outside-toplevel

  choices = config_lib.CHOICES
  assert set(model.REMAT_POLICIES) | {'none'} == set(choices['model.remat'])
  assert set(expert_parallel.TRANSPORTS) - {'local'} == set(choices['moe.transport'])
  assert set(optim.DECAY_SHAPES) == set(choices['train.decay_shape'])
  for key, allowed in choices.items():
    c = moe_config()
    c.unlock()
    section, field = key.split('.')
    c[section][field] = 'no-such-choice'
    message = refused(c, f"config.{key}='no-such-choice'")
    assert all(repr(a) in message for a in allowed), (key, message)


def _leaves(node, prefix=''):
  for key, value in node.items():
    if hasattr(value, 'items'):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield prefix + key


def test_every_field_has_one_rule_in_the_field_table():
  """A new field of base_config() cannot skip validation: it needs a row of FIELDS."""
  assert set(_leaves(config_lib.base_config())) == set(config_lib.FIELDS)


# A value just outside each bound, chosen by hand from the bound's text.
OUTSIDE = {
    '> 0': 0,
    '>= 0': -1,
    '>= 1, or -1': 0,
    'in [0, 1]': 1.5,
    'in [0, 1)': 1.0,
    'in (0, 1]': 0.0,
    'in (0, 1)': 1.0,
}


@pytest.mark.parametrize(
    'key', [k for k, f in config_lib.FIELDS.items() if f.bound], ids=lambda k: k
)
def test_every_bound_of_the_field_table_is_enforced(key):
  c = moe_config()
  c.unlock()
  section, field = key.split('.')
  kind = config_lib.FIELDS[key].kind
  value = OUTSIDE[config_lib.FIELDS[key].bound]
  c[section][field] = int(value) if kind == 'int' else float(value)
  message = refused(c, f'config.{key}=')
  assert config_lib.FIELDS[key].bound in message, message


def test_the_docs_field_reference_is_the_field_table():
  import os  # pylint: disable=import-outside-toplevel

  doc = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'docs', 'config.md')
  with open(doc) as f:
    assert config_lib.field_reference() in f.read(), 'regenerate: python -m ling_jax.config'
