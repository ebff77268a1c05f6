"""The LAReQA protocol (Roy et al. 2020): what is ranked, what is relevant.

Over the languages of a data set (candidates: every sentence instance of
every paragraph of a language; a question's relevant candidate in language
Y is the answer sentence of the same question id in Y's file):

  mono   queries in X against the candidates of X, for every X;
  cross  queries in X whose id exists in Y against the candidates of Y, for
         every ordered pair X != Y (MLQA-R lacks many ids in many languages);
  multi  queries in X against the pool of every language's candidates; all
         answer sentences of the id are relevant.

Each (query set, pool) is a `Task`. It is searched exactly (the full ranks,
for mAP and rank distance, and the exact top 10) and, unless
eval.index="exact", with the configured index (the top 10, for the metrics
at a cutoff and the index's recall against the exact top 10). Scores are per
query; `results.summarize` turns them into the macro averages the papers
report.
"""

import dataclasses
from typing import Callable, Mapping

import jax
import numpy as np

from data_pipeline import records
from hybrid_jax import config as config_lib
from hybrid_jax.evaluation import exact_search
from hybrid_jax.evaluation import retrieval_metrics as rm
from hybrid_jax.evaluation import scann_index
from hybrid_jax.evaluation import stopwatch as stopwatch_lib

CUTOFF = 10  # The k of R@k, MRR@k, nDCG@k, P/R/F1@k and recall vs exact.
POOLED = "all"  # The pool name of the multilingual setting.
# Where each per-query value comes from: the exact full ranking, or the
# configured index's top 10.
EXACT_METRICS = ("map", "rank_distance")
INDEX_METRICS = ("r@1", "mrr@10", "ndcg@10", "p@10", "r@10", "f1@10",
                 "same_language@10")


@dataclasses.dataclass(frozen=True)
class Embeddings:
  """Embeddings of a data set: rows follow `records[lang]` / `candidates[lang]`."""
  queries: Mapping[str, np.ndarray]
  candidates: Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Task:
  """Some queries of one language against one candidate pool."""
  query_lang: str
  pool: str  # A language, or POOLED.
  query_rows: np.ndarray  # Rows of records[query_lang].
  relevant: np.ndarray  # [queries, max relevant] pool indices, -1 padded.


@dataclasses.dataclass(frozen=True)
class TaskScores:
  """Per-query metric values of a task."""
  qids: tuple[str, ...]
  values: dict[str, np.ndarray]


def check_dataset(dataset: records.RetrievalDataset) -> None:
  """Raises if some language has no questions or no candidates."""
  empty = [l for l in dataset.languages
           if not dataset.records[l] or not dataset.candidates[l]]
  if empty or not dataset.languages:
    raise ValueError(
        f"Data set {dataset.name} cannot be evaluated: language(s) {empty} "
        "have no questions or an empty candidate pool (check the files, "
        "the split and eval.languages).")


def answers(dataset) -> dict[str, dict[str, int]]:
  """lang -> question id -> its answer's candidate index in lang's pool."""
  return {l: {r.qid: r.answer_candidate for r in dataset.records[l]}
          for l in dataset.languages}


def pool_offsets(dataset) -> dict[str, int]:
  """Where each language's candidates start in the pooled corpus."""
  sizes = [len(dataset.candidates[l]) for l in dataset.languages]
  return dict(zip(dataset.languages,
                  np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()))


def mono_task(dataset, lang: str) -> Task:
  """Queries in `lang` against `lang`'s candidates."""
  answers = [r.answer_candidate for r in dataset.records[lang]]
  return Task(lang, lang, np.arange(len(answers)),
              np.asarray(answers, np.int64)[:, None])


def cross_task(dataset, query_lang: str, pool: str,
               answer: Mapping[str, dict[str, int]]) -> Task:
  """Queries in `query_lang` with an answer in `pool` against its candidates
  (`answer`: see `answers`)."""
  rows = [i for i, r in enumerate(dataset.records[query_lang])
          if r.qid in answer[pool]]
  relevant = [answer[pool][dataset.records[query_lang][i].qid] for i in rows]
  return Task(query_lang, pool, np.asarray(rows, np.int64),
              np.asarray(relevant, np.int64).reshape(-1, 1))


def multi_task(dataset, lang: str,
               answer: Mapping[str, dict[str, int]]) -> Task:
  """Queries in `lang` against the pooled corpus; every translation relevant
  (`answer`: see `answers`)."""
  offsets = pool_offsets(dataset)
  relevant = [[offsets[l] + answer[l][r.qid] for l in dataset.languages
               if r.qid in answer[l]] for r in dataset.records[lang]]
  width = max(len(r) for r in relevant)
  return Task(lang, POOLED, np.arange(len(relevant)),
              np.asarray([r + [-1] * (width - len(r)) for r in relevant],
                         np.int64))


def index_ranks(top: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """Ranks of the relevant candidates within a top-k list (else UNRANKED)."""
  hit = (top[:, None, :] == relevant[:, :, None]) & (relevant[:, :, None] >= 0)
  position = np.argmax(hit, axis=2) + 1
  return np.where(relevant < 0, 0,
                  np.where(hit.any(axis=2), position, rm.UNRANKED))


def _at_cutoff(ranks: np.ndarray) -> dict[str, np.ndarray]:
  return {"mrr@10": rm.reciprocal_rank_at(ranks, CUTOFF),
          "ndcg@10": rm.ndcg_at(ranks, CUTOFF),
          "p@10": rm.precision_at(ranks, CUTOFF),
          "r@10": rm.recall_at(ranks, CUTOFF),
          "f1@10": rm.f1_at(ranks, CUTOFF)}


@dataclasses.dataclass
class _Searchers:
  """ScaNN searchers, built once per pool and reused by every query language."""
  cfg: config_lib.EvalConfig
  pools: Mapping[str, np.ndarray]
  watch: stopwatch_lib.Stopwatch
  built: dict = dataclasses.field(default_factory=dict)

  def top(self, pool: str, queries: np.ndarray, k: int) -> np.ndarray:
    if pool not in self.built:
      with self.watch("index"):
        self.built[pool] = scann_index.build(self.pools[pool], self.cfg,
                                             CUTOFF)
    with self.watch("search"):
      return scann_index.search(self.built[pool], queries, k)


def score_task(task: Task, dataset, embeddings: Embeddings,
               pools: Mapping[str, np.ndarray],
               index_top: Callable[[str, np.ndarray, int], np.ndarray] | None,
               mesh: jax.sharding.Mesh,
               watch: stopwatch_lib.Stopwatch) -> TaskScores:
  """Per-query metrics of one task.

  Args:
    task: the queries, pool and relevant candidates.
    dataset: the data set (question ids, candidate languages).
    embeddings: of every question and candidate.
    pools: candidate embeddings by pool name (languages and POOLED).
    index_top: (pool, queries, k) -> top-k ids from the index; None: the
      exact search serves as the index.
    mesh: for the exact search.
    watch: collects the time of each stage.
  """
  queries = embeddings.queries[task.query_lang][task.query_rows]
  k = min(CUTOFF, len(pools[task.pool]))
  with watch("exact"):
    exact_top, full = exact_search.search(queries, pools[task.pool],
                                          task.relevant, k, mesh)
  top = exact_top if index_top is None else index_top(task.pool, queries, k)
  with watch("metrics"):
    at_k = index_ranks(top, task.relevant)
    values = {"map": rm.average_precision(full),
              "r@1": rm.recall_at(at_k, 1), **_at_cutoff(at_k),
              "recall_vs_exact": rm.overlap_at(top, exact_top, k)}
    if task.pool == POOLED:
      values["rank_distance"] = rm.rank_distance(full)
      languages = np.repeat(dataset.languages, [
          len(dataset.candidates[l]) for l in dataset.languages])
      same = (languages[np.maximum(top, 0)] == task.query_lang) & (top >= 0)
      values["same_language@10"] = same.sum(axis=1) / k
  qids = tuple(dataset.records[task.query_lang][i].qid
               for i in task.query_rows)
  return TaskScores(qids=qids, values=values)


@dataclasses.dataclass(frozen=True)
class ProtocolScores:
  """Per-query scores of every task of the three settings."""
  mono: dict[str, TaskScores]  # By language.
  cross: dict[tuple[str, str], TaskScores]  # By (query, candidate) language.
  multi: dict[str, TaskScores]  # By query language.


def run(dataset: records.RetrievalDataset, embeddings: Embeddings,
        cfg: config_lib.EvalConfig, mesh: jax.sharding.Mesh,
        watch: stopwatch_lib.Stopwatch) -> ProtocolScores:
  """Scores every query of `dataset` in the three settings."""
  check_dataset(dataset)
  langs = dataset.languages
  pools = {**embeddings.candidates,
           POOLED: np.concatenate([embeddings.candidates[l] for l in langs])}
  index_top = (None if cfg.index == "exact"
               else _Searchers(cfg, pools, watch).top)

  def score(task):
    return score_task(task, dataset, embeddings, pools, index_top, mesh,
                      watch)

  answer = answers(dataset)
  tasks = [cross_task(dataset, x, y, answer)
           for x in langs for y in langs if x != y]
  return ProtocolScores(
      mono={l: score(mono_task(dataset, l)) for l in langs},
      cross={(t.query_lang, t.pool): score(t) for t in tasks
             if len(t.query_rows)},  # MLQA-R: some pairs share no id.
      multi={l: score(multi_task(dataset, l, answer)) for l in langs})
