"""The set of seen event ids that deduplicates a load, against a plain Python reference."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign_analytics._event_ids import EventIdSet, id_words


def _ids(keys: list[int]) -> list[str]:
    return [hashlib.md5(str(k).encode()).hexdigest() for k in keys]


def _reference(batches: list[list[tuple[str, str, int]]]) -> list[list[int]]:
    """Rows kept per batch: ids not seen in earlier batches, the first of each by (file, line) within a batch."""
    seen: set[str] = set()
    kept = []
    for batch in batches:
        first: dict[str, int] = {}
        for row, (event_id, file, line) in enumerate(batch):
            if event_id in seen:
                continue
            if event_id not in first or (file, line) < (batch[first[event_id]][1], batch[first[event_id]][2]):
                first[event_id] = row
        seen.update(first)
        kept.append(sorted(first.values()))
    return kept


batch_rows = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from(["b.ndjson", "a.ndjson", "c/é.json"]), st.integers(1, 10**6)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(batch_rows, min_size=1, max_size=5))
def test_add_new_keeps_what_a_plain_set_keeps(batches: list[list[tuple[int, str, int]]]) -> None:
    rows = [[(_ids([key])[0], file, line) for key, file, line in batch] for batch in batches]
    seen = EventIdSet()
    got = []
    for batch in rows:
        ids = pa.array([r[0] for r in batch], pa.string())
        order = pa.table({"source_file": pa.array([r[1] for r in batch], pa.string()),
                          "source_line": pa.array([r[2] for r in batch], pa.int64())})
        got.append(seen.add_new(id_words(ids), order).tolist())
    assert got == _reference(rows)
    assert len(seen) == len({r[0] for batch in rows for r in batch})


def test_ids_that_share_a_high_word_stay_apart() -> None:
    a, b, c = "0123456789abcdef" + "0" * 16, "0123456789abcdef" + "f" * 16, "0123456789abcdef" + "1" * 16
    seen = EventIdSet()
    order = pa.table({"line": [1, 2, 3, 4]})
    assert seen.add_new(id_words(pa.array([a, b, a, b])), order).tolist() == [0, 1]
    assert seen.add_new(id_words(pa.array([c, b, a, c])), order).tolist() == [0]
    assert len(seen) == 3


def test_id_words_reads_hex_and_chunked_or_sliced_input() -> None:
    chunked = pa.chunked_array([["abcdef0123456789" * 2], ["0" * 31 + "1"]])
    high, low = id_words(chunked)
    assert high.tolist() == [0xABCDEF0123456789, 0] and low.tolist() == [0xABCDEF0123456789, 1]
    assert id_words(pa.array(["f" * 32, "e" * 32]).slice(1))[0].tolist() == [0xEEEEEEEEEEEEEEEE]
    assert [len(w) for w in id_words(pa.array([], pa.string()))] == [0, 0]


def test_ids_of_another_form_are_keyed_by_their_text() -> None:
    odd = ["A" * 32, "a" * 31, "g" * 32, "a" * 33, "id-7", "", "é"]
    seen = EventIdSet()
    order = pa.table({"line": np.arange(len(odd) + 1)})
    ids = pa.array([*odd, "a" * 32])
    assert seen.add_new(id_words(ids), order).tolist() == list(range(len(odd) + 1))
    assert seen.add_new(id_words(pa.array(["a" * 32, "A" * 32, "id-7", "id-8"])), order.slice(0, 4)).tolist() == [3]


def test_without_an_order_the_first_row_of_an_id_adds_it() -> None:
    seen = EventIdSet()
    assert seen.add_new(id_words(pa.array(["b" * 32, "a" * 32, "b" * 32, "a" * 32]))).tolist() == [0, 1]


def test_id_words_refuses_a_null_id() -> None:
    with pytest.raises(ValueError, match="null"):
        id_words(pa.array(["a" * 32, None], pa.string()))


def test_large_sets_stay_sorted_and_exact() -> None:
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 5_000, size=20_000).tolist()
    seen = EventIdSet()
    kept = 0
    for start in range(0, len(keys), 4_000):
        part = _ids(keys[start:start + 4_000])
        kept += len(seen.add_new(id_words(pa.array(part)), pa.table({"line": np.arange(len(part))})))
    assert kept == len(seen) == len(set(keys))
