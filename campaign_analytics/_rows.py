"""Rows of an Arrow table by position, copying as little as the positions allow."""

from __future__ import annotations

from typing import Final

import numpy as np
import pyarrow as pa

__all__ = ["rows_at"]

# Up to this many runs of consecutive positions, the result is slices of the table (no copy).
_MAX_SLICES: Final[int] = 64


def rows_at(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """The rows at positions ``rows``, in that order.

    All rows in order give the table itself. Positions that run on
    consecutively (a few rows moved) give slices of it; others are taken from
    each record batch on its own, since a take over a table of several
    batches would first copy them all into one.

    Examples
    --------
    >>> table = pa.table({"n": [10, 11, 12, 13]})
    >>> rows_at(table, np.array([2, 3, 0])).column("n").to_pylist()
    [12, 13, 10]
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if n == table.num_rows and (n == 0 or np.all(rows[1:] > rows[:-1])):
        return table
    batches = table.to_batches()
    starts = np.cumsum([0] + [len(b) for b in batches])
    batch_of = np.searchsorted(starts, rows, side="right") - 1
    new_batch = np.diff(batch_of) != 0
    runs = np.flatnonzero(new_batch | (np.diff(rows) != 1)) + 1
    if len(runs) < _MAX_SLICES:
        pieces = [
            batches[int(batch_of[run[0]])].slice(int(rows[run[0]] - starts[batch_of[run[0]]]), len(run))
            for run in np.split(np.arange(n), runs) if len(run)
        ]
    else:
        pieces = [
            batches[int(batch_of[run[0]])].take(pa.array(rows[run] - starts[batch_of[run[0]]]))
            for run in np.split(np.arange(n), np.flatnonzero(new_batch) + 1) if len(run)
        ]
    return pa.Table.from_batches(pieces, schema=table.schema)
