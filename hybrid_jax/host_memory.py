"""Keeps freed host memory in the process for reuse (glibc malloc and
XLA:CPU dispatch settings).

XLA:CPU allocates the temporaries of one execution as a single block: about
4 GB for the default training step. glibc maps a block that large fresh
from the kernel and unmaps it on free, so every step page-faults it in again
(a million faults and about 0.8 s of kernel time per step, several seconds
once other processes churn memory). `keep_freed_memory` makes malloc serve
large blocks from its heap and not give freed memory back on its own, so
the next step reuses the same pages.

Reuse needs the previous step's block to be free when the next step
allocates its own. With JAX's asynchronous CPU dispatch it often is not: a
jitted call only schedules the computation and returns, a worker thread
allocates the temporaries when it starts and frees them about 15 ms after
the outputs are ready, so a loop that dispatches the next step within that
time grows the heap by a second block for good. `keep_freed_memory`
therefore also switches `jax_cpu_enable_async_dispatch` off: a computation
on one device whose inputs are ready then runs in the calling thread, and
the call returns once its temporaries are freed. hybrid_jax's loops
(training, encoding, search) lose nothing: each reads its results back
before the next call. Computations spread over several CPU devices (fake
devices in tests) stay asynchronous.

Reuse also needs the hole the block left to stay whole. Whatever takes part
of it and still holds it at the next step (a background checkpoint save's
copy of the state did, so the CPU presets save synchronously) makes the
heap grow for the next block, and the rest of the hole, too small now,
would stay resident beside it. The training loop therefore calls
`make_room` before each step: if no freed block holds the step's
temporaries, it first gives the freed pages back to the kernel, so the
growth adds no resident memory (the step then faults its block in once).

The malloc settings only apply to threads that have not allocated yet, and
the dispatch setting to a CPU backend not yet created (JAX ignores it
afterwards): call `keep_freed_memory` before TensorFlow or XLA start.
Importing `hybrid_jax` does, unless $HYBRID_JAX_KEEP_FREED_MEMORY is 0: then
none of this applies, resident memory shrinks after the step, and the step
is slower.
"""

import ctypes
import ctypes.util
import os
import platform

ENV = "HYBRID_JAX_KEEP_FREED_MEMORY"

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# XLA:CPU allocates a computation's buffers with posix_memalign, aligned to
# cpu::MinAlign() (EIGEN_MAX_ALIGN_BYTES, 64; see
# xla/pjrt/cpu/cpu_device_memory.cc), and glibc serves that from a free
# chunk only if it holds 112 bytes more than the size (_int_memalign asks
# for size + alignment + MINSIZE, rounded).
_ALIGNED_EXTRA = 112


# glibc, once `keep_freed_memory` has applied its settings.
_libc: ctypes.CDLL | None = None


def keep_freed_memory() -> bool:
  """Makes malloc and XLA:CPU reuse freed host memory; True if applied.

  No large block is mmapped (M_MMAP_MAX 0), the heap is never trimmed
  (M_TRIM_THRESHOLD -1, i.e. SIZE_MAX) and all threads share the main
  arena, the one that can grow that large (M_ARENA_MAX 1). Resident memory
  then stays at its peak (unless `make_room` gives pages back). Then CPU
  dispatch is made synchronous, so a step frees its temporaries before the
  next one allocates. Does nothing off glibc (macOS, musl), with
  $HYBRID_JAX_KEEP_FREED_MEMORY=0, or where mallopt refuses a setting.
  """
  global _libc
  if platform.libc_ver()[0] != "glibc" or os.environ.get(ENV) == "0":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c"))
  if not all(libc.mallopt(parameter, value) == 1 for parameter, value in (
      (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))):
    return False
  # After mallopt: importing jax must not allocate from other arenas first.
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  libc.malloc.restype = ctypes.c_void_p
  libc.malloc.argtypes = [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  libc.sbrk.restype = ctypes.c_void_p
  libc.sbrk.argtypes = [ctypes.c_ssize_t]
  libc.malloc_trim.argtypes = [ctypes.c_size_t]
  _libc = libc
  return True


def make_room(nbytes: int) -> bool:
  """Before XLA:CPU allocates a block of `nbytes`: if no freed block of the
  heap holds it, gives the freed pages back to the kernel; True if it did.

  malloc would extend the heap for the block and keep the freed blocks,
  too small for it, resident beside it. Whether the block fits is probed
  by allocating and freeing as much as XLA's aligned request needs (the
  size and `_ALIGNED_EXTRA`: a hole of exactly the size, such as the one a
  freed block leaves when something was allocated right above it, does not
  hold the aligned request), with a plain malloc, which splits nothing off
  (glibc before 2.39 keeps the pieces an aligned allocation splits off in
  its per-thread cache, where they cap the hole), and watching the heap's
  end. malloc does not touch the pages unless MALLOC_PERTURB_ is set. The
  free top of the heap is kept for the block, which will take it. Another
  thread allocating meanwhile can mislead the probe (rarely; it costs a
  trim or a growth). Does nothing unless `keep_freed_memory` applied.
  """
  if _libc is None or nbytes <= 0:
    return False
  end = _libc.sbrk(0)
  _libc.free(_libc.malloc(nbytes + _ALIGNED_EXTRA))
  if _libc.sbrk(0) == end:
    return False
  _libc.malloc_trim(nbytes + _ALIGNED_EXTRA)
  return True
