"""The numbers of the sweep report, from the per-query evaluation arrays.

For each data set:
  rows         the baseline and every ratio (seeds averaged): each metric's
               value, its bootstrap confidence interval over questions, and
               its spread over seeds;
  robustness   per ratio, statistics of the cross-lingual mAP over language
               pairs (mean with its interval, standard deviation, worst and
               best pair, their gap), for all pairs and split by whether the
               languages were seen in training;
  tests        paired permutation tests over questions: ratio 0.5 (the
               paper's) against 0 and 1, and the best ratio against each
               other one (Holm-adjusted within each family);
  (each row also holds its query x candidate language mAP matrix).

Every value is recomputed from `<set>.queries.npz`; the point estimates
equal the macro averages of `<set>.json`.
"""

import dataclasses
from typing import Any

import numpy as np

from hybrid_jax import environment
from hybrid_jax.report import collect
from hybrid_jax.report import formatting
from hybrid_jax.report import statistics

# (setting in the arrays, metric) of the report's tables.
METRICS = (("mono", "map"), ("mono", "r@1"), ("mono", "r@10"),
           ("mono", "ndcg@10"),
           ("cross", "map"), ("cross", "r@1"), ("cross", "r@10"),
           ("cross", "ndcg@10"),
           ("multi", "map"), ("multi", "r@10"), ("multi", "ndcg@10"),
           ("multi", "rank_distance"))
# The metrics tested for significance, one per setting.
TESTED = ("mono/map", "cross/map", "multi/map", "multi/rank_distance")
LOWER_IS_BETTER = ("multi/rank_distance",)
PAPER_RATIO = 0.5
BASELINE = "baseline"
GROUPS = ("all pairs", "both seen", "one unseen", "both unseen")


def key(setting: str, metric: str) -> str:
  """The name of a metric of a setting, e.g. `cross/map`."""
  return f"{setting}/{metric}"


@dataclasses.dataclass(frozen=True)
class Layout:
  """The task and question-id order shared by every model of a data set."""
  tasks: dict[str, tuple[str, ...]]  # By setting.
  ids: dict[str, dict[str, int]]  # Setting -> question id -> column.

  @classmethod
  def of(cls, evaluation: collect.Evaluation) -> "Layout":
    """The tasks and ids of `evaluation` (the baseline's)."""
    tasks, ids = {}, {}
    for setting in ("mono", "cross", "multi"):
      tasks[setting] = evaluation.tasks(setting)
      every = sorted({q for t in tasks[setting]
                      for q in evaluation.qids(setting, t)})
      ids[setting] = {q: i for i, q in enumerate(every)}
    return cls(tasks=tasks, ids=ids)

  def table(self, evaluation: collect.Evaluation, setting: str,
            metric: str) -> np.ndarray:
    """[tasks, ids] values of one metric, NaN where a task lacks an id."""
    tasks = self.tasks[setting]
    if evaluation.tasks(setting) != tasks:
      raise ValueError(
          f"Evaluations of one report must cover the same {setting} tasks "
          f"({evaluation.tasks(setting)} vs {tasks}): rerun the sweep in a "
          "fresh workdir.")
    out = np.full((len(tasks), len(self.ids[setting])), np.nan)
    for row, task in enumerate(tasks):
      columns = [self.ids[setting][q] for q in evaluation.qids(setting, task)]
      out[row, columns] = evaluation.values(setting, task, metric)
    return out


def _summary_value(evaluation: collect.Evaluation, setting: str,
                   metric: str) -> float:
  """The macro average as the evaluation JSON states it (NaN for none)."""
  if metric == "rank_distance":
    value = evaluation.summary["rank_distance"]["mean"]
  else:
    value = evaluation.summary[setting][metric]
  return float("nan") if value is None else float(value)


def _check_equal(found: float, stated: float, where: str) -> None:
  if not np.isclose(found, stated, rtol=1e-9, atol=1e-12, equal_nan=True):
    raise ValueError(
        f"{where}: the per-query arrays give {found}, the JSON {stated}; the "
        "files do not belong together. Evaluate this model again.")


def _tables(layout: Layout, evaluations: list[collect.Evaluation],
            name: str) -> dict[str, np.ndarray]:
  """Per metric: the seed-averaged [tasks, ids] values of one model,
  checking each seed against its JSON."""
  out = {}
  for setting, metric in METRICS:
    per_seed = []
    for evaluation in evaluations:
      table = layout.table(evaluation, setting, metric)
      _check_equal(float(statistics.macro(statistics.point_means(table))),
                   _summary_value(evaluation, setting, metric),
                   f"{name} {key(setting, metric)}")
      per_seed.append(table)
    out[key(setting, metric)] = np.mean(per_seed, axis=0)
  return out


def _row(ratio: float | None, seeds: tuple[int, ...],
         evaluations: list[collect.Evaluation], tables: dict[str, np.ndarray],
         weights: dict[str, np.ndarray]) -> dict[str, Any]:
  """One model's metrics (value, interval, spread over seeds) and its
  query x candidate language mAP matrix."""
  metrics = {}
  for setting, metric in METRICS:
    k = key(setting, metric)
    per_seed = [_summary_value(e, setting, metric) for e in evaluations]
    samples = statistics.macro(
        statistics.task_means(tables[k], weights[setting]))
    metrics[k] = {
        "value": float(np.mean(per_seed)),
        "ci": list(statistics.interval(samples)),
        "seed_sd": (float(np.std(per_seed, ddof=1)) if len(per_seed) > 1
                    else None),
        "per_seed": dict(zip(map(str, seeds), per_seed))}
  return {"model": BASELINE if ratio is None else "trained", "ratio": ratio,
          "seeds": list(seeds), "metrics": metrics,
          "cross_matrix": _matrix(evaluations)}


def _group(pair: str, seen: set[str]) -> str:
  unseen = sum(lang not in seen for lang in pair.split("-"))
  return ("both seen", "one unseen", "both unseen")[unseen]


def _robustness(ratio: float | None, pairs: tuple[str, ...],
                table: np.ndarray, weights: np.ndarray,
                seen: set[str]) -> list[dict[str, Any]]:
  """Cross-lingual mAP statistics over language pairs: all pairs and, if
  some languages were not seen in training, per group of pairs."""
  means = statistics.point_means(table)
  samples = statistics.task_means(table, weights)
  groups = {"all pairs": np.isfinite(means)}
  if any(_group(p, seen) != "both seen" for p in pairs):
    for group in GROUPS[1:]:
      groups[group] = groups["all pairs"] & np.array(
          [_group(p, seen) == group for p in pairs], bool)
  out = []
  for group, chosen in groups.items():
    if not chosen.any():
      continue
    names = [p for p, c in zip(pairs, chosen) if c]
    values = means[chosen]
    worst, best = int(np.argmin(values)), int(np.argmax(values))
    out.append({
        "ratio": ratio, "group": group, "num_pairs": int(chosen.sum()),
        "mean": float(values.mean()),
        "mean_ci": list(statistics.interval(
            statistics.macro(samples[:, chosen]))),
        "std": float(values.std()),
        "worst_pair": names[worst], "worst_map": float(values[worst]),
        "best_pair": names[best], "best_map": float(values[best]),
        "gap": float(values[best] - values[worst])})
  return out


def trained_rows(rows: list[dict[str, Any]], k: str) -> list[dict[str, Any]]:
  """The rows of trained ratios that have a value of metric `k`."""
  return [r for r in rows if r["model"] != BASELINE
          and np.isfinite(r["metrics"][k]["value"])]


def best_ratio(rows: list[dict[str, Any]], k: str) -> float | None:
  """The ratio with the best value of metric `k` (ties: the smaller);
  None if no ratio has a value."""
  candidates = trained_rows(rows, k)
  if not candidates:
    return None
  sign = -1 if k in LOWER_IS_BETTER else 1
  return max(candidates, key=lambda r: (sign * r["metrics"][k]["value"],
                                        -r["ratio"]))["ratio"]


def _test(k: str, a: float, b: float, family: str,
          tables: dict[float, dict[str, np.ndarray]],
          weights: np.ndarray) -> dict[str, Any]:
  difference = tables[a][k] - tables[b][k]
  samples = statistics.macro(statistics.task_means(difference, weights))
  return {"metric": k, "family": family, "ratio": a, "other": b,
          "difference": float(statistics.macro(
              statistics.point_means(difference))),
          "ci": list(statistics.interval(samples)),
          "p": statistics.paired_permutation_p(tables[a][k], tables[b][k])}


def _tests(rows: list[dict[str, Any]],
           tables: dict[float, dict[str, np.ndarray]],
           weights: dict[str, np.ndarray]) -> list[dict[str, Any]]:
  """The paper's ratio against 0 and 1; the best ratio against the rest."""
  out = []
  for k in TESTED:
    w = weights[k.split("/")[0]]
    usable = {r["ratio"] for r in trained_rows(rows, k)}
    families = {"paper": [(PAPER_RATIO, other) for other in (0.0, 1.0)
                          if {PAPER_RATIO, other} <= usable]}
    best = best_ratio(rows, k)
    families["best"] = [(best, other) for other in sorted(usable)
                        if other != best]
    for family, comparisons in families.items():
      found = [_test(k, a, b, family, tables, w) for a, b in comparisons]
      for test, adjusted in zip(found, statistics.holm(
          [t["p"] for t in found])):
        test["p_holm"] = adjusted
      out.extend(found)
  return out


def _matrix(evaluations: list[collect.Evaluation]
            ) -> dict[str, dict[str, float]]:
  """Query x candidate language mAP (mono on the diagonal), seed mean."""
  out = {}
  for evaluation in evaluations:
    s = evaluation.summary
    cells = [(x, x, mono["map"]) for x, mono in
             s["mono"]["per_language"].items()]
    cells += [(x, y, cell["map"]) for x, row in s["cross"]["matrix"].items()
              for y, cell in row.items()]
    for x, y, value in cells:
      if value is not None:
        out.setdefault(x, {}).setdefault(y, []).append(value)
  return {x: {y: float(np.mean(v)) for y, v in row.items()}
          for x, row in out.items()}


def analyse_dataset(sweep: collect.Sweep, name: str) -> dict[str, Any]:
  """Every number of the report for data set `name`."""
  layout = Layout.of(sweep.baseline[name])
  weights = {setting: statistics.bootstrap_weights(len(ids))
             for setting, ids in layout.ids.items()}
  seen = set(sweep.train_languages)
  evaluated = sweep.evaluated(name)
  by_ratio = {}
  for (ratio, seed), evaluation in evaluated.items():
    by_ratio.setdefault(ratio, {})[seed] = evaluation
  models = [(None, {None: sweep.baseline[name]})] + sorted(by_ratio.items())
  rows, robustness, tables = [], [], {}
  for ratio, per_seed in models:
    evaluations = list(per_seed.values())
    model_tables = _tables(layout, evaluations,
                           f"{name} {formatting.ratio(ratio)}")
    seeds = () if ratio is None else tuple(per_seed)
    rows.append(_row(ratio, seeds, evaluations, model_tables, weights))
    robustness += _robustness(ratio, layout.tasks["cross"],
                              model_tables["cross/map"], weights["cross"],
                              seen)
    if ratio is not None:
      tables[ratio] = model_tables
  languages = list(layout.tasks["mono"])
  return {"dataset": name, "languages": languages,
          "seen_languages": [l for l in languages if l in seen],
          "unseen_languages": [l for l in languages if l not in seen],
          "num_questions": {s: len(ids) for s, ids in layout.ids.items()},
          "missing_runs": [list(run) for run in sweep.missing(name)],
          "rows": rows, "robustness": robustness,
          "tests": _tests(rows, tables, weights)}


def environments(sweep: collect.Sweep) -> dict[str, Any]:
  """The distinct environments the sweep's evaluations and training starts
  ran on, each with what ran there, and those with none recorded."""
  distinct, not_recorded = [], []
  for label, env in sweep.environments.items():
    if env is None:
      not_recorded.append(label)
      continue
    group = next((g for g in distinct if g["environment"] == env), None)
    if group is None:
      group = {"summary": environment.summary(env), "environment": env,
               "used_by": []}
      distinct.append(group)
    group["used_by"].append(label)
  return {"distinct": distinct, "not_recorded": not_recorded}


def analyse(sweep: collect.Sweep) -> dict[str, Any]:
  """The report's numbers for every data set that some run evaluated."""
  names = [n for n in sweep.baseline if sweep.evaluated(n)]
  if not names:
    raise ValueError(
        "No run of the sweep is evaluated yet: rerun the sweep to finish its "
        "evaluations.")
  ratios = sorted({ratio for ratio, _ in sweep.runs})
  return {
      "ratios": ratios,
      "seeds": {f"{r:g}": sorted(s for q, s in sweep.runs if q == r)
                for r in ratios},
      "train_languages": list(sweep.train_languages),
      "settings": sweep.settings,
      "statistics": {"confidence": statistics.CONFIDENCE,
                     "bootstrap_samples": statistics.BOOTSTRAP_SAMPLES,
                     "permutations": statistics.PERMUTATIONS,
                     "resampling_unit": "question id",
                     "seed": statistics.SEED},
      "not_evaluated_by_any_run": [n for n in sweep.baseline
                                   if n not in names],
      "environments": environments(sweep),
      "datasets": {name: analyse_dataset(sweep, name) for name in names}}
