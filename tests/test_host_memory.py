"""Host memory reuse (`hybrid_jax.host_memory`), each case in a fresh
process: the settings apply when hybrid_jax is imported."""

import json
import os
import platform
import subprocess
import sys

import pytest

# Steps a jitted function with 64 MiB of temporaries, as a training loop does,
# and prints as JSON the temporaries' size and, for each step, whether its
# result was ready when the call returned, the change across the call in the
# bytes malloc has in use (heap and mapped blocks), and whether `make_room`
# then gave pages back.
_STEPS = r"""
import ctypes
import ctypes.util
import json

import jax
import jax.numpy as jnp
from hybrid_jax import host_memory
from hybrid_jax import train

class MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
      "keepcost").split()]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2

def step(w, x):
  first = jnp.tanh(w @ w)
  second = jnp.tanh(first @ w)
  return w + 1e-3 * (first @ second + second @ first) + x.mean()

step = jax.jit(step, donate_argnums=0)
w = jnp.eye(2048, dtype=jnp.float32)
x = jnp.ones(16)
step = step.lower(w, x).compile()  # As the training loop runs it.
temp = train.host_temporaries(step)
w = step(w, x).block_until_ready()  # The first call.
ready, in_use, room = [], [], []
for _ in range(12):
  before = libc.mallinfo2()
  w = step(w, x)
  after = libc.mallinfo2()
  ready.append(w.is_ready())
  in_use.append((after.uordblks + after.hblkhd)
                - (before.uordblks + before.hblkhd))
  w.block_until_ready()
  room.append(host_memory.make_room(temp))
print(json.dumps({"temp": temp, "ready": ready, "in_use": in_use,
                  "room": room}))
"""

_LIBC, _LIBC_VERSION = platform.libc_ver()
glibc_only = pytest.mark.skipif(_LIBC != "glibc",
                                reason="host memory reuse is glibc's")
# mallinfo2, which _STEPS reads, came with glibc 2.33.
mallinfo2 = pytest.mark.skipif(
    _LIBC != "glibc" or tuple(map(int, _LIBC_VERSION.split("."))) < (2, 33),
    reason="needs glibc 2.33 or later")


def _run(program: str, keep_freed_memory: str) -> str:
  """The last line `program` prints on the CPU, with
  $HYBRID_JAX_KEEP_FREED_MEMORY."""
  out = subprocess.run(
      [sys.executable, "-c", program], capture_output=True, text=True,
      check=False, env={**os.environ, "JAX_PLATFORMS": "cpu",
                        "HYBRID_JAX_KEEP_FREED_MEMORY": keep_freed_memory})
  assert out.returncode == 0, out.stderr
  return out.stdout.splitlines()[-1]


@glibc_only
def test_freed_memory_is_kept_unless_switched_off():
  program = "import hybrid_jax.host_memory as m; print(m.keep_freed_memory())"
  assert _run(program, "1") == "True"
  assert _run(program, "0") == "False"


@mallinfo2
def test_a_step_has_run_and_freed_its_temporaries_when_it_returns():
  steps = json.loads(_run(_STEPS, "1"))
  assert steps["temp"] > 40 * 2**20, steps
  assert steps["ready"] == [True] * 12, steps
  # Freed, so the next step can reuse them: once settled, the block that XLA
  # freed holds the compiled temporaries' size, so make_room keeps it. The
  # first steps' holes may be capped by the piece glibc splits off each
  # aligned block and keeps in its per-thread cache, until that cache is
  # full (7 pieces of a size); make_room gives those holes back (seen in
  # CI: every one of the first 5 steps).
  assert all(abs(n) < steps["temp"] / 4 for n in steps["in_use"]), steps
  assert steps["room"][-4:] == [False] * 4, steps


@mallinfo2
def test_switched_off_a_step_returns_before_it_has_run():
  # JAX's asynchronous CPU dispatch, which lets a loop dispatch the next
  # step before the previous one has freed its temporaries.
  steps = json.loads(_run(_STEPS, "0"))
  assert steps["ready"] == [False] * 12, steps


# Leaves a freed, touched block of 64 MiB (malloc's request) in one of four
# states (CASE), asks `make_room` for 64 MiB (32 MiB when "whole"), and
# prints as JSON its answer and resident memory (MiB) before and after.
_MAKE_ROOM = r"""
import ctypes
import ctypes.util
import json
import os

from hybrid_jax import host_memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
MIB = 2**20

def resident_mib():
  with open("/proc/self/statm") as statm:
    pages = int(statm.read().split()[1])
  return pages * os.sysconf("SC_PAGE_SIZE") / MIB

block = libc.malloc(64 * MIB)
ctypes.memset(block, 1, 64 * MIB)  # Resident.
if CASE != "top":
  fence = libc.malloc(64 * 1024)  # Keeps the block off the heap's top.
before = resident_mib()
libc.free(block)
if CASE == "split":  # The hole's start is taken and held.
  kept = libc.malloc(MIB)
  assert block <= kept < block + 64 * MIB
if CASE == "top":  # Merged into the free top; a little of it is held.
  kept = libc.malloc(256 * 1024)
answer = host_memory.make_room((32 if CASE == "whole" else 64) * MIB)
after = resident_mib()
print(json.dumps({"answer": answer, "before": before, "after": after,
                  # Whether the hole still holds a malloc of the block.
                  "refits": libc.malloc(64 * MIB) == block}))
"""


def _make_room(case: str, keep_freed_memory: str = "1") -> dict:
  """`_MAKE_ROOM`'s figures for `case`."""
  return json.loads(_run(f"CASE = {case!r}\n" + _MAKE_ROOM,
                         keep_freed_memory))


@glibc_only
def test_make_room_keeps_a_freed_block_that_holds_the_next():
  room = _make_room("whole")
  assert not room["answer"], room
  assert abs(room["after"] - room["before"]) < 4, room


@glibc_only
def test_make_room_gives_back_a_hole_too_small_for_the_next_block():
  room = _make_room("split")
  assert room["answer"], room
  assert room["after"] < room["before"] - 56, room  # 63 MiB went back.


@glibc_only
def test_make_room_gives_back_a_hole_too_small_for_xla_s_aligned_block():
  # The hole holds malloc's 64 MiB, not XLA:CPU's 64 MiB aligned to 64 bytes.
  room = _make_room("exact")
  assert room["answer"] and room["refits"], room
  assert room["after"] < room["before"] - 56, room


@glibc_only
def test_make_room_keeps_the_free_top_the_next_block_extends():
  room = _make_room("top")
  assert abs(room["after"] - room["before"]) < 4, room


@glibc_only
def test_make_room_does_nothing_when_switched_off():
  room = _make_room("split", keep_freed_memory="0")
  assert not room["answer"], room
