"""Reads a sweep's evaluation files: the baseline's and every run's.

  <workdir>/baseline/eval/<set>.json, <set>.queries.npz
  <workdir>/ratio_<r>_seed_<s>/config.json, environment.jsonl,
                                eval/<set>.json, ...

Only finished evaluations are read (a JSON is written after its arrays).
Runs must differ only in their ratio and seed, and be evaluated as the
baseline was: a workdir mixing other settings is not one sweep. Where each
evaluation and each training start ran (`hybrid_jax.environment`) is read
too: one sweep may mix machines, which the report says.
"""

import dataclasses
import json
from typing import Any

from etils import epath
import numpy as np

from hybrid_jax import config as config_lib
from hybrid_jax import environment
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
    """The question ids of a task's queries."""
    return self.arrays[f"{setting}/{task}/qid"]

  def values(self, setting: str, task: str, metric: str) -> np.ndarray:
    """A metric's per-query values of a task, in `qids` order."""
    return self.arrays[f"{setting}/{task}/{metric}"]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """The evaluations of a sweep: the baseline's and each run's, by data set
  name; a run not (yet) evaluated on a data set lacks it."""
  baseline: dict[str, Evaluation]
  runs: dict[tuple[float, int], dict[str, Evaluation]]  # (ratio, seed).
  train_languages: tuple[str, ...]
  settings: dict[str, Any]  # Training settings shared by every run.
  # What each evaluation and training start ran on, by a label naming it
  # (None: not recorded, as before environment.py).
  environments: dict[str, dict[str, Any] | None]

  def evaluated(self, name: str) -> dict[tuple[float, int], Evaluation]:
    """The runs evaluated on data set `name`, by (ratio, seed)."""
    return {run: evals[name] for run, evals in self.runs.items()
            if name in evals}

  def missing(self, name: str) -> list[tuple[float, int]]:
    """The runs not evaluated on data set `name`."""
    return [run for run, evals in self.runs.items() if name not in evals]


def read_evaluation(directory: epath.Path, name: str) -> Evaluation:
  """The finished results of data set `name` in an eval directory."""
  files = results.paths(directory, name)
  try:
    summary = json.loads(files["json"].read_text())
    with files["queries"].open("rb") as f, np.load(f) as arrays:
      return Evaluation(summary=summary, arrays=dict(arrays))
  except (OSError, ValueError) as e:
    raise ValueError(
        f"Cannot read the results of {name} in {directory} ({e}). Move the "
        "damaged files away and rerun the sweep to evaluate again.") from e


def _finished(directory: epath.Path) -> dict[str, Evaluation]:
  """Every finished evaluation in `directory`, by data set name."""
  names = sorted(p.name[:-len(".json")] for p in directory.glob("*.json"))
  return {name: read_evaluation(directory, name) for name in names}


def _flat_settings(cfg: config_lib.ExperimentConfig) -> dict[str, Any]:
  """A run's result settings, except those the sweep varies."""
  return {k: v for k, v in run_directory.result_settings(
      run_directory.config_json(cfg)).items() if k not in SWEPT_SETTINGS}


# Evaluation settings that name the model, which differ between models.
MODEL_SETTINGS = ("model", "step", "model_settings", "seed")


def _check_protocol(baseline: Evaluation, run: Evaluation,
                    where: epath.Path) -> None:
  """Raises if a run was evaluated under other settings than the baseline
  (languages, lengths, index, prefixes)."""
  ours, theirs = (
      {k: v for k, v in e.summary["settings"].items()
       if k not in MODEL_SETTINGS} for e in (baseline, run))
  differ = config_lib.differing_keys(ours, theirs)
  if differ:
    raise ValueError(
        f"{where} was evaluated with other settings than the baseline "
        f"({differ} differ): one report compares one protocol. Rerun the "
        "sweep in a fresh workdir.")


def _evaluation_environments(directory: epath.Path,
                              evals: dict[str, Evaluation]
                              ) -> dict[str, dict[str, Any] | None]:
  return {f"{directory.name} evaluation on {name}":
          e.summary.get("environment") for name, e in evals.items()}


def _training_environments(directory: epath.Path
                           ) -> dict[str, dict[str, Any] | None]:
  starts = environment.read_starts(directory /
                                   run_directory.ENVIRONMENT_FILE)
  if not starts:
    return {f"{directory.name} training": None}
  return {f"{directory.name} training from step {start['step']}":
          {k: v for k, v in start.items() if k != "step"} for start in starts}


def read(workdir: epath.Path) -> Sweep:
  """The baseline and every run of the sweep in `workdir`.

  Raises:
    FileNotFoundError: no baseline evaluation or no run.
    ValueError: runs of different settings, or damaged files.
  """
  workdir = epath.Path(workdir)
  baseline_dir = workdir / run_directory.BASELINE_DIR
  baseline = _finished(baseline_dir / evaluate.EVAL_DIR)
  run_dirs = sorted(p.parent for p in workdir.glob(
      f"{run_directory.RUN_PATTERN}/{run_directory.CONFIG_FILE}"))
  if not baseline or not run_dirs:
    raise FileNotFoundError(
        f"{workdir} holds no finished sweep (need baseline/eval/<set>.json "
        "and ratio_<r>_seed_<s>/ runs): run the sweep first (python -m "
        "hybrid_jax.main --config=configs/ratio_sweep.py --workdir=DIR).")
  configs = {d: run_directory.read_config(d) for d in run_dirs}
  shared = _flat_settings(configs[run_dirs[0]])
  runs = {}
  environments = _evaluation_environments(baseline_dir, baseline)
  for directory, cfg in configs.items():
    differ = config_lib.differing_keys(shared, _flat_settings(cfg))
    if differ:
      raise ValueError(
          f"{directory} is a run of other settings than {run_dirs[0]} "
          f"({differ} differ): one report covers one sweep. Move it to "
          "another workdir.")
    evals = {name: e for name, e in _finished(
        directory / evaluate.EVAL_DIR).items() if name in baseline}
    for name, evaluation in evals.items():
      _check_protocol(baseline[name], evaluation,
                      directory / evaluate.EVAL_DIR / f"{name}.json")
    runs[cfg.data.ratio, cfg.seed] = evals
    environments.update(_training_environments(directory))
    environments.update(_evaluation_environments(directory, evals))
  return Sweep(baseline=baseline, runs=dict(sorted(runs.items())),
               train_languages=configs[run_dirs[0]].data.train.all_languages,
               settings=shared, environments=environments)
