"""ScaNN indexes over a candidate pool (dot product on L2-normalised vectors).

Two kinds: "brute_force" (exact float32 scores) and "tree_ah": the pool is
partitioned by k-means (k-means++ seeding, which makes builds
deterministic) into `num_leaves` leaves, a query searches the
nearest share of them with 4-bit asymmetric hashing (2 dimensions per
block), and the best `reorder` are re-scored exactly. Results are ordered by
score, ties by candidate index, like the exact search.
"""

import math

import numpy as np
import scann

from hybrid_jax import config as config_lib


# Asymmetric hashing trains 16 centres per block.
MIN_AH_POOL = 16


def build(candidates: np.ndarray, cfg: config_lib.EvalConfig, k: int):
  """A ScaNN searcher over `candidates` [num_candidates, dim] for the top k."""
  if not len(candidates):
    raise ValueError("Cannot index an empty candidate pool.")
  if cfg.index == "tree_ah" and len(candidates) < MIN_AH_POOL:
    raise ValueError(
        f"eval.index='tree_ah' needs pools of at least {MIN_AH_POOL} "
        f"candidates to train its hashing; this pool has {len(candidates)}: "
        "use eval.index='brute_force'.")
  k = min(k, len(candidates))
  builder = scann.scann_ops_pybind.builder(
      np.ascontiguousarray(candidates, np.float32), k, "dot_product")
  if cfg.index == "brute_force":
    return builder.score_brute_force().build()
  leaves = min(cfg.num_leaves or round(math.sqrt(len(candidates))),
               len(candidates))
  return (builder.tree(num_leaves=leaves,
                       num_leaves_to_search=max(
                           1, math.ceil(cfg.leaves_to_search * leaves)),
                       training_sample_size=len(candidates),
                       # k-means++ seeding: ScaNN's random initialisation
                       # differs from build to build.
                       random_init=False)
          .score_ah(2, anisotropic_quantization_threshold=0.2)
          .reorder(max(cfg.reorder, k)).build())


def search(searcher, queries: np.ndarray, k: int) -> np.ndarray:
  """[num_queries, k] candidate indices, best first (-1 where none found).

  `k` must not exceed the pool size.
  """
  ids, scores = searcher.search_batched(
      np.ascontiguousarray(queries, np.float32), final_num_neighbors=k)
  # Slots the searched leaves could not fill come back as NaN scores.
  ids = np.where(np.isnan(scores), -1, ids.astype(np.int64))
  scores = np.where(np.isnan(scores), -np.inf, scores)
  order = np.lexsort((ids, -scores), axis=1)  # Score, then index.
  return np.take_along_axis(ids, order, axis=1)
