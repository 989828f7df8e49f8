"""End to end against the simulator's truth: raw files → events table → items → metrics.

For several seeds, a simulated stream with lost, duplicated (also across files and
loads), out-of-order, malformed and foreign records is loaded, and every answer is
checked against what the simulator knows: per-item timestamps and flags, engagement
counts exactly, rates to 1e-12, time-to-delivery statistics to 1e-6 s, campaign
summaries, and version comparisons. The same answers must come from the table path,
an in-memory events frame (``ca.load``), an Ibis table, and a table filled in two loads.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import ibis
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import campaign_analytics as ca
from campaign_analytics.backends import duckdb_backend, events_table
from campaign_analytics.metrics import COMPARISON_VERDICTS, RATES
from campaign_analytics.simulate import SimulationTruth

SEEDS: Final[tuple[int, ...]] = (5, 23, 61)
ITEMS: Final[int] = 3000
BAD_RECORDS: Final[int] = 12
OTHER_TRIGGERS: Final[int] = 6

KEY: Final[list[str]] = ["channel_type", "item_id"]
STAGE_TIMES: Final[tuple[str, ...]] = ("sent_at", "delivered_at", "read_at", "interacted_at", "clicked_at")
FLAGS: Final[tuple[str, ...]] = ("delivered_implied", "delivered_on_read")
LATENCIES: Final[tuple[str, ...]] = ("time_to_delivery_s", "time_to_read_s", "time_to_click_s")
COUNTS: Final[tuple[str, ...]] = ("sent", "delivered", "read", "interacted", "clicked")
TTD_STATS: Final[tuple[str, ...]] = ("ttd_mean", "ttd_p50", "ttd_p90", "ttd_p99")
ARM: Final[str] = "metadata__experiment__arm"

GROUPINGS: Final[tuple[tuple[str, ...], ...]] = (
    (),
    ("channel_type",),
    ("template_id", "template_version"),
    ("label",),
    ("tag",),
    ("channel_type", "label"),
    (ARM,),
)
# Where the answers come from: the table path, ca.load()'s events frame, an Ibis
# table on a connection of our own, and a second table filled in two loads.
SOURCES: Final[tuple[str, ...]] = ("table", "frame", "ibis", "split")
# The table path answers every grouping; the other sources (which must give the same
# answers) a few that cover several keys, an integer key and exploded tags, so that
# the file stays within its time budget.
OTHER_SOURCE_GROUPINGS: Final[tuple[tuple[str, ...], ...]] = (
    ("template_id", "template_version"),
    ("tag",),
    ("channel_type", "label"),
)

# Compare read rates of template versions per channel and template (reads are feed-only).
COMPARE_WITHIN: Final[list[str]] = ["channel_type", "template_id"]


@dataclass
class World:
    """One simulated stream, its truth, and the tables loaded from it."""

    seed: int
    truth: SimulationTruth
    raw: Path
    table: str
    split_table: str

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The events as ``ca.load`` gives them: a pandas frame, no table written."""
        return ca.load(str(self.raw))

    @functools.cached_property
    def ibis_events(self) -> ibis.Table:
        """The events table opened as an Ibis table on a DuckDB connection of our own."""
        return events_table(self.table, backend=duckdb_backend(threads=2))

    def source(self, kind: str) -> str | pd.DataFrame | ibis.Table:
        """The events source named ``kind`` (one of :data:`SOURCES`)."""
        return {
            "table": lambda: self.table,
            "frame": lambda: self.frame,
            "ibis": lambda: self.ibis_events,
            "split": lambda: self.split_table,
        }[kind]()


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Simulate a stream and ingest it twice: in one load, and split over two loads."""
    seed: int = request.param
    root = tmp_path_factory.mktemp(f"truth{seed}")
    raw = root / "raw"
    truth = ca.simulate(raw, items=ITEMS, seed=seed, bad_records=BAD_RECORDS, other_triggers=OTHER_TRIGGERS)
    # The stream must exercise the quirks the answers have to survive.
    assert truth.duplicates > 0 and truth.quirks["cross_file_duplicates"] > 0
    assert truth.quirks["lost_events"] > 0 and truth.quirks["out_of_order_items"] > 0
    assert truth.quirks["delivered_on_read"] > 0 and truth.quirks["delivered_implied"] > 0
    assert truth.rejected == BAD_RECORDS and truth.skipped == OTHER_TRIGGERS

    table = str(root / "events")
    summary = ca.ingest(str(raw), table)
    assert summary.written == truth.unique_events and summary.balanced

    split_table = str(root / "events_split")
    files = [str(raw / f) for f in truth.files]
    half = len(files) // 2
    first = ca.ingest(files[:half], split_table)
    second = ca.ingest(files[half:], split_table)
    assert first.written + second.written == truth.unique_events
    # Some events of the second half were already committed by the first load.
    assert len(ca.load(files[half:])) > second.written
    return World(seed, truth, raw, table, split_table)


# ---------------------------------------------------------------- helpers


def groupings(truth: SimulationTruth, kind: str) -> list[list[str]]:
    """The groupings to check on source ``kind``: all of :data:`GROUPINGS` the truth's
    items can answer on the table path, :data:`OTHER_SOURCE_GROUPINGS` elsewhere."""
    chosen = GROUPINGS if kind == "table" else OTHER_SOURCE_GROUPINGS
    return [list(by) for by in chosen if all(c == "tag" or c in truth.items.columns for c in by)]


def key_tuples(frame: pd.DataFrame, by: list[str]) -> list[tuple[Any, ...]]:
    """The group keys of ``frame``, row by row, as plain Python values (None for missing)."""

    def plain(value: Any) -> Any:
        if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
            return None
        return value.item() if isinstance(value, np.generic) else value

    return [tuple(plain(v) for v in row) for row in frame[by].itertuples(index=False, name=None)]


def first_differences(got: pd.Series, expected: pd.Series, limit: int = 5) -> str:
    """A short listing of the rows (by index) where two aligned series differ."""
    both_missing = got.isna().to_numpy() & expected.isna().to_numpy()
    with np.errstate(invalid="ignore"):
        equal = (got.to_numpy() == expected.to_numpy()) | both_missing
    bad = np.flatnonzero(~np.asarray(equal, dtype=bool))
    rows = [f"{got.index[i]}: got {got.iloc[i]!r}, expected {expected.iloc[i]!r}" for i in bad[:limit]]
    return f"{bad.size} of {len(got)} differ; " + "; ".join(rows)


def assert_floats_close(got: pd.Series, expected: pd.Series, atol: float, what: str) -> None:
    """Equal within ``atol`` (absolute), NaN only where the other is NaN too."""
    g = got.to_numpy(dtype=np.float64, na_value=np.nan)
    e = expected.to_numpy(dtype=np.float64, na_value=np.nan)
    close = np.isclose(g, e, rtol=0.0, atol=atol, equal_nan=True)
    if not close.all():
        bad = np.flatnonzero(~close)[:5]
        rows = "; ".join(f"{got.index[i]}: got {g[i]!r}, expected {e[i]!r}" for i in bad)
        pytest.fail(f"{what}: {int((~close).sum())} of {len(g)} differ by more than {atol}: {rows}")


def aligned_items(got: pd.DataFrame, truth: SimulationTruth) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The items frame and the truth's, both indexed and sorted by (channel_type, item_id)."""
    g = got.set_index(KEY).sort_index()
    e = truth.items.set_index(KEY).sort_index()
    assert g.index.is_unique, "items() gives more than one row for an item"
    missing = e.index.difference(g.index)
    extra = g.index.difference(e.index)
    assert missing.empty and extra.empty, f"items missing: {list(missing[:5])}, not in truth: {list(extra[:5])}"
    return g, e


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, NaN left out of the family (reference implementation)."""
    known = sorted((p, i) for i, p in enumerate(p_values) if not np.isnan(p))
    adjusted = [np.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted


def expected_comparisons(
    truth: SimulationTruth, metric: str, within: list[str], alpha: float
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """compare_versions' answer computed from the truth's counts with scipy, keyed by
    (*within, version_a, version_b)."""
    numerator, denominator = RATES[metric]
    counts = truth.engagement([*within, "template_version"])
    result: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, group in counts.groupby(within, sort=True):
        group = group.sort_values("template_version")
        versions = group["template_version"].tolist()
        successes = group[numerator].to_numpy(dtype=np.int64)
        trials = group[denominator].to_numpy(dtype=np.int64)
        table = np.column_stack([successes, trials - successes])

        def enough(t: np.ndarray) -> bool:
            total = t.sum()
            return bool(total > 0 and (np.outer(t.sum(axis=1), t.sum(axis=0)) / total >= 5).all())

        group_ok = enough(table)
        pairs = list(itertools.combinations(range(len(versions)), 2))
        p_values: list[float] = []
        for i, j in pairs:
            pair = table[[i, j]]
            if group_ok and enough(pair):
                p_values.append(float(stats.chi2_contingency(pair, correction=False).pvalue))
            else:
                p_values.append(np.nan)
        adjusted = holm_adjusted(p_values)
        for (i, j), p, p_holm in zip(pairs, p_values, adjusted, strict=True):
            rate_a, rate_b = successes[i] / trials[i], successes[j] / trials[j]
            if np.isnan(p):
                verdict = "insufficient data"
            elif p_holm <= alpha:
                verdict = "a higher" if rate_a > rate_b else "b higher"
            else:
                verdict = "no significant difference"
            keys = key if isinstance(key, tuple) else (key,)
            result[(*keys, int(versions[i]), int(versions[j]))] = {
                "n_a": int(trials[i]), "n_b": int(trials[j]),
                "successes_a": int(successes[i]), "successes_b": int(successes[j]),
                "p_value": p, "p_holm": p_holm, "verdict": verdict,
            }
    return result


# ---------------------------------------------------------------- items


@pytest.mark.parametrize("kind", SOURCES)
def test_items_equal_the_truth(world: World, kind: str) -> None:
    got, expected = aligned_items(ca.items(world.source(kind)).to_pandas(), world.truth)
    for column in STAGE_TIMES:
        values = got[column].astype("datetime64[ms, UTC]")
        assert values.equals(expected[column]), f"{column}: {first_differences(values, expected[column])}"
    for column in FLAGS:
        values = got[column].astype(bool)
        assert values.equals(expected[column]), f"{column}: {first_differences(values, expected[column])}"
    for column in LATENCIES:
        assert_floats_close(got[column], expected[column], 1e-9, column)


def test_item_dimensions_and_counts_equal_the_truth(world: World) -> None:
    got, expected = aligned_items(ca.items(world.table).to_pandas(), world.truth)
    columns = ["campaign_id", "notification_id", "template_id", "label", "category", "receiver"]
    if ARM in expected.columns:
        columns.append(ARM)
    for column in columns:
        values, truth = got[column].astype(object), expected[column].astype(object)
        equal = [(pd.isna(a) and pd.isna(b)) or a == b for a, b in zip(values, truth)]
        assert all(equal), f"{column}: {first_differences(values, truth)}"
    # Numeric-string versions on some events must not change the item's version.
    versions = got["template_version"].astype("int64")
    assert versions.equals(expected["template_version"]), first_differences(versions, expected["template_version"])
    # An item without tags may come back with no list at all.
    assert [[] if t is None else list(t) for t in got["tags"]] == [list(t) for t in expected["tags"]]
    delivered = expected["delivered_at"].notna() | expected["delivered_implied"]
    assert got["delivered"].astype(bool).equals(delivered)
    assert got["read"].astype(bool).equals(expected["read_at"].notna())
    assert got["interacted"].astype(bool).equals(expected["interacted_at"].notna())
    assert got["clicked"].astype(bool).equals(expected["clicked_at"].notna())
    counts = got["interaction_count"].astype("int64")
    assert counts.equals(expected["interactions"]), first_differences(counts, expected["interactions"])


def test_one_load_and_two_loads_give_identical_items(world: World) -> None:
    one = ca.items(world.table).to_pandas().sort_values(KEY, ignore_index=True)
    two = ca.items(world.split_table).to_pandas().sort_values(KEY, ignore_index=True)
    pd.testing.assert_frame_equal(one, two)


# ---------------------------------------------------------------- engagement


@pytest.mark.parametrize("kind", SOURCES)
def test_engagement_equals_the_truth(world: World, kind: str) -> None:
    source = world.source(kind)
    for by in groupings(world.truth, kind):
        got = ca.engagement(source, by)
        expected = world.truth.engagement(by)
        assert key_tuples(got, by) == key_tuples(expected, by), f"groups of by={by}"
        for column in COUNTS:
            assert got[column].tolist() == expected[column].tolist(), f"{column}, by={by}"
        for rate in RATES:
            assert_floats_close(got[rate], expected[rate], 1e-12, f"{rate}, by={by}")
            rate_values = got[rate].to_numpy(dtype=np.float64)
            lo = got[f"{rate}_lo"].to_numpy(dtype=np.float64)
            hi = got[f"{rate}_hi"].to_numpy(dtype=np.float64)
            known = ~np.isnan(rate_values)
            assert (np.isnan(lo) == ~known).all() and (np.isnan(hi) == ~known).all(), f"{rate} interval, by={by}"
            assert (0.0 <= lo[known]).all() and (hi[known] <= 1.0).all(), f"{rate} interval, by={by}"
            assert (lo[known] <= rate_values[known]).all(), f"{rate}_lo above the rate, by={by}"
            assert (rate_values[known] <= hi[known]).all(), f"{rate}_hi below the rate, by={by}"


@pytest.mark.parametrize("exclude", [False, True], ids=["all", "exclude_on_read"])
def test_summary_equals_engagement_and_time_to_delivery_of_the_truth(world: World, exclude: bool) -> None:
    """The one-pass summary gives the truth's engagement and time-to-delivery numbers side by side."""
    for by in groupings(world.truth, "table"):
        got = ca.summary(world.table, by, exclude_delivered_on_read=exclude)
        rates = world.truth.engagement(by)
        latency = world.truth.time_to_delivery(by, exclude_delivered_on_read=exclude)
        assert key_tuples(got, by) == key_tuples(rates, by) == key_tuples(latency, by), f"groups of by={by}"
        for column in COUNTS:
            assert got[column].tolist() == rates[column].tolist(), f"{column}, by={by}"
        for rate in RATES:
            assert_floats_close(got[rate], rates[rate], 1e-12, f"{rate}, by={by}")
        assert got["ttd_n"].tolist() == latency["ttd_n"].tolist(), f"ttd_n, by={by}"
        for column in TTD_STATS:
            assert_floats_close(got[column], latency[column], 1e-6, f"{column}, by={by}")


# ---------------------------------------------------------------- time to delivery


@pytest.mark.parametrize("exclude", [False, True], ids=["all", "exclude_on_read"])
@pytest.mark.parametrize("kind", SOURCES)
def test_time_to_delivery_equals_the_truth(world: World, kind: str, exclude: bool) -> None:
    source = world.source(kind)
    for by in groupings(world.truth, kind):
        got = ca.time_to_delivery(source, by, exclude_delivered_on_read=exclude)
        expected = world.truth.time_to_delivery(by, exclude_delivered_on_read=exclude)
        assert key_tuples(got, by) == key_tuples(expected, by), f"groups of by={by}"
        assert got["ttd_n"].tolist() == expected["ttd_n"].tolist(), f"ttd_n, by={by}"
        for column in TTD_STATS:
            assert_floats_close(got[column], expected[column], 1e-6, f"{column}, by={by}")


def test_excluding_delivered_on_read_leaves_out_exactly_those_items(world: World) -> None:
    everything = ca.time_to_delivery(world.table)
    excluded = ca.time_to_delivery(world.table, exclude_delivered_on_read=True)
    left_out = int(everything["ttd_n"].iloc[0] - excluded["ttd_n"].iloc[0])
    assert left_out == int(world.truth.items["delivered_on_read"].sum()) > 0


# ---------------------------------------------------------------- campaigns


@pytest.mark.parametrize("kind", ["table", "split"])
def test_campaigns_equal_the_truth(world: World, kind: str) -> None:
    got = ca.campaigns(world.source(kind)).set_index("campaign_id").sort_index()
    expected = world.truth.campaigns.set_index("campaign_id").sort_index()
    assert list(got.index) == list(expected.index)
    for column in ("name", "status", "template_id"):
        assert got[column].tolist() == expected[column].tolist(), column
    for column in ("template_version", "total_targets", "sent_count", "failed_count"):
        values = got[column].astype("int64")
        assert values.equals(expected[column]), f"{column}: {first_differences(values, expected[column])}"
    for column in ("scheduled_at", "sent_at", "completed_at", "updated_at"):
        values = got[column].astype("datetime64[ms, UTC]")
        assert values.equals(expected[column]), f"{column}: {first_differences(values, expected[column])}"
    # A failed campaign without completed_at ends at its failed event (updatedAt).
    end = expected["completed_at"].fillna(expected["updated_at"])
    assert_floats_close(got["time_to_complete_s"], (end - expected["sent_at"]).dt.total_seconds(), 1e-9,
                        "time_to_complete_s")


# ---------------------------------------------------------------- version comparisons


@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_compare_versions_equals_the_truth(world: World, alpha: float) -> None:
    got = ca.compare_versions(world.table, "read_rate", within=COMPARE_WITHIN, alpha=alpha)
    expected = expected_comparisons(world.truth, "read_rate", COMPARE_WITHIN, alpha)
    keys = [
        (*row[:-2], int(row[-2]), int(row[-1]))
        for row in got[[*COMPARE_WITHIN, "version_a", "version_b"]].itertuples(index=False, name=None)
    ]
    assert keys == sorted(expected), "pairs of versions"
    assert set(got["verdict"]) <= set(COMPARISON_VERDICTS)
    for key, row in zip(keys, got.itertuples(index=False), strict=True):
        want = expected[key]
        for column in ("n_a", "n_b", "successes_a", "successes_b"):
            assert getattr(row, column) == want[column], (key, column)
        assert row.verdict == want["verdict"], (key, row.p_value, row.p_holm)
        for column in ("p_value", "p_holm"):
            value, reference = getattr(row, column), want[column]
            assert np.isnan(value) == np.isnan(reference), (key, column)
            if not np.isnan(reference):
                assert value == pytest.approx(reference, rel=1e-9, abs=1e-300), (key, column)
        # The verdict follows from p_holm and alpha, its direction from the rates.
        if row.verdict == "insufficient data":
            assert np.isnan(row.p_value) and np.isnan(row.p_holm)
        else:
            assert row.p_holm >= row.p_value
            assert (row.p_holm <= alpha) == (row.verdict in ("a higher", "b higher")), key
            if row.verdict == "a higher":
                assert row.rate_a > row.rate_b
            if row.verdict == "b higher":
                assert row.rate_b > row.rate_a
    if alpha == 0.05:
        # The versions of the simulated templates do differ in read rate.
        assert got["verdict"].isin(["a higher", "b higher"]).any()


def test_compare_versions_on_a_tiny_stream_is_insufficient_data(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    # Seed 7 gives two versions of one template among 30 items.
    truth = ca.simulate(raw, items=30, seed=7, bad_records=2, other_triggers=1)
    table = str(tmp_path / "events")
    ca.ingest(str(raw), table)
    for metric in ("read_rate", "click_rate"):
        got = ca.compare_versions(table, metric)
        expected = expected_comparisons(truth, metric, ["template_id"], 0.05)
        assert len(got) == len(expected) > 0, metric
        assert (got["verdict"] == "insufficient data").all(), got[["template_id", "verdict"]]
        assert got["p_value"].isna().all() and got["p_holm"].isna().all()
        assert got["chi2"].isna().all() and got["chi2_p_value"].isna().all()
        assert all(e["verdict"] == "insufficient data" for e in expected.values())
