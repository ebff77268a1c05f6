"""Retrieval metrics of a query from the ranks of its relevant candidates.

Every function takes `ranks`, an int array [queries, max relevant]: row q
holds the 1-based ranks of query q's relevant candidates, padded with 0 (a
query may have fewer relevant candidates than another). A relevant
candidate that a top-k search did not return has rank `UNRANKED`. Metrics
at a cutoff k accept such ranks; mAP and rank distance need every rank.
Each function returns one value per query (float64).
"""

import numpy as np

# The rank of a relevant candidate a top-k search did not return.
UNRANKED = np.iinfo(np.int32).max


def num_relevant(ranks: np.ndarray) -> np.ndarray:
  """R: the number of relevant candidates of each query."""
  return (ranks > 0).sum(axis=1)


def _check_full(ranks: np.ndarray, metric: str) -> None:
  if (ranks == UNRANKED).any():
    raise ValueError(f"{metric} needs the rank of every relevant candidate, "
                     "but some were not retrieved: rank the full pool.")
  if (num_relevant(ranks) == 0).any():
    raise ValueError(f"{metric} of a query without relevant candidates.")


def hits_at(ranks: np.ndarray, k: int) -> np.ndarray:
  """How many relevant candidates rank in the top k."""
  return ((ranks > 0) & (ranks <= k)).sum(axis=1)


def average_precision(ranks: np.ndarray) -> np.ndarray:
  """AP = (1/R) sum over the relevant of the precision at their rank."""
  _check_full(ranks, "Average precision")
  ordered = np.sort(np.where(ranks > 0, ranks, np.inf), axis=1)
  position = np.arange(1, ranks.shape[1] + 1)
  precisions = np.where(np.isfinite(ordered), position / ordered, 0.0)
  return precisions.sum(axis=1) / num_relevant(ranks)


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
  """Share of the relevant candidates in the top k (R@1 with one relevant)."""
  return hits_at(ranks, k) / num_relevant(ranks)


def precision_at(ranks: np.ndarray, k: int) -> np.ndarray:
  """Share of the top k that is relevant."""
  return hits_at(ranks, k) / k


def f1_at(ranks: np.ndarray, k: int) -> np.ndarray:
  """Harmonic mean of precision and recall at k (0 when both are 0)."""
  p, r = precision_at(ranks, k), recall_at(ranks, k)
  total = p + r
  return np.divide(2 * p * r, total, out=np.zeros_like(total),
                   where=total > 0)


def reciprocal_rank_at(ranks: np.ndarray, k: int) -> np.ndarray:
  """1 / rank of the first relevant candidate if it is in the top k, else 0."""
  first = np.where(ranks > 0, ranks, UNRANKED).min(axis=1)
  return np.where(first <= k, 1.0 / first, 0.0)


def _discounts(n: int) -> np.ndarray:
  return 1.0 / np.log2(np.arange(2, n + 2))


def ndcg_at(ranks: np.ndarray, k: int) -> np.ndarray:
  """nDCG@k with binary relevance: DCG / the DCG of a perfect ranking."""
  gains = np.where((ranks > 0) & (ranks <= k),
                   1.0 / np.log2(np.clip(ranks, 1, k) + 1.0), 0.0)
  ideal = np.cumsum(_discounts(k))[np.minimum(num_relevant(ranks), k) - 1]
  return gains.sum(axis=1) / ideal


def rank_distance(ranks: np.ndarray) -> np.ndarray:
  """Max minus min rank of a query's relevant candidates (Huang et al. 2023).

  NaN for a query with a single relevant candidate: there is no distance.
  """
  _check_full(ranks, "Rank distance")
  highest = ranks.max(axis=1)
  lowest = np.where(ranks > 0, ranks, UNRANKED).min(axis=1)
  return np.where(num_relevant(ranks) > 1, highest - lowest,
                  np.nan).astype(np.float64)


def overlap_at(found: np.ndarray, exact: np.ndarray, k: int) -> np.ndarray:
  """Recall of a search against exact search: |found ∩ exact top k| / k per
  query (`found` may hold -1 for empty slots)."""
  return np.asarray([len(set(a[a >= 0]) & set(b[:k])) / k
                     for a, b in zip(found, exact)], np.float64)
