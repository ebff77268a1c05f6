r"""Evaluation throughput: the full evaluation against the encoder's own speed.

  python tools/bench_evaluation.py --config=configs/evaluate.py

Runs the configured evaluation (by default multilingual-e5-small on XQuAD-R
and MLQA-R, every language, the LAReQA protocol) data set by data set, and
prints for each the texts and tokens encoded (real tokens, and with the
padding of the length-bucketed batches), the encoding seconds and tokens/s,
and the seconds of the other stages (search, metrics). The reference is the
forward benchmark in the same process: the jitted encoder on full batches
of eval.batch_size x 128 random tokens (no padding), timed before and after
each data set; "of forward" is the evaluation's padded tokens/s as a share of
it, i.e. how close encoding runs to what the encoder allows. Encoding time
includes compiling each length bucket's shape once, as in a real evaluation.
"""

import statistics
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:preset].", lock_config=True)
_FORWARD_LENGTH = flags.DEFINE_integer("forward_length", 128,
                                       "Tokens per text of the reference.")
_FORWARD_ROUNDS = flags.DEFINE_integer("forward_rounds", 5,
                                       "Reference batches per measurement.")


def main(argv):
  del argv
  # hybrid_jax first: importing it sets up host memory reuse.
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import embedding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top
  from hybrid_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top

  cfg = config_lib.from_config_dict(_CONFIG.value)
  mesh = sharding.make_mesh(cfg.mesh)
  cache_dir = tokenization.resolve_cache_dir(cfg.data.cache_dir)
  model = pretrained.load_model(cfg.model, mesh, cfg.seed, cache_dir)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]  # As embed_token_arrays:
  batch = -(-cfg.eval.batch_size // shards) * shards  # whole shards.
  ids = np.random.default_rng(0).integers(
      5, model.config.encoder.vocab_size, (batch, _FORWARD_LENGTH.value))
  reference = jax.device_put((ids.astype(np.int32), np.ones(ids.shape, bool)))
  encoder = jax.jit(embedding.encode_fn(model.graphdef, "passage"))

  def forward_tokens_per_second() -> float:
    seconds = []
    with sharding.use_mesh(mesh):
      encoder(model.params, *reference).block_until_ready()
      for _ in range(_FORWARD_ROUNDS.value):
        start = time.perf_counter()
        encoder(model.params, *reference).block_until_ready()
        seconds.append(time.perf_counter() - start)
    return ids.size / statistics.median(seconds)

  print(f"model={cfg.model.init} dtype={cfg.model.dtype} batch={batch} "
        f"lengths={cfg.eval.max_query_length}/{cfg.eval.max_candidate_length}"
        f" index={cfg.eval.index} devices={jax.device_count()} "
        f"({jax.devices()[0].platform})")
  datasets = evaluate.load_datasets(cfg)
  for name, dataset in datasets.items():
    before = forward_tokens_per_second()
    tokens = tokenization.tokenize_dataset(
        dataset, model.tokenizer, max_query_length=cfg.eval.max_query_length,
        max_passage_length=cfg.eval.max_candidate_length,
        query_prefix=cfg.data.query_prefix,
        passage_prefix=cfg.data.passage_prefix, cache_dir=cache_dir)
    result, _, _ = evaluate.evaluate_dataset(
        model, mesh, dataset, cfg, evaluate.settings(cfg, dataset, None))
    forward = statistics.mean([before, forward_tokens_per_second()])
    arrays = (tokens.queries, tokens.passages)
    texts = sum(len(a.lengths) for a in arrays)
    real = sum(int(a.lengths.sum()) for a in arrays)
    padded = sum(embedding.padded_token_count(a.lengths, batch,
                                              a.ids.shape[1]) for a in arrays)
    seconds = result["seconds"]
    encode = seconds["encode"]
    print(f"{name}: {texts:,} texts, {real:,} tokens ({padded:,} with "
          f"padding, +{padded / real - 1:.1%}); encode {encode:.1f} s = "
          f"{real / encode:,.0f} real / {padded / encode:,.0f} padded "
          f"tokens/s; forward benchmark {forward:,.0f} tokens/s; of forward "
          f"{padded / encode / forward:.1%}; other stages "
          f"{seconds['total'] - encode:.1f} s; total {seconds['total']:.1f} s",
          flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
