"""Typed, validated settings of the data pipeline (built once from the config)."""

import dataclasses

from data_pipeline import sources
from data_pipeline import splits

MIXING_MODES = ("batch", "example")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A data set, a split of its articles, and optionally some languages."""
  name: str
  split: str = "all"
  languages: tuple[str, ...] = ()  # Empty: every language of the data set.

  @classmethod
  def parse(cls, text: str, languages: tuple[str, ...] = ()) -> "DatasetSpec":
    """Parses `name` or `name:split`, e.g. `xquad_r:test`."""
    name, _, split = text.strip().partition(":")
    return cls(name=name, split=split or "all", languages=languages)

  def __post_init__(self):
    info = sources.dataset_info(self.name)
    if self.split not in splits.SPLITS:
      raise ValueError(
          f"Unknown split {self.split!r} in data set spec "
          f"'{self.name}:{self.split}'; use one of {splits.SPLITS}.")
    sources.check_languages(info, self.languages)

  @property
  def all_languages(self) -> tuple[str, ...]:
    """The chosen languages, or all of the data set's."""
    return self.languages or sources.dataset_info(self.name).languages

  def __str__(self) -> str:
    return self.name if self.split == "all" else f"{self.name}:{self.split}"


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Everything that decides which batches the training pipeline yields.

  Attributes:
    train: the training data set.
    eval: the evaluation data sets (never trained on).
    root: data root; empty means $HYBRID_JAX_DATA, else data/.
    source: "json" reads the files directly, "tfds" through the TFDS builders.
    train_fraction: share of articles in the "train" split.
    ratio: alpha, the probability that a batch is monolingual (X-X); with
      mixing="example" the share of X-X pairs in every batch instead.
    mixing: "batch" (the paper's hybrid batches) or "example".
    language_temperature: language (pair) sampling weight is
      (available pairs) ** temperature: 1 by data set size, 0 uniform.
    hard_negatives: add one other sentence of the answer's paragraph (in the
      passage language) per pair.
    batch_size: global batch size, over all processes and devices.
    max_query_length, max_passage_length: token budgets, special tokens
      included.
    query_prefix, passage_prefix: prepended to every text before tokenizing.
    cache_dir: token cache; empty means $HYBRID_JAX_CACHE, else
      ~/.cache/hybrid_jax.
    seed: seed of the batch sampler.
  """
  train: DatasetSpec
  eval: tuple[DatasetSpec, ...] = ()
  root: str = ""
  source: str = "json"
  train_fraction: float = 0.5
  ratio: float = 0.5
  mixing: str = "batch"
  language_temperature: float = 1.0
  hard_negatives: bool = False
  batch_size: int = 32
  max_query_length: int = 64
  max_passage_length: int = 96
  query_prefix: str = "query: "
  passage_prefix: str = "passage: "
  cache_dir: str = ""
  seed: int = 0

  def __post_init__(self):
    if not 0.0 <= self.ratio <= 1.0:
      raise ValueError(
          f"data.ratio={self.ratio} is outside [0, 1]: it is the probability "
          "of a monolingual (X-X) batch (0 = all X-Y, 1 = all X-X).")
    if self.mixing not in MIXING_MODES:
      raise ValueError(
          f"data.mixing={self.mixing!r}; use one of {MIXING_MODES}.")
    share = self.ratio * self.batch_size
    if self.mixing == "example" and abs(share - round(share)) > 1e-9:
      raise ValueError(
          f"data.mixing='example' puts ratio x batch_size = {share:g} X-X "
          "pairs in every batch, which must be a whole number: choose "
          "data.ratio as a multiple of 1/data.batch_size.")
    if self.source not in ("json", "tfds"):
      raise ValueError(f"data.source={self.source!r}; use 'json' or 'tfds'.")
    if not 0.0 < self.train_fraction < 1.0:
      raise ValueError(
          f"data.train_fraction={self.train_fraction} must lie in (0, 1).")
    if self.language_temperature < 0:
      raise ValueError(
          f"data.language_temperature={self.language_temperature} must be "
          ">= 0 (1 = by data set size, 0 = uniform).")
    if self.batch_size < 1:
      raise ValueError(f"data.batch_size={self.batch_size} must be >= 1.")
    for name in ("max_query_length", "max_passage_length"):
      if getattr(self, name) < 3:
        raise ValueError(f"data.{name}={getattr(self, name)} must be >= 3 "
                         "(two special tokens and some text).")
