"""Reads Hugging Face checkpoints (XLM-R, mBERT, LaBSE, multilingual-e5).

A checkpoint directory holds `config.json` and the weights as
`model.safetensors` (or a sharded `model.safetensors.index.json`), else
`pytorch_model.bin` (read with `weights_only=True`; needs torch). Tensor
names are mapped explicitly onto our parameter tree; a missing, unexpected
or mis-shaped tensor is an error that lists them.
"""

import json
import pathlib
from typing import Callable

import numpy as np

from hybrid_jax.model import encoder as encoder_lib

LAYOUTS = {"xlm-roberta": "xlmr", "roberta": "xlmr", "bert": "bert"}
# config.json key -> EncoderConfig field.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size", "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_size", "num_attention_heads": "num_heads",
    "intermediate_size": "mlp_size",
    "max_position_embeddings": "max_positions",
    "type_vocab_size": "type_vocab_size", "layer_norm_eps": "layer_norm_eps",
    "pad_token_id": "pad_id"}

# Prefixes of task-model checkpoints (e.g. XLMRobertaForMaskedLM).
_MODEL_PREFIXES = ("roberta.", "bert.", "model.")
# Tensors of heads we never use (masked-LM, NSP) and non-weight buffers.
_IGNORED_PREFIXES = ("lm_head.", "cls.", "embeddings.position_ids")

ParamPath = tuple[str | int, ...]
Transform = Callable[[np.ndarray], np.ndarray]


def read_config(directory: pathlib.Path,
                **overrides) -> encoder_lib.EncoderConfig:
  """The encoder architecture of a checkpoint's config.json.

  Args:
    directory: the checkpoint directory.
    **overrides: EncoderConfig fields set by the run (dropout, dtypes).
  """
  file = directory / "config.json"
  if not file.is_file():
    raise FileNotFoundError(
        f"{directory} has no config.json: point model.init=hf:<dir> at a "
        "Hugging Face checkpoint directory (config.json + model.safetensors).")
  try:
    c = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON ({e}).") from e
  model_type = c.get("model_type")
  if model_type not in LAYOUTS:
    raise ValueError(
        f"{file}: unknown architecture model_type={model_type!r}; supported: "
        f"{sorted(LAYOUTS)} (XLM-R, mBERT, LaBSE, multilingual-e5).")
  if c.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{file}: only absolute position embeddings are "
                     f"supported, not {c['position_embedding_type']!r}.")
  missing = sorted(set(_CONFIG_KEYS) - set(c))
  if missing or c.get("pad_token_id") is None:
    raise ValueError(f"{file} lacks {missing or ['pad_token_id']}: it is not "
                     "a complete XLM-R/BERT config.json.")
  fields = {field: c[key] for key, field in _CONFIG_KEYS.items()}
  try:
    return encoder_lib.EncoderConfig(
        layout=LAYOUTS[model_type], activation=c.get("hidden_act", "gelu"),
        **fields, **overrides)
  except ValueError as e:
    raise ValueError(f"{file}: {e}") from e


def _load_safetensors(file: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  try:
    return st.load_file(str(file))
  except Exception as e:  # safetensors raises several types.
    raise ValueError(f"Cannot read {file} ({e}); the file is corrupt or "
                     "truncated: download the checkpoint again.") from e


def _load_torch_bin(file: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"{file} is a PyTorch pickle, which needs torch to read; install "
        "torch or convert the checkpoint to model.safetensors.") from e
  state = torch.load(file, map_location="cpu", weights_only=True)
  return {k: v.float().numpy() for k, v in state.items()}


def read_tensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of the checkpoint's weight file(s), by name."""
  single = directory / "model.safetensors"
  index = directory / "model.safetensors.index.json"
  if single.is_file():
    return _load_safetensors(single)
  if index.is_file():
    files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return {k: v for f in files
            for k, v in _load_safetensors(directory / f).items()}
  if (directory / "pytorch_model.bin").is_file():
    return _load_torch_bin(directory / "pytorch_model.bin")
  raise FileNotFoundError(
      f"{directory} has no model.safetensors, model.safetensors.index.json "
      "or pytorch_model.bin.")


def _canonical(name: str) -> str:
  """The base-model name of a tensor (no task prefix, no gamma/beta)."""
  for prefix in _MODEL_PREFIXES:
    name = name.removeprefix(prefix)
  return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
      "LayerNorm.beta", "LayerNorm.bias")


def _canonical_tensors(tensors: dict[str, np.ndarray],
                       source: str) -> dict[str, np.ndarray]:
  out = {}
  for name, value in tensors.items():
    key = _canonical(name)
    if key in out:
      raise ValueError(f"Checkpoint {source} holds {key!r} twice (under "
                       "different prefixes); keep one copy.")
    out[key] = value
  return out


def _dense(prefix: str, target: ParamPath, in_shape, out_shape):
  """Name map of a torch Linear ([out, in]) onto our Dense kernel and bias."""
  return {
      f"{prefix}.weight": (target + ("kernel",),
                           lambda w: w.T.reshape(in_shape + out_shape)),
      f"{prefix}.bias": (target + ("bias",), lambda b: b.reshape(out_shape)),
  }


def _as_is(x: np.ndarray) -> np.ndarray:
  return x


def _norm(prefix: str, target: ParamPath):
  return {f"{prefix}.weight": (target + ("scale",), _as_is),
          f"{prefix}.bias": (target + ("bias",), _as_is)}


def name_map(cfg: encoder_lib.EncoderConfig,
             pooler: bool) -> dict[str, tuple[ParamPath, Transform]]:
  """Checkpoint tensor name -> (our parameter path in a Tower, transform)."""
  h, heads = (cfg.hidden_size,), (cfg.num_heads, cfg.head_dim)
  f = (cfg.mlp_size,)

  def pad_rows(w):
    if len(w) != cfg.vocab_size:
      raise ValueError(f"{len(w)} rows, config says {cfg.vocab_size}")
    return np.pad(w, ((0, cfg.padded_vocab_size - len(w)), (0, 0)))

  emb = ("encoder", "embeddings")
  names = {
      "embeddings.word_embeddings.weight": (emb + ("word",), pad_rows),
      "embeddings.position_embeddings.weight": (emb + ("position",), _as_is),
      "embeddings.token_type_embeddings.weight": (emb + ("token_type",),
                                                  _as_is),
      **_norm("embeddings.LayerNorm", emb + ("layer_norm",)),
  }
  for i in range(cfg.num_layers):
    src, dst = f"encoder.layer.{i}", ("encoder", "layers", i)
    for part in ("query", "key", "value"):
      names |= _dense(f"{src}.attention.self.{part}",
                      dst + ("attention", part), h, heads)
    names |= _dense(f"{src}.attention.output.dense",
                    dst + ("attention", "output"), heads, h)
    names |= _norm(f"{src}.attention.output.LayerNorm",
                   dst + ("attention_norm",))
    names |= _dense(f"{src}.intermediate.dense", dst + ("mlp_in",), h, f)
    names |= _dense(f"{src}.output.dense", dst + ("mlp_out",), f, h)
    names |= _norm(f"{src}.output.LayerNorm", dst + ("mlp_norm",))
  if pooler:
    names |= _dense("pooler.dense", ("pooler",), h, h)
  return names


def tower_params(tensors: dict[str, np.ndarray],
                 cfg: encoder_lib.EncoderConfig, pooler: bool,
                 expected_shapes: dict[ParamPath, tuple[int, ...]],
                 source: str) -> dict[ParamPath, np.ndarray]:
  """Our Tower parameters (by path) from a checkpoint's tensors.

  Args:
    tensors: the checkpoint's tensors by name.
    cfg: the encoder architecture (from `read_config`).
    pooler: whether the tower has LaBSE's pooler (then it must be present).
    expected_shapes: shape of every path `name_map` targets, from the model.
    source: the checkpoint, for error messages.

  Raises:
    ValueError: listing missing, unexpected and mis-shaped tensors.
  """
  tensors = _canonical_tensors(tensors, source)
  names = name_map(cfg, pooler)
  missing = sorted(set(names) - set(tensors))
  unexpected = sorted(
      k for k in set(tensors) - set(names)
      if not k.startswith(_IGNORED_PREFIXES)
      and not (k.startswith("pooler.") and not pooler))
  params, misshaped = {}, []
  for name, (path, transform) in names.items():
    if name not in tensors:
      continue
    value = np.asarray(tensors[name], np.float32)
    try:
      value = transform(value)
    except ValueError as e:  # Cannot take our shape.
      misshaped.append(f"{name} {tensors[name].shape}: {e}")
      continue
    if value.shape != expected_shapes[path]:
      misshaped.append(f"{name} {tensors[name].shape}")
    else:
      params[path] = value
  if missing and all(m.startswith("pooler.") for m in missing):
    raise ValueError(
        f"Checkpoint {source} has no pooler (dense + tanh over CLS): set "
        "model.pooling to 'cls' or 'mean'.")
  if missing or unexpected or misshaped:
    raise ValueError(
        f"Checkpoint {source} does not match the {cfg.layout} architecture of "
        f"its config.json: missing {missing[:8]}"
        f"{' ...' if len(missing) > 8 else ''}; unexpected {unexpected[:8]}"
        f"{' ...' if len(unexpected) > 8 else ''}; wrong shape {misshaped[:8]}."
        " Check that config.json and the weights belong together.")
  return params
