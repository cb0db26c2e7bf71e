"""The store's owner: open/migrate, durability policy, the thread lane, errors, health.

Failure simulations (root can write anywhere, so chmod proves nothing):

* locked/busy — a second connection holds ``BEGIN EXCLUSIVE``; the store's
  ``busy_timeout_s`` is 50 ms;
* disk full — ``PRAGMA max_page_count`` pinned to the current page count on the
  store's own connection, so the file cannot grow (SQLite answers SQLITE_FULL,
  exactly as on a full disk);
* read-only — ``PRAGMA query_only = 1`` on the store's connection (SQLite
  answers SQLITE_READONLY, as for a read-only file or mount);
* corruption — a b-tree page overwritten with 0xFF bytes; a non-database file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from daemon.errors import PermanentError, TransientError
from daemon.health import HealthLevel, HealthModel
from daemon.resilience import DeadLetter
from daemon.store import (
    LATEST_VERSION,
    MIGRATIONS,
    Durability,
    Migration,
    SqliteStore,
    StoreBusyError,
    StoreClosedError,
    StoreCorruptError,
    StoreFullError,
    StoreIOError,
    StoreMigrationError,
    StoreOpenError,
    StoreReadOnlyError,
    StoreVersionError,
    integrity_check,
)
from daemon.store.migrations import APPLICATION_ID
from tests.helpers.store import SYMBOL, VENUE, WallClock, open_store, page_count, raw, trade


@pytest.fixture
def store(sqlite_store: SqliteStore) -> SqliteStore:
    """This module is about SQLite itself (files, WAL, PRAGMAs): SQLite only.

    The PostgreSQL owner's counterparts are in ``test_postgres.py``.
    """
    return sqlite_store


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}


# ----------------------------------------------------------------------------- open & migrate


async def test_open_creates_a_wal_database_at_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await open_store(path)
    async with store:
        assert store.schema_version == LATEST_VERSION
        assert store.migrations_applied == tuple(m.version for m in MIGRATIONS)
        assert await store.call(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        assert await store.call(lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]) == 1
        assert await store.call(lambda c: c.execute("PRAGMA application_id").fetchone()[0]) == (
            APPLICATION_ID
        )
    assert {"trades", "book_snapshots", "book_levels", "ingest_checkpoints", "gaps"} <= tables(path)
    assert {"dead_letters", "schema_migrations"} <= tables(path)
    again = await open_store(path)
    async with again:
        assert again.migrations_applied == ()
        assert again.schema_version == LATEST_VERSION


async def test_open_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous_market"):
        await open_store(tmp_path / "a.db", synchronous_market="OFF")
    for bad in (":memory:", "", "file:x.db?mode=memory"):
        with pytest.raises(ValueError, match="plain file path"):
            await open_store(Path(bad) if bad else bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="busy_timeout_s"):
        await open_store(tmp_path / "a.db", busy_timeout_s=-1)


async def test_a_missing_directory_is_a_clear_open_error(tmp_path: Path) -> None:
    with pytest.raises(StoreOpenError, match="no-such-dir"):
        await open_store(tmp_path / "no-such-dir" / "store.db")


async def test_a_newer_schema_is_refused_and_the_file_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await open_store(path) as store:
        await store.market.insert_trades([trade(1)])
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    before = digest(path)
    with pytest.raises(StoreVersionError) as info:
        await open_store(path)
    assert isinstance(info.value, PermanentError)
    assert info.value.file_version == LATEST_VERSION + 1
    assert info.value.code_version == LATEST_VERSION
    assert str(path) in str(info.value)
    assert "newer" in str(info.value)
    assert digest(path) == before


async def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)
    before = digest(path)
    with pytest.raises(StoreCorruptError, match="not a database") as info:
        await open_store(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["store.db"]  # no -wal/-shm created


async def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with raw(path) as conn:
        conn.execute("PRAGMA application_id = 1234")
        conn.execute("CREATE TABLE trades (x)")
    before = digest(path)
    with pytest.raises(StoreOpenError, match="not a tradingd database"):
        await open_store(path)
    assert digest(path) == before


NEXT = LATEST_VERSION + 1
BROKEN = Migration(NEXT, "broken", ("CREATE TABLE half_done (a)", "THIS IS NOT SQL"))
EXTRA = Migration(NEXT, "add notes", ("CREATE TABLE notes (note TEXT NOT NULL)",))


async def test_a_failed_migration_leaves_a_new_file_without_any_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with pytest.raises(StoreMigrationError, match=rf"migration {NEXT} .*broken.* rolled back"):
        await open_store(path, migrations=(*MIGRATIONS, BROKEN))
    assert tables(path) == set()
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0


async def test_a_failed_upgrade_keeps_the_old_schema_and_data(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await open_store(path) as store:
        await store.market.insert_trades([trade(1), trade(2)])
    with pytest.raises(StoreMigrationError):
        await open_store(path, migrations=(*MIGRATIONS, BROKEN))
    assert "half_done" not in tables(path)
    async with await open_store(path) as store:
        assert store.schema_version == LATEST_VERSION
        assert await store.market.count_trades(VENUE, SYMBOL) == 2


async def test_an_upgrade_applies_only_pending_migrations(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await open_store(path) as store:
        await store.market.insert_trades([trade(1)])
    async with await open_store(path, migrations=(*MIGRATIONS, EXTRA)) as store:
        assert store.migrations_applied == (NEXT,)
        assert store.schema_version == NEXT
        assert await store.market.count_trades(VENUE, SYMBOL) == 1
        logged = await store.read(
            lambda c: c.execute("SELECT version, name FROM schema_migrations").fetchall()
        )
        assert logged == [*((m.version, m.name) for m in MIGRATIONS), (NEXT, "add notes")]
    # The v2 file is now newer than the v1 code.
    with pytest.raises(StoreVersionError):
        await open_store(path)


async def test_migrations_must_be_numbered_from_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"1\.\.N"):
        await open_store(tmp_path / "a.db", migrations=(EXTRA,))


# ----------------------------------------------------------------------------- durability


async def test_synchronous_follows_the_transaction_kind(tmp_path: Path) -> None:
    def level(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    async with await open_store(tmp_path / "a.db") as store:
        assert store.synchronous_market == "NORMAL"
        assert await store.write(level, durability=Durability.CRITICAL) == 2  # FULL
        assert await store.write(level, durability=Durability.MARKET) == 1  # NORMAL
        assert await store.write(level) == 2  # CRITICAL is the default
        assert await store.write(level, durability=Durability.MARKET) == 1
    async with await open_store(tmp_path / "b.db", synchronous_market="FULL") as store:
        assert await store.write(level, durability=Durability.MARKET) == 2
        assert store.status()["synchronous"] == {"market": "FULL", "critical": "FULL"}


async def test_market_data_commits_normal_and_dead_letters_full(tmp_path: Path) -> None:
    statements: list[str] = []
    async with await open_store(tmp_path / "a.db") as store:
        await store.call(lambda c: c.set_trace_callback(statements.append))
        await store.market.insert_trades([trade(1)])
        await store.dead_letters.add(
            DeadLetter.from_error({"x": 1}, ValueError("bad"), source="trades", now=lambda: 1.0)
        )
        await store.market.insert_trades([trade(2)])
        await store.call(lambda c: c.set_trace_callback(None))

    def synchronous_before(marker: str, occurrence: int = 0) -> str:
        index = [i for i, s in enumerate(statements) if marker in s][occurrence]
        pragmas = [s for s in statements[:index] if s.startswith("PRAGMA synchronous")]
        return pragmas[-1]

    assert synchronous_before("INSERT INTO trades") == "PRAGMA synchronous = NORMAL"
    assert synchronous_before("INSERT INTO dead_letters") == "PRAGMA synchronous = FULL"
    assert synchronous_before("INSERT INTO trades", 1) == "PRAGMA synchronous = NORMAL"
    # Switched only outside transactions (SQLite refuses it inside one).
    for i, s in enumerate(statements):
        if s.startswith("PRAGMA synchronous"):
            assert statements[i + 1] == "BEGIN IMMEDIATE"


# ----------------------------------------------------------------------------- the thread lane


async def test_all_database_work_runs_on_the_store_lane_not_the_event_loop(
    tmp_path: Path,
) -> None:
    """Real threads and the real clock: the default runner is the one-thread lane."""
    seen: set[str] = set()
    loop_thread = threading.current_thread().name

    def on_statement(_: str) -> None:
        seen.add(threading.current_thread().name)

    with trio.fail_after(20):
        store = await SqliteStore.open(tmp_path / "a.db")
        async with store:
            assert store.lane is not None
            opened_on = await store.call(lambda c: threading.current_thread().name)
            assert opened_on == "tradingd:store"
            await store.call(lambda c: c.set_trace_callback(on_statement))
            async with trio.open_nursery() as nursery:
                for start in range(0, 400, 100):
                    batch = [trade(i) for i in range(start, start + 100)]
                    nursery.start_soon(store.market.insert_trades, batch)
                nursery.start_soon(store.market.last_trade_id, VENUE, SYMBOL)
            assert await store.market.count_trades(VENUE, SYMBOL) == 400
            await store.call(lambda c: c.set_trace_callback(None))
            lane = store.lane.snapshot()
            assert lane["max_threads"] == 1
            assert lane["stats"]["max_in_flight"] >= 2  # calls queued behind each other
            assert await store.integrity_check() == []
    assert seen == {"tradingd:store"}
    assert loop_thread not in seen


# ----------------------------------------------------------------------------- errors & health


async def test_busy_database_is_transient_unhealthy_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    wall = WallClock(1_700_000_000.0)
    async with await open_store(path, busy_timeout_s=0.05, wall_clock=wall) as store:
        await store.market.insert_trades([trade(i) for i in range(10)])
        blocker = raw(path)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        wall.now += 5
        summary = await store.market.insert_trades([trade(i) for i in range(10, 40)], chunk_size=10)
        assert summary.inserted == 0
        assert summary.failed == 30
        assert [(f.index, f.attempted) for f in summary.failed_chunks] == [
            (0, True),
            (1, False),
            (2, False),
        ]
        error = summary.failed_chunks[0].error
        assert isinstance(error, StoreBusyError)
        assert isinstance(error, TransientError)
        assert error.sqlite_error == "SQLITE_BUSY"
        assert str(path) in str(error)
        assert "locked" in str(error)
        level, reason = store.check()
        assert level is HealthLevel.UNHEALTHY
        assert reason is not None and str(path) in reason and "locked" in reason
        health = store.health()
        assert health.last_error_type == "StoreBusyError"
        assert health.last_error_at == wall.now
        assert health.failing_since == wall.now
        assert health.consecutive_write_failures == 1
        # Reads still work in WAL mode while another connection writes.
        assert await store.market.count_trades(VENUE, SYMBOL) == 10
        blocker.execute("ROLLBACK")
        blocker.close()
        wall.now += 5
        again = await store.market.insert_trades([trade(i) for i in range(10, 40)], chunk_size=10)
        assert again.ok and again.inserted == 30
        assert store.check() == (HealthLevel.HEALTHY, None)
        assert store.health().last_error_at == wall.now - 5  # kept for /status
        assert await store.market.count_trades(VENUE, SYMBOL) == 40
        assert store.stats.errors_by_type == {"StoreBusyError": 1}


async def test_disk_full_is_transient_keeps_committed_data_and_recovers(
    tmp_path: Path,
) -> None:
    async with await open_store(tmp_path / "store.db") as store:
        committed = await store.market.insert_trades([trade(i) for i in range(100)])
        assert committed.inserted == 100
        pages = await page_count(store)
        await store.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchall())
        summary = await store.market.insert_trades(
            [trade(i) for i in range(100, 5100)], checkpoint=(VENUE, SYMBOL, "trades")
        )
        assert summary.inserted == 0 and summary.failed == 5000
        error = summary.failed_chunks[0].error
        assert isinstance(error, StoreFullError)
        assert isinstance(error, TransientError)
        assert "disk full" in str(error)
        with pytest.raises(StoreFullError):
            summary.raise_for_failures()
        assert store.check()[0] is HealthLevel.UNHEALTHY
        assert "disk full" in (store.check()[1] or "")
        # Nothing committed was lost, and the checkpoint did not move.
        assert await store.market.count_trades(VENUE, SYMBOL) == 100
        assert await store.market.checkpoint(VENUE, SYMBOL, "trades") is None
        # The condition clears: the next write works.
        await store.call(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchall())
        again = await store.market.insert_trades(
            [trade(i) for i in range(100, 5100)], checkpoint=(VENUE, SYMBOL, "trades")
        )
        assert again.ok and again.inserted == 5000 and again.checkpoint == 5099
        assert store.check() == (HealthLevel.HEALTHY, None)
        assert await store.market.count_trades(VENUE, SYMBOL) == 5100
        assert await store.integrity_check() == []


async def test_read_only_is_transient_and_recovers(tmp_path: Path) -> None:
    letter = DeadLetter.from_error(b"\x00", ValueError("x"), source="s", now=lambda: 1.0)
    async with await open_store(tmp_path / "store.db") as store:
        await store.market.insert_trades([trade(1)])
        await store.call(lambda c: c.execute("PRAGMA query_only = 1").fetchall())
        summary = await store.market.insert_trades([trade(2)])
        assert isinstance(summary.failed_chunks[0].error, StoreReadOnlyError)
        with pytest.raises(StoreReadOnlyError, match="read-only") as info:
            await store.dead_letters.add(letter)
        assert isinstance(info.value, TransientError)
        assert store.check()[0] is HealthLevel.UNHEALTHY
        assert store.health().consecutive_write_failures == 2
        assert await store.market.trade_ids(VENUE, SYMBOL, 0, 10) == [1]
        await store.call(lambda c: c.execute("PRAGMA query_only = 0").fetchall())
        assert (await store.dead_letters.add(letter)).letter_id == 1
        assert store.check() == (HealthLevel.HEALTHY, None)


async def test_transient_read_failures_degrade_until_a_read_succeeds(
    store: SqliteStore,
) -> None:
    def failing_read(conn: sqlite3.Connection) -> None:
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = 10
        error.sqlite_errorname = "SQLITE_IOERR"
        raise error

    with pytest.raises(StoreIOError):
        await store.read(failing_read)
    level, reason = store.check()
    assert level is HealthLevel.DEGRADED
    assert reason is not None and "disk I/O error" in reason
    assert await store.market.last_trade_id(VENUE, SYMBOL) is None
    assert store.check() == (HealthLevel.HEALTHY, None)
    assert store.stats.read_errors == 1


async def test_corruption_is_reported_and_keeps_the_store_unhealthy(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await open_store(path) as store:
        await store.market.insert_trades([trade(i) for i in range(3000)])
    with raw(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'trades'").fetchone()
    with path.open("r+b") as file:
        file.seek((root[0] - 1) * page_size)
        file.write(b"\xff" * page_size)
    problems = integrity_check(path)
    assert problems, "the damaged page must be reported"
    async with await open_store(path) as store:
        with pytest.raises(StoreCorruptError, match="corrupt") as info:
            await store.market.count_trades(VENUE, SYMBOL)
        assert isinstance(info.value, PermanentError)
        level, reason = store.check()
        assert level is HealthLevel.UNHEALTHY
        assert reason is not None and "integrity check" in reason
        # A write elsewhere in the file works, but corruption stays reported.
        await store.market.record_gap(VENUE, SYMBOL, "trades", 1, 2)
        assert store.check()[0] is HealthLevel.UNHEALTHY


async def test_a_closed_store_refuses_calls_and_reports_it(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "store.db")
    await store.aclose()
    await store.aclose()  # idempotent
    assert store.closed
    with pytest.raises(StoreClosedError):
        await store.market.insert_trades([trade(1)])
    with pytest.raises(StoreClosedError):
        await store.market.last_trade_id(VENUE, SYMBOL)
    assert store.check() == (HealthLevel.UNHEALTHY, f"store {tmp_path / 'store.db'}: closed")


async def test_bugs_in_a_callback_propagate_untranslated(store: SqliteStore) -> None:
    def buggy(conn: sqlite3.Connection) -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await store.write(buggy)
    with pytest.raises(sqlite3.ProgrammingError):  # wrong number of bindings: a bug
        await store.read(lambda c: c.execute("SELECT ?", ()).fetchall())
    assert store.check() == (HealthLevel.HEALTHY, None)


async def test_a_failed_write_is_rolled_back(store: SqliteStore) -> None:
    insert = (
        "INSERT INTO gaps (venue, symbol, stream, from_id, to_id, detected_at_ms) "
        "VALUES ('v', 's', 't', ?, ?, 0)"
    )

    def half(conn: sqlite3.Connection) -> None:
        conn.execute(insert, (1, 2))
        conn.execute(insert, (5, 4))  # CHECK (to_id >= from_id) fails

    with pytest.raises(PermanentError):
        await store.write(half)
    assert await store.market.gaps() == []
    assert not await store.call(lambda c: c.in_transaction)


async def test_the_health_model_reads_the_store_check(tmp_path: Path) -> None:
    model = HealthModel()
    async with await open_store(tmp_path / "store.db") as store:
        model.add_check("store", store.check)
        assert model.evaluate().level is HealthLevel.HEALTHY
        await store.call(lambda c: c.execute("PRAGMA query_only = 1").fetchall())
        await store.market.insert_trades([trade(1)])
        report = model.evaluate()
        assert report.level is HealthLevel.UNHEALTHY
        assert any("read-only" in reason for reason in report.reasons)


async def test_stats_and_status_are_json(store: SqliteStore) -> None:
    await store.market.insert_trades([trade(i) for i in range(5)] * 2, chunk_size=4)
    snap = json.loads(json.dumps(store.status()))
    assert snap["schema_version"] == LATEST_VERSION
    assert snap["health"]["level"] == "healthy"
    assert snap["lane"] is None  # inline runner
    trades = snap["stats"]["tables"]["trades"]
    assert trades == {
        "calls": 1,
        "chunks_committed": 3,
        "chunks_failed": 0,
        "rows_attempted": 10,
        "rows_inserted": 5,
        "rows_updated": 0,
        "rows_skipped": 5,
        "rows_failed": 0,
    }
    assert snap["stats"]["commits"] == 3
    assert snap["stats"]["last_commit_s"] >= 0
    assert snap["stats"]["max_commit_s"] >= snap["stats"]["last_commit_s"]
