"""Evaluates a dual encoder on the configured data sets: encode, index, search,
score, write (`results.py` describes the files).

The same code serves the eval-only job (`run`, from `python -m
hybrid_jax.main --config=configs/evaluate.py --workdir=DIR`, writing
`DIR/eval/`) and training runs (`evaluate_run`: the final checkpoint into
`<run>/eval/`; with `eval.every`, `evaluate_model` on the parameters in
memory into `<run>/eval/step_<n>/`). Finished results are never recomputed or
overwritten: results of the same settings are read back, results of other
settings are an error.
"""

import dataclasses
from typing import Any, Callable

from etils import epath
import jax
import numpy as np

from data_pipeline import loading
from data_pipeline import config as data_config
from data_pipeline import records
from data_pipeline import tokenization
from hybrid_jax import config as config_lib
from hybrid_jax import embedding
from hybrid_jax import environment
from hybrid_jax import pretrained
from hybrid_jax import runtime
from hybrid_jax import sharding
from hybrid_jax.evaluation import protocol
from hybrid_jax.evaluation import results
from hybrid_jax.evaluation import stopwatch as stopwatch_lib

EVAL_DIR = "eval"


def result_name(spec: data_config.DatasetSpec) -> str:
  """File name stem of a data set's results: `xquad_r`, `xquad_r-test`."""
  return spec.name if spec.split == "all" else f"{spec.name}-{spec.split}"


def eval_specs(cfg: config_lib.ExperimentConfig
               ) -> tuple[data_config.DatasetSpec, ...]:
  """The evaluation sets, restricted to `eval.languages` (each keeps those
  it has); raises if a language is in none of them or a set keeps none."""
  if not cfg.data.eval:
    raise ValueError("data.eval names no evaluation set: set e.g. "
                     "--config.data.eval=xquad_r,mlqa_r.")
  wanted = cfg.eval.languages
  specs = []
  for spec in cfg.data.eval:
    keep = tuple(l for l in spec.all_languages if not wanted or l in wanted)
    if not keep:
      raise ValueError(
          f"eval.languages={list(wanted)} leaves no language of {spec} "
          f"(it has {list(spec.all_languages)}): drop {spec} from data.eval "
          "or add one of its languages.")
    specs.append(dataclasses.replace(spec, languages=keep))
  unknown = sorted(set(wanted) - {l for s in specs for l in s.languages})
  if unknown:
    raise ValueError(
        f"eval.languages names {unknown}, which no evaluation set has "
        f"({', '.join(f'{s.name}: {list(s.all_languages)}' for s in cfg.data.eval)}).")
  return tuple(specs)


def load_datasets(cfg: config_lib.ExperimentConfig
                  ) -> dict[str, records.RetrievalDataset]:
  """The evaluation sets by result name."""
  datasets = {result_name(spec): loading.load(spec, cfg.data).dataset
              for spec in eval_specs(cfg)}
  for dataset in datasets.values():
    protocol.check_dataset(dataset)
  return datasets


def encode(model: pretrained.LoadedModel, mesh: jax.sharding.Mesh,
           dataset: records.RetrievalDataset,
           cfg: config_lib.ExperimentConfig) -> protocol.Embeddings:
  """Embeddings of every question (query tower) and candidate (passage
  tower), tokenized through the cache, in length-bucketed sharded batches."""
  tokens = tokenization.tokenize_dataset(
      dataset, model.tokenizer, max_query_length=cfg.eval.max_query_length,
      max_passage_length=cfg.eval.max_candidate_length,
      query_prefix=cfg.data.query_prefix,
      passage_prefix=cfg.data.passage_prefix,
      cache_dir=tokenization.resolve_cache_dir(cfg.data.cache_dir))
  queries = embedding.embed_token_arrays(model, mesh, tokens.queries, "query",
                                         cfg.eval.batch_size)
  candidates = embedding.embed_token_arrays(model, mesh, tokens.passages,
                                            "passage", cfg.eval.batch_size)

  def split(rows, offsets, sizes):
    return {l: rows[offsets[l]:offsets[l] + sizes[l]] for l in offsets}

  for kind, rows in (("question", queries), ("candidate", candidates)):
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
      raise FloatingPointError(
          f"{int(bad.sum())} {kind} embeddings of {dataset.name} are NaN or "
          f"infinite (model.init={cfg.model.init}, dtype {cfg.model.dtype}): "
          "the weights are broken or overflow; try model.dtype=float32.")

  langs = dataset.languages
  return protocol.Embeddings(
      queries=split(queries, tokens.query_offsets,
                    {l: len(dataset.records[l]) for l in langs}),
      candidates=split(candidates, tokens.passage_offsets,
                       {l: len(dataset.candidates[l]) for l in langs}))


def settings(cfg: config_lib.ExperimentConfig,
             dataset: records.RetrievalDataset,
             step: int | None) -> dict[str, Any]:
  """Everything the results of `dataset` depend on: the model (`model.init`
  and, for a training run, its `step`) and the protocol's settings."""
  return {
      "dataset": dataset.name, "languages": list(dataset.languages),
      "num_queries": dataset.num_questions,
      "num_candidates": dataset.num_candidates,
      "train_fraction": cfg.data.train_fraction,
      "model": cfg.model.init, "step": step,
      "model_settings": dataclasses.asdict(cfg.model),
      "seed": cfg.seed if cfg.model.init == "random" else None,
      "query_prefix": cfg.data.query_prefix,
      "passage_prefix": cfg.data.passage_prefix,
      "max_query_length": cfg.eval.max_query_length,
      "max_candidate_length": cfg.eval.max_candidate_length,
      "index": cfg.eval.index, "num_leaves": cfg.eval.num_leaves,
      "leaves_to_search": cfg.eval.leaves_to_search,
      "reorder": cfg.eval.reorder, "cutoff": protocol.CUTOFF,
  }


def evaluate_dataset(model: pretrained.LoadedModel, mesh: jax.sharding.Mesh,
                     dataset: records.RetrievalDataset,
                     cfg: config_lib.ExperimentConfig,
                     setup: dict[str, Any]
                     ) -> tuple[dict[str, Any], protocol.ProtocolScores,
                                protocol.Embeddings]:
  """(summary, per-query scores, embeddings) of one data set, timing every
  stage."""
  watch = stopwatch_lib.Stopwatch()
  with watch("encode"):
    embeddings = encode(model, mesh, dataset, cfg)
  scores = protocol.run(dataset, embeddings, cfg.eval, mesh, watch)
  summary = results.summarize(scores)
  summary["index"] = {"kind": cfg.eval.index, **summary["index"]}
  return ({"settings": setup, **summary, "seconds": watch.rounded(),
           "environment": environment.describe()}, scores, embeddings)


def _fmt(value: float | None, spec: str = ".4f") -> str:
  return "n/a" if value is None else format(value, spec)


def headline(name: str, result: dict[str, Any]) -> str:
  """One line: the macro mAPs, rank distance, index recall and times."""
  return (f"{name}: mono mAP {_fmt(result['mono']['map'])}, cross mAP "
          f"{_fmt(result['cross']['map'])}, multi mAP "
          f"{_fmt(result['multi']['map'])}, rank distance "
          f"{_fmt(result['rank_distance']['mean'], '.1f')}, index recall@10 "
          f"{_fmt(result['index']['recall_vs_exact'])}; seconds "
          f"{result['seconds']}")


def evaluate_model(load: Callable[[], pretrained.LoadedModel],
                   mesh: jax.sharding.Mesh, cfg: config_lib.ExperimentConfig,
                   datasets: dict[str, records.RetrievalDataset],
                   directory: epath.Path,
                   step: int | None = None) -> dict[str, dict[str, Any]]:
  """Evaluates a model on every data set, writing into `directory`.

  Args:
    load: returns the model; called only if some data set lacks results.
    mesh: the device mesh of the model.
    cfg: the settings (`model.init` names the model in the results).
    datasets: by result name (see `load_datasets`).
    directory: where the result files go.
    step: the training step of the weights, if they come from a run.
  """
  out, model = {}, None
  for name, dataset in datasets.items():
    setup = settings(cfg, dataset, step)
    found = results.read_existing(directory, name, setup)
    if found is not None:
      runtime.say(f"{results.paths(directory, name)['json']} exists: kept "
                  "(move it away to evaluate again).")
      out[name] = found
      continue
    if model is None:
      model = load()
      pretrained.check_lengths(
          model, **{"eval.max_query_length": cfg.eval.max_query_length,
                    "eval.max_candidate_length": cfg.eval.max_candidate_length})
    result, scores, embeddings = evaluate_dataset(model, mesh, dataset, cfg,
                                                  setup)
    result = {"dataset": name, **result}
    if jax.process_index() == 0:
      results.write(directory, name, result, scores,
                    embeddings if cfg.eval.save_embeddings else None)
    runtime.say(headline(name, result))
    out[name] = result
  return out


def _loader(cfg: config_lib.ExperimentConfig, mesh: jax.sharding.Mesh
            ) -> Callable[[], pretrained.LoadedModel]:
  """Loads `cfg.model` onto `mesh` when called (see `evaluate_model`)."""
  return lambda: pretrained.load_model(
      cfg.model, mesh, cfg.seed,
      tokenization.resolve_cache_dir(cfg.data.cache_dir))


def evaluate_run(cfg: config_lib.ExperimentConfig, directory: epath.Path,
                 mesh: jax.sharding.Mesh) -> dict[str, dict[str, Any]]:
  """Evaluates the newest checkpoint of the training run in `directory`
  into `<directory>/eval/` (nothing to do if the results exist)."""
  if not cfg.data.eval:
    return {}
  _, step = pretrained.trained_checkpoint(f"run:{directory}")
  # The results name the checkpoint, as an eval-only job on it would.
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(
      cfg.model, init=pretrained.checkpoint_init(directory, step)))
  return evaluate_model(_loader(cfg, mesh), mesh, cfg, load_datasets(cfg),
                        directory / EVAL_DIR, step)


def run(cfg: config_lib.ExperimentConfig,
        workdir: epath.Path) -> dict[str, dict[str, Any]]:
  """The eval-only job: `model.init` on `data.eval`, into `workdir/eval/`.

  With model.init="run:<dir>", the run's own model settings and prefixes
  are used, and the results name the checkpoint's step.
  """
  step = None
  if cfg.model.init.startswith("run:"):
    run_dir, step = pretrained.trained_checkpoint(cfg.model.init)
    trained = pretrained.run_config(cfg.model.init)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(
            trained.model, init=pretrained.checkpoint_init(run_dir, step)),
        data=dataclasses.replace(
            cfg.data, query_prefix=trained.data.query_prefix,
            passage_prefix=trained.data.passage_prefix))
  datasets = load_datasets(cfg)  # Bad data fails before the model loads.
  mesh = sharding.make_mesh(cfg.mesh)
  return evaluate_model(_loader(cfg, mesh), mesh, cfg, datasets,
                        epath.Path(workdir) / EVAL_DIR, step)
