"""The PostgreSQL owner itself: schema, concurrency between daemons, lost connections, secrets.

The shared behaviour (market data, dead letters, retention, order tables)
runs on both backends in the other suites; these cases are about what only
a server has: two daemons (two owners, each on its own lane) on one schema,
a backend terminated mid-transaction, a DSN with a password, the server's
error classes. Each test has its own schema (``pg_dsn``).
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import trio

from daemon.errors import PermanentError, TransientError
from daemon.health import HealthLevel
from daemon.model.orders import OrderType, Side, TimeInForce
from daemon.orders.intent import OrderIntent
from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState, transition
from daemon.store import (
    Durability,
    Migration,
    StoreBusyError,
    StoreDataError,
    StoreError,
    StoreIOError,
    StoreMigrationError,
    StoreOpenError,
    StoreReadOnlyError,
    StoreVersionError,
    inline_runner,
)
from daemon.store.orders import OrderStore
from daemon.store.orders_rules import StaleStateError
from daemon.store.pg_errors import public_dsn, translate_pg_error
from daemon.store.pg_migrations import LATEST_VERSION, PG_MIGRATIONS
from daemon.store.postgres import PostgresStore
from tests.helpers.store import SYMBOL, VENUE, WallClock, trade
from tests.store.pg import admin

S = OrderState


def intent(message_id: str) -> IntentRecord:
    made = OrderIntent.create(
        message_id=message_id,
        account="main",
        symbol="BTCUSDT",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal("0.00100000"),
        price=Decimal("30000.10"),
        time_in_force=TimeInForce.GTC,
    )
    return IntentRecord.from_intent(made, venue=VENUE)


async def open_pg(dsn: str, **kwargs: Any) -> PostgresStore:
    kwargs.setdefault("runner", inline_runner)
    kwargs.setdefault("wall_clock", WallClock())
    return await PostgresStore.open(dsn, **kwargs)


def schema_of(dsn: str) -> str:
    return dsn.rsplit("search_path=", 1)[1].strip("'")


def tables(dsn: str) -> set[str]:
    with admin() as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema_of(dsn),)
        )
        return {row[0] for row in rows}


# ----------------------------------------------------------------------------- schema


async def test_open_migrates_once_and_reports_itself(pg_dsn: str) -> None:
    async with await open_pg(pg_dsn) as store:
        assert (store.schema_version, store.migrations_applied) == (
            LATEST_VERSION,
            tuple(range(1, LATEST_VERSION + 1)),
        )
        assert store.sql.name == "postgres"
        assert store.check() == (HealthLevel.HEALTHY, None)
        status = store.status()
        assert status["backend"] == "postgres" and status["path"] == public_dsn(pg_dsn)
        assert status["synchronous"] == {"market": "off", "critical": "on"}
    assert {"trades", "order_intents", "dead_letters", "schema_migrations"} <= tables(pg_dsn)
    async with await open_pg(pg_dsn) as store:
        assert store.migrations_applied == ()


async def test_two_daemons_starting_together_migrate_once(pg_dsn: str) -> None:
    stores: list[PostgresStore] = []

    async def start() -> None:
        stores.append(await PostgresStore.open(pg_dsn))  # real lanes: truly concurrent

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start)
            nursery.start_soon(start)
        try:
            assert sorted(s.migrations_applied for s in stores) == [
                (),
                tuple(range(1, LATEST_VERSION + 1)),
            ]
            assert {s.schema_version for s in stores} == {LATEST_VERSION}
        finally:
            for store in stores:
                await store.aclose()


async def test_a_newer_schema_is_refused_and_left_untouched(pg_dsn: str) -> None:
    async with await open_pg(pg_dsn):
        pass
    with admin() as conn:
        conn.execute(
            f"INSERT INTO {schema_of(pg_dsn)}.schema_migrations VALUES (%s, 'future', 0)",
            (LATEST_VERSION + 1,),
        )
    before = tables(pg_dsn)
    with pytest.raises(StoreVersionError, match="newer than this tradingd") as info:
        await open_pg(pg_dsn)
    assert isinstance(info.value, PermanentError)
    assert (info.value.file_version, info.value.code_version) == (
        LATEST_VERSION + 1,
        LATEST_VERSION,
    )
    assert tables(pg_dsn) == before


async def test_another_programs_schema_is_refused(pg_dsn: str) -> None:
    with admin() as conn:
        conn.execute(f"CREATE TABLE {schema_of(pg_dsn)}.schema_migrations (version int)")
    with pytest.raises(StoreOpenError, match="not tradingd's"):
        await open_pg(pg_dsn)


async def test_a_failed_migration_leaves_no_schema_at_all(pg_dsn: str) -> None:
    broken = (
        *PG_MIGRATIONS,
        Migration(LATEST_VERSION + 1, "broken", ("CREATE TABLE x (y nonsense_type)",)),
    )
    with pytest.raises(
        StoreMigrationError, match=rf"migration {LATEST_VERSION + 1} .* rolled back"
    ):
        await open_pg(pg_dsn, migrations=broken)
    assert tables(pg_dsn) == set()  # versions 1 and 2 of the same transaction are gone too


# ----------------------------------------------------------------------------- two daemons


async def test_two_daemons_racing_one_transition_exactly_one_wins(pg_dsn: str) -> None:
    """Daemon A holds the intent's row (its transaction is open); daemon B tries the same
    PENDING -> SENDING meanwhile, waits for A's commit, then finds it stale and changes
    nothing. Then many truly concurrent races: always exactly one winner."""
    with trio.fail_after(30):
        async with (
            await PostgresStore.open(pg_dsn) as a,
            await PostgresStore.open(pg_dsn) as b,
        ):
            orders_a, orders_b = OrderStore(a), OrderStore(b)
            [r] = await orders_a.insert_intents([intent("m1")])
            coid = r.client_order_id
            send = transition(S.PENDING, S.SENDING, reason="send")
            holding, release = threading.Event(), threading.Event()
            sql = orders_a.sql

            def slow_send(conn: Any) -> IntentRecord:
                done = sql.apply_transitions(conn, coid, (send,), 1)
                holding.set()
                release.wait(10)
                return done

            results: dict[str, Any] = {}

            async def run_a() -> None:
                results["a"] = await orders_a.run_write(slow_send, "test")

            async def run_b() -> None:
                try:
                    results["b"] = await orders_b.apply_transition(coid, send)
                except StaleStateError as exc:
                    results["b"] = exc

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_a)
                await trio.to_thread.run_sync(holding.wait)
                nursery.start_soon(run_b)
                await wait_for_a_lock_wait()  # B is blocked on A's row lock
                release.set()
            assert results["a"].state is S.SENDING
            stale = results["b"]
            assert isinstance(stale, StaleStateError)
            assert (stale.expected, stale.current) == (S.PENDING, S.SENDING)
            history = await orders_b.history(coid)
            assert [(h.source, h.target) for h in history] == [
                (None, S.PENDING),
                (S.PENDING, S.SENDING),
            ]
            stored = await orders_b.get(coid)
            assert stored is not None and stored.send_attempts == 1

            # Truly concurrent: both daemons advance each of 15 intents at once.
            fresh = await orders_a.insert_intents([intent(f"r{i}") for i in range(15)])
            outcomes: list[str] = []

            async def advance(orders: OrderStore, coid: str) -> None:
                try:
                    await orders.apply_transition(coid, send)
                    outcomes.append(f"{coid}:won")
                except StaleStateError:
                    outcomes.append(f"{coid}:stale")

            async with trio.open_nursery() as nursery:
                for record in fresh:
                    nursery.start_soon(advance, orders_a, record.client_order_id)
                    nursery.start_soon(advance, orders_b, record.client_order_id)
            for record in fresh:
                mine = sorted(
                    o.split(":")[1] for o in outcomes if o.startswith(record.client_order_id + ":")
                )
                assert mine == ["stale", "won"]
                rows = await orders_a.history(record.client_order_id)
                assert len(rows) == 2


async def wait_for_a_lock_wait() -> None:
    def waiting() -> bool:
        with admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'tradingd'"
            ).fetchone()
            return row is not None and row[0] > 0

    # Another process's state: polled (there is nothing to wait on).
    while not await trio.to_thread.run_sync(waiting):  # noqa: ASYNC110
        await trio.sleep(0.02)


async def test_two_daemons_record_intents_with_distinct_seqs(pg_dsn: str) -> None:
    with trio.fail_after(30):
        async with (
            await PostgresStore.open(pg_dsn) as a,
            await PostgresStore.open(pg_dsn) as b,
        ):
            batches = [[intent(f"{n}-{i}") for i in range(5)] for n in range(8)]
            async with trio.open_nursery() as nursery:
                for n, batch in enumerate(batches):
                    nursery.start_soon(OrderStore(a if n % 2 else b).insert_intents, batch)
                # The same message from both daemons at once: one intent.
                same = intent("dup")
                nursery.start_soon(OrderStore(a).record_intents, [same])
                nursery.start_soon(OrderStore(b).record_intents, [same])
            stored = await OrderStore(a).list(limit=1000)
            assert sorted(r.seq for r in stored) == list(range(1, 42))
            assert sum(r.message_id == "dup" for r in stored) == 1


# ----------------------------------------------------------------------------- failures


async def test_a_lost_connection_mid_transaction_writes_nothing_and_reconnects(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(30):
        async with await PostgresStore.open(pg_dsn, wall_clock=WallClock()) as store:
            orders = OrderStore(store)
            sql = orders.sql

            def killed_midway(conn: Any) -> None:
                sql.insert_intents(conn, [intent("lost")], 1)
                with admin() as other:
                    other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
                conn.execute("SELECT 1")  # the server is gone: the transaction with it

            with (
                caplog.at_level(logging.INFO, logger="tradingd.store"),
                pytest.raises(StoreIOError) as info,
            ):
                await orders.run_write(killed_midway, "recording an intent")
            assert isinstance(info.value, TransientError)
            assert store.check()[0] is HealthLevel.UNHEALTHY
            # The next call connects again; nothing of the transaction was stored.
            assert await orders.counts_by_state() == {s.value: 0 for s in S}
            [r] = await orders.insert_intents([intent("lost")])
            assert r.seq == 1
            assert store.check() == (HealthLevel.HEALTHY, None)
            assert store.status()["reconnects"] == 1
            # Market data works over the new connection too (its COPY stage is recreated).
            summary = await store.market.insert_trades([trade(1), trade(2)])
            assert summary.inserted == 2
        assert "connecting again" in caplog.text


async def test_the_dsn_password_never_shows(pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-pass-word"
    unreachable = f"host=127.0.0.1 port=1 dbname=test user=postgres password={secret}"
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(StoreIOError) as info:
            await open_pg(unreachable, connect_timeout_s=2)
        chain = [info.value, info.value.__cause__, info.value.__context__]
        assert all(secret not in str(e) for e in chain if e is not None)
        url = f"postgresql://postgres:{secret}@127.0.0.1:1/test"
        with pytest.raises(StoreIOError) as info:
            await open_pg(url, connect_timeout_s=2)
        assert secret not in str(info.value)
        # With a working server (trust auth ignores it), and given separately.
        async with await open_pg(pg_dsn, password=secret) as store:
            assert secret not in repr(store.status())
            await store.write(lambda c: c.execute("SELECT 1"))
            with pytest.raises(StoreDataError):
                await store.write(lambda c: c.execute("SELECT 1/0"))
            assert secret not in repr(store.health())
    assert secret not in caplog.text


async def test_a_locked_row_is_a_transient_busy_error(pg_dsn: str) -> None:
    async with await open_pg(pg_dsn, busy_timeout_s=0.2) as store:
        orders = OrderStore(store)
        await orders.save_trading_state("main", "HALTED", "operator")
        with admin() as other:
            other.execute("BEGIN")
            other.execute(f"LOCK TABLE {schema_of(pg_dsn)}.trading_states IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreBusyError, match="lock timeout"):
                await orders.save_trading_state("main", "ACTIVE", "resume")
            assert store.check()[0] is HealthLevel.UNHEALTHY
            other.execute("ROLLBACK")
        await orders.save_trading_state("main", "ACTIVE", "resume")
        assert store.check() == (HealthLevel.HEALTHY, None)
        assert [s[1] for s in await orders.load_trading_states()] == ["ACTIVE"]


async def test_a_read_only_server_is_transient(pg_dsn: str) -> None:
    async with await open_pg(pg_dsn) as store:
        await store.call(lambda c: c.execute("SET default_transaction_read_only = on"))
        with pytest.raises(StoreReadOnlyError):
            await store.market.record_gap(VENUE, SYMBOL, "trades", 1, 2)
        await store.call(lambda c: c.execute("SET default_transaction_read_only = off"))
        gap = await store.market.record_gap(VENUE, SYMBOL, "trades", 1, 2)
        assert gap.from_id == 1


async def test_market_commits_skip_the_wal_flush_and_critical_ones_do_not(pg_dsn: str) -> None:
    def setting(conn: Any) -> str:
        return str(conn.execute("SELECT current_setting('synchronous_commit')").fetchone()[0])

    async with await open_pg(pg_dsn) as store:
        assert await store.write(setting, durability=Durability.MARKET) == "off"
        assert await store.write(setting, durability=Durability.CRITICAL) == "on"
    async with await open_pg(pg_dsn, synchronous_market="FULL") as store:
        assert await store.write(setting, durability=Durability.MARKET) == "on"


async def test_bugs_propagate_untranslated(pg_dsn: str) -> None:
    async with await open_pg(pg_dsn) as store:
        with pytest.raises(psycopg.errors.UndefinedTable):
            await store.read(lambda c: c.execute("SELECT * FROM no_such_table"))
        assert store.check() == (HealthLevel.HEALTHY, None)


def test_server_errors_map_to_the_store_taxonomy() -> None:
    def error(sqlstate: str) -> psycopg.Error:
        cls = psycopg.errors.lookup(sqlstate)
        return cls("boom")

    cases = {
        "57P01": StoreIOError,
        "08006": StoreIOError,
        "40001": StoreBusyError,
        "40P01": StoreBusyError,
        "55P03": StoreBusyError,
        "57014": StoreBusyError,
        "53100": StoreError,  # StoreFullError, checked below
        "25006": StoreReadOnlyError,
        "23505": StoreDataError,
        "22003": StoreDataError,
        "28P01": StoreOpenError,
    }
    for sqlstate, expected in cases.items():
        translated = translate_pg_error(error(sqlstate), "host=h", action="testing")
        assert isinstance(translated, expected), sqlstate
    full = translate_pg_error(error("53100"), "host=h", action="testing")
    assert type(full).__name__ == "StoreFullError" and isinstance(full, TransientError)
    assert translate_pg_error(error("42P01"), "host=h", action="testing") is None
    assert translate_pg_error(ValueError("bug"), "host=h", action="testing") is None
