r"""Trains one run: the dual encoder on hybrid batches at one ratio and seed.

  python -m hybrid_jax.train --config=configs/ratio_sweep.py:smoke \
      --workdir=/tmp/hybrid --config.data.ratio=0.25

The run lives in `<workdir>/ratio_<alpha>_seed_<seed>/`: config.json,
metrics.jsonl, TensorBoard events and orbax checkpoints (train state and
data-iterator state). Starting a run whose directory has a checkpoint
resumes from it; the result equals an uninterrupted run. A finished run is
never trained again.
"""

import dataclasses
import functools
import json
import math
import pathlib
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from ml_collections import config_flags

from data_pipeline import config as data_config
from data_pipeline import pipeline as pipeline_lib
from data_pipeline import tokenization
from hybrid_jax import checkpointing
from hybrid_jax import config as config_lib
from hybrid_jax import losses
from hybrid_jax import metrics as metrics_lib
from hybrid_jax import optimizer
from hybrid_jax import pretrained
from hybrid_jax import sharding
from hybrid_jax import train_state as train_state_lib

# Batch fields the model consumes (the others stay on the host).
MODEL_INPUTS = ("query_ids", "query_mask", "passage_ids", "passage_mask",
                "negative_ids", "negative_mask", "has_negative")
# Settings that may change between a run and its resumption.
_RESUMABLE_CHANGES = ("mesh", "sweep", "distributed")


@dataclasses.dataclass(frozen=True)
class RunResult:
  """Where a run lives and how far it got."""
  directory: pathlib.Path
  step: int
  metrics: dict[str, float]  # Of the last step trained in this call.


def run_directory(workdir: pathlib.Path,
                  cfg: config_lib.ExperimentConfig) -> pathlib.Path:
  """The directory of the run of `cfg` (one per ratio and seed)."""
  return pathlib.Path(workdir) / f"ratio_{cfg.data.ratio:.3f}_seed_{cfg.seed}"


def _config_json(cfg: config_lib.ExperimentConfig) -> dict[str, Any]:
  return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def prepare_run_directory(directory: pathlib.Path,
                          cfg: config_lib.ExperimentConfig) -> None:
  """Creates the run directory, or checks that it belongs to `cfg`.

  Raises:
    PermissionError: the directory cannot be written.
    ValueError: it holds a run of another config (results are kept).
  """
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / ".writable"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise PermissionError(
        f"Cannot write the run directory {directory} ({e}); choose a "
        "writable --workdir.") from e
  file = directory / "config.json"
  wanted = _config_json(cfg)
  if file.exists():
    found = json.loads(file.read_text())
    differ = sorted(k for k in wanted if k not in _RESUMABLE_CHANGES
                    and found.get(k) != wanted[k])
    if differ:
      raise ValueError(
          f"{directory} holds a run of a different config (sections "
          f"{differ} differ from {file}). Its results are kept; use another "
          "--workdir to train this config.")
  if jax.process_index() == 0:
    file.write_text(json.dumps(wanted, indent=1) + "\n")


def check_compatible(cfg: config_lib.ExperimentConfig,
                     mesh: jax.sharding.Mesh,
                     max_length: int) -> None:
  """Raises if the batch or the token lengths do not fit mesh and model."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if cfg.data.batch_size % shards:
    raise ValueError(
        f"data.batch_size={cfg.data.batch_size} does not divide over the "
        f"{shards} batch shards of the mesh {dict(mesh.shape)} (data x "
        f"fsdp): use a multiple of {shards}.")
  longest = max(cfg.data.max_query_length, cfg.data.max_passage_length)
  if longest > max_length:
    raise ValueError(
        f"data.max_query_length / max_passage_length ({longest}) exceed the "
        f"model's {max_length} positions: lower them.")


def compute_loss(params: dict, frozen: nnx.State, batch: dict[str, jax.Array],
                 *, graphdef: nnx.GraphDef, cfg: config_lib.TrainConfig,
                 dropout_key: jax.Array | None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The InfoNCE loss of a batch (and its statistics) for `params`.

  Args:
    params: the trained parameters (see `TrainState.params`).
    frozen: the untrained encoder parameters.
    batch: the model inputs (`MODEL_INPUTS`) of the global batch.
    graphdef: the model structure.
    cfg: loss settings.
    dropout_key: dropout randomness; None: no dropout.
  """
  model = nnx.merge(graphdef, nnx.State.merge(params["encoder"], frozen))
  rngs = None if dropout_key is None else nnx.Rngs(dropout=dropout_key)
  with_negatives = "negative_ids" in batch
  batch_size = batch["query_ids"].shape[0]
  queries = model.encode_query(batch["query_ids"], batch["query_mask"], rngs)
  ids, mask = batch["passage_ids"], batch["passage_mask"]
  if with_negatives:  # Positives and hard negatives in one pass.
    ids = jnp.concatenate([ids, batch["negative_ids"]])
    mask = jnp.concatenate([mask, batch["negative_mask"]])
  passages = model.encode_passage(ids, mask, rngs)
  temperature = (jnp.exp(params["log_temperature"])
                 if "log_temperature" in params else cfg.temperature)
  loss, stats = losses.contrastive_loss(
      queries, passages[:batch_size],
      passages[batch_size:] if with_negatives else None,
      batch.get("has_negative"), temperature=temperature,
      symmetric=cfg.symmetric)
  return loss, {**stats, "temperature": temperature}


def train_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
               *, graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               schedule: optax.Schedule, cfg: config_lib.TrainConfig,
               seed: int) -> tuple[train_state_lib.TrainState,
                                   dict[str, jax.Array]]:
  """One optimiser step on one global batch (pure; jit it).

  Dropout draws from fold_in(seed, step), so a step's randomness depends
  only on the seed and the step: resumed runs repeat it exactly.
  """
  loss_fn = functools.partial(
      compute_loss, frozen=state.frozen, batch=batch, graphdef=graphdef,
      cfg=cfg, dropout_key=jax.random.fold_in(jax.random.PRNGKey(seed),
                                              state.step))
  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1,
                            params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
  return new_state, {
      **stats, "loss": loss, "grad_norm": optax.global_norm(grads),
      "learning_rate": schedule(state.step // cfg.grad_accum_steps)}


def batch_shardings(cfg: data_config.DataConfig, mesh: jax.sharding.Mesh
                    ) -> dict[str, jax.sharding.NamedSharding]:
  """The sharding of each model input: split over the batch shards."""
  names = MODEL_INPUTS if cfg.hard_negatives else MODEL_INPUTS[:4]
  return {name: jax.NamedSharding(mesh, sharding.logical_to_spec(
      ("act_batch", None) if name.endswith(("_ids", "_mask"))
      else ("act_batch",))) for name in names}


def _global_batch(local: dict[str, np.ndarray],
                  shardings: dict[str, jax.sharding.NamedSharding]):
  """This process's slice of the batch -> global arrays."""
  return {name: jax.make_array_from_process_local_data(s, local[name])
          for name, s in shardings.items()}


def _check_finite(step: int, scalars: dict[str, float],
                  checkpoints: checkpointing.Checkpoints) -> None:
  bad = {k: scalars[k] for k in ("loss", "grad_norm")
         if not math.isfinite(scalars[k])}
  if bad:
    raise FloatingPointError(
        f"Training diverged at step {step}: {bad}. The run stopped before "
        f"saving this state; its last good checkpoint (step "
        f"{checkpoints.latest_step()}) in {checkpoints.directory} is kept. "
        "Lower train.learning_rate or raise train.temperature.")


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


def _train(cfg: config_lib.ExperimentConfig, directory: pathlib.Path,
           checkpoints: checkpointing.Checkpoints, start: int) -> RunResult:
  """Trains from step `start` (a checkpoint, or 0) to the end."""
  mesh = sharding.make_mesh(cfg.mesh)
  loaded = pretrained.load_model(
      cfg.model, mesh, cfg.seed,
      tokenization.resolve_cache_dir(cfg.data.cache_dir))
  check_compatible(cfg, mesh, loaded.config.encoder.max_length)
  train_data = pipeline_lib.build_train_pipeline(
      cfg.data, loaded.tokenizer, process_index=jax.process_index(),
      process_count=jax.process_count())
  tx = optimizer.make_optimizer(cfg.train)
  state = train_state_lib.create(loaded, cfg.train, tx, mesh)
  if start:
    state = _restore(checkpoints, start, state)
    print(f"Resuming {directory} from step {start}.", flush=True)

  inputs = batch_shardings(cfg.data, mesh)
  state_shardings = train_state_lib.shardings(state)
  step_fn = jax.jit(
      functools.partial(train_step, graphdef=loaded.graphdef, tx=tx,
                        schedule=optimizer.learning_rate_schedule(cfg.train),
                        cfg=cfg.train, seed=cfg.seed),
      in_shardings=(state_shardings, inputs),
      out_shardings=(state_shardings, None), donate_argnums=0)
  writer = metrics_lib.MetricWriter(
      directory, start_step=start, num_steps=cfg.train.num_steps,
      enabled=jax.process_index() == 0)
  batches = train_data.iterator(start)
  scalars = {}
  try:
    with sharding.use_mesh(mesh):
      for step in range(start + 1, cfg.train.num_steps + 1):
        state, step_metrics = step_fn(state,
                                      _global_batch(next(batches), inputs))
        scalars = {k: float(v)
                   for k, v in jax.device_get(step_metrics).items()}
        _check_finite(step, scalars, checkpoints)
        writer.write(step, scalars)
        if step % cfg.train.log_every == 0 or step == cfg.train.num_steps:
          writer.progress(step, scalars)
        checkpoints.save(step, state, batches.state(),
                         force=step == cfg.train.num_steps)
  finally:
    writer.close()
  return RunResult(directory, cfg.train.num_steps, scalars)


def run(cfg: config_lib.ExperimentConfig, workdir: pathlib.Path) -> RunResult:
  """Trains, resumes, or finds finished the run of `cfg` in `workdir`."""
  directory = run_directory(workdir, cfg)
  prepare_run_directory(directory, cfg)
  checkpoints = checkpointing.Checkpoints(
      directory / "checkpoints", every=cfg.train.checkpoint_every,
      keep=cfg.train.keep_checkpoints)
  try:
    start = checkpoints.latest_step() or 0
    if start >= cfg.train.num_steps:
      print(f"{directory} is finished (step {start}).", flush=True)
      return RunResult(directory, start, {})
    return _train(cfg, directory, checkpoints, start)
  finally:
    checkpoints.close()


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:preset].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where runs are written.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  cfg = config_lib.from_config_dict(_CONFIG.value)
  if cfg.distributed:
    jax.distributed.initialize()
  result = run(cfg, pathlib.Path(_WORKDIR.value))
  print(json.dumps({"run": str(result.directory), "step": result.step,
                    **result.metrics}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
