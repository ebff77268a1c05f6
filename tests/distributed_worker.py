"""One of several processes started by tests/test_distributed.py.

  JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=n JAX_PROCESS_ID=i \
      python tests/distributed_worker.py

Joins the other processes, then builds the first global batches of the smoke
preset as a training run does (`train.process_pipeline`, then the global
arrays), on a mesh whose devices alternate between the processes, so that
each process holds interleaved rows, as on TPU slices. Prints, as one JSON
line, this process's rows, what it built, the global batches read back, and
the embeddings of `TEXTS` computed by all processes together.
"""

import json

import jax
import numpy as np

from configs import ratio_sweep
from data_pipeline import tokenization
from hybrid_jax import config as config_lib
from hybrid_jax import embedding
from hybrid_jax import pretrained
from hybrid_jax import runtime
from hybrid_jax import sharding
from hybrid_jax import train

NUM_BATCHES = 3
TEXTS = [f"text number {i} " * (i % 7 + 1) for i in range(37)]


def interleaved_devices() -> list[jax.Device]:
  """Every process's first device, then every process's second, ..."""
  by_process = [[d for d in jax.devices() if d.process_index == p]
                for p in range(jax.process_count())]
  return [d for devices in zip(*by_process) for d in devices]


def main() -> None:
  c = ratio_sweep.get_config("smoke")
  c.data.hard_negatives = True
  c.distributed.initialize = True
  cfg = config_lib.from_config_dict(c)
  runtime.setup(cfg.distributed)
  tokenizer = pretrained.load_tokenizer(
      cfg.model, tokenization.resolve_cache_dir(cfg.data.cache_dir))
  mesh = sharding.make_mesh(cfg.mesh, interleaved_devices())
  pipeline = train.process_pipeline(cfg.data, tokenizer, mesh)
  shardings = train.batch_shardings(cfg.data, mesh)
  read_back = jax.jit(lambda x: x, out_shardings=jax.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  batches = pipeline.iterator()
  built, whole = [], []
  for _ in range(NUM_BATCHES):
    local = next(batches)
    arrays = train.global_batch(local, shardings, cfg.data.batch_size)
    built.append({k: v.tolist() for k, v in local.items()})
    whole.append({k: np.asarray(read_back(v)).tolist()
                  for k, v in arrays.items()})
  model = pretrained.load_model(
      cfg.model, mesh, cfg.seed,
      tokenization.resolve_cache_dir(cfg.data.cache_dir))
  embeddings = embedding.embed_texts(model, mesh, TEXTS, "passage",
                                     max_length=32, batch_size=16)
  print(json.dumps({"rows": pipeline.rows.tolist(), "built": built,
                    "global": whole, "embeddings": embeddings.tolist()}),
        flush=True)


if __name__ == "__main__":
  main()
