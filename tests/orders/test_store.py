"""The durable order store: intents, history, fills, positions, trading states.

Most cases run the async facade with the inline runner (deterministic, no
threads) on **both** backends: a real SQLite file, and a fresh PostgreSQL
schema (``tests/store/pg.py``: skipped with its reason without a server,
failed under ``TRADINGD_REQUIRE_SERVICES=1``). The durability case uses the
real thread lane; the property test drives SQLite's pure functions on an
in-memory database migrated by the real migrations. Two daemons racing one
intent on PostgreSQL are in ``tests/store/test_postgres.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import PermanentError
from daemon.model.orders import OrderType, Side, TimeInForce
from daemon.orders.intent import OrderIntent
from daemon.orders.records import FillRecord, IntentRecord
from daemon.orders.state import (
    InvalidStateTransitionError,
    OrderState,
    Transition,
    path_to_venue_state,
    transition,
)
from daemon.risk.state import TradingState
from daemon.store import StoreDataError
from daemon.store.migrations import LATEST_VERSION, MIGRATIONS, migrate
from daemon.store.orders import OrderStore
from daemon.store.orders_fills import insert_fills, positions
from daemon.store.orders_rows import FILL_ROWS
from daemon.store.orders_rules import (
    GLOBAL_SCOPE,
    DuplicateIntentError,
    StaleStateError,
    UnknownIntentError,
    VenueOrderIdConflictError,
)
from tests.helpers.store import WallClock
from tests.store.pg import BACKENDS, fresh_schema, open_backend, q

S = OrderState
VENUE = "binance"
EPOCH_S = 1_700_000_000.0


def record(
    message_id: str,
    *,
    account: str = "main",
    symbol: str = "BTCUSDT",
    side: Side = Side.BUY,
    type: OrderType = OrderType.LIMIT,
    quantity: str = "0.00100000",
    price: str | None = "30000.10",
) -> IntentRecord:
    intent = OrderIntent.create(
        message_id=message_id,
        account=account,
        symbol=symbol,
        side=side,
        type=type,
        quantity=Decimal(quantity),
        price=None if price is None or type is OrderType.MARKET else Decimal(price),
        time_in_force=TimeInForce.GTC if type is OrderType.LIMIT else None,
    )
    return IntentRecord.from_intent(intent, venue=VENUE)


def fill(
    trade_id: int,
    *,
    client_order_id: str = "ord-1",
    side: Side = Side.BUY,
    quantity: str = "0.50000000",
    account: str = "main",
    symbol: str = "BTCUSDT",
    is_maker: bool | None = None,
    time_ms: int | None = None,
) -> FillRecord:
    return FillRecord(
        venue=VENUE,
        symbol=symbol,
        trade_id=trade_id,
        client_order_id=client_order_id,
        account=account,
        venue_order_id=9000 + trade_id,
        side=side,
        price=Decimal("30000.10"),
        quantity=Decimal(quantity),
        quote_quantity=Decimal("30000.10") * Decimal(quantity),
        commission=Decimal("0.00001000"),
        commission_asset="BNB",
        time_ms=1_700_000_000_000 + trade_id if time_ms is None else time_ms,
        is_maker=is_maker,
    )


Opener = Callable[..., Awaitable[Any]]


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture(params=BACKENDS)
def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the test's database (the same one on every call): a file or a fresh schema."""
    backend = str(request.param)
    with fresh_schema() if backend == "postgres" else _no_schema() as dsn:

        async def opener(**kwargs: Any) -> Any:
            return await open_backend(backend, tmp_path, dsn=dsn, **kwargs)

        yield opener


class _no_schema:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
async def db(open_db: Opener) -> AsyncIterator[Any]:
    async with await open_db() as store:
        yield store


@pytest.fixture
def orders(db: Any, clock: WallClock) -> OrderStore:
    return OrderStore(db, wall_clock=clock)


def backend_of(store: Any) -> str:
    return str(store.sql.name)


async def snapshot(orders: OrderStore, coid: str) -> tuple[Any, ...]:
    """Everything stored about one intent, for "nothing changed" checks."""
    return (await orders.get(coid), await orders.history(coid), await orders.counts_by_state())


# ----------------------------------------------------------------------------- schema


async def test_migration_2_creates_the_order_tables(db: Any) -> None:
    assert LATEST_VERSION >= 2
    catalog = (
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        if backend_of(db) == "postgres"
        else "SELECT name FROM sqlite_schema"
    )
    names = await db.read(lambda c: {row[0] for row in c.execute(catalog)})
    assert {
        "order_intents",
        "order_history",
        "order_fills",
        "positions",
        "trading_states",
        "order_intents_by_state",
        "order_intents_by_venue_id",
        "order_fills_by_order",
    } <= names


async def test_the_schema_refuses_an_unknown_state(orders: OrderStore, db: Any) -> None:
    [stored] = await orders.insert_intents([record("m1")])
    sql = q(backend_of(db), "UPDATE order_intents SET state = 'LOST' WHERE client_order_id = ?")

    def corrupt(conn: Any) -> None:
        conn.execute(
            sql,
            (stored.client_order_id,),
        )

    with pytest.raises(StoreDataError, match="constraint"):
        await db.write(corrupt)
    assert await orders.get(stored.client_order_id) == stored


# ----------------------------------------------------------------------------- intents


async def test_every_field_round_trips_exactly(
    orders: OrderStore, db: Any, clock: WallClock
) -> None:
    limit = record("m-limit", quantity="0.00100000", price="30000.10")
    market = record("m-market", type=OrderType.MARKET, side=Side.SELL, quantity="2.50", price=None)
    stored = await orders.insert_intents([limit, market])
    assert stored == [
        attrs.evolve(limit, seq=1, created_at_ms=clock.ms, updated_at_ms=clock.ms),
        attrs.evolve(market, seq=2, created_at_ms=clock.ms, updated_at_ms=clock.ms),
    ]
    loaded = await orders.load([limit.client_order_id, market.client_order_id, "nope"])
    assert loaded == {r.client_order_id: r for r in stored}
    got = await orders.get(market.client_order_id)
    assert got is not None
    assert got.price is None and got.time_in_force is None and got.sent_at_ms is None
    assert got.side is Side.SELL and got.type is OrderType.MARKET

    # Every lifecycle field, set and read back.
    clock.now += 1.5
    sent = await orders.apply_transition(
        limit.client_order_id, transition(S.PENDING, S.SENDING, reason="send")
    )
    clock.now += 1
    accepted = await orders.apply_transition(
        limit.client_order_id,
        transition(S.SENDING, S.ACCEPTED, reason="venue accepted"),
        venue_order_id=4_000_000_000_123,
        executed_qty=Decimal("0.00050000"),
        cum_quote_qty=Decimal("15.00005000"),
    )
    clock.now += 1
    cancel = await orders.request_cancel(limit.client_order_id)
    expected = attrs.evolve(
        stored[0],
        state=S.ACCEPTED,
        updated_at_ms=clock.ms,
        sent_at_ms=sent.sent_at_ms,
        send_attempts=1,
        venue_order_id=4_000_000_000_123,
        executed_qty=Decimal("0.00050000"),
        cum_quote_qty=Decimal("15.00005000"),
        cancel_requested_at_ms=clock.ms,
    )
    assert sent.sent_at_ms == int((EPOCH_S + 1.5) * 1000)
    assert accepted.updated_at_ms == clock.ms - 1000
    assert cancel == expected
    assert await orders.get(limit.client_order_id) == expected

    rejected = await orders.apply_transitions(
        market.client_order_id,
        (
            transition(S.PENDING, S.SENDING, reason="send"),
            transition(S.SENDING, S.REJECTED, reason="venue rejected"),
        ),
        reject_code=-2010,
        reject_reason="Account has insufficient balance",
    )
    assert (rejected.reject_code, rejected.reject_reason) == (
        -2010,
        "Account has insufficient balance",
    )
    assert await orders.get(market.client_order_id) == rejected

    # Decimals are stored in the spelling they were given, not normalised.
    select = q(
        backend_of(db),
        "SELECT quantity, price, executed_qty, cum_quote_qty FROM order_intents "
        "WHERE client_order_id = ?",
    )
    raw = await db.read(lambda c: c.execute(select, (limit.client_order_id,)).fetchone())
    assert tuple(raw) == ("0.00100000", "30000.10", "0.00050000", "15.00005000")
    got_limit = await orders.get(limit.client_order_id)
    assert got_limit is not None
    assert str(got_limit.quantity) == "0.00100000"
    assert got_limit.to_json()["executed_qty"] == "0.00050000"


async def test_seq_is_monotonic_across_transactions_and_reopen(
    open_db: Opener, clock: WallClock
) -> None:
    async with await open_db() as db:
        orders = OrderStore(db, wall_clock=clock)
        first = await orders.insert_intents([record("a"), record("b")])
        second = await orders.insert_intents([record("c")])
        assert [r.seq for r in first + second] == [1, 2, 3]
        assert await orders.insert_intents([]) == []
    async with await open_db() as db:
        orders = OrderStore(db, wall_clock=clock)
        third = await orders.insert_intents([record("d"), record("e")])
        assert [r.seq for r in third] == [4, 5]
        assert [r.message_id for r in await orders.non_terminal()] == ["a", "b", "c", "d", "e"]


async def test_a_duplicate_rolls_back_the_whole_batch(orders: OrderStore) -> None:
    [a] = await orders.insert_intents([record("a")])
    b, c = record("b"), record("c")
    with pytest.raises(DuplicateIntentError, match=a.client_order_id) as info:
        await orders.insert_intents([b, record("a"), c])
    assert isinstance(info.value, PermanentError)
    assert info.value.client_order_id == a.client_order_id
    assert "rolled back" in str(info.value)
    # Nothing of the batch is stored: neither b (before the duplicate) nor c.
    assert await orders.load([b.client_order_id, c.client_order_id]) == {}
    assert await orders.history(b.client_order_id) == []
    assert (await orders.counts_by_state())["PENDING"] == 1
    # A duplicate inside one batch is refused the same way.
    with pytest.raises(DuplicateIntentError, match=b.client_order_id):
        await orders.insert_intents([b, b])
    assert await orders.get(b.client_order_id) is None
    # The seq counter did not move: the rolled back batches left no gap.
    [b_stored] = await orders.insert_intents([b])
    assert b_stored.seq == 2


async def test_record_intents_finds_what_was_stored_and_marks_the_fast_path(
    orders: OrderStore,
) -> None:
    """One write: new ids are inserted (one of them marked SENDING with it), ids stored
    before come back as stored, and a repeat inside the batch counts once."""
    [a] = await orders.insert_intents([record("a")])
    b, c = record("b"), record("c")
    inserted, existing = await orders.record_intents(
        [b, record("a"), c, record("b")], sending={c.client_order_id}
    )
    assert [r.client_order_id for r in inserted] == [b.client_order_id, c.client_order_id]
    assert [r.seq for r in inserted] == [2, 3]
    assert set(existing) == {a.client_order_id, b.client_order_id}
    assert existing[a.client_order_id] == a
    stored_b = await orders.get(b.client_order_id)
    stored_c = await orders.get(c.client_order_id)
    assert stored_b is not None and stored_b.state is S.PENDING and stored_b.send_attempts == 0
    assert stored_c is not None and stored_c.state is S.SENDING
    assert stored_c.send_attempts == 1 and stored_c.sent_at_ms == stored_c.created_at_ms
    assert [(h.source, h.target) for h in await orders.history(c.client_order_id)] == [
        (None, S.PENDING),
        (S.PENDING, S.SENDING),
    ]
    assert [(h.source, h.target) for h in await orders.history(b.client_order_id)] == [
        (None, S.PENDING)
    ]


async def test_only_fresh_pending_intents_can_be_inserted(orders: OrderStore) -> None:
    stale = attrs.evolve(record("x"), state=S.ACCEPTED, venue_order_id=7)
    with pytest.raises(ValueError, match=r"not a fresh PENDING intent .*ACCEPTED"):
        await orders.insert_intents([record("y"), stale])
    assert await orders.counts_by_state() == {s.value: 0 for s in S}


# ----------------------------------------------------------------------------- transitions


async def test_a_legal_path_is_recorded_step_by_step(orders: OrderStore, clock: WallClock) -> None:
    [r] = await orders.insert_intents([record("m1")])
    coid = r.client_order_id
    created = clock.ms
    steps = [
        (S.PENDING, S.SENDING, "send"),
        (S.SENDING, S.UNKNOWN, "timeout after sending"),
        (S.UNKNOWN, S.PENDING, "venue proved absence"),
        (S.PENDING, S.SENDING, "resend same id"),
        (S.SENDING, S.ACCEPTED, "venue accepted"),
        (S.ACCEPTED, S.PARTIALLY_FILLED, "fill 1"),
        (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, "fill 2"),
        (S.PARTIALLY_FILLED, S.FILLED, "fill 3"),
    ]
    times: list[int] = []
    sends: list[int] = []
    for n, (source, target, reason) in enumerate(steps, start=1):
        clock.now += 1
        times.append(clock.ms)
        fields: dict[str, Any] = {}
        if target is S.ACCEPTED:
            fields["venue_order_id"] = 77
        if target in (S.PARTIALLY_FILLED, S.FILLED):
            fields["executed_qty"] = Decimal("0.0003") * n
        after = await orders.apply_transition(
            coid, transition(source, target, reason=reason), **fields
        )
        assert after.state is target
        assert after.updated_at_ms == clock.ms
        if target is S.SENDING:
            sends.append(clock.ms)
            assert after.sent_at_ms == clock.ms
            assert after.send_attempts == len(sends)
    final = await orders.get(coid)
    assert final is not None
    assert final.state is S.FILLED and final.is_terminal
    assert final.sent_at_ms == sends[-1] and final.send_attempts == 2
    assert final.venue_order_id == 77
    assert final.executed_qty == Decimal("0.0024")
    rows = await orders.history(coid)
    assert [(h.seq, h.source, h.target, h.reason, h.at_ms) for h in rows] == [
        (1, None, S.PENDING, "intent recorded", created),
        *(
            (n, s, t, why, at)
            for n, ((s, t, why), at) in enumerate(zip(steps, times, strict=True), start=2)
        ),
    ]
    assert rows[0].to_json()["from"] is None


async def test_a_forged_illegal_transition_raises_and_changes_nothing(
    orders: OrderStore,
) -> None:
    [r] = await orders.insert_intents([record("m1")])
    with pytest.raises(InvalidStateTransitionError):
        transition(S.PENDING, S.FILLED, reason="skip ahead")  # the table refuses it
    # A Transition smuggled past its own validation is refused by the store too.
    forged = object.__new__(Transition)
    object.__setattr__(forged, "source", S.PENDING)
    object.__setattr__(forged, "target", S.FILLED)
    object.__setattr__(forged, "reason", "skip ahead")
    before = await snapshot(orders, r.client_order_id)
    with pytest.raises(InvalidStateTransitionError, match="PENDING -> FILLED") as info:
        await orders.apply_transition(r.client_order_id, forged)
    assert not isinstance(info.value, StaleStateError)
    assert await snapshot(orders, r.client_order_id) == before


async def test_a_stale_source_raises_and_changes_nothing(orders: OrderStore) -> None:
    [r] = await orders.insert_intents([record("m1")])
    coid = r.client_order_id
    await orders.apply_transition(coid, transition(S.PENDING, S.SENDING, reason="send"))
    before = await snapshot(orders, coid)
    # A second writer that still believes the intent is PENDING.
    with pytest.raises(StaleStateError) as info:
        await orders.apply_transition(coid, transition(S.PENDING, S.SENDING, reason="send again"))
    error = info.value
    assert isinstance(error, InvalidStateTransitionError)
    assert isinstance(error, PermanentError)
    assert (error.client_order_id, error.expected, error.current, error.target) == (
        coid,
        S.PENDING,
        S.SENDING,
        S.SENDING,
    )
    assert coid in str(error)
    assert "expected state PENDING" in str(error)
    assert "stored state is SENDING" in str(error)
    assert await snapshot(orders, coid) == before


async def test_an_unknown_id_raises(orders: OrderStore) -> None:
    t = transition(S.PENDING, S.SENDING, reason="send")
    calls: list[Callable[[], Awaitable[IntentRecord]]] = [
        lambda: orders.apply_transition("missing-id", t),
        lambda: orders.update_progress("missing-id", executed_qty=Decimal(1)),
        lambda: orders.request_cancel("missing-id"),
    ]
    for call in calls:
        with pytest.raises(UnknownIntentError, match="'missing-id'") as info:
            await call()
        assert isinstance(info.value, PermanentError)
        assert info.value.client_order_id == "missing-id"
    assert await orders.get("missing-id") is None


async def test_a_venue_path_is_applied_in_one_transaction(
    orders: OrderStore, clock: WallClock
) -> None:
    [r] = await orders.insert_intents([record("m1", type=OrderType.MARKET, price=None)])
    coid = r.client_order_id
    await orders.apply_transition(coid, transition(S.PENDING, S.SENDING, reason="send"))
    path = path_to_venue_state(S.SENDING, S.FILLED, reason="new order answer: FILLED")
    assert len(path) == 2
    clock.now += 1
    after = await orders.apply_transitions(
        coid, path, venue_order_id=5, executed_qty=Decimal("0.00100000")
    )
    assert (after.state, after.venue_order_id, after.executed_qty) == (
        S.FILLED,
        5,
        Decimal("0.001"),
    )
    rows = await orders.history(coid)
    assert [(h.source, h.target, h.at_ms) for h in rows[-2:]] == [
        (S.SENDING, S.ACCEPTED, clock.ms),
        (S.ACCEPTED, S.FILLED, clock.ms),
    ]


async def test_steps_that_do_not_chain_change_nothing(orders: OrderStore) -> None:
    [r] = await orders.insert_intents([record("m1")])
    coid = r.client_order_id
    await orders.apply_transition(coid, transition(S.PENDING, S.SENDING, reason="send"))
    before = await snapshot(orders, coid)
    broken = (
        transition(S.SENDING, S.ACCEPTED, reason="accepted"),
        transition(S.PARTIALLY_FILLED, S.FILLED, reason="filled"),
    )
    with pytest.raises(ValueError, match=r"step 1 starts from PARTIALLY_FILLED.*must chain"):
        await orders.apply_transitions(coid, broken, venue_order_id=3)
    assert await snapshot(orders, coid) == before


async def test_progress_never_moves_backwards_and_writes_no_history(
    orders: OrderStore, clock: WallClock
) -> None:
    [r] = await orders.insert_intents([record("m1")])
    coid = r.client_order_id
    await orders.apply_transitions(
        coid,
        (
            transition(S.PENDING, S.SENDING, reason="send"),
            transition(S.SENDING, S.ACCEPTED, reason="accepted"),
        ),
        venue_order_id=11,
    )
    rows = len(await orders.history(coid))
    clock.now += 1
    newer = await orders.update_progress(
        coid, executed_qty=Decimal("0.0006"), cum_quote_qty=Decimal("18.00")
    )
    assert (newer.executed_qty, newer.cum_quote_qty) == (Decimal("0.0006"), Decimal("18.00"))
    assert newer.updated_at_ms == clock.ms
    # An older report arriving late: ignored, and updated_at does not move.
    clock.now += 1
    older = await orders.update_progress(
        coid, venue_order_id=11, executed_qty=Decimal("0.0002"), cum_quote_qty=Decimal("6")
    )
    assert older == newer
    assert await orders.get(coid) == newer
    assert len(await orders.history(coid)) == rows
    with pytest.raises(ValueError, match="executed_qty must be a finite decimal >= 0"):
        await orders.update_progress(coid, executed_qty=Decimal("-1"))
    # A second venue order for one intent is refused, never overwritten.
    with pytest.raises(VenueOrderIdConflictError, match=r"venue order id 12, but 11 is on record"):
        await orders.update_progress(coid, venue_order_id=12)
    assert await orders.get(coid) == newer


async def test_a_cancel_request_is_recorded_once(orders: OrderStore, clock: WallClock) -> None:
    [r, done] = await orders.insert_intents([record("m1"), record("m2")])
    first = await orders.request_cancel(r.client_order_id)
    assert first.cancel_requested_at_ms == clock.ms
    clock.now += 5
    again = await orders.request_cancel(r.client_order_id)
    assert again == first
    assert await orders.get(r.client_order_id) == first
    # A finished intent has nothing left to cancel: left untouched.
    finished = await orders.apply_transitions(
        done.client_order_id,
        (
            transition(S.PENDING, S.SENDING, reason="send"),
            transition(S.SENDING, S.REJECTED, reason="rejected"),
        ),
    )
    assert await orders.request_cancel(done.client_order_id) == finished
    assert finished.cancel_requested_at_ms is None


async def test_a_rate_limited_send_goes_back_to_pending_only_with_its_proof(
    orders: OrderStore, clock: WallClock
) -> None:
    [r] = await orders.insert_intents([record("m1")])
    coid = r.client_order_id
    sending = await orders.apply_transition(coid, transition(S.PENDING, S.SENDING, reason="send"))
    # A SENDING -> PENDING without a proof of non-execution, smuggled past the
    # Transition's own check, is refused by the store too.
    forged = object.__new__(Transition)
    object.__setattr__(forged, "source", S.SENDING)
    object.__setattr__(forged, "target", S.PENDING)
    object.__setattr__(forged, "reason", "HTTP 503: retry")
    before = await snapshot(orders, coid)
    with pytest.raises(InvalidStateTransitionError, match="proof of non-execution"):
        await orders.apply_transition(coid, forged)
    assert await snapshot(orders, coid) == before
    clock.now += 1
    reason = "venue 429: not executed (-1003); retry after 2.0 s"
    back = await orders.apply_transition(coid, transition(S.SENDING, S.PENDING, reason=reason))
    assert back.state is S.PENDING
    assert (back.sent_at_ms, back.send_attempts) == (sending.sent_at_ms, 1)
    assert [(h.source, h.target, h.reason) for h in (await orders.history(coid))[-1:]] == [
        (S.SENDING, S.PENDING, reason)
    ]
    again = await orders.apply_transition(coid, transition(S.PENDING, S.SENDING, reason="send"))
    assert again.send_attempts == 2


async def test_a_pending_intent_is_canceled_with_its_cancel_mark_in_one_transaction(
    orders: OrderStore, clock: WallClock
) -> None:
    [r, sent, asked] = await orders.insert_intents([record("m1"), record("m2"), record("m3")])
    coid = r.client_order_id
    cancel = transition(S.PENDING, S.CANCELED, reason="canceled before sending")
    # Without a durable cancel request the store refuses PENDING -> CANCELED.
    before = await snapshot(orders, coid)
    with pytest.raises(ValueError, match="needs a recorded cancel request"):
        await orders.apply_transition(coid, cancel)
    assert await snapshot(orders, coid) == before
    clock.now += 1
    done = await orders.cancel_unsent(coid, cancel)
    assert done.state is S.CANCELED and done.is_terminal
    assert done.cancel_requested_at_ms == clock.ms == done.updated_at_ms
    assert (done.send_attempts, done.venue_order_id) == (0, None)
    assert [(h.source, h.target, h.reason) for h in await orders.history(coid)] == [
        (None, S.PENDING, "intent recorded"),
        (S.PENDING, S.CANCELED, "canceled before sending"),
    ]
    # Once its send section started (SENDING), the local cancel is stale: nothing changes.
    await orders.apply_transition(
        sent.client_order_id, transition(S.PENDING, S.SENDING, reason="send")
    )
    before = await snapshot(orders, sent.client_order_id)
    with pytest.raises(StaleStateError):
        await orders.cancel_unsent(sent.client_order_id, cancel)
    assert await snapshot(orders, sent.client_order_id) == before
    # An earlier cancel request keeps its time.
    first = await orders.request_cancel(asked.client_order_id)
    clock.now += 1
    later = await orders.cancel_unsent(asked.client_order_id, cancel)
    assert later.cancel_requested_at_ms == first.cancel_requested_at_ms
    with pytest.raises(ValueError, match="PENDING -> CANCELED"):
        await orders.cancel_unsent(coid, transition(S.PENDING, S.SENDING, reason="send"))


# ----------------------------------------------------------------------------- queries


async def test_queries_order_filter_and_page(orders: OrderStore) -> None:
    stored = await orders.insert_intents(
        [record(f"m{i}", account="main" if i % 2 else "alt") for i in range(1, 7)]
    )
    by_msg = {r.message_id: r for r in stored}
    await orders.apply_transitions(
        by_msg["m2"].client_order_id,
        (
            transition(S.PENDING, S.SENDING, reason="send"),
            transition(S.SENDING, S.ACCEPTED, reason="accepted"),
        ),
        venue_order_id=222,
    )
    await orders.apply_transitions(
        by_msg["m3"].client_order_id,
        (
            transition(S.PENDING, S.SENDING, reason="send"),
            transition(S.SENDING, S.REJECTED, reason="rejected"),
        ),
    )
    await orders.apply_transition(
        by_msg["m5"].client_order_id, transition(S.PENDING, S.SENDING, reason="send")
    )
    assert [r.message_id for r in await orders.non_terminal()] == ["m1", "m2", "m4", "m5", "m6"]

    def msgs(rows: list[IntentRecord]) -> list[str]:
        return [r.message_id for r in rows]

    assert msgs(await orders.list()) == ["m6", "m5", "m4", "m3", "m2", "m1"]
    assert msgs(await orders.list(account="main")) == ["m5", "m3", "m1"]
    assert msgs(await orders.list(states={S.PENDING})) == ["m6", "m4", "m1"]
    assert msgs(await orders.list(states={S.SENDING, S.ACCEPTED}, account="alt")) == ["m2"]
    assert await orders.list(states=()) == []
    page1 = await orders.list(limit=4)
    page2 = await orders.list(limit=4, before_seq=page1[-1].seq)
    assert msgs(page1) + msgs(page2) == ["m6", "m5", "m4", "m3", "m2", "m1"]
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        await orders.list(limit=0)

    counts = await orders.counts_by_state()
    assert counts == {
        **{s.value: 0 for s in S},
        "PENDING": 3,
        "SENDING": 1,
        "ACCEPTED": 1,
        "REJECTED": 1,
    }
    found = await orders.find_by_venue_order_id(VENUE, 222)
    assert found is not None and found.message_id == "m2"
    assert await orders.find_by_venue_order_id(VENUE, 223) is None
    assert await orders.find_by_venue_order_id("other", 222) is None


# ----------------------------------------------------------------------------- fills


async def test_fills_are_idempotent_and_move_positions_once(
    orders: OrderStore, clock: WallClock
) -> None:
    buy = fill(1, client_order_id="a", side=Side.BUY, quantity="1.50000000", is_maker=True)
    sell = fill(2, client_order_id="a", side=Side.SELL, quantity="0.50000000", is_maker=False)
    other = fill(3, client_order_id="b", side=Side.SELL, quantity="2", account="alt")
    eth = fill(4, client_order_id="c", quantity="10", symbol="ETHUSDT")
    assert await orders.insert_fills([buy, sell]) == [buy, sell]
    assert await orders.positions() == {("main", "BTCUSDT"): Decimal("1.00000000")}
    # The same fills again (a poll after the order's answer): nothing new, no double count.
    assert await orders.insert_fills([sell, buy]) == []
    assert await orders.insert_fills([other, buy, other, eth]) == [other, eth]
    assert await orders.positions() == {
        ("main", "BTCUSDT"): Decimal("1"),
        ("alt", "BTCUSDT"): Decimal("-2"),
        ("main", "ETHUSDT"): Decimal("10"),
    }
    assert await orders.positions("alt") == {("alt", "BTCUSDT"): Decimal("-2")}
    # A fill reported again with other values does not replace the first report.
    assert await orders.insert_fills([attrs.evolve(buy, quantity=Decimal(100))]) == []
    assert await orders.fills_for("a") == [buy, sell]
    assert (await orders.fills_for("a"))[0].is_maker is True
    assert (await orders.fills_for("b"))[0].is_maker is None
    assert await orders.fills_for("zzz") == []
    with pytest.raises(ValueError, match=r"fill binance/BTCUSDT/5: quantity must be .* got 0"):
        await orders.insert_fills([fill(5, quantity="0")])
    # The position's spelling keeps the fills' scale.
    spelled = await orders.run_read(
        lambda c: c.execute(
            "SELECT quantity, updated_at_ms FROM positions WHERE account = 'main' "
            "AND symbol = 'BTCUSDT'"
        ).fetchone(),
        "test",
    )
    assert spelled == ("1.00000000", clock.ms)


async def test_a_self_trade_is_two_fills(orders: OrderStore) -> None:
    """Our BUY and our SELL in one venue trade are two executions with one trade id.

    Found by the torture soak: a MARKET BUY matched one of our resting SELL
    orders (the venue's selfTradePreventionMode NONE, Binance's documented
    default); keyed by the trade id alone, the second execution was dropped as a
    copy of the first, so one order's fills and the position were wrong.
    """
    buy = fill(7, client_order_id="taker", side=Side.BUY, quantity="0.001")
    sell = attrs.evolve(
        fill(7, client_order_id="maker", side=Side.SELL, quantity="0.001"),
        venue_order_id=438,
        is_maker=True,
    )
    assert await orders.insert_fills([buy]) == [buy]
    assert await orders.insert_fills([sell, buy]) == [sell]
    assert await orders.insert_fills([buy, sell]) == []
    assert await orders.fills_for("taker") == [buy]
    assert await orders.fills_for("maker") == [sell]
    assert await orders.positions() == {("main", "BTCUSDT"): Decimal("0.000")}


async def test_the_fills_of_unfinished_intents_are_summed_exactly(orders: OrderStore) -> None:
    """Start-up's risk book takes each live order's stored fills (they are in the
    positions already); finished intents and intents without fills are left out."""
    live, done, bare = await orders.insert_intents([record("m1"), record("m2"), record("m3")])
    await orders.insert_fills(
        [
            fill(1, client_order_id=live.client_order_id, quantity="0.10000000"),
            fill(2, client_order_id=live.client_order_id, quantity="0.2"),
            fill(3, client_order_id=done.client_order_id, quantity="1"),
        ]
    )
    await orders.cancel_unsent(
        done.client_order_id, transition(S.PENDING, S.CANCELED, reason="canceled")
    )
    filled = await orders.filled_of_unfinished()
    assert filled == {live.client_order_id: Decimal("0.3")}
    assert bare.client_order_id not in filled


async def test_a_failed_transaction_stores_no_fill_and_moves_no_position(
    orders: OrderStore,
) -> None:
    [r] = await orders.insert_intents([record("m1")])
    sql = orders.sql  # the owner's backend's functions, composed in one transaction

    def fills_then_stale_transition(conn: Any) -> None:
        sql.insert_fills(conn, [fill(1, client_order_id=r.client_order_id)], 0)
        sql.apply_transitions(
            conn, r.client_order_id, (transition(S.ACCEPTED, S.FILLED, reason="filled"),), 0
        )

    with pytest.raises(StaleStateError):
        await orders.run_write(fills_then_stale_transition, "test")
    assert await orders.fills_for(r.client_order_id) == []
    assert await orders.positions() == {}


async def test_a_venue_report_is_recorded_whole_or_not_at_all(orders: OrderStore) -> None:
    [r] = await orders.insert_intents([record("m1")])
    coid = r.client_order_id
    await orders.apply_transition(coid, transition(S.PENDING, S.SENDING, reason="send"))
    report_fills = [fill(1, client_order_id=coid, quantity="0.0004")]
    steps = path_to_venue_state(S.SENDING, S.PARTIALLY_FILLED, reason="answer: PARTIALLY_FILLED")
    after = await orders.apply_changes(
        coid, steps, venue_order_id=8, executed_qty=Decimal("0.0004"), fills=report_fills
    )
    assert (after.state, after.venue_order_id, after.executed_qty) == (
        S.PARTIALLY_FILLED,
        8,
        Decimal("0.0004"),
    )
    assert await orders.fills_for(coid) == report_fills
    # Old news (no steps) still brings new fills and quantities; known fills count once.
    more = [*report_fills, fill(2, client_order_id=coid, quantity="0.0006")]
    after = await orders.apply_changes(coid, (), executed_qty=Decimal("0.0010"), fills=more)
    assert (after.state, after.executed_qty) == (S.PARTIALLY_FILLED, Decimal("0.0010"))
    assert await orders.positions() == {("main", "BTCUSDT"): Decimal("0.0010")}
    # A report whose step is stale stores none of its fills either.
    before = (await snapshot(orders, coid), await orders.positions())
    with pytest.raises(StaleStateError):
        await orders.apply_changes(
            coid,
            (transition(S.ACCEPTED, S.FILLED, reason="answer: FILLED"),),
            fills=[fill(3, client_order_id=coid)],
        )
    assert (await snapshot(orders, coid), await orders.positions()) == before
    assert [f.trade_id for f in await orders.fills_for(coid)] == [1, 2]


# ----------------------------------------------------------------------------- trading states


async def test_trading_states_upsert_and_load(orders: OrderStore, clock: WallClock) -> None:
    assert await orders.load_trading_states() == []
    await orders.save_trading_state(GLOBAL_SCOPE, "HALTED", "exchange incident")
    await orders.save_trading_state("main", "REDUCING", "wind down")
    clock.now += 2
    await orders.save_trading_state(GLOBAL_SCOPE, TradingState.ACTIVE, "resolved")
    assert await orders.load_trading_states() == [
        ("*", "ACTIVE", "resolved", clock.ms),
        ("main", "REDUCING", "wind down", clock.ms - 2000),
    ]
    with pytest.raises(ValueError, match=r"one of \['ACTIVE', 'HALTED', 'REDUCING'\].*'PAUSED'"):
        await orders.save_trading_state("main", "PAUSED", "")
    with pytest.raises(ValueError, match="scope"):
        await orders.save_trading_state("", "HALTED", "")


# ----------------------------------------------------------------------------- durability


async def test_everything_survives_close_and_reopen_on_the_thread_lane(open_db: Opener) -> None:
    clock = WallClock()
    with trio.fail_after(20):
        async with await open_db(runner=None, wall_clock=clock) as db:
            assert db.lane is not None  # the real one-thread lane, not the inline runner
            orders = OrderStore(db, wall_clock=clock)
            [a, b] = await orders.insert_intents([record("a"), record("b", side=Side.SELL)])
            await orders.apply_transitions(
                a.client_order_id,
                (
                    transition(S.PENDING, S.SENDING, reason="send"),
                    transition(S.SENDING, S.ACCEPTED, reason="accepted"),
                ),
                venue_order_id=1,
            )
            await orders.insert_fills([fill(1, client_order_id=a.client_order_id)])
            await orders.request_cancel(b.client_order_id)
            await orders.save_trading_state("main", "HALTED", "operator")
            before = (
                await orders.load([a.client_order_id, b.client_order_id]),
                await orders.history(a.client_order_id),
                await orders.fills_for(a.client_order_id),
                await orders.positions(),
                await orders.load_trading_states(),
                await orders.non_terminal(),
            )
        async with await open_db(runner=None, wall_clock=clock) as db:
            orders = OrderStore(db, wall_clock=clock)
            after = (
                await orders.load([a.client_order_id, b.client_order_id]),
                await orders.history(a.client_order_id),
                await orders.fills_for(a.client_order_id),
                await orders.positions(),
                await orders.load_trading_states(),
                await orders.non_terminal(),
            )
    assert after == before
    assert before[3] == {("main", "BTCUSDT"): Decimal("0.5")}
    assert len(before[1]) == 3


# ----------------------------------------------------------------------------- property


def test_migration_4_keeps_the_fills_and_keys_them_by_side() -> None:
    """A v3 file's fills survive the rebuild of ``order_fills`` on its new key."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    assert migrate(conn, ":memory:", now_ms=0, migrations=MIGRATIONS[:3]) == [1, 2, 3]
    columns = ", ".join(FILL_ROWS.columns)
    holes = ", ".join("?" for _ in FILL_ROWS.columns)
    old = fill(7, side=Side.BUY)
    conn.execute(f"INSERT INTO order_fills ({columns}) VALUES ({holes})", FILL_ROWS.dumper()(old))
    with pytest.raises(sqlite3.IntegrityError):  # v3: one row per trade id
        conn.execute(
            f"INSERT INTO order_fills ({columns}) VALUES ({holes})",
            FILL_ROWS.dumper()(fill(7, side=Side.SELL)),
        )
    assert migrate(conn, ":memory:", now_ms=0) == [4]
    assert [FILL_ROWS.load(r) for r in conn.execute(f"SELECT {columns} FROM order_fills")] == [old]
    conn.execute(
        f"INSERT INTO order_fills ({columns}) VALUES ({holes})",
        FILL_ROWS.dumper()(fill(7, side=Side.SELL)),
    )
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(order_fills)")}
    assert "order_fills_by_order" in indexes
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def memory_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    assert migrate(conn, ":memory:", now_ms=0) == list(range(1, LATEST_VERSION + 1))
    return conn


#: A fixed pool of distinct fills: what a trade id stands for never changes.
POOL = [
    fill(
        i,
        side=Side.BUY if i % 3 else Side.SELL,
        quantity=f"{i % 5 + 1}.{i:03d}",
        account="main" if i % 2 else "alt",
        symbol="BTCUSDT" if i % 4 < 2 else "ETHUSDT",
    )
    for i in range(12)
]


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.lists(st.integers(0, len(POOL) - 1), max_size=8), st.booleans()),
        max_size=8,
    )
)
def test_positions_are_the_sum_over_distinct_committed_trade_ids(
    batches: list[tuple[list[int], bool]],
) -> None:
    conn = memory_db()
    try:
        committed: set[int] = set()
        for picks, commit in batches:
            conn.execute("BEGIN IMMEDIATE")
            new = insert_fills(conn, [POOL[i] for i in picks], 0)
            # New means: not committed before and not earlier in this batch; input order kept.
            assert [f.trade_id for f in new] == [
                i for i in dict.fromkeys(picks) if i not in committed
            ]
            conn.execute("COMMIT" if commit else "ROLLBACK")
            if commit:
                committed |= set(picks)
        expected: dict[tuple[str, str], Decimal] = {}
        for i in committed:
            key = (POOL[i].account, POOL[i].symbol)
            expected[key] = expected.get(key, Decimal(0)) + POOL[i].signed_quantity
        assert positions(conn) == expected
        stored = {row[0] for row in conn.execute("SELECT trade_id FROM order_fills")}
        assert stored == committed
    finally:
        conn.close()
