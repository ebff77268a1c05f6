r"""Throughput of the hybrid-batch input pipeline on one CPU core.

  python tools/bench_pipeline.py --config=configs/ratio_sweep.py \
      --config.model.tokenizer=bytes --num_batches=3000

Pins the process to one core and TF to one thread, warms up, then prints
batches/s and pairs/s for the configured pipeline and its variants (hard
negatives, example-level mixing). Token caching happens before timing.
"""

import dataclasses
import itertools
import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:preset].", lock_config=True)
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 3000, "Batches to time.")


def main(argv):
  del argv
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  from data_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top

  cfg = config_lib.from_config_dict(_CONFIG.value)
  tokenizer = pretrained.load_tokenizer(
      cfg.model, tokenization.resolve_cache_dir(cfg.data.cache_dir))
  variants = {
      "configured": cfg.data,
      "hard negatives": dataclasses.replace(cfg.data, hard_negatives=True),
      "example mixing": dataclasses.replace(cfg.data, mixing="example"),
  }
  print(f"train={cfg.data.train} batch={cfg.data.batch_size} "
        f"lengths={cfg.data.max_query_length}/{cfg.data.max_passage_length}"
        f" ratio={cfg.data.ratio}, one core")
  for name, data in variants.items():
    train = pipeline.build_train_pipeline(data, tokenizer)
    if name == "configured":
      print(f"{len(train.table.question)} triples in the pair table")
    it = train.iterator()
    for _ in itertools.islice(it, 50):  # Warm-up: tracing, prefetch.
      pass
    start = time.perf_counter()
    for _ in itertools.islice(it, _NUM_BATCHES.value):
      pass
    seconds = time.perf_counter() - start
    rate = _NUM_BATCHES.value / seconds
    print(f"{name:>15}: {rate:8.1f} batches/s  "
          f"{rate * data.batch_size:10.0f} pairs/s")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
