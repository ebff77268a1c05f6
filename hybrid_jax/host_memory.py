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

Reuse also needs the next block to go where the last one was. Whatever
takes part of that hole and still holds it at the next step (a background
checkpoint save's copy of the state did, so the CPU presets save
synchronously) makes the heap grow for the next block, and the rest of the
hole, too small now, would stay resident beside it; and where several
holes hold the block, malloc takes the smallest, resident or not. The
training loop therefore runs each step in `room_for`, which steers the
block into the most resident hole that holds it and gives the other large
holes back to the kernel (and, when memory grew, all freed memory), so
freed blocks do not pile up resident (a block that moves to a fresh hole
faults it in). Once training is over, `give_back_freed_memory` returns the
last block's pages, of which evaluation would reuse at most a part.

The malloc settings only apply to threads that have not allocated yet, and
the dispatch setting to a CPU backend not yet created (JAX ignores it
afterwards): call `keep_freed_memory` before TensorFlow or XLA start.
Importing `hybrid_jax` does, unless $HYBRID_JAX_KEEP_FREED_MEMORY is 0: then
none of this applies, resident memory shrinks after the step, and the step
is slower.
"""

import contextlib
import ctypes
import ctypes.util
import os
import platform
from typing import Iterator

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
_MADV_DONTNEED = 4
_PAGE = os.sysconf("SC_PAGE_SIZE")
# mincore sets the low bit of a page's byte if the page is resident.
_LOW_BIT = bytes(value & 1 for value in range(256))


class _MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
      "keepcost").split()]


# glibc, once `keep_freed_memory` has applied its settings.
_libc: ctypes.CDLL | None = None
# Resident bytes expected after the last trim, once the block it made room
# for is in (at first: when `keep_freed_memory` applied).
_settled = 0
# /proc/self/statm, open once `keep_freed_memory` has applied.
_statm = -1


def keep_freed_memory() -> bool:
  """Makes malloc and XLA:CPU reuse freed host memory; True if applied.

  No large block is mmapped (M_MMAP_MAX 0), the heap is never trimmed
  (M_TRIM_THRESHOLD -1, i.e. SIZE_MAX) and all threads share the main
  arena, the one that can grow that large (M_ARENA_MAX 1). Resident memory
  then stays at its peak (unless `room_for` gives pages back). Then CPU
  dispatch is made synchronous, so a step frees its temporaries before the
  next one allocates. Does nothing without glibc 2.33 or later (macOS,
  musl, older glibc), with $HYBRID_JAX_KEEP_FREED_MEMORY=0, or where
  mallopt refuses a setting.
  """
  global _libc, _statm, _settled
  if platform.libc_ver()[0] != "glibc" or os.environ.get(ENV) == "0":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
  if not hasattr(libc, "mallinfo2") or not all(
      libc.mallopt(parameter, value) == 1 for parameter, value in (
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
  libc.mallinfo2.restype = _MallInfo2
  libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
  libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                           ctypes.POINTER(ctypes.c_ubyte)]
  _libc = libc
  if _statm < 0:
    _statm = os.open("/proc/self/statm", os.O_RDONLY)
  _settled = _resident_bytes()
  return True


@contextlib.contextmanager
def room_for(nbytes: int) -> Iterator[int]:
  """Runs the body (an XLA:CPU computation whose temporaries are one block
  of `nbytes`) so that the block takes the most resident freed hole that
  holds it, and gives the other freed holes back; yields the resident
  bytes given back.

  malloc puts the block in the smallest hole that holds it, resident or not
  (its pages were given back), or extends the heap; the resident holes it
  passes over stay resident beside it, a block each. So every freed hole
  that holds the block (what XLA's aligned request needs: the size and
  `_ALIGNED_EXTRA`) is held, then as much of the heap's top (extended if
  need be); the most resident of them is freed for the block; the pages of
  the others, and of every hole that holds the size but not the aligned
  request (the hole of a block capped right above it), go back to the
  kernel, and the holes stay held until the body has run (the top is freed
  first: malloc takes it only if no freed chunk holds the block). If the
  block will fault in more than an eighth of itself and no such hole was
  found (a hole cut short, too small now, may be resident), or resident
  memory grew by more than an eighth of the block since the last trim (the
  first: since `keep_freed_memory`; memory other work touched and freed, a
  little at a time or at once, though live memory is not given back), every
  other freed page of the heap goes back too (`give_back_freed_memory`).
  Only then: trimming merges the heap's small free chunks, small
  allocations then come from right above the block, and a block capped so
  moves to a fresh hole at the next step.

  Holes are taken with a plain malloc (an aligned one would split off
  pieces that glibc before 2.39 keeps in its per-thread cache, where they
  cap the hole), which does not touch the pages unless MALLOC_PERTURB_ is
  set. An allocation in the body before the block's can still take part
  of the hole, and another thread's can mislead the count. Does nothing
  unless `keep_freed_memory` applied.
  """
  global _settled
  if _libc is None or nbytes <= 0:
    yield 0
    return
  before = _resident_bytes()
  size = nbytes + _ALIGNED_EXTRA
  held = []  # Freed once the body has run, or on an error.
  try:
    fitting = _hold_holes(size, held)  # The last one is the top's.
    resident = [_resident_in(hole, size) for hole in fitting]
    home_resident = max(resident)
    home = fitting[resident.index(home_resident)]
    # Then the holes of a block capped right above it, too small now.
    capped = _hold_holes(nbytes, held)
    for hole in held:
      if hole != home:
        _libc.madvise(*_whole_pages(hole, nbytes), _MADV_DONTNEED)
    if ((home_resident < nbytes - nbytes // 8 and len(capped) == 1)
        or before > _settled + nbytes // 8):
      give_back_freed_memory()
      _settled += nbytes - home_resident  # Once the block is in.
    after = _resident_bytes()
    # Freed now: the block's home, and the top's slices (malloc takes the
    # top only if no freed chunk holds the block; held, the top would push
    # what the body allocates above them).
    for hole in dict.fromkeys((home, fitting[-1], capped[-1])):
      held.remove(hole)
      _libc.free(hole)
    yield max(0, before - after)
  finally:
    for hole in held:
      _libc.free(hole)


def give_back_freed_memory() -> int:
  """Gives every freed page of the heap back to the kernel (`malloc_trim`);
  returns the resident bytes given back. For the end of work whose freed
  blocks what follows will not reuse (the training step's, before
  evaluation). Does nothing unless `keep_freed_memory` applied."""
  global _settled
  if _libc is None:
    return 0
  before = _resident_bytes()
  _libc.malloc_trim(0)
  _settled = _resident_bytes()
  return max(0, before - _settled)


def _hold_holes(size: int, held: list[int]) -> list[int]:
  """Allocates `size` bytes of every free chunk of the heap that holds
  them, then of its top (extending it if need be); their addresses, the
  top's last, also appended to `held`. (If the first malloc merges small
  free chunks into the top, the top's start moves down and one more slice
  of the top is taken: no harm.)"""
  holes = []
  while True:
    top = _libc.sbrk(0) - _libc.mallinfo2().keepcost
    hole = _libc.malloc(size)
    if hole is None:
      raise MemoryError(f"malloc({size}) failed: out of host memory")
    holes.append(hole)
    held.append(hole)
    if hole >= top:
      return holes


def _whole_pages(address: int, size: int) -> tuple[ctypes.c_void_p, int]:
  """The start and length of the pages that lie wholly in the range."""
  start = -(-address // _PAGE) * _PAGE
  return ctypes.c_void_p(start), max(0, (address + size) // _PAGE * _PAGE
                                     - start)


def _resident_in(address: int, size: int) -> int:
  """Resident bytes of the whole pages of an allocated range (mincore)."""
  start, length = _whole_pages(address, size)
  pages = (ctypes.c_ubyte * (length // _PAGE))()
  if length and _libc.mincore(start, length, pages):
    raise OSError(ctypes.get_errno(), "mincore failed")
  return bytes(pages).translate(_LOW_BIT).count(1) * _PAGE


def _resident_bytes() -> int:
  """The process's resident memory, read without malloc (small Python
  objects come from Python's own arenas) lest it take part of a hole."""
  return int(os.pread(_statm, 128, 0).split()[1]) * _PAGE
