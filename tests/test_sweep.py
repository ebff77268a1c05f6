"""The sweep job: baseline and runs, resumable, never overwriting results."""

import dataclasses
import json

import pytest

from configs import ratio_sweep
from hybrid_jax import checkpointing
from hybrid_jax import config as config_lib
from hybrid_jax import main
from hybrid_jax import sweep


def _smoke() -> config_lib.ExperimentConfig:
  c = ratio_sweep.get_config("smoke")
  c.job = "sweep"
  return config_lib.from_config_dict(c)


def _results(workdir) -> dict:
  """Every evaluation JSON under `workdir`, by relative path."""
  return {str(p.relative_to(workdir)): json.loads(p.read_text())
          for p in sorted(workdir.rglob("eval/*.json"))}


def test_sweep_evaluates_the_baseline_and_every_run(tmp_path):
  summary = main.sweep_runs(_smoke(), tmp_path)
  assert sorted(_results(tmp_path)) == [
      "baseline/eval/xquad_r.json", "ratio_0.000_seed_0/eval/xquad_r.json",
      "ratio_1.000_seed_0/eval/xquad_r.json"]
  found = _results(tmp_path)
  assert found["baseline/eval/xquad_r.json"]["settings"]["step"] is None
  assert summary["ratio=1.0 seed=0"]["xquad_r"]["multi_map"] == found[
      "ratio_1.000_seed_0/eval/xquad_r.json"]["multi"]["map"]
  assert {"baseline", "ratio_0.000_seed_0/train", "ratio_0.000_seed_0/eval",
          "total"} <= set(summary["seconds"])
  # Rerunning finds everything finished: nothing is trained or rewritten.
  files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  main.sweep_runs(_smoke(), tmp_path)
  assert {p: p.read_bytes() for p in tmp_path.rglob("*")
          if p.is_file()} == files


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


def test_repeated_ratios_are_rejected():
  with pytest.raises(ValueError, match="repeats a value"):
    config_lib.SweepConfig(ratios=(0.5, 0.5))
