"""Reads a sweep's evaluation files: the baseline's and every run's.

  <workdir>/baseline/eval/<set>.json, <set>.queries.npz
  <workdir>/ratio_<r>_seed_<s>/config.json, eval/<set>.json, ...

Only finished evaluations are read (a JSON is written after its arrays).
Runs must differ only in their ratio and seed: a workdir mixing runs of
other settings cannot be summarised as one sweep.
"""

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

from hybrid_jax import run_directory
from hybrid_jax.evaluation import evaluate
from hybrid_jax.evaluation import results

# What may differ between the runs of one sweep.
SWEPT_SETTINGS = ("seed", "data.ratio", "data.seed")


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """One model's results on one data set: the summary JSON and the
  per-query arrays (see `hybrid_jax.evaluation.results`)."""
  summary: dict[str, Any]
  arrays: dict[str, np.ndarray]

  def tasks(self, setting: str) -> tuple[str, ...]:
    """The tasks of a setting: languages, or pairs `x-y` for "cross"."""
    return tuple(sorted({k.split("/")[1] for k in self.arrays
                         if k.startswith(setting + "/")}))

  def qids(self, setting: str, task: str) -> np.ndarray:
    return self.arrays[f"{setting}/{task}/qid"]

  def values(self, setting: str, task: str, metric: str) -> np.ndarray:
    return self.arrays[f"{setting}/{task}/{metric}"]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """The evaluations of a sweep, by data set name."""
  datasets: tuple[str, ...]
  baseline: dict[str, Evaluation]
  runs: dict[tuple[float, int], dict[str, Evaluation]]  # (ratio, seed).
  train_languages: tuple[str, ...]
  settings: dict[str, Any]  # Training settings shared by every run.

  @property
  def ratios(self) -> tuple[float, ...]:
    return tuple(sorted({ratio for ratio, _ in self.runs}))

  def seeds(self, ratio: float) -> tuple[int, ...]:
    return tuple(sorted(s for r, s in self.runs if r == ratio))


def read_evaluation(directory: pathlib.Path, name: str) -> Evaluation:
  """The finished results of data set `name` in an eval directory."""
  files = results.paths(directory, name)
  try:
    summary = json.loads(files["json"].read_text())
    with np.load(files["queries"]) as arrays:
      return Evaluation(summary=summary, arrays=dict(arrays))
  except (OSError, ValueError) as e:
    raise ValueError(
        f"Cannot read the results of {name} in {directory} ({e}). Move the "
        "damaged files away and rerun the sweep to evaluate again.") from e


def _finished(directory: pathlib.Path) -> dict[str, Evaluation]:
  """Every finished evaluation in `directory`, by data set name."""
  names = sorted(p.name[:-len(".json")] for p in directory.glob("*.json"))
  return {name: read_evaluation(directory, name) for name in names}


def _flat_settings(directory: pathlib.Path) -> dict[str, Any]:
  """A run's result settings, except those the sweep varies."""
  config = run_directory.config_json(run_directory.read_config(directory))
  return {k: v for k, v in run_directory.result_settings(config).items()
          if k not in SWEPT_SETTINGS}


def read(workdir: pathlib.Path) -> Sweep:
  """The baseline and every evaluated run of the sweep in `workdir`.

  Raises:
    FileNotFoundError: no baseline evaluation or no evaluated run.
    ValueError: runs of different settings, or damaged files.
  """
  workdir = pathlib.Path(workdir)
  baseline = _finished(workdir / run_directory.BASELINE_DIR / evaluate.EVAL_DIR)
  run_dirs = sorted(p.parent.parent for p in workdir.glob(
      f"{run_directory.RUN_PATTERN}/{evaluate.EVAL_DIR}/*.json"))
  if not baseline or not run_dirs:
    raise FileNotFoundError(
        f"{workdir} holds no finished sweep evaluations (need "
        "baseline/eval/<set>.json and ratio_<r>_seed_<s>/eval/<set>.json): "
        "run the sweep first (python -m hybrid_jax.main "
        "--config=configs/ratio_sweep.py --workdir=DIR).")
  shared = _flat_settings(run_dirs[0])
  runs = {}
  for directory in dict.fromkeys(run_dirs):
    differ = sorted(k for k, v in _flat_settings(directory).items()
                    if shared.get(k) != v)
    if differ:
      raise ValueError(
          f"{directory} is a run of other settings than {run_dirs[0]} "
          f"({differ} differ): one report covers one sweep. Move it to "
          "another workdir.")
    cfg = run_directory.read_config(directory)
    runs[cfg.data.ratio, cfg.seed] = _finished(directory / evaluate.EVAL_DIR)
  datasets = tuple(name for name in baseline
                   if all(name in evals for evals in runs.values()))
  if not datasets:
    raise ValueError(
        f"No data set of {workdir}/baseline/eval is evaluated by every run: "
        "rerun the sweep to finish the evaluations.")
  cfg = run_directory.read_config(run_dirs[0])
  return Sweep(datasets=datasets, baseline=baseline,
               runs=dict(sorted(runs.items())),
               train_languages=cfg.data.train.all_languages,
               settings=shared)
