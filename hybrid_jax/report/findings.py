"""The report's "Findings": sentences written from the numbers.

Nothing here is a conclusion fixed in advance: each sentence states which
ratio is best, by how much, whether the paired tests find the differences
significant, and where the hardest language pairs lie, as the analysed
numbers say.
"""

from typing import Any

from hybrid_jax.report import analysis

SIGNIFICANCE = 0.05
NAMES = {"mono/map": "monolingual mAP", "cross/map": "cross-lingual mAP",
         "multi/map": "multilingual (pooled) mAP",
         "multi/rank_distance": "rank distance"}


def number(value: float, sign: str = "") -> str:
  """4 decimals, or 1 for large values like rank distances; sign="+"
  always shows the sign."""
  decimals = 1 if abs(value) >= 100 else 4
  return f"{value:{sign}.{decimals}f}"


def _ratio(r: float) -> str:
  return f"α = {r:g}"


def _row(data: dict[str, Any], ratio: float | None) -> dict[str, Any]:
  return next(r for r in data["rows"] if r["ratio"] == ratio)


def _tests(data: dict[str, Any], k: str, family: str) -> list[dict[str, Any]]:
  return [t for t in data["tests"] if t["metric"] == k and t["family"] == family]


def _verdict(tests: list[dict[str, Any]]) -> str:
  """Which comparisons are significant after the Holm adjustment."""
  if not tests:
    return ""
  significant = [_ratio(t["other"]) for t in tests
                 if t["p_holm"] < SIGNIFICANCE]
  if not significant:
    return (f"none of its differences from the other ratios is significant "
            f"(Holm-adjusted p ≥ {SIGNIFICANCE})")
  if len(significant) == len(tests):
    return (f"it is significantly better than every other ratio "
            f"(Holm-adjusted p < {SIGNIFICANCE})")
  return (f"it is significantly better than {', '.join(significant)} only "
          f"(Holm-adjusted p < {SIGNIFICANCE})")


def best_sentence(data: dict[str, Any], k: str) -> str:
  """Which ratio is best for metric `k`, its margins and their significance."""
  best = analysis.best_ratio(data["rows"], k)
  value = _row(data, best)["metrics"][k]["value"]
  baseline = _row(data, None)["metrics"][k]["value"]
  others = [r for r in data["rows"] if r["ratio"] not in (None, best)]
  text = (f"**{NAMES[k]}**: best at {_ratio(best)} ({number(value)}; "
          f"zero-shot {number(baseline)}, change {number(value - baseline, '+')})")
  if others:
    runner_up = min(others, key=lambda r: abs(
        r["metrics"][k]["value"] - value))
    text += (f"; the next best is {_ratio(runner_up['ratio'])} "
             f"({number(runner_up['metrics'][k]['value'])}); ")
    text += _verdict(_tests(data, k, "best"))
  return text + "."


def paper_sentence(data: dict[str, Any], k: str) -> str | None:
  """The paper's ratio (0.5) against the two pure strategies."""
  tests = _tests(data, k, "paper")
  if not tests:
    return None
  parts = [f"{number(t['difference'], '+')} vs {_ratio(t['other'])} "
           f"(p = {t['p']:.3g})" for t in tests]
  return f"{NAMES[k]} at {_ratio(analysis.PAPER_RATIO)}: {'; '.join(parts)}."


def robustness_sentences(data: dict[str, Any]) -> list[str]:
  """The hardest pair and the seen / unseen gap at the best cross-lingual
  ratio, and the ratio with the most even pairs."""
  best = analysis.best_ratio(data["rows"], "cross/map")
  groups = {r["group"]: r for r in data["robustness"] if r["ratio"] == best}
  every = groups["all pairs"]
  out = [f"At {_ratio(best)} the hardest language pair is "
         f"{every['worst_pair']} (mAP {every['worst_map']:.4f}) and the "
         f"easiest {every['best_pair']} ({every['best_map']:.4f}): a gap of "
         f"{every['gap']:.4f}; standard deviation over the "
         f"{every['num_pairs']} pairs {every['std']:.4f}."]
  steadiest = min((r for r in data["robustness"]
                   if r["group"] == "all pairs" and r["ratio"] is not None),
                  key=lambda r: r["gap"])
  out.append(f"The smallest best–worst gap is at "
             f"{_ratio(steadiest['ratio'])} ({steadiest['gap']:.4f}).")
  if data["unseen_languages"] and "both seen" in groups:
    seen = groups["both seen"]["mean"]
    unseen = {g: r["mean"] for g, r in groups.items()
              if g in ("one unseen", "both unseen")}
    detail = ", ".join(f"{g} {v:.4f}" for g, v in unseen.items())
    out.append(f"Pairs of languages seen in training average {seen:.4f} "
               f"cross-lingual mAP at {_ratio(best)}; pairs with unseen "
               f"languages ({', '.join(data['unseen_languages'])}): {detail}.")
  return out


def findings(data: dict[str, Any]) -> list[str]:
  """The findings of one data set, one sentence per list item."""
  out = [best_sentence(data, k) for k in analysis.TESTED]
  out += [s for s in (paper_sentence(data, k) for k in analysis.TESTED) if s]
  return out + robustness_sentences(data)
