r"""Prints one JSON object describing the batches the pipeline really yields.

  python tools/inspect_batches.py --config=configs/ratio_sweep.py:smoke \
      --config.data.ratio=0.25 --num_batches=2000
"""

import itertools
import json

from absl import app
from absl import flags
from ml_collections import config_flags

from data_pipeline import pipeline
from data_pipeline import statistics
from data_pipeline import tokenization
from hybrid_jax import config as config_lib
from hybrid_jax import pretrained

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:preset].", lock_config=True)
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 1000,
                                    "How many batches to inspect.")
_START_STEP = flags.DEFINE_integer("start_step", 0, "First batch to inspect.")


def main(argv):
  del argv
  cfg = config_lib.from_config_dict(_CONFIG.value)
  train = pipeline.build_train_pipeline(
      cfg.data, pretrained.load_tokenizer(
          cfg.model, tokenization.resolve_cache_dir(cfg.data.cache_dir)))
  batches = itertools.islice(train.iterator(_START_STEP.value),
                             _NUM_BATCHES.value)
  stats = statistics.batch_statistics(batches, train.table.languages)
  print(json.dumps({"config": {"train": str(cfg.data.train),
                               "ratio": cfg.data.ratio,
                               "mixing": cfg.data.mixing,
                               "batch_size": cfg.data.batch_size,
                               "seed": cfg.data.seed},
                    **stats}, indent=1))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
