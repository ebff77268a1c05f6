"""The directory of one run: its name, writability, and its config.json.

A run directory belongs to one config: resuming it with settings that change
results (the data, model, loss, optimiser, seed) is refused, so finished or
partial results are never mixed up or overwritten. Settings that only change
how a run executes (mesh, logging, checkpoint cadence, paths) may differ.
"""

import dataclasses
import json
import uuid
from typing import Any

from etils import epath

from hybrid_jax import config as config_lib
from hybrid_jax import files

# Settings (dotted keys, or whole sections) that may change between a run
# and its resumption.
EXECUTION_SETTINGS = ("job", "mesh", "eval", "sweep", "distributed",
                      "train.log_every",
                      "train.checkpoint_every", "train.keep_checkpoints",
                      "train.async_checkpoints",
                      "data.root", "data.cache_dir", "data.source")
CONFIG_FILE = "config.json"
# Where each start and resumption of a run was trained (environment.py).
ENVIRONMENT_FILE = "environment.jsonl"
# A sweep's zero-shot evaluation of model.init: <workdir>/baseline/eval/.
BASELINE_DIR = "baseline"
RUN_PATTERN = "ratio_*_seed_*"  # Matches every run directory name.


def path(workdir: epath.Path, cfg: config_lib.ExperimentConfig
         ) -> epath.Path:
  """The directory of the run of `cfg` (one per ratio and seed)."""
  return epath.Path(workdir) / f"ratio_{cfg.data.ratio:.3f}_seed_{cfg.seed}"


def config_json(cfg: config_lib.ExperimentConfig) -> dict[str, Any]:
  """`cfg` as the JSON object written to config.json."""
  return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def result_settings(config: dict[str, Any]) -> dict[str, Any]:
  """The settings of `config` that change results, by dotted key."""
  flat = {}
  for section, value in config.items():
    for field, v in (value.items() if isinstance(value, dict)
                     else [(None, value)]):
      flat[section if field is None else f"{section}.{field}"] = v
  return {k: v for k, v in flat.items()
          if not any(k == e or k.startswith(e + ".")
                     for e in EXECUTION_SETTINGS)}


def _read_json(file: epath.Path) -> dict[str, Any]:
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON ({e}); the run's config is "
                     "unknown: use another --workdir.") from e


def read_config(directory: epath.Path) -> config_lib.ExperimentConfig:
  """The config of the run in `directory` (from its config.json)."""
  file = epath.Path(directory) / CONFIG_FILE
  if not file.is_file():
    raise FileNotFoundError(
        f"{directory} is not a run directory: it has no {CONFIG_FILE}. Give "
        "the directory of a training run (<workdir>/ratio_<r>_seed_<s>).")
  raw = _read_json(file)
  try:
    return config_lib.from_json(raw)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{file} does not describe a run of this version of "
                     f"hybrid_jax ({type(e).__name__}: {e}).") from e


def check_writable(directory: epath.Path) -> None:
  """Creates `directory` and checks that files can be written there."""
  probe = epath.Path(directory) / f".probe-{uuid.uuid4().hex}"
  try:
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise PermissionError(
        f"Cannot write the run directory {directory} ({e}); choose a "
        "writable --workdir.") from e


def check_same_run(directory: epath.Path,
                   cfg: config_lib.ExperimentConfig) -> None:
  """Raises if `directory`'s config.json describes a different run."""
  file = directory / CONFIG_FILE
  if not file.exists():
    return
  found = result_settings(_read_json(file))
  wanted = result_settings(config_json(cfg))
  differ = config_lib.differing_keys(wanted, found)
  if differ:
    raise ValueError(
        f"{directory} holds a run of a different config ({differ} differ "
        f"from {file}). Its results are kept; use another --workdir to train "
        "this config.")


def write_config(directory: epath.Path,
                 cfg: config_lib.ExperimentConfig) -> None:
  """Writes config.json atomically."""
  with files.atomic_write(directory / CONFIG_FILE) as f:
    json.dump(config_json(cfg), f, indent=1)
