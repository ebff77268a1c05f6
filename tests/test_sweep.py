"""The sweep job: baseline, runs and report; resumable, never overwriting
results."""

import csv
import dataclasses
import json
import subprocess
import sys

import pytest

from configs import ratio_sweep
from conftest import REPO
from hybrid_jax import checkpointing
from hybrid_jax import config as config_lib
from hybrid_jax import environment
from hybrid_jax import main
from hybrid_jax import sweep


def _smoke() -> config_lib.ExperimentConfig:
  return config_lib.from_config_dict(ratio_sweep.get_config("smoke"))


def _results(workdir) -> dict:
  """Every evaluation JSON under `workdir`, by relative path."""
  return {str(p.relative_to(workdir)): json.loads(p.read_text())
          for p in sorted(workdir.rglob("eval/*.json"))}


def _report(workdir) -> dict:
  """Every report file's bytes, by name."""
  return {p.name: p.read_bytes() for p in (workdir / "report").iterdir()}


def test_the_command_runs_the_sweep_and_reports_its_evaluations(tmp_path):
  subprocess.run([sys.executable, "-m", "hybrid_jax.main",
                  "--config=configs/ratio_sweep.py:smoke",
                  f"--workdir={tmp_path}"], check=True, cwd=REPO,
                 capture_output=True)
  assert set(_report(tmp_path)) == {
      "report.md", "results.json", "results.csv", "robustness.csv",
      "tests.csv", "xquad_r.metrics_vs_ratio.png",
      "xquad_r.rank_distance_vs_ratio.png", "xquad_r.cross_map.png",
      "xquad_r.cross_map_difference.png"}
  assert sorted(_results(tmp_path)) == [
      "baseline/eval/xquad_r.json", "ratio_0.000_seed_0/eval/xquad_r.json",
      "ratio_1.000_seed_0/eval/xquad_r.json"]
  evaluations = {"baseline": _results(tmp_path)["baseline/eval/xquad_r.json"]}
  assert evaluations["baseline"]["settings"]["step"] is None
  for ratio in (0.0, 1.0):
    evaluations[ratio] = _results(tmp_path)[
        f"ratio_{ratio:.3f}_seed_0/eval/xquad_r.json"]
  with open(tmp_path / "report" / "results.csv") as f:
    rows = [r for r in csv.DictReader(f) if r["seed"] == "mean"]
  for row in rows:
    found = evaluations["baseline" if row["model"] == "baseline"
                        else float(row["ratio"])]
    setting, metric = row["metric"].split("/")
    stated = (found["rank_distance"]["mean"] if metric == "rank_distance"
              else found[setting][metric])
    assert float(row["value"]) == pytest.approx(stated, rel=1e-12)
    assert float(row["ci_low"]) <= float(row["value"]) <= float(
        row["ci_high"])
  assert len(rows) == 3 * 12  # Baseline and 2 ratios x 12 metrics.
  report = (tmp_path / "report" / "report.md").read_text()
  for model, label in (("baseline", "zero-shot baseline"),
                       (1.0, "α = 1 (1 seed)")):
    assert (f"| {label} | {evaluations[model]['multi']['map']:.4f} ["
            in report)
  # Every evaluation and training start recorded this machine.
  assert (f"- Environment: {environment.summary(environment.describe())}.\n"
          in report)
  numbers = json.loads((tmp_path / "report" / "results.json").read_text())
  matrix = numbers["datasets"]["xquad_r"]["rows"][1]["cross_matrix"]  # α=0.
  assert matrix["de"]["zh"] == evaluations[0.0]["cross"]["matrix"]["de"][
      "zh"]["map"]
  # Rerunning finds everything finished: nothing is trained or rewritten.
  files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  summary = main.sweep_runs(_smoke(), tmp_path)
  assert {p: p.read_bytes() for p in tmp_path.rglob("*")
          if p.is_file()} == files
  assert summary["ratio=1.0 seed=0"]["xquad_r"]["multi_map"] == evaluations[
      1.0]["multi"]["map"]
  assert {"baseline", "ratio_0.000_seed_0/train", "ratio_0.000_seed_0/eval",
          "report", "total"} <= set(summary["seconds"])


def test_interrupted_sweep_resumes_to_the_same_results(tmp_path, monkeypatch):
  cfg = _smoke()
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, num_steps=3))
  sweep.run(cfg, tmp_path / "whole")
  save = checkpointing.Checkpoints.save
  calls = []

  def preempt_second_run(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) == 5:  # Run 2 (ratio 1.0), after its step-1 checkpoint.
      raise KeyboardInterrupt("preempted")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpointing.Checkpoints, "save", preempt_second_run)
  with pytest.raises(KeyboardInterrupt):
    sweep.run(cfg, tmp_path / "split")
  monkeypatch.undo()
  assert (tmp_path / "split" / "ratio_0.000_seed_0" / "eval").is_dir()
  assert not (tmp_path / "split" / "ratio_1.000_seed_0" / "eval").exists()
  sweep.run(cfg, tmp_path / "split")

  def metrics(results):
    return {k: {s: v[s] for s in ("mono", "cross", "multi", "rank_distance")}
            for k, v in results.items()}

  assert metrics(_results(tmp_path / "split")) == metrics(
      _results(tmp_path / "whole"))
  split, whole = _report(tmp_path / "split"), _report(tmp_path / "whole")
  numbers = [json.loads(r.pop("results.json")) for r in (split, whole)]
  assert split == whole
  # The same numbers; the environment record also lists the resumption.
  environments = [n.pop("environments") for n in numbers]
  assert numbers[0] == numbers[1]
  assert [e["distinct"][0]["used_by"] for e in environments] == [
      ["baseline evaluation on xquad_r", "ratio_0.000_seed_0 training from "
       "step 0", "ratio_0.000_seed_0 evaluation on xquad_r",
       "ratio_1.000_seed_0 training from step 0"] + resumed
      + ["ratio_1.000_seed_0 evaluation on xquad_r"]
      for resumed in (["ratio_1.000_seed_0 training from step 1"], [])]


def test_repeated_ratios_are_rejected():
  with pytest.raises(ValueError, match="repeats a value"):
    config_lib.SweepConfig(ratios=(0.5, 0.5))
