"""report.md: the sweep's tables, robustness, tests, findings and figures."""

from typing import Any

from hybrid_jax.report import analysis
from hybrid_jax.report import findings as findings_lib

TABLES = (
    ("Monolingual (X→X)", "mono", ("map", "r@1", "r@10", "ndcg@10")),
    ("Cross-lingual (X→Y, mean over pairs)", "cross",
     ("map", "r@1", "r@10", "ndcg@10")),
    ("Multilingual (X→pool of every language)", "multi",
     ("map", "r@10", "ndcg@10")),
    ("Rank distance (pooled; max − min rank of a question's answers, lower "
     "is better)", "multi", ("rank_distance",)),
)
HEADERS = {"map": "mAP", "r@1": "R@1", "r@10": "R@10", "ndcg@10": "nDCG@10",
           "rank_distance": "rank distance"}
SETTING_KEYS = ("data.train", "data.languages", "model.init",
                "train.num_steps", "data.batch_size", "train.learning_rate",
                "train.temperature", "data.mixing", "data.max_query_length",
                "data.max_passage_length")


def _cell(entry: dict[str, Any]) -> str:
  low, high = entry["ci"]
  text = f"{findings_lib.number(entry['value'])} [{findings_lib.number(low)}, {findings_lib.number(high)}]"
  if entry["seed_sd"] is not None:
    text += f" ±{findings_lib.number(entry['seed_sd'])}"
  return text


def _model(row: dict[str, Any]) -> str:
  if row["ratio"] is None:
    return "zero-shot baseline"
  return f"α = {row['ratio']:g} ({len(row['seeds'])} seed" + (
      "s)" if len(row["seeds"]) > 1 else ")")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"] +
          ["| " + " | ".join(r) + " |" for r in rows])


def metric_tables(data: dict[str, Any]) -> list[str]:
  out = []
  for title, setting, metrics in TABLES:
    out += [f"#### {title}", ""]
    out += _table(["model"] + [HEADERS[m] for m in metrics],
                  [[_model(r)] + [_cell(r["metrics"][f"{setting}/{m}"])
                                  for m in metrics] for r in data["rows"]])
    out.append("")
  return out


def robustness_table(data: dict[str, Any]) -> list[str]:
  rows = [[("zero-shot" if r["ratio"] is None else f"α = {r['ratio']:g}"),
           r["group"], str(r["num_pairs"]),
           f"{r['mean']:.4f} [{r['mean_ci'][0]:.4f}, {r['mean_ci'][1]:.4f}]",
           f"{r['std']:.4f}", f"{r['worst_pair']} {r['worst_map']:.4f}",
           f"{r['best_pair']} {r['best_map']:.4f}", f"{r['gap']:.4f}"]
          for r in data["robustness"]]
  return _table(["model", "pairs", "n", "mean mAP [CI]", "std", "worst pair",
                 "best pair", "best − worst"], rows)


def tests_table(data: dict[str, Any]) -> list[str]:
  rows = [[findings_lib.NAMES[t["metric"]],
           ("paper" if t["family"] == "paper" else "best vs other"),
           f"α = {t['ratio']:g} − α = {t['other']:g}",
           (f"{findings_lib.number(t['difference'])} [{findings_lib.number(t['ci'][0])}, "
            f"{findings_lib.number(t['ci'][1])}]"),
           f"{t['p']:.4f}", f"{t['p_holm']:.4f}"]
          for t in data["tests"]]
  return _table(["metric", "family", "comparison", "difference [CI]", "p",
                 "Holm p"], rows)


def _setting(value: Any) -> str:
  """A setting as the config writes it (data sets as `name[:split]`)."""
  if isinstance(value, dict) and "name" in value:
    split = "" if value["split"] == "all" else f":{value['split']}"
    return value["name"] + split
  return ",".join(value) if isinstance(value, list) else str(value)


def _settings(results: dict[str, Any]) -> list[str]:
  settings = results["settings"]
  seeds = sorted({s for v in results["seeds"].values() for s in v})
  return [
      f"- Runs: α ∈ {{{', '.join(f'{r:g}' for r in results['ratios'])}}} × "
      f"seeds {seeds}; trained on languages "
      f"{', '.join(results['train_languages'])}.",
      "- Settings: " + ", ".join(f"`{k}={_setting(settings[k])}`"
                                 for k in SETTING_KEYS if k in settings) + ".",
      f"- Cells: value [{results['statistics']['confidence']:.0%} bootstrap "
      f"interval over question ids, {results['statistics']['bootstrap_samples']}"
      " resamples]; with several seeds, the mean over seeds ± their standard "
      "deviation. Tests: paired permutation over question ids "
      f"({results['statistics']['permutations']} sign flips), two-sided; "
      "Holm-adjusted within each family (α = 0.5 vs 0 and 1; the best α vs "
      "each other α).",
  ]


def render(results: dict[str, Any], figures: dict[str, list[str]]) -> str:
  """The whole report.md (`figures`: file names by data set)."""
  out = ["# Ratio sweep report", "",
         "How the share α of monolingual (X-X) batches in hybrid-batch "
         "training changes retrieval (LAReQA protocol).", "",
         *_settings(results), "", "## Findings", ""]
  for name, data in results["datasets"].items():
    out += [f"### {name}", ""]
    out += [f"- {s}" for s in findings_lib.findings(data)]
    out.append("")
  for name, data in results["datasets"].items():
    unseen = ", ".join(data["unseen_languages"]) or "none"
    out += [f"## {name}", "",
            f"{len(data['languages'])} languages "
            f"({', '.join(data['languages'])}; unseen in training: {unseen}); "
            f"{data['num_questions']['mono']} question ids.", ""]
    out += ["### Metrics", ""] + metric_tables(data)
    out += ["### Robustness across language pairs (cross-lingual mAP)", ""]
    out += robustness_table(data) + [""]
    out += ["### Significance", ""] + tests_table(data) + [""]
    out += ["### Figures", ""]
    out += [f"![{f}]({f})" for f in figures[name]] + [""]
  out += ["Every number is in `results.json` (and the tables in "
          "`results.csv`). The best α of a metric is picked from these same "
          "numbers, so its tests are exploratory: Holm's adjustment covers "
          "the several comparisons, not the choice.",
          f"Tested metrics: {', '.join(analysis.TESTED)}."]
  return "\n".join(out) + "\n"
