"""Host memory reuse (`hybrid_jax.host_memory`): the cases of a program run
in a fresh process, where the settings apply when hybrid_jax is imported."""

import json
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from hybrid_jax import train

# Resident memory, read without malloc (see host_memory._resident_bytes),
# for the programs below.
_RESIDENT = r"""
import os

MIB = 2**20
STATM = os.open("/proc/self/statm", os.O_RDONLY)

def resident_mib():
  pages = int(os.pread(STATM, 128, 0).split()[1])
  return pages * os.sysconf("SC_PAGE_SIZE") / MIB
"""

# Steps a jitted function with 64 MiB of temporaries, as a training loop does,
# each in `room_for`, and prints as JSON the temporaries' size and, for each
# step, whether its result was ready when the call returned, the change
# across the call in the bytes malloc has in use (heap and mapped blocks),
# the bytes `room_for` gave back and resident memory after the step.
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
ready, in_use, room, resident = [], [], [], []
for _ in range(12):
  with host_memory.room_for(temp) as given_back:
    before = libc.mallinfo2()
    w = step(w, x)
    after = libc.mallinfo2()
  ready.append(w.is_ready())
  in_use.append((after.uordblks + after.hblkhd)
                - (before.uordblks + before.hblkhd))
  w.block_until_ready()
  room.append(given_back)
  resident.append(resident_mib() * MIB)
print(json.dumps({"temp": temp, "ready": ready, "in_use": in_use,
                  "room": room, "resident": resident}))
"""

_LIBC, _LIBC_VERSION = platform.libc_ver()
# Host memory reuse needs mallinfo2, which came with glibc 2.33.
glibc_2_33 = pytest.mark.skipif(
    _LIBC != "glibc" or tuple(map(int, _LIBC_VERSION.split("."))) < (2, 33),
    reason="host memory reuse needs glibc 2.33 or later")


def _run(program: str, keep_freed_memory: str) -> str:
  """The last line `program` prints on the CPU, with
  $HYBRID_JAX_KEEP_FREED_MEMORY."""
  out = subprocess.run(
      [sys.executable, "-c", program], capture_output=True, text=True,
      check=False, env={**os.environ, "JAX_PLATFORMS": "cpu",
                        "HYBRID_JAX_KEEP_FREED_MEMORY": keep_freed_memory})
  assert out.returncode == 0, out.stderr
  return out.stdout.splitlines()[-1]


@glibc_2_33
def test_freed_memory_is_kept_unless_switched_off():
  program = "import hybrid_jax.host_memory as m; print(m.keep_freed_memory())"
  assert _run(program, "1") == "True"
  assert _run(program, "0") == "False"


@glibc_2_33
def test_a_step_has_run_and_freed_its_temporaries_when_it_returns():
  steps = json.loads(_run(_RESIDENT + _STEPS, "1"))
  assert steps["temp"] > 40 * 2**20, steps
  assert steps["ready"] == [True] * 12, steps
  # Freed, so the next step can reuse them; whether it does depends on what
  # else the step allocates, and where (under CPU contention, a small
  # allocation right above the block, held into the next step, has made
  # every block move to a fresh hole: the cases below check where room_for
  # puts a block). Whatever the step does, room_for gives back the hole a
  # block left when the next one moves: at most one block more stays
  # resident, never a block a step.
  assert all(abs(n) < steps["temp"] / 4 for n in steps["in_use"]), steps
  settled = steps["resident"][2:]
  assert max(settled) - min(settled) < steps["temp"] * 5 / 4, steps


@glibc_2_33
def test_switched_off_a_step_returns_before_it_has_run():
  # JAX's asynchronous CPU dispatch, which lets a loop dispatch the next
  # step before the previous one has freed its temporaries.
  steps = json.loads(_run(_RESIDENT + _STEPS, "0"))
  assert steps["ready"] == [False] * 12, steps


# Leaves a freed, touched block of 64 MiB (malloc's request) in one of six
# states (CASE), then in `room_for` (of 64 MiB; 32 when "whole" or "stale",
# 63 when "twin") allocates and touches a block as XLA:CPU does, and prints
# as JSON what room_for gave back, resident memory (MiB) before, in
# room_for and after the block, and whether the block went into the hole.
_ROOM_FOR = r"""
import ctypes
import ctypes.util
import json

from hybrid_jax import host_memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

block = libc.malloc(64 * MIB)
ctypes.memset(block, 1, 64 * MIB)  # Resident.
if CASE in ("stale", "twin"):  # A second hole: too small / smaller.
  gap = libc.malloc(64 * 1024)
  second = libc.malloc(16 * MIB if CASE == "stale" else 127 * MIB // 2)
  ctypes.memset(second, 1, 16 * MIB)  # Resident, all or a quarter of it.
if CASE != "top":
  fence = libc.malloc(64 * 1024)  # Keeps the holes off the heap's top.
before = resident_mib()
libc.free(block)
if CASE in ("stale", "twin"):
  libc.free(second)
if CASE == "split":  # The hole's start is taken and held.
  kept = libc.malloc(MIB)
  assert block <= kept < block + 64 * MIB
if CASE == "top":  # Merged into the free top; a little of it is held.
  kept = libc.malloc(256 * 1024)
# Whether the hole holds a malloc of the block (malloc and free leave it be).
refits = libc.malloc(64 * MIB)
libc.free(refits)
size = {"whole": 32, "stale": 32, "twin": 63}.get(CASE, 64) * MIB
with host_memory.room_for(size) as given_back:
  within = resident_mib()
  xla_block = ctypes.c_void_p()
  assert libc.posix_memalign(ctypes.byref(xla_block), 64, size) == 0
  ctypes.memset(xla_block, 2, size)
  stepped = resident_mib()
  libc.free(xla_block)
print(json.dumps({"answer": given_back / MIB, "before": before,
                  "within": within, "stepped": stepped,
                  "refits": refits == block,
                  "in_hole": block <= xla_block.value < block + 64 * MIB}))
"""


def _room_for(case: str, keep_freed_memory: str = "1") -> dict:
  """`_ROOM_FOR`'s figures for `case`."""
  return json.loads(_run(f"CASE = {case!r}\n" + _RESIDENT + _ROOM_FOR,
                         keep_freed_memory))


def _given_back(room: dict) -> float:
  """MiB that went back by resident memory; asserts room_for said so."""
  given_back = room["before"] - room["within"]
  assert abs(room["answer"] - given_back) < 4, room
  return given_back


def _faulted_in(room: dict) -> float:
  """MiB the block made resident."""
  return room["stepped"] - room["within"]


@glibc_2_33
def test_room_for_keeps_the_part_of_a_freed_block_the_next_one_takes():
  room = _room_for("whole")
  assert abs(_given_back(room) - 32) < 4, room  # The other half.
  assert room["in_hole"] and _faulted_in(room) < 4, room


@glibc_2_33
def test_room_for_gives_back_a_hole_too_small_for_the_next_block():
  room = _room_for("split")
  assert _given_back(room) > 56, room  # 63 MiB.
  assert not room["in_hole"], room


@glibc_2_33
def test_room_for_gives_back_a_hole_too_small_for_xla_s_aligned_block():
  # The hole holds malloc's 64 MiB, not XLA:CPU's 64 MiB aligned to 64 bytes.
  room = _room_for("exact")
  assert room["refits"], room
  assert _given_back(room) > 56, room
  assert not room["in_hole"], room


@glibc_2_33
def test_room_for_gives_back_a_stale_hole_beside_the_one_that_fits():
  room = _room_for("stale")
  assert room["refits"], room
  assert abs(_given_back(room) - 48) < 4, room  # 16 MiB and half the block.
  assert room["in_hole"] and _faulted_in(room) < 4, room


@glibc_2_33
def test_room_for_steers_the_block_into_the_resident_hole():
  # malloc alone would take the smaller hole, a quarter of it resident,
  # which goes back.
  room = _room_for("twin")
  assert room["refits"] and abs(_given_back(room) - 16) < 4, room
  assert room["in_hole"] and _faulted_in(room) < 4, room


@glibc_2_33
def test_room_for_keeps_the_free_top_the_next_block_extends():
  room = _room_for("top")
  assert _given_back(room) < 4, room
  assert room["in_hole"] and _faulted_in(room) < 4, room


@glibc_2_33
def test_room_for_does_nothing_when_switched_off():
  room = _room_for("whole", keep_freed_memory="0")
  assert room["answer"] == 0, room


# Steps as a training loop does, in `room_for` (64 MiB: a block allocated and
# touched; with a plain malloc, so it stays where it was: the cases above
# check where XLA:CPU's aligned block goes), and after each leaves a freed,
# resident 6 MiB hole (what other work touched and freed; fenced, so no
# block takes it), less than an eighth of the block each time. CASE "creep":
# seven steps; "faulting": `give_back_freed_memory` after the first step, so
# the second step's block faults itself in; "done": `give_back_freed_memory`
# after the one step; "live": four steps, and instead of the holes, 12 MiB
# (fenced, allocated at the start) touched after the first and kept. Prints
# as JSON the MiB given back after the first step, the steps after it that
# trimmed, and resident memory (MiB) after each step and at the end.
_CREEP = r"""
import ctypes
import ctypes.util
import json

from hybrid_jax import host_memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

given, resident, trims = [], [], []

def step():
  with host_memory.room_for(64 * MIB) as given_back:
    block = libc.malloc(64 * MIB)
    ctypes.memset(block, 2, 64 * MIB)
    libc.free(block)
  return given_back / MIB

trim = host_memory.give_back_freed_memory

def give_back():  # Also what room_for calls to trim.
  trims.append(len(given))
  return trim() / MIB

host_memory.give_back_freed_memory = give_back

holes = []
for _ in range({"creep": 7, "live": 4}.get(CASE, 1)):
  holes.append(libc.malloc(6 * MIB))
  libc.malloc(64 * 1024)  # The fence.
live = libc.malloc(12 * MIB)  # Not resident until touched.
for hole in holes:
  given.append(step())
  resident.append(resident_mib())
  if CASE == "faulting":
    given.append(give_back())
  if CASE != "live":
    ctypes.memset(hole, 1, 6 * MIB)
    libc.free(hole)
  elif len(given) == 1:
    ctypes.memset(live, 1, 12 * MIB)
if CASE == "faulting":
  given.append(step())
if CASE == "done":
  given.append(give_back())
resident.append(resident_mib())
print(json.dumps({"given": given[1:], "trims": [i for i in trims if i],
                  "resident": resident}))
"""


def _creep(case: str) -> dict:
  """`_CREEP`'s figures for `case`."""
  return json.loads(_run(f"CASE = {case!r}\n" + _RESIDENT + _CREEP, "1"))


@glibc_2_33
def test_room_for_gives_back_memory_that_grew_a_little_at_a_time():
  creep = _creep("creep")
  # 6 MiB more each time: trimmed once it is over 8 MiB (an eighth of the
  # block) since the last trim, so every second step gives back 12 MiB.
  assert [round(mib / 6) for mib in creep["given"]] == [0, 2, 0, 2, 0, 2], (
      creep)
  settled = creep["resident"]
  assert max(settled) - settled[0] < 14, creep


@glibc_2_33
def test_room_for_trims_once_for_memory_that_stays_in_use():
  # 12 MiB more, live: one trim (at the second step), then that level holds.
  figures = _creep("live")
  assert figures["trims"] == [1], figures


@glibc_2_33
def test_room_for_gives_back_freed_memory_before_a_block_faults_in():
  # The block's pages went back, so it will fault itself in, and no hole
  # cut short was found: the 6 MiB hole goes back first, though it is less
  # than an eighth of the block (in "creep", the second step keeps it).
  figures = _creep("faulting")
  assert figures["given"][0] > 60, figures  # The first block's pages.
  assert abs(figures["given"][1] - 6) < 1.5, figures


@glibc_2_33
def test_freed_memory_goes_back_when_training_is_done():
  figures = _creep("done")
  assert figures["given"][0] > 66, figures  # The block's and the hole's.
  assert figures["resident"][0] - figures["resident"][1] > 60, figures


def test_host_temporaries_of_one_cpu_device_only():
  # room_for places one block of a synchronous, single-device computation.
  step = jax.jit(lambda w: jnp.tanh(w @ w) @ w)
  w = jnp.ones((512, 512))
  assert train.host_temporaries(step.lower(w).compile()) >= w.nbytes
  spread = jax.device_put(w, jax.NamedSharding(
      jax.make_mesh((jax.device_count(),), ("data",)),
      jax.sharding.PartitionSpec("data")))
  assert jax.device_count() > 1
  assert train.host_temporaries(step.lower(spread).compile()) == 0
