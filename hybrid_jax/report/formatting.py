"""How the report writes ratios and metric values."""

# Metrics whose values are ranks (hundreds or thousands), not fractions.
RANK_METRICS = ("multi/rank_distance",)


def ratio(r: float | None) -> str:
  """`α = 0.25`, or `zero-shot` for the baseline (no ratio)."""
  return "zero-shot" if r is None else f"α = {r:g}"


def number(value: float, metric: str = "", sign: str = "") -> str:
  """A value of `metric`: 1 decimal for ranks, else 4; sign="+" always
  shows the sign."""
  decimals = 1 if metric in RANK_METRICS else 4
  return f"{value:{sign}.{decimals}f}"
