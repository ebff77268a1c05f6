"""The environment record: CPU, versions, and the per-start run file."""

import importlib.metadata
import json

import jax
import pytest

from hybrid_jax import environment

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse4_2 avx512_bf16 fma avx avx2 avx512f amx_tile
\nprocessor\t: 1
model name\t: another CPU
flags\t\t: fpu
"""


def test_cpu_reads_the_first_processor_and_its_extensions(tmp_path):
  file = tmp_path / "cpuinfo"
  file.write_text(CPUINFO)
  # In CPU_EXTENSIONS order; flags outside the list (sse4_2, fpu) left out.
  assert environment.cpu(file) == {
      "model": "AMD EPYC 9R14 96-Core Processor",
      "extensions": ["avx", "avx2", "fma", "avx512f", "avx512_bf16",
                     "amx_tile"]}
  # No file, or no flags (ARM): the extensions are unknown, not "none".
  file.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")
  for cpuinfo in (tmp_path / "absent", file):
    unknown = environment.cpu(cpuinfo)
    assert unknown["extensions"] is None and unknown["model"]
  assert "(extensions unknown)" in environment.summary(
      {**environment.describe(), "cpu": unknown})


def test_describe_names_this_process_and_its_libraries():
  env = environment.describe()
  assert env["packages"]["jax"] == importlib.metadata.version("jax")
  assert env["packages"]["numpy"] == importlib.metadata.version("numpy")
  assert env["backend"] == jax.default_backend()
  assert env["devices"] == f"{jax.device_count()} x cpu"
  line = environment.summary(env)
  assert line.startswith(env["cpu"]["model"])
  assert f"jax {jax.__version__}" in line
  assert json.loads(json.dumps(env)) == env  # It goes into JSON files.


def test_describe_records_the_xla_flags(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX")
  env = environment.describe()
  assert env["xla_flags"] == "--xla_cpu_max_isa=AVX"
  assert environment.summary(env).endswith("; XLA_FLAGS=--xla_cpu_max_isa=AVX")


def _steps(file):
  return [start["step"] for start in environment.read_starts(file)]


def test_record_start_keeps_one_line_per_start_that_counts(tmp_path):
  file = tmp_path / "environment.jsonl"
  assert environment.read_starts(file) == []
  environment.record_start(file, 0)
  environment.record_start(file, 20)
  environment.record_start(file, 40)
  starts = environment.read_starts(file)
  assert [s.pop("step") for s in starts] == [0, 20, 40]
  assert starts == [environment.describe()] * 3
  # Resumed at 20 again (what followed was lost): its records go.
  environment.record_start(file, 20)
  assert _steps(file) == [0, 20]
  environment.record_start(file, 0)  # Started over.
  assert _steps(file) == [0]
  for bad in ("{", '{"step": 0}', "[]"):
    file.write_text(bad)
    with pytest.raises(ValueError, match="environment.jsonl is not a list of "
                       "environment records .*: move it away"):
      environment.read_starts(file)
