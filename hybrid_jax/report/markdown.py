"""report.md: the sweep's tables, robustness, tests, findings and figures."""

from typing import Any

from hybrid_jax.report import analysis
from hybrid_jax.report import findings as findings_lib
from hybrid_jax.report import formatting

TABLES = (
    ("Monolingual (X→X)", "mono", ("map", "r@1", "r@10", "ndcg@10")),
    ("Cross-lingual (X→Y, mean over pairs)", "cross",
     ("map", "r@1", "r@10", "ndcg@10")),
    ("Multilingual (X→pool of every language; no R@1: with R answers per "
     "question it is at most 1/R)", "multi", ("map", "r@10", "ndcg@10")),
    ("Rank distance (pooled; max − min rank of a question's answers, lower "
     "is better)", "multi", ("rank_distance",)),
)
HEADERS = {"map": "mAP", "r@1": "R@1", "r@10": "R@10", "ndcg@10": "nDCG@10",
           "rank_distance": "rank distance"}
SETTING_KEYS = ("data.train", "data.languages", "model.init",
                "train.num_steps", "data.batch_size", "train.learning_rate",
                "train.temperature", "data.mixing", "data.max_query_length",
                "data.max_passage_length")


def _cell(entry: dict[str, Any], k: str) -> str:
  low, high = entry["ci"]
  text = (f"{formatting.number(entry['value'], k)} "
          f"[{formatting.number(low, k)}, {formatting.number(high, k)}]")
  if entry["seed_sd"] is not None:
    text += f" ±{formatting.number(entry['seed_sd'], k)}"
  return text


def _model(row: dict[str, Any]) -> str:
  if row["ratio"] is None:
    return "zero-shot baseline"
  seeds = len(row["seeds"])
  return f"{formatting.ratio(row['ratio'])} ({seeds} seed{'s' * (seeds > 1)})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"] +
          ["| " + " | ".join(r) + " |" for r in rows])


def metric_tables(data: dict[str, Any]) -> list[str]:
  """One table per setting: a row per model, a column per metric."""
  out = []
  for title, setting, metrics in TABLES:
    keys = [f"{setting}/{m}" for m in metrics]
    out += [f"#### {title}", ""]
    out += _table(["model"] + [HEADERS[m] for m in metrics],
                  [[_model(r)] + [_cell(r["metrics"][k], k) for k in keys]
                   for r in data["rows"]])
    out.append("")
  return out


def robustness_table(data: dict[str, Any]) -> list[str]:
  """Cross-lingual mAP over language pairs, per model and group of pairs."""
  rows = [[formatting.ratio(r["ratio"]), r["group"], str(r["num_pairs"]),
           f"{r['mean']:.4f} [{r['mean_ci'][0]:.4f}, {r['mean_ci'][1]:.4f}]",
           f"{r['std']:.4f}", f"{r['worst_pair']} {r['worst_map']:.4f}",
           f"{r['best_pair']} {r['best_map']:.4f}", f"{r['gap']:.4f}"]
          for r in data["robustness"]]
  return _table(["model", "pairs", "n", "mean mAP [CI]", "std", "worst pair",
                 "best pair", "best − worst"], rows)


def tests_table(data: dict[str, Any]) -> list[str]:
  """Every paired test: difference with its interval, p and Holm's p."""
  rows = []
  for t in data["tests"]:
    k = t["metric"]
    low, high = t["ci"]
    rows.append([
        findings_lib.NAMES[k],
        "paper (0.5 vs 0, 1)" if t["family"] == "paper" else "best vs other",
        f"{formatting.ratio(t['ratio'])} − {formatting.ratio(t['other'])}",
        (f"{formatting.number(t['difference'], k, '+')} "
         f"[{formatting.number(low, k)}, {formatting.number(high, k)}]"),
        f"{t['p']:.4f}", f"{t['p_holm']:.4f}"])
  return _table(["metric", "family", "comparison", "difference [CI]", "p",
                 "Holm p"], rows)


def _setting(value: Any) -> str:
  """A setting as the config writes it (data sets as `name[:split]`)."""
  if isinstance(value, dict) and "name" in value:
    split = "" if value["split"] == "all" else f":{value['split']}"
    return value["name"] + split
  return ",".join(value) if isinstance(value, list) else str(value)


def environment_lines(environments: dict[str, Any]) -> list[str]:
  """What the figures were computed on (see `analysis.environments`)."""
  distinct, missing = environments["distinct"], environments["not_recorded"]
  if not distinct:
    return ["- Environment: not recorded."]
  if len(distinct) == 1 and not missing:
    return [f"- Environment: {distinct[0]['summary']}."]
  if len(distinct) > 1:
    out = ["- **Several environments**: XLA compiles for the host's CPU, so "
           "figures from other machines or library versions can differ in "
           "their last digits."]
  else:
    out = ["- Environment, where recorded (the rest may have run "
           "elsewhere):"]
  out += [f"  - {g['summary']}: {', '.join(g['used_by'])}."
          for g in distinct]
  if missing:
    out.append(f"  - Not recorded: {', '.join(missing)}.")
  return out


def _header(results: dict[str, Any]) -> list[str]:
  settings, stats = results["settings"], results["statistics"]
  seeds = sorted({s for v in results["seeds"].values() for s in v})
  ratios = ", ".join(f"{r:g}" for r in results["ratios"])
  out = [
      f"- Runs: α ∈ {{{ratios}}} × seeds {seeds}; trained on languages "
      f"{', '.join(results['train_languages'])}.",
      "- Settings: " + ", ".join(f"`{k}={_setting(settings[k])}`"
                                 for k in SETTING_KEYS if k in settings) + ".",
      f"- Cells: value [{stats['confidence']:.0%} bootstrap interval over "
      f"question ids, {stats['bootstrap_samples']} resamples]; with several "
      "seeds, the mean over seeds ± their standard deviation (the interval "
      "is that of the seed mean).",
      f"- Tests: paired permutation over question ids "
      f"({stats['permutations']} sign flips), two-sided, Holm-adjusted "
      f"within each family: α = {analysis.PAPER_RATIO:g} against 0 and 1 "
      "(when swept), and the best α against each other α. The best α is "
      "picked from these same numbers, so those tests are exploratory.",
      *environment_lines(results["environments"]),
  ]
  if results["not_evaluated_by_any_run"]:
    out.append("- Not evaluated by any run yet (left out): "
               f"{', '.join(results['not_evaluated_by_any_run'])}.")
  return out


def _dataset(name: str, data: dict[str, Any], figures: list[str]
             ) -> list[str]:
  unseen = ", ".join(data["unseen_languages"]) or "none"
  out = [f"## {name}", "",
         f"{len(data['languages'])} languages "
         f"({', '.join(data['languages'])}; unseen in training: {unseen}); "
         f"{data['num_questions']['mono']} question ids.", ""]
  if data["missing_runs"]:
    missing = ", ".join(f"{formatting.ratio(r)} seed {s}"
                        for r, s in data["missing_runs"])
    out += [f"Runs not evaluated on {name} yet (left out): {missing}.", ""]
  out += ["### Metrics", ""] + metric_tables(data)
  if data["robustness"]:
    out += ["### Robustness across language pairs (cross-lingual mAP)", ""]
    out += robustness_table(data) + [""]
  if data["tests"]:
    out += ["### Significance", ""] + tests_table(data) + [""]
  return out + ["### Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]


def render(results: dict[str, Any], figures: dict[str, list[str]]) -> str:
  """The whole report.md (`figures`: file names by data set)."""
  out = ["# Ratio sweep report", "",
         "How the share α of monolingual (X-X) batches in hybrid-batch "
         "training changes retrieval (LAReQA protocol).", "",
         *_header(results), "", "## Findings", ""]
  for name, data in results["datasets"].items():
    out += [f"### {name}", ""]
    out += [f"- {s}" for s in findings_lib.findings(data)] + [""]
  for name, data in results["datasets"].items():
    out += _dataset(name, data, figures[name])
  out.append("Every number is in `results.json`; the tables are also in "
             "`results.csv`, `robustness.csv` and `tests.csv`.")
  return "\n".join(out) + "\n"
