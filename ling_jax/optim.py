"""AdamW with decoupled weight decay on matrices only, global-norm clipping, WSD schedule."""

from __future__ import annotations

import jax
import optax

NO_DECAY_LEAVES = ('scale', 'bias')  # RMSNorm scales and any biases; the router bias is no Param


# The final decay of the WSD schedule: (peak, steps, final fraction of the peak) -> schedule.
DECAY_SHAPES = {
    'exponential': lambda peak, steps, final: optax.exponential_decay(
        peak, steps, final, end_value=peak * final
    ),
    'linear': lambda peak, steps, final: optax.linear_schedule(peak, peak * final, steps),
    'cosine': lambda peak, steps, final: optax.cosine_decay_schedule(peak, steps, alpha=final),
}


def wsd_schedule(
    peak: float,
    total_steps: int,
    warmup_fraction: float,
    decay_fraction: float,
    decay_shape: str,
    final_fraction: float,
) -> optax.Schedule:
  """Warmup-stable-decay: linear warmup to `peak`, constant, then decay to final_fraction*peak."""
  warmup = int(round(warmup_fraction * total_steps))
  decay = int(round(decay_fraction * total_steps))
  stable = max(total_steps - warmup - decay, 0)
  decay_fn = DECAY_SHAPES[decay_shape](peak, max(decay, 1), final_fraction)
  return optax.join_schedules(
      [
          optax.linear_schedule(peak / max(warmup, 1), peak, max(warmup - 1, 1)),
          optax.constant_schedule(peak),
          decay_fn,
      ],
      boundaries=[warmup, warmup + stable],
  )


def decay_mask(params):
  """True for leaves that get weight decay: everything but norm scales and biases."""

  def decays(path, _):
    return getattr(path[-1], 'key', None) not in NO_DECAY_LEAVES

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    train_cfg, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = wsd_schedule(
      train_cfg.learning_rate,
      total_steps,
      train_cfg.warmup_fraction,
      train_cfg.decay_fraction,
      train_cfg.decay_shape,
      train_cfg.final_lr_fraction,
  )
  adamw = optax.adamw(
      schedule,
      b1=train_cfg.b1,
      b2=train_cfg.b2,
      eps=train_cfg.eps,
      weight_decay=train_cfg.weight_decay,
      mask=decay_mask,
  )
  if train_cfg.clip_norm > 0:
    adamw = optax.chain(optax.clip_by_global_norm(train_cfg.clip_norm), adamw)
  return adamw, schedule
