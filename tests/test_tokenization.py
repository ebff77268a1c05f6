"""Tokenization happens once and is cached by a hash of all its inputs."""

import numpy as np
import pytest
import tokenizers

from data_pipeline import tokenization

TEXTS = ["Wie viele Punkte?", "How many points did the defense allow?", "谁"]


class CountingTokenizer(tokenization.ByteTokenizer):
  calls = 0

  def encode(self, texts, max_length):
    CountingTokenizer.calls += 1
    return super().encode(texts, max_length)


def test_cache_hit_skips_tokenization(tmp_path):
  tok = CountingTokenizer()
  first = tokenization.tokenize_cached(TEXTS, tok, 16, "query: ", tmp_path,
                                       "t")
  second = tokenization.tokenize_cached(TEXTS, tok, 16, "query: ", tmp_path,
                                        "t")
  assert CountingTokenizer.calls == 1
  np.testing.assert_array_equal(first.ids, second.ids)
  assert len(list((tmp_path / "tokens").glob("t-*.npz"))) == 1


@pytest.mark.parametrize("change", [
    {"texts": TEXTS[:2]}, {"max_length": 17}, {"prefix": "passage: "},
    {"tokenizer": "word_level"}])
def test_any_input_change_makes_a_new_key(change, tmp_path):
  base = dict(texts=TEXTS, tokenizer=tokenization.ByteTokenizer(),
              max_length=16, prefix="query: ")
  if change.get("tokenizer"):
    change = {"tokenizer": _word_level(tmp_path)}
  assert tokenization.cache_key(**base) != tokenization.cache_key(
      **{**base, **change})


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
  tok = tokenization.ByteTokenizer()
  good = tokenization.tokenize_cached(TEXTS, tok, 16, "", tmp_path, "t")
  (entry,) = (tmp_path / "tokens").glob("t-*.npz")
  entry.write_bytes(b"not an npz")
  again = tokenization.tokenize_cached(TEXTS, tok, 16, "", tmp_path, "t")
  np.testing.assert_array_equal(good.ids, again.ids)


def test_byte_tokens_truncate_and_pad():
  arrays = tokenization.pack(
      tokenization.ByteTokenizer().encode(["abcdef", "é"], 5), 5, 1)
  np.testing.assert_array_equal(arrays.ids, [[0, 101, 102, 103, 2],
                                             [0, 199, 173, 2, 1]])
  np.testing.assert_array_equal(arrays.lengths, [5, 4])


def _word_level(tmp_path):
  vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "how": 4, "many": 5}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, "<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
  tok.save(str(tmp_path / "tokenizer.json"))
  return tokenization.HFTokenizer(tmp_path)


def test_hugging_face_tokenizer_file(tmp_path):
  tok = _word_level(tmp_path)
  assert tok.pad_id == 1
  assert tok.encode(["how many points", "how how how how"], 4) == [
      [0, 4, 5, 2], [0, 4, 4, 2]]
  with pytest.raises(FileNotFoundError, match="No tokenizer.json"):
    tokenization.HFTokenizer(tmp_path / "missing")


def test_a_cloud_cache_is_rejected():
  with pytest.raises(ValueError, match="must be a local folder"):
    tokenization.resolve_cache_dir("gs://bucket/cache")
