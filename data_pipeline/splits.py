"""Article-level splits, and the check that training never sees test data.

Articles are named by their title in the pivot language (English), which every
question id of XQuAD-R and MLQA-R has, so a split selects the same questions
in every language even where titles are translated (MLQA-R). The split is a
fixed function of the titles: articles sorted by the sha256 of their title,
the first `train_fraction` of them form `train`, the rest `test`.
"""

import hashlib
from typing import Mapping, Sequence

from data_pipeline import records

SPLITS = ("all", "train", "test")


def article_of_question(
    pivot: Sequence[records.Paragraph]) -> dict[str, str]:
  """Maps each question id to the pivot-language title of its article."""
  return {q.qid: p.title for p in pivot for q in p.questions}


def split_titles(titles: Sequence[str], split: str,
                 train_fraction: float) -> frozenset[str]:
  """The titles that belong to `split` ("all", "train" or "test")."""
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")
  order = sorted(set(titles),
                 key=lambda t: hashlib.sha256(t.encode()).hexdigest())
  if split == "all":
    return frozenset(order)
  num_train = round(len(order) * train_fraction)
  return frozenset(order[:num_train] if split == "train"
                   else order[num_train:])


def select_articles(
    paragraphs: Mapping[str, Sequence[records.Paragraph]],
    article_of: Mapping[str, str],
    titles: frozenset[str],
) -> dict[str, list[records.Paragraph]]:
  """Keeps the paragraphs whose questions belong to the given articles."""
  selected = {}
  for lang, paras in paragraphs.items():
    keep = []
    for p in paras:
      articles = {article_of.get(q.qid) for q in p.questions}
      if None in articles:
        raise ValueError(
            f"A {lang} paragraph of {p.title!r} holds a question id that the "
            "pivot language (en) lacks, so its article is unknown.")
      if len(articles) > 1:
        raise ValueError(
            f"A {lang} paragraph of {p.title!r} mixes questions of articles "
            f"{sorted(articles)}; cannot split it by article.")
      if articles & titles:
        keep.append(p)
    selected[lang] = keep
  return selected


def check_no_leakage(train: records.RetrievalDataset,
                     train_articles: frozenset[str],
                     evaluation: records.RetrievalDataset,
                     eval_articles: frozenset[str]) -> None:
  """Rejects training data that shares question ids or articles with eval."""
  shared_ids = train.qids() & evaluation.qids()
  train_name = train.name.partition(":")[0]
  eval_name = evaluation.name.partition(":")[0]
  shared_articles = train_articles & eval_articles
  if shared_ids or shared_articles:
    raise ValueError(
        f"Training set {train.name!r} overlaps evaluation set "
        f"{evaluation.name!r}: {len(shared_ids)} shared question ids and "
        f"{len(shared_articles)} shared articles (e.g. "
        f"{sorted(shared_articles)[:3]}). Train on another data set, or split "
        f"by article: data.train='{train_name}:train' with "
        f"data.eval='{eval_name}:test'.")
