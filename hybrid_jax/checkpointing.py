"""Orbax checkpoints of a run: the train state and the data-iterator state.

The only module that imports orbax. Saves are asynchronous (by
default), every `checkpoint_every` steps and at the end, keeping the newest
`keep_checkpoints`. Orbax writes a step into a temporary directory and
renames it when complete, so a preempted save never looks finished.
"""

import pathlib
from typing import Any

import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


class Checkpoints:
  """The checkpoints of one run directory."""

  def __init__(self, directory: pathlib.Path, *, every: int, keep: int,
               asynchronous: bool = True):
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
                every),
            max_to_keep=keep, create=True,
            enable_async_checkpointing=asynchronous),
        item_names=("state", "data"))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

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
