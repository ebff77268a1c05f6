"""Writes a sweep's report into `<workdir>/report/` from its evaluation files.

  report.md       findings, tables with confidence intervals, robustness
                  across language pairs, significance tests, figures;
  results.json    every number of the report (with each model's query x
                  candidate language mAP matrix);
  results.csv     the metric tables: one row per data set, model, seed
                  ("mean": over seeds, with the interval) and metric;
  robustness.csv  cross-lingual mAP over language pairs, per ratio and group;
  tests.csv       the paired tests;
  <set>.*.png     the figures (see `plots`).

The report depends only on the evaluation files and the runs' configs and
environment records, so rewriting it from the same files gives the same
bytes (`tools/report.py`).
"""

import csv
import json
from typing import Any

from etils import epath

from hybrid_jax import files
from hybrid_jax.evaluation import results as results_lib
from hybrid_jax.report import analysis
from hybrid_jax.report import collect
from hybrid_jax.report import markdown
from hybrid_jax.report import plots

REPORT_DIR = "report"
METRIC_COLUMNS = ("dataset", "model", "ratio", "seed", "metric", "value",
                  "ci_low", "ci_high", "seed_sd")
ROBUSTNESS_COLUMNS = ("dataset", "ratio", "group", "num_pairs", "mean",
                      "mean_ci_low", "mean_ci_high", "std", "worst_pair",
                      "worst_map", "best_pair", "best_map", "gap")
TEST_COLUMNS = ("dataset", "metric", "family", "ratio", "other", "difference",
                "ci_low", "ci_high", "p", "p_holm")


def metric_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
  """The metric tables as flat rows: per model and metric, the seed mean
  (seed "mean", with its interval) and each seed's value."""
  out = []
  for name, data in results["datasets"].items():
    for row in data["rows"]:
      common = {"dataset": name, "model": row["model"], "ratio": row["ratio"]}
      for k, entry in row["metrics"].items():
        out.append({**common, "seed": "mean", "metric": k,
                    "value": entry["value"], "ci_low": entry["ci"][0],
                    "ci_high": entry["ci"][1], "seed_sd": entry["seed_sd"]})
        out += [{**common, "seed": seed, "metric": k, "value": value}
                for seed, value in entry["per_seed"].items()]
  return out


def _flat(results: dict[str, Any], section: str,
          interval: str) -> list[dict[str, Any]]:
  """The rows of `section` ("robustness" or "tests") of every data set, the
  interval `interval` split into its two ends."""
  out = []
  for name, data in results["datasets"].items():
    for row in data[section]:
      row = {"dataset": name, **row}
      low, high = row.pop(interval)
      out.append({**row, f"{interval}_low": low, f"{interval}_high": high})
  return out


def _write_csv(path: epath.Path, columns: tuple[str, ...],
               rows: list[dict[str, Any]]) -> None:
  with files.atomic_write(path) as f:
    writer = csv.DictWriter(f, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def build(workdir: epath.Path) -> dict[str, Any]:
  """Analyses the sweep in `workdir` and writes its report; returns the
  numbers (results.json)."""
  workdir = epath.Path(workdir)
  results = analysis.analyse(collect.read(workdir))
  directory = workdir / REPORT_DIR
  directory.mkdir(parents=True, exist_ok=True)
  confidence = results["statistics"]["confidence"]
  figures = {name: plots.draw(data, confidence, directory)
             for name, data in results["datasets"].items()}
  drawn = {p for paths in figures.values() for p in paths}
  for stale in set(directory.glob("*.png")) - drawn:
    stale.unlink()  # A figure of an earlier, different report.
  _write_csv(directory / "results.csv", METRIC_COLUMNS, metric_rows(results))
  _write_csv(directory / "robustness.csv", ROBUSTNESS_COLUMNS,
             _flat(results, "robustness", "mean_ci"))
  _write_csv(directory / "tests.csv", TEST_COLUMNS,
             _flat(results, "tests", "ci"))
  with files.atomic_write(directory / "results.json") as f:
    json.dump(results_lib.json_safe(results), f, indent=1)
  with files.atomic_write(directory / "report.md") as f:
    f.write(markdown.render(results, {name: [p.name for p in paths]
                                      for name, paths in figures.items()}))
  return results
