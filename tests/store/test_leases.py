"""Account leases in the store, on both backends: claims, the token, and fenced writes.

The rules themselves are tested in ``tests/orders/test_lease_rules.py``; here
the SQL keeps them: a lease is taken only when free (or by its own owner at
start), renewed by its holder only, the token grows on every new tenure and
never otherwise, and **an order change or intent written with a stale token
fails and changes nothing**. On PostgreSQL: the store's clock decides expiry,
and a takeover waits for an order change that already passed the fencing
check (the lease row is held ``FOR SHARE`` until its commit).
"""

from __future__ import annotations

import ast
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.errors import LeaseLostError
from daemon.model.orders import OrderType, Side, TimeInForce
from daemon.orders.intent import OrderIntent
from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState as S
from daemon.orders.state import transition
from daemon.store.lease_rules import Claim
from daemon.store.lease_store import FencedOrdersSql, LeaseStore
from daemon.store.orders import OrderStore
from daemon.store.postgres import PostgresStore
from tests.helpers.store import WallClock
from tests.store.pg import admin

STORE = Path(__file__).resolve().parents[2] / "daemon" / "store"
TTL = 10.0


class ServerClock:
    """Stands in for the store's clock (epoch seconds), moved by the test."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def intent(message_id: str, account: str = "acct-a") -> IntentRecord:
    made = OrderIntent.create(
        message_id=message_id,
        account=account,
        symbol="BTCUSDT",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal("0.00100000"),
        price=Decimal("30000.10"),
        time_in_force=TimeInForce.GTC,
    )
    return IntentRecord.from_intent(made, venue="sim")


class Daemon:
    """One daemon's view of a store: its leases and its fenced order tables."""

    def __init__(self, store: Any, owner: str, clock: ServerClock, holder: str = "") -> None:
        self.owner, self.holder = owner, holder or f"{owner}/run1"
        self.leases = LeaseStore(store, server_clock=clock)
        self.tokens: dict[str, int] = {}
        self.orders = OrderStore(store, wall_clock=WallClock())
        fence = self.leases.fence(owner, self.tokens)
        self.orders.sql = FencedOrdersSql(self.orders.sql, fence, lambda account: True)

    async def claim(self, claim: Claim = Claim.TAKE, *accounts: str) -> dict[str, int | None]:
        grants = await self.leases.claim(
            accounts or ("acct-a",), owner=self.owner, holder=self.holder, ttl_s=TTL, claim=claim
        )
        out: dict[str, int | None] = {}
        for g in grants:
            if g.held:
                self.tokens[g.account] = g.row.token
            out[g.account] = g.row.token if g.held else None
        return out


async def test_claims_renewals_takeovers_and_the_token(store: Any) -> None:
    clock = ServerClock()
    a, b = Daemon(store, "A", clock), Daemon(store, "B", clock)
    assert await a.claim(Claim.START) == {"acct-a": 1}
    assert await b.claim(Claim.START) == {"acct-a": None}  # held by A, not expired
    clock.now += TTL - 1
    assert await a.claim() == {"acct-a": 1}  # renewal: the token stays
    clock.now += TTL - 1
    assert await b.claim() == {"acct-a": None}  # renewed: still A's
    clock.now += 2
    assert await b.claim() == {"acct-a": 2}  # ran out: B takes it, token + 1
    assert await a.claim(Claim.RENEW) == {"acct-a": None}  # A cannot renew B's
    assert await a.claim(Claim.START) == {"acct-a": None}  # nor take it at start
    # A restart of B (another holder, same owner) takes it back at once, token + 1.
    b2 = Daemon(store, "B", clock, holder="B/run2")
    assert await b2.claim(Claim.START) == {"acct-a": 3}
    assert await b.claim(Claim.RENEW) == {"acct-a": None}  # the old run is fenced off
    # Release: expired now, token kept; the next taker's token grows.
    assert await b2.leases.release(["acct-a", "acct-z"], owner="B", holder="B/run2") == ["acct-a"]
    assert await a.claim() == {"acct-a": 4}
    now_ms, rows = await a.leases.read()
    assert now_ms == int(clock.now * 1000)
    [row] = rows
    assert (row.account, row.owner, row.holder, row.token) == ("acct-a", "A", "A/run1", 4)
    assert row.expires_at_ms == now_ms + int(TTL * 1000)


async def test_a_stale_token_changes_nothing(store: Any) -> None:
    clock = ServerClock()
    a, b = Daemon(store, "A", clock), Daemon(store, "B", clock)
    await a.claim(Claim.START, "acct-a", "acct-b")
    [pending] = await a.orders.insert_intents([intent("m1")])
    coid = pending.client_order_id
    sending = await a.orders.apply_transition(coid, transition(S.PENDING, S.SENDING, reason="s"))
    assert sending.state is S.SENDING

    clock.now += TTL + 1  # A is paused past its lease; B takes the account over
    assert await b.claim(Claim.TAKE, "acct-a") == {"acct-a": 2}
    history_before = await b.orders.history(coid)

    unknown = transition(S.SENDING, S.UNKNOWN, reason="paused daemon wakes")
    with pytest.raises(LeaseLostError, match=r"acct-a.*held by B"):
        await a.orders.apply_transition(coid, unknown)
    with pytest.raises(LeaseLostError):
        await a.orders.update_progress(coid, venue_order_id=7)
    with pytest.raises(LeaseLostError):
        await a.orders.request_cancel(coid)
    with pytest.raises(LeaseLostError):
        await a.orders.record_intents([intent("m2")])
    with pytest.raises(LeaseLostError):  # one lost account fails the whole batch
        await a.orders.insert_intents([intent("m3", "acct-b"), intent("m4")])
    stored = await b.orders.get(coid)
    assert stored == sending  # nothing changed
    assert await b.orders.history(coid) == history_before
    assert await b.orders.get("td1-m2") is None and await b.orders.get("td1-m3") is None

    # The new holder moves it; A's other account is still A's.
    moved = await b.orders.apply_transition(coid, unknown)
    assert moved.state is S.UNKNOWN
    [other] = await a.orders.insert_intents([intent("m5", "acct-b")])
    assert other.account == "acct-b"
    # Not held here at all (no token): refused too, before any write.
    c = Daemon(store, "C", clock)
    with pytest.raises(LeaseLostError, match="does not hold it here"):
        await c.orders.cancel_unsent(
            other.client_order_id, transition(S.PENDING, S.CANCELED, reason="c")
        )


async def test_the_fenced_tables_load_only_the_accounts_traded_here(store: Any) -> None:
    clock = ServerClock()
    a = Daemon(store, "A", clock)
    await a.claim(Claim.START, "acct-a", "acct-b")
    await a.orders.insert_intents([intent("m1"), intent("m2", "acct-b")])
    assert isinstance(a.orders.sql, FencedOrdersSql)
    a.orders.sql.trades = lambda account: account == "acct-b"
    assert [r.account for r in await a.orders.non_terminal()] == ["acct-b"]


async def test_the_database_clock_decides_expiry(store: Any) -> None:
    real = LeaseStore(store)  # no stand-in: SQLite's julianday('now') / PostgreSQL's clock
    [grant] = await real.claim(["acct-a"], owner="A", holder="A/1", ttl_s=60, claim=Claim.START)
    assert grant.held and grant.row.token == 1
    now_ms, [row] = await real.read()
    assert 0 < row.expires_at_ms - now_ms <= 60_000
    assert 0 <= now_ms - grant.now_ms < 60_000
    [again] = await real.claim(["acct-a"], owner="B", holder="B/1", ttl_s=60, claim=Claim.TAKE)
    assert not again.held


def test_the_lease_modules_are_a_counterpart_pair_and_the_rules_hold_no_sql() -> None:
    assert (STORE / "leases.py").is_file() and (STORE / "pg_leases.py").is_file()
    for name in ("lease_rules.py", "lease_store.py"):
        tree = ast.parse((STORE / name).read_text(encoding="utf-8"))
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("execute", "executemany")
        ]
        imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        }
        assert calls == [] and not imports & {"sqlite3", "psycopg"}, name


async def test_postgres_a_takeover_waits_for_a_change_that_passed_the_fence(
    pg_dsn: str,
) -> None:
    """A's order change has passed the fencing check and is not committed yet; B's
    takeover waits for it (the lease row is held FOR SHARE), so A's change is ordered
    before B's tenure; a change A starts after the takeover is fenced off."""
    clock = ServerClock()
    with trio.fail_after(30):
        async with (
            await PostgresStore.open(pg_dsn) as sa,
            await PostgresStore.open(pg_dsn) as sb,
        ):
            a, b = Daemon(sa, "A", clock), Daemon(sb, "B", clock)
            await a.claim(Claim.START)
            [r] = await a.orders.insert_intents([intent("m1")])
            coid = r.client_order_id
            send = transition(S.PENDING, S.SENDING, reason="send")
            holding, release = threading.Event(), threading.Event()
            sql = a.orders.sql

            def slow_send(conn: Any) -> IntentRecord:
                done = sql.apply_transitions(conn, coid, (send,), 1)
                holding.set()
                release.wait(10)
                return done

            out: dict[str, Any] = {}

            async def run_a() -> None:
                out["a"] = await a.orders.run_write(slow_send, "test")

            async def run_b() -> None:
                out["b"] = await b.claim(Claim.TAKE)

            clock.now += TTL + 1  # A's lease has run out on the store's clock
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_a)
                await trio.to_thread.run_sync(holding.wait)
                nursery.start_soon(run_b)
                await wait_for_a_lock_wait()  # B waits on the lease row A holds FOR SHARE
                assert "b" not in out
                release.set()
            assert out["a"].state is S.SENDING  # committed before the takeover
            assert out["b"] == {"acct-a": 2}
            with pytest.raises(LeaseLostError):
                await a.orders.apply_transition(
                    coid, transition(S.SENDING, S.UNKNOWN, reason="late")
                )
            assert (await b.orders.get(coid)) == out["a"]


async def wait_for_a_lock_wait() -> None:
    def waiting() -> bool:
        with admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'tradingd' AND query LIKE %s",
                ("%account_leases%FOR UPDATE%",),
            ).fetchone()
            return row is not None and row[0] > 0

    # Another process's state: polled (there is nothing to wait on).
    while not await trio.to_thread.run_sync(waiting):  # noqa: ASYNC110
        await trio.sleep(0.02)
