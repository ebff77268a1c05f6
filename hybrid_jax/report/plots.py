"""The report's figures (PNG), drawn from the analysed numbers.

Per data set `<set>`:
  <set>.metrics_vs_ratio.png    mono / cross / multi metrics against the
                                ratio, with confidence bands; the zero-shot
                                baseline dotted;
  <set>.rank_distance_vs_ratio.png
  <set>.cross_map.png           the query x candidate language mAP of the
                                baseline and every ratio;
  <set>.cross_map_difference.png  each ratio's matrix minus that of the
                                reference ratio (1 if swept, else the
                                largest).
"""

import math
from typing import Any

from etils import epath
from matplotlib import figure
import numpy as np

from hybrid_jax import files
from hybrid_jax.report import formatting

SETTINGS = (("mono", "monolingual (X→X)"), ("cross", "cross-lingual (X→Y)"),
            ("multi", "multilingual (X→pool)"))
METRICS = ("map", "r@1", "r@10", "ndcg@10")
COLORS = dict(zip(METRICS, ("C0", "C1", "C2", "C3")))


def _save(fig: figure.Figure, path: epath.Path) -> None:
  with files.atomic_write(path, "wb") as f:
    # No metadata: the same numbers give the same bytes.
    fig.savefig(f, format="png", dpi=110, bbox_inches="tight",
                metadata={"Software": None})


def _curve(ax, data: dict[str, Any], k: str, label: str, color: str) -> None:
  """One metric against the ratio with its band, and the baseline."""
  rows = [r for r in data["rows"] if r["ratio"] is not None]
  ratios = [r["ratio"] for r in rows]
  values = [r["metrics"][k]["value"] for r in rows]
  low, high = zip(*(r["metrics"][k]["ci"] for r in rows))
  ax.plot(ratios, values, "o-", color=color, label=label)
  ax.fill_between(ratios, low, high, color=color, alpha=0.2, linewidth=0)
  baseline = data["rows"][0]["metrics"][k]["value"]
  ax.axhline(baseline, color=color, linestyle=":", linewidth=1)


def metrics_vs_ratio(data: dict[str, Any], confidence: float,
                     path: epath.Path) -> None:
  """A panel per setting: each metric against the ratio."""
  fig = figure.Figure(figsize=(13, 4), layout="constrained")
  axes = fig.subplots(1, len(SETTINGS), sharex=True)
  for ax, (setting, title) in zip(axes, SETTINGS):
    for metric in METRICS:
      k = f"{setting}/{metric}"
      if k in data["rows"][0]["metrics"]:
        _curve(ax, data, k, metric, COLORS[metric])
    ax.set_title(title)
    ax.set_xlabel("α (share of monolingual batches)")
    ax.grid(alpha=0.3)
  axes[0].legend(loc="best", fontsize="small")
  fig.suptitle(f"{data['dataset']}: metrics vs α ({confidence:.0%} bootstrap "
               "bands over questions; dotted: zero-shot)")
  _save(fig, path)


def rank_distance_vs_ratio(data: dict[str, Any], confidence: float,
                           path: epath.Path) -> None:
  """Rank distance against the ratio."""
  fig = figure.Figure(figsize=(5.5, 4), layout="constrained")
  ax = fig.subplots()
  _curve(ax, data, "multi/rank_distance", "rank distance", "C4")
  ax.set_xlabel("α (share of monolingual batches)")
  ax.set_ylabel("mean rank distance (lower is better)")
  ax.set_title(f"{data['dataset']}: rank distance vs α\n({confidence:.0%} "
               "band; dotted: zero-shot)")
  ax.grid(alpha=0.3)
  _save(fig, path)


def _grid(matrix: dict[str, dict[str, float]],
          languages: list[str]) -> np.ndarray:
  return np.array([[matrix.get(x, {}).get(y, np.nan) for y in languages]
                   for x in languages])


def _heatmaps(panels: list[tuple[str, np.ndarray]], languages: list[str],
              title: str, colormap: str, limits: tuple[float, float],
              path: epath.Path) -> None:
  columns = min(3, math.ceil(math.sqrt(len(panels))))
  rows = -(-len(panels) // columns)
  size = 0.33 * len(languages) + 1.5
  fig = figure.Figure(figsize=(columns * size + 1.2, rows * size + 0.8),
                      layout="constrained")
  axes = fig.subplots(rows, columns, squeeze=False).ravel()
  for i, (ax, (name, grid)) in enumerate(zip(axes, panels)):
    image = ax.imshow(grid, cmap=colormap, vmin=limits[0], vmax=limits[1])
    ax.set_title(name, fontsize="medium")
    ax.set_xticks(range(len(languages)), languages, fontsize="x-small")
    ax.set_yticks(range(len(languages)), languages, fontsize="x-small")
    if i // columns == rows - 1:
      ax.set_xlabel("candidate language", fontsize="small")
    if i % columns == 0:
      ax.set_ylabel("query language", fontsize="small")
  for ax in axes[len(panels):]:
    ax.set_axis_off()
  fig.colorbar(image, ax=axes.tolist(), shrink=0.8)
  fig.suptitle(title)
  _save(fig, path)


def reference_ratio(ratios: list[float]) -> float:
  """The ratio others are compared with in the difference heatmap."""
  return 1.0 if 1.0 in ratios else max(ratios)


def cross_maps(data: dict[str, Any], path: epath.Path) -> None:
  """The mAP matrix of the baseline and of every ratio."""
  languages = data["languages"]
  panels = [(formatting.ratio(r["ratio"]), _grid(r["cross_matrix"], languages))
            for r in data["rows"]]
  every = np.concatenate([g.ravel() for _, g in panels])
  _heatmaps(panels, languages, f"{data['dataset']}: mAP by query x candidate "
            "language (diagonal: monolingual)", "viridis",
            (float(np.nanmin(every)), float(np.nanmax(every))), path)


def cross_map_differences(data: dict[str, Any], path: epath.Path) -> None:
  """Each ratio's mAP matrix minus the reference ratio's."""
  languages = data["languages"]
  trained = {r["ratio"]: _grid(r["cross_matrix"], languages)
             for r in data["rows"] if r["ratio"] is not None}
  reference = reference_ratio(list(trained))
  panels = [(f"{formatting.ratio(r)} − {formatting.ratio(reference)}",
             grid - trained[reference])
            for r, grid in trained.items() if r != reference]
  extent = max(float(np.nanmax(np.abs(np.stack([g for _, g in panels])))),
               1e-6)
  _heatmaps(panels, languages, f"{data['dataset']}: mAP difference against "
            f"{formatting.ratio(reference)}", "RdBu", (-extent, extent), path)


def draw(data: dict[str, Any], confidence: float,
         directory: epath.Path) -> list[epath.Path]:
  """Draws every figure of one data set; returns their paths."""
  name = data["dataset"]
  paths = {"metrics": directory / f"{name}.metrics_vs_ratio.png",
           "rank": directory / f"{name}.rank_distance_vs_ratio.png",
           "maps": directory / f"{name}.cross_map.png",
           "differences": directory / f"{name}.cross_map_difference.png"}
  metrics_vs_ratio(data, confidence, paths["metrics"])
  rank_distance_vs_ratio(data, confidence, paths["rank"])
  cross_maps(data, paths["maps"])
  if len(data["rows"]) > 2:  # The baseline and at least two ratios.
    cross_map_differences(data, paths["differences"])
  else:
    del paths["differences"]
  return list(paths.values())
