r"""Fetches the data sets into the data root and checks their sha256 sums.

  python tools/prepare_data.py                   # into $HYBRID_JAX_DATA or data/
  python tools/prepare_data.py --mirror=../shared/data --root=/tmp/data

Files already present with the right checksum are left alone (so a read-only
root that is complete is fine). Others are downloaded from their public
origins (or copied from --mirror, a folder with the same layout), checked,
and moved into place atomically.
"""

import hashlib
import shutil
import sys
from typing import IO
import urllib.error
import urllib.request

from absl import app
from absl import flags
from etils import epath

from data_pipeline import sources
from hybrid_jax import files

_ROOT = flags.DEFINE_string(
    "root", "", "Data root (a local path or a cloud URI such as gs://...); "
    "empty: $HYBRID_JAX_DATA, else data/.")
_MIRROR = flags.DEFINE_string(
    "mirror", "", "Copy from this folder (same layout) instead of "
    "downloading.")
_DATASETS = flags.DEFINE_list("datasets", sorted(sources.DATASETS),
                              "Data sets to prepare.")


class _Hashing:
  """A writable file that also computes the sha256 of what goes through."""

  def __init__(self, out: IO[bytes]):
    self._out, self.hash = out, hashlib.sha256()

  def write(self, chunk: bytes) -> None:
    self.hash.update(chunk)
    self._out.write(chunk)


def sha256(path: epath.Path) -> str:
  """Hex sha256 of a file's content."""
  h = hashlib.sha256()
  with path.open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _fetch(info: sources.DatasetInfo, lang: str, mirror: str,
           out: IO[bytes]) -> None:
  """Copies the file of `lang` from the mirror or its origin into `out`."""
  if mirror:
    src = info.path(epath.Path(mirror), lang)
    if not src.is_file():
      raise FileNotFoundError(f"{src} is not in the mirror {mirror}.")
    with src.open("rb") as f:
      shutil.copyfileobj(f, out)
    return
  url = info.url.format(lang=lang)
  try:
    with urllib.request.urlopen(url, timeout=60) as r:
      shutil.copyfileobj(r, out)
  except (urllib.error.URLError, OSError) as e:
    raise ConnectionError(
        f"Cannot download {url} ({e}). Offline? Copy the files from a "
        "mirror with --mirror=DIR, or point $HYBRID_JAX_DATA at a folder "
        "that holds them.") from e


def prepare(info: sources.DatasetInfo, root: epath.Path,
            mirror: str) -> list[str]:
  """Makes every file of `info` present and verified; returns what it did."""
  done = []
  for lang, expected in sorted(info.sha256.items()):
    dest = info.path(root, lang)
    if dest.is_file() and sha256(dest) == expected:
      done.append(f"ok        {dest}")
      continue
    dest.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_write(dest, "wb") as f:  # In place once verified.
      out = _Hashing(f)
      _fetch(info, lang, mirror, out)
      got = out.hash.hexdigest()
      if got != expected:
        raise ValueError(
            f"Checksum mismatch for {info.name}/{lang}: got {got}, expected "
            f"{expected}. The source changed or the transfer was corrupted.")
    done.append(f"fetched   {dest}")
  return done


def main(argv):
  del argv
  root = sources.resolve_root(_ROOT.value)
  try:
    for name in _DATASETS.value:
      for line in prepare(sources.dataset_info(name), root, _MIRROR.value):
        print(line)
  except (ConnectionError, FileNotFoundError, ValueError, OSError) as e:
    sys.exit(f"prepare_data: {e}")
  print(f"Data ready under {root}.")


if __name__ == "__main__":
  app.run(main)
