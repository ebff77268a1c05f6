"""Test setup: data from ../shared/data, a private cache, 8 CPU devices."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("HYBRID_JAX_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"  # Tests never download.
# Eight fake CPU devices, so that sharding is exercised on any machine.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from data_pipeline import config as data_config  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
  """Every test session tokenizes into its own cache."""
  os.environ["HYBRID_JAX_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def make_data_config(**overrides) -> data_config.DataConfig:
  """A DataConfig for MLQA-R training, evaluated on XQuAD-R."""
  train = overrides.pop("train", "mlqa_r")
  languages = tuple(overrides.pop("languages", ()))
  evals = overrides.pop("eval", ("xquad_r",))
  return data_config.DataConfig(
      train=data_config.DatasetSpec.parse(train, languages),
      eval=tuple(data_config.DatasetSpec.parse(e) for e in evals),
      **{"batch_size": 8, "max_query_length": 32, "max_passage_length": 48,
         **overrides})
