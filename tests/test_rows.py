"""Taking rows of an Arrow table of several record batches: the rows asked, in the order asked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign_analytics import _rows
from campaign_analytics._rows import rows_at


def _table(sizes: list[int]) -> pa.Table:
    batches = []
    start = 0
    for size in sizes:
        numbers = range(start, start + size)
        columns = {"n": pa.array(numbers, pa.int64()), "s": pa.array([f"r{i}" for i in numbers], pa.string())}
        batches.append(pa.record_batch(columns))
        start += size
    return pa.Table.from_batches(batches, schema=pa.schema([("n", pa.int64()), ("s", pa.string())]))


@pytest.mark.parametrize("max_slices", [0, 64], ids=["taken", "sliced"])
@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    picks=st.lists(st.integers(0, 10**6), max_size=25),
)
def test_rows_come_in_the_order_asked(max_slices, sizes, picks):
    whole = _table(sizes)
    rows = np.array([p % whole.num_rows for p in picks] if whole.num_rows else [], dtype=np.int64)
    original = _rows._MAX_SLICES
    _rows._MAX_SLICES = max_slices
    try:
        taken = rows_at(whole, rows)
    finally:
        _rows._MAX_SLICES = original
    assert taken.schema == whole.schema
    assert taken.column("n").to_pylist() == rows.tolist()
    assert taken.column("s").to_pylist() == [f"r{i}" for i in rows.tolist()]


def test_all_rows_in_order_are_the_table_itself_and_a_few_moved_rows_are_slices():
    whole = _table([5, 1, 5])
    assert rows_at(whole, np.arange(11)) is whole
    moved = rows_at(whole, np.array([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 5]))
    assert moved.column("n").to_pylist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 5]
    # Slices share the table's buffers: the string data is not copied.
    assert moved.column("s").chunk(0).buffers()[2].address == whole.column("s").chunk(0).buffers()[2].address
