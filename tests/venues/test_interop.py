"""The real Binance client against the real simulator, end to end, over 127.0.0.1.

Neither side shares code with the other (the simulator is an independent
reading of the Binance Spot protocol), so each test here checks that the two
agree on the wire: every REST endpoint, every error code the venue layer must
map, the rate-limit and clock machinery, and the streams under injected
faults. What the venue *really* did is read back through the simulator's
control API (``/sim/audit``, ``/sim/trades``, ``/sim/status``), never taken
from the client under test.

Time is real. Virtual time does not pay here: with ``autojump_threshold=0``
the clock may jump while a loopback segment is still in the kernel (softirq
work is deferred on a loaded host) and fire timeouts unrelated to the
behaviour under test; with a safe threshold (0.25 s, as in the stream unit
tests) every jump costs that much real time, and a running simulator always
has a timer due within 100 ms (its depth flushes), so virtual seconds would
cost *more* than real ones. Intervals are short instead, every wait is for a
condition (never a guessed sleep), and every test runs under
``trio.fail_after``. Venue-side rate-limit windows are fixed windows on the
simulator's wall clock, so tests that count weight start that clock at a UTC
day start (:func:`aligned_clock`): no window rolls over mid-test.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from functools import partial
from typing import Any, TypeVar

import attrs
import pytest
import trio

from daemon.errors import (
    ApiKeyRejectedError,
    CancelRejectedError,
    DuplicateOrderError,
    FilterFailureError,
    ForbiddenError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    RetryExhaustedError,
    SignatureError,
    TimestampOutOfWindowError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRejectedError,
    VenueUnavailableError,
)
from daemon.model import (
    DepthContinuity,
    DepthSnapshot,
    DepthUpdate,
    NewOrder,
    OrderResponseType,
    OrderType,
    Side,
    TimeInForce,
    Trade,
    VenueOrderStatus,
    classify_depth_update,
    depth_continuous,
    trade_gap,
)
from daemon.venues.base import StreamKind, Subscription
from daemon.venues.binance import (
    BinanceConfig,
    BinanceRestClient,
    BinanceStream,
    BinanceVenue,
    DisconnectReason,
    MalformedFrame,
    StreamConnected,
    StreamDisconnected,
    StreamEvent,
    codec,
)
from daemon.venues.sim.config import (
    DEFAULT_RATE_LIMITS,
    DOCS_API_KEY,
    SYMBOL_PRESETS,
    LimitsConfig,
    MarketConfig,
    PercentPriceBySideConfig,
    RateLimitConfig,
    StreamsConfig,
)
from tests.helpers.sim import (
    SYMBOL,
    SimHarness,
    client_config,
    rest_client,
    running_sim,
    secret,
    sim_config,
)

D = Decimal
E = TypeVar("E")

#: Outer bound of every test (each needs a few seconds at most, even on a loaded host).
TIMEOUT_S = 20.0
#: A live market: about 100 trades and 100 book changes per second.
LIVE = MarketConfig(events_per_s=200, trade_probability=0.5)
TRADE_STREAM = codec.trade_stream(SYMBOL)
DEPTH_STREAM = codec.depth_stream(SYMBOL, 100)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


#: A UTC day start (so also a minute and a second start).
DAY_START_MS = 1_699_920_000_000


def aligned_clock() -> Callable[[], int]:
    """A venue wall clock that starts at a UTC day start and then runs in real time.

    The venue's rate-limit windows are fixed windows on its clock; starting at
    a window's start means none rolls over during a test.
    """
    started = time.monotonic_ns()

    def now_ms() -> int:
        return DAY_START_MS + (time.monotonic_ns() - started) // 1_000_000

    return now_ms


# --------------------------------------------------------------------------- orders


def limit_buy(cid: str, price: Decimal, qty: str = "0.01") -> NewOrder:
    return NewOrder(
        symbol=SYMBOL,
        side=Side.BUY,
        type=OrderType.LIMIT,
        client_order_id=cid,
        quantity=D(qty),
        price=price,
        time_in_force=TimeInForce.GTC,
    )


def market(cid: str, side: Side = Side.BUY, qty: str = "0.02") -> NewOrder:
    return NewOrder(
        symbol=SYMBOL, side=side, type=OrderType.MARKET, client_order_id=cid, quantity=D(qty)
    )


def limit_maker(cid: str, side: Side, price: Decimal, qty: str = "0.01") -> NewOrder:
    return NewOrder(
        symbol=SYMBOL,
        side=side,
        type=OrderType.LIMIT_MAKER,
        client_order_id=cid,
        quantity=D(qty),
        price=price,
    )


async def resting_price(client: BinanceRestClient) -> Decimal:
    """A BUY price well below the best bid: the order rests, it does not trade."""
    book = await client.depth(SYMBOL, limit=5)
    return book.bids[0][0] - D("100.00")


# --------------------------------------------------------------------------- comparisons


def trade_key(t: Trade) -> tuple[int, Decimal, Decimal, int, bool]:
    return (t.trade_id, t.price, t.quantity, t.trade_time_ms, t.buyer_is_maker)


def published_key(t: dict[str, Any]) -> tuple[int, Decimal, Decimal, int, bool]:
    return (t["id"], D(t["price"]), D(t["qty"]), t["time"], t["isBuyerMaker"])


async def venue_trades(sim: SimHarness, first: int, last: int) -> list[Any]:
    """``/sim/trades`` keys for ids ``first..last`` (the venue's own record)."""
    published = await sim.published_trades(first, last - first + 1)
    return [published_key(t) for t in published]


# --------------------------------------------------------------------------- streams


@asynccontextmanager
async def running_stream(
    config: BinanceConfig, streams: list[str]
) -> AsyncIterator[tuple[BinanceStream, trio.MemoryReceiveChannel[StreamEvent]]]:
    """The real stream client, running; yields it and the channel it feeds."""
    stream = BinanceStream(config, streams, rng=random.Random(3))
    send, receive = trio.open_memory_channel[StreamEvent](100_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(stream.run, send)
        yield stream, receive
        nursery.cancel_scope.cancel()


async def next_event(receive: trio.MemoryReceiveChannel[StreamEvent], kind: type[E]) -> E:
    """The next event of type ``kind``; anything else before it is an error."""
    event = await receive.receive()
    assert isinstance(event, kind), f"expected {kind.__name__}, got {event!r}"
    return event


async def trades_until(
    receive: trio.MemoryReceiveChannel[StreamEvent],
    done: Callable[[list[Trade]], bool],
    others: list[StreamEvent] | None = None,
) -> list[Trade]:
    """Trades from the stream until ``done(trades)``; other events go to ``others``."""
    trades: list[Trade] = []
    while not done(trades):
        event = await receive.receive()
        if isinstance(event, Trade):
            trades.append(event)
        elif others is not None:
            others.append(event)
        else:
            raise AssertionError(f"unexpected stream event {event!r}")
    return trades


async def until_connection_delivers(
    receive: trio.MemoryReceiveChannel[StreamEvent], connection: int, trades_after: int
) -> tuple[list[Trade], list[StreamEvent]]:
    """Trades and other events until connection number ``connection`` brought ``trades_after``.

    Call it after the first :class:`StreamConnected` was taken from the channel.
    """
    trades: list[Trade] = []
    others: list[StreamEvent] = []
    current, since = 1, 0
    while current < connection or since < trades_after:
        event = await receive.receive()
        if isinstance(event, Trade):
            trades.append(event)
            since += 1
            continue
        others.append(event)
        if isinstance(event, StreamConnected):
            current, since = event.connection_number, 0
    return trades, others


async def backfill_gaps(client: BinanceRestClient, trades: list[Trade]) -> list[Trade]:
    """The feed's repair: every trade-id gap in ``trades`` fetched with ``historicalTrades``."""
    filled: list[Trade] = []
    prev: int | None = None
    for t in trades:
        gap = trade_gap(prev, t.trade_id)
        if gap:
            got = await client.historical_trades(SYMBOL, from_id=gap.start, limit=len(gap))
            assert [g.trade_id for g in got] == list(gap)
            filled.extend(got)
        prev = t.trade_id if prev is None else max(prev, t.trade_id)
    return filled


def assert_sequential(trades: list[Trade]) -> None:
    ids = [t.trade_id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids


# =========================================================================== 1. REST endpoints


async def test_ping_server_time_and_exchange_info() -> None:
    limits = (
        RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, 1234),
        RateLimitConfig("ORDERS", "SECOND", 10, 77),
        RateLimitConfig("ORDERS", "DAY", 1, 4321),
        RateLimitConfig("RAW_REQUESTS", "MINUTE", 5, 9999),
    )
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config(rate_limits=limits)) as sim, rest_client(sim) as client:
            await client.ping()
            before = wall_ms()
            server_ms = await client.server_time()
            after = wall_ms()
            assert before <= server_ms <= after  # the simulator runs on the system clock

            info = await client.exchange_info()
            preset = SYMBOL_PRESETS[SYMBOL]
            btc = info.symbol(SYMBOL)
            assert (btc.base_asset, btc.quote_asset, btc.is_trading) == ("BTC", "USDT", True)
            assert btc.order_types >= {"LIMIT", "MARKET", "LIMIT_MAKER"}
            f = btc.filters
            assert (f.tick_size, f.min_price, f.max_price) == (
                preset.tick_size,
                preset.min_price,
                preset.max_price,
            )
            assert (f.step_size, f.min_qty, f.max_qty) == (
                preset.step_size,
                preset.min_qty,
                preset.max_qty,
            )
            assert (f.min_notional, f.max_notional) == (preset.min_notional, preset.max_notional)
            assert f.apply_min_to_market and not f.apply_max_to_market
            # The client's copy of the filters judges an order as the venue will.
            assert btc.check_order(limit_buy("ok", D("20000.00"))) == ()
            problems = btc.check_order(limit_buy("bad", D("20000.005")))
            assert [p.filter_type for p in problems] == ["PRICE_FILTER"]

            # The venue's rate limits are now the client's.
            assert {
                (r.type.value, r.interval.value, r.interval_num, r.limit) for r in info.rate_limits
            } == {(r.type, r.interval, r.interval_num, r.limit) for r in limits}
            assert client.rate_limits == info.rate_limits
            assert client.limiter is not None
            assert {w.name: w.limit for w in client.limiter.core.windows} == {
                "REQUEST_WEIGHT:1M": 1234,
                "ORDERS:10S": 77,
                "ORDERS:1D": 4321,
                "RAW_REQUESTS:5M": 9999,
            }


async def test_sync_time_applies_the_offset() -> None:
    """A local clock 7 s slow (beyond recvWindow) signs fine once the offset is measured."""
    skew_ms = -7_000

    def slow_clock() -> int:
        return wall_ms() + skew_ms

    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim, wall_clock_ms=slow_clock) as client:
            offset = await client.sync_time()
            assert offset == pytest.approx(-skew_ms, abs=500)
            assert client.time_offset_ms == offset
            account = await client.account()
            assert account.can_trade
            # Signed without a -1021 first: the offset was applied, not discovered by failing.
            assert client.snapshot()["time_resyncs"] == 0


async def test_depth_snapshot_matches_the_book() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            book = await client.depth(SYMBOL, limit=1000)
            state = (await sim.market())["symbols"][SYMBOL]
            assert book.symbol == SYMBOL and book.venue == "sim"
            assert book.last_update_id == state["lastUpdateId"] > 0
            assert book.bids[0][0] == D(state["bestBid"])
            assert book.asks[0][0] == D(state["bestAsk"])
            assert book.bids[0][0] < book.asks[0][0]
            assert [p for p, _ in book.bids] == sorted((p for p, _ in book.bids), reverse=True)
            assert [p for p, _ in book.asks] == sorted(p for p, _ in book.asks)
            assert len(book.bids) == len(book.asks) == 20  # the seeded depth_levels
            assert all(q > 0 for _, q in (*book.bids, *book.asks))
            top = await client.depth(SYMBOL, limit=5)
            assert top.bids == book.bids[:5] and top.asks == book.asks[:5]


async def test_recent_and_historical_trades_match_the_venue_record() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            ids: list[int] = []
            for side in ("BUY", "SELL", "BUY", "SELL"):
                ids += await sim.market_order(side, "0.03")
            assert len(ids) >= 12 and ids == list(range(ids[0], ids[0] + len(ids)))
            record = await venue_trades(sim, ids[0], ids[-1])
            assert [r[0] for r in record] == ids

            recent = await client.recent_trades(SYMBOL, limit=5)
            assert [trade_key(t) for t in recent] == record[-5:]
            for t in recent:
                assert t.quote_quantity == t.price * t.quantity
                assert t.event_time_ms is None

            # Page through historicalTrades with fromId: continuous, no overlap, no hole.
            pages: list[Trade] = []
            next_id = ids[0]
            while next_id <= ids[-1]:
                page = await client.historical_trades(SYMBOL, from_id=next_id, limit=4)
                assert page, f"no trades from id {next_id}"
                assert page[0].trade_id == next_id
                pages += page
                next_id = page[-1].trade_id + 1
            assert [trade_key(t) for t in pages] == record
            # fromId past the end is an empty page, not an error.
            assert await client.historical_trades(SYMBOL, from_id=ids[-1] + 1, limit=10) == []


async def test_order_lifecycle_and_balances() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            start = await client.account()
            assert start.balance("BTC").free == D("10") and start.balance("USDT").free == D(
                "1000000"
            )
            book = await client.depth(SYMBOL, limit=5)
            bid, ask = book.bids[0][0], book.asks[0][0]

            # LIMIT GTC below the bid: rests.
            resting = await client.new_order(limit_buy("lim-1", bid - D("100.00")))
            assert resting.status is VenueOrderStatus.NEW
            assert (resting.client_order_id, resting.symbol) == ("lim-1", SYMBOL)
            assert resting.executed_qty == 0 and resting.fills == ()
            assert resting.price == bid - D("100.00") and resting.orig_qty == D("0.01")
            # LIMIT_MAKER above the ask: rests too.
            maker = await client.new_order(limit_maker("mk-1", Side.SELL, ask + D("100.00")))
            assert maker.status is VenueOrderStatus.NEW and maker.type is OrderType.LIMIT_MAKER
            # MARKET: fills against the book, with the fills in the answer.
            taken = await client.new_order(market("mkt-1", Side.BUY, "0.02"))
            assert taken.status is VenueOrderStatus.FILLED
            assert taken.executed_qty == D("0.02")
            assert taken.fills, "a FULL answer lists the fills"
            assert sum(f.quantity for f in taken.fills) == D("0.02")
            assert taken.cumulative_quote_qty == sum(f.price * f.quantity for f in taken.fills)
            assert all(f.commission_asset == "BTC" for f in taken.fills)  # buyer pays in base
            assert all(f.commission == f.quantity * D("0.001") for f in taken.fills)
            assert all(f.price >= ask for f in taken.fills)
            fill_ids = [f.trade_id for f in taken.fills]
            record = await venue_trades(sim, fill_ids[0], fill_ids[-1])
            assert [r[0] for r in record] == fill_ids
            assert [(r[1], r[2]) for r in record] == [(f.price, f.quantity) for f in taken.fills]

            # Query by client order id and by venue order id: the same order.
            by_cid = await client.get_order(SYMBOL, client_order_id="lim-1")
            by_id = await client.get_order(SYMBOL, order_id=resting.order_id)
            assert by_cid == by_id
            assert by_cid.order_id == resting.order_id and by_cid.status is VenueOrderStatus.NEW
            filled = await client.get_order(SYMBOL, client_order_id="mkt-1")
            assert filled.status is VenueOrderStatus.FILLED and filled.executed_qty == D("0.02")

            assert {o.client_order_id for o in await client.open_orders(SYMBOL)} == {
                "lim-1",
                "mk-1",
            }
            assert {o.client_order_id for o in await client.open_orders()} == {"lim-1", "mk-1"}

            mine = await client.my_trades(SYMBOL)
            assert [t.trade_id for t in mine] == fill_ids
            assert all(t.is_buyer and not t.is_maker for t in mine)
            assert all(t.order_id == taken.order_id for t in mine)
            by_order = await client.my_trades(SYMBOL, order_id=taken.order_id)
            assert [t.trade_id for t in by_order] == fill_ids
            from_second = await client.my_trades(SYMBOL, from_id=fill_ids[1])
            assert [t.trade_id for t in from_second] == fill_ids[1:]
            last_one = await client.my_trades(SYMBOL, limit=1)
            assert [t.trade_id for t in last_one] == fill_ids[-1:]

            # Balances follow the fills and the locks, and agree with the venue's ledger.
            commission = sum(f.commission for f in taken.fills)
            spent = taken.cumulative_quote_qty
            assert spent is not None
            locked_usdt = resting.price * D("0.01")
            account = await client.account()
            btc, usdt = account.balance("BTC"), account.balance("USDT")
            assert btc.free == D("10") + D("0.02") - commission - D("0.01")
            assert btc.locked == D("0.01")  # the LIMIT_MAKER SELL
            assert usdt.free == D("1000000") - spent - locked_usdt
            assert usdt.locked == locked_usdt
            ledger = await sim.balances()
            assert {a.asset: (a.free, a.locked) for a in account.balances} == {
                asset: (v["free"], v["locked"]) for asset, v in ledger.items()
            }

            # Cancel by client id and by order id: the locks come back.
            canceled = await client.cancel_order(SYMBOL, client_order_id="lim-1")
            assert canceled.status is VenueOrderStatus.CANCELED
            assert canceled.order_id == resting.order_id
            canceled = await client.cancel_order(SYMBOL, order_id=maker.order_id)
            assert canceled.status is VenueOrderStatus.CANCELED
            assert await client.open_orders(SYMBOL) == []
            account = await client.account()
            assert account.balance("USDT").locked == 0 and account.balance("BTC").locked == 0
            assert account.balance("USDT").free == D("1000000") - spent
            assert len(await sim.audit()) == 3


async def test_other_order_shapes_and_response_types() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            # MARKET by quote amount: spends at most 100 USDT, in whole steps.
            by_quote = await client.new_order(
                NewOrder(
                    symbol=SYMBOL,
                    side=Side.BUY,
                    type=OrderType.MARKET,
                    client_order_id="quote-1",
                    quote_order_qty=D("100"),
                )
            )
            assert by_quote.status is VenueOrderStatus.FILLED
            assert by_quote.orig_quote_order_qty == D("100")
            assert by_quote.cumulative_quote_qty is not None
            assert 0 < by_quote.cumulative_quote_qty <= D("100")
            assert by_quote.executed_qty == sum(f.quantity for f in by_quote.fills) > 0

            # MARKET SELL: the seller pays its commission in the quote asset.
            sold = await client.new_order(market("sell-1", Side.SELL, "0.02"))
            assert sold.status is VenueOrderStatus.FILLED
            assert all(f.commission_asset == "USDT" for f in sold.fills)
            assert all(
                f.commission == (f.price * f.quantity * D("0.001")).quantize(D("1e-8"))
                for f in sold.fills
            )

            # IOC takes what the best level has and expires the rest; FOK all or nothing.
            ask, ask_qty = (await client.depth(SYMBOL, limit=5)).asks[0]
            ioc_order = NewOrder(
                symbol=SYMBOL,
                side=Side.BUY,
                type=OrderType.LIMIT,
                client_order_id="ioc-1",
                quantity=D("1"),
                price=ask,
                time_in_force=TimeInForce.IOC,
            )
            ioc = await client.new_order(ioc_order)
            assert ioc.status is VenueOrderStatus.EXPIRED
            assert ioc.executed_qty == ask_qty and ioc.time_in_force is TimeInForce.IOC
            fok_order = NewOrder(
                symbol=SYMBOL,
                side=Side.BUY,
                type=OrderType.LIMIT,
                client_order_id="fok-1",
                quantity=D("1"),
                price=ask + D("1.00"),
                time_in_force=TimeInForce.FOK,
            )
            fok = await client.new_order(fok_order)
            assert fok.status is VenueOrderStatus.EXPIRED
            assert fok.executed_qty == 0 and fok.fills == ()

            # ACK and RESULT answers parse too (less detail, same identity).
            price = await resting_price(client)
            ack = await client.new_order(limit_buy("ack-1", price), resp_type=OrderResponseType.ACK)
            assert (ack.client_order_id, ack.status, ack.fills) == ("ack-1", None, ())
            assert ack.time_ms is not None
            result = await client.new_order(market("res-1"), resp_type=OrderResponseType.RESULT)
            assert result.status is VenueOrderStatus.FILLED and result.fills == ()
            assert result.executed_qty == D("0.02")
            assert (
                await client.get_order(SYMBOL, client_order_id="ack-1")
            ).order_id == ack.order_id

            # A cancel named by its own client id still reports the *order's* client id.
            canceled = await client.cancel_order(
                SYMBOL, client_order_id="ack-1", new_client_order_id="cxl-1"
            )
            assert canceled.client_order_id == "ack-1" and canceled.order_id == ack.order_id
            assert canceled.status is VenueOrderStatus.CANCELED
            assert [o["clientOrderId"] for o in await sim.audit()] == [
                "quote-1", "sell-1", "ioc-1", "fok-1", "ack-1", "res-1"
            ]  # fmt: skip


async def test_client_and_venue_agree_on_every_endpoint_weight() -> None:
    """The client's own count of REQUEST_WEIGHT equals the venue's, endpoint by endpoint.

    Header corrections would hide an under-count, so none may have happened;
    an over-count would show as a larger local figure at the end.
    """
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(wall_clock=aligned_clock()) as sim, rest_client(sim) as client:
            await client.ping()
            await client.server_time()
            await client.exchange_info()
            limiter = client.limiter
            assert limiter is not None
            # (Installing the venue's limits carries the usage over, which counts as corrections.)
            installed = limiter.stats.corrections
            for limit in (5, 100, 101, 500, 501, 1000, 1001, 5000):
                await client.depth(SYMBOL, limit=limit)
            await client.recent_trades(SYMBOL, limit=10)
            await client.historical_trades(SYMBOL, from_id=1, limit=10)
            placed = await client.new_order(limit_buy("w-1", await resting_price(client)))
            await client.get_order(SYMBOL, client_order_id="w-1")
            await client.open_orders(SYMBOL)
            await client.open_orders()
            await client.cancel_order(SYMBOL, client_order_id="w-1")
            await client.my_trades(SYMBOL)
            await client.my_trades(SYMBOL, order_id=placed.order_id)
            await client.account()
            assert limiter.stats.corrections == installed
            local = limiter.used("REQUEST_WEIGHT:1M")
            probe = await sim.http.get("/api/v3/ping")
            assert local == int(probe.headers["X-MBX-USED-WEIGHT-1M"]) - 1
            assert local > 800  # the count above really ran


async def test_on_sent_is_called_once_when_the_request_is_written() -> None:
    """``on_sent`` fires when the request is on the wire, before the venue answers; a
    request the local limiter refuses is never written and never calls it."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim, limiter_max_wait_s=0.2) as client:
            await client.exchange_info()  # installs the venue's limits
            price = await resting_price(client)
            sent_at: list[float] = []
            placed = await client.new_order(
                limit_buy("ws-1", price), on_sent=lambda: sent_at.append(trio.current_time())
            )
            assert placed.client_order_id == "ws-1" and len(sent_at) == 1
            # The venue holds its answer: the callback comes when the request is written.
            await sim.arm(
                kind="rest_timeout",
                method="POST",
                path="/api/v3/order",
                phase="after",
                delay_s=0.5,
                count=1,
            )
            sent_at.clear()
            start = trio.current_time()
            await client.new_order(
                limit_buy("ws-2", price), on_sent=lambda: sent_at.append(trio.current_time())
            )
            answered = trio.current_time()
            assert len(sent_at) == 1
            assert sent_at[0] - start < 0.4 and answered - sent_at[0] >= 0.45
            # Refused locally: nothing is written.
            limiter = client.limiter
            assert limiter is not None
            limiter.freeze_for(5.0)
            called: list[bool] = []
            with pytest.raises(VenueRateLimitedError):
                await client.new_order(
                    limit_buy("ws-3", price), on_sent=lambda: called.append(True)
                )
            assert called == []
            assert await sim.audit("ws-3") == []


# =========================================================================== 2. error codes


async def test_duplicate_of_an_open_order_is_rejected_a_reuse_after_fill_is_a_new_order() -> None:
    """The danger of docs/ARCHITECTURE.md §4 Orders: ids are unique among *open* orders only."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            price = await resting_price(client)
            first = await client.new_order(limit_buy("open-1", price))
            with pytest.raises(DuplicateOrderError) as dup:
                await client.new_order(limit_buy("open-1", price))
            assert (dup.value.code, dup.value.venue_message) == (-2010, "Duplicate order sent.")
            assert dup.value.http_status == 400 and dup.value.endpoint == "POST /api/v3/order"
            assert [o["orderId"] for o in await sim.audit("open-1")] == [first.order_id]

            # A FILLED order frees its id: the "resend" is accepted as a second order.
            one = await client.new_order(market("fill-1"))
            two = await client.new_order(market("fill-1"))
            assert one.status is two.status is VenueOrderStatus.FILLED
            assert one.order_id != two.order_id
            audit = await sim.audit("fill-1")
            assert [o["orderId"] for o in audit] == [one.order_id, two.order_id]
            # The position doubled: two fills' worth of BTC were bought.
            mine = await client.my_trades(SYMBOL)
            assert {t.order_id for t in mine} == {one.order_id, two.order_id}
            # A query by that client id now answers with the latest order only.
            assert (await client.get_order(SYMBOL, client_order_id="fill-1")).order_id == (
                two.order_id
            )

            # A CANCELED order frees its id as well.
            await client.cancel_order(SYMBOL, client_order_id="open-1")
            again = await client.new_order(limit_buy("open-1", price))
            assert again.order_id != first.order_id
            assert len(await sim.audit("open-1")) == 2


async def test_rejects_for_balance_would_take_and_filters() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            book = await client.depth(SYMBOL, limit=5)
            bid, ask = book.bids[0][0], book.asks[0][0]

            # 100 BTC at 20 000: within every filter, beyond the 1 000 000 USDT balance.
            with pytest.raises(OrderRejectedError) as poor:
                await client.new_order(limit_buy("poor", D("20000.00"), qty="100"))
            assert type(poor.value) is OrderRejectedError
            assert poor.value.code == -2010
            assert poor.value.venue_message == (
                "Account has insufficient balance for requested action."
            )

            with pytest.raises(OrderRejectedError) as taker:
                await client.new_order(limit_maker("taker", Side.BUY, ask))
            assert type(taker.value) is OrderRejectedError
            assert (taker.value.code, taker.value.venue_message) == (
                -2010,
                "Order would immediately match and take.",
            )

            cases = [
                ("PRICE_FILTER", limit_buy("f-price", bid - D("100.005"))),  # off the 0.01 tick
                ("LOT_SIZE", limit_buy("f-lot", bid - D("100"), qty="0.000015")),  # off the step
                ("NOTIONAL", limit_buy("f-notional", D("20000.00"), qty="0.0001")),  # 2 < 5 USDT
            ]
            for filter_type, order in cases:
                with pytest.raises(FilterFailureError) as failed:
                    await client.new_order(order)
                assert failed.value.filter_type == filter_type
                assert failed.value.code == -1013
                assert failed.value.venue_message == f"Filter failure: {filter_type}"
                assert failed.value.http_status == 400
            assert await sim.audit() == []  # nothing was accepted


async def test_price_bands_by_side_are_served_parsed_and_enforced_alike() -> None:
    """PERCENT_PRICE_BY_SIDE end to end: the venue serves its bands, the client parses them,
    and the client's own check refuses exactly what the venue refuses."""
    bands = PercentPriceBySideConfig(
        bid_multiplier_up=D("1.2"),
        bid_multiplier_down=D("0.5"),
        ask_multiplier_up=D("2"),
        ask_multiplier_down=D("0.8"),
        avg_price_mins=1,
    )
    symbol = attrs.evolve(SYMBOL_PRESETS[SYMBOL], percent_price_by_side=bands)
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config(symbols=(symbol,))) as sim,
            rest_client(sim) as client,
        ):
            btc = (await client.exchange_info()).symbol(SYMBOL)
            f = btc.filters
            assert (f.bid_multiplier_down, f.bid_multiplier_up) == (D("0.5"), D("1.2"))
            assert (f.ask_multiplier_down, f.ask_multiplier_up) == (D("0.8"), D("2"))
            assert f.percent_price_by_side_avg_mins == 1
            assert f.multiplier_up is None and f.multiplier_down is None  # no PERCENT_PRICE

            # Someone trades, so the venue's reference is a price the client can read.
            await sim.market_order("BUY", "0.001")
            (last,) = await client.recent_trades(SYMBOL, limit=1)
            reference = last.price
            tick = f.tick_size
            assert tick is not None

            def sell(cid: str, price: Decimal) -> NewOrder:
                return attrs.evolve(limit_buy(cid, price), side=Side.SELL)

            # Inside the bands (on the edge, rounded inwards) the order rests; one
            # tick beyond, the venue refuses it and the client's check says why.
            low_buy = btc.round_price(reference * D("0.5"), ROUND_UP)
            high_sell = btc.round_price(reference * D("2"), ROUND_DOWN)
            refused = [
                (limit_buy("b-high", btc.round_price(reference * D("1.2")) + tick), "ABOVE"),
                (limit_buy("b-low", low_buy - tick), "BELOW"),
                (sell("s-high", high_sell + tick), "ABOVE"),
                (sell("s-low", btc.round_price(reference * D("0.8"), ROUND_UP) - tick), "BELOW"),
            ]
            for order, where in refused:
                problems = btc.check_order(order, reference_price=reference)
                assert [(p.code, p.filter_type) for p in problems] == [
                    (f"PRICE_{where}_BAND", "PERCENT_PRICE_BY_SIDE")
                ], order
                with pytest.raises(FilterFailureError) as failed:
                    await client.new_order(order)
                assert failed.value.filter_type == "PERCENT_PRICE_BY_SIDE"
                assert failed.value.code == -1013
                assert failed.value.venue_message == "Filter failure: PERCENT_PRICE_BY_SIDE"
            assert await sim.audit() == []

            accepted = [limit_buy("b-edge", low_buy), sell("s-edge", high_sell)]
            for order in accepted:
                assert btc.check_order(order, reference_price=reference) == ()
                answer = await client.new_order(order)
                assert answer.status is VenueOrderStatus.NEW  # resting, far from the touch
            assert [o["clientOrderId"] for o in await sim.audit()] == ["b-edge", "s-edge"]


async def test_not_found_and_cancel_rejected() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            with pytest.raises(OrderNotFoundError) as by_cid:
                await client.get_order(SYMBOL, client_order_id="never-sent")
            assert (by_cid.value.code, by_cid.value.venue_message) == (
                -2013,
                "Order does not exist.",
            )
            with pytest.raises(OrderNotFoundError):
                await client.get_order(SYMBOL, order_id=987654)

            with pytest.raises(CancelRejectedError) as unknown:
                await client.cancel_order(SYMBOL, client_order_id="never-sent")
            assert (unknown.value.code, unknown.value.venue_message) == (
                -2011,
                "Unknown order sent.",
            )
            # -2011 is not proof of absence: a FILLED order cannot be canceled either.
            filled = await client.new_order(market("done-1"))
            with pytest.raises(CancelRejectedError) as closed:
                await client.cancel_order(SYMBOL, client_order_id="done-1")
            assert closed.value.code == -2011
            found = await client.get_order(SYMBOL, client_order_id="done-1")
            assert found.order_id == filled.order_id and found.status is VenueOrderStatus.FILLED
            assert len(await sim.audit()) == 1


async def test_wrong_secret_and_unknown_key() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim:
            async with rest_client(sim, api_secret=secret("not-the-secret")) as client:
                with pytest.raises(SignatureError) as bad_sig:
                    await client.new_order(market("sig-1"))
                assert (bad_sig.value.code, bad_sig.value.venue_message) == (
                    -1022,
                    "Signature for this request is not valid.",
                )
                with pytest.raises(SignatureError):
                    await client.account()
                # Messages and fields never carry the key, the secret or a signature.
                assert "not-the-secret" not in str(bad_sig.value)
                assert DOCS_API_KEY not in str(bad_sig.value)
            async with rest_client(sim, api_key=secret("not-a-key-format")) as client:
                with pytest.raises(ApiKeyRejectedError) as bad_format:
                    await client.account()
                assert (bad_format.value.code, bad_format.value.venue_message) == (
                    -2014,
                    "API-key format invalid.",
                )
            async with rest_client(sim, api_key=secret("unknownKey123")) as client:
                with pytest.raises(ApiKeyRejectedError) as bad_key:
                    await client.account()
                assert bad_key.value.code == -2015 and bad_key.value.http_status == 401
                assert bad_key.value.venue_message == (
                    "Invalid API-key, IP, or permissions for action."
                )
            assert await sim.audit() == []


async def test_firewall_403_and_other_codes_are_permanent() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            await client.sync_time()
            await sim.arm(
                kind="rest_error", status=403, body="<html>Request blocked (WAF)</html>", count=1
            )
            before = await sim.requests()
            with pytest.raises(ForbiddenError) as waf:
                await client.account()
            assert waf.value.http_status == 403 and waf.value.code is None
            assert waf.value.venue_message == "<html>Request blocked (WAF)</html>"
            assert await sim.requests() - before == 1  # permanent: not retried
            # Any other venue code: a plain (permanent) reject that keeps code and message.
            with pytest.raises(VenueRejectedError) as invalid:
                await client.open_orders("NOPEUSDT")
            assert type(invalid.value) is VenueRejectedError
            assert (invalid.value.code, invalid.value.venue_message) == (-1121, "Invalid symbol.")


@pytest.mark.parametrize("jump_ms", [+10_000, -10_000])
async def test_clock_jump_is_cured_by_one_resync(jump_ms: int) -> None:
    """-1021 after the local clock jumped: re-sync, resend once, exactly one order."""
    jump = [0]

    def clock() -> int:
        return wall_ms() + jump[0]

    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim, wall_clock_ms=clock) as client:
            await client.sync_time()
            jump[0] = jump_ms
            before = await sim.requests()
            report = await client.new_order(market("jumped-1"))
            assert report.status is VenueOrderStatus.FILLED
            # POST (-1021), GET /api/v3/time, POST again: nothing more.
            assert await sim.requests() - before == 3
            assert client.snapshot()["time_resyncs"] == 1
            assert len(await sim.audit("jumped-1")) == 1
            assert client.time_offset_ms == pytest.approx(-jump_ms, abs=500)


@pytest.mark.parametrize(
    ("step_ms", "message"),
    [
        (+10_000, "Timestamp for this request was 1000ms ahead of the server's time."),
        (-10_000, "Timestamp for this request is outside of the recvWindow."),
    ],
)
async def test_runaway_clock_is_not_cured_and_not_retried_forever(
    step_ms: int, message: str
) -> None:
    """A clock that moves 10 s per reading cannot be synced: one resync, then -1021 surfaces."""
    readings = itertools.count()
    base = wall_ms()

    def runaway() -> int:
        return base + next(readings) * step_ms

    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim, wall_clock_ms=runaway) as client:
            before = await sim.requests()
            with pytest.raises(TimestampOutOfWindowError) as info:
                await client.new_order(market("runaway-1"))
            assert (info.value.code, info.value.venue_message) == (-1021, message)
            # time, POST (-1021), time, POST (-1021): one resync, one resend, then give up.
            assert await sim.requests() - before == 4
            assert client.snapshot()["time_resyncs"] == 1
            assert await sim.audit() == []


# --------------------------------------------------------------------------- rate limits


async def test_used_weight_headers_correct_the_client_limiter() -> None:
    """Another user on the same IP spends weight; the X-MBX-USED-WEIGHT header tells the client."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(wall_clock=aligned_clock()) as sim, rest_client(sim) as client:
            await client.exchange_info()
            limiter = client.limiter
            assert limiter is not None
            assert limiter.used("REQUEST_WEIGHT:1M") == 20
            for _ in range(5):  # the neighbour: 5 x exchangeInfo = 100 weight
                assert (await sim.http.get("/api/v3/exchangeInfo")).status_code == 200
            await client.ping()
            assert limiter.used("REQUEST_WEIGHT:1M") == 20 + 100 + 1
            assert limiter.stats.corrections >= 1


async def test_weight_overflow_1003_freezes_until_retry_after_without_storm() -> None:
    """A real -1003 (weight spent by a neighbour): the client stops until Retry-After."""
    limits = (RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, 60), *DEFAULT_RATE_LIMITS[1:])
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config(rate_limits=limits), wall_clock=aligned_clock()) as sim,
            rest_client(sim, limiter_max_wait_s=0.2) as client,
        ):
            await client.exchange_info()  # 20 of 60
            assert (await sim.http.get("/api/v3/exchangeInfo")).status_code == 200
            assert (await sim.http.get("/api/v3/exchangeInfo")).status_code == 200
            before = await sim.requests()
            with pytest.raises(RetryExhaustedError) as exhausted:
                await client.depth(SYMBOL, limit=5)  # 5 more: over 60
            assert exhausted.value.reason == "retry_after_exceeds_budget"
            assert exhausted.value.attempts == 1
            error = exhausted.value.last_error
            assert isinstance(error, VenueRateLimitedError)
            assert (error.http_status, error.code, error.banned) == (429, -1003, False)
            assert error.venue_message is not None
            assert "current limit is 60 request weight per 1 MINUTE" in error.venue_message
            # Retry-After is the rest of the venue's minute (the clock started at its start).
            assert error.retry_after_s is not None and 50 <= error.retry_after_s <= 60
            assert exhausted.value.retry_after_s == error.retry_after_s
            limiter = client.limiter
            assert limiter is not None and limiter.frozen_until is not None
            assert limiter.frozen_until - trio.current_time() >= 45

            # Frozen: nothing else is sent (so the venue sees no violation, and bans no one).
            calls: list[Callable[[], Awaitable[object]]] = [
                client.ping,
                partial(client.depth, SYMBOL, limit=5),
                client.account,
            ]
            for call in calls:
                with pytest.raises((VenueRateLimitedError, RetryExhaustedError)) as held:
                    await call()
                local = held.value
                if isinstance(local, RetryExhaustedError):
                    local = local.last_error  # type: ignore[assignment]
                assert isinstance(local, VenueRateLimitedError)
                assert local.http_status is None
            assert await sim.requests() - before == 1
            assert (await sim.http.get("/api/v3/ping")).status_code == 429  # not 418


async def test_429_retry_after_freezes_the_client_and_no_storm_follows() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            await client.ping()
            await sim.arm(kind="rate_limit_burst", retry_after_s=2, count=1, path="/api/v3/depth")
            before = await sim.requests()
            limiter = client.limiter
            assert limiter is not None
            done_at: list[float] = []

            async def ping_during_freeze() -> None:
                await client.ping()
                done_at.append(trio.current_time())

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.depth, SYMBOL)
                while limiter.frozen_until is None:  # noqa: ASYNC110 - no event to wait on
                    await trio.sleep(0.005)
                frozen_until = limiter.frozen_until
                assert frozen_until == pytest.approx(started + 2.0, abs=0.5)
                for _ in range(5):
                    nursery.start_soon(ping_during_freeze)
                await trio.sleep(0.3)
                # Frozen: only the request that drew the 429 reached the venue.
                assert await sim.requests() - before == 1
            # Every held call went out after the freeze, and was answered without a 429.
            assert all(t >= frozen_until for t in done_at) and len(done_at) == 5
            assert await sim.requests() - before == 1 + 1 + 5
            snap = client.snapshot()
            assert snap["freezes"] == 1
            assert snap["retries"]["retries"] == 1


async def test_418_ban_is_surfaced_and_the_client_stops_sending() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config(limits=LimitsConfig(ban_s=120.0))) as sim,
            rest_client(sim, limiter_max_wait_s=0.2) as client,
        ):
            await client.sync_time()
            # Someone on the same IP ignores a 429 until the venue bans the IP.
            await sim.arm(kind="rate_limit_burst", retry_after_s=30, count=1)
            statuses = [(await sim.http.get("/api/v3/ping")).status_code for _ in range(4)]
            assert statuses == [429, 429, 429, 418]
            before = await sim.requests()

            with pytest.raises(VenueRateLimitedError) as banned:
                await client.new_order(market("banned-1"))
            error = banned.value
            assert (error.http_status, error.code, error.banned) == (418, -1003, True)
            assert error.retry_after_s is not None and 100 <= error.retry_after_s <= 120
            assert error.venue_message is not None and "banned" in error.venue_message
            limiter = client.limiter
            assert limiter is not None and limiter.frozen_until is not None
            assert limiter.frozen_until - trio.current_time() >= 100

            # Held locally: not sent, so the ban is not extended.
            with pytest.raises(VenueRateLimitedError) as local:
                await client.ping()
            assert local.value.http_status is None and local.value.retry_after_s is not None
            with pytest.raises(VenueRateLimitedError):
                await client.new_order(market("banned-2"))
            assert await sim.requests() - before == 1
            assert await sim.audit() == []


async def test_new_order_during_a_ban_raises_the_documented_rate_limit_error() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            await sim.arm(kind="rate_limit_burst", retry_after_s=30, count=1)
            statuses = [(await sim.http.get("/api/v3/ping")).status_code for _ in range(4)]
            assert statuses == [429, 429, 429, 418]
            # The client has not synced its clock yet: new_order does it first.
            with pytest.raises(RateLimitedError) as refused:
                await client.new_order(market("ban-first-1"))
            assert isinstance(refused.value, VenueRateLimitedError)
            assert refused.value.banned
            assert await sim.audit() == []


async def test_order_count_limit_1015_and_header_correction() -> None:
    limits = (
        RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, 6000),
        RateLimitConfig("ORDERS", "DAY", 1, 3),
    )
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config(rate_limits=limits), wall_clock=aligned_clock()) as sim,
            rest_client(sim, limiter_max_wait_s=0.2) as client,
        ):
            # Binance's default ORDERS limits until exchangeInfo is read: far above 3.
            price = await resting_price(client)
            for i in range(3):
                await client.new_order(limit_buy(f"cnt-{i}", price))
            with pytest.raises(VenueRateLimitedError) as over:
                await client.new_order(limit_buy("cnt-3", price))
            error = over.value
            assert (error.http_status, error.code, error.retry_after_s) == (429, -1015, None)
            assert error.venue_message is not None
            assert error.venue_message.startswith("Too many new orders")
            assert len(await sim.audit()) == 3

            # exchangeInfo installs ORDERS 3/day; the X-MBX-ORDER-COUNT-1D header said 3.
            await client.exchange_info()
            limiter = client.limiter
            assert limiter is not None
            assert limiter.used("ORDERS:1D") >= 3
            before = await sim.requests()
            with pytest.raises(VenueRateLimitedError) as held:
                await client.new_order(limit_buy("cnt-4", price))
            assert held.value.http_status is None  # refused locally: never sent
            assert await sim.requests() == before
            await client.ping()  # other requests still go
            assert len(await sim.audit()) == 3


# --------------------------------------------------------------------------- outcome unknown


OUTCOME_UNKNOWN_FAULTS = [
    pytest.param(
        {"kind": "rest_unknown", "phase": "after"},
        (408, -1007, "Timeout waiting for response from backend server. Send status unknown; "
         "execution status unknown."),
        id="-1007",
    ),
    pytest.param(
        {"kind": "rest_error", "phase": "after", "code": -1006, "status": 400,
         "msg": "An unexpected response was received from the message bus. "
                "Execution status unknown."},
        (400, -1006, "An unexpected response was received from the message bus. "
         "Execution status unknown."),
        id="-1006-decides-without-5xx",
    ),
    pytest.param(
        {"kind": "rest_error", "phase": "after"},
        (503, -1000, "Unknown error, please check your request or try again later."),
        id="503",
    ),
    pytest.param(
        {"kind": "rest_error", "phase": "after", "status": 502,
         "body": "<html><body>502 Bad Gateway</body></html>"},
        (502, None, "<html><body>502 Bad Gateway</body></html>"),
        id="502-html",
    ),
    pytest.param(
        {"kind": "rest_timeout", "phase": "after", "delay_s": 2.5},
        (None, None, None),
        id="timeout",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "seen"), OUTCOME_UNKNOWN_FAULTS)
async def test_order_outcome_unknown_after_processing(
    fault: dict[str, Any], seen: tuple[int | None, int | None, str | None]
) -> None:
    """The order exists although the client saw an error; it was sent once; a query finds it."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim, request_timeout_s=1.0) as client:
            await client.sync_time()
            await sim.arm(**fault, method="POST", path="/api/v3/order", count=1)
            before = await sim.requests()
            with pytest.raises(VenueOutcomeUnknownError) as unknown:
                await client.new_order(market("amb-1"))
            error = unknown.value
            assert (error.http_status, error.code, error.venue_message) == seen
            assert error.endpoint == "POST /api/v3/order"
            # Not resent by the client: one request, one accepted order.
            assert await sim.requests() - before == 1
            audit = await sim.audit("amb-1")
            assert len(audit) == 1
            # The reconciler's question, answered by the venue: it exists, and it filled.
            found = await client.get_order(SYMBOL, client_order_id="amb-1")
            assert found.order_id == audit[0]["orderId"]
            assert found.status is VenueOrderStatus.FILLED
            assert client.retry_policy.stats.snapshot()["retries"] == 0


async def test_cancel_5xx_after_processing_is_outcome_unknown() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            placed = await client.new_order(limit_buy("cxl-amb", await resting_price(client)))
            await sim.arm(kind="rest_error", phase="after", method="DELETE", count=1)
            before = await sim.requests()
            with pytest.raises(VenueOutcomeUnknownError) as unknown:
                await client.cancel_order(SYMBOL, client_order_id="cxl-amb")
            assert unknown.value.endpoint == "DELETE /api/v3/order"
            assert await sim.requests() - before == 1  # a cancel is never resent blindly either
            found = await client.get_order(SYMBOL, client_order_id="cxl-amb")
            assert found.order_id == placed.order_id
            assert found.status is VenueOrderStatus.CANCELED  # it did take effect


async def test_order_5xx_before_processing_absence_is_proven_then_resend() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            await sim.arm(kind="rest_error", phase="before", method="POST", count=1)
            with pytest.raises(VenueOutcomeUnknownError) as unknown:
                await client.new_order(market("pre-1"))
            assert unknown.value.http_status == 503  # the client cannot tell before from after
            assert await sim.audit("pre-1") == []
            with pytest.raises(OrderNotFoundError):
                await client.get_order(SYMBOL, client_order_id="pre-1")
            # Absence proven: a resend under the same id is safe, and makes exactly one order.
            report = await client.new_order(market("pre-1"))
            assert report.status is VenueOrderStatus.FILLED
            assert len(await sim.audit("pre-1")) == 1


async def test_query_5xx_is_retried_boundedly() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim, retry_max_attempts=3) as client:
            await sim.arm(kind="rest_error", path="/api/v3/depth", count=2)
            before = await sim.requests()
            book = await client.depth(SYMBOL, limit=5)
            assert len(book.bids) == 5
            assert await sim.requests() - before == 3

            await sim.arm(kind="rest_error", path="/api/v3/depth", count=5)
            before = await sim.requests()
            with pytest.raises(RetryExhaustedError) as exhausted:
                await client.depth(SYMBOL, limit=5)
            assert exhausted.value.attempts == 3
            last = exhausted.value.last_error
            assert isinstance(last, VenueUnavailableError)
            assert (last.http_status, last.code) == (503, -1001)
            assert await sim.requests() - before == 3


async def test_query_timeout_is_retried() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim, request_timeout_s=1.0) as client:
            await sim.arm(kind="rest_timeout", delay_s=3.0, path="/api/v3/depth", count=1)
            before = await sim.requests()
            book = await client.depth(SYMBOL, limit=5)
            assert len(book.asks) == 5
            assert await sim.requests() - before == 2
            assert client.retry_policy.stats.snapshot()["retries"] == 1


async def test_order_invisible_first_query_says_absent_then_it_appears() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            price = await resting_price(client)
            await sim.arm(kind="order_invisible", delay_s=2.0, count=1)
            placed_at = trio.current_time()
            report = await client.new_order(limit_buy("late-1", price))
            assert report.status is VenueOrderStatus.NEW
            assert len(await sim.audit("late-1")) == 1  # the venue has it…

            with pytest.raises(OrderNotFoundError) as absent:  # …but says it does not
                await client.get_order(SYMBOL, client_order_id="late-1")
            assert absent.value.code == -2013
            assert await client.open_orders(SYMBOL) == []

            # A reconciler must allow for the lag: query again until the venue catches up.
            while True:
                try:
                    found = await client.get_order(SYMBOL, client_order_id="late-1")
                    break
                except OrderNotFoundError:
                    await trio.sleep(0.05)
            assert trio.current_time() - placed_at >= 1.9
            assert found.order_id == report.order_id and found.status is VenueOrderStatus.NEW
            assert [o.order_id for o in await client.open_orders(SYMBOL)] == [report.order_id]
            assert len(await sim.audit("late-1")) == 1


# =========================================================================== 4. streams


async def test_trade_stream_is_sequential_and_matches_the_venue_record() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config(market=LIVE)) as sim:
            config = client_config(sim)
            async with running_stream(config, [TRADE_STREAM]) as (stream, receive):
                connected = await next_event(receive, StreamConnected)
                assert connected.connection_number == 1 and not connected.reconnect
                assert connected.url == f"{sim.ws_url}/ws/btcusdt@trade"
                trades = await trades_until(receive, lambda ts: len(ts) >= 40)
            assert_sequential(trades)
            assert all(t.venue == "sim" and t.symbol == SYMBOL for t in trades)
            assert all(t.event_time_ms is not None and t.event_time_ms >= t.trade_time_ms
                       for t in trades)  # fmt: skip
            record = await venue_trades(sim, trades[0].trade_id, trades[-1].trade_id)
            assert [trade_key(t) for t in trades] == record
            assert stream.stats.malformed == 0 and stream.stats.connections == 1


class LocalBook:
    """A local order book kept by Binance's documented diff-depth procedure."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.last_u = -1
        self.fresh = True  # no update applied since the snapshot
        self.applied = 0

    def load(self, snapshot: DepthSnapshot) -> None:
        self.bids, self.asks = dict(snapshot.bids), dict(snapshot.asks)
        self.last_u = snapshot.last_update_id
        self.fresh = True
        self.applied = 0

    def offer(self, update: DepthUpdate) -> DepthContinuity:
        """Apply ``update`` if it continues the book; say what it was."""
        verdict = classify_depth_update(self.last_u, update, after_snapshot=self.fresh)
        assert depth_continuous(self.last_u, update, after_snapshot=self.fresh) is (
            verdict is DepthContinuity.APPLY
        )
        if verdict is DepthContinuity.APPLY:
            for side, levels in ((self.bids, update.bids), (self.asks, update.asks)):
                for price, qty in levels:
                    if qty == 0:
                        side.pop(price, None)
                    else:
                        side[price] = qty
            self.last_u = update.final_update_id
            self.fresh = False
            self.applied += 1
        return verdict

    def equals(self, snapshot: DepthSnapshot) -> bool:
        return (
            sorted(self.bids.items(), reverse=True) == list(snapshot.bids)
            and sorted(self.asks.items()) == list(snapshot.asks)
            and self.last_u == snapshot.last_update_id
        )


async def next_depth(
    receive: trio.MemoryReceiveChannel[StreamEvent], others: list[StreamEvent]
) -> DepthUpdate:
    """The next depth update; connection events and malformed frames go to ``others``."""
    while True:
        event = await receive.receive()
        if isinstance(event, DepthUpdate):
            return event
        assert not isinstance(event, Trade), event
        others.append(event)


async def synchronise(
    client: BinanceRestClient,
    receive: trio.MemoryReceiveChannel[StreamEvent],
    book: LocalBook,
    first: DepthUpdate,
    others: list[StreamEvent],
) -> None:
    """Binance's steps: ``first`` is the oldest buffered update; snapshot until the snapshot
    is not older than it, drop what the snapshot already contains, then the first update
    applied must straddle ``lastUpdateId + 1``."""
    snapshot = await client.depth(SYMBOL, limit=1000)  # the whole book (<= 1000 levels)
    while snapshot.last_update_id < first.first_update_id:
        snapshot = await client.depth(SYMBOL, limit=1000)
    book.load(snapshot)
    update = first
    while (verdict := book.offer(update)) is DepthContinuity.STALE:
        update = await next_depth(receive, others)
    assert verdict is DepthContinuity.APPLY, (snapshot.last_update_id, update)


async def follow(
    receive: trio.MemoryReceiveChannel[StreamEvent],
    book: LocalBook,
    others: list[StreamEvent],
    done: Callable[[], bool],
) -> DepthUpdate | None:
    """Apply updates until ``done()``; returns the first update that breaks the chain."""
    while not done():
        update = await next_depth(receive, others)
        verdict = book.offer(update)
        assert verdict is not DepthContinuity.STALE, "no stale update after the first applied"
        if verdict is DepthContinuity.GAP:
            return update
    return None


async def freeze_and_compare(
    sim: SimHarness,
    client: BinanceRestClient,
    receive: trio.MemoryReceiveChannel[StreamEvent],
    book: LocalBook,
    others: list[StreamEvent],
) -> None:
    """Pause the market; the stream must bring the local book exactly to the venue's."""
    state = await sim.set_market(paused=True)
    final_u = state["symbols"][SYMBOL]["lastUpdateId"]
    assert await follow(receive, book, others, lambda: book.last_u >= final_u) is None
    venue = await client.depth(SYMBOL, limit=1000)
    assert venue.last_update_id == final_u
    assert book.equals(venue)


async def test_depth_stream_keeps_a_local_book_equal_to_the_venue() -> None:
    """Binance's procedure: buffer the diff stream, snapshot, drop stale, chain U/u."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config(market=LIVE)) as sim, rest_client(sim) as client:
            config = client_config(sim)
            async with running_stream(config, [DEPTH_STREAM]) as (_stream, receive):
                await next_event(receive, StreamConnected)
                await sim.wait_for_stream_connections(1)
                others: list[StreamEvent] = []
                book = LocalBook()
                first = await next_depth(receive, others)
                await synchronise(client, receive, book, first, others)
                assert await follow(receive, book, others, lambda: book.applied >= 15) is None
                await freeze_and_compare(sim, client, receive, book, others)
                assert others == []


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(
            {"kind": "ws_drop", "probability": 0.999999, "count": 1},
            [StreamDisconnected, StreamConnected],
            id="ws_drop",
        ),
        pytest.param(
            {"kind": "ws_malformed", "every_n": 1, "count": 1, "replace": True},
            [MalformedFrame],
            id="ws_malformed-replace",
        ),
    ],
)
async def test_depth_gap_under_a_fault_is_detected_and_the_book_resynced(
    fault: dict[str, Any], expected: list[type[Any]]
) -> None:
    """A lost diff breaks the U/u chain: detected at the next update, cured by a new snapshot."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config(market=LIVE)) as sim, rest_client(sim) as client:
            config = client_config(sim)
            async with running_stream(config, [DEPTH_STREAM]) as (_stream, receive):
                await next_event(receive, StreamConnected)
                await sim.wait_for_stream_connections(1)
                others: list[StreamEvent] = []
                book = LocalBook()
                await synchronise(client, receive, book, await next_depth(receive, others), others)
                assert await follow(receive, book, others, lambda: book.applied >= 5) is None

                await sim.arm(**fault, stream=DEPTH_STREAM)
                gap = await follow(receive, book, others, lambda: False)
                assert gap is not None and gap.first_update_id > book.last_u + 1
                assert [type(e) for e in others] == expected
                if isinstance(others[-1], StreamConnected):
                    assert others[-1].reconnect

                # Binance: a gap invalidates the book; start over from a new snapshot.
                await synchronise(client, receive, book, gap, others)
                assert await follow(receive, book, others, lambda: book.applied >= 5) is None
                await freeze_and_compare(sim, client, receive, book, others)
                assert [type(e) for e in others] == expected


async def test_ws_drop_gap_is_detected_and_backfilled_exactly() -> None:
    """A drop loses the trades published meanwhile; trade ids show the gap; REST fills it."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            config = client_config(sim)
            async with running_stream(config, [TRADE_STREAM]) as (stream, receive):
                await next_event(receive, StreamConnected)
                await sim.wait_for_stream_connections(1)
                ids_a = await sim.market_order("BUY", "0.02")
                before = await trades_until(receive, lambda ts: len(ts) == len(ids_a))
                assert [t.trade_id for t in before] == ids_a

                # The next message kills the connection (and is lost with those behind it).
                await sim.arm(kind="ws_drop", probability=0.999999, count=1, stream=TRADE_STREAM)
                ids_b = await sim.market_order("SELL", "0.02")
                assert ids_b and ids_b[0] == ids_a[-1] + 1
                dropped = await next_event(receive, StreamDisconnected)
                assert dropped.reason is DisconnectReason.CLOSED and dropped.connection_number == 1
                again = await next_event(receive, StreamConnected)
                assert again.reconnect and again.connection_number == 2
                await sim.wait_for_stream_connections(1)

                ids_c = await sim.market_order("BUY", "0.02")
                after = await trades_until(receive, lambda ts: len(ts) == len(ids_c))
                assert [t.trade_id for t in after] == ids_c
            gap = trade_gap(before[-1].trade_id, after[0].trade_id)
            assert list(gap) == ids_b
            filled = await backfill_gaps(client, [*before, *after])
            union = sorted([*before, *filled, *after], key=lambda t: t.trade_id)
            assert [trade_key(t) for t in union] == await venue_trades(sim, ids_a[0], ids_c[-1])
            assert stream.stats.disconnects == {"closed": 1}


async def test_ws_drop_on_a_live_market_reconnects_and_backfill_completes_the_record() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config(market=LIVE)) as sim, rest_client(sim) as client:
            config = client_config(sim, reconnect_initial_s=0.1)
            async with running_stream(config, [TRADE_STREAM]) as (stream, receive):
                await next_event(receive, StreamConnected)
                await sim.arm(kind="ws_drop", every_s=0.3, count=2, stream=TRADE_STREAM)
                trades, others = await until_connection_delivers(receive, 3, trades_after=10)
            assert [type(e) for e in others] == [
                StreamDisconnected,
                StreamConnected,
                StreamDisconnected,
                StreamConnected,
            ]
            assert all(
                e.reason is DisconnectReason.CLOSED
                for e in others
                if isinstance(e, StreamDisconnected)
            )
            assert [e.connection_number for e in others if isinstance(e, StreamConnected)] == [2, 3]
            ids = [t.trade_id for t in trades]
            assert ids == sorted(set(ids)), "no duplicate, no reordering within the stream"
            filled = await backfill_gaps(client, trades)
            union = sorted([*trades, *filled], key=lambda t: t.trade_id)
            assert [trade_key(t) for t in union] == await venue_trades(sim, ids[0], ids[-1])
            assert stream.stats.connections == 3


async def test_ws_malformed_frames_are_surfaced_and_the_stream_goes_on() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim, rest_client(sim) as client:
            config = client_config(sim)
            async with running_stream(config, [TRADE_STREAM]) as (stream, receive):
                await next_event(receive, StreamConnected)
                await sim.wait_for_stream_connections(1)
                # Every 2nd message is preceded by a truncated copy of itself.
                await sim.arm(kind="ws_malformed", every_n=2, count=2, stream=TRADE_STREAM)
                ids = await sim.market_order("BUY", "0.06")
                assert len(ids) >= 4
                events: list[StreamEvent] = []
                trades = await trades_until(receive, lambda ts: len(ts) == len(ids), events)
                assert [t.trade_id for t in trades] == ids  # nothing lost, nothing reordered
                bad = [e for e in events if isinstance(e, MalformedFrame)]
                assert len(bad) == 2 and len(events) == 2
                assert [e.malformed_total for e in bad] == [1, 2]
                assert all(e.connection_number == 1 and isinstance(e.raw, str) for e in bad)
                assert all(e.raw.startswith('{"e":"trade"') for e in bad if isinstance(e.raw, str))

                # Sent *instead* of the message: the trade is lost on the stream, a gap shows.
                await sim.arm(kind="ws_malformed", every_n=1, count=1, replace=True)
                ids2 = await sim.market_order("SELL", "0.03")
                assert len(ids2) >= 2
                replaced = await next_event(receive, MalformedFrame)
                assert replaced.malformed_total == 3
                rest = await trades_until(receive, lambda ts: len(ts) == len(ids2) - 1)
                assert [t.trade_id for t in rest] == ids2[1:]
            assert list(trade_gap(trades[-1].trade_id, rest[0].trade_id)) == [ids2[0]]
            filled = await backfill_gaps(client, [*trades, *rest])
            assert [t.trade_id for t in filled] == [ids2[0]]
            assert stream.stats.connections == 1 and stream.stats.malformed == 3


async def test_ws_stall_is_detected_as_stale_and_the_stream_recovers() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config(market=LIVE)) as sim, rest_client(sim) as client:
            config = client_config(sim, stale_after_s=0.4)
            async with running_stream(config, [TRADE_STREAM]) as (stream, receive):
                await next_event(receive, StreamConnected)
                events: list[StreamEvent] = []
                trades = await trades_until(receive, lambda ts: len(ts) >= 10)
                await sim.arm(kind="ws_stall", duration_s=1.2, stream=TRADE_STREAM)

                def resumed(ts: list[Trade]) -> bool:
                    reconnected = any(isinstance(e, StreamConnected) for e in events)
                    return reconnected and len(ts) >= 10

                trades += await trades_until(receive, resumed, events)
            first_stale = next(e for e in events if isinstance(e, StreamDisconnected))
            assert first_stale.reason is DisconnectReason.STALE
            assert first_stale.connection_number == 1
            assert "no message for 0.4s" in first_stale.detail
            assert stream.stats.disconnects.get("stale", 0) >= 1
            assert set(stream.stats.disconnects) == {"stale"}
            ids = [t.trade_id for t in trades]
            assert ids == sorted(set(ids))
            assert max(b - a for a, b in itertools.pairwise(ids)) > 1, "the stall lost trades"
            filled = await backfill_gaps(client, trades)
            union = sorted([*trades, *filled], key=lambda t: t.trade_id)
            assert [trade_key(t) for t in union] == await venue_trades(sim, ids[0], ids[-1])


async def test_ws_shutdown_makes_the_stream_reconnect_promptly() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim() as sim:
            config = client_config(sim, reconnect_initial_s=5.0, reconnect_max_s=5.0)
            async with running_stream(config, [TRADE_STREAM]) as (stream, receive):
                await next_event(receive, StreamConnected)
                # serverShutdown 1 s after arming, the close only 10 s later; disarmed at 1.6 s,
                # so the next connection (opened after 1 s, due after 2 s) is left alone.
                await sim.arm(
                    kind="ws_shutdown", every_s=1.0, grace_s=10.0, duration_s=1.6,
                    stream=TRADE_STREAM,
                )  # fmt: skip
                gone = await next_event(receive, StreamDisconnected)
                left_at = trio.current_time()
                assert gone.reason is DisconnectReason.SERVER_SHUTDOWN
                assert "serverShutdown" in gone.detail
                back = await next_event(receive, StreamConnected)
                # At once: no backoff (5 s here), and well before the venue's 10 s close.
                assert trio.current_time() - left_at < 1.0
                assert back.reconnect and back.connection_number == 2
                await sim.wait_for_stream_connections(1)
                ids = await sim.market_order("BUY", "0.02")
                trades = await trades_until(receive, lambda ts: len(ts) == len(ids))
                assert [t.trade_id for t in trades] == ids
            assert stream.stats.disconnects == {"server_shutdown": 1}


async def test_combined_stream_carries_trades_depth_and_server_shutdown() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config(market=LIVE)) as sim:
            config = client_config(sim, reconnect_initial_s=5.0, reconnect_max_s=5.0)
            streams = [TRADE_STREAM, DEPTH_STREAM]
            venue = BinanceVenue(config, rng=random.Random(5))
            stream = venue.market_stream(
                [Subscription(StreamKind.TRADES, SYMBOL), Subscription(StreamKind.DEPTH, SYMBOL)]
            )
            send, receive = trio.open_memory_channel[StreamEvent](100_000)
            async with venue, trio.open_nursery() as nursery:
                await nursery.start(stream.run, send)
                connected = await next_event(receive, StreamConnected)
                assert connected.url == (
                    f"{sim.ws_url}/stream?streams=btcusdt@trade/btcusdt@depth@100ms"
                )
                assert connected.streams == tuple(streams)
                await sim.wait_for_stream_connections(1)
                trades: list[Trade] = []
                depth: list[DepthUpdate] = []
                while len(trades) < 20 or len(depth) < 5:
                    event = await receive.receive()
                    if isinstance(event, Trade):
                        trades.append(event)
                    else:
                        assert isinstance(event, DepthUpdate), event
                        depth.append(event)
                assert_sequential(trades)
                assert all(
                    b.first_update_id == a.final_update_id + 1 for a, b in itertools.pairwise(depth)
                )
                # serverShutdown in the combined envelope ("!serverShutdown").
                notified = await sim.control("POST", "/sim/streams/shutdown", {"grace_s": 10})
                assert notified == {"notified": 1}
                while not isinstance(event := await receive.receive(), StreamDisconnected):
                    assert isinstance(event, Trade | DepthUpdate), event
                left_at = trio.current_time()
                assert event.reason is DisconnectReason.SERVER_SHUTDOWN
                back = await next_event(receive, StreamConnected)
                assert back.connection_number == 2
                assert trio.current_time() - left_at < 1.0  # not the 5 s backoff
                nursery.cancel_scope.cancel()
            assert stream.stats.malformed == 0


async def test_venue_pings_are_answered_so_a_quiet_stream_stays_up() -> None:
    """The venue pings every 0.1 s and drops a connection whose pong is 1 s late."""
    streams_config = StreamsConfig(ping_interval_s=0.1, pong_timeout_s=1.0)
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config(streams=streams_config)) as sim,
            running_stream(client_config(sim), [TRADE_STREAM]) as (stream, receive),
        ):
            await next_event(receive, StreamConnected)
            with trio.move_on_after(1.5):
                unexpected = await receive.receive()
                raise AssertionError(f"the quiet stream produced {unexpected!r}")
            assert (await sim.status())["streamConnections"] == 1
            assert stream.stats.connections == 1 and stream.stats.disconnects == {}


@pytest.mark.parametrize(
    ("client_age_s", "venue_age_s", "reason"),
    [
        pytest.param(0.25, 60.0, DisconnectReason.MAX_AGE, id="client-retires-first"),
        pytest.param(60.0, 0.25, DisconnectReason.CLOSED, id="venue-cuts-off"),
    ],
)
async def test_connection_age_limits_on_both_sides(
    client_age_s: float, venue_age_s: float, reason: DisconnectReason
) -> None:
    """The 24-hour cut-off in miniature: either side ends an old connection; data goes on."""
    streams_config = StreamsConfig(max_connection_s=venue_age_s)
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config(market=LIVE, streams=streams_config)) as sim:
            config = client_config(sim, max_connection_age_s=client_age_s)
            async with rest_client(sim) as client:
                async with running_stream(config, [TRADE_STREAM]) as (_stream, receive):
                    await next_event(receive, StreamConnected)
                    trades, events = await until_connection_delivers(receive, 3, trades_after=5)
                disconnects = [e for e in events if isinstance(e, StreamDisconnected)]
                assert [e.reason for e in disconnects] == [reason, reason]
                assert all(0.2 <= e.duration_s < 2.0 for e in disconnects)
                filled = await backfill_gaps(client, trades)
            ids = [t.trade_id for t in trades]
            union = sorted([*trades, *filled], key=lambda t: t.trade_id)
            assert [trade_key(t) for t in union] == await venue_trades(sim, ids[0], ids[-1])
