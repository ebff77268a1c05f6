"""Evaluation results: per-query scores -> the summary JSON, CSV and arrays.

For a data set NAME, `<directory>/NAME.json` holds the settings, the macro
averages of the three settings, the cross-lingual matrix, rank distance,
the index's recall against exact search, the time of each stage and the
environment (`hybrid_jax.environment`);
`NAME.cross_map.csv` the query-language x candidate-language mAP matrix
(the diagonal is the monolingual setting); `NAME.queries.npz` every
per-query value (for bootstrap confidence intervals), keyed
`<setting>/<languages>/<metric>` with the question ids under `.../qid`;
with `eval.save_embeddings`, `NAME.embeddings.npz` every embedding
(`queries/<lang>`, `candidates/<lang>`, rows in file order, float16).
"""

import csv
import io
import json
import math
from typing import Any

from etils import epath
import numpy as np

from hybrid_jax import config as config_lib
from hybrid_jax import files
from hybrid_jax.evaluation import protocol

MONO_CROSS_METRICS = ("map", "r@1", "mrr@10", "ndcg@10", "p@10", "r@10",
                      "f1@10")
MULTI_METRICS = ("map", "r@10", "ndcg@10", "mrr@10", "same_language@10")


def _mean(values: np.ndarray) -> float | None:
  """Mean over the queries that have a value (rank distance is NaN for
  queries with one relevant candidate); None if none do."""
  finite = values[~np.isnan(values)]
  return float(finite.mean()) if finite.size else None


def _macro(per_key: dict[Any, dict[str, Any]],
           metrics: tuple[str, ...]) -> dict[str, float | None]:
  """Unweighted mean over keys (languages or pairs) of each metric."""
  out = {}
  for m in metrics:
    found = [v[m] for v in per_key.values() if v[m] is not None]
    out[m] = float(np.mean(found)) if found else None
  return out


def _task_means(task: protocol.TaskScores,
                metrics: tuple[str, ...]) -> dict[str, Any]:
  return {**{m: _mean(task.values[m]) for m in metrics},
          "num_queries": len(task.qids)}


def summarize(scores: protocol.ProtocolScores) -> dict[str, Any]:
  """The "mono", "cross", "multi", "rank_distance" and "index" sections."""
  mono = {l: _task_means(t, MONO_CROSS_METRICS)
          for l, t in scores.mono.items()}
  pairs = {p: _task_means(t, MONO_CROSS_METRICS)
           for p, t in scores.cross.items()}
  matrix, by_query_lang = {}, {}
  for (x, y), means in pairs.items():
    matrix.setdefault(x, {})[y] = means
  for x, row in matrix.items():
    by_query_lang[x] = _macro(row, MONO_CROSS_METRICS)
  multi = {l: _task_means(t, MULTI_METRICS + ("rank_distance",))
           for l, t in scores.multi.items()}
  every_task = [*scores.mono.values(), *scores.cross.values(),
                *scores.multi.values()]
  recall = np.concatenate([t.values["recall_vs_exact"] for t in every_task])
  return {
      "mono": {**_macro(mono, MONO_CROSS_METRICS), "per_language": mono},
      "cross": {**_macro(pairs, MONO_CROSS_METRICS), "num_pairs": len(pairs),
                "per_language": by_query_lang, "matrix": matrix},
      "multi": {**_macro(multi, MULTI_METRICS),
                "per_language": {l: {m: v for m, v in means.items()
                                     if m != "rank_distance"}
                                 for l, means in multi.items()}},
      "rank_distance": {
          "mean": _macro(multi, ("rank_distance",))["rank_distance"],
          "per_language": {l: m["rank_distance"] for l, m in multi.items()},
          # Queries with at least two relevant candidates, which have one.
          "num_queries": {
              l: int(np.isfinite(t.values["rank_distance"]).sum())
              for l, t in scores.multi.items()},
      },
      "index": {"recall_vs_exact": float(recall.mean()) if recall.size
                else None,
                "metrics_from_exact_ranking": list(protocol.EXACT_METRICS),
                "metrics_from_index": list(protocol.INDEX_METRICS),
                "recall_vs_exact_per_setting": {
                    name: _mean(np.concatenate(
                        [t.values["recall_vs_exact"] for t in tasks.values()]
                        or [np.zeros(0)]))
                    for name, tasks in (("mono", scores.mono),
                                        ("cross", scores.cross),
                                        ("multi", scores.multi))}},
  }


def per_query_arrays(scores: protocol.ProtocolScores) -> dict[str, np.ndarray]:
  """Every per-query value, keyed `<setting>/<languages>/<metric>`."""
  out = {}
  for setting, tasks in (("mono", scores.mono), ("cross", scores.cross),
                         ("multi", scores.multi)):
    for key, task in tasks.items():
      name = f"{setting}/{'-'.join(key) if isinstance(key, tuple) else key}"
      out[f"{name}/qid"] = np.asarray(task.qids, dtype=str)
      for metric, values in task.values.items():
        out[f"{name}/{metric}"] = values
  return out


def cross_map_csv(summary: dict[str, Any]) -> str:
  """The mAP matrix: one row per query language, one column per candidate
  language; the diagonal is monolingual, empty cells have no queries."""
  langs = sorted(summary["mono"]["per_language"])
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["query_lang\\candidate_lang", *langs])
  for x in langs:
    row = [x]
    for y in langs:
      cell = (summary["mono"]["per_language"][x] if x == y
              else summary["cross"]["matrix"].get(x, {}).get(y))
      row.append("" if cell is None or cell["map"] is None
                 else f"{cell['map']:.4f}")
    writer.writerow(row)
  return out.getvalue()


def json_safe(value):
  """`value` with NaN as None and numpy scalars as Python numbers."""
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return None if math.isnan(value) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def paths(directory: epath.Path, name: str) -> dict[str, epath.Path]:
  """The files of data set `name`'s results in `directory`."""
  return {"json": directory / f"{name}.json",
          "csv": directory / f"{name}.cross_map.csv",
          "queries": directory / f"{name}.queries.npz",
          "embeddings": directory / f"{name}.embeddings.npz"}


def read_existing(directory: epath.Path, name: str,
                  settings: dict[str, Any]) -> dict[str, Any] | None:
  """Finished results of the same settings, or None if there are none.

  Raises:
    ValueError: the directory holds results of other settings (they are
      kept) or an unreadable results file.
  """
  file = paths(directory, name)["json"]
  if not file.exists():
    return None
  try:
    found = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(
        f"{file} is not valid JSON ({e}): a damaged result. Move it away to "
        "evaluate again.") from e
  wanted = json_safe(settings)
  if found.get("settings") != wanted:
    differ = config_lib.differing_keys(wanted, found.get("settings", {}))
    raise ValueError(
        f"{file} holds results of other settings ({differ} differ). They are "
        "kept: evaluate into another --workdir, or move the file away.")
  return found


def write(directory: epath.Path, name: str, result: dict[str, Any],
          scores: protocol.ProtocolScores,
          embeddings: protocol.Embeddings | None = None) -> None:
  """Writes the JSON, CSV, per-query arrays (and embeddings), each
  atomically; the JSON last, so that it always comes with the others."""
  directory.mkdir(parents=True, exist_ok=True)
  out = paths(directory, name)
  if embeddings is not None:
    with files.atomic_write(out["embeddings"], "wb") as f:
      np.savez(f, **{f"{kind}/{lang}": rows.astype(np.float16)
                     for kind, by_lang in (("queries", embeddings.queries),
                                           ("candidates",
                                            embeddings.candidates))
                     for lang, rows in by_lang.items()})
  with files.atomic_write(out["queries"], "wb") as f:
    np.savez_compressed(f, **per_query_arrays(scores))
  with files.atomic_write(out["csv"]) as f:
    f.write(cross_map_csv(result))
  with files.atomic_write(out["json"]) as f:
    json.dump(json_safe(result), f, indent=1)
