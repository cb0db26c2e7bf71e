"""The WebSocket API client against the real simulator, end to end, over 127.0.0.1.

:class:`~daemon.venues.binance.BinanceWsApiOrders` and
:class:`~daemon.venues.binance.UserDataStream` talk to the simulator's
``/ws-api/v3`` (an independent reading of Binance's documentation: no code is
shared), for every method the client uses and every execution type of the
user data stream (NEW, TRADE as taker and as maker, CANCELED, REJECTED,
EXPIRED), and under the simulator's WebSocket API faults. What the venue
really did is read back through its control API (``/sim/audit``,
``/sim/balances``), or over REST, never taken from the client under test.

Time is real, for the reasons given in ``tests/venues/test_interop.py``:
intervals are short, every wait is for a condition, every test runs under
``trio.fail_after``.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import trio

from daemon.errors import (
    ApiKeyRejectedError,
    CancelRejectedError,
    DuplicateOrderError,
    FilterFailureError,
    OrderNotFoundError,
    OrderRejectedError,
    SignatureError,
    VenueOutcomeUnknownError,
    VenueUnavailableError,
)
from daemon.model import NewOrder, OrderType, Side, TimeInForce, VenueOrderStatus
from daemon.model.userstream import (
    AccountPosition,
    ExecutionReport,
    ExecutionType,
    StreamTerminated,
    UserStreamDown,
    UserStreamEvent,
    UserStreamUp,
)
from daemon.venues.binance import (
    BinanceRestClient,
    BinanceVenue,
    BinanceWsApiOrders,
    UserDataStream,
)
from daemon.venues.sim.config import DOCS_API_KEY
from tests.helpers.sim import SYMBOL, SimHarness, client_config, running_sim, secret

D = Decimal
TIMEOUT_S = 20.0
#: A UTC day start: the venue's fixed rate-limit windows do not roll over mid-test.
DAY_START_MS = 1_699_920_000_000

Events = trio.MemoryReceiveChannel[UserStreamEvent]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def aligned_clock() -> Callable[[], int]:
    started = time.monotonic_ns()
    return lambda: DAY_START_MS + (time.monotonic_ns() - started) // 1_000_000


def limit(cid: str, side: Side, price: Decimal, qty: str = "0.01", **fields: Any) -> NewOrder:
    return NewOrder(
        symbol=SYMBOL,
        side=side,
        type=OrderType.LIMIT,
        client_order_id=cid,
        quantity=D(qty),
        price=price,
        time_in_force=fields.pop("time_in_force", TimeInForce.GTC),
        **fields,
    )


def market(cid: str, side: Side = Side.BUY, qty: str = "0.02") -> NewOrder:
    return NewOrder(
        symbol=SYMBOL, side=side, type=OrderType.MARKET, client_order_id=cid, quantity=D(qty)
    )


@asynccontextmanager
async def ws_venue(
    sim: SimHarness, *, rest: BinanceRestClient | None = None, **overrides: Any
) -> AsyncIterator[tuple[BinanceRestClient, BinanceWsApiOrders]]:
    """The venue's REST client and its WebSocket API orders, running."""
    client = rest or BinanceVenue(client_config(sim, **overrides), rng=random.Random(7))
    orders = BinanceWsApiOrders(client, rng=random.Random(7))
    assert client.config.ws_api_url == sim.ws_url + "/ws-api/v3"  # derived from ws_url
    async with trio.open_nursery() as nursery:
        await nursery.start(orders.run)
        yield client, orders
        nursery.cancel_scope.cancel()
    await client.aclose()


@asynccontextmanager
async def user_stream(
    client: BinanceRestClient,
) -> AsyncIterator[tuple[UserDataStream, Events]]:
    """The account's user data stream, subscribed; yields it and its events (Up consumed)."""
    stream = UserDataStream(client, rng=random.Random(7))
    send, receive = trio.open_memory_channel[UserStreamEvent](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(stream.run, send)
        up = await receive.receive()
        assert isinstance(up, UserStreamUp)
        yield stream, receive
        nursery.cancel_scope.cancel()


async def reports_until(
    events: Events, done: Callable[[ExecutionReport], bool]
) -> tuple[list[ExecutionReport], list[UserStreamEvent]]:
    """Execution reports up to the first ``done`` one; and every other event meanwhile."""
    reports: list[ExecutionReport] = []
    others: list[UserStreamEvent] = []
    while True:
        event = await events.receive()
        if isinstance(event, ExecutionReport):
            reports.append(event)
            if done(event):
                return reports, others
        else:
            others.append(event)


def of(cid: str, status: VenueOrderStatus) -> Callable[[ExecutionReport], bool]:
    return lambda r: r.report.client_order_id == cid and r.report.status is status


async def best(client: BinanceRestClient) -> tuple[Decimal, Decimal]:
    book = await client.depth(SYMBOL, limit=5)
    return book.bids[0][0], book.asks[0][0]


# =========================================================================== methods


async def test_every_order_method_round_trips_and_agrees_with_rest() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, ws_venue(sim) as (rest, orders):
            bid, _ = await best(rest)
            resting = await orders.new_order(limit("ws-1", Side.BUY, bid - D("100.00")))
            assert (resting.client_order_id, resting.status) == ("ws-1", VenueOrderStatus.NEW)
            taken = await orders.new_order(market("ws-2"))
            assert taken.status is VenueOrderStatus.FILLED and taken.fills
            assert sum(f.quantity for f in taken.fills) == D("0.02")

            by_cid = await orders.get_order(SYMBOL, client_order_id="ws-1")
            by_id = await orders.get_order(SYMBOL, order_id=resting.order_id)
            assert by_cid == by_id == await rest.get_order(SYMBOL, client_order_id="ws-1")
            assert [o.client_order_id for o in await orders.open_orders(SYMBOL)] == ["ws-1"]
            assert await orders.open_orders() == await rest.open_orders()

            fill_ids = [f.trade_id for f in taken.fills]
            mine = await orders.my_trades(SYMBOL)
            assert mine == await rest.my_trades(SYMBOL)
            assert [t.trade_id for t in mine] == fill_ids
            by_order = await orders.my_trades(SYMBOL, order_id=taken.order_id)
            assert [t.trade_id for t in by_order] == fill_ids
            assert [t.trade_id for t in await orders.my_trades(SYMBOL, limit=1)] == fill_ids[-1:]

            canceled = await orders.cancel_order(
                SYMBOL, client_order_id="ws-1", new_client_order_id="ws-1-cxl"
            )
            assert (canceled.client_order_id, canceled.status) == (
                "ws-1",
                VenueOrderStatus.CANCELED,
            )
            assert await orders.open_orders(SYMBOL) == []
            assert abs(await orders.server_time() - wall_ms()) < 5_000

            audit = await sim.audit()
            assert [(o["clientOrderId"], o["transport"]) for o in audit] == [
                ("ws-1", "ws-api"),
                ("ws-2", "ws-api"),
            ]
            assert orders.stats.connections == 1 and orders.stats.malformed == 0


async def test_client_and_venue_agree_on_every_method_weight() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(wall_clock=aligned_clock()) as sim,
            ws_venue(sim) as (rest, orders),
        ):
            await rest.exchange_info()  # installs the venue's limits (a correction)
            limiter = rest.limiter
            assert limiter is not None
            installed = limiter.stats.corrections
            bid, _ = await best(rest)
            placed = await orders.new_order(limit("w-1", Side.BUY, bid - D("100.00")))
            await orders.get_order(SYMBOL, client_order_id="w-1")
            await orders.open_orders(SYMBOL)
            await orders.open_orders()
            await orders.cancel_order(SYMBOL, client_order_id="w-1")
            await orders.my_trades(SYMBOL)
            await orders.my_trades(SYMBOL, order_id=placed.order_id)
            await orders.server_time()
            # The answers' rateLimits never had to correct the client's own count.
            assert limiter.stats.corrections == installed
            local = limiter.used("REQUEST_WEIGHT:1M")
            probe = await sim.http.get("/api/v3/ping")
            assert local == int(probe.headers["X-MBX-USED-WEIGHT-1M"]) - 1
            assert local == 1 + 20 + 5 + 2 + 1 + 4 + 6 + 80 + 1 + 20 + 5 + 1


# =========================================================================== events


async def test_the_user_stream_reports_every_execution_type() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim() as sim,
            ws_venue(sim) as (rest, orders),
            user_stream(rest) as (stream, events),
        ):
            bid, ask = await best(rest)
            # NEW, then TRADE as maker (someone else sells into our better bid).
            maker = await orders.new_order(limit("ev-maker", Side.BUY, bid + D("0.01")))
            (new,), _ = await reports_until(events, of("ev-maker", VenueOrderStatus.NEW))
            assert new.execution_type is ExecutionType.NEW and new.fill is None
            assert new.report.order_id == maker.order_id and new.report.is_working
            await sim.market_order("SELL", "0.005")
            (maker_trade,), _ = await reports_until(
                events, of("ev-maker", VenueOrderStatus.PARTIALLY_FILLED)
            )
            assert maker_trade.execution_type is ExecutionType.TRADE
            assert maker_trade.fill is not None and maker_trade.fill.is_maker
            assert maker_trade.report.executed_qty == D("0.005")

            # TRADE as taker: a market order, one report per fill, the last one FILLED.
            taken = await orders.new_order(market("ev-taker"))
            taker_reports, others = await reports_until(
                events, of("ev-taker", VenueOrderStatus.FILLED)
            )
            assert [r.execution_type for r in taker_reports] == [ExecutionType.NEW] + [
                ExecutionType.TRADE
            ] * len(taken.fills)
            fills = [r.fill for r in taker_reports[1:]]
            assert [f.trade_id for f in fills if f] == [f.trade_id for f in taken.fills]
            assert all(f is not None and not f.is_maker and f.is_buyer for f in fills)
            # A pushed fill is exactly the polled myTrades row of the same trade.
            polled = {t.trade_id: t for t in await rest.my_trades(SYMBOL)}
            for fill in [maker_trade.fill, *fills]:
                assert fill is not None and polled[fill.trade_id] == fill
            assert any(isinstance(e, AccountPosition) for e in others)

            # CANCELED: the report names the order; the cancel's own id rides beside it.
            await orders.cancel_order(
                SYMBOL, client_order_id="ev-maker", new_client_order_id="ev-cxl"
            )
            (canceled,), _ = await reports_until(events, of("ev-maker", VenueOrderStatus.CANCELED))
            assert canceled.execution_type is ExecutionType.CANCELED
            assert canceled.cancel_client_order_id == "ev-cxl"
            assert canceled.report.executed_qty == D("0.005")

            # REJECTED: the engine refuses for the balance; the request raises too.
            with pytest.raises(OrderRejectedError):
                await orders.new_order(limit("ev-big", Side.BUY, bid - D("100.00"), qty="100"))
            (rejected,), _ = await reports_until(
                events, lambda r: r.execution_type is ExecutionType.REJECTED
            )
            assert rejected.reject_reason == "INSUFFICIENT_BALANCES"
            assert rejected.report.client_order_id == "ev-big"

            # EXPIRED: IOC takes the best level and expires the rest; FOK cannot fill at all.
            _, ask = await best(rest)
            await orders.new_order(
                limit("ev-ioc", Side.BUY, ask, qty="1", time_in_force=TimeInForce.IOC)
            )
            ioc, _ = await reports_until(events, of("ev-ioc", VenueOrderStatus.EXPIRED))
            assert ioc[0].execution_type is ExecutionType.NEW
            assert ioc[-1].execution_type is ExecutionType.EXPIRED
            assert ExecutionType.TRADE in {r.execution_type for r in ioc}
            await orders.new_order(
                limit("ev-fok", Side.BUY, ask, qty="1", time_in_force=TimeInForce.FOK)
            )
            fok, _ = await reports_until(events, of("ev-fok", VenueOrderStatus.EXPIRED))
            assert [r.execution_type for r in fok] == [ExecutionType.NEW, ExecutionType.EXPIRED]

            # An order sent over REST is reported on the stream just the same.
            await rest.new_order(market("ev-rest", Side.SELL, "0.01"))
            rest_reports, _ = await reports_until(events, of("ev-rest", VenueOrderStatus.FILLED))
            assert rest_reports[0].execution_type is ExecutionType.NEW
            assert stream.snapshot()["malformed"] == 0
            assert stream.subscribed and stream.snapshot()["downs"] == {}


async def test_a_terminated_subscription_is_resubscribed() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim() as sim,
            ws_venue(sim) as (rest, orders),
            user_stream(rest) as (stream, events),
        ):
            await sim.arm(kind="userstream_terminate", every_s=0.2, count=1)
            terminated = await events.receive()
            down, up = await events.receive(), await events.receive()
            assert isinstance(terminated, StreamTerminated)
            assert isinstance(down, UserStreamDown) and down.reason == "terminated"
            assert isinstance(up, UserStreamUp) and up.subscription_id == 1
            await orders.new_order(market("after-1"))
            reports, _ = await reports_until(events, of("after-1", VenueOrderStatus.FILLED))
            assert reports[0].execution_type is ExecutionType.NEW
            assert stream.snapshot()["subscriptions"] == 2
            assert stream.stats.connections == 1  # the same connection


async def test_stalled_events_arrive_late_and_in_order() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim() as sim,
            ws_venue(sim) as (rest, orders),
            user_stream(rest) as (_, events),
        ):
            await sim.arm(kind="userstream_stall", duration_s=1.0)
            stalled_at = trio.current_time()
            for i in range(3):
                await orders.new_order(market(f"st-{i}", qty="0.001"))
            reports, others = await reports_until(events, of("st-2", VenueOrderStatus.FILLED))
            assert trio.current_time() - stalled_at >= 0.9
            assert [
                r.report.client_order_id for r in reports if r.execution_type is ExecutionType.NEW
            ] == [
                "st-0",
                "st-1",
                "st-2",
            ]
            assert not any(isinstance(e, UserStreamDown) for e in others)


async def test_a_dropped_connection_ends_the_subscription_and_it_comes_back() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim() as sim,
            ws_venue(sim) as (rest, orders),
            user_stream(rest) as (stream, events),
        ):
            assert sim.server.ws_api.drop_all("abort") == 2  # the orders' and the stream's
            down = await events.receive()
            assert isinstance(down, UserStreamDown) and down.reason == "closed"
            assert isinstance(await events.receive(), UserStreamUp)
            report = await orders.new_order(market("back-1"))  # the orders reconnected too
            assert report.status is VenueOrderStatus.FILLED
            await reports_until(events, of("back-1", VenueOrderStatus.FILLED))
            assert stream.snapshot()["reconnects"] == 1


# =========================================================================== faults


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "wsapi_drop", "phase": "after", "mode": "abort"},
        {"kind": "wsapi_drop", "phase": "after", "mode": "close"},
        {"kind": "wsapi_no_answer", "phase": "after"},
        {"kind": "wsapi_error", "phase": "after"},
        {
            "kind": "wsapi_error",
            "phase": "after",
            "status": 408,
            "code": -1007,
            "msg": "Timeout waiting for response from backend server. Send status unknown; "
            "execution status unknown.",
        },
    ],
    ids=["drop-abort", "drop-close", "no-answer", "5xx", "1007"],
)
async def test_an_order_processed_without_an_answer_is_unknown_and_found(
    fault: dict[str, Any],
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, ws_venue(sim, request_timeout_s=1.0) as (_, orders):
            await sim.arm(**fault, method="order.place", count=1)
            with pytest.raises(VenueOutcomeUnknownError) as unknown:
                await orders.new_order(market("amb-1"))
            assert unknown.value.endpoint == "ws-api order.place"
            audit = await sim.audit("amb-1")
            assert len(audit) == 1  # sent once, processed, never resent
            found = await orders.get_order(SYMBOL, client_order_id="amb-1")
            assert found.order_id == audit[0]["orderId"]
            assert found.status is VenueOrderStatus.FILLED


async def test_an_order_refused_before_processing_is_absent_and_a_resend_is_single() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, ws_venue(sim, request_timeout_s=1.0) as (_, orders):
            await sim.arm(kind="wsapi_no_answer", phase="before", method="order.place", count=1)
            with pytest.raises(VenueOutcomeUnknownError):  # the client cannot tell
                await orders.new_order(market("pre-1"))
            with pytest.raises(OrderNotFoundError):
                await orders.get_order(SYMBOL, client_order_id="pre-1")
            # A 5xx is "unknown" whatever the code (as over REST): the body may lie.
            await sim.arm(kind="wsapi_error", phase="before", method="order.place", count=1)
            with pytest.raises(VenueOutcomeUnknownError) as five_xx:
                await orders.new_order(market("pre-1"))
            assert (five_xx.value.http_status, five_xx.value.code) == (503, -1001)
            # -1001 in a 4xx answer: not processed.
            await sim.arm(
                kind="wsapi_error", phase="before", method="order.place", status=400, count=1
            )
            with pytest.raises(VenueUnavailableError) as overloaded:
                await orders.new_order(market("pre-1"))
            assert overloaded.value.code == -1001
            report = await orders.new_order(market("pre-1"))
            assert report.status is VenueOrderStatus.FILLED
            assert len(await sim.audit("pre-1")) == 1


async def test_a_cancel_processed_without_an_answer_is_unknown() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, ws_venue(sim, request_timeout_s=1.0) as (rest, orders):
            bid, _ = await best(rest)
            await orders.new_order(limit("cxl-amb", Side.BUY, bid - D("100.00")))
            await sim.arm(kind="wsapi_drop", phase="after", method="order.cancel", count=1)
            with pytest.raises(VenueOutcomeUnknownError):
                await orders.cancel_order(SYMBOL, client_order_id="cxl-amb")
            found = await orders.get_order(SYMBOL, client_order_id="cxl-amb")
            assert found.status is VenueOrderStatus.CANCELED  # it did take effect


async def test_venue_errors_map_as_over_rest() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, ws_venue(sim, request_timeout_s=1.0) as (rest, orders):
            bid, _ = await best(rest)
            await orders.new_order(limit("dup-1", Side.BUY, bid - D("100.00")))
            with pytest.raises(DuplicateOrderError):
                await orders.new_order(limit("dup-1", Side.BUY, bid - D("100.00")))
            with pytest.raises(FilterFailureError) as filtered:
                await orders.new_order(limit("tick-1", Side.BUY, bid - D("100.005")))
            assert filtered.value.filter_type == "PRICE_FILTER"
            with pytest.raises(OrderNotFoundError):
                await orders.get_order(SYMBOL, client_order_id="nope")
            with pytest.raises(CancelRejectedError):
                await orders.cancel_order(SYMBOL, client_order_id="nope")
            await sim.arm(kind="wsapi_no_answer", phase="before", method="order.status", count=1)
            # A query without an answer is transient: retried, and answered the second time.
            assert (await orders.get_order(SYMBOL, client_order_id="dup-1")).status is (
                VenueOrderStatus.NEW
            )
            assert orders.snapshot()["retries"]["retries"] == 1


async def test_keys_the_venue_refuses() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim:
            wrong = {"api_secret": secret("not-the-secret")}
            async with ws_venue(sim, **wrong) as (_, orders):
                with pytest.raises(SignatureError):
                    await orders.new_order(market("k-1"))
            unknown = {"api_key": secret("A" * 64), "api_secret": secret("B" * 64)}
            async with ws_venue(sim, **unknown) as (rest, orders):
                with pytest.raises(ApiKeyRejectedError):
                    await orders.get_order(SYMBOL, client_order_id="k-1")
                stream = UserDataStream(rest)
                send, _ = trio.open_memory_channel[UserStreamEvent](1)
                with pytest.raises(ApiKeyRejectedError):
                    await stream.run(send)
            assert await sim.audit() == []
            assert DOCS_API_KEY not in str(orders.snapshot())


@pytest.mark.parametrize("jump_ms", [+10_000, -10_000])
async def test_a_clock_jump_is_cured_by_one_resync(jump_ms: int) -> None:
    jump = [0]

    def clock() -> int:
        return wall_ms() + jump[0]

    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim:
            rest = BinanceRestClient(client_config(sim), wall_clock_ms=clock)
            async with ws_venue(sim, rest=rest) as (_, orders):
                await rest.sync_time()
                jump[0] = jump_ms
                report = await orders.new_order(market("jumped-1"))
                assert report.status is VenueOrderStatus.FILLED
                assert rest.snapshot()["time_resyncs"] == 1
                assert rest.time_offset_ms == pytest.approx(-jump_ms, abs=500)
                assert len(await sim.audit("jumped-1")) == 1
