"""Work and data paths, local or in the cloud, and atomic writes.

Work and data directories are `etils.epath` paths: local paths, or cloud
URIs such as `gs://bucket/runs` (reached through TensorFlow's file systems),
with one API for both. Writes are atomic: readers see the old file or the new
one, never half of it.
"""

import contextlib
import io
import os
from typing import IO, Iterator
import uuid

from etils import epath


def as_path(path: epath.PathLike) -> epath.Path:
  """`path` as an epath.Path: a cloud URI as given, a local path absolute
  (with `~` expanded), as orbax needs."""
  text = os.fspath(path)
  if "://" in text:
    return epath.Path(text)
  return epath.Path(text).expanduser().resolve()


@contextlib.contextmanager
def atomic_write(path: epath.PathLike, mode: str = "w") -> Iterator[IO]:
  """Yields an in-memory file whose content replaces `path` when the block
  succeeds.

  The content goes to a hidden sibling, renamed over `path`, so `path` is
  never half written; on an error in the block nothing is written. Writers
  that seek (zip files: np.savez) work on object stores too.
  """
  buffer = io.BytesIO() if "b" in mode else io.StringIO()
  yield buffer
  path = epath.Path(path)
  temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
  try:
    with temporary.open(mode) as f:
      f.write(buffer.getvalue())
  except BaseException:
    if temporary.exists():
      temporary.unlink()
    raise
  temporary.replace(path)
