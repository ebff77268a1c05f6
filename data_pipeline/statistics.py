"""What a stream of batches really holds: the checks of the hybrid design."""

import collections
from typing import Iterable, Mapping, Sequence

import numpy as np


def batch_statistics(batches: Iterable[Mapping[str, np.ndarray]],
                     languages: Sequence[str]) -> dict:
  """Summarises global batches (as `TrainPipeline.batch` yields them).

  Every figure is measured from what the batches hold: a batch counts as X-X
  when all its pairs have query language = passage language, in one
  language. The violations that must be 0: repeated question ids or answer
  groups in a batch, X-X batches with several languages, and pairs drawn as
  X-Y that have one language (a check against the sampler's own flag).
  """
  num = xx_batches = pairs = xx_pairs = 0
  duplicate_ids = duplicate_answers = cross_same = mixed_xx = 0
  query_tokens = passage_tokens = 0
  lang_counts = {"query": collections.Counter(),
                 "passage": collections.Counter()}
  pair_counts = collections.Counter()
  for b in batches:
    num += 1
    q, p = b["query_lang"], b["passage_lang"]
    same = q == p
    xx_batches += bool(same.all() and len(set(q)) == 1)
    mixed_xx += bool(b["drawn_monolingual"].all() and len(set(q)) > 1)
    pairs += len(q)
    xx_pairs += int(same.sum())
    duplicate_ids += len(q) - len(set(b["question"].tolist()))
    duplicate_answers += len(q) - len(set(b["answer_group"].tolist()))
    cross_same += int(np.sum(~b["drawn_monolingual"] & same))
    query_tokens += int(b["query_mask"].sum())
    passage_tokens += int(b["passage_mask"].sum())
    for ql, pl in zip(q, p):
      lang_counts["query"][languages[ql]] += 1
      lang_counts["passage"][languages[pl]] += 1
      pair_counts[f"{languages[ql]}-{languages[pl]}"] += 1
  return {
      "num_batches": num,
      "num_pairs": pairs,
      "xx_fraction": xx_batches / max(num, 1),
      "xx_example_fraction": xx_pairs / max(pairs, 1),
      "language_counts": {k: dict(sorted(v.items()))
                          for k, v in lang_counts.items()},
      "pair_counts": dict(sorted(pair_counts.items())),
      "duplicate_ids": duplicate_ids,
      "duplicate_answers": duplicate_answers,
      "cross_same_language": cross_same,
      "xx_batches_with_several_languages": mixed_xx,
      "mean_query_tokens": query_tokens / max(pairs, 1),
      "mean_passage_tokens": passage_tokens / max(pairs, 1),
  }
