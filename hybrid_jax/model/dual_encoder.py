"""The dual encoder: questions and passages to L2-normalised embeddings.

One encoder tower is shared by questions and passages (as in the paper);
`separate_towers` gives passages a tower of their own, starting from the
same weights as the query tower (see `init_state`). A tower's hidden states are pooled (`cls`, `mean` over the
attention mask, or `pooler`: LaBSE's dense + tanh over CLS), optionally
projected, and L2-normalised.
"""

import dataclasses
from typing import Literal, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hybrid_jax import sharding
from hybrid_jax.model import encoder as encoder_lib

Pooling = Literal["cls", "mean", "pooler"]
POOLINGS = ("cls", "mean", "pooler")
ParamPath = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class DualEncoderConfig:
  """Towers, pooling and output head of the dual encoder.

  Attributes:
    encoder: architecture of each tower.
    pooling: "cls", "mean" (over real tokens) or "pooler" (dense+tanh on CLS).
    projection_dim: size of a linear projection after pooling; 0: none.
    separate_towers: passages get their own tower (default: shared).
    normalize: L2-normalise the embeddings.
  """
  encoder: encoder_lib.EncoderConfig
  pooling: Pooling = "mean"
  projection_dim: int = 0
  separate_towers: bool = False
  normalize: bool = True

  @property
  def embedding_dim(self) -> int:
    """Size of the output embeddings."""
    return self.projection_dim or self.encoder.hidden_size

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"model.pooling={self.pooling!r}: use 'cls', 'mean' "
                       "or 'pooler'.")
    if self.projection_dim < 0:
      raise ValueError(f"model.projection_dim={self.projection_dim} must be "
                       ">= 0 (0: no projection).")


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `hidden` [b, l, h] over the positions where `mask` is set."""
  mask = mask.astype(jnp.float32)[..., None]
  total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)
  return total / jnp.maximum(mask.sum(axis=1), 1.0)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along the last axis (as torch's F.normalize)."""
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, eps)


class Tower(nnx.Module):
  """An encoder plus its pooling head: ids -> one vector per text."""

  def __init__(self, cfg: DualEncoderConfig, *, rngs: nnx.Rngs):
    enc = cfg.encoder
    self.encoder = encoder_lib.Encoder(enc, rngs=rngs)
    h = (enc.hidden_size,)
    self.pooler = (encoder_lib.Dense(h, h, ("embed",), ("proj",), enc,
                                      rngs=rngs)
                   if cfg.pooling == "pooler" else None)
    self.projection = (
        encoder_lib.Dense(h, (cfg.projection_dim,), ("embed",), ("proj",),
                           enc, rngs=rngs)
        if cfg.projection_dim else None)
    self._cfg = cfg

  def __call__(self, ids: jax.Array, mask: jax.Array,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Embeddings [batch, dim] (float32) of token ids [batch, length]."""
    hidden = self.encoder(ids, mask, rngs)
    if self._cfg.pooling == "mean":
      pooled = mean_pool(hidden, mask)
    elif self._cfg.pooling == "cls":
      pooled = hidden[:, 0]
    else:
      pooled = jnp.tanh(self.pooler(hidden[:, 0]))
    pooled = pooled.astype(jnp.float32)
    if self.projection is not None:
      pooled = self.projection(pooled).astype(jnp.float32)
    return l2_normalize(pooled) if self._cfg.normalize else pooled


class DualEncoder(nnx.Module):
  """Question and passage towers (one shared tower by default)."""

  def __init__(self, cfg: DualEncoderConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.query_tower = Tower(cfg, rngs=rngs)
    self.passage_tower = (Tower(cfg, rngs=rngs) if cfg.separate_towers
                          else None)

  def encode_query(self, ids: jax.Array, mask: jax.Array,
                   rngs: nnx.Rngs | None = None) -> jax.Array:
    """Embeddings [batch, dim] (float32) of question token ids."""
    return self.query_tower(ids, mask, rngs)

  def encode_passage(self, ids: jax.Array, mask: jax.Array,
                     rngs: nnx.Rngs | None = None) -> jax.Array:
    """Embeddings [batch, dim] (float32) of passage token ids."""
    tower = (self.query_tower if self.passage_tower is None
             else self.passage_tower)
    return tower(ids, mask, rngs)


def abstract_state(cfg: DualEncoderConfig, mesh: jax.sharding.Mesh):
  """(graphdef, state of ShapeDtypeStructs carrying their shardings).

  Nothing is allocated: use it to plan memory, check a mesh, or as the
  target of a restore.
  """
  with sharding.use_mesh(mesh):
    graphdef, state = nnx.get_abstract_model(
        lambda: DualEncoder(cfg, rngs=nnx.Rngs(0)), mesh)
  sharding.check_divisible(state, mesh)
  return graphdef, state


def _initial_source(path: ParamPath) -> ParamPath:
  """The parameter whose initial value `path` takes.

  Separate towers start from the same weights: the query tower's.
  """
  if path[0] == "passage_tower":
    return ("query_tower",) + path[1:]
  return path


def init_state(cfg: DualEncoderConfig, mesh: jax.sharding.Mesh, seed: int,
               given: Mapping[ParamPath, np.ndarray] | None = None):
  """(graphdef, parameters), every parameter created directly in its sharding.

  Args:
    cfg: the model.
    mesh: where the parameters live.
    seed: initialises the parameters `given` lacks.
    given: values of some parameters by path (e.g. the query tower's from a
      checkpoint); only the others are initialised (XLA drops the rest of
      the initialiser). A passage tower copies the query tower's values.
  """
  given = given or {}
  graphdef, abstract = abstract_state(cfg, mesh)
  flat = nnx.to_flat_state(abstract)
  fresh_paths = [p for p, _ in flat if _initial_source(p) not in given]

  def init():
    state = nnx.state(DualEncoder(cfg, rngs=nnx.Rngs(seed)))
    values = dict(nnx.to_flat_state(state))
    return [values[_initial_source(p)][...] for p in fresh_paths]

  targets = {path: leaf.get_value() for path, leaf in flat}
  with sharding.use_mesh(mesh):
    fresh = jax.jit(init, out_shardings=[targets[p].sharding
                                         for p in fresh_paths])()
  values = dict(zip(fresh_paths, fresh))
  for path, target in targets.items():
    if _initial_source(path) in given:
      values[path] = jax.device_put(
          given[_initial_source(path)].astype(target.dtype), target.sharding)
  return graphdef, nnx.from_flat_state(
      [(path, leaf.replace(values[path])) for path, leaf in flat])
