"""The evaluation job end to end: files, reuse, runs' checkpoints, bad input."""

import dataclasses
import json
import os

import numpy as np
import pytest

from configs import evaluate as evaluate_config
from configs import ratio_sweep
from hybrid_jax import checkpointing
from hybrid_jax import config as config_lib
from hybrid_jax import environment
from hybrid_jax import main
from hybrid_jax.evaluation import evaluate


def _config(module, preset="smoke", **overrides) -> config_lib.ExperimentConfig:
  c = module.get_config(preset)
  for key, value in overrides.items():
    section, field = key.split("__")
    c[section][field] = value
  return config_lib.from_config_dict(c)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
  """The smoke evaluation (tiny random model, XQuAD-R de/en/zh)."""
  workdir = tmp_path_factory.mktemp("eval")
  cfg = _config(evaluate_config)
  return cfg, workdir, evaluate.run(cfg, workdir)["xquad_r"]


def test_eval_job_writes_the_documented_files(evaluated):
  cfg, workdir, result = evaluated
  out = workdir / "eval"
  assert sorted(p.name for p in out.iterdir()) == [
      "xquad_r.cross_map.csv", "xquad_r.json", "xquad_r.queries.npz"]
  saved = json.loads((out / "xquad_r.json").read_text())
  assert saved == json.loads(json.dumps(result))
  assert saved["dataset"] == "xquad_r"
  assert saved["settings"]["languages"] == ["de", "en", "zh"]
  assert saved["settings"]["num_queries"] == 3 * 1190
  assert saved["index"]["metrics_from_exact_ranking"] == ["map",
                                                          "rank_distance"]
  for lang in ("de", "en", "zh"):
    assert set(saved["mono"]["per_language"][lang]) >= {
        "map", "r@1", "mrr@10", "ndcg@10", "p@10", "r@10", "f1@10",
        "num_queries"}
    assert set(saved["multi"]["per_language"][lang]) >= {
        "map", "r@10", "ndcg@10", "same_language@10", "num_queries"}
    row = saved["cross"]["matrix"][lang]
    assert sorted(row) == sorted({"de", "en", "zh"} - {lang})
    assert all(set(cell) >= {"map", "r@1", "num_queries"}
               for cell in row.values())
  assert saved["mono"]["map"] == pytest.approx(np.mean(
      [saved["mono"]["per_language"][l]["map"] for l in ("de", "en", "zh")]))
  assert saved["cross"]["map"] == pytest.approx(np.mean(
      [c["map"] for row in saved["cross"]["matrix"].values()
       for c in row.values()]))
  assert saved["cross"]["num_pairs"] == 6
  assert set(saved["rank_distance"]) == {"mean", "per_language",
                                         "num_queries"}
  assert saved["rank_distance"]["num_queries"] == {"de": 1190, "en": 1190,
                                                   "zh": 1190}
  assert saved["index"]["kind"] == "tree_ah"
  assert 0 < saved["index"]["recall_vs_exact"] <= 1
  assert set(saved["seconds"]) == {"encode", "index", "search", "exact",
                                   "metrics", "total"}
  assert saved["environment"] == environment.describe()
  lines = (out / "xquad_r.cross_map.csv").read_text().splitlines()
  assert lines[0] == "query_lang\\candidate_lang,de,en,zh"
  de = lines[1].split(",")
  assert float(de[1]) == pytest.approx(
      saved["mono"]["per_language"]["de"]["map"], abs=5e-5)
  assert float(de[2]) == pytest.approx(
      saved["cross"]["matrix"]["de"]["en"]["map"], abs=5e-5)
  with np.load(out / "xquad_r.queries.npz") as arrays:
    assert arrays["mono/de/map"].mean() == pytest.approx(
        saved["mono"]["per_language"]["de"]["map"])
    assert len(arrays["cross/de-en/qid"]) == 1190


def test_finished_results_are_kept_and_other_settings_refused(evaluated):
  cfg, workdir, result = evaluated
  file = workdir / "eval" / "xquad_r.json"
  before = file.read_bytes()
  assert evaluate.run(cfg, workdir)["xquad_r"] == json.loads(before)
  other = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval,
                                                            index="exact"))
  with pytest.raises(ValueError, match=r"holds results of other settings "
                     r"\(\['index'\] differ\)"):
    evaluate.run(other, workdir)
  assert file.read_bytes() == before


def test_exact_and_scann_agree_on_the_full_rank_metrics(evaluated, tmp_path):
  cfg, _, result = evaluated
  exact = evaluate.run(dataclasses.replace(
      cfg, eval=dataclasses.replace(cfg.eval, index="exact")),
                       tmp_path)["xquad_r"]
  assert exact["index"]["recall_vs_exact"] == 1.0
  assert exact["mono"]["map"] == result["mono"]["map"]  # Same embeddings.
  assert exact["rank_distance"] == result["rank_distance"]


def test_training_run_evaluates_its_checkpoints(tmp_path):
  cfg = _config(ratio_sweep, train__num_steps=2, eval__every=1,
                train__freeze_word_embeddings=True)
  summary = main.train_and_evaluate(cfg, tmp_path)
  run = tmp_path / "ratio_0.500_seed_0"
  final = json.loads((run / "eval" / "xquad_r.json").read_text())
  step1 = json.loads((run / "eval" / "step_1" / "xquad_r.json").read_text())
  assert (final["settings"]["step"], step1["settings"]["step"]) == (2, 1)
  assert final["settings"]["model"] == f"run:{run.resolve()}/checkpoints/2"
  assert final["settings"]["model_settings"]["size"] == "tiny"
  assert step1["settings"]["model"] == "random"  # The weights in memory.
  assert step1["settings"]["seed"] == 0  # Random weights: the seed counts.
  assert final["mono"]["map"] != step1["mono"]["map"]
  assert summary["eval"]["xquad_r"]["multi_map"] == final["multi"]["map"]
  # The eval-only job on the run's checkpoint: the same numbers.
  again = evaluate.run(
      _config(evaluate_config, model__init=f"run:{run}"),
      tmp_path / "again")["xquad_r"]
  assert again["settings"] == final["settings"]
  for section in ("mono", "cross", "multi", "rank_distance"):
    assert again[section] == final[section]


def test_a_checkpoint_of_another_architecture_is_rejected(tmp_path):
  cfg = _config(ratio_sweep, train__num_steps=1)
  main.train_and_evaluate(dataclasses.replace(cfg, data=dataclasses.replace(
      cfg.data, eval=())), tmp_path)
  run = tmp_path / "ratio_0.500_seed_0"
  config = json.loads((run / "config.json").read_text())
  config["model"]["size"] = "e5-small"  # The checkpoint holds "tiny".
  (run / "config.json").write_text(json.dumps(config))
  with pytest.raises(checkpointing.CheckpointError,
                     match="does not match the model its run's config.json "
                     "describes"):
    evaluate.run(_config(evaluate_config, model__init=f"run:{run}"),
                 tmp_path / "eval")
  assert not (tmp_path / "eval" / "eval").exists()


@pytest.mark.parametrize("override, error, match", [
    ({"eval__languages": "de,xx"}, ValueError,
     r"eval.languages names \['xx'\], which no evaluation set has"),
    ({"data__eval": ""}, ValueError, "data.eval names no evaluation set"),
    ({"model__init": "run:/nonexistent/run"}, FileNotFoundError,
     "holds no finished checkpoint"),
    ({"data__root": "/nonexistent/data"}, FileNotFoundError,
     "is incomplete under the data root /nonexistent/data"),
])
def test_bad_input_is_named(tmp_path, override, error, match):
  with pytest.raises(error, match=match):
    evaluate.run(_config(evaluate_config, **override), tmp_path)
  assert not (tmp_path / "eval").exists()


def test_a_language_missing_from_the_data_root(tmp_path):
  root = tmp_path / "data"
  (root / "lareqa" / "xquad-r").mkdir(parents=True)
  real = os.environ["HYBRID_JAX_DATA"]
  for lang in ("de", "en"):  # zh is missing.
    (root / "lareqa" / "xquad-r" / f"{lang}.json").symlink_to(
        f"{real}/lareqa/xquad-r/{lang}.json")
  with pytest.raises(FileNotFoundError, match=r"missing \[.*zh.json'\]"):
    evaluate.run(_config(evaluate_config, data__root=str(root)), tmp_path)


def test_non_finite_embeddings_are_an_error(tmp_path, monkeypatch):
  real = evaluate.embedding.embed_token_arrays

  def broken(*args, **kwargs):
    rows = real(*args, **kwargs)
    rows[3] = np.nan
    return rows

  monkeypatch.setattr(evaluate.embedding, "embed_token_arrays", broken)
  with pytest.raises(FloatingPointError,
                     match="1 question embeddings of xquad_r are NaN"):
    evaluate.run(_config(evaluate_config), tmp_path)
  assert not (tmp_path / "eval").exists()


def test_every_job_has_an_entry():
  assert set(main.JOBS) == set(config_lib.JOBS)


def test_runs_from_before_the_eval_section_still_load(tmp_path):
  cfg = _config(ratio_sweep)
  old = json.loads(json.dumps(dataclasses.asdict(cfg)))
  del old["eval"], old["job"]
  assert config_lib.from_json(old) == dataclasses.replace(
      cfg, eval=config_lib.EvalConfig(), job="train")
