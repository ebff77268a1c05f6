"""Writes a sweep's report into `<workdir>/report/` from its evaluation files.

  report.md      findings, tables with confidence intervals, robustness
                 across language pairs, significance tests, figures;
  results.json   every number of the report (and the cross-lingual
                 matrices);
  results.csv    the metric tables: one row per data set, model, seed
                 ("mean": over seeds, with the interval) and metric;
  <set>.*.png    the figures (see `plots`).

The report depends only on the evaluation files, so rewriting it from the
same files gives the same bytes (`tools/report.py`).
"""

import csv
import json
import pathlib
from typing import Any

from hybrid_jax import files
from hybrid_jax.evaluation import results as results_lib
from hybrid_jax.report import analysis
from hybrid_jax.report import collect
from hybrid_jax.report import markdown
from hybrid_jax.report import plots

REPORT_DIR = "report"
CSV_COLUMNS = ("dataset", "model", "ratio", "seed", "metric", "value",
               "ci_low", "ci_high", "seed_sd")


def csv_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
  """The metric tables as flat rows (see CSV_COLUMNS)."""
  out = []
  for name, data in results["datasets"].items():
    for row in data["rows"]:
      model = row["model"]
      for k, entry in row["metrics"].items():
        out.append({"dataset": name, "model": model, "ratio": row["ratio"],
                    "seed": "mean", "metric": k, "value": entry["value"],
                    "ci_low": entry["ci"][0], "ci_high": entry["ci"][1],
                    "seed_sd": entry["seed_sd"]})
        out += [{"dataset": name, "model": model, "ratio": row["ratio"],
                 "seed": seed, "metric": k, "value": value}
                for seed, value in entry["per_seed"].items()]
  return out


def build(workdir: pathlib.Path) -> dict[str, Any]:
  """Analyses the sweep in `workdir` and writes its report; returns the
  numbers (results.json)."""
  workdir = pathlib.Path(workdir)
  results = analysis.analyse(collect.read(workdir))
  directory = workdir / REPORT_DIR
  directory.mkdir(parents=True, exist_ok=True)
  confidence = results["statistics"]["confidence"]
  figures = {name: [p.name for p in plots.draw(data, confidence, directory)]
             for name, data in results["datasets"].items()}
  with files.atomic_write(directory / "results.csv") as f:
    writer = csv.DictWriter(f, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(results))
  with files.atomic_write(directory / "results.json") as f:
    json.dump(results_lib.json_safe(results), f, indent=1)
  with files.atomic_write(directory / "report.md") as f:
    f.write(markdown.render(results, figures))
  return results
