"""The LAReQA protocol against an independent brute-force implementation, and
ScaNN against exact search."""

import math

import numpy as np
import pytest

from data_pipeline import records
from hybrid_jax import config as config_lib
from hybrid_jax import sharding
from hybrid_jax.evaluation import exact_search
from hybrid_jax.evaluation import protocol
from hybrid_jax.evaluation import results
from hybrid_jax.evaluation import scann_index
from hybrid_jax.evaluation import stopwatch

# Question ids per language, MLQA-R style: every id in en, some elsewhere
# (2 to 4 languages per id); ar and de share none, so the (ar, de) pairs
# have no queries.
IDS = {"en": ["q0", "q1", "q2", "q3", "q4", "q5"],
       "de": ["q0", "q2", "q4"],
       "zh": ["q5", "q1", "q3", "q4"],
       "ar": ["q1"]}


def _dataset() -> records.RetrievalDataset:
  """Three languages; each id's paragraph has 3 sentences, answer 1 (or 2)."""
  paragraphs = {}
  for lang, ids in IDS.items():
    paragraphs[lang] = [records.Paragraph(
        lang=lang, title=qid, article_index=i, paragraph_index=0,
        sentences=tuple(f"{lang} {qid} s{j}" for j in range(3)),
        questions=(records.Question(qid, f"{lang} {qid}?", 1 + i % 2),))
        for i, qid in enumerate(ids)]
  return records.build_dataset("synthetic", paragraphs)


def _embeddings(dataset, seed=0) -> protocol.Embeddings:
  """Noisy shared vectors per id, so that answers tend to rank well, and a
  duplicated candidate (a tie) in every language."""
  rng = np.random.default_rng(seed)
  topic = {q: rng.standard_normal(8) for q in IDS["en"]}
  queries, candidates = {}, {}
  for lang in dataset.languages:
    queries[lang] = np.stack([topic[r.qid] + rng.standard_normal(8)
                              for r in dataset.records[lang]])
    pool = rng.standard_normal((len(dataset.candidates[lang]), 8))
    for r in dataset.records[lang]:
      pool[r.answer_candidate] += 2 * topic[r.qid]
    pool[0] = pool[dataset.records[lang][0].answer_candidate]  # A tie.
    candidates[lang] = pool
  unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(
      np.float32)
  return protocol.Embeddings({l: unit(v) for l, v in queries.items()},
                             {l: unit(v) for l, v in candidates.items()})


def _reference(dataset, emb):
  """Plain-Python LAReQA: float64 scores, sorted by (-score, index)."""
  langs = dataset.languages
  answer = {l: {r.qid: r.answer_candidate for r in dataset.records[l]}
            for l in langs}
  offset, pool = {}, []
  for l in langs:
    offset[l] = len(pool)
    pool.extend(emb.candidates[l].astype(np.float64))
  pool = np.array(pool)
  pool_lang = [l for l in langs for _ in dataset.candidates[l]]

  def score(q, cands, relevant, query_lang=None):
    s = cands @ q.astype(np.float64)
    order = sorted(range(len(cands)), key=lambda j: (-s[j], j))
    ranks = sorted(order.index(r) + 1 for r in relevant)
    top = order[:10]
    hits = [j for j in top if j in relevant]
    p, r = len(hits) / 10, len(hits) / len(relevant)
    first = min(ranks)
    out = {
        "map": sum((i + 1) / rank for i, rank in enumerate(ranks)) / len(ranks),
        "r@1": float(order[0] in relevant) / len(relevant),
        "mrr@10": 1 / first if first <= 10 else 0.0,
        "ndcg@10": sum(1 / math.log2(rank + 1) for rank in ranks if rank <= 10)
                   / sum(1 / math.log2(i + 2)
                         for i in range(min(len(relevant), 10))),
        "p@10": p, "r@10": r, "f1@10": 2 * p * r / (p + r) if p + r else 0.0}
    if query_lang:
      out["rank_distance"] = (ranks[-1] - ranks[0] if len(ranks) > 1
                              else math.nan)
      out["same_language@10"] = sum(pool_lang[j] == query_lang
                                    for j in top) / 10
    return out

  def mean(rows):
    return {m: np.nanmean([row[m] for row in rows]) for m in rows[0]}

  mono, cross, multi = {}, {}, {}
  for x in langs:
    qs = emb.queries[x]
    recs = dataset.records[x]
    mono[x] = mean([score(qs[i], emb.candidates[x], {answer[x][r.qid]})
                    for i, r in enumerate(recs)])
    for y in langs:
      rows = [score(qs[i], emb.candidates[y], {answer[y][r.qid]})
              for i, r in enumerate(recs) if r.qid in answer[y]]
      if x != y and rows:
        cross[x, y] = mean(rows)
    multi[x] = mean([score(qs[i], pool,
                           {offset[y] + answer[y][r.qid] for y in langs
                            if r.qid in answer[y]}, x)
                     for i, r in enumerate(recs)])
  return mono, cross, multi


@pytest.mark.parametrize("index", ["exact", "brute_force"])
def test_protocol_equals_an_independent_brute_force(index):
  dataset = _dataset()
  emb = _embeddings(dataset)
  cfg = config_lib.EvalConfig(index=index)
  scores = protocol.run(dataset, emb, cfg, sharding.make_mesh(),
                        stopwatch.Stopwatch())
  summary = results.summarize(scores)
  mono, cross, multi = _reference(dataset, emb)

  assert len(cross) == 10 and ("ar", "de") not in cross
  assert set(summary["cross"]["matrix"]["de"]) == {"en", "zh"}  # Not ar.
  assert summary["cross"]["num_pairs"] == 10
  for lang in dataset.languages:
    for m, v in mono[lang].items():
      assert summary["mono"]["per_language"][lang][m] == pytest.approx(v)
    for m in results.MULTI_METRICS:
      assert summary["multi"]["per_language"][lang][m] == pytest.approx(
          multi[lang][m]), (lang, m)
    assert summary["rank_distance"]["per_language"][lang] == pytest.approx(
        multi[lang]["rank_distance"])
  for (x, y), means in cross.items():
    for m, v in means.items():
      assert summary["cross"]["matrix"][x][y][m] == pytest.approx(v)
  for m in ("map", "r@1", "mrr@10", "ndcg@10"):
    assert summary["mono"][m] == pytest.approx(
        np.mean([mono[l][m] for l in mono]))
    assert summary["cross"][m] == pytest.approx(
        np.mean([cross[p][m] for p in cross]))
  assert summary["multi"]["map"] == pytest.approx(
      np.mean([multi[l]["map"] for l in multi]))
  assert summary["rank_distance"]["mean"] == pytest.approx(
      np.mean([multi[l]["rank_distance"] for l in multi]))
  assert summary["index"]["recall_vs_exact"] == 1.0


def test_relevance_follows_question_ids_not_sentence_positions():
  dataset = _dataset()
  answer = protocol.answers(dataset)
  assert not len(protocol.cross_task(dataset, "ar", "de", answer).query_rows)
  task = protocol.cross_task(dataset, "en", "zh", answer)
  # en's q1, q3, q4, q5 are zh's paragraphs 1, 2, 3, 0 (3 sentences each);
  # their answers are sentences 2, 1, 2, 1.
  assert [dataset.records["en"][i].qid for i in task.query_rows] == [
      "q1", "q3", "q4", "q5"]
  np.testing.assert_array_equal(task.relevant,
                                [[3 + 2], [6 + 1], [9 + 2], [0 + 1]])
  multi = protocol.multi_task(dataset, "de", answer)
  offsets = protocol.pool_offsets(dataset)
  q2 = dataset.records["de"][1]
  assert q2.qid == "q2"
  en_q2 = next(r for r in dataset.records["en"] if r.qid == "q2")
  assert set(multi.relevant[1]) == {offsets["de"] + q2.answer_candidate,
                                    offsets["en"] + en_q2.answer_candidate,
                                    -1}  # Padding: q4 has 3 relevant.
  en = protocol.multi_task(dataset, "en", answer)  # 2 or 3 relevant: padded.
  assert (en.relevant == -1).sum(axis=1).tolist() == [1, 0, 1, 1, 0, 1]


def test_empty_candidate_pool_is_rejected():
  dataset = _dataset()
  broken = records.RetrievalDataset(
      name="broken", records=dataset.records,
      candidates={**dataset.candidates, "de": ()})
  with pytest.raises(ValueError, match=r"\['de'\] have no questions or an "
                     "empty candidate pool"):
    protocol.check_dataset(broken)
  with pytest.raises(ValueError, match="empty candidate pool"):
    scann_index.build(np.zeros((0, 4), np.float32),
                      config_lib.EvalConfig(), 10)
  with pytest.raises(ValueError, match="use eval.index='brute_force'"):
    scann_index.build(np.ones((5, 4), np.float32),
                      config_lib.EvalConfig(index="tree_ah"), 5)


def _clustered(num, dim, rng):
  centres = rng.standard_normal((64, dim))
  x = centres[rng.integers(0, 64, num)] + 0.5 * rng.standard_normal(
      (num, dim))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_scann_tree_ah_recall_against_exact_search():
  rng = np.random.default_rng(0)
  candidates = _clustered(20_000, 64, rng)
  queries = _clustered(1_000, 64, rng)
  cfg = config_lib.EvalConfig(index="tree_ah")
  searcher = scann_index.build(candidates, cfg, 10)
  found = scann_index.search(searcher, queries, 10)
  exact, _ = exact_search.search(queries, candidates,
                                 np.zeros((1000, 1), np.int64), 10,
                                 sharding.make_mesh())
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
  assert recall >= 0.99
  again = scann_index.search(scann_index.build(candidates, cfg, 10), queries,
                             10)
  np.testing.assert_array_equal(found, again)  # Deterministic.
