"""AdamW with warm-up and decay, clipping and gradient accumulation (optax)."""

import jax
import optax

from hybrid_jax import config as config_lib

# Parameters that are never weight-decayed (as BERT's recipe).
_NO_DECAY = ("bias", "scale", "temperature")


def learning_rate_schedule(cfg: config_lib.TrainConfig) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then linear or cosine decay to 0.

  The schedule counts optimiser updates (batches / grad_accum_steps); the
  first warm-up update already uses learning_rate / warmup_updates.
  """
  updates = max(cfg.num_steps // cfg.grad_accum_steps, 1)
  warmup = int(round(cfg.warmup_fraction * updates))
  peak = cfg.learning_rate
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, max(updates - warmup, 1))
  else:
    decay = optax.linear_schedule(peak, 0.0, max(updates - warmup, 1))
  if not warmup:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(peak / warmup, peak, warmup - 1), decay],
      [warmup])


def _decay_mask(params):
  """True for the parameters that get weight decay."""

  def decays(path, _):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return names[-1] not in _NO_DECAY

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: config_lib.TrainConfig
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimiser, its learning-rate schedule).

  Clipping, then AdamW (decay masked), accumulated over `grad_accum_steps`
  batches. A learned temperature moves faster through its parametrisation
  (see `train_state.temperature`), not through a second optimiser.
  """
  schedule = learning_rate_schedule(cfg)
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip_norm) if cfg.grad_clip_norm
      else optax.identity(),
      optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=_decay_mask))
  if cfg.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps)
  return tx, schedule
