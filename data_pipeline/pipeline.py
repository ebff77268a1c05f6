"""The training input pipeline: hybrid batches as a tf.data pipeline.

Batch `step` is a pure function of (seed, step) (see `hybrid.py`), so the
pipeline is infinite, deterministic, and resumes exactly by starting at the
next step: the whole state of a `BatchIterator` is `{"step": n}`. In a
multi-process run every process draws the same global batch of triples (row
numbers: the sampling without replacement is global) and gathers the tokens
of its own rows of it, `rows`, so in-batch negatives still span the global
batch and each process reads only its share of the examples.
"""

from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from data_pipeline import config as config_lib
from data_pipeline import hybrid
from data_pipeline import loading
from data_pipeline import tokenization


class TrainPipeline:
  """Per-process batches of a tokenized training set."""

  def __init__(self, table: hybrid.PairTable,
               tokens: tokenization.TokenizedDataset,
               cfg: config_lib.DataConfig, *,
               rows: Sequence[int] | None = None):
    """Args: the pairs, their tokens, the settings, and the rows (ascending)
    of every global batch this process builds (default: all)."""
    rows = np.arange(cfg.batch_size) if rows is None else np.asarray(rows)
    if not (rows.ndim == 1 and len(rows) and np.all(np.diff(rows) > 0)
            and 0 <= rows[0] and rows[-1] < cfg.batch_size):
      raise ValueError(
          f"rows={rows.tolist()} are not ascending rows of the global batch "
          f"of {cfg.batch_size} (data.batch_size).")
    self.table = table
    self.cfg = cfg
    self.rows = rows
    self._rows = tf.constant(rows, tf.int32)
    self.sampler = hybrid.HybridSampler(
        table, batch_size=cfg.batch_size, ratio=cfg.ratio, mixing=cfg.mixing,
        temperature=cfg.language_temperature, seed=cfg.seed)
    self._columns = {name: tf.constant(getattr(table, name)) for name in (
        "question", "group", "query_lang", "passage_lang", "query_row",
        "passage_row", "paragraph_start", "paragraph_end")}
    self._query_ids = tf.constant(tokens.queries.ids)
    self._query_len = tf.constant(tokens.queries.lengths)
    self._passage_ids = tf.constant(tokens.passages.ids)
    self._passage_len = tf.constant(tokens.passages.lengths)

  def _tokens(self, ids, lengths, rows, prefix):
    return {f"{prefix}_ids": tf.gather(ids, rows),
            f"{prefix}_mask": tf.sequence_mask(
                tf.gather(lengths, rows), ids.shape[1], tf.int32)}

  def _hard_negative(self, step, passage_row, start, end):
    """Another sentence of the answer's paragraph, where it has one."""
    seed = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(self.cfg.seed, tf.int64),
                  tf.cast(step, tf.int64)]), 1)
    u = tf.random.stateless_uniform(tf.shape(passage_row), seed)
    num_others = end - start - 1
    pick = start + tf.cast(u * tf.cast(num_others, tf.float32), tf.int32)
    pick = tf.minimum(pick, end - 2)
    pick += tf.cast(pick >= passage_row, tf.int32)
    has = num_others > 0
    return tf.where(has, pick, passage_row), has

  def batch(self, step):
    """This process's slice of global batch `step`, as a dict of tensors.

    Every process draws the same global batch (triples and hard negatives)
    and gathers the tokens of its own slice only.
    """
    triples, drawn_mono = self.sampler(step)
    col = {k: tf.gather(v, triples) for k, v in self._columns.items()}
    if self.cfg.hard_negatives:
      col["negative_row"], col["has_negative"] = self._hard_negative(
          step, col["passage_row"], col["paragraph_start"],
          col["paragraph_end"])
    col = {k: tf.gather(v, self._rows) for k, v in col.items()}
    out = {"question": col["question"], "answer_group": col["group"],
           "query_lang": col["query_lang"],
           "passage_lang": col["passage_lang"],
           "drawn_monolingual": tf.gather(drawn_mono, self._rows),
           "passage_row": col["passage_row"]}
    out.update(self._tokens(self._query_ids, self._query_len,
                            col["query_row"], "query"))
    out.update(self._tokens(self._passage_ids, self._passage_len,
                            col["passage_row"], "passage"))
    if self.cfg.hard_negatives:
      out.update(self._tokens(self._passage_ids, self._passage_len,
                              col["negative_row"], "negative"))
      out["has_negative"] = col["has_negative"]
      out["negative_row"] = col["negative_row"]
    return out

  def dataset(self, start_step: int = 0) -> tf.data.Dataset:
    """Infinite, prefetched batches from `start_step` on."""
    ds = tf.data.Dataset.counter(start_step)
    ds = ds.map(self.batch, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)

  def iterator(self, start_step: int = 0) -> "BatchIterator":
    return BatchIterator(self, start_step)


class BatchIterator(Iterator[dict[str, np.ndarray]]):
  """Numpy batches with a checkpointable state: the next step to yield."""

  def __init__(self, pipeline: TrainPipeline, start_step: int = 0):
    self._pipeline = pipeline
    self.step = start_step
    self._it = pipeline.dataset(start_step).as_numpy_iterator()

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._it)
    self.step += 1
    return batch

  def state(self) -> dict[str, int]:
    """What a checkpoint must store to resume at the same batch."""
    return {"step": self.step}

  def restore(self, state: dict[str, int]) -> "BatchIterator":
    """A new iterator positioned where `state` was taken."""
    return BatchIterator(self._pipeline, int(state["step"]))


def build_train_pipeline(cfg: config_lib.DataConfig,
                         tokenizer: tokenization.Tokenizer, *,
                         rows: Sequence[int] | None = None) -> TrainPipeline:
  """Loads, checks, tokenizes (cached) and wraps the training set; the
  pipeline builds `rows` of every global batch."""
  dataset = loading.load_training_set(cfg)
  tokens = tokenization.tokenize_dataset(
      dataset, tokenizer, max_query_length=cfg.max_query_length,
      max_passage_length=cfg.max_passage_length,
      query_prefix=cfg.query_prefix, passage_prefix=cfg.passage_prefix,
      cache_dir=tokenization.resolve_cache_dir(cfg.cache_dir))
  table = hybrid.build_pair_table(dataset, tokens)
  return TrainPipeline(table, tokens, cfg, rows=rows)
