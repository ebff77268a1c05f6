"""Tokenizers, and the on-disk cache of tokenized texts.

Texts are tokenized once per (texts, tokenizer, max length, prefix) and stored
as padded int32 arrays in `<cache_dir>/tokens/<name>-<hash>.npz`; the hash
covers all four inputs, so any change of data or settings makes a new entry.
The training pipeline only indexes these arrays.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import tempfile
from typing import Protocol, Sequence

import numpy as np

CACHE_ENV = "HYBRID_JAX_CACHE"


class Tokenizer(Protocol):
  """What the pipeline needs of a tokenizer."""
  fingerprint: str  # Changes whenever the tokenization would change.
  pad_id: int
  vocab_size: int

  def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids with special tokens, truncated to max_length."""


class ByteTokenizer:
  """UTF-8 bytes as tokens, in RoBERTa's special-token layout.

  Ids: <s>=0, <pad>=1, </s>=2, <unk>=3, byte b = 4 + b. For small models
  trained from scratch (tests, smoke runs); real runs use the checkpoint's
  own tokenizer.
  """
  fingerprint = "bytes-v1"
  pad_id = 1
  vocab_size = 260

  def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
    return [[0] + [4 + b for b in t.encode("utf-8")[:max_length - 2]] + [2]
            for t in texts]


class HFTokenizer:
  """A Hugging Face `tokenizers` tokenizer (a checkpoint's tokenizer.json)."""

  def __init__(self, path: str | os.PathLike):
    import tokenizers  # pylint: disable=g-import-not-at-top
    path = pathlib.Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
      raise FileNotFoundError(
          f"No tokenizer.json at {path}: point the tokenizer at a Hugging "
          "Face checkpoint directory or a tokenizer.json file.")
    self._tok = tokenizers.Tokenizer.from_file(str(file))
    self._tok.no_padding()
    self.fingerprint = hashlib.sha256(self._tok.to_str().encode()).hexdigest()
    pad = next((self._tok.token_to_id(t) for t in ("<pad>", "[PAD]")
                if self._tok.token_to_id(t) is not None), None)
    if pad is None:
      raise ValueError(f"Tokenizer {file} has no <pad> or [PAD] token.")
    self.pad_id = pad
    self.vocab_size = self._tok.get_vocab_size()

  def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
    self._tok.enable_truncation(max_length)
    return [e.ids for e in self._tok.encode_batch(list(texts))]


def load_tokenizer(spec: str) -> Tokenizer:
  """`bytes`, or the path of a checkpoint directory / tokenizer.json."""
  if spec == "bytes":
    return ByteTokenizer()
  return HFTokenizer(spec)


@dataclasses.dataclass(frozen=True)
class TokenArrays:
  """Padded token ids and true lengths of a list of texts."""
  ids: np.ndarray  # [num_texts, max_length] int32, padded with pad_id.
  lengths: np.ndarray  # [num_texts] int32.

  def __len__(self) -> int:
    return len(self.lengths)


def pack(token_lists: Sequence[Sequence[int]], max_length: int,
         pad_id: int) -> TokenArrays:
  """Pads token lists into fixed-width arrays."""
  ids = np.full((len(token_lists), max_length), pad_id, np.int32)
  lengths = np.zeros(len(token_lists), np.int32)
  for i, toks in enumerate(token_lists):
    ids[i, :len(toks)] = toks
    lengths[i] = len(toks)
  return TokenArrays(ids=ids, lengths=lengths)


def resolve_cache_dir(configured: str = "") -> pathlib.Path:
  """The configured cache dir, else $HYBRID_JAX_CACHE, else ~/.cache: a
  local folder (each host keeps its own cache)."""
  where = configured or os.environ.get(CACHE_ENV) or "~/.cache/hybrid_jax"
  if "://" in where:
    raise ValueError(
        f"The token and model cache {where!r} (data.cache_dir or "
        f"${CACHE_ENV}) must be a local folder; only work directories and "
        "the data root may be cloud paths.")
  return pathlib.Path(where).expanduser()


def cache_key(texts: Sequence[str], tokenizer: Tokenizer, max_length: int,
              prefix: str) -> str:
  """Hash of everything the token arrays depend on."""
  h = hashlib.sha256(json.dumps(
      [tokenizer.fingerprint, max_length, prefix]).encode())
  for t in texts:
    h.update(t.encode("utf-8"))
    h.update(b"\0")
  return h.hexdigest()


def tokenize_cached(texts: Sequence[str], tokenizer: Tokenizer,
                    max_length: int, prefix: str, cache_dir: pathlib.Path,
                    name: str) -> TokenArrays:
  """Tokenizes `prefix + text` for every text, reading/writing the cache."""
  key = cache_key(texts, tokenizer, max_length, prefix)
  safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
  path = cache_dir / "tokens" / f"{safe_name}-{key[:20]}.npz"
  if path.is_file():
    try:
      with np.load(path) as f:
        arrays = TokenArrays(ids=f["ids"], lengths=f["lengths"])
      if arrays.ids.shape == (len(texts), max_length):
        return arrays
    except (OSError, ValueError, KeyError):
      pass  # A corrupt entry is rebuilt below.
  arrays = pack(tokenizer.encode([prefix + t for t in texts], max_length),
                max_length, tokenizer.pad_id)
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz",
                                   delete=False) as tmp:
    np.savez(tmp, ids=arrays.ids, lengths=arrays.lengths)
  os.replace(tmp.name, path)  # Atomic: readers never see a partial file.
  return arrays


@dataclasses.dataclass(frozen=True)
class TokenizedDataset:
  """Token arrays of a data set's questions and candidates.

  Rows follow `dataset.languages` order: the questions of language l are rows
  `query_offsets[l] + i` for its i-th record, its candidates rows
  `passage_offsets[l] + j` for its j-th candidate sentence.
  """
  queries: TokenArrays
  passages: TokenArrays
  query_offsets: dict[str, int]
  passage_offsets: dict[str, int]


def _offsets(sizes: dict[str, int]) -> dict[str, int]:
  starts = np.concatenate([[0], np.cumsum(list(sizes.values()))[:-1]])
  return {l: int(s) for l, s in zip(sizes, starts)}


def tokenize_dataset(dataset, tokenizer: Tokenizer, *, max_query_length: int,
                     max_passage_length: int, query_prefix: str,
                     passage_prefix: str,
                     cache_dir: pathlib.Path) -> TokenizedDataset:
  """Tokenizes (through the cache) every question and candidate sentence."""
  langs = dataset.languages
  questions = [r.question for l in langs for r in dataset.records[l]]
  sentences = [s for l in langs for s in dataset.candidates[l]]
  return TokenizedDataset(
      queries=tokenize_cached(questions, tokenizer, max_query_length,
                              query_prefix, cache_dir,
                              f"{dataset.name}-queries"),
      passages=tokenize_cached(sentences, tokenizer, max_passage_length,
                               passage_prefix, cache_dir,
                               f"{dataset.name}-passages"),
      query_offsets=_offsets({l: len(dataset.records[l]) for l in langs}),
      passage_offsets=_offsets({l: len(dataset.candidates[l])
                                for l in langs}))
