"""``tradingd db migrate-to-postgres``: a SQLite store copied into PostgreSQL, proven equal.

Against the real server (``tests/store/pg.py``: a fresh schema per test;
skipped without a server, failed under ``TRADINGD_REQUIRE_SERVICES=1``). The
source is a SQLite store filled through the store's own facades with every
kind of row: trades of three symbols (one lower-case, so a collation-sensitive
order would show), checkpoints, gaps in every state, book snapshots with
levels, dead letters (JSON and raw payloads, keyed, one purged so SQLite's
``AUTOINCREMENT`` high mark is above the largest id), order intents in
several states with their history, fills, positions and trading states.

The copy is judged through both stores' facades (not only the command's own
counts and checksums), then: a second run copies nothing and still verifies;
a run interrupted after a few batches is completed by the next; a tampered
target row is found and its table named (exit 1); the password is never
printed; usage errors exit 2; and the daemon's own configured open path on
the migrated schema sees the same orders and continues the ids.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio

from daemon.cli.dispatch import main
from daemon.config import load
from daemon.model.orders import OrderType, Side, TimeInForce
from daemon.orders.intent import OrderIntent
from daemon.orders.records import FillRecord, IntentRecord
from daemon.orders.state import OrderState, path_to_venue_state, transition
from daemon.resilience import DeadLetter
from daemon.risk.state import TradingState
from daemon.store import GapState, inline_runner
from daemon.store.migrate_pg import (
    NOT_COPIED,
    TABLES,
    MigrationRefused,
    TableReport,
    migrate_to_postgres,
)
from daemon.store.orders import OrderStore
from daemon.store.orders_rules import GLOBAL_SCOPE
from daemon.store.postgres import PostgresStore
from daemon.store.service import open_configured
from tests.helpers.process import config_text, short_sockdir
from tests.helpers.store import WallClock, open_store, snapshot, trade
from tests.store.pg import admin

S = OrderState
VENUE = "binance"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "btcusdt")
TRADES_PER_SYMBOL = 240
#: Small batches: every big table takes several.
BATCH = 100
#: The password of the tests (trust auth accepts any): it must never be printed.
PASSWORD = "pw-7c1e-NEVER-PRINT-THIS-PASSWORD"


# --------------------------------------------------------------------------- the source


def _intent(n: int, *, account: str = "main", market: bool = False) -> IntentRecord:
    intent = OrderIntent.create(
        message_id=f"m{n}",
        account=account,
        symbol="BTCUSDT",
        side=Side.BUY if n % 2 else Side.SELL,
        type=OrderType.MARKET if market else OrderType.LIMIT,
        quantity=Decimal("0.00100000"),
        price=None if market else Decimal(f"3000{n}.10"),
        time_in_force=None if market else TimeInForce.GTC,
    )
    return IntentRecord.from_intent(intent, venue=VENUE)


def _fill(trade_id: int, coid: str, venue_order_id: int, quantity: str) -> FillRecord:
    return FillRecord(
        venue=VENUE,
        symbol="BTCUSDT",
        trade_id=trade_id,
        client_order_id=coid,
        account="main",
        venue_order_id=venue_order_id,
        side=Side.BUY,
        price=Decimal("30000.10"),
        quantity=Decimal(quantity),
        quote_quantity=Decimal("30000.10") * Decimal(quantity),
        commission=Decimal("0.00001000"),
        commission_asset="BNB",
        time_ms=1_700_000_000_000 + trade_id,
        is_maker=trade_id % 2 == 0 if trade_id != 3 else None,
    )


async def _populate(path: Path) -> None:
    clock = WallClock()
    store = await open_store(path, wall_clock=clock)
    async with store:
        market = store.market
        for symbol in SYMBOLS:
            await market.insert_trades(
                [trade(i, symbol=symbol) for i in range(1, TRADES_PER_SYMBOL + 1)],
                chunk_size=50,
                checkpoint=(VENUE, symbol, "trades"),
            )
        g1 = await market.record_gap(VENUE, "BTCUSDT", "trades", 500, 520, reason="drop")
        g2 = await market.record_gap(VENUE, "ETHUSDT", "trades", 600, 601, reason="malformed")
        await market.record_gap(VENUE, "btcusdt", "trades", 700, 799, reason="still open")
        await market.resolve_gap(g1.gap_id, GapState.BACKFILLED, resolution="REST")
        await market.resolve_gap(g2.gap_id, GapState.UNRECOVERABLE, resolution="venue forgot")
        await market.insert_book_snapshots(
            [snapshot(1_700_000_000_000 + k, k, levels=3, symbol=SYMBOLS[k % 3]) for k in range(7)]
        )
        letters = store.dead_letters
        await letters.add(_letter("intents", {"symbol": "BTCUSDT", "qty": "0.1"}, key="a"))
        await letters.add(_letter("marketdata.sim.stream", b'{"e":"trade","p":\x00\xff'))
        await letters.add(_letter("intents", {"nested": [1, 2.5, None, "ünï"]}, key="b"))
        doomed = await letters.add(_letter("intents", {"x": 1}))
        assert doomed.letter_id is not None
        await letters.purge(letter_ids=[doomed.letter_id])

        orders = OrderStore(store, wall_clock=clock)
        stored = await orders.insert_intents(
            [_intent(n, market=n in (3, 7)) for n in range(10)] + [_intent(10, account="other")]
        )
        coids = [r.client_order_id for r in stored]
        clock.now += 1
        # m1: SENDING; m2: ACCEPTED, cancel requested; m3: FILLED (market, two fills);
        # m4: REJECTED; m5: CANCELED before it was sent; m6 PARTIALLY_FILLED; the rest PENDING.
        await orders.apply_transition(coids[1], transition(S.PENDING, S.SENDING, reason="send"))
        for k in (2, 3, 4, 6):
            await orders.apply_transition(coids[k], transition(S.PENDING, S.SENDING, reason="send"))
        clock.now += 1
        await orders.apply_transition(
            coids[2],
            transition(S.SENDING, S.ACCEPTED, reason="venue accepted"),
            venue_order_id=4_000_000_000_002,
        )
        await orders.request_cancel(coids[2])
        await orders.apply_transitions(
            coids[3],
            path_to_venue_state(S.SENDING, S.FILLED, reason="answer: FILLED"),
            venue_order_id=4_000_000_000_003,
            executed_qty=Decimal("0.00100000"),
            cum_quote_qty=Decimal("30.00010000"),
        )
        await orders.insert_fills(
            [
                _fill(1, coids[3], 4_000_000_000_003, "0.00040000"),
                _fill(2, coids[3], 4_000_000_000_003, "0.00060000"),
            ]
        )
        await orders.apply_transitions(
            coids[4],
            (transition(S.SENDING, S.REJECTED, reason="venue rejected"),),
            reject_code=-2010,
            reject_reason="Account has insufficient balance",
        )
        await orders.cancel_unsent(coids[5], transition(S.PENDING, S.CANCELED, reason="user"))
        await orders.apply_transitions(
            coids[6],
            path_to_venue_state(S.SENDING, S.PARTIALLY_FILLED, reason="stream"),
            venue_order_id=4_000_000_000_006,
            executed_qty=Decimal("0.00050000"),
        )
        await orders.insert_fills([_fill(3, coids[6], 4_000_000_000_006, "0.00050000")])
        await orders.save_trading_state(GLOBAL_SCOPE, TradingState.REDUCING, "risk review")
        await orders.save_trading_state("main", TradingState.HALTED, "operator: ünï test")


def _letter(source: str, payload: Any, *, key: str | None = None) -> DeadLetter:
    return DeadLetter(
        source=source,
        payload=payload,
        error_type="daemon.errors.PermanentError",
        error_message="rejected",
        attempts=2,
        first_failed_at=1_700_000_000.123456789,
        last_failed_at=5_100_000_001.1 / 3,
        key=key,
    )


@attrs.frozen
class Setup:
    config: Path
    db: Path
    dsn: str
    #: The directory of the config's control socket.
    sockdir: Path


@pytest.fixture
def setup(tmp_path: Path, pg_dsn: str) -> Iterator[Setup]:
    """A populated SQLite store, a configuration naming it, and a fresh target schema."""
    with ExitStack() as stack:
        yield _setup(tmp_path, pg_dsn, stack)


def _setup(tmp_path: Path, pg_dsn: str, stack: ExitStack) -> Setup:
    state = tmp_path / "state"
    state.mkdir()
    token = tmp_path / "token"
    token.write_text("tok\n")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    sockdir = stack.enter_context(short_sockdir())
    config = tmp_path / "tradingd.toml"
    config.write_text(
        config_text(state_dir=state, control_socket=sockdir / "c.sock", token_file=token)
        + '\n[store]\npath = "store.db"\n'
    )
    db = state / "store.db"
    trio.run(_populate, db)
    return Setup(config, db, pg_dsn, sockdir)


def _cli(setup: Setup, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(
        [
            "db",
            "migrate-to-postgres",
            "--config",
            str(setup.config),
            "--dsn",
            setup.dsn,
            "--batch",
            str(BATCH),
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- both facades


async def _view(store: Any) -> dict[str, Any]:
    """Everything the facades read, in comparable form."""
    market = store.market
    orders = OrderStore(store)
    intents = await orders.list(limit=1000)
    view: dict[str, Any] = {
        "trades": {s: await market.trades(VENUE, s) for s in SYMBOLS},
        "books": {s: await market.book_snapshots(VENUE, s) for s in SYMBOLS},
        "levels": await market.count_book_levels(),
        "checkpoints": await market.checkpoints(),
        "gaps": await market.gaps(),
        "letters": await store.dead_letters.list(limit=100),
        "intents": intents,
        "history": {r.client_order_id: await orders.history(r.client_order_id) for r in intents},
        "fills": {r.client_order_id: await orders.fills_for(r.client_order_id) for r in intents},
        "positions": await orders.positions(),
        "states": await orders.load_trading_states(),
        "counts": await orders.counts_by_state(),
    }
    return view


async def _sqlite_view(path: Path) -> dict[str, Any]:
    async with await open_store(path) as store:
        return await _view(store)


async def _pg_view(dsn: str) -> dict[str, Any]:
    async with await PostgresStore.open(dsn, runner=inline_runner) as store:
        return await _view(store)


def _reports(reports: list[TableReport]) -> dict[str, TableReport]:
    return {r.name: r for r in reports}


# --------------------------------------------------------------------------- tests


def test_the_table_specs_match_both_schemas(pg_dsn: str, tmp_path: Path) -> None:
    """Every column of every table, in schema order: a new migration must update TABLES (or
    name the table as not copied: the migrations log, and the runtime account leases)."""
    db = tmp_path / "fresh.db"
    trio.run(_populate, db)
    migrate_to_postgres(db, pg_dsn, dry_run=True)  # reachable; nothing written
    with sqlite3.connect(db) as conn:
        sqlite_tables = {
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] not in NOT_COPIED and not r[0].startswith("sqlite_")
        }
        for spec in TABLES:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({spec.name})")]
            assert tuple(cols) == spec.column_names, spec.name
    assert sqlite_tables == {spec.name for spec in TABLES}
    reports = migrate_to_postgres(db, pg_dsn)
    assert all(r.verified for r in reports)
    with psycopg.connect(pg_dsn) as conn:
        for spec in TABLES:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s "
                "ORDER BY ordinal_position",
                (spec.name,),
            ).fetchall()
            assert tuple(r[0] for r in rows) == spec.column_names, spec.name


def test_migrate_copies_every_table_and_both_facades_agree(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _cli(setup, capsys=capsys)
    assert rc == 0, out + err
    for spec in TABLES:
        line = next(x for x in out.splitlines() if x.startswith(spec.name + " "))
        assert line.rstrip().endswith("ok"), line
    assert f"verified: {len(TABLES)} tables" in out

    sqlite_view = trio.run(_sqlite_view, setup.db)
    pg_view = trio.run(_pg_view, setup.dsn)
    assert len(sqlite_view["trades"]["btcusdt"]) == TRADES_PER_SYMBOL
    assert sqlite_view["counts"]["PENDING"] >= 1 and sqlite_view["positions"]
    assert [ls.letter_id for ls in sqlite_view["letters"]] == [1, 2, 3]
    for key, value in sqlite_view.items():
        assert pg_view[key] == value, key
    # The ids go on where SQLite left them (the purged letter 4 is never reused).
    assert [r.seq for r in pg_view["intents"]] == list(range(11, 0, -1))


def test_the_daemon_opens_the_migrated_schema_and_continues_it(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    """``[store] backend = "postgres"`` on the migrated schema: same orders, ids continue."""
    assert _cli(setup, capsys=capsys)[0] == 0
    text = setup.config.read_text().replace(
        '[store]\npath = "store.db"\n',
        f'[store]\nbackend = "postgres"\ndsn = {json.dumps(setup.dsn)}\n',
    )
    setup.config.write_text(text)
    config = load(setup.config)

    async def check() -> None:
        expected = await _sqlite_view(setup.db)
        store = await open_configured(config)
        async with store:
            assert store.migrations_applied == ()  # nothing to migrate: the copy is current
            orders = OrderStore(store)
            assert await orders.list(limit=1000) == expected["intents"]
            assert await orders.positions() == expected["positions"]
            [new] = await orders.insert_intents([_intent(99)])
            assert new.seq == 12
            letter = await store.dead_letters.add(_letter("after", {"k": 1}))
            assert letter.letter_id == 5  # past SQLite's high mark (4 was purged)
            gap = await store.market.record_gap(VENUE, "BTCUSDT", "trades", 900, 901)
            assert gap.gap_id == 4

    trio.run(check)


def test_a_second_run_copies_nothing_and_still_verifies(setup: Setup) -> None:
    first = _reports(migrate_to_postgres(setup.db, setup.dsn, batch_rows=BATCH))
    second = _reports(migrate_to_postgres(setup.db, setup.dsn, batch_rows=BATCH))
    assert all(r.verified for r in second.values())
    assert first["trades"].copied == 3 * TRADES_PER_SYMBOL
    for name, r in second.items():
        assert r.copied == 0, name
        assert r.skipped == r.source_rows == first[name].copied, name


def test_an_interrupted_copy_is_completed_by_the_next_run(setup: Setup) -> None:
    batches = 0

    def crash(table: str, done: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 5:  # the trades table's fifth batch committed, then the "crash"
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        migrate_to_postgres(setup.db, setup.dsn, batch_rows=BATCH, after_batch=crash)
    with admin() as conn:
        schema = setup.dsn.rsplit("search_path=", 1)[1].rstrip("'")
        partial = conn.execute(f"SELECT count(*) FROM {schema}.trades").fetchone()
        later = conn.execute(f"SELECT count(*) FROM {schema}.order_intents").fetchone()
    assert partial is not None and partial[0] == 5 * BATCH
    assert later is not None and later[0] == 0

    done = _reports(migrate_to_postgres(setup.db, setup.dsn, batch_rows=BATCH))
    assert all(r.verified for r in done.values())
    assert done["trades"].skipped == 5 * BATCH
    assert done["trades"].copied == 3 * TRADES_PER_SYMBOL - 5 * BATCH
    assert done["order_intents"].copied == 11


def test_a_tampered_target_row_fails_verification_naming_its_table(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(setup, capsys=capsys)[0] == 0
    schema = setup.dsn.rsplit("search_path=", 1)[1].rstrip("'")
    with admin() as conn:
        conn.execute(f"UPDATE {schema}.positions SET quantity = '999' WHERE account = 'main'")
        conn.execute(
            f"UPDATE {schema}.order_history SET reason = 'forged' "
            "WHERE seq = 1 AND client_order_id = "
            f"(SELECT min(client_order_id) FROM {schema}.order_history)"
        )
        # A row deleted is not a mismatch for long: the next run copies it again.
        conn.execute(f"DELETE FROM {schema}.trades WHERE trade_id = 7 AND symbol = 'ETHUSDT'")
    rc, out, err = _cli(setup, capsys=capsys)
    assert rc == 1, out + err
    assert "NOT verified: order_history (same row count, different rows (checksum))" in err
    assert "positions (same row count, different rows (checksum))" in err
    assert "trades" not in err
    trades_line = next(x for x in out.splitlines() if x.startswith("trades "))
    assert trades_line.split()[3:5] == ["1", str(3 * TRADES_PER_SYMBOL - 1)]
    assert "MISMATCH" in next(x for x in out.splitlines() if x.startswith("positions "))


def test_the_password_is_never_printed(
    setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pw_file = str(tmp_path / "pw")
    rc, out, err = _cli(setup, "--password-file", pw_file, capsys=capsys)
    assert rc == 0, out + err
    outputs = [out, err]
    # Unreachable target, with the password given.
    rc, out, err = main_out(
        capsys,
        "--config",
        str(setup.config),
        "--dsn",
        "host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=2",
        "--password-file",
        pw_file,
    )
    assert rc == 1 and "not verified" in err, out + err
    outputs += [out, err]
    # A DSN that spells the password is refused without echoing it.
    rc, out, err = main_out(
        capsys,
        "--config",
        str(setup.config),
        "--dsn",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test",
    )
    assert rc == 2 and "must not contain a password" in err, out + err
    outputs += [out, err]
    # The config's own DSN and password reference.
    text = setup.config.read_text().replace(
        '[store]\npath = "store.db"\n',
        f'[store]\npath = "store.db"\ndsn = {json.dumps(setup.dsn)}\n'
        f"password = {{ file = {json.dumps(pw_file)} }}\n",
    )
    setup.config.write_text(text)
    rc, out, err = main_out(capsys, "--config", str(setup.config))
    assert rc == 0, out + err
    outputs += [out, err]
    for text in outputs:
        assert PASSWORD not in text


def main_out(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["db", "migrate-to-postgres", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_dry_run_writes_nothing(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _cli(setup, "--dry-run", capsys=capsys)
    assert rc == 0, out + err
    assert "dry run: nothing was written" in out
    trades_line = next(x for x in out.splitlines() if x.startswith("trades "))
    assert trades_line.split()[1:3] == [str(3 * TRADES_PER_SYMBOL), "-"]
    schema = setup.dsn.rsplit("search_path=", 1)[1].rstrip("'")
    with admin() as conn:
        row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.trades",)).fetchone()
    assert row is not None and row[0] is None


def test_usage_errors_exit_2(
    setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # No target at all: the config has no [store] dsn and no --dsn was given.
    rc, _, err = main_out(capsys, "--config", str(setup.config))
    assert rc == 2 and "no target" in err
    # No such source file.
    rc, _, err = main_out(
        capsys, "--config", str(setup.config), "--dsn", setup.dsn, "--db", str(tmp_path / "nope")
    )
    assert rc == 2 and "no such file" in err
    # A file that is not a tradingd store.
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("PRAGMA application_id = 42")
        conn.execute("CREATE TABLE t (x)")
    rc, _, err = main_out(
        capsys, "--config", str(setup.config), "--dsn", setup.dsn, "--db", str(other)
    )
    assert rc == 2 and "not a tradingd database" in err
    # A missing config.
    rc, _, err = main_out(capsys, "--config", str(tmp_path / "missing.toml"), "--dsn", setup.dsn)
    assert rc == 2
    # --batch out of range: argparse's usage error.
    with pytest.raises(SystemExit) as exc:
        main_out(capsys, "--config", str(setup.config), "--dsn", setup.dsn, "--batch", "0")
    assert exc.value.code == 2


def test_a_running_daemon_is_refused(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    """Something answers on the config's control socket: nothing is read or written."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(setup.sockdir / "c.sock"))
        listener.listen(1)
        rc, _, err = _cli(setup, capsys=capsys)
    assert rc == 2 and "a daemon is running" in err, err
    with admin() as conn:
        schema = setup.dsn.rsplit("search_path=", 1)[1].rstrip("'")
        row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.trades",)).fetchone()
    assert row is not None and row[0] is None


def test_a_newer_target_schema_is_refused(setup: Setup) -> None:
    migrate_to_postgres(setup.db, setup.dsn)
    schema = setup.dsn.rsplit("search_path=", 1)[1].rstrip("'")
    with admin() as conn:
        conn.execute(
            f"INSERT INTO {schema}.schema_migrations (version, name, applied_at_ms) "
            "VALUES (99, 'from the future', 0)"
        )
    with pytest.raises(MigrationRefused, match="newer"):
        migrate_to_postgres(setup.db, setup.dsn)


def test_a_file_left_with_its_wal_is_copied_whole(tmp_path: Path, pg_dsn: str) -> None:
    """A daemon killed with commits still in the WAL: the read-only source reads them too."""
    db = tmp_path / "killed.db"

    async def write_and_migrate() -> list[TableReport]:
        store = await open_store(db)
        async with store:  # still open while the copy runs: nothing checkpointed yet
            await store.market.insert_trades([trade(i) for i in range(1, 301)])
            assert db.with_name("killed.db-wal").stat().st_size > 0
            return await trio.to_thread.run_sync(lambda: migrate_to_postgres(db, pg_dsn))

    reports = _reports(trio.run(write_and_migrate))
    assert reports["trades"].source_rows == reports["trades"].target_rows == 300
    assert all(r.verified for r in reports.values())
