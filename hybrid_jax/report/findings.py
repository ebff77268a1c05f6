"""The report's "Findings": sentences written from the numbers.

Nothing here is a conclusion fixed in advance: each sentence states which
ratio is best, by how much, whether the paired tests find the differences
significant, and where the hardest language pairs lie, as the analysed
numbers say.
"""

from typing import Any

from hybrid_jax.report import analysis
from hybrid_jax.report import formatting
from hybrid_jax.report import statistics

SIGNIFICANCE = 0.05
NAMES = {"mono/map": "monolingual mAP", "cross/map": "cross-lingual mAP",
         "multi/map": "multilingual (pooled) mAP",
         "multi/rank_distance": "rank distance (lower is better)"}


def _value(data: dict[str, Any], ratio: float | None, k: str) -> float:
  row = next(r for r in data["rows"] if r["ratio"] == ratio)
  return row["metrics"][k]["value"]


def _tests(data: dict[str, Any], k: str, family: str) -> list[dict[str, Any]]:
  return [t for t in data["tests"]
          if t["metric"] == k and t["family"] == family]


def _verdict(tests: list[dict[str, Any]]) -> str:
  """Which of the best ratio's comparisons are significant (Holm)."""
  significant = [formatting.ratio(t["other"]) for t in tests
                 if t["p_holm"] < SIGNIFICANCE]
  if not significant:
    return ("no difference from another ratio is significant "
            f"(Holm-adjusted p ≥ {SIGNIFICANCE})")
  if len(significant) == len(tests):
    return ("it is significantly better than every other ratio "
            f"(Holm-adjusted p < {SIGNIFICANCE})")
  return (f"it is significantly better than {', '.join(significant)} only "
          f"(Holm-adjusted p < {SIGNIFICANCE})")


def best_sentence(data: dict[str, Any], k: str) -> str | None:
  """Which ratio is best for metric `k`, its margins and their
  significance; None if no ratio has a value."""
  best = analysis.best_ratio(data["rows"], k)
  if best is None:
    return None
  value = _value(data, best, k)
  gain = value - _value(data, None, k)
  text = (f"**{NAMES[k]}**: best at {formatting.ratio(best)} "
          f"({formatting.number(value, k)}, "
          f"{formatting.number(gain, k, '+')} vs zero-shot)")
  tests = _tests(data, k, "best")
  if not tests:
    return text + "; the only trained ratio."
  runner_up = min(tests, key=lambda t: abs(t["difference"]))
  other = formatting.ratio(runner_up["other"])
  # The advantage over the runner-up, positive when better (and its CI).
  sign = -1 if k in analysis.LOWER_IS_BETTER else 1
  low, high = sorted(sign * x for x in runner_up["ci"])
  if runner_up["difference"] == 0:
    text += f", tied with {other}"
  else:
    text += (f"; ahead of the next best, {other}, by "
             f"{formatting.number(abs(runner_up['difference']), k)} "
             f"({statistics.CONFIDENCE:.0%} CI {formatting.number(low, k)} "
             f"to {formatting.number(high, k)})")
  sds = [sd for r in data["rows"] if r["ratio"] in (best, runner_up["other"])
         for sd in [r["metrics"][k]["seed_sd"]] if sd is not None]
  if sds and abs(runner_up["difference"]) < max(sds):
    text += (", less than the spread over seeds "
             f"(sd {formatting.number(max(sds), k)})")
  return f"{text}; {_verdict(tests)}."


def paper_sentence(data: dict[str, Any], k: str) -> str | None:
  """The paper's ratio (0.5) against the two pure strategies."""
  tests = _tests(data, k, "paper")
  if not tests:
    return None
  parts = []
  for t in tests:
    verdict = ("significant" if t["p_holm"] < SIGNIFICANCE
               else "not significant")
    parts.append(f"{formatting.number(t['difference'], k, '+')} against "
                 f"{formatting.ratio(t['other'])} (Holm-adjusted p = "
                 f"{t['p_holm']:.3g}, {verdict})")
  return (f"{NAMES[k]} at the paper's {formatting.ratio(analysis.PAPER_RATIO)}"
          f": {'; '.join(parts)}.")


def robustness_sentences(data: dict[str, Any]) -> list[str]:
  """The hardest pair and the seen / unseen gap at the best cross-lingual
  ratio, and the ratio with the most even pairs."""
  best = analysis.best_ratio(data["rows"], "cross/map")
  groups = {r["group"]: r for r in data["robustness"] if r["ratio"] == best}
  if best is None or "all pairs" not in groups:
    return []
  every = groups["all pairs"]
  out = [f"At {formatting.ratio(best)} the hardest language pair is "
         f"{every['worst_pair']} (mAP {every['worst_map']:.4f}) and the "
         f"easiest {every['best_pair']} ({every['best_map']:.4f}): a gap of "
         f"{every['gap']:.4f}; standard deviation over the "
         f"{every['num_pairs']} pairs {every['std']:.4f}."]
  trained = [r for r in data["robustness"]
             if r["group"] == "all pairs" and r["ratio"] is not None]
  if len(trained) > 1:
    steadiest = min(trained, key=lambda r: r["gap"])
    out.append(f"The smallest best–worst gap is at "
               f"{formatting.ratio(steadiest['ratio'])} "
               f"({steadiest['gap']:.4f}).")
  unseen = {g: r["mean"] for g, r in groups.items()
            if g in ("one unseen", "both unseen")}
  if unseen and "both seen" in groups:
    detail = ", ".join(f"{g} {v:.4f}" for g, v in unseen.items())
    out.append(f"Pairs of languages seen in training average "
               f"{groups['both seen']['mean']:.4f} cross-lingual mAP at "
               f"{formatting.ratio(best)}; pairs with unseen languages "
               f"({', '.join(data['unseen_languages'])}): {detail}.")
  return out


def findings(data: dict[str, Any]) -> list[str]:
  """The findings of one data set, one sentence per list item."""
  out = [best_sentence(data, k) for k in analysis.TESTED]
  out += [paper_sentence(data, k) for k in analysis.TESTED]
  out = [s for s in out if s] + robustness_sentences(data)
  seeds = {len(r["seeds"]) for r in data["rows"] if r["ratio"] is not None}
  if seeds == {1}:
    out.append("One seed per ratio: the intervals and tests cover the "
               "sampling of questions, not the variance of training.")
  return out
