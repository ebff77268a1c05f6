"""Exact search: every query scored against every candidate, in JAX.

Scores are float32 dot products at full matmul precision. The order of a
query's candidates is by score, ties broken by candidate index (lower
first), so ranks are deterministic. Queries go through in chunks sharded
over the mesh's batch axes; the candidates are replicated.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import sharding

QUERY_CHUNK = 256


def _ranks(scores: jax.Array, relevant: jax.Array) -> jax.Array:
  """1-based ranks of the `relevant` candidates (-1: padding -> rank 0)."""
  safe = jnp.maximum(relevant, 0)
  own = jnp.take_along_axis(scores, safe, axis=1)[:, :, None]
  index = jnp.arange(scores.shape[1])
  above = (scores[:, None, :] > own) | (
      (scores[:, None, :] == own) & (index < safe[:, :, None]))
  return jnp.where(relevant >= 0, 1 + above.sum(-1, dtype=jnp.int32), 0)


def _search_chunk(queries, candidates, relevant, *, k):
  scores = jnp.matmul(queries, candidates.T,
                      precision=jax.lax.Precision.HIGHEST)
  _, top = jax.lax.top_k(scores, k)  # Equal scores: lower index first.
  return top, _ranks(scores, relevant)


@functools.lru_cache(maxsize=None)
def _compiled(k: int, mesh: jax.sharding.Mesh):
  """The jitted chunk search, made once per (k, mesh) so that its compiled
  programs are reused; replicated results: every process can read them."""
  return jax.jit(functools.partial(_search_chunk, k=k),
                 out_shardings=jax.NamedSharding(
                     mesh, jax.sharding.PartitionSpec()))


def search(queries: np.ndarray, candidates: np.ndarray, relevant: np.ndarray,
           k: int, mesh: jax.sharding.Mesh) -> tuple[np.ndarray, np.ndarray]:
  """The exact top k of every query, and the ranks of its relevant candidates.

  Args:
    queries: [num_queries, dim] float32.
    candidates: [num_candidates, dim] float32, the pool.
    relevant: [num_queries, max relevant] candidate indices, padded with -1.
    k: how many neighbours to return (at most the pool size).
    mesh: the device mesh; query chunks split over its batch axes.

  Returns:
    top: [num_queries, k] candidate indices, best first.
    ranks: [num_queries, max relevant] 1-based ranks over the whole pool
      (0 for padding).
  """
  k = min(k, len(candidates))
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  chunk = -(-QUERY_CHUNK // shards) * shards
  rows = jax.NamedSharding(mesh, sharding.logical_to_spec(("act_batch",)))
  replicated = jax.NamedSharding(mesh, jax.sharding.PartitionSpec())
  pool = jax.device_put(candidates.astype(np.float32), replicated)
  search_chunk = _compiled(k, mesh)
  tops, ranks = [], []
  for start in range(0, len(queries), chunk):
    q = queries[start:start + chunk].astype(np.float32)
    r = relevant[start:start + chunk].astype(np.int32)
    n = len(q)
    q = np.pad(q, ((0, chunk - n), (0, 0)))
    r = np.pad(r, ((0, chunk - n), (0, 0)), constant_values=-1)
    top, rank = search_chunk(jax.device_put(q, rows), pool,
                             jax.device_put(r, rows))
    tops.append(np.asarray(top)[:n])
    ranks.append(np.asarray(rank)[:n])
  if not tops:
    return (np.zeros((0, k), np.int64),
            np.zeros((0, relevant.shape[1]), np.int64))
  return (np.concatenate(tops).astype(np.int64),
          np.concatenate(ranks).astype(np.int64))
