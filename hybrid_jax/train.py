r"""Trains one run: the dual encoder on hybrid batches at one ratio and seed.

  python -m hybrid_jax.main --config=configs/ratio_sweep.py:smoke \
      --config.job=train --workdir=/tmp/hybrid --config.data.ratio=0.25

The run lives in `<workdir>/ratio_<alpha>_seed_<seed>/`: config.json,
environment.jsonl (what each start or resumption ran on), metrics.jsonl,
TensorBoard events, orbax checkpoints (train state and data-iterator state)
and, with `eval.every`, evaluations of intermediate steps in
`eval/step_<n>/`. Starting a run whose directory has a checkpoint
resumes from it; the result equals an uninterrupted run. A finished run is
never trained again.
"""

import dataclasses
import functools
import math

from absl import logging
from etils import epath
import jax
import numpy as np
from flax import nnx

from data_pipeline import config as data_config
from data_pipeline import pipeline as pipeline_lib
from data_pipeline import tokenization
from hybrid_jax import checkpointing
from hybrid_jax import config as config_lib
from hybrid_jax import environment
from hybrid_jax import host_memory
from hybrid_jax import metrics as metrics_lib
from hybrid_jax import optimizer
from hybrid_jax import pretrained
from hybrid_jax import run_directory
from hybrid_jax import runtime
from hybrid_jax import sharding
from hybrid_jax import train_state as train_state_lib
from hybrid_jax import training_step
from hybrid_jax.evaluation import evaluate

# Batch fields the model consumes (the others stay on the host).
MODEL_INPUTS = ("query_ids", "query_mask", "passage_ids", "passage_mask",
                "negative_ids", "negative_mask", "has_negative", "passage_row",
                "negative_row")


@dataclasses.dataclass(frozen=True)
class RunResult:
  """Where a run lives and how far it got."""
  directory: epath.Path
  step: int
  metrics: dict[str, float]  # Of the last step trained in this call.


def check_batch(cfg: data_config.DataConfig, mesh: jax.sharding.Mesh) -> None:
  """Raises if the global batch does not split over the mesh's batch axes."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if cfg.batch_size % shards:
    raise ValueError(
        f"data.batch_size={cfg.batch_size} does not divide over the "
        f"{shards} batch shards of the mesh {dict(mesh.shape)} (data x "
        f"fsdp): use a multiple of {shards}.")


def batch_shardings(cfg: data_config.DataConfig, mesh: jax.sharding.Mesh
                    ) -> dict[str, jax.sharding.NamedSharding]:
  """The sharding of each model input: split over the batch shards."""
  names = MODEL_INPUTS if cfg.hard_negatives else MODEL_INPUTS[:4]  # No rows.
  return {name: jax.NamedSharding(mesh, sharding.logical_to_spec(
      ("act_batch", None) if name.endswith(("_ids", "_mask"))
      else ("act_batch",))) for name in names}


def process_pipeline(cfg: data_config.DataConfig,
                     tokenizer: tokenization.Tokenizer,
                     mesh: jax.sharding.Mesh) -> pipeline_lib.TrainPipeline:
  """The training batches of this process: the rows of every global batch
  that its devices hold (see `sharding.process_rows`)."""
  rows = sharding.process_rows(batch_shardings(cfg, mesh)["query_ids"],
                               cfg.batch_size)
  return pipeline_lib.build_train_pipeline(cfg, tokenizer, rows=rows)


def global_batch(local: dict[str, np.ndarray],
                 shardings: dict[str, jax.sharding.NamedSharding],
                 batch_size: int) -> dict[str, jax.Array]:
  """This process's rows of the batch -> global arrays of `batch_size`."""
  return {name: jax.make_array_from_process_local_data(
      s, local[name], (batch_size,) + local[name].shape[1:])
          for name, s in shardings.items()}


def host_temporaries(compiled: jax.stages.Compiled) -> int:
  """Bytes of host memory the temporaries of `compiled` take, as one block
  `host_memory.room_for` can place: its temporary allocation on one CPU
  device; 0 elsewhere (device memory) and over several CPU devices
  (dispatched asynchronously, a block each)."""
  devices = set().union(*(leaf.device_set for leaf in jax.tree.leaves(
      compiled.input_shardings)))
  if jax.default_backend() != "cpu" or len(devices) > 1:
    return 0
  analysis = compiled.memory_analysis()
  return analysis.temp_size_in_bytes if analysis else 0


def _check_finite(step: int, scalars: dict[str, float],
                  checkpoints: checkpointing.Checkpoints) -> None:
  bad = {k: scalars[k] for k in ("loss", "grad_norm")
         if not math.isfinite(scalars[k])}
  if bad:
    raise FloatingPointError(
        f"Training diverged at step {step}: {bad}. The run stopped before "
        f"saving this state; its checkpoints in {checkpoints.directory} "
        f"(latest: {checkpoints.latest_step() or 'none'}) are kept. Try a "
        "lower train.learning_rate in a new --workdir.")


def _restore(checkpoints: checkpointing.Checkpoints, step: int,
             state: train_state_lib.TrainState) -> train_state_lib.TrainState:
  """The state of checkpoint `step`, in the shardings of `state`."""
  restored, data_state = checkpoints.restore(
      step, train_state_lib.abstract(state))
  if int(data_state["step"]) != step or int(restored.step) != step:
    raise checkpointing.CheckpointError(
        f"Checkpoint {checkpoints.directory / str(step)} is inconsistent: "
        f"data step {data_state['step']}, train step {int(restored.step)}. "
        "Move it away to resume from an older checkpoint.")
  return restored


def _intermediate_evaluation(cfg: config_lib.ExperimentConfig,
                             loaded: pretrained.LoadedModel,
                             mesh: jax.sharding.Mesh, directory: epath.Path):
  """`(step, state) -> None` evaluating the state in memory into
  `eval/step_<step>/`, or None without `eval.every` or evaluation sets."""
  if not (cfg.eval.every and cfg.data.eval):
    return None
  datasets = evaluate.load_datasets(cfg)

  def evaluate_step(step: int, state: train_state_lib.TrainState) -> None:
    params = nnx.State.merge(state.params["encoder"], state.frozen)
    evaluate.evaluate_model(
        lambda: dataclasses.replace(loaded, params=params), mesh, cfg,
        datasets, directory / evaluate.EVAL_DIR / f"step_{step}", step)

  return evaluate_step


def _train(cfg: config_lib.ExperimentConfig, directory: epath.Path,
           mesh: jax.sharding.Mesh, checkpoints: checkpointing.Checkpoints,
           start: int) -> RunResult:
  """Trains from step `start` (a checkpoint, or 0) to the end."""
  loaded = pretrained.load_model(
      cfg.model, mesh, cfg.seed,
      tokenization.resolve_cache_dir(cfg.data.cache_dir))
  budgets = {"data.max_query_length": cfg.data.max_query_length,
             "data.max_passage_length": cfg.data.max_passage_length}
  if cfg.data.eval:  # Evaluation comes after training: check it now.
    budgets.update({"eval.max_query_length": cfg.eval.max_query_length,
                    "eval.max_candidate_length": cfg.eval.max_candidate_length})
  pretrained.check_lengths(loaded, **budgets)
  train_data = process_pipeline(cfg.data, loaded.tokenizer, mesh)
  tx, schedule = optimizer.make_optimizer(cfg.train)
  state = train_state_lib.create(loaded.params, cfg.train, tx, mesh)
  # Keep the structure, free the pretrained arrays.
  loaded = dataclasses.replace(loaded, params=None)
  graphdef = loaded.graphdef
  evaluate_step = _intermediate_evaluation(cfg, loaded, mesh, directory)
  if start:
    state = _restore(checkpoints, start, state)
    runtime.say(f"Resuming {directory} from step {start}.")
  if jax.process_index() == 0:
    if not start:
      run_directory.write_config(directory, cfg)
    environment.record_start(directory / run_directory.ENVIRONMENT_FILE,
                             start)

  inputs = batch_shardings(cfg.data, mesh)
  state_shardings = train_state_lib.shardings(state)
  step_fn = jax.jit(
      functools.partial(training_step.train_step, graphdef=graphdef, tx=tx,
                        schedule=schedule, cfg=cfg.train, seed=cfg.seed),
      in_shardings=(state_shardings, inputs),
      out_shardings=(state_shardings, None), donate_argnums=0)
  writer = metrics_lib.MetricWriter(
      directory, start_step=start, num_steps=cfg.train.num_steps,
      enabled=jax.process_index() == 0)
  batches = train_data.iterator(start)
  scalars = {}
  compiled, temporaries = None, 0  # Compiled for the first batch's shapes.
  try:
    with sharding.use_mesh(mesh):
      for step in range(start + 1, cfg.train.num_steps + 1):
        batch = global_batch(next(batches), inputs, cfg.data.batch_size)
        if compiled is None:
          compiled = step_fn.lower(state, batch).compile()
          temporaries = host_temporaries(compiled)
        with host_memory.room_for(temporaries) as given_back:
          state, step_metrics = compiled(state, batch)
        if given_back:
          logging.info("Step %d: %.1f MiB of freed host memory given back.",
                       step, given_back / 2**20)
        scalars = {k: float(v)
                   for k, v in jax.device_get(step_metrics).items()}
        _check_finite(step, scalars, checkpoints)
        writer.write(step, scalars)
        if step % cfg.train.log_every == 0 or step == cfg.train.num_steps:
          writer.progress(step, scalars)
        last = step == cfg.train.num_steps
        if last or checkpoints.due(step):
          writer.flush()  # A checkpoint's metrics are written before it.
          checkpoints.save(step, state, batches.state(), force=last)
        if evaluate_step and step % cfg.eval.every == 0 and (
            step < cfg.train.num_steps):
          evaluate_step(step, state)
          writer.pause_timing(step)
  finally:
    writer.close()
  return RunResult(directory, cfg.train.num_steps, scalars)


def run(cfg: config_lib.ExperimentConfig, workdir: epath.Path) -> RunResult:
  """Trains, resumes, or finds finished the run of `cfg` in `workdir`.

  Everything that can be checked is checked before the run directory is
  touched; a directory holding another run's checkpoints is left as is.
  """
  mesh = sharding.make_mesh(cfg.mesh)
  check_batch(cfg.data, mesh)
  directory = run_directory.path(workdir, cfg)
  if jax.process_index() == 0:
    run_directory.check_writable(directory)
  checkpoints = checkpointing.Checkpoints(
      directory / "checkpoints", every=cfg.train.checkpoint_every,
      keep=cfg.train.keep_checkpoints,
      asynchronous=cfg.train.async_checkpoints)
  try:
    start = checkpoints.latest_step() or 0
    if start:
      run_directory.check_same_run(directory, cfg)
    if start >= cfg.train.num_steps:
      runtime.say(f"{directory} is finished (step {start}).")
      return RunResult(directory, start, {})
    result = _train(cfg, directory, mesh, checkpoints, start)
  finally:
    checkpoints.close()
  # What follows (evaluation) reuses at most part of the step's freed block.
  given_back = host_memory.give_back_freed_memory()
  if given_back:
    logging.info("Training done: %.1f MiB of freed host memory given back.",
                 given_back / 2**20)
  return result
