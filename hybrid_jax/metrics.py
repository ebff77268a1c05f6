"""Training metrics: `metrics.jsonl`, TensorBoard events, a progress line.

Only process 0 writes. Lines are appended in bunches (`flush`: at every
progress line and before every checkpoint), so that a cloud work directory
is not rewritten every step. On resume from step n, lines after step n
(written by the interrupted run after its last checkpoint) are dropped, so
the file of a resumed run equals that of an uninterrupted one.
"""

import json
import time

from etils import epath

from hybrid_jax import files


class MetricWriter:
  """Writes per-step scalars of a run; a no-op on processes other than 0."""

  def __init__(self, directory: epath.Path, *, start_step: int,
               num_steps: int, enabled: bool = True):
    self._enabled = enabled
    self._num_steps = num_steps
    self._last = (start_step, time.perf_counter())  # Of the last progress.
    self._pending = []  # Lines not yet in metrics.jsonl.
    if not enabled:
      return
    self._jsonl = directory / "metrics.jsonl"
    files.truncate_jsonl(self._jsonl, start_step)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self._events = tf.summary.create_file_writer(str(directory / "events"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Adds the scalars of `step` to metrics.jsonl (at the next `flush`) and
    TensorBoard."""
    if not self._enabled:
      return
    self._pending.append(json.dumps({"step": step, **scalars}) + "\n")
    with self._events.as_default(step=step):
      for name, value in scalars.items():
        self._tf.summary.scalar(f"train/{name}", value)

  def flush(self) -> None:
    """Appends the pending lines to metrics.jsonl."""
    if self._pending:
      with self._jsonl.open("a") as f:
        f.write("".join(self._pending))
      self._pending = []

  def progress(self, step: int, scalars: dict[str, float]) -> None:
    """Flushes, and prints the loss, seconds per step since the last line,
    and the ETA."""
    if not self._enabled:
      return
    self.flush()
    last_step, last_time = self._last
    now = time.perf_counter()
    seconds = (now - last_time) / max(step - last_step, 1)
    self._last = (step, now)
    eta = (self._num_steps - step) * seconds
    print(f"step {step}/{self._num_steps}  loss {scalars['loss']:.4f}  "
          f"accuracy {scalars['accuracy']:.3f}  {seconds:.2f} s/step  "
          f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s", flush=True)

  def pause_timing(self, step: int) -> None:
    """Restarts the s/step clock at `step` (after work that is not training,
    e.g. an evaluation), so that it does not count in the speed or ETA."""
    self._last = (step, time.perf_counter())

  def close(self) -> None:
    """Flushes metrics.jsonl and the event file."""
    if self._enabled:
      self.flush()
      self._events.close()
