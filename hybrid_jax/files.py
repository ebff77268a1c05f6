"""Writing files atomically: readers see the old file or the new, never half."""

import contextlib
import os
import pathlib
import tempfile
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: pathlib.Path, mode: str = "w") -> Iterator[IO]:
  """Yields a temporary file that replaces `path` when the block succeeds.

  On an error the temporary file is removed and `path` is left as it was.
  """
  with tempfile.NamedTemporaryFile(mode, dir=path.parent, delete=False,
                                   prefix=f".{path.name}.") as f:
    try:
      yield f
    except BaseException:
      f.close()
      os.unlink(f.name)
      raise
  os.replace(f.name, path)
