"""Rate limits on a new order, and cancels before sending, at the executor.

The real :class:`~daemon.orders.executor.Executor`, ledger and store (a file,
inline runner) against a scripted venue, under Trio's virtual clock:

* our own limiter refusing a request (``VenueRateLimitedError`` without
  ``http_status``: never written) and the venue's 429/418 (rejected before
  processing) put the intent back to PENDING, durably and with the reason in
  its history, hold the venue for the ``Retry-After`` (or a backoff), and the
  intent goes out again once — after the hold, in its account's order;
* a 5xx, ``-1006``, a timeout or a rate-limit code under another status stay
  UNKNOWN, exactly as before;
* a PENDING intent is canceled locally (no venue request, reservation
  released), and its queued place item then does nothing; once the send
  section started, a cancel is a request, as before.

The last tests run the real pipeline against the simulator's
``rate_limit_burst`` fault and a venue that is down.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from daemon.config import OrdersConfig
from daemon.errors import VenueOutcomeUnknownError, VenueRateLimitedError
from daemon.model.instruments import ExchangeInfo
from daemon.model.orders import (
    FillReport,
    NewOrder,
    OrderReport,
    OrderType,
    Side,
    TimeInForce,
    VenueOrderStatus,
)
from daemon.orders.executor import Executor
from daemon.orders.holds import SendHolds
from daemon.orders.intent import OrderIntent
from daemon.orders.ledger import OrderLedger, OrderVenue
from daemon.orders.records import IntentRecord
from daemon.orders.state import HELD_BACK, NotExecuted, OrderState
from daemon.risk.book import RiskBook
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.risk.pretrade import PreTradeRisk
from daemon.risk.state import TradingStates
from daemon.store import SqliteStore, inline_runner
from daemon.store.orders import OrderStore
from tests.helpers.orders import limit_request, market_request, running_pipeline, wait_state
from tests.helpers.sim import running_sim, sim_config
from tests.helpers.store import WallClock

S = OrderState
VENUE = "v"
ACCOUNT = "main"
#: Virtual time moves a little inside the store's calls.
TOLERANCE_S = 0.01
SETTINGS = OrdersConfig(send_timeout_s=2.0, section_deadline_s=4.0, unknown_retry_s=0.5)

Outcome = OrderReport | BaseException | Callable[[], BaseException]


def approx(value: float) -> object:
    return pytest.approx(value, abs=TOLERANCE_S)


def limited(
    status: int | None, retry_after_s: float | None = None, code: int | None = -1003
) -> VenueRateLimitedError:
    return VenueRateLimitedError(
        f"rate limited (HTTP {status})",
        retry_after_s=retry_after_s,
        banned=status == 418,
        venue=VENUE,
        code=None if status is None else code,
        http_status=status,
        endpoint="POST /api/v3/order",
    )


class ScriptedVenue:
    """Answers new orders from a script (a report, or an error to raise); ``HANG`` never
    answers. Each order it *accepts* is one venue order (``orders``)."""

    HANG = "hang"

    def __init__(self) -> None:
        self.script: deque[Outcome | str] = deque()
        self.calls: list[tuple[str, float]] = []
        self.orders: list[str] = []
        self.entered = trio.Event()
        self.release = trio.Event()
        self.gate = False

    async def new_order(
        self, order: NewOrder, *, on_sent: Callable[[], None] | None = None
    ) -> OrderReport:
        self.calls.append((order.client_order_id, trio.current_time()))
        self.entered.set()
        if self.gate:
            await self.release.wait()
        outcome = self.script.popleft() if self.script else None
        if outcome == self.HANG:
            await trio.sleep_forever()
        if isinstance(outcome, BaseException):
            raise outcome
        self.orders.append(order.client_order_id)
        return OrderReport(
            venue=VENUE,
            symbol=order.symbol,
            order_id=1000 + len(self.orders),
            client_order_id=order.client_order_id,
            status=VenueOrderStatus.NEW,
            executed_qty=Decimal(0),
        )

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        raise AssertionError("not queried here")

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        raise AssertionError("no cancel reaches the venue here")

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        return []

    async def my_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        limit: int = 500,
    ) -> list[FillReport]:
        return []


class Venues:
    def __init__(self, client: ScriptedVenue) -> None:
        self._client = client

    def client(self, venue: str) -> OrderVenue | None:
        return self._client

    async def wait_client(self, venue: str) -> OrderVenue:
        return self._client

    def exchange_info(self, venue: str) -> ExchangeInfo | None:
        return None

    def recv_window_ms(self, venue: str) -> int:
        return 5000


@attrs.define
class Rig:
    executor: Executor
    ledger: OrderLedger
    store: OrderStore
    venue: ScriptedVenue

    @property
    def holds(self) -> SendHolds:
        return self.executor.holds

    async def intents(self, *message_ids: str, sending: bool = False) -> list[str]:
        """Record intents (PENDING, or SENDING as the entry's fast path does) and load
        them as a new incarnation would (risk reservations included)."""
        rows = [
            IntentRecord.from_intent(
                OrderIntent.create(
                    message_id=m,
                    account=ACCOUNT,
                    symbol="BTCUSDT",
                    side=Side.BUY,
                    type=OrderType.LIMIT,
                    quantity=Decimal("0.010"),
                    price=Decimal("29000.00"),
                    time_in_force=TimeInForce.GTC,
                ),
                venue=VENUE,
            )
            for m in message_ids
        ]
        coids = [r.client_order_id for r in rows]
        await self.store.record_intents(rows, sending=set(coids) if sending else ())
        await self.ledger.load()
        return coids

    async def state(self, coid: str) -> OrderState:
        record = await self.store.get(coid)
        assert record is not None
        return record.state

    async def path(self, coid: str) -> list[tuple[str, str]]:
        return [(h.target.value, h.reason) for h in await self.store.history(coid)]

    def release_due(self) -> list[str]:
        return [coid for _, coid in self.holds.release_due(self._pending)]

    def _pending(self, coid: str) -> IntentRecord | None:
        record = self.ledger.get(coid)
        return record if record is not None and record.state is S.PENDING else None


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time for the executor tests (pytest-trio runs the test under the
    clock found among the test's own arguments)."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = await SqliteStore.open(tmp_path / "orders.db", runner=inline_runner)
    try:
        store = OrderStore(db, wall_clock=WallClock())
        book = RiskBook(
            LimitTable(default=RiskLimits(max_orders_per_window=None)), clock=trio.current_time
        )
        ledger = OrderLedger(store, PreTradeRisk(book, TradingStates()), None)
        venue = ScriptedVenue()
        enabled = trio.Event()
        enabled.set()
        executor = Executor(ledger, Venues(venue), SETTINGS, sending_enabled=enabled)
        yield Rig(executor, ledger, store, venue)
    finally:
        await db.aclose()


# --------------------------------------------------------------------------- not executed


async def test_our_own_limiter_refusal_goes_back_to_pending_and_out_once_after_a_backoff(
    rig: Rig, clock: trio.testing.MockClock
) -> None:
    [coid] = await rig.intents("m1")
    rig.venue.script.append(limited(None))  # the local limiter: never written
    await rig.executor.place(coid)
    assert await rig.state(coid) is S.PENDING
    assert await rig.path(coid) == [
        ("PENDING", "intent recorded"),
        ("SENDING", "sending new order"),
        ("PENDING", "rate limited locally, not sent; retry after 1.0 s"),
    ]
    assert rig.ledger.unknown == 0 and rig.ledger.not_sent == 1
    assert rig.holds.remaining(VENUE) == approx(1.0)
    assert not rig.executor.ready(VENUE, ACCOUNT)  # no fast path meanwhile
    assert rig.executor.snapshot()["rate_limited"] == {"local": 1, "venue": 0}
    # Queued again too early (a periodic pass): held back, nothing sent.
    await rig.executor.place(coid)
    assert len(rig.venue.calls) == 1 and rig.release_due() == []
    await trio.sleep(1.0)
    assert rig.release_due() == [coid]
    assert rig.executor.ready(VENUE, ACCOUNT)
    await rig.executor.place(coid)
    assert await rig.state(coid) is S.ACCEPTED
    assert rig.venue.orders == [coid]
    (_, first), (_, second) = rig.venue.calls
    assert second - first == approx(1.0)
    record = await rig.store.get(coid)
    assert record is not None and record.send_attempts == 2


@pytest.mark.parametrize(
    ("status", "retry_after_s", "reason"),
    [
        (429, 2.0, "venue 429: not executed (-1003); retry after 2.0 s"),
        (418, 120.0, "venue 418: not executed (-1003); retry after 120.0 s"),
    ],
)
async def test_a_venue_429_or_418_is_not_executed_and_its_retry_after_is_honoured(
    rig: Rig, clock: trio.testing.MockClock, status: int, retry_after_s: float, reason: str
) -> None:
    [coid] = await rig.intents("m1")
    rig.venue.script.append(limited(status, retry_after_s))
    await rig.executor.place(coid)
    assert (await rig.path(coid))[-1] == ("PENDING", reason)
    assert rig.holds.remaining(VENUE) == approx(retry_after_s)
    assert rig.executor.snapshot()["held_venues"] == {VENUE: approx(retry_after_s)}
    await trio.sleep(retry_after_s - 0.01)
    await rig.executor.place(coid)  # before the Retry-After: not resent
    assert len(rig.venue.calls) == 1 and rig.release_due() == []
    await trio.sleep(0.01)
    assert rig.release_due() == [coid]
    await rig.executor.place(coid)
    assert await rig.state(coid) is S.ACCEPTED
    assert rig.venue.orders == [coid]
    assert rig.venue.calls[1][1] - rig.venue.calls[0][1] >= retry_after_s


async def test_without_a_retry_after_the_backoff_doubles_and_starts_over_once_answered(
    rig: Rig, clock: trio.testing.MockClock
) -> None:
    [coid, other] = await rig.intents("m1", "m2")
    # Local refusals, a 418 without Retry-After, a 429 saying 0 s: a growing backoff.
    rig.venue.script.extend([limited(None), limited(418), limited(None), limited(429, 0.0)])
    waits = []
    for _ in range(4):
        await rig.executor.place(coid)
        waits.append(rig.holds.remaining(VENUE))
        await trio.sleep(waits[-1])
        assert rig.release_due() == [coid]
    assert waits == [approx(w) for w in (1.0, 2.0, 4.0, 8.0)]
    await rig.executor.place(coid)
    assert await rig.state(coid) is S.ACCEPTED and rig.venue.orders == [coid]
    rig.venue.script.append(limited(None))
    await rig.executor.place(other)
    assert rig.holds.remaining(VENUE) == approx(1.0)  # started over


@pytest.mark.parametrize(
    "outcome",
    [
        VenueOutcomeUnknownError("HTTP 503", venue=VENUE, http_status=503),
        VenueOutcomeUnknownError("-1006", venue=VENUE, http_status=500, code=-1006),
        VenueOutcomeUnknownError("-1007", venue=VENUE, http_status=408, code=-1007),
        limited(400, 1.0, code=-1015),  # a rate-limit code under another status
        ScriptedVenue.HANG,  # no answer within send_timeout_s
    ],
    ids=["503", "-1006", "-1007", "-1015-under-400", "timeout"],
)
async def test_ambiguous_answers_stay_unknown(
    rig: Rig, clock: trio.testing.MockClock, outcome: Outcome | str
) -> None:
    [coid] = await rig.intents("m1")
    rig.venue.script.append(outcome)
    await rig.executor.place(coid)
    assert await rig.state(coid) is S.UNKNOWN
    assert [target for target, _ in await rig.path(coid)] == ["PENDING", "SENDING", "UNKNOWN"]
    assert rig.ledger.unknown == 1 and rig.ledger.not_sent == 0
    assert rig.holds.remaining(VENUE) == 0.0 and rig.holds.deferred_count() == 0


async def test_later_intents_of_the_account_wait_behind_the_held_back_one(
    rig: Rig, clock: trio.testing.MockClock
) -> None:
    a, b, c = await rig.intents("m1", "m2", "m3")
    rig.venue.script.append(limited(429, 1.0))
    await rig.executor.place(a)
    await rig.executor.place(b)  # the venue is held: b is held back, unsent
    assert await rig.state(b) is S.PENDING and len(rig.venue.calls) == 1
    await trio.sleep(1.0)
    # The hold is over but a and b are not released yet: c must not overtake them.
    await rig.executor.place(c)
    assert len(rig.venue.calls) == 1 and rig.holds.deferred_count() == 3
    assert rig.release_due() == [a, b, c]
    for coid in (a, b, c):
        await rig.executor.place(coid)
    assert rig.venue.orders == [a, b, c]


async def test_a_fast_path_sending_mark_is_held_back_to_pending_unsent(
    rig: Rig, clock: trio.testing.MockClock
) -> None:
    [first] = await rig.intents("m1")
    rig.venue.script.append(limited(429, 3.0))
    await rig.executor.place(first)
    [fast] = await rig.intents("m2", sending=True)  # the entry marked it SENDING already
    await rig.executor.place(fast, premarked=True)
    assert await rig.state(fast) is S.PENDING
    assert (await rig.path(fast))[-1] == ("PENDING", f"{HELD_BACK}; venue v held for 3.0 s more")
    assert [coid for coid, _ in rig.venue.calls] == [first]
    await trio.sleep(3.0)
    assert rig.release_due() == [first, fast]


def test_send_holds_release_in_order_and_forget_what_is_no_longer_pending() -> None:
    now = [100.0]
    holds = SendHolds(clock=lambda: now[0])
    records = {
        coid: attrs.evolve(
            _record(coid), client_order_id=coid, seq=seq, account=account, venue=venue
        )
        for coid, seq, account, venue in [
            ("a2", 2, "main", "v"),
            ("a1", 1, "main", "v"),
            ("a3", 3, "main", "v"),
            ("b1", 4, "other", "w"),
        ]
    }
    assert holds.next_release_in() is None
    assert holds.hold("v", NotExecuted("venue 429: not executed", 5.0)) == 5.0
    for record in records.values():
        holds.defer(record)
    assert holds.blocks("w", "other") and not holds.blocks("w", "third")
    assert not holds.blocks("w", "other", seq=4)  # only earlier intents hold it back
    assert holds.next_release_in() == 0.0  # account "other": venue w is not held
    pending = {"a1", "a2", "b1"}  # a3 was canceled meanwhile

    def get(coid: str) -> IntentRecord | None:
        return records[coid] if coid in pending else None

    assert holds.release_due(get) == [("other", "b1")]
    assert holds.next_release_in() == 5.0
    assert holds.snapshot() == {
        "rate_limited": {"local": 0, "venue": 1},
        "held_venues": {"v": 5.0},
        "held_back": 3,
    }
    now[0] += 5.0
    assert holds.release_due(get) == [("main", "a1"), ("main", "a2")]
    assert holds.deferred_count() == 0 and holds.next_release_in() is None


def _record(coid: str) -> IntentRecord:
    return IntentRecord.from_intent(
        OrderIntent.create(
            message_id=coid,
            account=ACCOUNT,
            symbol="BTCUSDT",
            side=Side.BUY,
            type=OrderType.MARKET,
            quantity=Decimal("0.010"),
        ),
        venue=VENUE,
    )


# --------------------------------------------------------------------------- cancel before sending


async def test_a_pending_intent_is_canceled_locally_and_its_place_item_does_nothing(
    rig: Rig, clock: trio.testing.MockClock
) -> None:
    [coid] = await rig.intents("m1")
    assert rig.ledger.risk.book.open_orders(ACCOUNT) == 1
    async with rig.ledger.lock(coid):
        record = rig.ledger.get(coid)
        assert record is not None
        done = await rig.ledger.cancel(record)
    assert done.state is S.CANCELED and done.cancel_requested_at_ms is not None
    assert rig.ledger.get(coid) is None  # finished: out of memory
    assert rig.ledger.risk.book.open_orders(ACCOUNT) == 0  # reservation released
    assert (await rig.path(coid))[-1] == ("CANCELED", "canceled before sending")
    await rig.executor.place(coid)  # the queued place item comes up
    assert rig.venue.calls == [] and await rig.state(coid) is S.CANCELED


async def test_a_cancel_requested_before_proven_absence_cancels_instead_of_resending(
    rig: Rig, clock: trio.testing.MockClock
) -> None:
    [coid] = await rig.intents("m1")
    rig.venue.script.append(VenueOutcomeUnknownError("HTTP 503", venue=VENUE, http_status=503))
    await rig.executor.place(coid)
    record = rig.ledger.get(coid)
    assert record is not None and record.state is S.UNKNOWN
    async with rig.ledger.lock(coid):
        requested = await rig.ledger.cancel(record)  # the section started: a request only
        assert requested.state is S.UNKNOWN and requested.cancel_requested_at_ms is not None
        await rig.ledger.mark_resend(requested, "venue proved absence: resend same id")
    await rig.executor.place(coid)
    assert [c for c, _ in rig.venue.calls] == [coid]  # not sent again
    assert (await rig.path(coid))[-1] == (
        "CANCELED",
        "canceled before sending (requested earlier)",
    )


async def test_a_cancel_racing_the_send_section_is_a_request(
    rig: Rig, clock: trio.testing.MockClock
) -> None:
    [coid] = await rig.intents("m1")
    rig.venue.gate = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.executor.place, coid)
        await rig.venue.entered.wait()  # inside the section, holding the order's lock
        canceled: list[IntentRecord] = []

        async def cancel() -> None:
            async with rig.ledger.lock(coid):
                current = rig.ledger.get(coid)
                assert current is not None
                canceled.append(await rig.ledger.cancel(current))

        nursery.start_soon(cancel)
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        assert canceled == []  # waits for the section
        rig.venue.release.set()
    assert canceled[0].state is S.ACCEPTED
    assert canceled[0].cancel_requested_at_ms is not None
    assert rig.venue.orders == [coid]


# --------------------------------------------------------------------------- the real pipeline


async def test_an_order_sent_into_a_429_burst_goes_out_once_after_it(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            await sim.arm(
                kind="rate_limit_burst",
                method="POST",
                path="/api/v3/order",
                retry_after_s=1,
                count=2,
            )
            started = trio.current_time()
            result = await run.service.submit(market_request("burst-1"))
            filled = await wait_state(run.service, result.client_order_id, S.FILLED)
            assert trio.current_time() - started >= 2.0  # two Retry-After waits honoured
            assert filled.executed_qty == Decimal("0.010")
            assert len(await sim.audit(result.client_order_id)) == 1
            history = (await run.service.details(result.client_order_id))["history"]
            assert [h["to"] for h in history] == [
                "PENDING",
                "SENDING",
                "PENDING",
                "SENDING",
                "PENDING",
                "SENDING",
                "ACCEPTED",
                "FILLED",
            ]
            back = [h for h in history if h["from"] == "SENDING" and h["to"] == "PENDING"]
            assert [h["reason"] for h in back] == [
                "venue 429: not executed (-1003); retry after 1.0 s"
            ] * 2
            # Each resend waited for the Retry-After (wall clock ms of the history rows).
            sends = [int(h["at_ms"]) for h in history if h["to"] == "SENDING"]
            backs = [int(h["at_ms"]) for h in back]
            assert all(b - a >= 950 for a, b in zip(backs, sends[1:], strict=True))
            status = run.service.status()
            assert status["orders"]["unknown"] == 0 and status["orders"]["not_sent"] == 2
            assert status["executor"]["rate_limited"] == {"local": 0, "venue": 2}


async def test_cancel_of_an_intent_waiting_for_its_venue_sends_nothing(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            run.venues.down = True  # the place item waits for the venue, the intent PENDING
            result = await run.service.submit(limit_request("c-1"))
            assert (await run.service.get(result.client_order_id)).state is S.PENDING
            done = await run.service.cancel(result.client_order_id)
            assert done.state is S.CANCELED
            assert done.cancel_requested_at_ms is not None
            assert await run.service.cancel(result.client_order_id) == done  # idempotent
            run.venues.down = False
            await trio.sleep(0.5)  # the queued place item comes up, and does nothing
            assert await sim.audit(result.client_order_id) == []
            details = await run.service.details(result.client_order_id)
            assert [(h["to"], h["reason"]) for h in details["history"]] == [
                ("PENDING", "intent recorded"),
                ("CANCELED", "canceled before sending"),
            ]
            pipeline = run.service.pipeline
            assert pipeline is not None
            assert pipeline.ledger.risk.book.open_orders("main") == 0
