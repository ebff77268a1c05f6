"""The train state: plain pytrees of (sharded) arrays, and how to build it."""

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hybrid_jax import config as config_lib
from hybrid_jax.pretrained import LoadedModel


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: batches trained on so far (int32 scalar).
    params: the trained parameters: {"encoder": nnx.State} and, when the
      temperature is learned, "log_temperature".
    frozen: encoder parameters that are not trained (maybe empty).
    opt_state: the optax state of `params`.
  """
  step: jax.Array
  params: dict
  frozen: nnx.State
  opt_state: optax.OptState


def _is_word_embedding(path, _) -> bool:
  return path[-1] == "word" and "embeddings" in path


def create(loaded: LoadedModel, cfg: config_lib.TrainConfig,
           tx: optax.GradientTransformation,
           mesh: jax.sharding.Mesh) -> TrainState:
  """The state at step 0, from a loaded model; arrays keep their shardings.

  Scalars are replicated over `mesh`; the optimiser moments take the
  shardings of their parameters.
  """
  replicated = jax.NamedSharding(mesh, jax.sharding.PartitionSpec())
  keep_fixed = _is_word_embedding if cfg.freeze_word_embeddings else nnx.Nothing
  frozen, trained = loaded.params.split(keep_fixed, ...)
  params = {"encoder": trained}
  if cfg.learn_temperature:
    params["log_temperature"] = jax.device_put(
        jnp.log(jnp.float32(cfg.temperature)), replicated)
  mesh_devices = set(mesh.devices.flat)
  # Moments follow their parameters; counters come out on one device.
  opt_state = jax.tree.map(
      lambda x: x if x.sharding.device_set == mesh_devices
      else jax.device_put(x, replicated), jax.jit(tx.init)(params))
  return TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), replicated),
                    params=params, frozen=frozen, opt_state=opt_state)


def shardings(state: TrainState):
  """The sharding of every array of `state` (a pytree like it)."""
  return jax.tree.map(lambda x: x.sharding, state)


def abstract(state: TrainState):
  """`state` as ShapeDtypeStructs with shardings (a restore target)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state)
