"""What results were computed with: the libraries, the devices, the CPU.

XLA compiles for the machine it runs on: on a CPU with AVX-512 it uses
other vector widths and kernels than on one with AVX2 only, so float32 sums
round differently. One config and seed give bitwise-equal batches, weights
and metrics on one kind of machine with the same libraries, and figures
that differ in their last digits on another (README, "Determinism").
Training runs and evaluations record `describe()`, and a sweep's report
says whether its figures come from one environment.
"""

import importlib.metadata
import json
import pathlib
import platform
from typing import Any

from etils import epath
import jax

from hybrid_jax import files

# Distributions whose version can change results (TensorFlow draws the
# batches; it is installed as tensorflow or tensorflow-cpu).
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "tensorflow", "tensorflow-cpu", "scann")
# CPU extensions that change the code XLA:CPU generates (vector width,
# fused multiply-add, bfloat16 and matrix kernels).
CPU_EXTENSIONS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni",
                  "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpu(cpuinfo: pathlib.Path = pathlib.Path("/proc/cpuinfo")
        ) -> dict[str, Any]:
  """The CPU's model and which of CPU_EXTENSIONS it has, from `cpuinfo`
  (Linux; elsewhere the processor's name, and extensions unknown: None)."""
  try:
    text = cpuinfo.read_text()
  except OSError:
    return {"model": platform.processor() or platform.machine(),
            "extensions": None}
  fields = {}
  for line in text.splitlines():  # The first processor's fields.
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get("flags", "").split())
  return {"model": fields.get("model name", platform.machine()),
          "extensions": [e for e in CPU_EXTENSIONS if e in flags]}


def describe() -> dict[str, Any]:
  """This process's environment: Python and package versions, the JAX
  backend and devices, and the host CPU."""
  devices = jax.devices()
  return {"python": platform.python_version(),
          "packages": {p: v for p in PACKAGES if (v := _version(p))},
          "backend": jax.default_backend(),
          "devices": f"{len(devices)} x {devices[0].device_kind}",
          "cpu": cpu()}


def summary(env: dict[str, Any]) -> str:
  """One line naming the machine and the versions of `env`."""
  extensions = env["cpu"]["extensions"]
  isa = ("extensions unknown" if extensions is None
         else ", ".join(extensions) or "no AVX")
  versions = ", ".join(f"{p} {v}" for p, v in env["packages"].items())
  return (f"{env['cpu']['model']} ({isa}); {env['devices']}; "
          f"Python {env['python']}, {versions}")


def record_start(file: epath.Path, step: int) -> None:
  """Appends `{"step": step, **describe()}` to the JSON-lines `file`: the
  environment of a run's start (step 0) or of its resumption at `step`."""
  lines = file.read_text() if file.exists() else ""
  with files.atomic_write(file) as f:
    f.write(lines + json.dumps({"step": step, **describe()}) + "\n")


def read_starts(file: epath.Path) -> list[dict[str, Any]]:
  """The records `record_start` wrote into `file` (none if it is absent)."""
  if not file.exists():
    return []
  try:
    return [json.loads(line) for line in file.read_text().splitlines()]
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not JSON lines ({e}): move it away (it "
                     "only records where the run was trained).") from e
