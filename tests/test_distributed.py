"""Multi-process runs on one machine, against one process.

Several CPU processes join through `jax.distributed` (gloo collectives), each
with 8 / n fake devices, so that the mesh (8 devices) and the global batch
are those of the single process they are compared with. The processes find
each other through $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and
$JAX_PROCESS_ID, as on a cluster.
"""

import dataclasses
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import evaluate as evaluate_config
from conftest import REPO
import test_train
import distributed_worker
from data_pipeline import tokenization
from hybrid_jax import config as config_lib
from hybrid_jax import embedding
from hybrid_jax import pretrained
from hybrid_jax import run_directory
from hybrid_jax import runtime
from hybrid_jax import sharding
from hybrid_jax import train
from hybrid_jax.evaluation import evaluate

DEVICES = 8
NUM_STEPS = 8
TRAIN = ["-m", "hybrid_jax.main", "--config=configs/ratio_sweep.py:smoke",
         "--config.job=train", f"--config.train.num_steps={NUM_STEPS}",
         "--config.distributed.initialize=True"]


def _smoke() -> config_lib.ExperimentConfig:
  """The config of TRAIN, for one process."""
  return test_train._smoke(train__num_steps=NUM_STEPS)  # pylint: disable=protected-access


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(args: list[str], num_processes: int,
           logs: pathlib.Path) -> list[subprocess.Popen]:
  """Starts `python args` in `num_processes` joined processes; process i
  writes logs/<i>.out and logs/<i>.err."""
  logs.mkdir(parents=True, exist_ok=True)
  address = f"localhost:{_free_port()}"
  processes = []
  for i in range(num_processes):
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_force_host_platform_device_count="
                        f"{DEVICES // num_processes}",
           "JAX_COORDINATOR_ADDRESS": address,
           "JAX_NUM_PROCESSES": str(num_processes), "JAX_PROCESS_ID": str(i)}
    with open(logs / f"{i}.out", "w") as out, open(logs / f"{i}.err",
                                                    "w") as err:
      processes.append(subprocess.Popen([sys.executable, *args], cwd=REPO,
                                        env=env, stdout=out, stderr=err))
  return processes


def _run(args: list[str], num_processes: int,
         logs: pathlib.Path) -> list[str]:
  """Runs `python args` in `num_processes` joined processes to the end;
  returns what each printed."""
  processes = _start(args, num_processes, logs)
  for i, process in enumerate(processes):
    if process.wait(timeout=900):
      for p in processes:
        p.kill()
      pytest.fail(f"process {i} of {num_processes} failed:\n"
                  + (logs / f"{i}.err").read_text()[-4000:])
  return [(logs / f"{i}.out").read_text() for i in range(num_processes)]


def _assert_same_training(run: pathlib.Path, reference: pathlib.Path) -> None:
  """Metrics of every step and final parameters agree (float tolerance);
  prints the largest differences (pytest -s)."""
  got, want = test_train._metrics(run), test_train._metrics(reference)  # pylint: disable=protected-access
  assert [m["step"] for m in got] == list(range(1, NUM_STEPS + 1))
  for a, b in zip(got, want):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=1e-7,
                                 err_msg=f"step {a['step']} {key}")
  mesh = sharding.make_mesh()
  cache = tokenization.resolve_cache_dir()
  params = [pretrained.load_model(config_lib.ModelConfig(init=f"run:{r}"),
                                  mesh, 0, cache).params
            for r in (run, reference)]
  # Collectives sum in another order; Adam's normalised updates carry the
  # last-bit differences of near-zero gradients into the weights at about
  # the learning rate (1e-3): well below the weights' scale (~0.02).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5), *params)
  worst_metric = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
                     for a, b in zip(got, want) for k in a)
  worst_param = max(jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
      *params)))
  print(f"largest relative metric difference {worst_metric:.1e}, largest "
        f"absolute parameter difference {worst_param:.1e}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pathlib.Path:
  """The smoke run trained by one process on 8 devices."""
  workdir = tmp_path_factory.mktemp("one_process")
  return pathlib.Path(train.run(_smoke(), workdir).directory)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[pathlib.Path, list[str]]:
  """(run directory, each process's output) of the smoke run (training and
  evaluation) in two processes, parameters sharded across them (FSDP)."""
  workdir = tmp_path_factory.mktemp("two_processes")
  printed = _run([*TRAIN, "--config.mesh.data=1", "--config.mesh.fsdp=-1",
                  f"--workdir={workdir}"], 2, workdir / "logs")
  return pathlib.Path(run_directory.path(workdir, _smoke())), printed


@pytest.mark.parametrize("num_processes", [2, 4])
def test_each_process_builds_its_own_rows_of_every_global_batch(
    num_processes, tmp_path):
  printed = _run(["tests/distributed_worker.py"], num_processes, tmp_path)
  shares = [json.loads(out.splitlines()[-1]) for out in printed]
  # The worker's mesh alternates the processes' devices: one row each.
  assert [s["rows"] for s in shares] == [
      list(range(p, DEVICES, num_processes)) for p in range(num_processes)]
  cfg = _smoke()
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(
      cfg.data, hard_negatives=True))
  whole = train.process_pipeline(
      cfg.data, pretrained.load_tokenizer(
          cfg.model, tokenization.resolve_cache_dir()),
      sharding.make_mesh()).iterator()
  for step in range(3):
    batch = next(whole)
    for share in shares:
      for key, value in batch.items():
        np.testing.assert_array_equal(share["built"][step][key],
                                      value[share["rows"]], err_msg=key)
      for key, value in share["global"][step].items():  # Model inputs.
        np.testing.assert_array_equal(value, batch[key], err_msg=key)
  mesh = sharding.make_mesh()
  alone = embedding.embed_texts(
      pretrained.load_model(cfg.model, mesh, cfg.seed,
                            tokenization.resolve_cache_dir()),
      mesh, distributed_worker.TEXTS, "passage", max_length=32, batch_size=16)
  for share in shares:  # Every process has all of them.
    np.testing.assert_allclose(share["embeddings"], alone, rtol=1e-5,
                               atol=1e-6)


def test_training_on_two_processes_equals_one_process(two_processes,
                                                      reference):
  run, printed = two_processes
  _assert_same_training(run, reference)
  state = run / "checkpoints" / str(NUM_STEPS) / "state"
  assert sorted(p.name for p in state.glob("ocdbt.process_*")) == [
      "ocdbt.process_0", "ocdbt.process_1"]  # Each wrote its own shards.
  # Only process 0 writes and reports: progress, evaluation, summary.
  assert f"step {NUM_STEPS}/{NUM_STEPS}" in printed[0]
  assert json.loads(printed[0].splitlines()[-1])["step"] == NUM_STEPS
  # Process 1 prints only what gloo's C++ library prints when connecting.
  gloo = "[Gloo] Rank 1 is connected to 1 peer ranks. Expected number of..."
  assert set(re.findall(r"[A-Za-z_]+", printed[1])) <= set(
      re.findall(r"[A-Za-z_]+", gloo))
  assert len(list((run / "events").iterdir())) == 1
  assert not [p for p in run.rglob(".*") if p.is_file()]  # No temporaries.


def test_evaluation_on_two_processes_equals_one_process(two_processes,
                                                        tmp_path):
  run, _ = two_processes  # Its final checkpoint was evaluated by 2 processes.
  c = evaluate_config.get_config("smoke")
  c.model.init = f"run:{run}"
  evaluate.run(config_lib.from_config_dict(c), tmp_path)
  for name in ("xquad_r.json", "xquad_r.cross_map.csv"):
    two, one = ((d / name).read_text() for d in (run / "eval",
                                                 tmp_path / "eval"))
    if name.endswith(".json"):  # Times and devices differ; figures do not.
      two, one = (dict(json.loads(t), seconds=None, environment=None)
                  for t in (two, one))
    assert two == one, name
  with np.load(run / "eval" / "xquad_r.queries.npz") as two, np.load(
      tmp_path / "eval" / "xquad_r.queries.npz") as one:
    assert two.files == one.files
    for key in two.files:
      np.testing.assert_array_equal(two[key], one[key], err_msg=key)


@pytest.mark.parametrize("resume_on", [
    4, pytest.param(1, marks=pytest.mark.slow)])
def test_killed_run_resumes_on_another_number_of_processes(
    resume_on, reference, tmp_path, capsys):
  # metrics.jsonl is written in bunches: at progress lines (step 8 here) and
  # before each checkpoint (every 2 steps), which the kill tests.
  args = [*TRAIN, "--config.train.checkpoint_every=2",
          "--config.train.log_every=8", f"--workdir={tmp_path}"]
  directory = pathlib.Path(run_directory.path(tmp_path, _smoke()))
  processes = _start(args, 2, tmp_path / "logs_2")
  deadline = time.monotonic() + 600
  while not (directory / "checkpoints" / "2").is_dir():
    assert time.monotonic() < deadline and all(
        p.poll() is None for p in processes), (
            (tmp_path / "logs_2" / "0.err").read_text()[-4000:])
    time.sleep(0.05)
  for p in processes:
    p.send_signal(signal.SIGKILL)
    p.wait()
  done = sorted(int(p.name) for p in (directory / "checkpoints").iterdir()
                if p.name.isdigit())
  assert done and done[-1] < NUM_STEPS, f"finished before the kill: {done}"

  if resume_on == 1:
    train.run(_smoke(), tmp_path)
    printed = capsys.readouterr().out
  else:
    printed = _run(args, resume_on, tmp_path / f"logs_{resume_on}")[0]
  assert f"Resuming {directory} from step {done[-1]}" in printed
  _assert_same_training(directory, reference)


def test_distributed_settings_come_from_config_then_environment(monkeypatch):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  given = runtime.DistributedConfig(initialize=True,
                                    coordinator_address="10.0.0.1:1234",
                                    num_processes=2, process_id=1)
  assert runtime.initialize_arguments(given) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 2,
      "process_id": 1}
  assert runtime.initialize_arguments(runtime.DistributedConfig(True)) == {
      "coordinator_address": None, "num_processes": 4, "process_id": 3}
  monkeypatch.delenv("JAX_NUM_PROCESSES")
  monkeypatch.delenv("JAX_PROCESS_ID")
  # Nothing given: JAX reads $JAX_COORDINATOR_ADDRESS or detects the cluster.
  assert set(runtime.initialize_arguments(
      runtime.DistributedConfig(True)).values()) == {None}
  monkeypatch.setenv("JAX_PROCESS_ID", "one")
  with pytest.raises(ValueError, match=r"\$JAX_PROCESS_ID='one' is not an "
                     "integer"):
    runtime.initialize_arguments(runtime.DistributedConfig(True))


@pytest.mark.parametrize("settings, message", [
    (dict(num_processes=0), "use a positive count"),
    (dict(num_processes=2, process_id=2), r"outside \[0, 2\)"),
    (dict(process_id=-2), r"outside \[0, num_processes\)"),
])
def test_impossible_distributed_settings_are_rejected(settings, message):
  with pytest.raises(ValueError, match=message):
    runtime.DistributedConfig(initialize=True, **settings)
