r"""ScaNN against exact search on a large synthetic corpus: recall and speed.

  python tools/bench_retrieval.py --num_candidates=1000000 --dim=384

Draws clustered, L2-normalised vectors (a mixture of `--num_clusters`
random directions with Gaussian spread, like sentence embeddings that crowd
into topics), and queries from the same mixture. The exact top 10 comes from
batched exact search (float32 matmul + top-k, in numpy and in JAX; the
faster is the baseline). Then, for every ScaNN setting (tree + asymmetric
hashing + exact re-scoring, built once per tree size by
`hybrid_jax.evaluation.scann_index`, the evaluation's own code; leaves
searched and candidates re-scored set per search), prints recall@10
against the exact top 10, the queries per second and the speed-up over the
exact baseline, as a table.
Searches are timed in alternating rounds; the figures are medians.
"""

import functools
import itertools
import statistics
import time

from absl import app
from absl import flags
import numpy as np

_NUM_CANDIDATES = flags.DEFINE_integer("num_candidates", 1_000_000,
                                       "Corpus size.")
_DIM = flags.DEFINE_integer("dim", 384, "Vector size.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 2000, "Queries.")
_NUM_CLUSTERS = flags.DEFINE_integer("num_clusters", 1000,
                                     "Mixture components of the data.")
_SPREAD = flags.DEFINE_float(
    "spread", 0.08, "Per-dimension standard deviation around a cluster "
    "direction (before normalising).")
_NUM_LEAVES = flags.DEFINE_list("num_leaves", ["1000", "2000"],
                                "Tree sizes to try.")
_LEAVES_TO_SEARCH = flags.DEFINE_list(
    "leaves_to_search", ["0.01", "0.02", "0.05"],
    "Shares of the leaves searched per query.")
_REORDER = flags.DEFINE_list("reorder", ["100", "250"],
                             "Candidates re-scored exactly.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed searches per method.")
_QUERY_CHUNK = flags.DEFINE_integer("query_chunk", 256,
                                    "Queries per exact-search batch.")
K = 10


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray,
              spread: float) -> np.ndarray:
  """`n` unit vectors: a random centre each, plus Gaussian noise."""
  x = centres[rng.integers(len(centres), size=n)]
  x += rng.normal(scale=spread, size=x.shape).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_exact(queries: np.ndarray, candidates: np.ndarray,
                chunk: int) -> np.ndarray:
  """The exact top K of every query (numpy float32 matmul, argpartition)."""
  out = []
  for start in range(0, len(queries), chunk):
    scores = queries[start:start + chunk] @ candidates.T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    out.append(np.take_along_axis(top, order, axis=1))
  return np.concatenate(out)


def jax_exact_fn(candidates: np.ndarray, chunk: int):
  """Exact top K in JAX: jitted matmul + lax.top_k over query chunks."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  pool = jax.device_put(candidates)
  top_k = jax.jit(lambda q, c: jax.lax.top_k(
      jnp.matmul(q, c.T, precision=jax.lax.Precision.HIGHEST), K)[1])

  def search(queries: np.ndarray) -> np.ndarray:
    padded = np.pad(queries, ((0, -len(queries) % chunk), (0, 0)))
    out = [top_k(padded[s:s + chunk], pool)
           for s in range(0, len(padded), chunk)]
    return np.concatenate([np.asarray(o) for o in out])[:len(queries)]

  return search


def scann_search(searcher, queries: np.ndarray, leaves: int,
                 reorder: int) -> np.ndarray:
  """The top K from a built searcher, searching `leaves` leaves and
  re-scoring `reorder` candidates (ScaNN's query-time settings)."""
  ids, _ = searcher.search_batched(queries, final_num_neighbors=K,
                                   leaves_to_search=leaves,
                                   pre_reorder_num_neighbors=reorder)
  return ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
  """Mean share of the true top K found."""
  return float(np.mean([len(set(f) & set(t)) / K
                        for f, t in zip(found, truth)]))


def main(argv):
  del argv
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax.evaluation import scann_index  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  centres = rng.normal(size=(_NUM_CLUSTERS.value, _DIM.value)).astype(
      np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  candidates = clustered(rng, _NUM_CANDIDATES.value, centres, _SPREAD.value)
  queries = clustered(rng, _NUM_QUERIES.value, centres, _SPREAD.value)
  chunk = _QUERY_CHUNK.value

  methods = {"exact numpy": functools.partial(numpy_exact,
                                              candidates=candidates,
                                              chunk=chunk),
             "exact jax": jax_exact_fn(candidates, chunk)}
  build_seconds = {}
  max_reorder = max(int(r) for r in _REORDER.value)
  for leaves in _NUM_LEAVES.value:
    start = time.perf_counter()
    searcher = scann_index.build(candidates, config_lib.EvalConfig(
        index="tree_ah", num_leaves=int(leaves), reorder=max_reorder), K)
    build_seconds[leaves] = time.perf_counter() - start
    for share, reorder in itertools.product(_LEAVES_TO_SEARCH.value,
                                            _REORDER.value):
      name = f"scann {leaves} leaves, {share} searched, reorder {reorder}"
      methods[name] = functools.partial(
          scann_search, searcher,
          leaves=max(1, round(float(share) * int(leaves))),
          reorder=int(reorder))

  found = {name: fn(queries) for name, fn in methods.items()}  # Warm-up.
  truth = found["exact numpy"]
  seconds = {name: [] for name in methods}
  for _ in range(_ROUNDS.value):
    for name, fn in methods.items():
      start = time.perf_counter()
      fn(queries)
      seconds[name].append(time.perf_counter() - start)
  qps = {name: len(queries) / statistics.median(s)
         for name, s in seconds.items()}
  baseline = max(qps["exact numpy"], qps["exact jax"])

  print(f"{_NUM_CANDIDATES.value:,} x {_DIM.value} candidates in "
        f"{_NUM_CLUSTERS.value} clusters (spread {_SPREAD.value}), "
        f"{len(queries):,} queries, recall@{K} against exact search")
  print("build seconds: " + ", ".join(
      f"{leaves} leaves {s:.1f}" for leaves, s in build_seconds.items()))
  print(f"{'method':55s} {'recall@10':>9s} {'QPS':>10s} {'x exact':>8s}")
  for name in methods:
    print(f"{name:55s} {recall(found[name], truth):9.4f} {qps[name]:10,.0f} "
          f"{qps[name] / baseline:8.1f}")


if __name__ == "__main__":
  app.run(main)
