"""Default configuration and validation.

Every study config (configs/*.py) starts from `base_config()` and overrides fields. `validate`
checks the whole config before anything is compiled and raises one `ConfigError` that names the
field and the fix.
"""

from __future__ import annotations

import math
import os

import ml_collections

from ling_jax import flops
from ling_jax import grouped_matmul
from ling_jax import hardware
from ling_jax import metrics as metrics_lib

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


# Every enumerated field and its legal values: the one list that validation checks and that the
# modules implementing each choice are tested against (tests/test_config.py).
CHOICES = {
    'model.compute_dtype': ('float32', 'bfloat16'),
    'model.param_dtype': ('float32', 'bfloat16'),
    'model.remat': ('none', 'full', 'dots', 'dots_no_batch'),  # model.REMAT_POLICIES + 'none'
    'model.attention_impl': ('', 'xla', 'cudnn'),
    'moe.router': ('softmax', 'sigmoid_bias'),
    'moe.router_loss_reduction': ('sum', 'mean'),
    'moe.dispatch': ('einsum', 'blocks') + grouped_matmul.BACKENDS,
    'moe.tokamax_implementation': grouped_matmul.TOKAMAX_IMPLEMENTATIONS,
    'moe.transport': ('a2a', 'ring', 'ragged_a2a'),  # expert_parallel.TRANSPORTS less 'local'
    'train.decay_shape': ('exponential', 'linear', 'cosine'),
    'data.source': ('stdlib', 'synthetic', 'tokens', 'array_record'),
    'mesh.plan': ('manual', 'auto'),
    'train.batch_rule': ('exact', 'round'),
}


def _validate_choices(config) -> None:
  for key, allowed in CHOICES.items():
    section, field = key.split('.')
    value = config[section][field]
    _require(
        value in allowed,
        f'config.{key}={value!r}: use one of {", ".join(repr(a) for a in allowed)}.',
    )


def _finite(value) -> bool:
  """A real number, not a bool, a string, NaN or infinity."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _positive_int(value, field: str) -> None:
  _require(
      isinstance(value, int) and not isinstance(value, bool) and value > 0,
      f'config.{field}={value!r}: must be a positive whole number.',
  )


def resolve_d_expert(model) -> int:
  """d_expert as configured, or 2 d_model / G; refuses non-whole widths."""
  if model.d_expert:
    return model.d_expert
  _require(
      model.granularity > 0,
      'config.model.d_expert=0 and config.model.granularity=0: an MoE model needs one of '
      'them; set d_expert, or granularity G = 2*d_model/d_expert.',
  )
  width = 2 * model.d_model / model.granularity
  _require(
      width == int(width),
      f'config.model.granularity={model.granularity}: gives d_expert = 2*{model.d_model}/'
      f'{model.granularity} = {width:g}, not a whole number; choose G dividing '
      f'2*d_model or set d_expert directly.',
  )
  return int(width)


def architecture(config) -> flops.Architecture:
  """The validated architecture of a config (d_expert resolved)."""
  m = config.model
  fields = dict(m)
  if m.n_experts:
    fields['d_expert'] = resolve_d_expert(m)
  fields['head_dim'] = m.head_dim or None
  return flops.Architecture.from_config(fields, seq_len=config.train.seq_len)


def _validate_model(config) -> None:
  m = config.model
  for field in ('n_layers', 'd_model', 'n_heads', 'n_kv_heads', 'vocab_size'):
    _positive_int(m[field], f'model.{field}')
  _require(
      _finite(m.init_std) and m.init_std > 0,
      f'config.model.init_std={m.init_std!r}: must be a positive number (the paper: 0.006).',
  )
  _require(
      isinstance(m.head_dim, int) and m.head_dim >= 0,
      f'config.model.head_dim={m.head_dim!r}: must be a whole number >= 0 (0: d_model // n_heads).',
  )
  _require(
      _finite(m.rope_base) and m.rope_base > 0,
      f'config.model.rope_base={m.rope_base!r}: must be a positive number (10000 is usual).',
  )
  _require(
      _finite(m.norm_eps) and m.norm_eps > 0,
      f'config.model.norm_eps={m.norm_eps!r}: must be a small positive number (1e-6).',
  )
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
  head_dim = m.head_dim or m.d_model // m.n_heads
  rotated = head_dim * m.rope_fraction
  _require(
      0 <= m.rope_fraction <= 1 and rotated == int(rotated) and int(rotated) % 2 == 0,
      f'config.model.rope_fraction={m.rope_fraction}: rotates {rotated:g} of {head_dim} head '
      'dims; needs a fraction in [0, 1] giving an even whole number of dims.',
  )
  for field in (
      'd_ffn',
      'd_expert',
      'head_dim',
      'n_experts',
      'top_k',
      'n_shared',
      'num_dense_layers',
  ):
    _require(
        isinstance(m[field], int) and m[field] >= 0,
        f'config.model.{field}={m[field]!r}: widths and counts must be whole numbers >= 0.',
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
      m.top_k >= 1,
      f'config.model.top_k={m.top_k}: an MoE model activates at least one routed expert.',
  )
  _require(
      m.top_k <= m.n_experts,
      f'config.model.top_k={m.top_k}: exceeds n_experts={m.n_experts}; set top_k <= ' 'n_experts.',
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
  resolve_d_expert(m)


def _validate_moe(config) -> None:
  moe, m = config.moe, config.model
  _require(
      _finite(moe.capacity_factor),
      f'config.moe.capacity_factor={moe.capacity_factor!r}: must be a finite number (slots per '
      'expert = capacity_factor x tokens x top_k / n_experts; <= 0 is dropless).',
  )
  _require(
      moe.dispatch == 'einsum' or moe.capacity_factor <= 0,
      f'config.moe.capacity_factor={moe.capacity_factor}: {moe.dispatch} dispatch is '
      'dropless; set capacity_factor=0, or use dispatch=einsum for capacity-limited routing.',
  )
  _require(
      isinstance(moe.block_rows, int)
      and not isinstance(moe.block_rows, bool)
      and moe.block_rows > 0,
      f'config.moe.block_rows={moe.block_rows!r}: must be a positive whole number.',
  )
  tiles = tuple(moe.tokamax_tiles)
  _require(
      tiles == ()
      or (
          len(tiles) == 3
          and all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tiles)
      ),
      f'config.moe.tokamax_tiles={moe.tokamax_tiles!r}: give three positive whole numbers '
      '(tile_m, tile_k, tile_n), or () for the kernel defaults.',
  )
  if moe.dispatch == 'tokamax' and m.n_experts:
    _require(
        grouped_matmul.tokamax_installed(),
        "config.moe.dispatch='tokamax': tokamax is not installed; pip install -e '.[gpu]' "
        "(or '.[tpu]'), or use dispatch=ragged_dot.",
    )
  for field in ('load_balance_coef', 'z_loss_coef', 'bias_update_rate'):
    _require(
        _finite(moe[field]) and moe[field] >= 0,
        f'config.moe.{field}={moe[field]!r}: must be a finite number >= 0.',
    )
  _require(
      _finite(moe.routed_scaling) and moe.routed_scaling > 0,
      f'config.moe.routed_scaling={moe.routed_scaling!r}: must be a finite number > 0 (1.0: '
      'the normalised weights as they are; Ling 2.0 uses 2.5).',
  )
  if m.n_experts and moe.router == 'sigmoid_bias':
    _require(
        moe.n_groups >= 1 and m.n_experts % moe.n_groups == 0,
        f'config.moe.n_groups={moe.n_groups}: must divide n_experts={m.n_experts}.',
    )
    _require(
        1 <= moe.top_groups <= moe.n_groups,
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
  _require(
      isinstance(d.seed, int) and d.seed >= 0,
      f'config.data.seed={d.seed!r}: must be a whole number >= 0.',
  )
  if d.source in ('stdlib', 'synthetic'):
    _require(
        0 < d.eval_fraction < 1, f'config.data.eval_fraction={d.eval_fraction}: must be in (0, 1).'
    )
  if d.source == 'stdlib':
    _require(
        config.model.vocab_size >= 256,
        f'config.model.vocab_size={config.model.vocab_size}: the stdlib corpus is byte-level;'
        ' needs vocab_size >= 256.',
    )
  if d.source in ('tokens', 'array_record'):
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
    _require(
        d.token_dtype in ('uint16', 'uint32', 'int32'),
        f"config.data.token_dtype={d.token_dtype!r}: use 'uint16', 'uint32' or 'int32'.",
    )


def _validate_train(config, arch: flops.Architecture) -> None:
  t = config.train
  for field in (
      'seq_len',
      'batch_size',
      'grad_accum_steps',
      'steps_per_call',
      'eval_every',
      'eval_batches',
      'log_every',
      'checkpoint_every',
      'keep_checkpoints',
  ):
    _positive_int(t[field], f'train.{field}')
  for field in ('eval_sequences', 'eval_batch_size'):
    _require(
        isinstance(t[field], int) and not isinstance(t[field], bool) and t[field] >= 0,
        f'config.train.{field}={t[field]!r}: must be a whole number >= 0 (0: the default).',
    )
  if t.eval_sequences:
    size = eval_batch_size(t)
    _require(
        t.eval_sequences % size == 0,
        f'config.train.eval_sequences={t.eval_sequences}: must be a multiple of the eval '
        f'batch ({size} sequences, train.eval_batch_size or batch_size).',
    )
  _require(
      isinstance(t.requested_batch_size, int) and t.requested_batch_size >= 0,
      f'config.train.requested_batch_size={t.requested_batch_size!r}: a whole number >= 0, set '
      'by ling_jax.layout; leave it 0.',
  )
  _require(
      t.batch_rule == 'round' or t.batch_size % t.grad_accum_steps == 0,
      f'config.train.grad_accum_steps={t.grad_accum_steps}: must divide batch_size='
      f'{t.batch_size}.',
  )
  _require(
      isinstance(t.seed, int) and t.seed >= 0,
      f'config.train.seed={t.seed!r}: must be a whole number >= 0.',
  )
  _require(
      isinstance(t.tokens, int) and t.tokens >= 0,
      f'config.train.tokens={t.tokens!r}: must be a whole number of tokens >= 0 (0: use '
      'train.compute_budget).',
  )
  _require(
      _finite(t.compute_budget) and t.compute_budget >= 0,
      f'config.train.compute_budget={t.compute_budget!r}: must be a number of FLOPs >= 0 (0: use '
      'train.tokens).',
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
  for field in ('warmup_fraction', 'decay_fraction'):
    _require(
        _finite(t[field]) and 0 <= t[field] <= 1,
        f'config.train.{field}={t[field]!r}: must be a share of the steps in [0, 1].',
    )
  _require(
      t.warmup_fraction + t.decay_fraction <= 1,
      f'config.train.warmup_fraction={t.warmup_fraction} + config.train.decay_fraction='
      f'{t.decay_fraction}: together at most 1 (the rest is the stable phase).',
  )
  _require(
      0 < t.final_lr_fraction <= 1,
      f'config.train.final_lr_fraction={t.final_lr_fraction}: must be in (0, 1].',
  )
  _require(
      _finite(t.learning_rate) and t.learning_rate > 0,
      f'config.train.learning_rate={t.learning_rate}: must be a positive number.',
  )
  for field in ('b1', 'b2'):  # AdamW's moment decays: 1 never forgets, above 1 diverges
    _require(
        _finite(t[field]) and 0 <= t[field] < 1,
        f'config.train.{field}={t[field]!r}: must be in [0, 1) (the paper: b1 0.9, b2 0.95).',
    )
  _require(
      _finite(t.eps) and t.eps > 0,
      f'config.train.eps={t.eps!r}: must be a small positive number (AdamW: 1e-8).',
  )
  _require(
      _finite(t.weight_decay) and t.weight_decay >= 0,
      f'config.train.weight_decay={t.weight_decay!r}: must be >= 0 (the paper: 0.1).',
  )
  _require(
      _finite(t.clip_norm) and t.clip_norm >= 0,
      f'config.train.clip_norm={t.clip_norm!r}: must be >= 0 (0 disables clipping).',
  )


def _validate_mesh(config) -> None:
  """The mesh's shape as far as it can be checked without devices (sharding.make_mesh checks
  it against the devices there are)."""
  m = config.mesh
  for axis in MESH_AXES:
    _require(
        isinstance(m[axis], int) and (m[axis] >= 1 or m[axis] == -1),
        f'config.mesh.{axis}={m[axis]!r}: devices per axis must be a whole number >= 1, or -1 '
        'for the devices left.',
    )
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
  _require(
      isinstance(m.num_devices, int) and m.num_devices >= 0,
      f'config.mesh.num_devices={m.num_devices!r}: must be a whole number >= 0 (0: every '
      'device).',
  )


def _validate_metrics(config) -> None:
  m = config.metrics
  _positive_int(m.flush_every, 'metrics.flush_every')
  _require(
      _finite(m.remote_retry_s) and m.remote_retry_s >= 0,
      f'config.metrics.remote_retry_s={m.remote_retry_s!r}: must be a number of seconds >= 0 '
      '(0: no retries; default 600).',
  )
  _require(
      _finite(m.peak_flops_per_device) and m.peak_flops_per_device >= 0,
      f'config.metrics.peak_flops_per_device={m.peak_flops_per_device!r}: must be FLOP/s >= 0 '
      '(0 looks it up from the device kind).',
  )


def validate(config) -> flops.Architecture:
  """Checks the whole config; returns its architecture, or raises one ConfigError."""
  _validate_choices(config)
  _validate_model(config)
  _validate_moe(config)
  arch = architecture(config)
  _validate_data(config)
  _validate_train(config, arch)
  _validate_mesh(config)
  _validate_metrics(config)
  return arch


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
