"""The ratio sweep: the zero-shot baseline, one run per (ratio, seed), the
report.

  <workdir>/baseline/eval/         the evaluation of model.init as it is
  <workdir>/ratio_<r>_seed_<s>/    a run: config, metrics, checkpoints, eval/
  <workdir>/report/                report.md, results.json / .csv, figures

Rerunning the sweep skips what is finished (evaluations are read back,
finished runs are not trained again), resumes an interrupted run from its
newest checkpoint, and never overwrites results. Every stage prints its
wall time, and at the end the process's peak resident memory.
"""

import dataclasses
import resource
from typing import Any

from etils import epath
import jax

from hybrid_jax import config as config_lib
from hybrid_jax import run_directory
from hybrid_jax import runtime
from hybrid_jax import sharding
from hybrid_jax import train
from hybrid_jax.evaluation import evaluate
from hybrid_jax.evaluation import stopwatch as stopwatch_lib
from hybrid_jax.report import build


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """Evaluation results (by data set) of the baseline and of every run."""
  baseline: dict[str, dict[str, Any]]
  runs: dict[tuple[float, int], dict[str, dict[str, Any]]]  # (ratio, seed).
  seconds: dict[str, float]


def run_configs(cfg: config_lib.ExperimentConfig
                ) -> list[config_lib.ExperimentConfig]:
  """One config per (ratio, seed) of `cfg.sweep`, in sweep order."""
  return [dataclasses.replace(cfg, seed=seed, data=dataclasses.replace(
      cfg.data, ratio=ratio, seed=seed))
          for ratio in cfg.sweep.ratios for seed in cfg.sweep.seeds]


def peak_resident_gib() -> float:
  """This process's peak resident memory so far, in GiB (Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(cfg: config_lib.ExperimentConfig, workdir: epath.Path) -> SweepResult:
  """Evaluates the baseline, trains and evaluates every run, then writes the
  report."""
  workdir = epath.Path(workdir)
  configs = run_configs(cfg)  # Every run's settings are checked up front.
  mesh = sharding.make_mesh(cfg.mesh)
  train.check_batch(cfg.data, mesh)
  evaluate.eval_specs(cfg)
  watch = stopwatch_lib.Stopwatch()
  with watch("baseline"):
    baseline = evaluate.run(cfg, workdir / run_directory.BASELINE_DIR)
  runtime.say(f"baseline: {watch.seconds['baseline']:.1f} s")
  runs = {}
  for run_cfg in configs:
    name = run_directory.path(workdir, run_cfg).name
    with watch(f"{name}/train"):
      result = train.run(run_cfg, workdir)
    with watch(f"{name}/eval"):
      runs[run_cfg.data.ratio, run_cfg.seed] = evaluate.evaluate_run(
          run_cfg, result.directory, mesh)
    runtime.say(f"{name}: train {watch.seconds[f'{name}/train']:.1f} s, eval "
                f"{watch.seconds[f'{name}/eval']:.1f} s")
  if jax.process_index() == 0:
    with watch("report"):
      build.build(workdir)
    runtime.say(f"report: {watch.seconds['report']:.1f} s, "
                f"{workdir / build.REPORT_DIR / 'report.md'}")
  seconds = watch.rounded()
  runtime.say(f"sweep: {seconds['total']:.1f} s, peak resident memory "
              f"{peak_resident_gib():.2f} GiB")
  return SweepResult(baseline=baseline, runs=runs, seconds=seconds)
