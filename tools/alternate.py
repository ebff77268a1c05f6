"""Times competing implementations in alternating rounds, one process each.

Each side runs in a process of its own, so that neither framework's thread
pools, allocator or caches slow the other (in one process, a PyTorch step
between two JAX steps made the JAX step up to 1.7x slower). The processes take
turns: one timed call at a time, a pause between calls so the previous
side's threads go idle, and rounds alternate so that machine noise hits
every side alike. Each timed call also counts the minor page faults of its
process (memory the kernel had to map in).
"""

import multiprocessing
import resource
import statistics
import time
from typing import Callable, Sequence

# A picklable function that builds, in the worker process, the call to time.
Maker = Callable[[], Callable[[], object]]


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _serve(maker: Maker, connection) -> None:
  """Worker: builds the call, runs it once untimed, then measures it
  (seconds, minor page faults) on every request until the driver closes
  the connection."""
  call = maker()
  call()  # Compiles, warms up.
  connection.send("ready")
  while True:
    try:
      connection.recv()
    except EOFError:  # The driver is done (or gone).
      return
    faults, start = _minor_faults(), time.perf_counter()
    call()
    connection.send((time.perf_counter() - start, _minor_faults() - faults))


def median_seconds(makers: dict[str, Maker], rounds: int,
                   pause: float = 1.0) -> dict[str, float]:
  """Median seconds per call of every side (see `median_costs`)."""
  return {name: cost["seconds"]
          for name, cost in median_costs(makers, rounds, pause).items()}


def median_costs(makers: dict[str, Maker], rounds: int, pause: float = 1.0
                 ) -> dict[str, dict[str, float]]:
  """Median seconds and minor page faults per call of every side, measured
  in alternating rounds: {side: {"seconds": s, "minor_faults": n}}.

  Args:
    makers: side name -> picklable function returning the call to time
      (it runs in the side's process: import heavy libraries inside it).
    rounds: timed calls per side.
    pause: seconds of idleness before each timed call.
  """
  context = multiprocessing.get_context("spawn")
  workers = {}
  for name, maker in makers.items():
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(maker, theirs),
                              daemon=True)
    process.start()
    theirs.close()  # Ours to the worker only: its exit then ends our reads.
    workers[name] = (process, ours)
  try:
    for name, (_, connection) in workers.items():
      try:
        connection.recv()
      except EOFError:
        raise RuntimeError(f"The {name} benchmark process failed to start; "
                           "its error is printed above.") from None
    costs = {name: [] for name in workers}
    for _ in range(rounds):
      for name, (_, connection) in workers.items():
        time.sleep(pause)
        connection.send(True)
        try:
          costs[name].append(connection.recv())
        except EOFError:
          raise RuntimeError(f"The {name} benchmark process died; its error "
                             "is printed above.") from None
  finally:
    for process, connection in workers.values():
      connection.close()  # The worker returns.
      process.join(timeout=60)
      if process.is_alive():
        process.terminate()
        process.join()
  return {name: {"seconds": statistics.median(s for s, _ in values),
                 "minor_faults": statistics.median(f for _, f in values)}
          for name, values in costs.items()}


def print_framework_ratios(seconds: dict[str, float],
                           dtypes: Sequence[str]) -> None:
  """Prints JAX's time over PyTorch's for every compute dtype, from the
  sides "JAX <dtype>" and "PyTorch <dtype>" of `seconds`, and, for other
  dtypes, over "PyTorch float32" (the performance targets' reference)."""
  for dtype in dtypes:
    line = (f"{dtype}: JAX / PyTorch = "
            f"{seconds[f'JAX {dtype}'] / seconds[f'PyTorch {dtype}']:.2f}")
    if dtype != "float32" and "PyTorch float32" in seconds:
      line += (f"; JAX / PyTorch float32 = "
               f"{seconds[f'JAX {dtype}'] / seconds['PyTorch float32']:.2f}")
    print(line)
