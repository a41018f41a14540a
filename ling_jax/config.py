"""Default configuration and validation.

Every study config (configs/*.py) starts from `base_config()` and overrides fields. `validate`
checks the whole config before anything is compiled and raises one `ConfigError` that names the
field and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os

import ml_collections

from ling_jax import flops
from ling_jax import grouped_matmul
from ling_jax import hardware
from ling_jax import metrics as metrics_lib
from ling_jax import spec as spec_lib

# The device mesh's axes, in the order jax.make_mesh gets them (ling_jax.sharding).
MESH_AXES = ('data', 'fsdp', 'expert', 'tensor')


class ConfigError(ValueError):
  """An invalid configuration; the message names the field and how to fix it."""


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'run'

  c.model = ml_collections.ConfigDict(
      dict(
          n_layers=2,
          d_model=128,
          n_heads=4,
          n_kv_heads=2,
          head_dim=0,  # 0: d_model // n_heads
          d_ffn=512,  # dense FFN width (every layer of a dense model, the first-k of an MoE)
          num_dense_layers=0,  # first-k dense layers of an MoE model
          n_experts=0,  # E routed experts; 0 makes a dense model
          top_k=0,  # E_a experts activated per token
          n_shared=0,  # E_s shared experts
          d_expert=0,  # routed expert width; 0: derived from `granularity`
          granularity=0.0,  # G = 2 d_model / d_expert, used when d_expert is 0
          vocab_size=256,
          tie_embeddings=False,
          qk_norm=False,
          rope_base=10_000.0,
          rope_fraction=1.0,  # fraction of each head's dims that are rotated (Ling 2.0: 0.5)
          norm_eps=1e-6,
          init_std=0.006,  # paper App. B
          compute_dtype='float32',  # 'bfloat16' computes in bf16 on f32 parameters
          param_dtype='float32',
          scan_layers=True,  # False: unrolled Python loop over the same stacked parameters
          remat='none',  # 'none' | 'full' | 'dots' | 'dots_no_batch'
          attention_impl='',  # '' lets JAX choose; 'xla' | 'cudnn'
      )
  )

  c.moe = ml_collections.ConfigDict(
      dict(
          router='softmax',  # 'softmax' (paper App. B) | 'sigmoid_bias' (Ling 2.0, aux-loss-free)
          renormalize=False,  # softmax router: renormalise the top-k weights to sum to 1
          load_balance_coef=0.01,  # GShard load-balance loss; paper 0.01
          z_loss_coef=0.001,  # router z-loss; paper 0.001
          # How the router losses of the MoE layers enter the objective: 'sum' (each layer's loss
          # weighted by the coefficient, as GShard and Megatron-Core, the stack Ling trains with,
          # do) or 'mean' (the coefficient shared by all layers: per layer coefficient /
          # n_moe_layers). The paper gives the coefficients (App. B), not the reduction.
          router_loss_reduction='sum',
          routed_scaling=1.0,  # sigmoid_bias router: multiplies normalised weights (Ling 2.0: 2.5)
          bias_update_rate=0.001,  # sigmoid_bias router: u of the sign rule, per optimizer step
          n_groups=1,  # sigmoid_bias router: group-limited top-k over this many expert groups
          top_groups=1,  # ... keeping this many groups
          # 'einsum' (capacity-padded batched matmul) | 'blocks' (dropless: each expert's rows
          # padded to whole blocks, batched matmuls) | 'ragged_dot' (dropless, jax.lax.ragged_dot)
          # | 'tokamax' (dropless, tokamax's Pallas kernels; pip install -e '.[gpu]' or '.[tpu]').
          dispatch='einsum',
          block_rows=16,  # 'blocks' dispatch (dropless, static shapes): rows per expert block
          tokamax_implementation='',  # '' (tokamax chooses) | 'mosaic' | 'triton' | 'xla'
          tokamax_tiles=(),  # (tile_m, tile_k, tile_n) of the TPU kernel; () for its defaults
          # einsum dispatch: slots per expert = cf * tokens * k / E; <= 0 is dropless
          capacity_factor=1.25,
          # Between devices of the mesh's expert axis: 'a2a' (capacity all-to-all), 'ring'
          # (all-gather, local experts, reduce-scatter), 'ragged_a2a' (dropless, GPU/TPU only).
          transport='a2a',
      )
  )

  c.data = ml_collections.ConfigDict(
      dict(
          source='stdlib',  # 'stdlib' | 'synthetic' | 'tokens' | 'array_record'
          paths=(),  # 'tokens': .bin/.npy files; 'array_record': .array_record files
          eval_paths=(),  # held-out files for 'tokens' / 'array_record'
          token_dtype='uint16',  # dtype of raw .bin token files and array_record records
          eval_fraction=0.02,  # 'stdlib' / 'synthetic': share held out for evaluation
          seed=0,
      )
  )

  c.train = ml_collections.ConfigDict(
      dict(
          seq_len=128,
          batch_size=16,  # global batch in sequences per optimizer step
          grad_accum_steps=1,  # microbatches per optimizer step (mesh.plan=auto chooses it)
          # 'exact': a batch that does not split over the batch shards x microbatches is an
          # error; 'round': it runs at the nearest multiple of them (ling_jax.layout).
          batch_rule='exact',
          requested_batch_size=0,  # set by ling_jax.layout: the batch asked for, if rounded
          # Optimizer steps per jitted call (a scan over that many batches); the same steps, losses
          # and checkpoints for any value, fewer host round trips for larger ones.
          steps_per_call=1,
          tokens=0,  # training length in tokens D; or
          compute_budget=0.0,  # training length as compute C in FLOPs (paper convention, D = C / M)
          learning_rate=3e-3,  # peak
          warmup_fraction=0.01,
          # WSD: share of steps in the final decay. The paper (App. B) gives 1% warmup and an
          # exponential decay to 10% of the peak, not where the decay starts; 0.2 is in the range
          # WSD studies found best (MiniCPM: 10-20%; Hägele et al. 2024: about 20%).
          decay_fraction=0.2,
          decay_shape='exponential',  # 'exponential' | 'linear' | 'cosine'
          final_lr_fraction=0.1,  # learning rate at the end, as a fraction of the peak
          b1=0.9,
          b2=0.95,
          eps=1e-8,
          weight_decay=0.1,
          clip_norm=1.0,  # global-norm gradient clipping; 0 disables
          seed=0,
          eval_every=100,  # steps; an eval also runs at the end
          eval_batches=4,  # batches of each periodic evaluation (the first of the held-out set)
          # The fixed held-out set of the final evaluation, in sequences (0: eval_batches batches of
          # batch_size), and its batch size (0: batch_size): the same set for every run.
          eval_sequences=0,
          eval_batch_size=0,
          log_every=10,
          checkpoint_every=100,
          keep_checkpoints=2,
          async_checkpoint=True,
      )
  )

  c.mesh = ml_collections.ConfigDict(
      dict(
          data=-1,  # devices per axis; one axis may be -1 to take the devices left
          fsdp=1,
          expert=1,
          tensor=1,
          num_devices=0,  # 0: every device of every process; n: the first n
          # The slice the run is laid out for, by product name ('v5p-128', 'v5e-256', 'h100x8',
          # '2xv5p-128'; ling_jax.hardware); '' for the devices there are.
          slice='',
          # 'manual': the sizes above; 'auto': ling_jax.layout plans data/fsdp/expert sizes and
          # microbatches for mesh.slice from a memory model (experiments.compile checks it).
          plan='manual',
      )
  )
  # Logical axis -> mesh axes: the one table that decides every parameter's and the batch's
  # layout. Outside the MoE block the expert axis is one more batch axis.
  c.sharding_rules = (
      ('batch', ('data', 'fsdp', 'expert')),
      ('embed', 'fsdp'),
      ('vocab', 'tensor'),
      ('heads', 'tensor'),
      ('mlp', 'tensor'),
      ('exp', 'expert'),
      ('exp_mlp', 'tensor'),
      ('layers', None),
  )

  c.sweep = ml_collections.ConfigDict(
      dict(
          source='',  # a study's config file, which defines get_sweep(arg); empty for one run
          arg='',
      )
  )

  c.metrics = ml_collections.ConfigDict(
      dict(
          tensorboard=False,
          flush_every=10,  # records per chunk file on remote (gs://) workdirs
          # Seconds a gs:// metrics or summary write is retried through an outage (doubling
          # waits from 1 s, at most 128 s apart) before the error stops the run.
          remote_retry_s=metrics_lib.REMOTE_RETRY_DEADLINE_S,
          peak_flops_per_device=0.0,  # for MFU; 0 looks it up from the device kind
      )
  )
  return c


# --- Validation ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Field:
  """The rule of one config field: its kind, the bound its value keeps, and what it means.

  kind: 'int' (a whole number), 'number' (a finite real number), 'bool', 'choice' (one of
  `choices`), 'text', 'paths' (a tuple of file names), 'tiles' (() or three whole numbers > 0)
  or 'rules' (the sharding rules' pairs).
  """

  kind: str
  help: str
  bound: str = ''  # a key of BOUNDS; '' for none
  choices: tuple = ()


# A numeric field's bound: its text (as the field reference and the error print it) and its test.
BOUNDS = {
    '> 0': lambda v: v > 0,
    '>= 0': lambda v: v >= 0,
    '>= 1, or -1': lambda v: v >= 1 or v == -1,
    'in [0, 1]': lambda v: 0 <= v <= 1,
    'in [0, 1)': lambda v: 0 <= v < 1,
    'in (0, 1]': lambda v: 0 < v <= 1,
    'in (0, 1)': lambda v: 0 < v < 1,
}
_KINDS = {
    'int': ('a whole number', lambda v: isinstance(v, int) and not isinstance(v, bool)),
    'number': ('a finite number', lambda v: _finite(v)),
    'bool': ('True or False', lambda v: isinstance(v, bool)),
    'text': ('a string', lambda v: isinstance(v, str)),
    'paths': ('a tuple of file names', lambda v: all(isinstance(p, str) for p in v)),
    'rules': (
        'pairs (logical axis, mesh axes: None, one of MESH_AXES or a tuple of them)',
        lambda v: all(len(r) == 2 and isinstance(r[0], str) and _mesh_axes(r[1]) for r in v),
    ),
    'tiles': (
        '() or three whole numbers > 0 (tile_m, tile_k, tile_n)',
        lambda v: tuple(v) == ()
        or (
            len(v) == 3 and all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in v)
        ),
    ),
}

# Every field of base_config() and its rule: the one table that validation checks field by field
# (the checks after it are rules between fields) and that docs/config.md prints
# (`python -m ling_jax.config`). Enumerated fields list their legal values here, and the modules
# implementing each choice are tested against them (tests/test_config.py).
FIELDS = {
    'name': Field('text', 'the run (or study/member) name, in paths and logs'),
    # --- model
    'model.n_layers': Field('int', 'transformer layers, dense and MoE', '> 0'),
    'model.d_model': Field('int', 'residual width', '> 0'),
    'model.n_heads': Field('int', 'query heads', '> 0'),
    'model.n_kv_heads': Field('int', 'key/value heads (grouped-query attention)', '> 0'),
    'model.head_dim': Field('int', 'width of one head; 0: d_model / n_heads', '>= 0'),
    'model.d_ffn': Field(
        'int', 'dense FFN width: every layer of a dense model, the first-k of an MoE', '>= 0'
    ),
    'model.num_dense_layers': Field('int', 'first-k dense layers of an MoE model', '>= 0'),
    'model.n_experts': Field('int', 'E, routed experts; 0 makes a dense model', '>= 0'),
    'model.top_k': Field('int', 'E_a, routed experts each token activates', '>= 0'),
    'model.n_shared': Field('int', 'E_s, shared experts', '>= 0'),
    'model.d_expert': Field('int', 'routed expert width; 0: 2 d_model / granularity', '>= 0'),
    'model.granularity': Field(
        'number', 'G = 2 d_model / d_expert, used where d_expert is 0', '>= 0'
    ),
    'model.vocab_size': Field('int', 'token ids', '> 0'),
    'model.tie_embeddings': Field('bool', 'the logits reuse the input embedding'),
    'model.qk_norm': Field('bool', 'RMSNorm on each head of q and k'),
    'model.rope_base': Field('number', 'rotary embedding base (10000 is usual)', '> 0'),
    'model.rope_fraction': Field(
        'number', "share of each head's dims that are rotated (Ling 2.0: 0.5)", 'in [0, 1]'
    ),
    'model.norm_eps': Field('number', 'RMSNorm epsilon (1e-6)', '> 0'),
    'model.init_std': Field('number', 'initial weights N(0, init_std^2) (the paper: 0.006)', '> 0'),
    'model.compute_dtype': Field(
        'choice', 'activations and matmuls', choices=('float32', 'bfloat16')
    ),
    'model.param_dtype': Field('choice', 'parameters', choices=('float32', 'bfloat16')),
    'model.scan_layers': Field('bool', 'False: an unrolled loop over the same stacked parameters'),
    'model.remat': Field(
        'choice',
        "what each layer keeps for the backward pass (model.REMAT_POLICIES, or 'none')",
        choices=('none', 'full', 'dots', 'dots_no_batch'),
    ),
    'model.attention_impl': Field('choice', "'' lets JAX choose", choices=('', 'xla', 'cudnn')),
    # --- moe
    'moe.router': Field(
        'choice',
        "'softmax' (the paper, App. B) or 'sigmoid_bias' (Ling 2.0, aux-loss-free)",
        choices=('softmax', 'sigmoid_bias'),
    ),
    'moe.renormalize': Field('bool', 'softmax router: top-k weights renormalised to sum to 1'),
    'moe.load_balance_coef': Field('number', 'GShard load-balance loss (the paper: 0.01)', '>= 0'),
    'moe.z_loss_coef': Field('number', 'router z-loss (the paper: 0.001)', '>= 0'),
    'moe.router_loss_reduction': Field(
        'choice',
        "the MoE layers' router losses: 'sum' (each layer's weighted by the coefficient) or "
        "'mean'",
        choices=('sum', 'mean'),
    ),
    'moe.routed_scaling': Field(
        'number', 'sigmoid_bias router: multiplies the normalised weights (Ling 2.0: 2.5)', '> 0'
    ),
    'moe.bias_update_rate': Field(
        'number', 'sigmoid_bias router: u of the sign rule, per optimizer step', '>= 0'
    ),
    'moe.n_groups': Field(
        'int', 'sigmoid_bias router: expert groups of group-limited top-k', '> 0'
    ),
    'moe.top_groups': Field('int', 'sigmoid_bias router: groups each token keeps', '> 0'),
    'moe.dispatch': Field(
        'choice',
        "'einsum' (capacity-padded), 'blocks' (dropless, static shapes), 'ragged_dot' or "
        "'tokamax' (dropless grouped matmuls)",
        choices=('einsum', 'blocks') + grouped_matmul.BACKENDS,
    ),
    'moe.block_rows': Field('int', "'blocks' dispatch: rows per expert block", '> 0'),
    'moe.tokamax_implementation': Field(
        'choice',
        "tokamax's kernel; '' lets tokamax choose",
        choices=grouped_matmul.TOKAMAX_IMPLEMENTATIONS,
    ),
    'moe.tokamax_tiles': Field('tiles', "the TPU kernel's tiles; () for its defaults"),
    'moe.capacity_factor': Field(
        'number', 'einsum dispatch: slots per expert = cf x tokens x top_k / E; <= 0 is dropless'
    ),
    'moe.transport': Field(
        'choice',
        "between the expert axis's devices: 'a2a', 'ring' or 'ragged_a2a' (dropless, GPU/TPU)",
        choices=('a2a', 'ring', 'ragged_a2a'),  # expert_parallel.TRANSPORTS less 'local'
    ),
    # --- data
    'data.source': Field(
        'choice',
        "'stdlib' (built-in bytes), 'synthetic', 'tokens' (.bin/.npy) or 'array_record'",
        choices=('stdlib', 'synthetic', 'tokens', 'array_record'),
    ),
    'data.paths': Field('paths', "training files of 'tokens' / 'array_record' (local or gs://)"),
    'data.eval_paths': Field('paths', "held-out files of 'tokens' / 'array_record'"),
    'data.token_dtype': Field(
        'choice', 'dtype of token files and records', choices=('uint16', 'uint32', 'int32')
    ),
    'data.eval_fraction': Field('number', "'stdlib' / 'synthetic': share held out", 'in (0, 1)'),
    'data.seed': Field('int', 'data order', '>= 0'),
    # --- train
    'train.seq_len': Field('int', 'tokens per sequence', '> 0'),
    'train.batch_size': Field('int', 'global batch, sequences per optimizer step', '> 0'),
    'train.grad_accum_steps': Field('int', 'microbatches per optimizer step', '> 0'),
    'train.batch_rule': Field(
        'choice',
        "'exact' refuses a batch the batch shards x microbatches do not split; 'round' runs the "
        'nearest multiple (ling_jax.layout)',
        choices=('exact', 'round'),
    ),
    'train.requested_batch_size': Field(
        'int', 'set by ling_jax.layout: the batch asked for, where it was rounded; leave 0', '>= 0'
    ),
    'train.steps_per_call': Field('int', 'optimizer steps per jitted call', '> 0'),
    'train.tokens': Field('int', 'training length in tokens D (or set compute_budget)', '>= 0'),
    'train.compute_budget': Field(
        'number', 'training length in FLOPs C, D = C / M (or set tokens)', '>= 0'
    ),
    'train.learning_rate': Field('number', 'peak learning rate', '> 0'),
    'train.warmup_fraction': Field('number', 'share of the steps warming up', 'in [0, 1]'),
    'train.decay_fraction': Field('number', 'share of the steps in the final decay', 'in [0, 1]'),
    'train.decay_shape': Field(
        'choice', 'the final decay', choices=('exponential', 'linear', 'cosine')
    ),
    'train.final_lr_fraction': Field(
        'number', 'learning rate at the end, as a share of the peak', 'in (0, 1]'
    ),
    'train.b1': Field('number', "AdamW's first-moment decay (the paper: 0.9)", 'in [0, 1)'),
    'train.b2': Field('number', "AdamW's second-moment decay (the paper: 0.95)", 'in [0, 1)'),
    'train.eps': Field('number', "AdamW's epsilon (1e-8)", '> 0'),
    'train.weight_decay': Field('number', 'decoupled weight decay (the paper: 0.1)', '>= 0'),
    'train.clip_norm': Field('number', 'global-norm gradient clipping; 0 disables', '>= 0'),
    'train.seed': Field('int', 'parameter initialisation', '>= 0'),
    'train.eval_every': Field('int', 'steps between evaluations (one runs at the end too)', '> 0'),
    'train.eval_batches': Field('int', 'batches of each periodic evaluation', '> 0'),
    'train.eval_sequences': Field(
        'int', "the final evaluation's fixed held-out set; 0: eval_batches batches", '>= 0'
    ),
    'train.eval_batch_size': Field('int', 'sequences per eval batch; 0: batch_size', '>= 0'),
    'train.log_every': Field('int', 'steps between logged metrics', '> 0'),
    'train.checkpoint_every': Field('int', 'steps between checkpoints', '> 0'),
    'train.keep_checkpoints': Field('int', 'checkpoints kept', '> 0'),
    'train.async_checkpoint': Field('bool', 'checkpoints written while training goes on'),
    # --- mesh
    'mesh.data': Field('int', 'devices on the data axis; -1: the devices left', '>= 1, or -1'),
    'mesh.fsdp': Field('int', 'devices on the fsdp axis; -1: the devices left', '>= 1, or -1'),
    'mesh.expert': Field('int', 'devices on the expert axis; -1: the devices left', '>= 1, or -1'),
    'mesh.tensor': Field('int', 'devices on the tensor axis; -1: the devices left', '>= 1, or -1'),
    'mesh.num_devices': Field('int', 'the first n devices; 0: every device', '>= 0'),
    'mesh.slice': Field(
        'text', "the slice laid out for ('v5p-128', 'h100x8'); '' for the devices there are"
    ),
    'mesh.plan': Field(
        'choice',
        "'manual': the sizes above; 'auto': ling_jax.layout plans them for mesh.slice",
        choices=('manual', 'auto'),
    ),
    # --- sweep, metrics
    'sweep.source': Field('text', "a study's config file (defines get_sweep); '' for one run"),
    'sweep.arg': Field('text', "the study config's argument (its scale)"),
    'sharding_rules': Field(
        'rules', "logical axis -> mesh axes: every parameter's and the batch's layout"
    ),
    'metrics.tensorboard': Field('bool', 'also write TensorBoard event files'),
    'metrics.flush_every': Field('int', 'records per chunk file on gs:// workdirs', '> 0'),
    'metrics.remote_retry_s': Field(
        'number', 'seconds a gs:// write is retried through an outage; 0: no retries', '>= 0'
    ),
    'metrics.peak_flops_per_device': Field(
        'number', 'FLOP/s for MFU; 0 looks it up from the device kind', '>= 0'
    ),
}
CHOICES = {key: field.choices for key, field in FIELDS.items() if field.kind == 'choice'}


def _mesh_axes(axes) -> bool:
  named = axes if isinstance(axes, (tuple, list)) else (axes,)
  return axes is None or all(a in MESH_AXES for a in named)


def _value(config, key: str):
  section, _, name = key.rpartition('.')
  return config[section][name] if section else config[name]


def _validate_fields(config) -> None:
  """Each field of FIELDS against its kind and bound, in table order."""
  for key, field in FIELDS.items():
    value = _value(config, key)
    if field.kind == 'choice':
      _require(
          value in field.choices,
          f'config.{key}={value!r}: use one of {", ".join(repr(a) for a in field.choices)}.',
      )
      continue
    what, is_kind = _KINDS[field.kind]
    bound = BOUNDS.get(field.bound, lambda v: True)
    _require(
        is_kind(value) and bound(value),
        f'config.{key}={value!r}: must be {what}{" " + field.bound if field.bound else ""} '
        f'({field.help}).',
    )


def field_reference() -> str:
  """FIELDS as the Markdown table of docs/config.md."""
  lines = [
      '| field | kind | bound or values | default | what it is |',
      '| --- | --- | --- | --- | --- |',
  ]
  defaults = base_config()
  for key, field in FIELDS.items():
    allowed = ', '.join(f'`{a!r}`' for a in field.choices) if field.choices else field.bound
    lines.append(
        f'| `{key}` | {field.kind} | {allowed} | `{_value(defaults, key)!r}` | {field.help} |'
    )
  return '\n'.join(lines) + '\n'


def _finite(value) -> bool:
  """A real number, not a bool, a string, NaN or infinity."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


# --- Rules between fields (each field's own kind and bound: FIELDS) ---------------------------


def _validate_model(config, arch: flops.Architecture) -> None:
  m = config.model
  if not m.head_dim:
    _require(
        m.d_model % m.n_heads == 0,
        f'config.model.n_heads={m.n_heads}: does not divide d_model={m.d_model}; choose '
        'n_heads dividing d_model, or set model.head_dim explicitly.',
    )
  _require(
      m.n_heads % m.n_kv_heads == 0,
      f'config.model.n_kv_heads={m.n_kv_heads}: does not divide n_heads={m.n_heads}; '
      'choose n_kv_heads dividing n_heads.',
  )
  head_dim = arch.head_dim
  rotated = head_dim * m.rope_fraction
  _require(
      rotated == int(rotated) and int(rotated) % 2 == 0,
      f'config.model.rope_fraction={m.rope_fraction}: rotates {rotated:g} of {head_dim} head '
      'dims; needs a fraction giving an even whole number of dims.',
  )
  if not m.n_experts:
    _require(m.d_ffn > 0, 'config.model.d_ffn=0: a dense model needs a positive FFN width.')
    _require(
        m.top_k == 0 and m.n_shared == 0,
        'config.model.top_k/n_shared are set but n_experts=0; set n_experts for an MoE '
        'model, or top_k=0 and n_shared=0 for a dense one.',
    )
    return
  _require(
      1 <= m.top_k <= m.n_experts,
      f'config.model.top_k={m.top_k}: an MoE model activates at least one routed expert and '
      f'at most n_experts={m.n_experts}.',
  )
  _require(
      m.num_dense_layers < m.n_layers,
      f'config.model.num_dense_layers={m.num_dense_layers}: must be below n_layers='
      f'{m.n_layers}, or set n_experts=0 for a dense model.',
  )
  _require(
      m.num_dense_layers == 0 or m.d_ffn > 0,
      f'config.model.d_ffn=0: the {m.num_dense_layers} first dense layers need a width.',
  )
  if not m.d_expert:
    _require(
        m.granularity > 0,
        'config.model.d_expert=0 and config.model.granularity=0: an MoE model needs one of '
        'them; set d_expert, or granularity G = 2*d_model/d_expert.',
    )
    _require(
        spec_lib.d_expert(m) * m.granularity == 2 * m.d_model,
        f'config.model.granularity={m.granularity}: gives d_expert = 2*{m.d_model}/'
        f'{m.granularity} = {2 * m.d_model / m.granularity:g}, not a whole number; '
        'choose G dividing 2*d_model or set d_expert directly.',
    )


def _validate_moe(config) -> None:
  moe, m = config.moe, config.model
  _require(
      moe.dispatch == 'einsum' or moe.capacity_factor <= 0,
      f'config.moe.capacity_factor={moe.capacity_factor}: {moe.dispatch} dispatch is '
      'dropless; set capacity_factor=0, or use dispatch=einsum for capacity-limited routing.',
  )
  if moe.dispatch == 'tokamax' and m.n_experts:
    _require(
        grouped_matmul.tokamax_installed(),
        "config.moe.dispatch='tokamax': tokamax is not installed; pip install -e '.[gpu]' "
        "(or '.[tpu]'), or use dispatch=ragged_dot.",
    )
  if m.n_experts and moe.router == 'sigmoid_bias':
    _require(
        m.n_experts % moe.n_groups == 0,
        f'config.moe.n_groups={moe.n_groups}: must divide n_experts={m.n_experts}.',
    )
    _require(
        moe.top_groups <= moe.n_groups,
        f'config.moe.top_groups={moe.top_groups}: must be in [1, n_groups={moe.n_groups}].',
    )
    per_group = m.n_experts // moe.n_groups
    _require(
        moe.n_groups == 1 or (per_group >= 2 and moe.top_groups * per_group >= m.top_k),
        f'config.moe.top_groups={moe.top_groups}: {moe.top_groups} groups of {per_group} '
        f'experts cannot supply top_k={m.top_k} experts (groups need >= 2 experts).',
    )


def _validate_data(config) -> None:
  d = config.data
  if d.source == 'stdlib':
    _require(
        config.model.vocab_size >= 256,
        f'config.model.vocab_size={config.model.vocab_size}: the stdlib corpus is byte-level;'
        ' needs vocab_size >= 256.',
    )
  if d.source not in ('tokens', 'array_record'):
    return
  _require(
      bool(d.paths),
      f'config.data.paths is empty: data.source={d.source!r} needs files; pass '
      '--config.data.paths=/path/a.bin,/path/b.bin or use data.source=stdlib.',
  )
  for field in ('paths', 'eval_paths'):
    for path in d[field]:
      _require(
          path.startswith('gs://') or os.path.exists(path),
          f'config.data.{field}: {path!r} does not exist; fix the path.',
      )
      # array_record's reader opens local files only (on gs:// it waits on Google's
      # credentials); token files are read where they lie.
      _require(
          d.source != 'array_record' or '://' not in path,
          f'config.data.{field}: {path!r}: array_record files are read from a local or '
          'mounted disk (gcsfuse); copy them there, or store the corpus as .bin/.npy token '
          "files (data.source='tokens'), which are read from gs:// by ranged reads.",
      )


def _validate_train(config, arch: flops.Architecture) -> None:
  t = config.train
  if t.eval_sequences:
    size = eval_batch_size(t)
    _require(
        t.eval_sequences % size == 0,
        f'config.train.eval_sequences={t.eval_sequences}: must be a multiple of the eval '
        f'batch ({size} sequences, train.eval_batch_size or batch_size).',
    )
  _require(
      t.batch_rule == 'round' or t.batch_size % t.grad_accum_steps == 0,
      f'config.train.grad_accum_steps={t.grad_accum_steps}: must divide batch_size='
      f'{t.batch_size}.',
  )
  _require(
      bool(t.tokens) != bool(t.compute_budget),
      'config.train.tokens / config.train.compute_budget: set exactly one, the training length '
      f'in tokens D or in FLOPs C; got tokens={t.tokens}, compute_budget={t.compute_budget}.',
  )
  tokens_per_step = t.batch_size * t.seq_len
  tokens = t.tokens or flops.tokens_for_budget(arch, t.compute_budget)
  if flops.steps_for_tokens(tokens, tokens_per_step) < 1:
    field = 'tokens' if t.tokens else 'compute_budget'
    raise ConfigError(
        f'config.train.{field}={t[field]:g}: gives {tokens:.3g} tokens, less than one step of '
        f'{tokens_per_step} tokens (batch_size x seq_len); raise the budget or shrink the batch.'
    )
  _require(
      t.warmup_fraction + t.decay_fraction <= 1,
      f'config.train.warmup_fraction={t.warmup_fraction} + config.train.decay_fraction='
      f'{t.decay_fraction}: together at most 1 (the rest is the stable phase).',
  )


def _validate_mesh(config) -> None:
  """The mesh's shape as far as it can be checked without devices (sharding.make_mesh checks
  it against the devices there are)."""
  m = config.mesh
  free = [a for a in MESH_AXES if m[a] == -1]
  _require(
      len(free) <= 1,
      f'config.mesh.{free[-1] if free else ""}=-1: only one axis may take the devices left '
      f'(-1 on {", ".join(free)}); give the others a size.',
  )
  if m.slice:
    try:
      hardware.parse(m.slice)
    except hardware.UnknownSlice as error:
      raise ConfigError(f'config.mesh.slice: {error}') from error


def validate(config) -> spec_lib.ModelSpec:
  """Checks the whole config; returns its model spec (every default resolved: the one form of
  the model the rest of ling_jax takes), or raises one ConfigError."""
  _validate_fields(config)
  spec = spec_lib.build(config)  # what the rules below check; returned only if they pass
  _validate_model(config, spec.arch)
  _validate_moe(config)
  _validate_data(config)
  _validate_train(config, spec.arch)
  _validate_mesh(config)
  return spec


def without_data(config):
  """A copy of `config` reading synthetic tokens instead of its corpus: for tools that compile
  or count a run without reading its data (experiments.compile, --list), which the corpus's
  location must not stop."""
  c = config.copy_and_resolve_references()
  c.unlock()
  c.data.update(source='synthetic', paths=(), eval_paths=())
  c.lock()
  return c


def eval_batch_size(train) -> int:
  """Sequences per eval batch: train.eval_batch_size, or the training batch when it is 0."""
  return train.eval_batch_size or train.batch_size


def num_steps(config, arch: flops.Architecture) -> int:
  """Optimizer steps for the configured tokens D, or D = C / M for a compute budget C."""
  t = config.train
  tokens = t.tokens or flops.tokens_for_budget(arch, t.compute_budget)
  return flops.steps_for_tokens(tokens, t.batch_size * t.seq_len)


if __name__ == '__main__':
  print(field_reference(), end='')
