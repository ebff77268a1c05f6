"""Retrieval metrics against hand-computed values, and the exact search."""

import math

import jax
import numpy as np
import pytest

from hybrid_jax import sharding
from hybrid_jax.evaluation import exact_search
from hybrid_jax.evaluation import protocol
from hybrid_jax.evaluation import retrieval_metrics as rm

U = rm.UNRANKED
L2 = math.log2


def test_average_precision_by_hand():
  ranks = np.array([[3, 1, 0],   # Relevant at 1 and 3: (1/1 + 2/3) / 2.
                    [2, 0, 0],   # One relevant at 2: 1/2.
                    [5, 2, 9]])  # (1/2 + 2/5 + 3/9) / 3.
  np.testing.assert_allclose(rm.average_precision(ranks),
                             [5 / 6, 1 / 2, (1 / 2 + 2 / 5 + 3 / 9) / 3])


def test_metrics_at_a_cutoff_by_hand():
  ranks = np.array([[2, 5, 0],   # Two relevant, ranks 2 and 5.
                    [12, 0, 0],  # Beyond the cutoff.
                    [U, 1, 0]])  # One not retrieved by the index.
  np.testing.assert_allclose(rm.recall_at(ranks, 1), [0, 0, 1 / 2])
  np.testing.assert_allclose(rm.recall_at(ranks, 3), [1 / 2, 0, 1 / 2])
  np.testing.assert_allclose(rm.precision_at(ranks, 3), [1 / 3, 0, 1 / 3])
  np.testing.assert_allclose(rm.f1_at(ranks, 3), [0.4, 0, 0.4])
  np.testing.assert_allclose(rm.reciprocal_rank_at(ranks, 10), [1 / 2, 0, 1])
  np.testing.assert_allclose(rm.reciprocal_rank_at(ranks, 1), [0, 0, 1])
  np.testing.assert_allclose(
      rm.ndcg_at(ranks, 10),
      [(1 / L2(3) + 1 / L2(6)) / (1 + 1 / L2(3)), 0, 1 / (1 + 1 / L2(3))])
  # More relevant than the cutoff: the ideal DCG stops at k.
  np.testing.assert_allclose(rm.ndcg_at(np.array([[1, 2, 3]]), 2), [1.0])


def test_rank_distance_by_hand():
  ranks = np.array([[3, 10, 7], [4, 0, 0]])
  distance = rm.rank_distance(ranks)
  assert distance[0] == 7
  assert math.isnan(distance[1])  # A single relevant: no distance.


def test_full_rank_metrics_refuse_unretrieved_candidates():
  with pytest.raises(ValueError, match="rank the full pool"):
    rm.average_precision(np.array([[U, 1]]))
  with pytest.raises(ValueError, match="rank the full pool"):
    rm.rank_distance(np.array([[U, 1]]))
  with pytest.raises(ValueError, match="without relevant candidates"):
    rm.average_precision(np.array([[0, 0]]))


def test_index_ranks_from_a_top_list():
  top = np.array([[7, 3, 5], [1, 2, -1]])
  relevant = np.array([[5, 9], [2, -1]])
  np.testing.assert_array_equal(protocol.index_ranks(top, relevant),
                                [[3, U], [2, 0]])


@pytest.mark.parametrize("devices", [1, 8])
def test_exact_search_breaks_ties_by_candidate_order(devices):
  mesh = sharding.make_mesh(devices=jax.devices()[:devices])
  candidates = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8], [1, 0]],
                        np.float32)
  queries = np.array([[1, 0], [0, 1]], np.float32)
  # Query 0 ties candidates 0, 2 and 4 (score 1), then 3 (0.6), then 1.
  relevant = np.array([[4, 2], [0, -1]])
  top, ranks = exact_search.search(queries, candidates, relevant, 3, mesh)
  np.testing.assert_array_equal(top, [[0, 2, 4], [1, 3, 0]])
  np.testing.assert_array_equal(ranks, [[3, 2], [3, 0]])


def test_exact_search_against_numpy_on_many_queries():
  rng = np.random.default_rng(0)
  candidates = rng.standard_normal((300, 8)).astype(np.float32)
  queries = rng.standard_normal((600, 8)).astype(np.float32)  # > 2 chunks.
  relevant = rng.integers(0, 300, (600, 3))
  top, ranks = exact_search.search(queries, candidates, relevant, 10,
                                   sharding.make_mesh())
  scores = queries.astype(np.float64) @ candidates.T.astype(np.float64)
  order = np.argsort(-scores, axis=1, kind="stable")
  np.testing.assert_array_equal(top, order[:, :10])
  position = np.argsort(order, axis=1) + 1
  np.testing.assert_array_equal(
      ranks, np.take_along_axis(position, relevant, axis=1))
