"""Market data tables: idempotent chunked writes, checkpoints, queries, books, gaps."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.health import HealthLevel
from daemon.model.marketdata import DepthSnapshot
from daemon.store import (
    BookSnapshotRecord,
    Checkpoint,
    GapState,
    GapTransitionError,
    SqliteStore,
    StoreDataError,
)
from tests.helpers.store import SYMBOL, VENUE, WallClock, open_store, snapshot, trade

CP = (VENUE, SYMBOL, "trades")


# ----------------------------------------------------------------------------- trades


async def test_trades_round_trip_exactly(store: SqliteStore, wall_clock: WallClock) -> None:
    written = [
        trade(7, price="0.00001000", quantity="12345.67800000"),
        trade(8, price="1E+3", quantity="2"),
        trade(9, price="65000.01", quantity="0.5"),
    ]
    summary = await store.market.insert_trades(written)
    assert (summary.attempted, summary.inserted, summary.skipped) == (3, 3, 0)
    read = await store.market.trades(VENUE, SYMBOL)
    assert read == written
    # The venue's spelling is kept, not just the value.
    assert [str(t.price) for t in read] == ["0.00001000", "1E+3", "65000.01"]
    assert read[2].event_time_ms is None and read[1].event_time_ms == 2_000_008
    typeof = "pg_typeof(price)::text" if store.sql.name == "postgres" else "typeof(price)"
    stored = await store.read(
        lambda c: c.execute(f"SELECT {typeof}, ingested_at_ms FROM trades LIMIT 1").fetchone()
    )
    assert tuple(stored) == ("text", int(wall_clock.now * 1000))


async def test_duplicates_are_skipped_within_and_across_calls(store: SqliteStore) -> None:
    first = await store.market.insert_trades([trade(1), trade(2), trade(1), trade(3)])
    assert (first.attempted, first.inserted, first.skipped, first.chunks) == (4, 3, 1, 1)
    second = await store.market.insert_trades([trade(3), trade(4), trade(2)])
    assert (second.attempted, second.inserted, second.skipped) == (3, 1, 2)
    other_symbol = await store.market.insert_trades([trade(1, symbol="ETHUSDT")])
    assert other_symbol.inserted == 1
    assert await store.market.trade_ids(VENUE, SYMBOL, 0, 100) == [1, 2, 3, 4]


async def test_update_mode_replaces_changed_rows_only(store: SqliteStore) -> None:
    await store.market.insert_trades([trade(1), trade(2)])
    # on_conflict="nothing" keeps the stored values.
    kept = await store.market.insert_trades([trade(1, price="99")])
    assert kept.skipped == 1
    assert (await store.market.trades(VENUE, SYMBOL, 1, 1))[0].price == Decimal("100.10")
    summary = await store.market.insert_trades(
        [trade(1, price="99"), trade(2), trade(3), trade(3, price="98")], on_conflict="update"
    )
    assert (summary.inserted, summary.updated, summary.skipped) == (1, 2, 1)
    assert summary.attempted == summary.inserted + summary.updated + summary.skipped
    prices = [str(t.price) for t in await store.market.trades(VENUE, SYMBOL)]
    assert prices == ["99", "100.10", "98"]
    assert store.stats.table("trades").rows_updated == 2


async def test_writes_are_chunked_one_transaction_per_chunk(store: SqliteStore) -> None:
    commits = store.stats.commits
    summary = await store.market.insert_trades([trade(i) for i in range(10)], chunk_size=3)
    assert summary.chunks == 4
    assert store.stats.commits - commits == 4
    assert (await store.market.insert_trades([])).chunks == 0
    with pytest.raises(ValueError, match="chunk_size"):
        await store.market.insert_trades([trade(1)], chunk_size=0)
    with pytest.raises(ValueError, match="on_conflict"):
        await store.market.insert_trades([trade(1)], on_conflict="replace")  # type: ignore[arg-type]


async def test_a_chunk_the_schema_refuses_fails_alone(store: SqliteStore) -> None:
    trades = [trade(i) for i in range(9)]
    trades[4] = trade(-1)  # violates CHECK (trade_id >= 0): chunk 1 is [3, -1, 5]
    summary = await store.market.insert_trades(trades, chunk_size=3, checkpoint=CP)
    assert (summary.attempted, summary.inserted, summary.skipped, summary.failed) == (9, 6, 0, 3)
    assert (
        summary.attempted == summary.inserted + summary.updated + summary.skipped + summary.failed
    )
    assert len(summary.failed_chunks) == 1
    failure = summary.failed_chunks[0]
    assert (failure.index, failure.start, failure.rows, failure.attempted) == (1, 3, 3, True)
    assert isinstance(failure.error, StoreDataError)
    assert isinstance(failure.error.__cause__, sqlite3.IntegrityError | psycopg.IntegrityError)
    assert not summary.ok
    with pytest.raises(StoreDataError, match="constraint"):
        summary.raise_for_failures()
    # The whole failed chunk is absent (atomic), the chunks around it are stored.
    assert await store.market.trade_ids(VENUE, SYMBOL, 0, 100) == [0, 1, 2, 6, 7, 8]
    # The checkpoint stopped before the hole although chunk 2 committed.
    assert summary.checkpoint == 2
    assert (await store.market.checkpoint(*CP)) == Checkpoint(*CP, 2, 1_700_000_000_000)
    # Bad data is not a store health problem (it is dead-lettered by the caller).
    assert store.check() == (HealthLevel.HEALTHY, None)
    stats = store.stats.table("trades")
    assert (stats.chunks_committed, stats.chunks_failed, stats.rows_failed) == (2, 1, 3)
    assert summary.to_dict()["failed_chunks"][0]["index"] == 1


async def test_an_out_of_range_id_is_a_data_error(store: SqliteStore) -> None:
    summary = await store.market.insert_trades([trade(1), trade(2**64)], chunk_size=1)
    assert summary.inserted == 1
    assert isinstance(summary.failed_chunks[0].error, StoreDataError)


async def test_the_checkpoint_advances_with_each_committed_chunk(
    store: SqliteStore, wall_clock: WallClock
) -> None:
    summary = await store.market.insert_trades(
        [trade(i) for i in (5, 3, 9, 4, 8)], chunk_size=2, checkpoint=CP
    )
    assert summary.checkpoint == 9
    wall_clock.now += 1
    # A backfill of older ids never moves the resume point back.
    backfill = await store.market.insert_trades([trade(1), trade(2)], checkpoint=CP)
    assert backfill.checkpoint == 9
    stored = await store.market.checkpoint(*CP)
    assert stored is not None
    assert stored.last_trade_id == 9
    assert stored.updated_at_ms == 1_700_000_000_000  # unchanged: it did not move
    # Other streams and symbols are separate.
    assert await store.market.checkpoint(VENUE, SYMBOL, "aggTrades") is None
    moved = await store.market.advance_checkpoint(VENUE, SYMBOL, "trades", 20)
    assert moved == Checkpoint(*CP, 20, 1_700_000_001_000)
    assert (await store.market.advance_checkpoint(*CP, 15)).last_trade_id == 20
    await store.market.advance_checkpoint("binance", "ETHUSDT", "trades", 3)
    assert [c.symbol for c in await store.market.checkpoints()] == ["BTCUSDT", "ETHUSDT"]


async def test_a_checkpoint_requires_trades_of_its_symbol(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="ETHUSDT"):
        await store.market.insert_trades([trade(1), trade(2, symbol="ETHUSDT")], checkpoint=CP)
    assert await store.market.count_trades(VENUE, SYMBOL) == 0


async def test_trade_queries(store: SqliteStore) -> None:
    assert await store.market.last_trade_id(VENUE, SYMBOL) is None
    await store.market.insert_trades([trade(i) for i in (10, 11, 12, 15, 20)])
    await store.market.insert_trades([trade(99, symbol="ETHUSDT")])
    assert await store.market.last_trade_id(VENUE, SYMBOL) == 20
    assert await store.market.count_trades(VENUE, SYMBOL) == 5
    assert await store.market.count_trades(VENUE, SYMBOL, 11, 15) == 3
    assert await store.market.count_trades(VENUE, SYMBOL, from_id=12) == 3
    assert await store.market.trade_ids(VENUE, SYMBOL, 11, 19) == [11, 12, 15]
    assert [t.trade_id for t in await store.market.trades(VENUE, SYMBOL, 12, limit=2)] == [12, 15]
    assert await store.market.missing_trade_ranges(VENUE, SYMBOL, 8, 22) == [
        (8, 9),
        (13, 14),
        (16, 19),
        (21, 22),
    ]
    assert await store.market.missing_trade_ranges(VENUE, SYMBOL, 10, 12) == []
    assert await store.market.missing_trade_ranges(VENUE, SYMBOL, 30, 40) == [(30, 40)]
    assert await store.market.missing_trade_ranges(VENUE, SYMBOL, 8, 22, limit=2) == [
        (8, 9),
        (13, 14),
    ]
    with pytest.raises(ValueError):
        await store.market.missing_trade_ranges(VENUE, SYMBOL, 5, 4)
    with pytest.raises(ValueError):
        await store.market.missing_trade_ranges(VENUE, SYMBOL, 1, 4, limit=0)


# ----------------------------------------------------------------------------- properties

ids = st.integers(min_value=0, max_value=60)
keyed_trades = st.lists(
    st.tuples(st.sampled_from(["BTCUSDT", "ETHUSDT"]), ids), min_size=0, max_size=80
)


def run_with_store(body: Callable[[SqliteStore], Awaitable[None]]) -> None:
    """Run ``body(store)`` in a fresh trio run on a fresh database file."""

    async def main() -> None:
        with tempfile.TemporaryDirectory() as directory:
            async with await open_store(Path(directory) / "p.db") as store:
                await body(store)

    trio.run(main)


@settings(max_examples=150, deadline=None)
@given(
    keys=keyed_trades,
    chunk_a=st.integers(min_value=1, max_value=25),
    chunk_b=st.integers(min_value=1, max_value=25),
    shuffle=st.randoms(use_true_random=False),
)
def test_any_insertion_leaves_exactly_the_distinct_trades(
    keys: list[tuple[str, int]], chunk_a: int, chunk_b: int, shuffle: object
) -> None:
    trades = [trade(i, symbol=s) for s, i in keys]
    distinct = {(VENUE, s, i) for s, i in keys}
    again = list(trades)
    shuffle.shuffle(again)  # type: ignore[attr-defined]

    async def body(store: SqliteStore) -> None:
        first = await store.market.insert_trades(trades, chunk_size=chunk_a)
        second = await store.market.insert_trades(again, chunk_size=chunk_b)
        for summary in (first, second):
            assert summary.ok
            assert summary.attempted == len(trades)
            assert summary.attempted == summary.inserted + summary.skipped
        assert first.inserted == len(distinct)
        assert second.inserted == 0
        assert first.chunks == -(-len(trades) // chunk_a)
        rows = await store.read(
            lambda c: c.execute("SELECT venue, symbol, trade_id FROM trades").fetchall()
        )
        assert len(rows) == len(set(rows))
        assert set(rows) == distinct
        stats = store.stats.table("trades")
        assert stats.rows_attempted == stats.rows_inserted + stats.rows_skipped

    run_with_store(body)


def model_holes(stored: set[int], lo: int, hi: int) -> list[tuple[int, int]]:
    holes: list[tuple[int, int]] = []
    for i in range(lo, hi + 1):
        if i in stored:
            continue
        if holes and holes[-1][1] == i - 1:
            holes[-1] = (holes[-1][0], i)
        else:
            holes.append((i, i))
    return holes


@settings(max_examples=150, deadline=None)
@given(
    stored=st.sets(st.integers(min_value=0, max_value=80), max_size=60),
    bounds=st.tuples(st.integers(0, 90), st.integers(0, 90)).map(sorted),
    noise=st.sets(st.integers(min_value=0, max_value=80), max_size=10),
)
def test_missing_trade_ranges_match_a_model(
    stored: set[int], bounds: list[int], noise: set[int]
) -> None:
    lo, hi = bounds

    async def body(store: SqliteStore) -> None:
        await store.market.insert_trades([trade(i) for i in stored], chunk_size=7)
        # Another symbol's trades must not fill this symbol's holes.
        await store.market.insert_trades([trade(i, symbol="ETHUSDT") for i in noise])
        found = await store.market.missing_trade_ranges(VENUE, SYMBOL, lo, hi)
        assert found == model_holes(stored, lo, hi)
        ids_in_range = sorted(i for i in stored if lo <= i <= hi)
        assert await store.market.trade_ids(VENUE, SYMBOL, lo, hi) == ids_in_range
        assert await store.market.count_trades(VENUE, SYMBOL, lo, hi) == len(ids_in_range)

    run_with_store(body)


# ----------------------------------------------------------------------------- books


async def test_snapshots_are_stored_with_their_levels_idempotently(store: SqliteStore) -> None:
    a, b = snapshot(1000, 7, levels=3), snapshot(2000, 8, levels=2)
    summary = await store.market.insert_book_snapshots([a, b, a])
    assert (summary.attempted, summary.inserted, summary.skipped) == (3, 2, 1)
    assert await store.market.book_snapshots(VENUE, SYMBOL) == [a, b]
    assert await store.market.count_book_levels() == 10
    # Same key, other levels: "nothing" keeps the stored ones untouched.
    changed = snapshot(1000, 7, levels=1, price_shift="0.5")
    kept = await store.market.insert_book_snapshots([changed])
    assert kept.skipped == 1
    assert (await store.market.book_snapshots(VENUE, SYMBOL, 1000, 1000)) == [a]
    # "update" replaces them; an identical snapshot counts as skipped.
    updated = await store.market.insert_book_snapshots([changed, b], on_conflict="update")
    assert (updated.updated, updated.skipped) == (1, 1)
    assert (await store.market.book_snapshots(VENUE, SYMBOL, 1000, 1000)) == [changed]
    assert await store.market.count_book_levels() == 2 + 4
    # Same time, other sequence id: a distinct snapshot.
    await store.market.insert_book_snapshots([snapshot(2000, 9)])
    newest = await store.market.book_snapshots(VENUE, SYMBOL, newest_first=True, limit=2)
    assert [(s.server_time_ms, s.sequence_id) for s in newest] == [(2000, 9), (2000, 8)]


async def test_a_refused_snapshot_fails_its_chunk_only(store: SqliteStore) -> None:
    bad = snapshot(1500, venue="")  # violates CHECK (venue <> '')
    summary = await store.market.insert_book_snapshots(
        [snapshot(1000), bad, snapshot(2000)], chunk_size=1
    )
    assert (summary.inserted, summary.failed) == (2, 1)
    assert summary.failed_chunks[0].index == 1
    assert isinstance(summary.failed_chunks[0].error, StoreDataError)
    assert len(await store.market.book_snapshots(VENUE, SYMBOL)) == 2
    assert await store.market.count_book_levels() == 8


def test_a_record_from_a_depth_snapshot_keeps_the_top_levels() -> None:
    depth = DepthSnapshot(
        venue=VENUE,
        symbol=SYMBOL,
        last_update_id=42,
        bids=((Decimal("10"), Decimal("1")), (Decimal("9"), Decimal("2"))),
        asks=((Decimal("11"), Decimal("3")),),
    )
    record = BookSnapshotRecord.from_depth(depth, server_time_ms=5, depth=1)
    assert (record.sequence_id, record.server_time_ms) == (42, 5)
    assert record.bids == ((Decimal("10"), Decimal("1")),)
    assert record.asks == depth.asks
    assert BookSnapshotRecord.from_depth(depth, server_time_ms=5).bids == depth.bids
    with pytest.raises(TypeError):
        BookSnapshotRecord(VENUE, SYMBOL, 1, 1, bids=((1.5, 2.0),), asks=())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- gaps


async def test_gaps_are_recorded_idempotently_and_resolved_by_the_table(
    store: SqliteStore, wall_clock: WallClock
) -> None:
    gap = await store.market.record_gap(VENUE, SYMBOL, "trades", 11, 19, reason="reconnect")
    assert gap.state is GapState.OPEN
    assert (gap.from_id, gap.to_id, gap.reason) == (11, 19, "reconnect")
    assert gap.detected_at_ms == 1_700_000_000_000
    again = await store.market.record_gap(VENUE, SYMBOL, "trades", 11, 19, reason="restart")
    assert again == gap
    other = await store.market.record_gap(VENUE, "ETHUSDT", "trades", 1, 1, detected_at_ms=5)
    wall_clock.now += 2
    done = await store.market.resolve_gap(gap.gap_id, GapState.BACKFILLED, resolution="REST")
    assert done is not None
    assert (done.state, done.resolution, done.resolved_at_ms) == (
        GapState.BACKFILLED,
        "REST",
        1_700_000_002_000,
    )
    assert await store.market.resolve_gap(gap.gap_id, GapState.BACKFILLED) == done  # no-op
    with pytest.raises(GapTransitionError, match="backfilled to unrecoverable"):
        await store.market.resolve_gap(gap.gap_id, GapState.UNRECOVERABLE)
    with pytest.raises(ValueError):
        await store.market.resolve_gap(other.gap_id, GapState.OPEN)
    assert await store.market.resolve_gap(999, GapState.BACKFILLED) is None
    lost = await store.market.resolve_gap(other.gap_id, GapState.UNRECOVERABLE, resolved_at_ms=9)
    assert lost is not None and lost.resolved_at_ms == 9
    assert await store.market.gaps(symbol="ETHUSDT") == [lost]
    assert await store.market.gaps(state=GapState.BACKFILLED) == [done]
    assert await store.market.gaps(venue=VENUE, stream="trades") == [done, lost]
    assert await store.market.gaps(state=GapState.OPEN) == []
    assert await store.market.gap_counts() == {
        GapState.OPEN: 0,
        GapState.BACKFILLED: 1,
        GapState.UNRECOVERABLE: 1,
    }
    with pytest.raises(ValueError):
        await store.market.record_gap(VENUE, SYMBOL, "trades", 5, 4)


async def test_record_resolved_gap_is_one_transaction(store: SqliteStore) -> None:
    """A known outcome is written with the gap: no window where a filled range is OPEN."""
    market = store.market
    commits = store.stats.commits
    gap = await market.record_resolved_gap(
        VENUE,
        SYMBOL,
        "trades",
        5,
        9,
        state=GapState.BACKFILLED,
        reason="reconnect",
        resolution="5 trades via REST",
    )
    assert store.stats.commits == commits + 1
    assert gap.state is GapState.BACKFILLED and gap.resolution == "5 trades via REST"
    assert [g.state for g in await market.gaps()] == [GapState.BACKFILLED]
    again = await market.record_resolved_gap(
        VENUE, SYMBOL, "trades", 5, 9, state=GapState.BACKFILLED, reason="reconnect"
    )
    assert again.gap_id == gap.gap_id, "idempotent"
    with pytest.raises(GapTransitionError):
        await market.record_resolved_gap(
            VENUE, SYMBOL, "trades", 5, 9, state=GapState.UNRECOVERABLE, reason="x"
        )
    with pytest.raises(ValueError):
        await market.record_resolved_gap(VENUE, SYMBOL, "trades", 1, 2, state=GapState.OPEN)
