"""Writing files atomically: readers see the old file or the new, never half."""

import contextlib
import os
import pathlib
import tempfile
from typing import IO, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: pathlib.Path, mode: str = "w") -> Iterator[IO]:
  """Yields a temporary file that replaces `path` when the block succeeds.

  On an error the temporary file is removed and `path` is left as it was.
  """
  with tempfile.NamedTemporaryFile(mode, dir=path.parent, delete=False,
                                   prefix=f".{path.name}.") as f:
    os.chmod(f.name, 0o666 & ~_UMASK)  # Not the temporary file's 0600.
    try:
      yield f
    except BaseException:
      f.close()
      os.unlink(f.name)
      raise
  os.replace(f.name, path)
