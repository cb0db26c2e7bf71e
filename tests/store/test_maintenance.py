"""Retention pruning in small transactions, the scheduled retention task, integrity checks.

The ``store`` cases run on both backends (``conftest.py``); the large
prune on the real lane and the integrity checks are SQLite's own.
"""

from __future__ import annotations

import hashlib
import logging
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.resilience import DeadLetter
from daemon.store import (
    GapState,
    SqliteStore,
    StoreOpenError,
    integrity_check,
    run_retention,
)
from tests.helpers.store import SYMBOL, VENUE, open_store, raw, snapshot, trade

CP = (VENUE, SYMBOL, "trades")


async def set_read_only(store: Any, on: bool) -> None:
    """Make the store refuse writes (transiently) or accept them again."""
    if store.sql.name == "postgres":
        setting = "on" if on else "off"
        await store.call(lambda c: c.execute(f"SET default_transaction_read_only = {setting}"))
    else:
        await store.call(lambda c: c.execute(f"PRAGMA query_only = {int(on)}").fetchall())


async def test_prune_deletes_exactly_the_old_rows_in_small_batches(store: SqliteStore) -> None:
    # 35 old + 5 young trades of BTCUSDT, 3 old + 2 young of ETHUSDT.
    await store.market.insert_trades(
        [trade(i, time_ms=1_000 + i) for i in range(40)], checkpoint=CP
    )
    await store.market.insert_trades(
        [trade(i, symbol="ETHUSDT", time_ms=1_000 + 32 + i) for i in range(5)]
    )
    # Snapshots with 2 levels a side (5 rows each): 6 old BTCUSDT, 1 young ETHUSDT.
    await store.market.insert_book_snapshots([snapshot(1_000 + t, levels=2) for t in range(6)])
    await store.market.insert_book_snapshots([snapshot(2_000, symbol="ETHUSDT")])
    await store.market.record_gap(VENUE, SYMBOL, "trades", 100, 200, detected_at_ms=0)
    await store.dead_letters.add(
        DeadLetter.from_error(1, ValueError(), source="trades", now=lambda: 0.0)
    )
    batches_before = store.stats.prune_batches
    summary = await store.market.prune_market_data(1_035, batch_rows=10)
    assert (summary.trades, summary.book_snapshots, summary.book_levels) == (38, 6, 24)
    assert summary.rows == 38 + 6 + 24
    # Trades: BTCUSDT 10+10+10+5 (the 4th batch meets a young trade), ETHUSDT
    # one batch of 3. Snapshots: ~10 rows a batch = 2 snapshots, so 3 batches for
    # BTCUSDT, and one (empty) for ETHUSDT.
    assert summary.batches == 4 + 1 + 3 + 1
    assert store.stats.prune_batches - batches_before == summary.batches
    assert store.stats.rows_pruned == summary.rows
    assert await store.market.trade_ids(VENUE, SYMBOL, 0, 100) == list(range(35, 40))
    assert await store.market.trade_ids(VENUE, "ETHUSDT", 0, 100) == [3, 4]
    remaining = await store.market.book_snapshots(VENUE, SYMBOL)
    assert [s.server_time_ms for s in remaining] == []
    assert len(await store.market.book_snapshots(VENUE, "ETHUSDT")) == 1
    assert await store.market.count_book_levels() == 4
    # Not market data: kept.
    checkpoint = await store.market.checkpoint(*CP)
    assert checkpoint is not None and checkpoint.last_trade_id == 39
    assert len(await store.market.gaps(state=GapState.OPEN)) == 1
    assert len(await store.dead_letters.list()) == 1
    # Nothing older is left: a second run deletes nothing.
    again = await store.market.prune_market_data(1_035, batch_rows=10)
    assert again.rows == 0
    with pytest.raises(ValueError):
        await store.market.prune_market_data(0, batch_rows=0)


async def test_prune_keeps_snapshot_times_exactly_at_the_cutoff(store: SqliteStore) -> None:
    await store.market.insert_book_snapshots([snapshot(t, levels=1) for t in (10, 20, 30)])
    summary = await store.market.prune_market_data(20)
    assert (summary.book_snapshots, summary.book_levels) == (1, 2)
    assert [s.server_time_ms for s in await store.market.book_snapshots(VENUE, SYMBOL)] == [20, 30]


async def test_an_insert_during_a_large_prune_completes_between_batches(tmp_path: Path) -> None:
    """Real thread lane, real clock: the lane is FIFO, so an insert waits for one batch."""
    with trio.fail_after(30):
        store = await SqliteStore.open(tmp_path / "store.db")
        async with store:
            await store.market.insert_trades(
                [trade(i, time_ms=i) for i in range(20_000)], chunk_size=5_000
            )
            result = {}

            async def prune() -> None:
                result["summary"] = await store.market.prune_market_data(1_000_000, batch_rows=500)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(prune)
                await trio.testing.wait_all_tasks_blocked()  # prune is in (or queued on) the lane
                # On a loaded machine the lane may already have run some batches:
                # what matters is how many more run before the insert is served.
                batches_before_insert = store.stats.prune_batches
                assert batches_before_insert < 41, "the prune finished before the insert"
                inserted = await store.market.insert_trades([trade(50_000, time_ms=2_000_000)])
                batches_when_inserted = store.stats.prune_batches
                assert inserted.inserted == 1
            summary = result["summary"]
            assert summary.trades == 20_000
            assert summary.batches == 41  # 40 full batches + the one that meets the young trade
            # The insert did not wait for the prune (FIFO lane): at most the batch in
            # flight and the one queued when it was issued ran before it.
            assert batches_when_inserted - batches_before_insert <= 2
            assert await store.market.trade_ids(VENUE, SYMBOL, 0, 10**6) == [50_000]


async def test_retention_off_by_default_never_prunes(
    store: SqliteStore, autojump_clock: trio.testing.MockClock
) -> None:
    await store.market.insert_trades([trade(1, time_ms=0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_retention, store, max_age_s=None))
        await trio.sleep(10 * 86_400)
        nursery.cancel_scope.cancel()
    assert await store.market.count_trades(VENUE, SYMBOL) == 1
    assert store.stats.prune_batches == 0


async def test_retention_prunes_on_its_schedule_and_survives_unavailability(
    store: SqliteStore,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Trades one second apart at 85 s .. 94 s (epoch ms); keep 10 s.
    await store.market.insert_trades([trade(i, time_ms=85_000 + 1_000 * i) for i in range(10)])
    wall_ms = [100_000]

    async def remaining() -> list[int]:
        return await store.market.trade_ids(VENUE, SYMBOL, 0, 100)

    with pytest.raises(ValueError):
        await run_retention(store, max_age_s=0)
    with pytest.raises(ValueError):
        await run_retention(store, max_age_s=1, interval_s=0)

    async with trio.open_nursery() as nursery:

        async def retention(task_status: trio.TaskStatus[None]) -> None:
            await run_retention(
                store,
                max_age_s=10,
                interval_s=60,
                now_ms=lambda: wall_ms[0],
                task_status=task_status,
            )

        await nursery.start(retention)
        await trio.sleep(1)  # t=1: the first run (at t=0) kept > 90 s
        assert await remaining() == [5, 6, 7, 8, 9]
        wall_ms[0] = 103_000
        await trio.sleep(58)  # t=59: nothing yet
        assert await remaining() == [5, 6, 7, 8, 9]
        await trio.sleep(2)  # t=61: the run at t=60 kept > 93 s
        assert await remaining() == [8, 9]
        # The store turns read-only: the run at t=120 fails, is logged, retried later.
        await set_read_only(store, True)
        wall_ms[0] = 200_000
        with caplog.at_level(logging.WARNING, logger="tradingd.store.maintenance"):
            await trio.sleep(60)  # t=121
        assert await remaining() == [8, 9]
        assert any("retention run failed" in r.getMessage() for r in caplog.records)
        await set_read_only(store, False)
        await trio.sleep(60)  # t=181: the run at t=180 succeeds
        assert await remaining() == []
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- integrity


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_integrity_check_of_a_sound_file_is_empty_and_read_only(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await open_store(path) as store:
        await store.market.insert_trades([trade(i) for i in range(100)])
        await store.market.insert_book_snapshots([snapshot(1)])
        assert await store.integrity_check() == []  # beside the open store
    before = digest(path)
    assert integrity_check(path) == []
    assert integrity_check(str(path), max_errors=1) == []
    assert digest(path) == before
    with pytest.raises(ValueError):
        integrity_check(path, max_errors=0)


def test_integrity_check_reports_a_foreign_key_violation(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    trio.run(_make_store, path)
    with raw(path) as conn:  # foreign keys are off on this connection
        conn.execute(
            "INSERT INTO book_levels (snapshot_id, side, level_index, price, quantity) "
            "VALUES (999, 'bid', 0, '1', '1')"
        )
    assert integrity_check(path) == [
        "foreign key violation: a book_levels row has no book_snapshots row"
    ]


async def _make_store(path: Path) -> None:
    async with await open_store(path):
        pass


def test_integrity_check_of_a_non_database_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"junk" * 1024)
    problems = integrity_check(path)
    assert len(problems) == 1
    assert str(path) in problems[0] and "not a database" in problems[0]


def test_integrity_check_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(StoreOpenError, match="no such database file"):
        integrity_check(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
