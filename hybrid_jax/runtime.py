"""Process-wide matters: joining the other processes, TensorFlow, output.

A multi-process run (a Cloud TPU pod slice, a multi-node GPU job, or several
CPU processes) starts the same command in every process. With
`distributed.initialize`, each process calls `jax.distributed.initialize()`
before touching a device. The coordinator address, process count and process
id come from the config, else from the environment (`JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`), else JAX detects them (Cloud TPU,
SLURM, Open MPI). CPU processes exchange data through gloo collectives.
Only process 0 prints (`say`).
"""

import dataclasses
import os

from absl import logging
import jax


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins a multi-process run.

  Attributes:
    initialize: call `jax.distributed.initialize()`; False: one process.
    coordinator_address: "host:port" of process 0's coordinator, the same in
      every process. Empty: $JAX_COORDINATOR_ADDRESS, else auto-detected.
    num_processes: processes in the run; -1: $JAX_NUM_PROCESSES, else
      auto-detected.
    process_id: this process, in [0, num_processes); -1: $JAX_PROCESS_ID,
      else auto-detected.
  """
  initialize: bool = False
  coordinator_address: str = ""
  num_processes: int = -1
  process_id: int = -1

  def __post_init__(self):
    if self.num_processes == 0 or self.num_processes < -1:
      raise ValueError(
          f"distributed.num_processes={self.num_processes}: use a positive "
          "count, or -1 to read it from $JAX_NUM_PROCESSES / the cluster.")
    if self.process_id < -1 or (
        self.num_processes > 0 and self.process_id >= self.num_processes):
      bound = self.num_processes if self.num_processes > 0 else (
          "num_processes")
      raise ValueError(
          f"distributed.process_id={self.process_id} is outside [0, "
          f"{bound}): give each process its own id below the "
          "process count (-1: from $JAX_PROCESS_ID / the cluster).")


def _from_environment(value: int, variable: str) -> int | None:
  """`value`, else the integer in $`variable`, else None (auto-detect)."""
  if value != -1:
    return value
  text = os.environ.get(variable)
  if text is None:
    return None
  try:
    return int(text)
  except ValueError as e:
    raise ValueError(f"${variable}={text!r} is not an integer.") from e


def initialize_arguments(cfg: DistributedConfig) -> dict:
  """The arguments of `jax.distributed.initialize` for `cfg` (None: JAX
  reads or detects them)."""
  return {"coordinator_address": cfg.coordinator_address or None,
          "num_processes": _from_environment(cfg.num_processes,
                                             "JAX_NUM_PROCESSES"),
          "process_id": _from_environment(cfg.process_id, "JAX_PROCESS_ID")}


def setup(cfg: DistributedConfig) -> None:
  """Prepares this process for a run.

  Joins the other processes (with `cfg.initialize`; all but process 0 then
  log errors only) and keeps TensorFlow (used for tf.data only) off
  accelerators.
  """
  if cfg.initialize:
    # CPU collectives (the default in recent JAX; not in all it accepts).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**initialize_arguments(cfg))
    if jax.process_index() != 0:
      logging.set_verbosity(logging.ERROR)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")


def say(message: str) -> None:
  """Prints `message` on process 0 only (the others stay quiet)."""
  if jax.process_index() == 0:
    print(message, flush=True)
