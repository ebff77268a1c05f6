"""Orbax checkpoints of a run: the train state and the data-iterator state.

The only module that imports orbax. Saves are asynchronous (by
default), every `checkpoint_every` steps and at the end, keeping the newest
`keep_checkpoints`. Orbax writes a step into a temporary directory and
renames it when complete, so a preempted save never looks finished.
Orbax needs absolute paths or cloud URIs (`files.as_path`).
"""

from typing import Any

from etils import epath
import jax
import orbax.checkpoint as ocp

from hybrid_jax import files


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


def restore_part(directory: epath.Path, step: int, target: Any) -> Any:
  """Some fields of a saved train state, e.g. only the parameters.

  Args:
    directory: a run's checkpoint directory.
    step: the checkpoint.
    target: a dict naming the wanted fields of the state, as
      ShapeDtypeStructs with shardings (the rest is not read).
  """
  path = files.as_path(directory) / str(step) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        target, restore_args=jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target),
        partial_restore=True))
  except Exception as e:  # Orbax/TensorStore raise many types.
    raise CheckpointError(
        f"Checkpoint {path} cannot be restored ({type(e).__name__}: "
        f"{str(e)[:300]}). It does not match the model its run's "
        "config.json describes, or it is damaged. Nothing was changed: "
        "check that run's config.json, or use another of its checkpoints "
        "(run:<run dir>/checkpoints/<step>).") from e
  finally:
    checkpointer.close()


def complete_steps(directory: epath.Path) -> list[int]:
  """The steps of the finished checkpoints in `directory`, ascending."""
  if not directory.is_dir():
    return []
  manager = ocp.CheckpointManager(
      files.as_path(directory),
      options=ocp.CheckpointManagerOptions(create=False))
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


class Checkpoints:
  """The checkpoints of one run directory."""

  def __init__(self, directory: epath.Path, *, every: int, keep: int,
               asynchronous: bool = True):
    self.directory = files.as_path(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
                every),
            max_to_keep=keep, create=True,
            enable_async_checkpointing=asynchronous),
        item_names=("state", "data"))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def due(self, step: int) -> bool:
    """Whether `save` at `step` writes a checkpoint (without `force`)."""
    return self._manager.should_save(step)

  def save(self, step: int, state: Any, data_state: dict[str, int], *,
           force: bool = False) -> bool:
    """Starts saving (asynchronously) if `step` is due or `force`."""
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state)), force=force)

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, int]]:
    """(state, data-iterator state) of checkpoint `step`.

    Args:
      step: the checkpoint.
      target: the state's structure as ShapeDtypeStructs with shardings;
        arrays are restored into these shardings, so the mesh may differ
        from the one that saved them.

    Raises:
      CheckpointError: the checkpoint is corrupt, truncated or does not
        match this run's model; nothing is deleted.
    """
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax/TensorStore raise many types.
      raise CheckpointError(
          f"Checkpoint {self.directory / str(step)} cannot be restored "
          f"({type(e).__name__}: {str(e)[:300]}). It is corrupt, truncated, "
          "or from a different model. Nothing was deleted: move that step "
          "directory away to resume from an older checkpoint, or use a new "
          "--workdir.") from e
    return restored.state, restored.data

  def close(self) -> None:
    """Waits for pending saves to finish."""
    self._manager.wait_until_finished()
    self._manager.close()
