"""The train state: plain pytrees of (sharded) arrays, and how to build it."""

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hybrid_jax import config as config_lib


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: batches trained on so far (int32 scalar).
    params: the trained parameters: {"encoder": nnx.State} and, when the
      temperature is learned, "temperature" (see `temperature`).
    frozen: encoder parameters that are not trained (maybe empty).
    opt_state: the optax state of `params`.
  """
  step: jax.Array
  params: dict
  frozen: nnx.State
  opt_state: optax.OptState


# Temperatures a learned one is clamped to.
TEMPERATURE_RANGE = (0.01, 1.0)


def _temperature_speed(cfg: config_lib.TrainConfig) -> float:
  return cfg.temperature_learning_rate / cfg.learning_rate


def temperature(params: dict, cfg: config_lib.TrainConfig) -> jax.Array:
  """The softmax temperature: fixed, or learned.

  A learned one is stored as log(temperature) / s with s =
  temperature_learning_rate / learning_rate: Adam moves every parameter by
  about the learning rate per update, so log(temperature) moves at
  temperature_learning_rate while sharing the encoder's optimiser.
  """
  if "temperature" not in params:
    return jnp.float32(cfg.temperature)
  return jnp.clip(jnp.exp(params["temperature"] * _temperature_speed(cfg)),
                  *TEMPERATURE_RANGE)


def _is_word_embedding(path, _) -> bool:
  return path[-1] == "word" and "embeddings" in path


def split_params(params: nnx.State, cfg: config_lib.TrainConfig
                 ) -> tuple[nnx.State, nnx.State]:
  """(trained, frozen) encoder parameters: frozen are the word embeddings
  if `cfg.freeze_word_embeddings`, else none."""
  keep_fixed = _is_word_embedding if cfg.freeze_word_embeddings else nnx.Nothing
  frozen, trained = params.split(keep_fixed, ...)
  return trained, frozen


def create(params: nnx.State, cfg: config_lib.TrainConfig,
           tx: optax.GradientTransformation,
           mesh: jax.sharding.Mesh) -> TrainState:
  """The state at step 0 from a model's parameters, created in place.

  Parameters keep their shardings, the optimiser moments take those of
  their parameters, and scalars are replicated over `mesh`.
  """
  replicated = jax.NamedSharding(mesh, jax.sharding.PartitionSpec())
  trained, frozen = split_params(params, cfg)
  params = {"encoder": trained}
  if cfg.learn_temperature:
    params["temperature"] = jax.device_put(
        jnp.log(jnp.float32(cfg.temperature)) / _temperature_speed(cfg),
        replicated)
  opt_shardings = optax.tree_utils.tree_map_params(
      tx, lambda _, param_sharding: param_sharding,
      jax.eval_shape(tx.init, params), shardings(params),
      transform_non_params=lambda _: replicated)
  return TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), replicated),
                    params=params, frozen=frozen,
                    opt_state=jax.jit(tx.init, out_shardings=opt_shardings)(
                        params))


def shardings(state):
  """The sharding of every array of `state` (a pytree like it)."""
  return jax.tree.map(lambda x: x.sharding, state)


def abstract(state: TrainState):
  """`state` as ShapeDtypeStructs with shardings (a restore target)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state)
