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
# result was ready when the call returned and the change across the call in
# the bytes malloc has in use (heap and mapped blocks).
_STEPS = r"""
import ctypes
import ctypes.util
import json

import hybrid_jax
import jax
import jax.numpy as jnp

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
temp = step.lower(w, x).compile().memory_analysis().temp_size_in_bytes
w = step(w, x).block_until_ready()  # Compiles.
ready, in_use = [], []
for i in range(4):
  before = libc.mallinfo2()
  w = step(w, x)
  after = libc.mallinfo2()
  ready.append(w.is_ready())
  in_use.append((after.uordblks + after.hblkhd)
                - (before.uordblks + before.hblkhd))
  w.block_until_ready()
print(json.dumps({"temp": temp, "ready": ready, "in_use": in_use}))
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
  assert steps["ready"] == [True] * 4, steps
  # Freed, so the next step can reuse them. (Whether malloc does, and the
  # heap stays put, depends on what else took part of the hole since.)
  assert all(abs(n) < steps["temp"] / 4 for n in steps["in_use"]), steps


@mallinfo2
def test_switched_off_a_step_returns_before_it_has_run():
  # JAX's asynchronous CPU dispatch, which lets a loop dispatch the next
  # step before the previous one has freed its temporaries.
  steps = json.loads(_run(_STEPS, "0"))
  assert steps["ready"] == [False] * 4, steps


# Frees a touched 64 MiB block, then asks `make_room` for a block it holds
# and for one it does not, and prints as JSON the return values and
# resident memory (MiB) after each.
_MAKE_ROOM = r"""
import ctypes
import ctypes.util
import json

from hybrid_jax import host_memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def resident_mib():
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[1]) * 4096 / 2**20

block = libc.malloc(64 << 20)
ctypes.memset(block, 1, 64 << 20)  # Resident.
libc.free(block)
resident = [resident_mib()]
held = host_memory.make_room(32 << 20)
resident.append(resident_mib())
too_large = host_memory.make_room(128 << 20)
resident.append(resident_mib())
print(json.dumps({"held": held, "too_large": too_large,
                  "resident": resident}))
"""


@glibc_only
def test_make_room_gives_freed_pages_back_only_when_a_block_will_not_fit():
  room = json.loads(_run(_MAKE_ROOM, "1"))
  before, after_held, after_too_large = room["resident"]
  assert not room["held"], room  # The freed block holds 32 MiB: kept.
  assert abs(after_held - before) < 4, room
  assert room["too_large"], room  # 128 MiB would extend the heap.
  assert after_too_large < before - 56, room  # The freed pages went back.


@glibc_only
def test_make_room_does_nothing_when_switched_off():
  room = json.loads(_run(_MAKE_ROOM, "0"))
  assert not room["held"] and not room["too_large"], room
