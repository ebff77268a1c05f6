"""The contrastive (InfoNCE) loss of the dual encoder.

For question i the candidates are every positive passage of the global batch
(in-batch negatives) and every valid hard negative; the score is the cosine
similarity divided by a temperature. The paper's Eq. 1 keeps only the hard
negatives in the denominator; we add the in-batch positives, as is standard
(DPR, e5), and without hard negatives they are the only negatives. With
`symmetric`, the passage -> question direction (over the batch's questions)
is averaged in.
"""

import jax
import jax.numpy as jnp


def _cross_entropy_on_diagonal(logits: jax.Array) -> jax.Array:
  """Mean over rows i of -log softmax(logits[i])[i]."""
  diagonal = jnp.diagonal(logits[:, :logits.shape[0]])
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - diagonal)


def contrastive_loss(queries: jax.Array, passages: jax.Array,
                     negatives: jax.Array | None = None,
                     usable_negatives: jax.Array | None = None, *,
                     temperature: jax.Array | float,
                     symmetric: bool = False
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """InfoNCE loss and batch statistics.

  Args:
    queries: [B, D] L2-normalised question embeddings.
    passages: [B, D] their positive passages (row i answers question i).
    negatives: optional [B, D] hard negatives, one per pair.
    usable_negatives: [B, B] bool, whether hard negative j is a negative for
      question i (e.g. it exists and is not i's positive); default: all.
    temperature: scores are cosine / temperature.
    symmetric: average in the passage -> question loss.

  Returns:
    (loss, metrics): "accuracy" (question -> passage top-1 over all
    candidates), "positive_similarity", "negative_similarity" (mean cosine
    of the positives, and of every valid negative candidate).
  """
  queries = queries.astype(jnp.float32)
  passages = passages.astype(jnp.float32)
  batch = queries.shape[0]
  candidates, valid = passages, jnp.ones((batch, batch), bool)
  if negatives is not None:
    if usable_negatives is None:
      usable_negatives = jnp.ones((batch, batch), bool)
    candidates = jnp.concatenate([passages, negatives.astype(jnp.float32)])
    valid = jnp.concatenate([valid, usable_negatives.astype(bool)], axis=1)
  similarity = queries @ candidates.T  # [B, C]
  logits = jnp.where(valid, similarity / temperature, -jnp.inf)
  loss = _cross_entropy_on_diagonal(logits)
  if symmetric:
    loss = 0.5 * (loss + _cross_entropy_on_diagonal(
        (passages @ queries.T) / temperature))

  positive = jnp.diagonal(similarity[:, :batch])
  is_negative = valid & ~jnp.eye(batch, candidates.shape[0], dtype=bool)
  metrics = {
      "accuracy": jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(batch)),
      "positive_similarity": jnp.mean(positive),
      "negative_similarity": (jnp.sum(jnp.where(is_negative, similarity, 0.))
                              / jnp.maximum(jnp.sum(is_negative), 1)),
  }
  return loss, metrics
