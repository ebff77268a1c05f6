"""The training step: the InfoNCE loss of a batch and one optimiser update.

Pure functions of the train state and a global batch, jitted by the
training loop (`train`) and the benchmarks.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hybrid_jax import config as config_lib
from hybrid_jax import losses
from hybrid_jax import train_state as train_state_lib

# Folded into the seed for dropout, away from the initialisation's streams.
_DROPOUT_STREAM = 1


def compute_loss(params: dict, frozen: nnx.State, batch: dict[str, jax.Array],
                 *, graphdef: nnx.GraphDef, cfg: config_lib.TrainConfig,
                 dropout_key: jax.Array | None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The InfoNCE loss of a batch (and its statistics) for `params`.

  Args:
    params: the trained parameters (see `TrainState.params`).
    frozen: the untrained encoder parameters.
    batch: the model inputs (`train.MODEL_INPUTS`) of the global batch.
    graphdef: the model structure.
    cfg: loss settings.
    dropout_key: dropout randomness; None: no dropout.
  """
  model = nnx.merge(graphdef, nnx.State.merge(params["encoder"], frozen))
  rngs = None if dropout_key is None else nnx.Rngs(dropout=dropout_key)
  with_negatives = "negative_ids" in batch
  batch_size = batch["query_ids"].shape[0]
  queries = model.encode_query(batch["query_ids"], batch["query_mask"], rngs)
  ids, mask = batch["passage_ids"], batch["passage_mask"]
  if with_negatives:  # Positives and hard negatives in one pass.
    ids = jnp.concatenate([ids, batch["negative_ids"]])
    mask = jnp.concatenate([mask, batch["negative_mask"]])
  passages = model.encode_passage(ids, mask, rngs)
  temperature = train_state_lib.temperature(params, cfg)
  negatives, usable = None, None
  if with_negatives:
    negatives = passages[batch_size:]
    # Pair j's hard negative is no negative for a question it answers.
    usable = (batch["has_negative"].astype(bool)[None, :]
              & (batch["negative_row"][None, :]
                 != batch["passage_row"][:, None]))
  loss, stats = losses.contrastive_loss(
      queries, passages[:batch_size], negatives, usable,
      temperature=temperature, symmetric=cfg.symmetric)
  return loss, {**stats, "temperature": temperature}


def train_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
               *, graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               schedule: optax.Schedule, cfg: config_lib.TrainConfig,
               seed: int) -> tuple[train_state_lib.TrainState,
                                   dict[str, jax.Array]]:
  """One optimiser step on one global batch (pure; jit it).

  Dropout draws from fold_in(seed, step), so a step's randomness depends
  only on the seed and the step: resumed runs repeat it exactly.
  """
  loss_fn = functools.partial(
      compute_loss, frozen=state.frozen, batch=batch, graphdef=graphdef,
      cfg=cfg, dropout_key=jax.random.fold_in(
          jax.random.fold_in(jax.random.PRNGKey(seed), _DROPOUT_STREAM),
          state.step))
  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1,
                            params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
  return new_state, {
      **stats, "loss": loss, "grad_norm": optax.global_norm(grads),
      "learning_rate": schedule(state.step // cfg.grad_accum_steps)}
