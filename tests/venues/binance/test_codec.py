"""The sans-IO Binance codec: encoding, signing, requests, headers, errors, answers, frames."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import (
    AmbiguousOutcomeError,
    ApiKeyRejectedError,
    CancelRejectedError,
    DuplicateOrderError,
    FilterFailureError,
    ForbiddenError,
    OrderNotFoundError,
    OrderRejectedError,
    PermanentError,
    RateLimitedError,
    SignatureError,
    TimestampOutOfWindowError,
    TransientError,
    VenueDecodeError,
    VenueError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRejectedError,
    VenueUnavailableError,
)
from daemon.model import (
    DepthUpdate,
    NewOrder,
    OrderResponseType,
    OrderType,
    RateLimitInterval,
    RateLimitType,
    Side,
    TimeInForce,
    Trade,
    VenueOrderStatus,
)
from daemon.venues.binance import codec
from daemon.venues.binance.codec import RequestSpec, Security

from . import payloads as P

D = Decimal

# =========================================================================== signing


def test_signature_of_binances_worked_example() -> None:
    assert codec.sign(P.DOC_SECRET, P.DOC_QUERY) == P.DOC_SIGNATURE
    assert codec.verify_signature(P.DOC_SECRET, P.DOC_QUERY, P.DOC_SIGNATURE)


def test_mixed_query_and_body_are_concatenated_without_separator() -> None:
    payload = codec.signature_payload(P.DOC_MIXED_QUERY, P.DOC_MIXED_BODY)
    assert payload == P.DOC_MIXED_QUERY + P.DOC_MIXED_BODY
    assert codec.sign(P.DOC_SECRET, payload) == P.DOC_MIXED_SIGNATURE


def doc_spec() -> RequestSpec:
    params = (
        ("symbol", "LTCBTC"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "1"),
        ("price", "0.1"),
    )
    return RequestSpec("POST", "/api/v3/order", params, Security.SIGNED, order_count=1)


def test_prepare_reproduces_the_documented_request_exactly() -> None:
    prepared = codec.prepare(
        doc_spec(),
        api_key=P.DOC_API_KEY,
        api_secret=P.DOC_SECRET,
        timestamp_ms=1499827319559,
        recv_window_ms=5000,
    )
    assert prepared.query == f"{P.DOC_QUERY}&signature={P.DOC_SIGNATURE}"
    assert prepared.body == ""
    assert prepared.target == f"/api/v3/order?{prepared.query}"
    assert prepared.headers == (("X-MBX-APIKEY", P.DOC_API_KEY),)
    # Nothing secret in its repr.
    assert P.DOC_SIGNATURE not in repr(prepared) and P.DOC_API_KEY not in repr(prepared)


def test_prepare_in_body_signs_the_body_like_the_documented_example_2() -> None:
    prepared = codec.prepare(
        doc_spec(),
        api_key=P.DOC_API_KEY,
        api_secret=P.DOC_SECRET,
        timestamp_ms=1499827319559,
        recv_window_ms=5000,
        params_in_body=True,
    )
    assert prepared.query == ""
    assert prepared.body == f"{P.DOC_QUERY}&signature={P.DOC_SIGNATURE}"
    assert ("Content-Type", "application/x-www-form-urlencoded") in prepared.headers
    assert prepared.target == "/api/v3/order"


def test_verify_and_split_signature() -> None:
    query = f"{P.DOC_QUERY}&signature={P.DOC_SIGNATURE}"
    payload, signature = codec.split_signature(query)
    assert (payload, signature) == (P.DOC_QUERY, P.DOC_SIGNATURE)
    # Anywhere in the string, other parameters keep their order.
    payload2, signature2 = codec.split_signature(f"a=1&signature={P.DOC_SIGNATURE}&b=2")
    assert (payload2, signature2) == ("a=1&b=2", P.DOC_SIGNATURE)
    assert codec.split_signature("a=1&b=2") == ("a=1&b=2", None)
    assert codec.verify_signature(P.DOC_SECRET, P.DOC_QUERY, P.DOC_SIGNATURE.upper())
    assert not codec.verify_signature(P.DOC_SECRET, P.DOC_QUERY + "1", P.DOC_SIGNATURE)
    assert not codec.verify_signature("other", P.DOC_QUERY, P.DOC_SIGNATURE)
    assert not codec.verify_signature(P.DOC_SECRET, P.DOC_QUERY, P.DOC_SIGNATURE[:-1])
    assert not codec.verify_signature(P.DOC_SECRET, P.DOC_QUERY, "")


def test_prepare_refuses_signed_requests_without_credentials() -> None:
    with pytest.raises(ValueError, match="api_key and api_secret"):
        codec.prepare(doc_spec(), api_key="k", timestamp_ms=1)
    with pytest.raises(ValueError, match="timestamp_ms"):
        codec.prepare(doc_spec(), api_key="k", api_secret="s")


def test_api_key_header_by_security() -> None:
    public = codec.prepare(codec.depth_request("BTCUSDT"), api_key="key")
    assert public.headers == ()
    # historicalTrades is security type NONE since 2023: no key is sent.
    assert codec.prepare(codec.historical_trades_request("BTCUSDT", 5), api_key="key").headers == ()
    market_data = codec.RequestSpec(
        "GET", "/api/v3/example", (("symbol", "BTCUSDT"),), security=Security.API_KEY
    )
    keyed = codec.prepare(market_data, api_key="key")
    assert keyed.headers == (("X-MBX-APIKEY", "key"),)
    assert "signature" not in keyed.query and "timestamp" not in keyed.query
    assert codec.prepare(market_data).headers == ()


def test_encoding_is_rfc3986() -> None:
    assert codec.encode_params([("a b", "x y"), ("u", "é€"), ("safe", "A-z_0.9~")]) == (
        "a%20b=x%20y&u=%C3%A9%E2%82%AC&safe=A-z_0.9~"
    )
    assert codec.encode_params([("symbols", '["BTCUSDT","BNBBTC"]')]) == (
        "symbols=%5B%22BTCUSDT%22%2C%22BNBBTC%22%5D"
    )
    assert codec.parse_query("a+b=x%20y&&c=") == [("a b", "x y"), ("c", "")]


def test_format_decimal_is_plain_notation() -> None:
    assert codec.format_decimal(D("1E-8")) == "0.00000001"
    assert codec.format_decimal(D("1E+2")) == "100"
    assert codec.format_decimal(D("0.10000000")) == "0.10000000"
    assert codec.format_decimal(D("-0")) == "0"
    with pytest.raises(ValueError):
        codec.format_decimal(D("Infinity"))


names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1)
values = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
param_lists = st.lists(st.tuples(names, values), max_size=8)


@settings(max_examples=200, deadline=None)
@given(params=param_lists)
def test_encoding_round_trips(params: list[tuple[str, str]]) -> None:
    assert codec.parse_query(codec.encode_params(params)) == params


@settings(max_examples=150, deadline=None)
@given(
    params=param_lists.filter(lambda ps: all(n != "signature" for n, _ in ps)),
    secret=st.text(min_size=1, max_size=64),
    timestamp=st.integers(min_value=0, max_value=2**45),
    recv_window=st.none() | st.integers(min_value=1, max_value=60000),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    in_body=st.booleans(),
)
def test_sign_then_verify_round_trips(
    params: list[tuple[str, str]],
    secret: str,
    timestamp: int,
    recv_window: int | None,
    method: str,
    in_body: bool,
) -> None:
    spec = RequestSpec(method, "/api/v3/x", tuple(params), Security.SIGNED)
    prepared = codec.prepare(
        spec,
        api_key="k",
        api_secret=secret,
        timestamp_ms=timestamp,
        recv_window_ms=recv_window,
        params_in_body=in_body,
    )
    # The server side: strip the signature from where it is, verify, decode.
    query, sig_q = codec.split_signature(prepared.query)
    body, sig_b = codec.split_signature(prepared.body)
    signature = sig_q or sig_b
    assert signature is not None
    assert codec.verify_signature(secret, codec.signature_payload(query, body), signature)
    assert not codec.verify_signature(secret + "x", codec.signature_payload(query, body), signature)
    expected = list(params)
    if recv_window is not None:
        expected.append(("recvWindow", str(recv_window)))
    expected.append(("timestamp", str(timestamp)))
    assert codec.parse_query(query) + codec.parse_query(body) == expected
    assert (prepared.body != "") == (in_body and method != "GET")


# =========================================================================== requests

ORDER = NewOrder(
    symbol="BTCUSDT",
    side=Side.BUY,
    type=OrderType.LIMIT,
    client_order_id="intent-7_x",
    quantity=D("0.00100000"),
    price=D("2.5E+4"),
    time_in_force=TimeInForce.GTC,
)


@pytest.mark.parametrize(
    ("spec", "method", "path", "params", "security", "weight", "orders"),
    [
        (codec.ping_request(), "GET", "/api/v3/ping", (), Security.NONE, 1, 0),
        (codec.server_time_request(), "GET", "/api/v3/time", (), Security.NONE, 1, 0),
        (codec.exchange_info_request(), "GET", "/api/v3/exchangeInfo", (), Security.NONE, 20, 0),
        (
            codec.exchange_info_request(["btcusdt"]),
            "GET",
            "/api/v3/exchangeInfo",
            (("symbol", "BTCUSDT"),),
            Security.NONE,
            20,
            0,
        ),
        (
            codec.exchange_info_request(["BTCUSDT", "BNBBTC"]),
            "GET",
            "/api/v3/exchangeInfo",
            (("symbols", '["BTCUSDT","BNBBTC"]'),),
            Security.NONE,
            20,
            0,
        ),
        (
            codec.depth_request("BTCUSDT", 1000),
            "GET",
            "/api/v3/depth",
            (("symbol", "BTCUSDT"), ("limit", "1000")),
            Security.NONE,
            50,
            0,
        ),
        (
            codec.recent_trades_request("BTCUSDT", 10),
            "GET",
            "/api/v3/trades",
            (("symbol", "BTCUSDT"), ("limit", "10")),
            Security.NONE,
            25,
            0,
        ),
        (
            codec.historical_trades_request("BTCUSDT", 42, 1000),
            "GET",
            "/api/v3/historicalTrades",
            (("symbol", "BTCUSDT"), ("limit", "1000"), ("fromId", "42")),
            Security.NONE,
            25,
            0,
        ),
        (
            codec.new_order_request(ORDER, OrderResponseType.RESULT),
            "POST",
            "/api/v3/order",
            (
                ("symbol", "BTCUSDT"),
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.00100000"),
                ("price", "25000"),
                ("newClientOrderId", "intent-7_x"),
                ("newOrderRespType", "RESULT"),
            ),
            Security.SIGNED,
            1,
            1,
        ),
        (
            codec.get_order_request("BTCUSDT", client_order_id="intent-7_x"),
            "GET",
            "/api/v3/order",
            (("symbol", "BTCUSDT"), ("origClientOrderId", "intent-7_x")),
            Security.SIGNED,
            4,
            0,
        ),
        (
            codec.get_order_request("BTCUSDT", order_id=28),
            "GET",
            "/api/v3/order",
            (("symbol", "BTCUSDT"), ("orderId", "28")),
            Security.SIGNED,
            4,
            0,
        ),
        (
            codec.cancel_order_request(
                "BTCUSDT", client_order_id="intent-7_x", new_client_order_id="cxl-1"
            ),
            "DELETE",
            "/api/v3/order",
            (
                ("symbol", "BTCUSDT"),
                ("origClientOrderId", "intent-7_x"),
                ("newClientOrderId", "cxl-1"),
            ),
            Security.SIGNED,
            1,
            0,
        ),
        (
            codec.open_orders_request("BTCUSDT"),
            "GET",
            "/api/v3/openOrders",
            (("symbol", "BTCUSDT"),),
            Security.SIGNED,
            6,
            0,
        ),
        (codec.open_orders_request(), "GET", "/api/v3/openOrders", (), Security.SIGNED, 80, 0),
        (
            codec.my_trades_request("BTCUSDT", from_id=7, limit=1000),
            "GET",
            "/api/v3/myTrades",
            (("symbol", "BTCUSDT"), ("fromId", "7"), ("limit", "1000")),
            Security.SIGNED,
            20,
            0,
        ),
        (
            codec.my_trades_request("BTCUSDT", order_id=28),
            "GET",
            "/api/v3/myTrades",
            (("symbol", "BTCUSDT"), ("orderId", "28"), ("limit", "500")),
            Security.SIGNED,
            5,
            0,
        ),
        (
            codec.account_request(omit_zero_balances=True),
            "GET",
            "/api/v3/account",
            (("omitZeroBalances", "true"),),
            Security.SIGNED,
            20,
            0,
        ),
    ],
)
def test_request_builders(
    spec: RequestSpec,
    method: str,
    path: str,
    params: tuple[tuple[str, str], ...],
    security: Security,
    weight: int,
    orders: int,
) -> None:
    assert (spec.method, spec.path, spec.params) == (method, path, params)
    assert spec.security is security
    assert (spec.weight, spec.order_count) == (weight, orders)
    assert spec.mutating is (method != "GET")
    assert spec.endpoint == f"{method} {path}"


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 5), (100, 5), (101, 25), (500, 25), (501, 50), (1000, 50), (1001, 250), (5000, 250)],
)
def test_depth_weight_by_limit(limit: int, weight: int) -> None:
    assert codec.depth_weight(limit) == weight
    assert codec.depth_request("BTCUSDT", limit).weight == weight


def test_market_and_stop_orders() -> None:
    market = NewOrder(
        symbol="BTCUSDT",
        side=Side.SELL,
        type=OrderType.MARKET,
        client_order_id="m1",
        quote_order_qty=D("100.5"),
    )
    assert codec.new_order_request(market).params == (
        ("symbol", "BTCUSDT"),
        ("side", "SELL"),
        ("type", "MARKET"),
        ("quoteOrderQty", "100.5"),
        ("newClientOrderId", "m1"),
        ("newOrderRespType", "FULL"),
    )
    stop = NewOrder(
        symbol="BTCUSDT",
        side=Side.SELL,
        type=OrderType.STOP_LOSS_LIMIT,
        client_order_id="s1",
        quantity=D("1"),
        price=D("90"),
        stop_price=D("91"),
        time_in_force=TimeInForce.IOC,
    )
    assert ("stopPrice", "91") in codec.new_order_request(stop).params
    assert ("timeInForce", "IOC") in codec.new_order_request(stop).params


@pytest.mark.parametrize(
    "build",
    [
        lambda: codec.depth_request("BTCUSDT", 0),
        lambda: codec.depth_request("BTCUSDT", 5001),
        lambda: codec.depth_request("BTC/USDT"),
        lambda: codec.recent_trades_request("BTCUSDT", 1001),
        lambda: codec.historical_trades_request("BTCUSDT", -1),
        lambda: codec.get_order_request("BTCUSDT"),
        lambda: codec.get_order_request("BTCUSDT", client_order_id="a", order_id=1),
        lambda: codec.get_order_request("BTCUSDT", client_order_id="bad id"),
        lambda: codec.cancel_order_request("BTCUSDT", order_id=1, new_client_order_id="x" * 37),
        lambda: codec.my_trades_request("BTCUSDT", from_id=1, start_time_ms=5),
        lambda: codec.exchange_info_request([]),
    ],
)
def test_invalid_requests_are_refused(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


# =========================================================================== usage headers


def test_usage_headers() -> None:
    reports = codec.parse_usage_headers(
        [
            ("x-mbx-used-weight", "10"),  # legacy, no interval: ignored
            ("X-MBX-USED-WEIGHT-1M", "53"),
            ("x-mbx-order-count-10s", "3"),
            ("X-MBX-ORDER-COUNT-1D", "42"),
            ("X-MBX-USED-WEIGHT-1H", "junk"),
            ("content-type", "application/json"),
        ]
    )
    assert [(r.window_name, r.used) for r in reports] == [
        ("REQUEST_WEIGHT:1M", 53),
        ("ORDERS:10S", 3),
        ("ORDERS:1D", 42),
    ]
    assert reports[1].type is RateLimitType.ORDERS
    assert reports[1].interval is RateLimitInterval.SECOND and reports[1].interval_num == 10


def test_usage_header_names_are_parsed_once_values_every_time() -> None:
    """The name's window is cached (every answer has the same few); the count never is."""
    from daemon.venues.binance.codec import ratelimits  # noqa: PLC0415 - its private cache

    for used in ("1", "2", "junk", "3"):
        reports = codec.parse_usage_headers([("X-MBX-USED-WEIGHT-1M", used)])
        assert [r.used for r in reports] == ([] if used == "junk" else [int(used)])
    assert ratelimits._usage_window("X-MBX-USED-WEIGHT-1M") == (
        RateLimitType.REQUEST_WEIGHT,
        1,
        RateLimitInterval.MINUTE,
    )
    # A venue making up names cannot grow the cache without bound.
    codec.parse_usage_headers([(f"x-mbx-order-count-{n}s", "1") for n in range(1, 500)])
    info = ratelimits._usage_window.cache_info()
    assert info.currsize <= info.maxsize == ratelimits._USAGE_NAMES_CACHED
    assert codec.parse_usage_headers([("x-mbx-order-count-0s", "1")]) == ()  # interval 0


# =========================================================================== errors


def body(code: int, msg: str) -> bytes:
    return json.dumps({"code": code, "msg": msg}).encode()


ERROR_CASES = [
    # (status, body, headers, mutating, class, policy class)
    (400, body(-2010, "Duplicate order sent."), [], True, DuplicateOrderError, PermanentError),
    (
        400,
        body(-2010, "Account has insufficient balance for requested action."),
        [],
        True,
        OrderRejectedError,
        PermanentError,
    ),
    (400, body(-2013, "Order does not exist."), [], False, OrderNotFoundError, PermanentError),
    (400, body(-2011, "Unknown order sent."), [], True, CancelRejectedError, PermanentError),
    (
        400,
        body(-1021, "Timestamp for this request is outside of the recvWindow."),
        [],
        True,
        TimestampOutOfWindowError,
        PermanentError,
    ),
    (
        400,
        body(-1022, "Signature for this request is not valid."),
        [],
        False,
        SignatureError,
        PermanentError,
    ),
    (
        400,
        body(-1013, "Filter failure: LOT_SIZE"),
        [],
        True,
        FilterFailureError,
        PermanentError,
    ),
    (
        401,
        body(-2015, "Invalid API-key, IP, or permissions for action."),
        [],
        False,
        ApiKeyRejectedError,
        PermanentError,
    ),
    (400, body(-1100, "Illegal characters found."), [], False, VenueRejectedError, PermanentError),
    (
        429,
        body(-1003, "Too much request weight used."),
        [("Retry-After", "7")],
        False,
        VenueRateLimitedError,
        RateLimitedError,
    ),
    (
        429,
        body(-1015, "Too many new orders; current limit is 100 orders per 10 SECOND."),
        [("Retry-After", "3")],
        True,
        VenueRateLimitedError,
        RateLimitedError,
    ),
    (
        418,
        body(-1003, "Way too much request weight used; IP banned until 1499827319559."),
        [("Retry-After", "120")],
        False,
        VenueRateLimitedError,
        RateLimitedError,
    ),
    (
        503,
        body(-1007, "Timeout waiting for response from backend server."),
        [],
        True,
        VenueOutcomeUnknownError,
        AmbiguousOutcomeError,
    ),
    (
        500,
        body(-1006, "An unexpected response was received."),
        [],
        True,
        VenueOutcomeUnknownError,
        AmbiguousOutcomeError,
    ),
    (
        400,
        body(-1007, "Timeout waiting for response from backend server."),
        [],
        True,
        VenueOutcomeUnknownError,
        AmbiguousOutcomeError,
    ),
    (503, b"Service Unavailable", [], True, VenueOutcomeUnknownError, AmbiguousOutcomeError),
    (502, b"<html>bad gateway</html>", [], False, VenueUnavailableError, TransientError),
    (
        503,
        body(-1007, "Timeout waiting for response."),
        [],
        False,
        VenueUnavailableError,
        TransientError,
    ),
    (
        400,
        body(-1008, "Server is currently overloaded."),
        [],
        True,
        VenueUnavailableError,
        TransientError,
    ),
    (
        403,
        b"<html><body>WAF Limit Violated</body></html>",
        [],
        False,
        ForbiddenError,
        PermanentError,
    ),
]


@pytest.mark.parametrize(
    ("status", "payload", "headers", "mutating", "cls", "policy"),
    ERROR_CASES,
    ids=[f"{c[0]}-{c[4].__name__}-{'mut' if c[3] else 'get'}" for c in ERROR_CASES],
)
def test_error_mapping(
    status: int,
    payload: bytes,
    headers: list[tuple[str, str]],
    mutating: bool,
    cls: type[VenueError],
    policy: type[Exception],
) -> None:
    error = codec.error_from_response(
        status,
        payload,
        headers,
        venue="binance",
        endpoint="POST /api/v3/order",
        mutating=mutating,
    )
    assert type(error) is cls
    assert isinstance(error, policy) and isinstance(error, VenueError)
    assert error.http_status == status and error.venue == "binance"
    assert error.endpoint == "POST /api/v3/order"
    code, msg = codec.parse_error_body(payload)
    assert (error.code, error.venue_message) == (code, msg)
    text = str(error)
    assert "POST /api/v3/order" in text and f"HTTP {status}" in text
    if code is not None:
        assert str(code) in text and msg is not None and msg in text


def test_error_details() -> None:
    filtered = codec.error_from_response(
        400,
        body(-2010, "Filter failure: PERCENT_PRICE_BY_SIDE"),
        [],
        venue="binance",
        endpoint="POST /api/v3/order",
        mutating=True,
    )
    assert isinstance(filtered, FilterFailureError)
    assert filtered.filter_type == "PERCENT_PRICE_BY_SIDE"
    limited = codec.error_from_response(
        429, body(-1003, "x"), [("retry-after", "7")], venue="b", endpoint="GET /", mutating=False
    )
    assert isinstance(limited, VenueRateLimitedError)
    assert limited.retry_after_s == 7.0 and not limited.banned
    banned = codec.error_from_response(418, b"", [], venue="b", endpoint="GET /", mutating=False)
    assert isinstance(banned, VenueRateLimitedError)
    assert banned.banned and banned.retry_after_s is None and banned.code is None
    now = dt.datetime(2015, 10, 21, 7, 27, 0, tzinfo=dt.UTC)
    dated = codec.error_from_response(
        429,
        b"",
        [("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")],
        venue="b",
        endpoint="GET /",
        mutating=False,
        now=now,
    )
    assert isinstance(dated, VenueRateLimitedError) and dated.retry_after_s == 60.0
    forbidden = codec.error_from_response(
        403, b"<html>\n  WAF   Limit </html>", [], venue="b", endpoint="GET /", mutating=False
    )
    assert forbidden.venue_message == "<html> WAF Limit </html>"


# =========================================================================== answers


def test_parse_server_time() -> None:
    assert codec.parse_server_time(P.dumps(P.SERVER_TIME)) == 1499827319559


def test_parse_exchange_info() -> None:
    info = codec.parse_exchange_info(P.dumps(P.EXCHANGE_INFO), venue="binance")
    assert info.server_time_ms == 1565246363776 and info.timezone == "UTC"
    assert [r.window_name for r in info.rate_limits] == [
        "REQUEST_WEIGHT:1M",
        "ORDERS:10S",
        "ORDERS:1D",
        "RAW_REQUESTS:5M",
    ]
    assert info.rate_limits[0].limit == 6000
    eth = info.symbol("ETHBTC")
    assert (eth.status, eth.base_asset, eth.quote_asset) == ("TRADING", "ETH", "BTC")
    assert "LIMIT_MAKER" in eth.order_types
    f = eth.filters
    assert (f.tick_size, f.min_price, f.max_price) == (D("0.000001"), D("0.000001"), D("100000"))
    assert (f.step_size, f.min_qty, f.max_qty) == (D("0.001"), D("0.001"), D("100000"))
    assert (f.market_step_size, f.market_min_qty, f.market_max_qty) == (None, None, D("1000"))
    assert (f.min_notional, f.max_notional) == (D("0.0001"), D("9000000"))
    assert f.apply_min_to_market and not f.apply_max_to_market
    assert f.max_num_orders == 200
    assert all(isinstance(v, Decimal) for v in (f.tick_size, f.min_notional))
    bnb = info.symbol("BNBBTC")
    assert not bnb.is_trading
    # A 0 in a filter disables that part; MIN_NOTIONAL is the older minimum.
    assert (bnb.filters.min_price, bnb.filters.max_price) == (None, None)
    assert bnb.filters.min_notional == D("0.001") and not bnb.filters.apply_min_to_market
    with pytest.raises(KeyError):
        info.symbol("NOPE")


def test_parse_price_bands() -> None:
    info = codec.parse_exchange_info(P.dumps(P.EXCHANGE_INFO))
    eth = info.symbol("ETHBTC").filters
    assert (eth.bid_multiplier_up, eth.bid_multiplier_down) == (D("5"), D("0.2"))
    assert (eth.ask_multiplier_up, eth.ask_multiplier_down) == (D("5"), D("0.2"))
    assert eth.percent_price_by_side_avg_mins == 5
    assert (eth.multiplier_up, eth.multiplier_down, eth.percent_price_avg_mins) == (
        None,
        None,
        None,
    )
    bnb = info.symbol("BNBBTC").filters
    # PERCENT_PRICE; its multiplierDown of 0 is a disabled part, not "price >= 0 x avg".
    assert (bnb.multiplier_up, bnb.multiplier_down, bnb.percent_price_avg_mins) == (
        D("1.3"),
        None,
        0,
    )
    assert bnb.bid_multiplier_up is None and bnb.ask_multiplier_down is None


def test_parsed_price_bands_judge_orders_by_side() -> None:
    """The parsed filters refuse what Binance would: BY_SIDE picks bid or ask multipliers."""
    info = copy.deepcopy(P.EXCHANGE_INFO)
    raw_filters = info["symbols"][0]["filters"]
    (at,) = [i for i, f in enumerate(raw_filters) if f["filterType"] == "PERCENT_PRICE_BY_SIDE"]
    raw_filters[at] = {
        "filterType": "PERCENT_PRICE_BY_SIDE",
        "bidMultiplierUp": "1.2",
        "bidMultiplierDown": "0",
        "askMultiplierUp": "0",
        "askMultiplierDown": "0.8",
        "avgPriceMins": 1,
    }
    filters = codec.parse_exchange_info(P.dumps(info)).symbol("ETHBTC").filters
    assert (filters.bid_multiplier_down, filters.ask_multiplier_up) == (None, None)

    def check(side: Side, price: str) -> list[tuple[str, str | None]]:
        problems = filters.check(
            order_type=OrderType.LIMIT,
            quantity=D("1000"),  # a notional within NOTIONAL at every price below
            price=D(price),
            reference_price=D("0.05"),
            side=side,
        )
        return [(p.code, p.filter_type) for p in problems]

    assert check(Side.BUY, "0.06") == []  # exactly 1.2 x: bounds are inclusive
    assert check(Side.BUY, "0.060001") == [("PRICE_ABOVE_BAND", "PERCENT_PRICE_BY_SIDE")]
    assert check(Side.BUY, "0.000001") == []  # the bid's lower bound is disabled
    assert check(Side.SELL, "0.04") == []
    assert check(Side.SELL, "0.039999") == [("PRICE_BELOW_BAND", "PERCENT_PRICE_BY_SIDE")]
    assert check(Side.SELL, "90") == []  # the ask's upper bound is disabled


def test_notional_wins_over_min_notional_whatever_the_order() -> None:
    info = copy.deepcopy(P.EXCHANGE_INFO)
    filters = info["symbols"][0]["filters"]
    filters.append({"filterType": "MIN_NOTIONAL", "minNotional": "7", "applyToMarket": True})
    parsed = codec.parse_exchange_info(P.dumps(info))
    assert parsed.symbol("ETHBTC").filters.min_notional == D("0.0001")


def test_parse_depth_and_trades() -> None:
    snap = codec.parse_depth(P.dumps(P.DEPTH), symbol="BNBBTC", venue="sim")
    assert snap.last_update_id == 1027024 and snap.venue == "sim" and snap.symbol == "BNBBTC"
    assert snap.bids == ((D("4.00000000"), D("431.00000000")),)
    assert snap.asks == ((D("4.00000200"), D("12.00000000")),)
    (trade,) = codec.parse_trades(P.dumps(P.TRADES), symbol="BNBBTC")
    assert trade == Trade(
        venue="binance",
        symbol="BNBBTC",
        trade_id=28457,
        price=D("4.00000100"),
        quantity=D("12.00000000"),
        quote_quantity=D("48.000012"),
        buyer_is_maker=True,
        trade_time_ms=1499865549590,
        event_time_ms=None,
    )


def test_parse_order_answers() -> None:
    ack = codec.parse_order(P.dumps(P.ORDER_ACK))
    assert (ack.order_id, ack.client_order_id, ack.time_ms) == (
        28,
        "6gCrw2kRUAF9CvJDGP16IP",
        1507725176595,
    )
    assert ack.status is None and ack.fills == () and ack.order_list_id == -1
    result = codec.parse_order(P.dumps(P.ORDER_RESULT))
    assert result.status is VenueOrderStatus.FILLED and result.type is OrderType.MARKET
    assert result.side is Side.SELL and result.executed_qty == D("10")
    assert result.cumulative_quote_qty == D("10") and result.working_time_ms == 1507725176595
    full = codec.parse_order(P.dumps(P.ORDER_FULL))
    assert [(f.trade_id, f.price, f.quantity, f.commission_asset) for f in full.fills] == [
        (56, D("4000"), D("1"), "USDT"),
        (57, D("3999"), D("5"), "USDT"),
    ]
    query = codec.parse_order(P.dumps(P.QUERY_ORDER))
    assert query.status is VenueOrderStatus.NEW and query.is_working is True
    assert query.time_in_force is TimeInForce.GTC and query.price == D("0.1")
    assert query.time_ms == 1499827319559 and query.update_time_ms == 1499827319559
    cancel = codec.parse_order(P.dumps(P.CANCEL_ORDER))
    # The order's own client id, not the cancel request's.
    assert cancel.client_order_id == "myOrder1"
    assert cancel.status is VenueOrderStatus.CANCELED and cancel.time_ms == 1684804350068
    opened = codec.parse_orders(P.dumps([P.QUERY_ORDER, P.QUERY_ORDER]))
    assert len(opened) == 2 and opened[0] == query
    assert codec.parse_orders(b"[]") == []


def test_parse_my_trades_and_account() -> None:
    (fill,) = codec.parse_my_trades(P.dumps(P.MY_TRADES))
    assert (fill.trade_id, fill.order_id, fill.symbol) == (28457, 100234, "BNBBTC")
    assert (fill.price, fill.quantity, fill.quote_quantity) == (
        D("4.00000100"),
        D("12"),
        D("48.000012"),
    )
    assert (fill.commission, fill.commission_asset, fill.is_buyer, fill.is_maker) == (
        D("10.1"),
        "BNB",
        True,
        False,
    )
    account = codec.parse_account(P.dumps(P.ACCOUNT))
    assert account.can_trade and account.account_type == "SPOT"
    assert account.update_time_ms == 123456789 and account.permissions == ("SPOT",)
    assert account.balance("BTC").free == D("4723846.89208129")
    assert account.balance("LTC").locked == D(0)


def test_numbers_never_become_floats() -> None:
    depth = {"lastUpdateId": 1, "bids": [[4.1, 2]], "asks": []}
    snap = codec.parse_depth(json.dumps(depth), symbol="X")
    assert snap.bids == ((D("4.1"), D("2")),)
    assert all(isinstance(x, Decimal) for x in snap.bids[0])


MALFORMED = [
    (codec.parse_server_time, b"not json"),
    (codec.parse_server_time, b'{"serverTime": "1"}'),
    (codec.parse_server_time, b"\xff\xfe"),
    (codec.parse_server_time, b"[]"),
    (lambda p: codec.parse_depth(p, symbol="X"), b'{"lastUpdateId":1,"bids":[["1"]],"asks":[]}'),
    (
        lambda p: codec.parse_depth(p, symbol="X"),
        b'{"lastUpdateId":1,"bids":[["NaN","1"]],"asks":[]}',
    ),
    (lambda p: codec.parse_depth(p, symbol="X"), b'{"lastUpdateId":1,"bids":[[NaN,1]],"asks":[]}'),
    (lambda p: codec.parse_trades(p, symbol="X"), b'{"id":1}'),
    (
        lambda p: codec.parse_trades(p, symbol="X"),
        b'[{"id":true,"price":"1","qty":"1","time":1,"isBuyerMaker":true}]',
    ),
    (codec.parse_order, P.dumps({**P.QUERY_ORDER, "status": "SOMETHING_NEW"})),
    (codec.parse_order, P.dumps({k: v for k, v in P.ORDER_ACK.items() if k != "orderId"})),
    (
        codec.parse_exchange_info,
        P.dumps({**P.EXCHANGE_INFO, "rateLimits": [{"rateLimitType": "X"}]}),
    ),
    (codec.parse_account, P.dumps({**P.ACCOUNT, "canTrade": "yes"})),
    (codec.parse_my_trades, P.dumps([{**P.MY_TRADES[0], "price": "1,5"}])),
]


@pytest.mark.parametrize(("parse", "raw"), MALFORMED)
def test_malformed_answers_raise_decode_errors_with_the_raw_payload(parse: Any, raw: bytes) -> None:
    with pytest.raises(VenueDecodeError) as info:
        parse(raw)
    assert info.value.raw == raw
    assert isinstance(info.value, PermanentError)
    assert info.value.venue == "binance"


def test_decode_error_message_shows_only_a_prefix() -> None:
    raw = b'{"serverTime": "' + b"x" * 5000 + b'"}'
    with pytest.raises(VenueDecodeError) as info:
        codec.parse_server_time(raw)
    assert len(str(info.value)) < 400 and info.value.raw == raw


# =========================================================================== streams


def test_stream_names_and_urls() -> None:
    assert codec.trade_stream("BNBBTC") == "bnbbtc@trade"
    assert codec.depth_stream("BNBBTC") == "bnbbtc@depth@100ms"
    assert codec.depth_stream("BNBBTC", 1000) == "bnbbtc@depth"
    base = "wss://stream.binance.com:9443"
    assert codec.stream_url(base, ["bnbbtc@trade"]) == f"{base}/ws/bnbbtc@trade"
    assert (
        codec.stream_url(base, ["bnbbtc@trade", "bnbbtc@depth@100ms"])
        == f"{base}/stream?streams=bnbbtc@trade/bnbbtc@depth@100ms"
    )
    assert codec.stream_url(base, ["a@trade"], combined=True) == f"{base}/stream?streams=a@trade"
    for bad in ([], ["a b"], ["a/b"], ["x@trade", "x@trade"]):
        with pytest.raises(ValueError):
            codec.stream_url(base, bad)
    with pytest.raises(ValueError):
        codec.stream_url(base, ["a@trade", "b@trade"], combined=False)
    with pytest.raises(ValueError):
        codec.depth_stream("BNBBTC", 250)


def test_parse_documented_frames() -> None:
    trade = codec.parse_stream_message(P.dumps(P.TRADE_EVENT))
    assert trade == Trade(
        venue="binance",
        symbol="BNBBTC",
        trade_id=12345,
        price=D("0.001"),
        quantity=D("100"),
        quote_quantity=D("0.100"),
        buyer_is_maker=True,
        trade_time_ms=1672515782136,
        event_time_ms=1672515782136,
    )
    depth = codec.parse_stream_message(json.dumps(P.DEPTH_EVENT), venue="sim")
    assert depth == DepthUpdate(
        venue="sim",
        symbol="BNBBTC",
        first_update_id=157,
        final_update_id=160,
        bids=((D("0.0024"), D("10")),),
        asks=((D("0.0026"), D("100")),),
        event_time_ms=1672515782136,
    )
    wrapped = codec.parse_stream_message(P.dumps({"stream": "bnbbtc@trade", "data": P.TRADE_EVENT}))
    assert wrapped == trade


@pytest.mark.parametrize(
    "frame",
    [
        {"e": "serverShutdown", "E": 1696933200000},
        {"stream": "bnbbtc@trade", "data": {"e": "serverShutdown", "E": 1696933200000}},
        {"event": {"e": "serverShutdown", "E": 1696933200000}},
    ],
)
def test_server_shutdown_in_every_shape(frame: dict[str, Any]) -> None:
    assert codec.parse_stream_message(P.dumps(frame)) == codec.ServerShutdown(1696933200000)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"[1,2]",
        P.dumps({"result": None, "id": 1}),
        P.dumps({"e": "aggTrade", "E": 1}),
        P.dumps({**P.TRADE_EVENT, "p": 0.001e400}),
        P.dumps({**P.TRADE_EVENT, "t": "12345"}),
        P.dumps({**P.TRADE_EVENT, "m": 1}),
        P.dumps({**P.DEPTH_EVENT, "U": 161}),  # u < U
        P.dumps({**P.DEPTH_EVENT, "b": [["1", "2", "3"]]}),
        P.dumps({"stream": "x", "data": [1]}),
    ],
)
def test_malformed_frames(raw: bytes) -> None:
    with pytest.raises(VenueDecodeError) as info:
        codec.parse_stream_message(raw)
    assert info.value.raw == raw


decimals = st.decimals(min_value="0.00000001", max_value="10000000", places=8).map(
    lambda d: format(d, "f")
)
ms = st.integers(min_value=0, max_value=2**45)
symbols = st.from_regex(r"\A[A-Z]{2,10}\Z")
trade_events = st.fixed_dictionaries(
    {
        "e": st.just("trade"),
        "E": ms,
        "s": symbols,
        "t": st.integers(min_value=0, max_value=2**62),
        "p": decimals,
        "q": decimals,
        "T": ms,
        "m": st.booleans(),
        "M": st.booleans(),
    }
)
levels = st.lists(st.tuples(decimals, decimals).map(list), max_size=5)


@st.composite
def depth_events(draw: st.DrawFn) -> dict[str, Any]:
    first = draw(st.integers(min_value=0, max_value=2**50))
    return {
        "e": "depthUpdate",
        "E": draw(ms),
        "s": draw(symbols),
        "U": first,
        "u": first + draw(st.integers(min_value=0, max_value=1000)),
        "b": draw(levels),
        "a": draw(levels),
    }


@settings(max_examples=150, deadline=None)
@given(event=trade_events | depth_events(), combined=st.booleans(), as_text=st.booleans())
def test_every_documented_frame_shape_parses(
    event: dict[str, Any], combined: bool, as_text: bool
) -> None:
    frame: dict[str, Any] = event
    if combined:
        kind = "trade" if event["e"] == "trade" else "depth@100ms"
        frame = {"stream": f"{event['s'].lower()}@{kind}", "data": event}
    raw: str | bytes = json.dumps(frame) if as_text else P.dumps(frame)
    parsed = codec.parse_stream_message(raw, venue="v")
    if event["e"] == "trade":
        assert isinstance(parsed, Trade)
        assert (parsed.trade_id, parsed.symbol, parsed.buyer_is_maker) == (
            event["t"],
            event["s"],
            event["m"],
        )
        assert (parsed.price, parsed.quantity) == (D(event["p"]), D(event["q"]))
        assert parsed.quote_quantity == D(event["p"]) * D(event["q"])
        assert (parsed.trade_time_ms, parsed.event_time_ms) == (event["T"], event["E"])
    else:
        assert isinstance(parsed, DepthUpdate)
        assert (parsed.first_update_id, parsed.final_update_id) == (event["U"], event["u"])
        assert parsed.bids == tuple((D(p), D(q)) for p, q in event["b"])
        assert parsed.asks == tuple((D(p), D(q)) for p, q in event["a"])
        assert parsed.event_time_ms == event["E"]


@settings(max_examples=100, deadline=None)
@given(event=trade_events, drop=st.sampled_from(["e", "E", "s", "t", "p", "q", "T", "m"]))
def test_a_frame_missing_any_field_is_malformed(event: dict[str, Any], drop: str) -> None:
    del event[drop]
    with pytest.raises(VenueDecodeError):
        codec.parse_stream_message(P.dumps(event))


@settings(max_examples=100, deadline=None)
@given(
    orders=st.lists(
        st.fixed_dictionaries(
            {
                "symbol": symbols,
                "orderId": st.integers(min_value=0, max_value=2**62),
                "orderListId": st.just(-1),
                "clientOrderId": st.from_regex(r"\A[A-Za-z0-9_-]{1,36}\Z"),
                "price": decimals,
                "origQty": decimals,
                "executedQty": decimals,
                "cummulativeQuoteQty": decimals,
                "status": st.sampled_from([s.value for s in VenueOrderStatus]),
                "timeInForce": st.sampled_from(["GTC", "IOC", "FOK"]),
                "type": st.sampled_from([t.value for t in OrderType]),
                "side": st.sampled_from(["BUY", "SELL"]),
                "time": ms,
                "updateTime": ms,
                "isWorking": st.booleans(),
            }
        ),
        max_size=5,
    )
)
def test_open_orders_of_any_documented_shape_parse(orders: list[dict[str, Any]]) -> None:
    reports = codec.parse_orders(P.dumps(orders))
    for raw, report in zip(orders, reports, strict=True):
        assert report.client_order_id == raw["clientOrderId"]
        assert report.status is VenueOrderStatus(raw["status"])
        assert report.executed_qty == D(raw["executedQty"])


@settings(max_examples=100, deadline=None)
@given(
    last_update_id=st.integers(min_value=0, max_value=2**62),
    bids=levels,
    asks=levels,
    trades=st.lists(
        st.fixed_dictionaries(
            {
                "id": st.integers(min_value=0, max_value=2**62),
                "price": decimals,
                "qty": decimals,
                "quoteQty": decimals,
                "time": ms,
                "isBuyerMaker": st.booleans(),
                "isBestMatch": st.booleans(),
            }
        ),
        max_size=5,
    ),
)
def test_rest_market_data_of_any_documented_shape_parses(
    last_update_id: int,
    bids: list[list[str]],
    asks: list[list[str]],
    trades: list[dict[str, Any]],
) -> None:
    snap = codec.parse_depth(
        P.dumps({"lastUpdateId": last_update_id, "bids": bids, "asks": asks}), symbol="X"
    )
    assert snap.last_update_id == last_update_id
    assert snap.bids == tuple((D(p), D(q)) for p, q in bids)
    assert snap.asks == tuple((D(p), D(q)) for p, q in asks)
    parsed = codec.parse_trades(P.dumps(trades), symbol="X")
    assert [(t.trade_id, t.price, t.quote_quantity, t.buyer_is_maker) for t in parsed] == [
        (t["id"], D(t["price"]), D(t["quoteQty"]), t["isBuyerMaker"]) for t in trades
    ]
