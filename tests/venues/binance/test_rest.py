"""BinanceRestClient over httpx2.MockTransport: endpoints, mapped errors, limits, clock."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx2
import pytest
import trio

from daemon.errors import (
    ApiKeyRejectedError,
    CancelRejectedError,
    CircuitOpenError,
    DuplicateOrderError,
    FilterFailureError,
    ForbiddenError,
    OrderNotFoundError,
    OrderRejectedError,
    RetryExhaustedError,
    SignatureError,
    TimestampOutOfWindowError,
    VenueDecodeError,
    VenueError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRejectedError,
    VenueRequestError,
    VenueUnavailableError,
)
from daemon.model import NewOrder, OrderType, Side, TimeInForce, VenueOrderStatus
from daemon.resilience import BreakerConfig, CircuitBreaker
from daemon.secrets import Secret, SecretRef
from daemon.venues.binance import BinanceRestClient, codec
from tests.helpers.venues import binance_config

from . import payloads as P

D = Decimal
API_KEY = "test-api-key-0123456789abcdef0123456789"
API_SECRET = "test-api-secret-fedcba9876543210fedcba98"
LOCAL_MS = 1_700_000_000_000
SERVER_AHEAD_MS = 2_500

Responder = Callable[[httpx2.Request], httpx2.Response | Awaitable[httpx2.Response]]


def reply(
    obj: Any = None, status: int = 200, headers: dict[str, str] | None = None, raw: bytes = b""
) -> Responder:
    content = raw if obj is None else json.dumps(obj).encode()

    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=content, headers=headers)

    return respond


def error(code: int, msg: str, status: int = 400, **headers: str) -> Responder:
    return reply(
        {"code": code, "msg": msg}, status, {k.replace("_", "-"): v for k, v in headers.items()}
    )


def fail(exc_type: type[httpx2.HTTPError]) -> Responder:
    def respond(request: httpx2.Request) -> httpx2.Response:
        # The library's message may well contain the URL (and so the signature).
        raise exc_type(f"boom while talking to {request.url}", request=request)

    return respond


class FakeVenue:
    """A scripted Binance REST endpoint that checks keys and signatures like Binance."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.routes: dict[tuple[str, str], list[Responder]] = {}
        self.local_ms = LOCAL_MS
        self.server_ahead_ms = SERVER_AHEAD_MS
        self.route("GET", "/api/v3/time", lambda r: self._time())

    def _time(self) -> httpx2.Response:
        return httpx2.Response(200, json={"serverTime": self.local_ms + self.server_ahead_ms})

    def clock(self) -> int:
        return self.local_ms

    def route(self, method: str, path: str, *responders: Responder) -> None:
        """Answer with the responders in turn; the last one repeats."""
        self.routes[(method, path)] = list(responders)

    def calls(self, method: str, path: str) -> list[httpx2.Request]:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)]

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        query, body = request.url.query.decode(), form_body(request)
        if "signature=" in query + "&" + body:
            assert request.headers["X-MBX-APIKEY"] == API_KEY
            # Binance's totalParams: the query string, then the body, each without the signature.
            query_payload, in_query = codec.split_signature(query)
            body_payload, in_body = codec.split_signature(body)
            signature = in_body if in_body is not None else in_query
            assert signature is not None
            payload = codec.signature_payload(query_payload, body_payload)
            assert codec.verify_signature(API_SECRET, payload, signature), "bad signature"
        responders = self.routes[(request.method, request.url.path)]
        responder = responders.pop(0) if len(responders) > 1 else responders[0]
        response = responder(request)
        if not isinstance(response, httpx2.Response):
            response = await response
        return response


def form_body(request: httpx2.Request) -> str:
    """The request's form body ("" without one; any other body fails the test)."""
    if not request.content:
        return ""
    assert request.headers["Content-Type"] == codec.FORM_CONTENT_TYPE
    return request.content.decode()


def params(request: httpx2.Request) -> dict[str, str]:
    """Query string and form body parameters together (Binance reads both)."""
    return dict(codec.parse_query(request.url.query.decode() + "&" + form_body(request)))


def signed_text(request: httpx2.Request) -> str:
    """Where the parameters and signature went: a POST/DELETE's body, else the query."""
    if request.method in ("POST", "DELETE"):
        return form_body(request)
    return request.url.query.decode()


def secret(value: str) -> Secret:
    return Secret(ref=SecretRef("env", "X"), value=value)


def make_client(venue: FakeVenue, **overrides: Any) -> BinanceRestClient:
    fields: dict[str, Any] = {
        "rest_url": "https://api.test",
        "ws_url": "wss://stream.test",
        "api_key": secret(API_KEY),
        "api_secret": secret(API_SECRET),
        "retry_base_delay_s": 1.0,
        "retry_max_delay_s": 4.0,
    }
    fields.update(overrides)
    return BinanceRestClient(
        binance_config(**fields),
        transport=httpx2.MockTransport(venue.handler),
        wall_clock_ms=venue.clock,
        rng=random.Random(7),
    )


ORDER = NewOrder(
    symbol="BTCUSDT",
    side=Side.BUY,
    type=OrderType.LIMIT,
    client_order_id="intent-42",
    quantity=D("0.010"),
    price=D("30000.01"),
    time_in_force=TimeInForce.GTC,
)


def no_secrets(exc: BaseException, *secrets: str) -> None:
    texts = [str(exc), repr(exc), *(str(a) for a in exc.args)]
    for attr in ("venue_message", "endpoint"):
        value = getattr(exc, attr, None)
        if value:
            texts.append(value)
    for text in texts:
        for s in secrets:
            assert s not in text, f"secret leaked into {type(exc).__name__}: {text}"


# =========================================================================== endpoints


async def test_every_endpoint_round_trip() -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/ping", reply({}))
    venue.route("GET", "/api/v3/exchangeInfo", reply(P.EXCHANGE_INFO))
    venue.route("GET", "/api/v3/depth", reply(P.DEPTH))
    venue.route("GET", "/api/v3/trades", reply(P.TRADES))
    venue.route("GET", "/api/v3/historicalTrades", reply(P.TRADES))
    venue.route("POST", "/api/v3/order", reply(P.ORDER_FULL))
    venue.route("GET", "/api/v3/order", reply(P.QUERY_ORDER))
    venue.route("DELETE", "/api/v3/order", reply(P.CANCEL_ORDER))
    venue.route("GET", "/api/v3/openOrders", reply([P.QUERY_ORDER]))
    venue.route("GET", "/api/v3/myTrades", reply(P.MY_TRADES))
    venue.route("GET", "/api/v3/account", reply(P.ACCOUNT))
    async with make_client(venue) as client:
        await client.ping()
        assert await client.server_time() == LOCAL_MS + SERVER_AHEAD_MS
        info = await client.exchange_info(["ETHBTC", "BNBBTC"])
        assert info.symbol("ETHBTC").filters.tick_size == D("0.000001")
        book = await client.depth("bnbbtc", limit=500)
        assert book.symbol == "BNBBTC" and book.last_update_id == 1027024
        assert (await client.recent_trades("BNBBTC", 10))[0].trade_id == 28457
        assert (await client.historical_trades("BNBBTC", from_id=28457, limit=1))[0].price == D(
            "4.000001"
        )
        placed = await client.new_order(ORDER)
        assert placed.status is VenueOrderStatus.FILLED and len(placed.fills) == 2
        queried = await client.get_order("LTCBTC", client_order_id="myOrder1")
        assert queried.status is VenueOrderStatus.NEW
        canceled = await client.cancel_order("LTCBTC", client_order_id="myOrder1")
        assert canceled.client_order_id == "myOrder1"
        assert len(await client.open_orders()) == 1
        assert (await client.my_trades("BNBBTC", from_id=1))[0].commission_asset == "BNB"
        assert (await client.account()).balance("BTC").free == D("4723846.89208129")

    # What went on the wire.
    (info_req,) = venue.calls("GET", "/api/v3/exchangeInfo")
    assert info_req.url.query == b"symbols=%5B%22ETHBTC%22%2C%22BNBBTC%22%5D"
    assert "X-MBX-APIKEY" not in info_req.headers  # public endpoint
    (depth_req,) = venue.calls("GET", "/api/v3/depth")
    assert params(depth_req) == {"symbol": "BNBBTC", "limit": "500"}
    (hist_req,) = venue.calls("GET", "/api/v3/historicalTrades")
    assert params(hist_req) == {"symbol": "BNBBTC", "limit": "1", "fromId": "28457"}
    assert "X-MBX-APIKEY" not in hist_req.headers  # security NONE since 2023
    (order_req,) = venue.calls("POST", "/api/v3/order")
    sent = params(order_req)
    assert sent["newClientOrderId"] == "intent-42" and sent["newOrderRespType"] == "FULL"
    assert (sent["quantity"], sent["price"], sent["timeInForce"]) == ("0.010", "30000.01", "GTC")
    assert sent["recvWindow"] == "5000"
    # Local clock + measured offset (fixed clock: round trip 0, midpoint exact).
    assert sent["timestamp"] == str(LOCAL_MS + SERVER_AHEAD_MS)
    # A mutating request sends its parameters as a form body (the URL stays short and
    # constant), signed over exactly the body bytes sent, signature last.
    assert order_req.url.query == b"" and str(order_req.url).endswith("/api/v3/order")
    body = form_body(order_req)
    assert body.endswith("&signature=" + codec.sign(API_SECRET, codec.split_signature(body)[0]))
    assert order_req.headers["Content-Length"] == str(len(order_req.content))
    (get_req,) = venue.calls("GET", "/api/v3/order")
    assert params(get_req)["origClientOrderId"] == "myOrder1"
    assert "signature=" in get_req.url.query.decode() and not get_req.content  # GET: the query
    (cancel_req,) = venue.calls("DELETE", "/api/v3/order")
    assert params(cancel_req)["origClientOrderId"] == "myOrder1"
    assert cancel_req.url.query == b"" and "signature=" in form_body(cancel_req)
    (open_req,) = venue.calls("GET", "/api/v3/openOrders")
    assert "symbol" not in params(open_req)
    (trades_req,) = venue.calls("GET", "/api/v3/myTrades")
    assert params(trades_req)["fromId"] == "1"
    # One time sync served every signed call.
    # server_time() measured the offset, so the signed calls needed no other sync.
    assert len(venue.calls("GET", "/api/v3/time")) == 1


async def test_clock_offset_uses_the_midpoint_of_the_round_trip() -> None:
    venue = FakeVenue()
    ticks = iter([1000, 1100, 5000])
    client = make_client(venue)
    client._wall_clock_ms = lambda: next(ticks)  # type: ignore[method-assign]
    venue.route("GET", "/api/v3/time", reply({"serverTime": 9050}))
    assert await client.sync_time() == 9050 - 1050
    assert client.time_offset_ms == 8000


async def test_time_is_resynced_when_the_offset_is_old(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/account", reply(P.ACCOUNT))
    client = make_client(venue, time_resync_interval_s=600)
    await client.account()
    await trio.sleep(599)
    await client.account()
    assert len(venue.calls("GET", "/api/v3/time")) == 1
    await trio.sleep(2)
    venue.server_ahead_ms = 7000
    await client.account()
    assert len(venue.calls("GET", "/api/v3/time")) == 2
    assert params(venue.calls("GET", "/api/v3/account")[-1])["timestamp"] == str(LOCAL_MS + 7000)


# =========================================================================== error mapping

ERROR_TABLE = [
    ("POST", error(-2010, "Duplicate order sent."), DuplicateOrderError, -2010),
    (
        "POST",
        error(-2010, "Account has insufficient balance for requested action."),
        OrderRejectedError,
        -2010,
    ),
    ("POST", error(-1013, "Filter failure: PRICE_FILTER"), FilterFailureError, -1013),
    ("GET", error(-2013, "Order does not exist."), OrderNotFoundError, -2013),
    ("DELETE", error(-2011, "Unknown order sent."), CancelRejectedError, -2011),
    ("GET", error(-1022, "Signature for this request is not valid."), SignatureError, -1022),
    (
        "GET",
        error(-2015, "Invalid API-key, IP, or permissions for action.", 401),
        ApiKeyRejectedError,
        -2015,
    ),
    ("GET", error(-1121, "Invalid symbol."), VenueRejectedError, -1121),
    ("GET", reply(raw=b"<html>403 Forbidden</html>", status=403), ForbiddenError, None),
    (
        "POST",
        error(-1007, "Timeout waiting for response from backend server.", 503),
        VenueOutcomeUnknownError,
        -1007,
    ),
    (
        "POST",
        error(-1006, "An unexpected response was received from the message bus.", 500),
        VenueOutcomeUnknownError,
        -1006,
    ),
    ("DELETE", reply(raw=b"Internal Server Error", status=500), VenueOutcomeUnknownError, None),
    ("POST", error(-1003, "Too much request weight used.", 429), VenueRateLimitedError, -1003),
    ("POST", error(-1015, "Too many new orders.", 429), VenueRateLimitedError, -1015),
    ("GET", error(-1003, "IP banned.", 418), VenueRateLimitedError, -1003),
]


async def call(client: BinanceRestClient, method: str) -> object:
    if method == "POST":
        return await client.new_order(ORDER)
    if method == "DELETE":
        return await client.cancel_order("BTCUSDT", client_order_id="intent-42")
    return await client.get_order("BTCUSDT", client_order_id="intent-42")


@pytest.mark.parametrize(
    ("method", "responder", "cls", "code"),
    ERROR_TABLE,
    ids=[f"{m}-{c.__name__}-{code}" for m, _, c, code in ERROR_TABLE],
)
async def test_errors_are_mapped_once_and_not_retried(
    method: str, responder: Responder, cls: type[VenueError], code: int | None
) -> None:
    venue = FakeVenue()
    venue.route(method, "/api/v3/order", responder)
    client = make_client(venue)
    with pytest.raises(cls) as info:
        await call(client, method)
    exc = info.value
    assert type(exc) is cls and exc.code == code
    assert exc.venue == "binance" and exc.endpoint == f"{method} /api/v3/order"
    assert exc.http_status is not None and exc.http_status >= 400
    # Definitive or order-mutating answers are not retried (a 418 without Retry-After either).
    assert len(venue.calls(method, "/api/v3/order")) == 1
    sent = signed_text(venue.calls(method, "/api/v3/order")[0])
    signature = codec.split_signature(sent)[1]
    assert signature
    no_secrets(exc, API_KEY, API_SECRET, signature)


async def test_secrets_echoed_by_the_venue_are_scrubbed() -> None:
    venue = FakeVenue()

    def echo(request: httpx2.Request) -> httpx2.Response:
        sent = signed_text(request)
        msg = f"Signature for this request is not valid. {sent} key={API_KEY} {API_SECRET}"
        return httpx2.Response(400, json={"code": -1022, "msg": msg})

    venue.route("POST", "/api/v3/order", echo)
    client = make_client(venue)
    with pytest.raises(SignatureError) as info:
        await client.new_order(ORDER)
    signature = codec.split_signature(signed_text(venue.calls("POST", "/api/v3/order")[0]))[1]
    assert signature is not None
    no_secrets(info.value, API_KEY, API_SECRET, signature)
    assert "***" in str(info.value)


async def test_transport_errors_never_leak_the_signature() -> None:
    venue = FakeVenue()
    venue.route("POST", "/api/v3/order", fail(httpx2.ReadTimeout))
    client = make_client(venue)
    with pytest.raises(VenueOutcomeUnknownError) as info:
        await client.new_order(ORDER)
    signature = codec.split_signature(signed_text(venue.calls("POST", "/api/v3/order")[0]))[1]
    assert signature is not None
    no_secrets(info.value, API_KEY, API_SECRET, signature)
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout)  # translated with `from`


# =========================================================================== orders: never retried


@pytest.mark.parametrize(
    ("responder", "cls"),
    [
        (reply(raw=b"", status=503), VenueOutcomeUnknownError),
        (reply(raw=b"", status=502, headers={"Retry-After": "1"}), VenueOutcomeUnknownError),
        (fail(httpx2.ReadTimeout), VenueOutcomeUnknownError),
        (fail(httpx2.RemoteProtocolError), VenueOutcomeUnknownError),
        (fail(httpx2.ConnectError), VenueUnavailableError),  # never left: definitively not sent
        (reply(raw=b"{not json", status=200), VenueOutcomeUnknownError),
        (reply({"orderId": 1}, status=200), VenueOutcomeUnknownError),
    ],
)
async def test_post_order_is_never_retried(
    autojump_clock: Any, responder: Responder, cls: type[Exception]
) -> None:
    venue = FakeVenue()
    venue.route("POST", "/api/v3/order", responder, reply(P.ORDER_ACK))
    client = make_client(venue)
    with pytest.raises(cls):
        await client.new_order(ORDER)
    await trio.sleep(60)
    assert len(venue.calls("POST", "/api/v3/order")) == 1
    assert trio.current_time() == 60.0  # nothing waited inside the call


async def test_a_slow_order_answer_is_an_unknown_outcome(autojump_clock: Any) -> None:
    venue = FakeVenue()

    async def stall(request: httpx2.Request) -> httpx2.Response:
        await trio.sleep(1000)
        return httpx2.Response(200, json=P.ORDER_ACK)

    venue.route("POST", "/api/v3/order", stall)
    client = make_client(venue, request_timeout_s=3.0)
    with pytest.raises(VenueOutcomeUnknownError, match="timeout"):
        await client.new_order(ORDER)
    assert trio.current_time() == 3.0


async def test_undecodable_query_answer_is_a_decode_error() -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/depth", reply(raw=b"<html>", status=200))
    client = make_client(venue)
    with pytest.raises(VenueDecodeError) as info:
        await client.depth("BTCUSDT")
    assert info.value.raw == b"<html>"
    assert len(venue.calls("GET", "/api/v3/depth")) == 1


# ======================================================================= queries: bounded retries


async def test_get_is_retried_on_5xx_and_connect_errors(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route(
        "GET",
        "/api/v3/depth",
        reply(raw=b"", status=503),
        fail(httpx2.ConnectError),
        fail(httpx2.ReadTimeout),
        reply(P.DEPTH),
    )
    client = make_client(venue)
    book = await client.depth("BTCUSDT")
    assert book.last_update_id == 1027024
    assert len(venue.calls("GET", "/api/v3/depth")) == 4
    assert client.retry_policy.stats.retries == 3


async def test_get_retries_are_bounded(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/depth", reply(raw=b"oops", status=503))
    client = make_client(venue, retry_max_attempts=3)
    with pytest.raises(RetryExhaustedError) as info:
        await client.depth("BTCUSDT")
    assert len(venue.calls("GET", "/api/v3/depth")) == 3
    assert isinstance(info.value.last_error, VenueUnavailableError)
    assert info.value.last_error.http_status == 503


# =========================================================================== rate limits


async def test_retry_after_freezes_every_request(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route(
        "GET",
        "/api/v3/depth",
        error(-1003, "Too much request weight used.", 429, Retry_After="7"),
        reply(P.DEPTH),
    )
    venue.route("GET", "/api/v3/trades", reply(P.TRADES))
    client = make_client(venue)
    done: dict[str, float] = {}

    async def depth() -> None:
        await client.depth("BTCUSDT")
        done["depth"] = trio.current_time()

    async def trades() -> None:
        await trio.sleep(1)  # starts during the freeze
        await client.recent_trades("BTCUSDT")
        done["trades"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(depth)
        nursery.start_soon(trades)
    assert done == {"depth": 7.0, "trades": 7.0}
    assert client.snapshot()["freezes"] == 1


async def test_429_on_an_order_freezes_without_retrying(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route("POST", "/api/v3/order", error(-1015, "Too many new orders.", 429, Retry_After="5"))
    venue.route("GET", "/api/v3/depth", reply(P.DEPTH))
    client = make_client(venue)
    with pytest.raises(VenueRateLimitedError) as info:
        await client.new_order(ORDER)
    assert info.value.retry_after_s == 5.0 and trio.current_time() == 0.0
    await client.depth("BTCUSDT")
    assert trio.current_time() == 5.0


async def test_ban_without_retry_after_is_not_retried(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/depth", error(-1003, "Way too much request weight used.", 418))
    client = make_client(venue)
    with pytest.raises(VenueRateLimitedError) as info:
        await client.depth("BTCUSDT")
    assert info.value.banned and info.value.retry_after_s is None
    assert len(venue.calls("GET", "/api/v3/depth")) == 1


async def test_local_limiter_gives_up_without_sending(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route("POST", "/api/v3/order", reply(P.ORDER_ACK))
    client = make_client(venue, limiter_max_wait_s=5.0, order_limiter_max_wait_s=5.0)
    await client.sync_time()
    assert client.limiter is not None
    client.limiter.freeze_for(100)
    with pytest.raises(VenueRateLimitedError) as info:
        await client.new_order(ORDER)
    assert info.value.http_status is None and info.value.retry_after_s == pytest.approx(95.0)
    assert trio.current_time() == 5.0
    assert venue.calls("POST", "/api/v3/order") == []


async def test_usage_headers_correct_the_limiter(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route(
        "GET",
        "/api/v3/depth",
        reply(P.DEPTH, headers={"X-MBX-USED-WEIGHT-1M": "5990"}),
        reply(P.DEPTH, headers={"X-MBX-USED-WEIGHT-1M": "25"}),
    )
    client = make_client(venue, limiter_max_wait_s=120)
    assert client.limiter is not None
    await client.depth("BTCUSDT", limit=100)  # weight 5, server says 5990 used
    assert client.limiter.used("REQUEST_WEIGHT:1M") == 5990
    await client.depth("BTCUSDT", limit=500)  # weight 25 does not fit until the minute is over
    assert trio.current_time() == 60.0
    assert client.limiter.used("RAW_REQUESTS:5M") == 2


async def test_order_count_headers_correct_the_orders_windows(autojump_clock: Any) -> None:
    venue = FakeVenue()
    venue.route(
        "GET",
        "/api/v3/exchangeInfo",
        reply(
            {
                **P.EXCHANGE_INFO,
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 1000,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 5,
                    },
                ],
            }
        ),
    )
    venue.route("POST", "/api/v3/order", reply(P.ORDER_ACK, headers={"X-MBX-ORDER-COUNT-10S": "5"}))
    # A new order may wait the whole window here (by default it waits 1 s, then fails unsent).
    client = make_client(venue, order_limiter_max_wait_s=30.0)
    await client.exchange_info()
    assert client.limiter is not None
    assert [w.name for w in client.limiter.core.windows] == ["REQUEST_WEIGHT:1M", "ORDERS:10S"]
    await client.new_order(ORDER)  # another client of the account used the rest
    assert client.limiter.used("ORDERS:10S") == 5
    await client.new_order(ORDER)
    assert trio.current_time() == 10.0


async def test_exchange_info_installs_the_venue_limits(autojump_clock: Any) -> None:
    venue = FakeVenue()
    small = {
        **P.EXCHANGE_INFO,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": 30,
            },
        ],
    }
    venue.route("GET", "/api/v3/exchangeInfo", reply(small))
    venue.route("GET", "/api/v3/depth", reply(P.DEPTH))
    client = make_client(venue)
    await client.exchange_info()  # counted in the default window, which is replaced
    assert client.limiter is not None and client.limiter.used("REQUEST_WEIGHT:10S") == 0
    assert client.rate_limits[0].limit == 30
    for _ in range(6):
        await client.depth("BTCUSDT")  # 6 x 5 = 30 fits
    assert trio.current_time() == 0.0
    await client.depth("BTCUSDT")  # the 7th waits for the window to slide
    assert trio.current_time() == 10.0
    # Weights above a window's limit are capped rather than refused.
    venue.route("GET", "/api/v3/depth", reply(P.DEPTH))
    await client.depth("BTCUSDT", limit=5000)  # weight 250 > 30


# =========================================================================== clock resync (-1021)


async def test_minus_1021_resyncs_and_resends_once() -> None:
    venue = FakeVenue()
    venue.route(
        "POST",
        "/api/v3/order",
        error(-1021, "Timestamp for this request was 1000ms ahead of the server's time."),
        reply(P.ORDER_ACK),
    )
    client = make_client(venue)
    await client.sync_time()
    venue.server_ahead_ms = -4000  # the server clock moved
    report = await client.new_order(ORDER)
    assert report.order_id == 28
    first, second = venue.calls("POST", "/api/v3/order")
    assert params(first)["timestamp"] == str(LOCAL_MS + SERVER_AHEAD_MS)
    assert params(second)["timestamp"] == str(LOCAL_MS - 4000)
    assert len(venue.calls("GET", "/api/v3/time")) == 2
    assert client.snapshot()["time_resyncs"] == 1


async def test_minus_1021_twice_gives_up() -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/order", error(-1021, "Timestamp outside of the recvWindow."))
    client = make_client(venue)
    with pytest.raises(TimestampOutOfWindowError):
        await client.get_order("BTCUSDT", order_id=1)
    assert len(venue.calls("GET", "/api/v3/order")) == 2


# =========================================================================== misc


async def test_signed_calls_need_credentials() -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/depth", reply(P.DEPTH))
    client = make_client(venue, api_key=None, api_secret=None)
    await client.depth("BTCUSDT")  # public: fine
    with pytest.raises(VenueRequestError, match="api_key and api_secret"):
        await client.account()


async def test_open_breaker_rejects_without_sending() -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/depth", reply(P.DEPTH))
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=1, open_timeout_s=30))
    client = BinanceRestClient(
        binance_config(rest_url="https://api.test"),
        transport=httpx2.MockTransport(venue.handler),
        breaker=breaker,
    )
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await client.depth("BTCUSDT")
    assert venue.calls("GET", "/api/v3/depth") == []


async def test_httpx2_request_log_masks_the_signature(caplog: pytest.LogCaptureFixture) -> None:
    venue = FakeVenue()
    venue.route("GET", "/api/v3/account", reply(P.ACCOUNT))
    client = make_client(venue)
    with caplog.at_level(logging.INFO, logger="httpx2"):
        await client.account()
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx2"]
    assert any("/api/v3/account" in line for line in lines)
    signature = codec.split_signature(venue.calls("GET", "/api/v3/account")[0].url.query.decode())[
        1
    ]
    assert signature is not None
    assert not any(signature in line for line in lines)
    assert any("signature=***" in line for line in lines)
    assert API_KEY not in repr(client) and API_KEY not in str(client.config)
