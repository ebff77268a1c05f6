"""Resolves `model.init` to local checkpoint files and their tokenizer."""

from data_pipeline import tokenization
from hybrid_jax import config as config_lib


def load_tokenizer(model: config_lib.ModelConfig) -> tokenization.Tokenizer:
  """The tokenizer of a run: the override, else the checkpoint's own."""
  if model.tokenizer:
    return tokenization.load_tokenizer(model.tokenizer)
  if model.init.startswith("hf:"):
    return tokenization.load_tokenizer(model.init.removeprefix("hf:"))
  raise NotImplementedError(
      f"The tokenizer of model.init={model.init!r} is built by the encoder "
      "issue (#3), not yet landed; meanwhile set model.tokenizer ('bytes' or "
      "a tokenizer.json path), or use the smoke preset.")
