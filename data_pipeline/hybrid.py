"""Hybrid batches: which (question, query language, passage language) triples
form each batch.

The pair table lists every triple the data allows: (q, X, X) for each
question q in language X (monolingual, X-X) and (q, X, Y) for each ordered
pair of languages X != Y that both hold q (cross-lingual, X-Y). A triple of
language pair (X, Y) with n(X, Y) available triples has weight
n(X, Y) ** (temperature - 1), so the pairs are drawn in proportion to
n ** temperature (1 = by data set size, 0 = uniform) and questions uniformly
within a pair.

Batch b is a pure function of (seed, b), computed with stateless TF ops:
  * mixing="batch" (the paper): with probability alpha the batch is X-X, with
    one language X drawn with weight n(X, X) ** temperature for the whole
    batch; otherwise it is X-Y and every triple is drawn by its weight.
  * mixing="example": every batch holds round(alpha * B) X-X triples (each
    with its own language) and B - round(alpha * B) X-Y triples, shuffled.
Within a batch no two triples share an answer group: questions whose answer
sentences have the same text in some language (and so, in parallel data, the
same translations)
form one group, and a group never appears twice in a batch, so no question id
repeats and no positive passage is another pair's negative. Triples are drawn
without replacement of groups by the Gumbel-top-k trick over each group's
best-keyed triple, which is exactly "draw a triple by weight, drop the other
triples of its group, repeat".
"""

import dataclasses

import numpy as np
import tensorflow as tf

from data_pipeline import records
from data_pipeline import tokenization


@dataclasses.dataclass(frozen=True)
class PairTable:
  """Every trainable (question, query language, passage language) triple.

  Rows index the token arrays of a `TokenizedDataset`: `query_row` a question,
  `passage_row` its answer sentence in the passage language, and
  `[paragraph_start, paragraph_end)` that answer's paragraph.
  """
  languages: tuple[str, ...]
  question: np.ndarray  # [T] int32, index of the question id.
  group: np.ndarray  # [T] int32, answer group of the question.
  query_lang: np.ndarray  # [T] int32, index into `languages`.
  passage_lang: np.ndarray  # [T] int32.
  query_row: np.ndarray  # [T] int32.
  passage_row: np.ndarray  # [T] int32.
  paragraph_start: np.ndarray  # [T] int32.
  paragraph_end: np.ndarray  # [T] int32.
  qids: tuple[str, ...]  # Question id of each question index.

  @property
  def is_monolingual(self) -> np.ndarray:
    """[T] bool, whether the triple is X-X."""
    return self.query_lang == self.passage_lang

  @property
  def num_groups(self) -> int:
    return int(self.group.max()) + 1

  def pair_counts(self) -> np.ndarray:
    """[L, L] number of triples of each (query, passage) language pair."""
    n = len(self.languages)
    counts = np.zeros((n, n), np.int64)
    np.add.at(counts, (self.query_lang, self.passage_lang), 1)
    return counts

  def log_weights(self, temperature: float) -> np.ndarray:
    """[T] log weight of each triple: (temperature - 1) * log n(pair)."""
    n = self.pair_counts()[self.query_lang, self.passage_lang]
    return ((temperature - 1.0) * np.log(n)).astype(np.float32)

  def monolingual_logits(self, temperature: float) -> np.ndarray:
    """[L] log weight of each language for X-X batches."""
    n = np.diag(self.pair_counts()).astype(np.float64)
    with np.errstate(divide="ignore"):
      return np.where(n > 0, temperature * np.log(n), -np.inf).astype(
          np.float32)


def build_pair_table(dataset: records.RetrievalDataset,
                     tokens: tokenization.TokenizedDataset) -> PairTable:
  """Enumerates the triples of a data set, aligned by question id."""
  langs = dataset.languages
  qids = tuple(sorted(dataset.qids()))
  qindex = {q: i for i, q in enumerate(qids)}
  # by_qid[q] = [(lang index, query row, answer row, paragraph start, end)].
  by_qid = {q: [] for q in qids}
  for li, lang in enumerate(langs):
    q0, p0 = tokens.query_offsets[lang], tokens.passage_offsets[lang]
    for i, r in enumerate(dataset.records[lang]):
      start = p0 + r.sentence_offset
      by_qid[r.qid].append(
          (li, q0 + i, p0 + r.answer_candidate, start,
           start + len(r.sentences)))
  group = _answer_groups(len(qids), [
      (qindex[r.qid], (lang, r.answer_sentence))
      for lang in langs for r in dataset.records[lang]])
  rows = []
  for q in qids:
    for lq, qrow, _, _, _ in by_qid[q]:
      for lp, _, prow, pstart, pend in by_qid[q]:
        rows.append((qindex[q], group[qindex[q]], lq, lp, qrow, prow, pstart,
                     pend))
  cols = np.array(rows, np.int32).T
  return PairTable(languages=langs, question=cols[0], group=cols[1],
                   query_lang=cols[2], passage_lang=cols[3],
                   query_row=cols[4], passage_row=cols[5],
                   paragraph_start=cols[6], paragraph_end=cols[7], qids=qids)


def _answer_groups(num_questions: int, answers) -> np.ndarray:
  """Groups questions that share an answer sentence (union-find).

  Args:
    num_questions: number of question indices.
    answers: (question index, answer key) pairs; questions with a common key
      end up in one group.

  Returns:
    [num_questions] int32 group index, numbered 0.. in question order.
  """
  parent = list(range(num_questions))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  first = {}
  for q, key in answers:
    parent[find(q)] = find(first.setdefault(key, q))
  roots = [find(q) for q in range(num_questions)]
  return np.unique(roots, return_inverse=True)[1].astype(np.int32)


def check_batch_size(table: PairTable, batch_size: int, ratio: float,
                     mixing: str) -> None:
  """Raises if some batch could not be filled with distinct answer groups."""
  mono = table.is_monolingual
  cross_groups = len(np.unique(table.group[~mono]))
  if mixing == "batch":
    needs_cross = ratio < 1
    mono_needs = [(f"X-X batches in {table.languages[l]}",
                   len(np.unique(table.group[mono & (table.query_lang == l)])))
                  for l in np.unique(table.query_lang)] if ratio > 0 else []
  else:
    needs_cross = round(ratio * batch_size) < batch_size
    mono_needs = [("the X-X share of each batch", table.num_groups)]
  if needs_cross and cross_groups == 0:
    raise ValueError(
        f"The training languages {list(table.languages)} share no question "
        "ids, so there are no cross-lingual (X-Y) pairs: set data.ratio=1 "
        "(X-X only) or train on more languages (data.languages).")
  needs = mono_needs + ([("X-Y pairs", cross_groups)] if needs_cross else [])
  what, available = min(needs, key=lambda need: need[1])
  if available < batch_size:
    raise ValueError(
        f"Batch size {batch_size} exceeds the {available} distinct "
        f"questions (answer groups) available for {what}: a batch never "
        "repeats a question or an answer sentence. Lower data.batch_size, "
        "or add training languages/data.")


def _gumbel(seed, n):
  # float64: float32 uniforms would tie often on large tables.
  u = tf.random.stateless_uniform(
      [n], seed, minval=np.finfo(np.float64).tiny, maxval=1.0,
      dtype=tf.float64)
  return -tf.math.log(-tf.math.log(u))


def _distinct_top_k(keys, group, num_groups, k):
  """Indices of the k best-keyed triples, at most one per group."""
  best = tf.math.unsorted_segment_max(keys, group, num_groups)
  top = tf.math.top_k(best, k)
  positions = tf.range(tf.size(keys))
  is_best = tf.equal(keys, tf.gather(best, group))
  argbest = tf.math.unsorted_segment_min(
      tf.where(is_best, positions, tf.size(keys)), group, num_groups)
  return tf.gather(argbest, top.indices)


class HybridSampler:
  """Draws the triples of global batch `step`: a pure function of the step."""

  def __init__(self, table: PairTable, *, batch_size: int, ratio: float,
               mixing: str, temperature: float, seed: int):
    check_batch_size(table, batch_size, ratio, mixing)
    self.batch_size = batch_size
    self.ratio = ratio
    self.mixing = mixing
    self.seed = seed
    self.num_groups = table.num_groups
    self._group = tf.constant(table.group)
    self._query_lang = tf.constant(table.query_lang)
    self._is_mono = tf.constant(table.is_monolingual)
    self._log_w = tf.constant(table.log_weights(temperature), tf.float64)
    self._mono_logits = tf.constant(table.monolingual_logits(temperature))

  def _top(self, keys, k):
    return _distinct_top_k(keys, self._group, self.num_groups, k)

  def _keys(self, allowed, log_weight, seed):
    """Gumbel keys of the allowed triples, -inf elsewhere."""
    g = _gumbel(seed, tf.size(self._group))
    return tf.where(allowed, log_weight + g, tf.constant(-np.inf, tf.float64))

  def __call__(self, step):
    """Triples of batch `step`: ([B] int32 indices, [B] bool drawn as X-X)."""
    seeds = tf.random.experimental.stateless_split(
        tf.stack([tf.constant(self.seed, tf.int64),
                  tf.cast(step, tf.int64)]), 5)
    if self.mixing == "batch":
      is_mono_batch = tf.random.stateless_uniform([], seeds[0]) < self.ratio

      def mono_batch():
        lang = tf.random.stateless_categorical(
            self._mono_logits[None], 1, seeds[1], dtype=tf.int32)[0, 0]
        allowed = self._is_mono & tf.equal(self._query_lang, lang)
        return self._top(self._keys(allowed, 0.0, seeds[2]), self.batch_size)

      def cross_batch():
        return self._top(self._keys(~self._is_mono, self._log_w, seeds[2]),
                         self.batch_size)

      triples = tf.cond(is_mono_batch, mono_batch, cross_batch)
      return triples, tf.fill([self.batch_size], is_mono_batch)
    k = round(self.ratio * self.batch_size)
    mono = self._top(self._keys(self._is_mono, self._log_w, seeds[2]), k)
    used = tf.scatter_nd(tf.gather(self._group, mono)[:, None],
                         tf.ones([k], tf.int32), [self.num_groups])
    cross_ok = ~self._is_mono & tf.equal(tf.gather(used, self._group), 0)
    cross = self._top(self._keys(cross_ok, self._log_w, seeds[3]),
                      self.batch_size - k)
    drawn_mono = tf.range(self.batch_size) < k
    order = tf.argsort(tf.random.stateless_uniform([self.batch_size],
                                                   seeds[4]))
    return (tf.gather(tf.concat([mono, cross], 0), order),
            tf.gather(drawn_mono, order))
