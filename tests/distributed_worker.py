"""One of several processes started by tests/test_distributed.py.

  JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=n JAX_PROCESS_ID=i \
      python tests/distributed_worker.py

Joins the other processes and prints, as one JSON line, the rows of the
first global batches of the smoke preset that this process builds for
training (`train.process_pipeline`, as a training run does).
"""

import json

from configs import ratio_sweep
from data_pipeline import tokenization
from hybrid_jax import config as config_lib
from hybrid_jax import pretrained
from hybrid_jax import runtime
from hybrid_jax import sharding
from hybrid_jax import train

NUM_BATCHES = 3


def main() -> None:
  c = ratio_sweep.get_config("smoke")
  c.data.hard_negatives = True
  c.distributed.initialize = True
  cfg = config_lib.from_config_dict(c)
  runtime.setup(cfg.distributed)
  tokenizer = pretrained.load_tokenizer(
      cfg.model, tokenization.resolve_cache_dir(cfg.data.cache_dir))
  pipeline = train.process_pipeline(cfg.data, tokenizer,
                                    sharding.make_mesh(cfg.mesh))
  batches = pipeline.iterator()
  print(json.dumps({
      "rows": [pipeline.rows.start, pipeline.rows.stop],
      "batches": [{k: v.tolist() for k, v in next(batches).items()}
                  for _ in range(NUM_BATCHES)]}), flush=True)


if __name__ == "__main__":
  main()
