"""The canonical record types every data source is read into.

A data set is a set of languages; each language holds question records and a
candidate pool (every sentence instance of every paragraph, in file order).
Languages are aligned by question id, never by sentence index: the same id in
two languages is the same question, and its answer sentences are translations.
"""

import dataclasses
from typing import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Question:
  """A question of one paragraph, as read from a file."""
  qid: str
  text: str
  answer_index: int  # Index of the answer sentence within the paragraph.


@dataclasses.dataclass(frozen=True)
class Paragraph:
  """A sentence-split paragraph with its questions, in one language."""
  lang: str
  title: str
  article_index: int
  paragraph_index: int
  sentences: tuple[str, ...]
  questions: tuple[Question, ...]


@dataclasses.dataclass(frozen=True)
class QARecord:
  """One question in one language, with its answer and paragraph.

  `sentence_offset` is the candidate index of the paragraph's first sentence
  in its language's candidate pool, so the answer candidate is
  `sentence_offset + answer_index` and the paragraph occupies
  `[sentence_offset, sentence_offset + len(sentences))`.
  """
  qid: str
  lang: str
  question: str
  answer_index: int
  sentences: tuple[str, ...]
  title: str
  article_index: int
  paragraph_index: int
  sentence_offset: int

  @property
  def answer_sentence(self) -> str:
    return self.sentences[self.answer_index]

  @property
  def answer_candidate(self) -> int:
    return self.sentence_offset + self.answer_index


@dataclasses.dataclass(frozen=True)
class RetrievalDataset:
  """Question records and candidate sentences of several aligned languages."""
  name: str
  records: Mapping[str, tuple[QARecord, ...]]
  candidates: Mapping[str, tuple[str, ...]]

  @property
  def languages(self) -> tuple[str, ...]:
    return tuple(sorted(self.records))

  def qids(self, lang: str | None = None) -> frozenset[str]:
    """Question ids of one language, or of all languages together."""
    langs = [lang] if lang else self.languages
    return frozenset(r.qid for l in langs for r in self.records[l])

  @property
  def num_questions(self) -> int:
    return sum(len(r) for r in self.records.values())

  @property
  def num_candidates(self) -> int:
    return sum(len(c) for c in self.candidates.values())


def build_dataset(
    name: str, paragraphs: Mapping[str, Sequence[Paragraph]]
) -> RetrievalDataset:
  """Turns per-language paragraphs into records and candidate pools."""
  records, candidates = {}, {}
  for lang, paras in paragraphs.items():
    lang_records, pool = [], []
    for p in paras:
      for q in p.questions:
        lang_records.append(QARecord(
            qid=q.qid, lang=lang, question=q.text,
            answer_index=q.answer_index, sentences=p.sentences,
            title=p.title, article_index=p.article_index,
            paragraph_index=p.paragraph_index, sentence_offset=len(pool)))
      pool.extend(p.sentences)
    records[lang] = tuple(lang_records)
    candidates[lang] = tuple(pool)
  return RetrievalDataset(name=name, records=records, candidates=candidates)
