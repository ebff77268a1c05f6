"""Texts to embeddings with a loaded dual encoder, in fixed-shape batches.

Texts are sorted by length and cut into batches of `batch_size`; each batch
is padded to a multiple of `LENGTH_BUCKET` tokens, so a whole corpus
compiles a bounded number of shapes, and the last batch is filled up with
padding rows. Results come back in the input order. The jitted encoder is
kept per (model structure, tower, mesh), so that evaluating several models
of one architecture (a sweep) compiles each shape once.
"""

import functools
from typing import Literal, Sequence

import jax
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
                    mesh: jax.sharding.Mesh):
  """`encode_fn`, jitted once, returning embeddings replicated on `mesh`
  (every process can read them: multi-host)."""
  return jax.jit(encode_fn(graphdef, tower), out_shardings=jax.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))


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
  batch_sharding = jax.NamedSharding(
      mesh, sharding.logical_to_spec(("act_batch", None)))
  with sharding.use_mesh(mesh):
    encode = _jitted_encoder(loaded.graphdef, tower, mesh)
    out = []
    for start in range(0, len(order), batch_size):
      rows = order[start:start + batch_size]
      width = bucket_width(int(tokens.lengths[rows].max(initial=1)),
                           tokens.ids.shape[1])
      ids = np.full((batch_size, width), pad_id, np.int32)
      ids[:len(rows)] = tokens.ids[rows, :width]
      mask = np.zeros((batch_size, width), bool)
      mask[:len(rows)] = np.arange(width) < tokens.lengths[rows][:, None]
      ids, mask = jax.device_put((ids, mask), batch_sharding)
      out.append(np.asarray(encode(loaded.params, ids, mask))[:len(rows)])
  result = np.zeros((len(order), loaded.config.embedding_dim), np.float32)
  if out:
    result[order] = np.concatenate(out)
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
