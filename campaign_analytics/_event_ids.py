"""Event ids a load has seen, kept as 128-bit numbers, to find duplicates in a batch.

An event id is an MD5 digest in hex (32 characters); held as two 64-bit words
it takes 16 bytes, and looking a batch up costs a binary search per id instead
of rebuilding a hash table of everything seen for every batch.
"""

from __future__ import annotations

import hashlib
import re
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EventIdSet", "id_words"]

Words: TypeAlias = tuple[np.ndarray, np.ndarray]

_DIGITS = 32
_ID_FORM = re.compile(r"[0-9a-f]{32}")
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
for _value, _digit in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_digit] = _value


def id_words(ids: pa.Array | pa.ChunkedArray) -> Words:
    """The high and low 64-bit words of each event id.

    An id of this package's form (32 lowercase hex digits) is read as the
    number it spells. Any other text (an id written by another tool) stands
    for the MD5 of its UTF-8 bytes, so two ids are one key only when their
    texts are equal (but for a 1 in 2**128 chance).

    Raises
    ------
    ValueError
        An id is null.

    Examples
    --------
    >>> high, low = id_words(pa.array(["00000000000000010000000000000002"]))
    >>> int(high[0]), int(low[0])
    (1, 2)
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    ids = ids.cast(pa.string())
    n = len(ids)
    if ids.null_count:
        raise ValueError("an event id is null")
    if not n:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32, count=n + 1, offset=ids.offset * 4)
    start, end = int(offsets[0]), int(offsets[-1])
    if end - start == n * _DIGITS and np.all(np.diff(offsets) == _DIGITS):
        digits = _HEX_VALUE[np.frombuffer(ids.buffers()[2], dtype=np.uint8, count=end - start, offset=start)]
        if digits.max() <= 15:
            return _words(((digits[0::2] << 4) | digits[1::2]).reshape(n, _DIGITS // 2))
    octets = [
        bytes.fromhex(text) if _ID_FORM.fullmatch(text) else hashlib.md5(text.encode()).digest()
        for text in ids.to_pylist()
    ]
    return _words(np.frombuffer(b"".join(octets), dtype=np.uint8).reshape(n, 16))


def _words(octets: np.ndarray) -> Words:
    words = np.ascontiguousarray(octets).view(">u8").reshape(len(octets), 2).astype(np.uint64)
    return words[:, 0].copy(), words[:, 1].copy()


class EventIdSet:
    """A set of event ids, sorted by their high word.

    Examples
    --------
    >>> seen = EventIdSet()
    >>> ids = pa.array(["a" * 32, "b" * 32, "a" * 32])
    >>> seen.add_new(id_words(ids), pa.table({"line": [1, 2, 3]})).tolist()
    [0, 1]
    >>> seen.add_new(id_words(pa.array(["b" * 32, "c" * 32])), pa.table({"line": [4, 5]})).tolist()
    [1]
    """

    def __init__(self) -> None:
        self._high = np.empty(0, dtype=np.uint64)
        self._low = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._high)

    def add_new(self, words: Words, order: pa.Table | None = None) -> np.ndarray:
        """Add the ids not in the set yet; the positions of the rows that added them, ascending.

        Of ids that occur more than once here, the row first by ``order``'s
        columns (ascending; one row per id) is the one that adds it, or the
        first row without ``order``.
        """
        high, low = words
        n = len(high)
        by_id = np.argsort(high, kind="stable")
        if n > 1 and np.any((high[by_id][1:] == high[by_id][:-1]) & (low[by_id][1:] != low[by_id][:-1])):
            by_id = np.lexsort((low, high))  # two ids share a high word: equal ids must be side by side
        sorted_high, sorted_low = high[by_id], low[by_id]
        keep = np.ones(n, dtype=bool)
        repeat = (sorted_high[1:] == sorted_high[:-1]) & (sorted_low[1:] == sorted_low[:-1])
        if repeat.any():
            keep = _firsts(by_id, repeat, pa.table({"row": np.arange(n)}) if order is None else order)[by_id]
        at = np.searchsorted(self._high, sorted_high)
        found = np.zeros(n, dtype=bool)
        candidates = np.flatnonzero(at < len(self._high))
        candidates = candidates[self._high[at[candidates]] == sorted_high[candidates]]
        ends = np.searchsorted(self._high, sorted_high[candidates], side="right")
        single = ends - at[candidates] == 1
        found[candidates[single]] = self._low[at[candidates[single]]] == sorted_low[candidates[single]]
        for k, end in zip(candidates[~single].tolist(), ends[~single].tolist(), strict=True):
            found[k] = bool((self._low[at[k]:end] == sorted_low[k]).any())
        new = keep & ~found
        self._high = np.insert(self._high, at[new], sorted_high[new])
        self._low = np.insert(self._low, at[new], sorted_low[new])
        return np.sort(by_id[new])


def _firsts(by_id: np.ndarray, repeat: np.ndarray, order: pa.Table) -> np.ndarray:
    """Per row, whether it is the first of its id by ``order``.

    ``by_id`` lists the rows sorted by id; ``repeat`` says, along it, which row has the id of the one before.
    """
    n = len(by_id)
    group = np.empty(n, dtype=np.int64)
    group[by_id] = np.concatenate([[0], np.cumsum(~repeat)])
    repeated = np.flatnonzero(np.bincount(group)[group] > 1)
    candidates = order.take(pa.array(repeated)).append_column("_group", pa.array(group[repeated]))
    ranked = pc.sort_indices(candidates, [("_group", "ascending"), *((c, "ascending") for c in order.column_names)])
    ranked_rows = repeated[ranked.to_numpy()]
    ranked_groups = group[ranked_rows]
    first = np.ones(n, dtype=bool)
    first[repeated] = False
    first[ranked_rows[np.concatenate([[True], ranked_groups[1:] != ranked_groups[:-1]])]] = True
    return first
