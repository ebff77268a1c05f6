"""The hybrid-batch pipeline does what DESIGN.md defines, exactly."""

import itertools

import numpy as np
import pytest

from conftest import make_data_config
from data_pipeline import hybrid
from data_pipeline import loading
from data_pipeline import pipeline
from data_pipeline import statistics
from data_pipeline import tokenization

BATCH = 8


@pytest.fixture(scope="module")
def mlqa():
  """MLQA-R, byte-tokenized, with its pair table."""
  cfg = make_data_config()
  dataset = loading.load_training_set(cfg)
  tokens = tokenization.tokenize_dataset(
      dataset, tokenization.ByteTokenizer(),
      max_query_length=cfg.max_query_length,
      max_passage_length=cfg.max_passage_length,
      query_prefix=cfg.query_prefix, passage_prefix=cfg.passage_prefix,
      cache_dir=tokenization.resolve_cache_dir())
  return dataset, tokens, hybrid.build_pair_table(dataset, tokens)


def _pipe(mlqa, rows=None, **overrides):
  _, tokens, table = mlqa
  return pipeline.TrainPipeline(table, tokens, make_data_config(**overrides),
                                rows=rows)


def _take(pipe, n, start=0):
  return list(itertools.islice(pipe.iterator(start), n))


def _stats(pipe, n):
  return statistics.batch_statistics(_take(pipe, n), pipe.table.languages)


def test_pair_table_enumerates_aligned_pairs(mlqa):
  dataset, _, table = mlqa
  # MLQA-R: each id with k languages gives k X-X and k(k-1) X-Y triples.
  per_id = np.bincount(
      [table.qids.index(r.qid) for rs in dataset.records.values() for r in rs])
  assert len(table.question) == int(np.sum(per_id ** 2))
  assert table.is_monolingual.sum() == dataset.num_questions == 4_199


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_realised_xx_fraction_matches_ratio(mlqa, ratio):
  n = 2000
  stats = _stats(_pipe(mlqa, ratio=ratio), n)
  sigma = np.sqrt(ratio * (1 - ratio) / n)
  assert abs(stats["xx_fraction"] - ratio) <= 3 * sigma
  assert stats["duplicate_ids"] == 0
  assert stats["cross_same_language"] == 0
  assert stats["xx_batches_with_several_languages"] == 0


def test_batches_hold_the_right_texts(mlqa):
  """Query = question in its language; passage = its answer sentence."""
  dataset, _, table = mlqa
  by_key = {(r.qid, r.lang): r for rs in dataset.records.values()
            for r in rs}

  def text(ids):
    return bytes(int(i) - 4 for i in ids if i >= 4).decode("utf-8", "replace")

  def expected(prefix, sentence, budget):
    return (prefix + sentence).encode()[:budget - 2].decode("utf-8",
                                                            "replace")

  cfg = make_data_config(hard_negatives=True)
  for b in _take(_pipe(mlqa, hard_negatives=True), 20):
    for i in range(BATCH):
      qid = table.qids[b["question"][i]]
      q = by_key[qid, table.languages[b["query_lang"][i]]]
      p = by_key[qid, table.languages[b["passage_lang"][i]]]
      assert text(b["query_ids"][i]) == expected(
          cfg.query_prefix, q.question, cfg.max_query_length)
      assert text(b["passage_ids"][i]) == expected(
          cfg.passage_prefix, p.answer_sentence, cfg.max_passage_length)
      assert b["query_mask"][i].sum() == np.sum(b["query_ids"][i] != 1)
      negative = text(b["negative_ids"][i])
      others = [expected(cfg.passage_prefix, s, cfg.max_passage_length)
                for j, s in enumerate(p.sentences) if j != p.answer_index]
      if b["has_negative"][i]:
        assert negative in others  # Same paragraph and language, not it.
      else:
        assert not others


def test_xx_batches_are_single_language_and_xy_pairs_cross(mlqa):
  for b in _take(_pipe(mlqa, ratio=0.5), 300):
    if b["drawn_monolingual"].all():
      assert len(set(b["query_lang"])) == 1
      assert (b["query_lang"] == b["passage_lang"]).all()
    else:
      assert (b["query_lang"] != b["passage_lang"]).all()
    assert len(set(b["question"])) == BATCH


def test_example_mixing_puts_a_fixed_share_in_every_batch(mlqa):
  k = round(0.25 * BATCH)
  for b in _take(_pipe(mlqa, ratio=0.25, mixing="example"), 300):
    mono = b["query_lang"] == b["passage_lang"]
    assert mono.sum() == k
    assert (mono == b["drawn_monolingual"]).all()
    assert len(set(b["question"])) == BATCH


def _binomial_ok(counts, probs, total, sigmas=5):
  expect = probs * total
  return np.all(np.abs(counts - expect) <= sigmas * np.sqrt(
      expect * (1 - probs)) + 1)


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0])
def test_language_pairs_follow_size_to_the_temperature(mlqa, temperature):
  _, _, table = mlqa
  counts = table.pair_counts().astype(float)
  n = 1500
  # X-Y batches: pairs by (available pairs) ** temperature.
  stats = _stats(_pipe(mlqa, ratio=0.0, language_temperature=temperature), n)
  off = ~np.eye(len(counts), dtype=bool) & (counts > 0)
  weights = np.where(off, counts ** temperature, 0)
  probs = (weights / weights.sum())[off]
  langs = table.languages
  seen = np.array([stats["pair_counts"].get(f"{langs[a]}-{langs[b]}", 0)
                   for a, b in zip(*np.nonzero(off))])
  assert _binomial_ok(seen, probs, n * BATCH)
  # X-X batches: the batch language by (its questions) ** temperature.
  stats = _stats(_pipe(mlqa, ratio=1.0, language_temperature=temperature), n)
  weights = np.diag(counts) ** temperature
  seen = np.array([stats["language_counts"]["query"].get(l, 0) / BATCH
                   for l in langs])
  assert _binomial_ok(seen, weights / weights.sum(), n)


def test_same_seed_same_batches_other_seed_others(mlqa):
  a, b = _take(_pipe(mlqa), 30), _take(_pipe(mlqa), 30)
  c = _take(_pipe(mlqa, seed=1), 30)
  for x, y in zip(a, b):
    assert all(np.array_equal(x[k], y[k]) for k in x)
  assert not all(np.array_equal(x["question"], z["question"])
                 for x, z in zip(a, c))


def test_resume_equals_uninterrupted(mlqa):
  pipe = _pipe(mlqa, hard_negatives=True)
  straight = _take(pipe, 20)
  first = pipe.iterator()
  head = [next(first) for _ in range(7)]
  state = first.state()
  assert state == {"step": 7}
  resumed = first.restore(dict(state))
  tail = [next(resumed) for _ in range(13)]
  for x, y in zip(straight, head + tail):
    assert all(np.array_equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("mixing", ["batch", "example"])
def test_processes_build_disjoint_slices_of_the_global_batch(mlqa, mixing):
  kw = dict(hard_negatives=True, mixing=mixing)
  full = _take(_pipe(mlqa, **kw), 10)
  quarter = BATCH // 4
  parts = [_take(_pipe(mlqa, rows=range(i * quarter, (i + 1) * quarter),
                       **kw), 10) for i in range(4)]
  for step, batch in enumerate(full):
    for k in batch:
      joined = np.concatenate([p[step][k] for p in parts])
      assert np.array_equal(joined, batch[k])
    slices = [set(p[step]["question"]) for p in parts]
    assert sum(len(s) for s in slices) == len(set().union(*slices)) == BATCH


def test_batch_larger_than_the_data_is_rejected(mlqa):
  # MLQA-R has 500 Spanish questions: a 600-pair X-X batch cannot exist.
  with pytest.raises(ValueError, match=r"exceeds the 4\d\d distinct "
                     r"questions \(answer groups\) available for X-X batches"
                     " in es"):
    _pipe(mlqa, batch_size=600)
  # With only X-Y batches, the ~1,148 ids with a second language suffice.
  _pipe(mlqa, batch_size=600, ratio=0.0)
  with pytest.raises(ValueError, match=r"exceeds the 11\d\d distinct"):
    _pipe(mlqa, batch_size=2000, ratio=0.0)


def test_single_language_cannot_make_cross_lingual_batches():
  cfg = make_data_config(languages=("en",))
  with pytest.raises(ValueError, match="no cross-lingual"):
    pipeline.build_train_pipeline(cfg, tokenization.ByteTokenizer())
  mono_only = pipeline.build_train_pipeline(
      make_data_config(languages=("en",), ratio=1.0),
      tokenization.ByteTokenizer())
  batch = next(mono_only.iterator())
  assert set(batch["query_lang"]) == {0}


def test_interleaved_rows_build_their_rows_of_the_global_batch(mlqa):
  full, odd = (_take(_pipe(mlqa, rows=rows), 3) for rows in (None, [1, 3, 7]))
  for whole, part in zip(full, odd):
    for k in whole:
      np.testing.assert_array_equal(part[k], whole[k][[1, 3, 7]])


@pytest.mark.parametrize("rows", [[4, 8], [], [3, 2], [-1, 2], [[0, 1]]])
def test_rows_outside_the_global_batch_are_rejected(mlqa, rows):
  with pytest.raises(ValueError, match="are not ascending rows of the "
                     "global batch of 8"):
    _pipe(mlqa, rows=rows)


def test_example_mixing_needs_a_whole_number_of_xx_pairs():
  with pytest.raises(ValueError, match="must be a whole number"):
    make_data_config(mixing="example", ratio=0.3)


def test_no_answer_sentence_twice_in_a_batch():
  """XQuAD-R questions often share an answer sentence: never in one batch."""
  cfg = make_data_config(train="xquad_r:train", eval=("xquad_r:test",),
                         batch_size=32)
  dataset = loading.load_training_set(cfg)
  answer = {(r.qid, r.lang): r.answer_sentence
            for rs in dataset.records.values() for r in rs}
  pipe = pipeline.build_train_pipeline(cfg, tokenization.ByteTokenizer())
  table = pipe.table
  groups = table.group[table.is_monolingual]
  assert len(np.unique(groups)) < len(groups) // 11  # Shared answers exist.
  for b in _take(pipe, 200):
    texts = {answer[table.qids[q], table.languages[l]]
             for q, l in zip(b["question"], b["passage_lang"])}
    assert len(texts) == 32
    assert len(set(b["answer_group"])) == 32


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_ratio_outside_unit_interval_is_rejected(ratio):
  with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
    make_data_config(ratio=ratio)
