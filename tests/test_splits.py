"""Article splits are disjoint and aligned; training never sees eval data."""

import pytest

from conftest import make_data_config
from data_pipeline import loading


def _load(spec, **kw):
  cfg = make_data_config(train=spec, **kw)
  return loading.load(cfg.train, cfg)


def test_article_split_partitions_xquad_r():
  full, train, test = (_load(f"xquad_r:{s}") for s in ("all", "train",
                                                      "test"))
  assert train.articles.isdisjoint(test.articles)
  assert train.articles | test.articles == full.articles
  assert len(full.articles) == 48 and len(train.articles) == 24
  assert train.dataset.qids().isdisjoint(test.dataset.qids())
  assert train.dataset.qids() | test.dataset.qids() == full.dataset.qids()
  for part in (train, test):  # The same questions in every language.
    d = part.dataset
    assert all(d.qids(l) == d.qids("en") for l in d.languages)
    assert all(r.title in part.articles
               for rs in d.records.values() for r in rs)
  # Candidates are whole paragraphs of the split's articles only.
  assert (train.dataset.num_candidates + test.dataset.num_candidates
          == full.dataset.num_candidates)


def test_split_is_a_fixed_function_of_titles():
  assert _load("xquad_r:train").articles == _load(
      "xquad_r:train", train_fraction=0.5).articles
  assert len(_load("xquad_r:train", train_fraction=0.25).articles) == 12


def test_mlqa_r_split_follows_english_titles():
  train, test = _load("mlqa_r:train"), _load("mlqa_r:test")
  assert train.dataset.qids().isdisjoint(test.dataset.qids())
  assert train.dataset.num_questions + test.dataset.num_questions == 4_199


@pytest.mark.parametrize("train, evals", [
    ("xquad_r", ("xquad_r",)),
    ("xquad_r:train", ("xquad_r",)),
    ("xquad_r", ("xquad_r:test",)),
    ("mlqa_r", ("xquad_r", "mlqa_r:test")),
])
def test_training_on_eval_data_is_rejected(train, evals):
  cfg = make_data_config(train=train, eval=evals)
  with pytest.raises(ValueError, match="overlaps evaluation set") as e:
    loading.load_training_set(cfg)
  name = train.partition(":")[0]
  assert f"data.train='{name}:train' with data.eval='{name}:test'" in str(
      e.value)


def test_disjoint_training_and_eval_sets_load():
  cfg = make_data_config(train="xquad_r:train",
                         eval=("xquad_r:test", "mlqa_r"))
  train = loading.load_training_set(cfg)
  assert train.num_questions == len(train.qids()) * 11 > 0


def test_empty_training_set_is_rejected():
  with pytest.raises(ValueError, match="holds no questions"):
    _load("xquad_r:train", train_fraction=0.01)
