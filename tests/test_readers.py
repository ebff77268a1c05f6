"""Readers reproduce the published LAReQA counts; sources agree; bad files."""

import json

import pytest

from conftest import make_data_config
from data_pipeline import lareqa
from data_pipeline import loading
from data_pipeline import sources

# LAReQA README / paper Table 10: (questions, candidate sentences) a language.
XQUAD_CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180,
                    "es": 1215, "hi": 1244, "ru": 1219, "th": 852,
                    "tr": 1167, "vi": 1209, "zh": 1196}
MLQA_COUNTS = {"ar": (517, 2545), "de": (512, 2362), "en": (1148, 6264),
               "es": (500, 1787), "hi": (507, 2426), "vi": (511, 2828),
               "zh": (504, 2322)}


def _load(name, **kw):
  cfg = make_data_config(train=name, **kw)
  return loading.load(cfg.train, cfg).dataset


@pytest.fixture(scope="module")
def xquad():
  return _load("xquad_r")


@pytest.fixture(scope="module")
def mlqa():
  return _load("mlqa_r")


def test_xquad_r_counts(xquad):
  assert xquad.languages == tuple(sorted(XQUAD_CANDIDATES))
  assert {l: len(r) for l, r in xquad.records.items()} == {
      l: 1190 for l in XQUAD_CANDIDATES}
  assert {l: len(c) for l, c in xquad.candidates.items()} == XQUAD_CANDIDATES
  assert xquad.num_candidates == 13_014
  # 11-way parallel: every id in every language.
  assert all(xquad.qids(l) == xquad.qids("en") for l in xquad.languages)


def test_mlqa_r_counts(mlqa):
  assert {l: (len(mlqa.records[l]), len(mlqa.candidates[l]))
          for l in mlqa.languages} == MLQA_COUNTS
  assert mlqa.num_questions == 4_199 and mlqa.num_candidates == 20_534
  # Every id is in English plus 1 to 3 other languages.
  per_id = {}
  for lang in mlqa.languages:
    for q in mlqa.qids(lang):
      per_id[q] = per_id.get(q, 0) + 1
  assert len(per_id) == 1_148 and mlqa.qids() == mlqa.qids("en")
  assert set(per_id.values()) == {2, 3, 4}


def test_answer_sentence_is_the_one_holding_answer_start():
  """Records point at the sentence whose span contains answer_start."""
  info = sources.dataset_info("xquad_r")
  path = info.path(sources.resolve_root(), "de")
  raw = json.load(open(path, encoding="utf-8"))["data"]
  truth = {q["id"]: (q["answers"][0], p["sentence_breaks"])
           for a in raw for p in a["paragraphs"] for q in p["qas"]}
  dataset = _load("xquad_r", languages=("de",))
  contains_text = 0
  for r in dataset.records["de"]:
    answer, breaks = truth[r.qid]
    begin, end = breaks[r.answer_index]
    assert begin <= answer["answer_start"] < end
    assert dataset.candidates["de"][r.answer_candidate] == r.answer_sentence
    contains_text += answer["text"] in r.answer_sentence
  # A few answers run over a sentence break; nearly all lie inside.
  assert contains_text / len(dataset.records["de"]) > 0.98


def test_tfds_source_equals_json_source(xquad, mlqa):
  for json_set in (xquad, mlqa):
    name = json_set.name
    tfds_set = _load(name, source="tfds")
    assert tfds_set.records == json_set.records
    assert tfds_set.candidates == json_set.candidates


def test_tfds_load_by_name(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_pipeline import tfds_builders  # pylint: disable=g-import-not-at-top,unused-import
  info = sources.dataset_info("mlqa_r")
  ds = tfds.load("mlqa_r", split="de", data_dir=str(tmp_path),
                 download_and_prepare_kwargs={
                     "download_config": tfds.download.DownloadConfig(
                         manual_dir=str(sources.resolve_root() /
                                        info.folder))})
  examples = list(tfds.as_numpy(ds))
  assert sum(len(e["questions"]["id"]) for e in examples) == 512
  assert sum(len(e["sentences"]) for e in examples) == 2_362


def test_root_missing_one_file_lists_it(tmp_path):
  info = sources.dataset_info("xquad_r")
  for lang in info.languages:
    if lang != "th":
      dest = info.path(tmp_path, lang)
      dest.parent.mkdir(parents=True, exist_ok=True)
      dest.write_bytes(info.path(sources.resolve_root(), lang).read_bytes())
  with pytest.raises(FileNotFoundError, match=r"missing \[.*th\.json'\]"):
    _load("xquad_r", root=str(tmp_path))
  assert _load("xquad_r", root=str(tmp_path), languages=("de",)).num_questions


def test_missing_folder_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="prepare_data.py"):
    _load("xquad_r", root=str(tmp_path))


@pytest.mark.parametrize("content, match", [
    ('{"data": [{"title": "x", "paragraphs": [', "not valid JSON"),
    ('{"version": 1}', "no top-level 'data'"),
    ('{"data": [{"title": "x", "paragraphs": [{"sentences": ["a"]}]}]}',
     "malformed paragraph"),
    ('{"data": [{"title": "x", "paragraphs": [{"sentences": ["a"], '
     '"sentence_breaks": [[0, 1]], "qas": [{"id": "1", "question": "q", '
     '"answers": [{"text": "b", "answer_start": 5}]}]}]}]}',
     "lies in no sentence"),
])
def test_malformed_json_is_rejected(tmp_path, content, match):
  path = tmp_path / "en.json"
  path.write_text(content)
  with pytest.raises(lareqa.DataFormatError, match=match):
    lareqa.read_file(str(path), "en")


def test_unknown_language_is_rejected():
  with pytest.raises(ValueError, match=r"Unknown language code\(s\) \['xx'\]"):
    make_data_config(train="xquad_r", languages=("de", "xx"))


def test_unknown_dataset_is_rejected():
  with pytest.raises(ValueError, match="Unknown data set 'squad_x'"):
    make_data_config(train="squad_x")
