"""The write probe: a store whose writes failed turns healthy again by itself.

Only a write that commits clears UNHEALTHY, and a quiet daemon may not write
for a long time after a full disk has been cleaned up.
:func:`~daemon.store.owner_health.run_write_probe` writes while writes fail.
The full disk is ``PRAGMA max_page_count`` pinned to the current page count
(SQLite answers SQLITE_FULL, as on a full disk; see ``test_sqlite.py``):
the probe must need new pages, as a real write does, or it would report
recovery on a disk that is still full.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.health import HealthLevel
from daemon.store import SqliteStore, StoreFullError
from daemon.store.owner_health import WRITE_PROBE_INTERVAL_S, run_write_probe
from tests.helpers.store import SYMBOL, VENUE, page_count, trade


async def _pin(store: SqliteStore) -> None:
    """The file cannot grow any more: SQLITE_FULL for any write that needs a page."""
    pages = await page_count(store)
    await store.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchall())


async def _unpin(store: SqliteStore) -> None:
    await store.call(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchall())


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_the_probe_fails_while_full_and_leaves_nothing_behind(
    sqlite_store: SqliteStore,
) -> None:
    store = sqlite_store
    await store.market.insert_trades([trade(i) for i in range(100)])
    assert not store.writes_failing
    await _pin(store)
    with pytest.raises(StoreFullError):
        await store.probe_write()
    # The probe is a write: its failure is the store's state.
    assert store.writes_failing
    level, reason = store.check()
    assert level is HealthLevel.UNHEALTHY and "disk full" in (reason or ""), reason
    await _unpin(store)
    await store.probe_write()
    assert not store.writes_failing
    assert store.check() == (HealthLevel.HEALTHY, None)
    assert "tradingd_write_probe" not in _tables(store.path)
    assert await store.market.count_trades(VENUE, SYMBOL) == 100
    assert await store.integrity_check() == []


async def test_health_comes_back_without_any_other_write(
    sqlite_store: SqliteStore, autojump_clock: trio.testing.MockClock
) -> None:
    store = sqlite_store
    await store.market.insert_trades([trade(i) for i in range(100)])
    async with trio.open_nursery() as nursery:
        await nursery.start(run_write_probe, store)
        # Healthy: nothing is probed.
        writes = store.stats.writes
        await trio.sleep(10 * WRITE_PROBE_INTERVAL_S)
        assert store.stats.writes == writes
        # The disk fills; a write fails.
        await _pin(store)
        summary = await store.market.insert_trades([trade(i) for i in range(100, 5100)])
        assert isinstance(summary.failed_chunks[0].error, StoreFullError)
        assert store.check()[0] is HealthLevel.UNHEALTHY
        # Still full: the probe tries, and health stays unhealthy.
        failures = store.stats.write_errors
        await trio.sleep(3.5 * WRITE_PROBE_INTERVAL_S)
        assert store.stats.write_errors == failures + 3
        assert store.check()[0] is HealthLevel.UNHEALTHY
        # Space again; nothing else writes: the next probe brings health back.
        await _unpin(store)
        await trio.sleep(WRITE_PROBE_INTERVAL_S + 0.01)
        assert store.check() == (HealthLevel.HEALTHY, None)
        assert store.health().last_error_type == "StoreFullError"
        # Healthy again: the probe is quiet.
        writes = store.stats.writes
        await trio.sleep(10 * WRITE_PROBE_INTERVAL_S)
        assert store.stats.writes == writes
        nursery.cancel_scope.cancel()
    assert await store.market.count_trades(VENUE, SYMBOL) == 100
