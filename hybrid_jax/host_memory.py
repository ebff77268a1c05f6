"""Keeps freed host memory in the process for reuse (glibc malloc settings).

XLA:CPU allocates the temporaries of one execution as a single block: about
4 GB for the default training step. glibc maps a block that large fresh
from the kernel and unmaps it on free, so every step page-faults it in again
(a million faults and about 0.8 s of kernel time per step, several seconds
once other processes churn memory). `keep_freed_memory` makes malloc serve
large blocks from its heap and never give freed memory back, so the next
step reuses the same pages. The heap is not bounded: when a step cannot
reuse the hole the previous one left (XLA frees the block a moment after the
step's outputs are ready, or another allocation takes part of the hole), it
grows by another block for good (README, "Memory"). The settings only apply to threads that have not
allocated yet: call it before TensorFlow or XLA start their thread pools
(importing `hybrid_jax` does, unless $HYBRID_JAX_KEEP_FREED_MEMORY is 0:
then resident memory shrinks after the step, and the step is slower).
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


def keep_freed_memory() -> bool:
  """Tunes glibc malloc to reuse freed memory; returns whether it did.

  No large block is mmapped (M_MMAP_MAX 0), the heap is never trimmed
  (M_TRIM_THRESHOLD -1, i.e. SIZE_MAX) and all threads share the main
  arena, the one that can grow that large (M_ARENA_MAX 1). Resident memory
  then stays at its peak. Does nothing off glibc (macOS, musl) or with
  $HYBRID_JAX_KEEP_FREED_MEMORY=0.
  """
  if platform.libc_ver()[0] != "glibc" or os.environ.get(ENV) == "0":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c"))
  applied = [libc.mallopt(parameter, value) == 1 for parameter, value in (
      (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))]
  return all(applied)
