"""BinanceWsApiOrders and its session against a real trio-websocket server on 127.0.0.1.

The server (:class:`tests.helpers.wsapi_fakes.FakeWsApi`) checks every
signature as Binance does and answers as each test scripts. Time is virtual
(``loopback_clock``: it jumps only when every task has been blocked for a
while in real time, so loopback I/O always completes first); timeouts,
backoff and pings run in exact virtual seconds.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx2
import pytest
import trio
import trio.testing

from daemon.errors import (
    CancelRejectedError,
    OrderNotFoundError,
    RetryExhaustedError,
    SignatureError,
    TimestampOutOfWindowError,
    VenueDecodeError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRequestError,
    VenueUnavailableError,
)
from daemon.model import NewOrder, OrderType, Side, TimeInForce, VenueOrderStatus
from daemon.model.userstream import UserStreamEvent
from daemon.venues.binance import (
    BinanceRestClient,
    BinanceVenue,
    BinanceWsApiOrders,
    UserDataStream,
)
from daemon.venues.binance.codec import wsapi as ws
from daemon.venues.binance.wssession import WsApiStats, open_session
from tests.helpers.wsapi_fakes import (
    API_KEY,
    API_SECRET,
    LOCAL_MS,
    SERVER_AHEAD_MS,
    Answer,
    FakeConnection,
    FakeRest,
    FakeWsApi,
    error,
    ok,
    rest_client,
    serving,
    stall_proxy,
    wsapi_config,
)

from . import wsapi_payloads as W

D = Decimal
LIMIT_S = 600.0

ORDER = NewOrder(
    symbol="BTCUSDT",
    side=Side.BUY,
    type=OrderType.LIMIT,
    client_order_id="intent-42",
    quantity=D("0.010"),
    price=D("30000.01"),
    time_in_force=TimeInForce.GTC,
)


def order_result(client_order_id: str = "intent-42", **changes: Any) -> dict[str, Any]:
    return {**W.PLACE_RESULT, "symbol": "BTCUSDT", "clientOrderId": client_order_id, **changes}


@asynccontextmanager
async def running(
    fake: FakeWsApi, rest: FakeRest | None = None, **config: Any
) -> AsyncIterator[tuple[BinanceWsApiOrders, BinanceRestClient]]:
    """The fake served, and a BinanceWsApiOrders connected to it."""
    rest = rest or FakeRest()
    async with serving(fake):
        client = rest_client(rest, wsapi_config(fake.port, **config))
        orders = BinanceWsApiOrders(client, rng=random.Random(5))
        async with trio.open_nursery() as nursery:
            await nursery.start(orders.run)
            yield orders, client
            nursery.cancel_scope.cancel()
        await client.aclose()


def no_secrets(text: str) -> None:
    for secret in (API_KEY, API_SECRET):
        assert secret not in text


# =========================================================================== round trips


async def test_every_order_call_round_trips_signed(loopback_clock: trio.testing.MockClock) -> None:
    fake = FakeWsApi()
    fake.route("order.place", ok(order_result()))
    fake.route("order.cancel", ok(W.CANCEL_RESULT))
    fake.route("order.status", ok(order_result(status="PARTIALLY_FILLED")))
    fake.route("openOrders.status", ok([order_result(), order_result("other")]))
    fake.route("myTrades", ok(W.MY_TRADES_RESULT))
    fake.route("time", ok({"serverTime": 1234}))
    sent: list[float] = []
    with trio.fail_after(LIMIT_S):
        async with running(fake) as (orders, _):
            placed = await orders.new_order(ORDER, on_sent=lambda: sent.append(1))
            canceled = await orders.cancel_order(
                "BTCUSDT", client_order_id="4d96324ff9d44481926157", new_client_order_id="c-1"
            )
            queried = await orders.get_order("BTCUSDT", order_id=12510053279)
            open_orders = await orders.open_orders("BTCUSDT")
            fills = await orders.my_trades("BTCUSDT", from_id=1650422481, limit=2)
            assert await orders.server_time() == 1234
            assert orders.connected
    assert fake.paths == ["/ws-api/v3"] and len(fake.connections) == 1
    assert fake.bad_signatures == 0 and sent == [1]
    assert (placed.client_order_id, placed.status) == ("intent-42", VenueOrderStatus.NEW)
    assert canceled.client_order_id == "4d96324ff9d44481926157"
    assert queried.status is VenueOrderStatus.PARTIALLY_FILLED
    assert [o.client_order_id for o in open_orders] == ["intent-42", "other"]
    assert [f.trade_id for f in fills] == [1650422481, 1650422482]
    place = fake.calls("order.place")[0]["params"]
    assert place == {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.010",
        "price": "30000.01",
        "newClientOrderId": "intent-42",
        "newOrderRespType": "FULL",
        "apiKey": API_KEY,
        "recvWindow": 5000,
        "timestamp": LOCAL_MS + SERVER_AHEAD_MS,
        "signature": place["signature"],
    }
    assert fake.calls("order.cancel")[0]["params"]["newClientOrderId"] == "c-1"
    assert fake.calls("order.status")[0]["params"]["orderId"] == 12510053279
    assert fake.calls("myTrades")[0]["params"]["fromId"] == 1650422481
    assert "params" not in fake.calls("time")[0]  # unsigned, no parameters
    ids = [f["id"] for f in fake.frames]
    assert len(set(ids)) == len(ids)


async def test_venue_factories_share_the_rest_clients_limiter_and_clock(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("order.status", ok(order_result()))
    rest = FakeRest()
    with trio.fail_after(LIMIT_S):
        async with serving(fake):
            venue = BinanceVenue(
                wsapi_config(fake.port), transport=httpx2.MockTransport(rest.handler)
            )
            orders = venue.ws_api_orders()
            stream = venue.user_data_stream()
            assert stream.snapshot()["url"] == f"ws://127.0.0.1:{fake.port}/ws-api/v3"
            async with trio.open_nursery() as nursery:
                await nursery.start(orders.run)
                await orders.get_order("BTCUSDT", client_order_id="intent-42")
                nursery.cancel_scope.cancel()
            assert venue.limiter is not None
            # The connection (2), the clock sync over REST (1) and the query (4).
            assert venue.limiter.used("REQUEST_WEIGHT:1M") == 2 + 1 + 4
            assert venue.time_offset_ms is not None and rest.time_calls == 1
            await venue.aclose()


async def test_concurrent_requests_are_matched_by_id(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    arrived: list[dict[str, Any]] = []

    async def answer_all_in_reverse(frame: dict[str, Any], conn: FakeConnection) -> None:
        arrived.append(frame)
        if len(arrived) == 5:
            for waiting in reversed(arrived):
                cid = waiting["params"]["origClientOrderId"]
                await conn.send({"id": waiting["id"], "status": 200, "result": order_result(cid)})

    fake.route("order.status", answer_all_in_reverse)
    results: dict[str, str] = {}
    with trio.fail_after(LIMIT_S):
        async with running(fake) as (orders, _):

            async def query(cid: str) -> None:
                report = await orders.get_order("BTCUSDT", client_order_id=cid)
                results[cid] = report.client_order_id

            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(query, f"cid-{i}")
    assert results == {f"cid-{i}": f"cid-{i}" for i in range(5)}
    assert len({f["id"] for f in fake.frames}) == 5


# =========================================================================== no answer


async def test_no_answer_to_an_order_is_unknown_never_resent(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("order.place", None)
    fake.route("order.cancel", None)
    with trio.fail_after(LIMIT_S):
        async with running(fake, request_timeout_s=5.0) as (orders, _):
            start = trio.current_time()
            with pytest.raises(VenueOutcomeUnknownError, match="no answer within 5s") as info:
                await orders.new_order(ORDER)
            assert trio.current_time() - start == pytest.approx(5.0, abs=0.1)
            with pytest.raises(VenueOutcomeUnknownError):
                await orders.cancel_order("BTCUSDT", order_id=1)
            assert orders.stats.timeouts == 2
    assert len(fake.calls("order.place")) == 1 and len(fake.calls("order.cancel")) == 1
    assert info.value.endpoint == "ws-api order.place"
    no_secrets(str(info.value))


async def test_no_answer_to_a_query_is_transient_and_retried(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("order.status", None, ok(order_result()))
    fake.route("openOrders.status", None)
    with trio.fail_after(LIMIT_S):
        async with running(fake, request_timeout_s=2.0, retry_max_attempts=3) as (orders, client):
            report = await orders.get_order("BTCUSDT", client_order_id="intent-42")
            assert report.client_order_id == "intent-42"
            with pytest.raises(RetryExhaustedError) as info:
                await orders.open_orders()
            assert isinstance(info.value.last_error, VenueUnavailableError)
            # The session itself says "unavailable" (transient) for a lost query.
            stats = WsApiStats()
            async with open_session(client, stats=stats) as session:
                with pytest.raises(VenueUnavailableError, match="no answer within 2s"):
                    await session.call(ws.open_orders_request(), lambda r: r)
    assert len(fake.calls("order.status")) == 2
    assert len(fake.calls("openOrders.status")) == 3 + 1


async def test_a_lost_connection_with_an_order_outstanding_is_unknown(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()

    async def drop(frame: dict[str, Any], conn: FakeConnection) -> None:
        await conn.close()

    fake.route("order.place", drop, ok(order_result("intent-43")))
    fake.route("order.status", ok(order_result()))
    with trio.fail_after(LIMIT_S):
        async with running(fake) as (orders, _):
            with pytest.raises(VenueOutcomeUnknownError, match="connection lost") as info:
                await orders.new_order(ORDER)
            assert orders.stats.lost_in_flight == 1
            # Resolved by a query on the next connection, never by a resend.
            report = await orders.get_order("BTCUSDT", client_order_id="intent-42")
            assert report.status is VenueOrderStatus.NEW
            second = NewOrder(
                symbol="BTCUSDT",
                side=Side.BUY,
                type=OrderType.LIMIT,
                client_order_id="intent-43",
                quantity=D("0.010"),
                price=D("30000.01"),
                time_in_force=TimeInForce.GTC,
            )
            assert (await orders.new_order(second)).client_order_id == "intent-43"
    assert [f["params"]["newClientOrderId"] for f in fake.calls("order.place")] == [
        "intent-42",
        "intent-43",
    ]
    assert len(fake.connections) == 2
    no_secrets(str(info.value))


async def test_requests_while_down_fail_unsent_after_connect_timeout(
    loopback_clock: trio.testing.MockClock,
) -> None:
    # A port nothing listens on: every connection attempt is refused.
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    rest = FakeRest()
    client = rest_client(rest, wsapi_config(port, connect_timeout_s=3.0))
    orders = BinanceWsApiOrders(client, rng=random.Random(5))
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(orders.run)
            start = trio.current_time()
            with pytest.raises(VenueUnavailableError, match="not sent") as info:
                await orders.new_order(ORDER)
            assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)
            assert not orders.connected
            assert orders.stats.connect_failures >= 1
            assert orders.snapshot()["last_error"]
            nursery.cancel_scope.cancel()
    assert not isinstance(info.value, VenueOutcomeUnknownError)
    await client.aclose()


async def test_a_request_without_the_run_task_fails_unsent(
    loopback_clock: trio.testing.MockClock,
) -> None:
    client = rest_client(FakeRest(), wsapi_config(1, connect_timeout_s=2.0))
    orders = BinanceWsApiOrders(client)
    with trio.fail_after(LIMIT_S), pytest.raises(VenueUnavailableError, match="within 2s"):
        await orders.new_order(ORDER)
    await client.aclose()


# =========================================================================== errors


@pytest.mark.parametrize(
    ("answer", "mutating_error", "query_error"),
    [
        (error(-1007, "Timeout waiting for response", 503), VenueOutcomeUnknownError, None),
        (error(-1006, "Unexpected response"), VenueOutcomeUnknownError, None),
        (Answer(status=500, result=None, error=None), VenueOutcomeUnknownError, None),
        (ok({"symbol": "BTCUSDT"}), VenueOutcomeUnknownError, VenueDecodeError),
        (error(-2011, "Unknown order sent."), CancelRejectedError, None),
        (error(-2013, "Order does not exist."), None, OrderNotFoundError),
    ],
)
async def test_error_answers_raise_what_rest_raises(
    loopback_clock: trio.testing.MockClock,
    answer: Answer,
    mutating_error: type[Exception] | None,
    query_error: type[Exception] | None,
) -> None:
    fake = FakeWsApi()
    fake.route("order.cancel", answer)
    fake.route("order.status", answer)
    with trio.fail_after(LIMIT_S):
        async with running(fake, retry_max_attempts=1) as (orders, _):
            if mutating_error is not None:
                with pytest.raises(mutating_error):
                    await orders.cancel_order("BTCUSDT", order_id=1)
            if query_error is not None:
                with pytest.raises(query_error):
                    await orders.get_order("BTCUSDT", order_id=1)
    assert len(fake.calls("order.cancel")) == (1 if mutating_error else 0)


async def test_a_rate_limited_answer_freezes_the_shared_limiter(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    rest = FakeRest()
    retry_after = rest.server_ms + 30_000
    fake.route(
        "order.place",
        Answer(
            status=429,
            result=None,
            error={"code": -1003, "msg": "Too many requests", "data": {"retryAfter": retry_after}},
        ),
    )
    with trio.fail_after(LIMIT_S):
        async with running(fake, rest) as (orders, client):
            with pytest.raises(VenueRateLimitedError) as info:
                await orders.new_order(ORDER)
            assert info.value.retry_after_s == pytest.approx(30.0)
            assert client.limiter is not None and client.limiter.frozen_until is not None
            assert client.snapshot()["freezes"] == 1


async def test_rate_limits_of_every_answer_correct_the_limiter(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    limits = [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": 6000,
            "count": 4321,
        },
        {
            "rateLimitType": "ORDERS",
            "interval": "SECOND",
            "intervalNum": 10,
            "limit": 100,
            "count": 77,
        },
    ]
    fake.route("order.place", ok(order_result(), rate_limits=limits))
    with trio.fail_after(LIMIT_S):
        async with running(fake) as (orders, client):
            assert client.limiter is not None
            await orders.new_order(ORDER)
            assert client.limiter.used("REQUEST_WEIGHT:1M") == 4321
            assert client.limiter.used("ORDERS:10S") == 77


async def test_each_request_takes_its_weight_before_it_is_sent(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("order.place", ok(order_result()))
    fake.route("openOrders.status", ok([]))
    with trio.fail_after(LIMIT_S):
        async with running(fake, limiter_max_wait_s=1.0) as (orders, client):
            assert client.limiter is not None
            await orders.new_order(ORDER)
            await orders.open_orders()  # all symbols: weight 80
            # connection, clock sync over REST, order.place, openOrders.status (all symbols)
            assert client.limiter.used("REQUEST_WEIGHT:1M") == 2 + 1 + 1 + 80
            assert client.limiter.used("ORDERS:10S") == 1
            # A window the venue says is full refuses the next request unsent.
            client.limiter.observe_usage("ORDERS:10S", 100)
            with pytest.raises(VenueRateLimitedError, match="not sent") as info:
                await orders.new_order(ORDER)
            assert info.value.http_status is None
    assert len(fake.calls("order.place")) == 1


async def test_a_timestamp_error_resyncs_and_resends_once(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    rest = FakeRest()

    def in_window(frame: dict[str, Any], conn: FakeConnection) -> Answer:
        params = frame["params"]
        if abs(params["timestamp"] - rest.server_ms) > params["recvWindow"]:
            return error(-1021, "Timestamp for this request is outside of the recvWindow.")
        return ok(order_result())

    fake.route("order.place", in_window)
    fake.route("order.cancel", error(-1021, "Timestamp for this request is outside..."))
    fake.route("order.status", ok(order_result()))
    with trio.fail_after(LIMIT_S):
        async with running(fake, rest) as (orders, client):
            await orders.get_order("BTCUSDT", order_id=1)  # measures the offset (2.5s)
            assert client.time_offset_ms == SERVER_AHEAD_MS
            rest.server_ahead_ms = 60_000  # the venue's clock moved on
            report = await orders.new_order(ORDER)
            assert report.client_order_id == "intent-42"
            assert client.time_offset_ms == 60_000
            places = fake.calls("order.place")
            assert len(places) == 2 and places[0]["id"] != places[1]["id"]
            assert places[1]["params"]["timestamp"] == rest.server_ms
            with pytest.raises(TimestampOutOfWindowError):
                await orders.cancel_order("BTCUSDT", order_id=1)
            assert len(fake.calls("order.cancel")) == 2
            assert client.snapshot()["time_resyncs"] == 2


async def test_the_fake_refuses_a_wrong_signature(loopback_clock: trio.testing.MockClock) -> None:
    fake = FakeWsApi(secret="another-secret")
    fake.route("order.status", ok(order_result()))
    with trio.fail_after(LIMIT_S):
        async with running(fake, retry_max_attempts=1) as (orders, _):
            with pytest.raises(SignatureError):
                await orders.get_order("BTCUSDT", order_id=1)
    assert fake.bad_signatures == 1


# =========================================================================== the connection


async def test_malformed_frames_are_counted_not_fatal(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()

    async def garbage_first(frame: dict[str, Any], conn: FakeConnection) -> Answer:
        for junk in (
            "not json",
            b"\x00\x01binary",
            "[" * 5000 + "]" * 5000,
            json.dumps({"id": frame["id"], "status": "200"}),
            json.dumps({"id": 999, "status": 200, "result": {}}),  # an id nobody waits for
            json.dumps({"subscriptionId": 0, "event": {"e": "executionReport"}}),
        ):
            await conn.send(junk)
        return ok(order_result())

    fake.route("order.place", garbage_first)
    with trio.fail_after(LIMIT_S):
        async with running(fake) as (orders, _):
            report = await orders.new_order(ORDER)
            assert report.client_order_id == "intent-42"
            assert orders.stats.malformed == 5
            assert orders.stats.late_answers == 1
            assert orders.connected and len(fake.connections) == 1


async def test_server_shutdown_replaces_the_connection_without_cutting_requests(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()

    async def shutdown_then_answer(frame: dict[str, Any], conn: FakeConnection) -> Answer:
        await conn.event({"e": "serverShutdown", "E": 1}, subscription_id=None)
        await trio.sleep(1.0)
        return ok(order_result())

    fake.route("order.place", shutdown_then_answer)
    fake.route("order.status", ok(order_result()))
    with trio.fail_after(LIMIT_S):
        async with running(fake) as (orders, _):
            report = await orders.new_order(ORDER)  # answered on the retiring connection
            assert report.client_order_id == "intent-42"
            await orders.get_order("BTCUSDT", order_id=1)
            assert orders.stats.server_shutdowns == 1
    assert [len(c.frames) for c in fake.connections] == [1, 1]


async def test_a_connection_without_pongs_is_replaced(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("order.status", ok(order_result()))
    rest = FakeRest()
    with trio.fail_after(LIMIT_S):
        async with serving(fake), stall_proxy(fake.port) as proxy:
            client = rest_client(rest, wsapi_config(proxy.port, ws_api_ping_interval_s=5.0))
            orders = BinanceWsApiOrders(client, rng=random.Random(5))
            async with trio.open_nursery() as nursery:
                await nursery.start(orders.run)
                await orders.get_order("BTCUSDT", order_id=1)
                proxy.frozen = True
                await trio.sleep(5.0 + 5.0 + 1.0)  # a ping, then no pong in request_timeout_s
                assert orders.stats.pong_timeouts == 1
                proxy.frozen = False
                # The next connection (through the thawed relay) takes the request.
                report = await orders.get_order("BTCUSDT", order_id=1)
                assert report.client_order_id == "intent-42"
                assert orders.stats.connections >= 2
                nursery.cancel_scope.cancel()
            await client.aclose()


async def test_max_connection_age_replaces_the_connection(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("order.status", ok(order_result()))
    with trio.fail_after(LIMIT_S):
        async with running(fake, max_connection_age_s=100.0, ws_api_ping_interval_s=60.0) as (
            orders,
            _,
        ):
            await orders.get_order("BTCUSDT", order_id=1)
            await trio.sleep(150.0)
            await orders.get_order("BTCUSDT", order_id=1)
    assert len(fake.connections) == 2


async def test_secrets_never_reach_logs_or_errors(
    loopback_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeWsApi()
    leaked: list[str] = []

    def echo_everything(frame: dict[str, Any], conn: FakeConnection) -> Answer:
        params = frame["params"]
        leaked.append(params["signature"])
        text = f"bad key {params['apiKey']} sig {params['signature']} secret {API_SECRET}"
        return error(-2015, text)

    fake.route("order.place", echo_everything)
    fake.route("order.cancel", None)
    errors: list[BaseException] = []
    with trio.fail_after(LIMIT_S):
        async with running(fake, request_timeout_s=1.0) as (orders, _):
            for call in (
                lambda: orders.new_order(ORDER),
                lambda: orders.cancel_order("BTCUSDT", order_id=1),
            ):
                try:
                    await call()
                except Exception as exc:
                    errors.append(exc)
            await fake.connections[0].close()
            await trio.sleep(5)
    assert len(errors) == 2 and leaked
    texts = [caplog.text, *(str(e) for e in errors), *(repr(e) for e in errors)]
    texts += [str(getattr(e, "venue_message", "")) for e in errors]
    texts.append(json.dumps(orders.snapshot()))
    for text in texts:
        for secret in (API_KEY, API_SECRET, *leaked):
            assert secret not in text


async def test_signed_calls_without_credentials_fail_unsent(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("time", ok({"serverTime": 1}))
    with trio.fail_after(LIMIT_S):
        async with running(fake, api_key=None, api_secret=None) as (orders, client):
            with pytest.raises(VenueRequestError, match="needs api_key and api_secret"):
                await orders.new_order(ORDER)
            assert await orders.server_time() == 1  # unsigned calls still work
            stream = UserDataStream(client)
            send, _ = trio.open_memory_channel[UserStreamEvent](1)
            with pytest.raises(VenueRequestError):
                await stream.run(send)
    assert [f["method"] for f in fake.frames] == ["time"]
