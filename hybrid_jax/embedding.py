"""Texts to embeddings with a loaded dual encoder, in fixed-shape batches.

Texts are sorted by length and cut into batches of `batch_size`; each batch
is padded to a multiple of `LENGTH_BUCKET` tokens, so a whole corpus
compiles a bounded number of shapes, and the last batch is filled up with
padding rows. Results come back in the input order. The jitted encoder is
kept per (model structure, tower, sharding), so that evaluating several
models of one architecture (a sweep) compiles each shape once.

Batches are sharded over the mesh's batch axes. In a multi-process run every
process feeds and reads back only its own rows of each batch; the
embeddings are gathered across processes once, at the end.
"""

import functools
from typing import Literal, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np
from flax import nnx

from data_pipeline import tokenization
from hybrid_jax import sharding
from hybrid_jax.pretrained import LoadedModel

Tower = Literal["query", "passage"]
# Fine buckets pad short texts little (most questions and sentences are
# under 64 tokens); at most 16 shapes per tower of 128 tokens.
LENGTH_BUCKET = 8


def encode_fn(graphdef: nnx.GraphDef, tower: Tower):
  """A pure `(params, ids, mask) -> embeddings` function of one tower."""

  def encode(params, ids, mask):
    model = nnx.merge(graphdef, params)
    fn = model.encode_query if tower == "query" else model.encode_passage
    return fn(ids, mask)

  return encode


@functools.lru_cache(maxsize=8)
def _jitted_encoder(graphdef: nnx.GraphDef, tower: Tower,
                    rows: jax.sharding.NamedSharding):
  """`encode_fn`, jitted once, returning embeddings sharded like the
  input `rows`."""
  return jax.jit(encode_fn(graphdef, tower), out_shardings=rows)


def _gather(local: np.ndarray, rows: jax.sharding.NamedSharding,
            batch_size: int) -> np.ndarray:
  """Every process's rows of every batch, [batches, batch_size, dim], from
  this process's rows `local` [batches, its rows, dim]: one collective."""
  blocks, processes = multihost_utils.process_allgather(
      (local, np.int32(jax.process_index())))  # Each block with its owner.
  out = np.zeros(local.shape[:1] + (batch_size,) + local.shape[2:],
                 local.dtype)
  for process, block in zip(processes, blocks):
    out[:, sharding.process_rows(rows, batch_size, int(process))] = block
  return out


def bucket_width(longest: int, max_length: int) -> int:
  """Width of a batch whose longest text has `longest` tokens: rounded up
  to LENGTH_BUCKET (few distinct shapes to compile), at most `max_length`."""
  return min(-(-max(longest, 1) // LENGTH_BUCKET) * LENGTH_BUCKET, max_length)


def padded_token_count(lengths: np.ndarray, batch_size: int,
                       max_length: int) -> int:
  """Token slots `embed_token_arrays` computes for texts of `lengths`:
  longest-first batches of `batch_size`, each `bucket_width` wide."""
  longest = np.sort(lengths)[::-1][::batch_size]
  return sum(batch_size * bucket_width(int(n), max_length) for n in longest)


def embed_token_arrays(loaded: LoadedModel, mesh: jax.sharding.Mesh,
                       tokens: tokenization.TokenArrays, tower: Tower,
                       batch_size: int = 64) -> np.ndarray:
  """Embeddings [len(tokens), dim] (float32) of already tokenized texts."""
  batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
  batch_size = -(-batch_size // batch_axes) * batch_axes
  pad_id = loaded.tokenizer.pad_id
  order = np.argsort(-tokens.lengths, kind="stable")
  rows = jax.NamedSharding(mesh, sharding.logical_to_spec(("act_batch", None)))
  mine = sharding.process_rows(rows, batch_size)
  local = []
  with sharding.use_mesh(mesh):
    encode = _jitted_encoder(loaded.graphdef, tower, rows)
    for start in range(0, len(order), batch_size):
      texts = order[start:start + batch_size]
      batch = np.full(batch_size, -1)  # Token rows; -1: padding.
      batch[:len(texts)] = texts
      width = bucket_width(int(tokens.lengths[texts].max()),
                           tokens.ids.shape[1])
      feed = batch[mine]
      ids = np.where(feed[:, None] >= 0, tokens.ids[feed, :width], pad_id)
      mask = ((feed[:, None] >= 0)
              & (np.arange(width) < tokens.lengths[feed][:, None]))
      ids, mask = (jax.make_array_from_process_local_data(
          rows, x, (batch_size, width)) for x in (ids.astype(np.int32), mask))
      local.append(sharding.local_rows(encode(loaded.params, ids, mask)))
  result = np.zeros((len(order), loaded.config.embedding_dim), np.float32)
  if local:
    embeddings = _gather(np.stack(local), rows, batch_size)
    result[order] = embeddings.reshape(-1, result.shape[1])[:len(order)]
  return result


def embed_texts(loaded: LoadedModel, mesh: jax.sharding.Mesh,
                texts: Sequence[str], tower: Tower, prefix: str = "",
                max_length: int = 512, batch_size: int = 64) -> np.ndarray:
  """L2-normalised embeddings [len(texts), dim] of `prefix + text`.

  Args:
    loaded: the model (see `hybrid_jax.pretrained.load_model`).
    mesh: the device mesh the parameters live on.
    texts: the texts, one embedding each.
    tower: "query" or "passage" (the same tower unless separate_towers).
    prefix: prepended to every text, e.g. "query: " for e5.
    max_length: tokens per text, including special tokens (truncation).
    batch_size: texts per forward pass (rounded up to the mesh batch axes).
  """
  token_lists = loaded.tokenizer.encode([prefix + t for t in texts],
                                        max_length)
  tokens = tokenization.pack(token_lists, max_length, loaded.tokenizer.pad_id)
  return embed_token_arrays(loaded, mesh, tokens, tower, batch_size)
