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
  a = config_lib.validate(moe_config())
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
  refused(c, 'exactly one of train.tokens')


def test_missing_data_path():
  c = moe_config()
  c.data.source = 'tokens'
  refused(c, 'config.data.paths is empty')
  c.data.paths = ('/no/such/file.bin',)
  refused(c, 'config.data.paths', '/no/such/file.bin')


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
  a = config_lib.validate(c)
  assert config_lib.num_steps(c, a) >= 1


def test_unknown_scale_names_the_choices():
  with pytest.raises(config_lib.ConfigError, match='paper, local, smoke'):
    common.parse_scale('huge')


def test_local_moe_and_dense_are_iso_flop():
  from ling_jax import flops

  moe, dense = (
      config_lib.validate(importlib.import_module(f'configs.{n}').get_config('local'))
      for n in ('moe', 'dense')
  )
  assert flops.paper_flops_per_token(moe) == flops.paper_flops_per_token(dense)


@pytest.mark.parametrize(
    'section,field,value',
    [
        ('train', 'b1', 1.2),  # AdamW moments that grow instead of decaying
        ('train', 'b2', 1.0),
        ('train', 'eps', 0.0),
        ('train', 'weight_decay', -0.1),
        ('train', 'clip_norm', -1.0),
        ('train', 'clip_norm', float('nan')),
        ('model', 'init_std', -0.006),
        ('model', 'init_std', 0.0),
        ('moe', 'routed_scaling', -2.5),
        ('moe', 'bias_update_rate', float('inf')),
        ('metrics', 'flush_every', 0),
        ('metrics', 'remote_retry_s', -1.0),
        ('metrics', 'remote_retry_s', float('inf')),
        ('metrics', 'peak_flops_per_device', float('nan')),
    ],
)
def test_numbers_that_trained_silently_or_crashed_later_are_refused(section, field, value):
  """Values that once trained without a word (or went NaN after compiling) are refused first."""
  c = moe_config()
  c.unlock()
  c[section][field] = value
  refused(c, f'config.{section}.{field}={value!r}')


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
