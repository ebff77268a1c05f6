"""TFDS builders for XQuAD-R and MLQA-R, reading the local LAReQA files.

One split per language; one example per paragraph, in file order. Usage:

  builder = tfds.builder("xquad_r", data_dir=DIR)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir="<data root>/lareqa/xquad-r"))
  ds = builder.as_dataset(split="de")

`read_paragraphs` does this and turns the examples back into the canonical
records, so the pipeline consumes either source the same way.
"""

import hashlib
import os
import pathlib
from typing import Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from data_pipeline import lareqa
from data_pipeline import records
from data_pipeline import sources


class _LareqaBuilder(tfds.core.GeneratorBasedBuilder,
                     skip_registration=True):
  """A LAReQA data set from manually placed files (`<lang>.json`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Paragraph-level examples, one split a language."}
  DATASET = ""  # Key into sources.DATASETS.

  @property
  def MANUAL_DOWNLOAD_INSTRUCTIONS(self):  # pylint: disable=invalid-name
    info = sources.DATASETS[self.DATASET]
    return (f"Place {{lang}}.json for {list(info.languages)} in manual_dir "
            f"(from {info.url}), or run `python tools/prepare_data.py`.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "title": tfds.features.Text(),
            "article_index": np.int32,
            "paragraph_index": np.int32,
            "sentences": tfds.features.Sequence(tfds.features.Text()),
            "questions": tfds.features.Sequence({
                "id": tfds.features.Text(),
                "question": tfds.features.Text(),
                "answer_index": np.int32,
            }),
        }),
        disable_shuffling=True,  # Candidate order is the file order.
        homepage="https://github.com/google-research-datasets/lareqa",
        license=sources.DATASETS[self.DATASET].license)

  def _split_generators(self, dl_manager):
    info = sources.DATASETS[self.DATASET]
    root = epath.Path(dl_manager.manual_dir)
    return {lang: self._generate_examples(root / f"{lang}.json", lang)
            for lang in info.languages}

  def _generate_examples(self, path, lang):
    for p in lareqa.read_file(path, lang):
      yield f"{p.article_index:05d}-{p.paragraph_index:05d}", {
          "title": p.title,
          "article_index": p.article_index,
          "paragraph_index": p.paragraph_index,
          "sentences": list(p.sentences),
          "questions": {"id": [q.qid for q in p.questions],
                        "question": [q.text for q in p.questions],
                        "answer_index": [q.answer_index
                                         for q in p.questions]},
      }


class XquadR(_LareqaBuilder):
  """XQuAD-R: 1,190 questions in 11 languages, 13,014 candidate sentences."""
  DATASET = "xquad_r"


class MlqaR(_LareqaBuilder):
  """MLQA-R: 4,199 questions in 7 languages, 20,534 candidate sentences."""
  DATASET = "mlqa_r"


_BUILDERS = {"xquad_r": XquadR, "mlqa_r": MlqaR}


def _paragraph(lang: str, ex) -> records.Paragraph:
  q = ex["questions"]
  return records.Paragraph(
      lang=lang, title=ex["title"].decode(),
      article_index=int(ex["article_index"]),
      paragraph_index=int(ex["paragraph_index"]),
      sentences=tuple(s.decode() for s in ex["sentences"]),
      questions=tuple(
          records.Question(qid=i.decode(), text=t.decode(), answer_index=int(a))
          for i, t, a in zip(q["id"], q["question"], q["answer_index"])))


def read_paragraphs(info: sources.DatasetInfo, root: epath.Path,
                    languages: Sequence[str], data_dir: pathlib.Path
                    ) -> dict[str, list[records.Paragraph]]:
  """Like `sources.read_paragraphs`, through the TFDS builder.

  The prepared data lives under `data_dir/<hash of the source files' sizes
  and times>`, so a changed data root or file is prepared anew.
  """
  languages = sources.languages_to_read(info, languages)
  sources.check_files(info, root, info.languages)
  paths = [info.path(root, l) for l in info.languages]
  stamp = hashlib.sha256(str([(os.fspath(p), p.stat().length, p.stat().mtime)
                              for p in paths]).encode()).hexdigest()[:16]
  builder = _BUILDERS[info.name](data_dir=str(data_dir / stamp))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(root / info.folder)))
  return {lang: [_paragraph(lang, ex) for ex in tfds.as_numpy(
      builder.as_dataset(split=lang))] for lang in languages}
