"""Work and data paths, local or in the cloud, and atomic writes.

Work and data directories are `etils.epath` paths: local paths, or cloud
URIs such as `gs://bucket/runs` (reached through TensorFlow's file systems),
with one API for both. Writes are atomic: readers see the old file or the new
one, never half of it.
"""

import contextlib
import io
import json
import os
from typing import IO, Iterator
import uuid

from etils import epath


def is_uri(path: epath.PathLike) -> bool:
  """Whether `path` is a cloud URI (gs://...) rather than a local path."""
  return "://" in os.fspath(path)


def as_path(path: epath.PathLike) -> epath.Path:
  """`path` as an epath.Path: a cloud URI as given, a local path absolute
  (with `~` expanded), as orbax needs."""
  if is_uri(path):
    return epath.Path(path)
  return epath.Path(path).expanduser().resolve()


@contextlib.contextmanager
def atomic_write(path: epath.PathLike, mode: str = "w") -> Iterator[IO]:
  """Yields a file whose content replaces `path` when the block succeeds.

  Readers see the old file or the new one, never half of it, and on an error
  in the block `path` is left as it was. Locally the block writes a hidden
  sibling, renamed over `path`. On an object store (a URI) it writes to
  memory, uploaded to `path` at the end: an upload appears whole, and
  writers that seek (zip files: np.savez) need the local buffer.
  """
  path = epath.Path(path)
  if is_uri(path):
    buffer = io.BytesIO() if "b" in mode else io.StringIO()
    yield buffer
    with path.open(mode) as f:
      f.write(buffer.getvalue())
    return
  temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
  try:
    with temporary.open(mode) as f:
      yield f
    temporary.replace(path)
  finally:
    if temporary.exists():
      temporary.unlink()


def truncate_jsonl(path: epath.Path, last_step: int) -> None:
  """Keeps the lines of the JSON-lines file `path` whose "step" is <=
  last_step (atomically): a resumed run drops what came after its
  checkpoint. Lines cut short by a kill go too."""
  if not path.exists():
    return
  lines = []
  for line in path.read_text().splitlines():
    try:
      if json.loads(line)["step"] <= last_step:
        lines.append(line)
    except (json.JSONDecodeError, KeyError, TypeError):
      pass  # A line cut short by a kill.
  with atomic_write(path) as f:
    f.write("".join(l + "\n" for l in lines))
