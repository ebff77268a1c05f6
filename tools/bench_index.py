r"""Recall and speed of ScaNN index settings on real embeddings.

  python -m hybrid_jax.main --config=configs/evaluate.py --workdir=DIR \
      --config.eval.save_embeddings=True
  python tools/bench_index.py --embeddings=DIR/eval/xquad_r.embeddings.npz

First prints the mean cosine between candidates (|mean candidate|^2: how
tightly the embeddings crowd together). Then, for every setting (brute force, and tree + asymmetric hashing over a grid of
leaves searched and re-scored candidates) prints, as JSON lines, the mean
recall@10 against exact search and the build and search seconds, on the
monolingual pools (every language's queries against its own candidates) and
on the pooled multilingual corpus (every query against every candidate).
"""

import itertools
import json
import time

from absl import app
from absl import flags
import numpy as np

_EMBEDDINGS = flags.DEFINE_string("embeddings", None,
                                  "A <dataset>.embeddings.npz file.")
_LEAVES = flags.DEFINE_list("leaves_to_search", ["0.1", "0.25", "0.5"],
                            "Shares of the tree's leaves searched.")
_REORDER = flags.DEFINE_list("reorder", ["100", "250"],
                             "Candidates re-scored exactly.")
flags.mark_flags_as_required(["embeddings"])


def main(argv):
  del argv
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top
  from hybrid_jax.evaluation import exact_search  # pylint: disable=g-import-not-at-top
  from hybrid_jax.evaluation import scann_index  # pylint: disable=g-import-not-at-top

  with np.load(_EMBEDDINGS.value) as f:
    arrays = {k: f[k].astype(np.float32) for k in f.files}
  langs = sorted(k.split("/")[1] for k in arrays if k.startswith("queries/"))
  pools = {l: (arrays[f"queries/{l}"], arrays[f"candidates/{l}"])
           for l in langs}
  pools["all"] = (np.concatenate([arrays[f"queries/{l}"] for l in langs]),
                  np.concatenate([arrays[f"candidates/{l}"] for l in langs]))
  centre = pools["all"][1].mean(axis=0)
  print(json.dumps({"mean_candidate_cosine": round(float(centre @ centre), 4)}),
        flush=True)
  mesh = sharding.make_mesh()
  exact = {name: exact_search.search(q, c, np.zeros((len(q), 1), np.int64),
                                     10, mesh)[0]
           for name, (q, c) in pools.items()}
  grid = [config_lib.EvalConfig(index="brute_force")] + [
      config_lib.EvalConfig(index="tree_ah", leaves_to_search=float(l),
                            reorder=int(r))
      for l, r in itertools.product(_LEAVES.value, _REORDER.value)]
  for cfg in grid:
    row = {k: getattr(cfg, k) for k in ("index", "leaves_to_search",
                                        "reorder")}
    for scope, names in (("mono", langs), ("multi", ["all"])):
      recalls, build, search = [], 0.0, 0.0
      for name in names:
        queries, candidates = pools[name]
        start = time.perf_counter()
        searcher = scann_index.build(candidates, cfg, 10)
        build += time.perf_counter() - start
        start = time.perf_counter()
        found = scann_index.search(searcher, queries, 10)
        search += time.perf_counter() - start
        recalls += [len(set(a) & set(b)) / 10
                    for a, b in zip(found, exact[name])]
      row[scope] = {"recall@10": round(float(np.mean(recalls)), 4),
                    "build_s": round(build, 2), "search_s": round(search, 2)}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  app.run(main)
