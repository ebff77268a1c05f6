"""Reader for LAReQA / SQuAD-style JSON files (XQuAD-R, MLQA-R).

Format: `{"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}]}], "sentence_breaks":
[[start, end], ...], "sentences": [...]}]}]}`. The answer sentence of a
question is the sentence whose `[start, end)` span contains
`answers[0].answer_start`.
"""

import json

from etils import epath

from data_pipeline import records


class DataFormatError(ValueError):
  """A data file is missing, unreadable or not in the expected format."""


def _answer_index(breaks, start: int, where: str) -> int:
  for i, (begin, end) in enumerate(breaks):
    if begin <= start < end:
      return i
  raise DataFormatError(
      f"{where}: answer_start {start} lies in no sentence of "
      f"sentence_breaks {breaks}.")


def _paragraph(lang, title, a_idx, p_idx, raw, path) -> records.Paragraph:
  where = f"{path}: article {a_idx} ({title!r}) paragraph {p_idx}"
  try:
    sentences = tuple(raw["sentences"])
    breaks = raw["sentence_breaks"]
    if len(breaks) != len(sentences):
      raise DataFormatError(
          f"{where}: {len(sentences)} sentences but {len(breaks)} "
          "sentence_breaks.")
    questions = tuple(
        records.Question(
            qid=q["id"], text=q["question"],
            answer_index=_answer_index(
                breaks, q["answers"][0]["answer_start"],
                f"{where} question {q['id']}"))
        for q in raw["qas"])
  except (KeyError, IndexError, TypeError) as e:
    raise DataFormatError(
        f"{where}: malformed paragraph ({type(e).__name__}: {e}). Expected "
        "the LAReQA format with 'sentences', 'sentence_breaks' and 'qas' "
        "holding 'id', 'question' and 'answers'.") from e
  return records.Paragraph(
      lang=lang, title=title, article_index=a_idx, paragraph_index=p_idx,
      sentences=sentences, questions=questions)


def read_file(path: epath.PathLike, lang: str) -> list[records.Paragraph]:
  """Reads one language's LAReQA JSON file (a local path or a cloud URI)
  into paragraphs, in file order."""
  path = epath.Path(path)
  if not path.is_file():
    raise DataFormatError(
        f"Data file not found: {path}. Run `python tools/prepare_data.py` to "
        "download the data, or point --config.data.root (or the "
        "HYBRID_JAX_DATA environment variable) at a folder that holds it.")
  try:
    with path.open(encoding="utf-8") as f:
      articles = json.load(f)["data"]
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataFormatError(
        f"{path} is not valid JSON ({e}). The file is corrupt or "
        "truncated: delete it and rerun `python tools/prepare_data.py`.") from e
  except (KeyError, TypeError) as e:
    raise DataFormatError(
        f"{path} has no top-level 'data' list: not a SQuAD/LAReQA file.") from e
  paragraphs = []
  for a_idx, article in enumerate(articles):
    for p_idx, raw in enumerate(article.get("paragraphs", [])):
      paragraphs.append(
          _paragraph(lang, article.get("title", ""), a_idx, p_idx, raw, path))
  seen = set()
  for p in paragraphs:
    for q in p.questions:
      if q.qid in seen:
        raise DataFormatError(f"{path}: question id {q.qid} appears twice.")
      seen.add(q.qid)
  return paragraphs
