"""Wall time per stage of a job, accumulated over repeated entries, and the
job's whole wall time since the stopwatch started."""

import collections
import contextlib
import time
from typing import Iterator


class Stopwatch:
  """`with watch("encode"): ...` adds the block's wall time to "encode"."""

  def __init__(self):
    self.seconds: dict[str, float] = collections.defaultdict(float)
    self._start = time.perf_counter()

  @contextlib.contextmanager
  def __call__(self, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[stage] += time.perf_counter() - start

  def rounded(self) -> dict[str, float]:
    """Seconds per stage and in all ("total"), at 0.01 s resolution."""
    out = {k: round(v, 2) for k, v in self.seconds.items()}
    return {**out, "total": round(time.perf_counter() - self._start, 2)}
