"""The Binance Spot protocol, sans I/O: requests, signatures, answers, errors, stream frames.

Everything here is a pure function of its arguments (no clock, no network, no
randomness), so the REST client (:mod:`.rest`) and the stream client
(:mod:`.stream`) share it and tests can pin it down exactly. The simulator
(:mod:`daemon.venues.sim`) does *not* use it: it is an independent reading of
the same Binance documentation (its wire rules are in
:mod:`daemon.venues.sim.protocol` and :mod:`daemon.venues.sim.auth`), so a
misunderstanding here cannot cancel out against the same one there. Sections:

1. **Encoding** — parameters are percent-encoded with RFC 3986 rules
   (everything but ``A-Za-z0-9-._~`` as UTF-8 ``%XX``) in the order given;
   decimals are written in plain notation (``0.00010000``, never ``1E-4``).
2. **Signing** — ``signature = hex(HMAC-SHA256(secret, totalParams))`` where
   ``totalParams`` is the encoded query string immediately followed by the
   encoded body (no separator), exactly as sent. :func:`split_signature`
   takes a signature back out (the REST client masks it in error text);
   :func:`verify_signature` and :func:`parse_query` are the server half of
   the rules, used by the tests to check what the client sends.
3. **Requests** — one builder per endpoint returning a :class:`RequestSpec`
   with the endpoint's documented request weight and order count;
   :func:`prepare` adds ``recvWindow``, ``timestamp``, ``signature`` and the
   ``X-MBX-APIKEY`` header.
4. **Usage headers** — ``X-MBX-USED-WEIGHT-<n><S|M|H|D>`` and
   ``X-MBX-ORDER-COUNT-<n><S|M|H|D>``.
5. **Errors** — HTTP status + ``{"code": -2010, "msg": "…"}`` → the project's
   exception tree (:func:`error_from_response`).
6. **Answers** — JSON bodies → :mod:`daemon.model` values; anything malformed
   raises :class:`~daemon.errors.VenueDecodeError` carrying the raw payload.
   The venue is an untrusted peer: every parser here answers *any* input with
   a valid result or its documented error (``VenueDecodeError`` for bodies and
   frames; an error body that cannot be read is text; a usage or
   ``Retry-After`` header that cannot be read is ignored), within the limits
   below (frame and body size, body depth, decimal length and exponent,
   64-bit integers).
7. **Streams** — stream names and URLs (raw ``/ws/<stream>``, combined
   ``/stream?streams=a/b``) and frame parsing (``trade``, ``depthUpdate``,
   ``serverShutdown``, with or without the combined envelope).

Numbers: prices and quantities are parsed from strings into ``Decimal``; JSON
numbers with a fraction are read as ``Decimal`` too, so no float ever appears.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, unquote

import attrs

from daemon.decode import DecodeError, json_loads
from daemon.errors import (
    ApiKeyRejectedError,
    CancelRejectedError,
    DuplicateOrderError,
    FilterFailureError,
    ForbiddenError,
    OrderNotFoundError,
    OrderRejectedError,
    SignatureError,
    TimestampOutOfWindowError,
    VenueDecodeError,
    VenueError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRejectedError,
    VenueUnavailableError,
)
from daemon.model.instruments import (
    ExchangeInfo,
    RateLimitInterval,
    RateLimitRule,
    RateLimitType,
    SymbolFilters,
    SymbolInfo,
)
from daemon.model.marketdata import DepthSnapshot, DepthUpdate, Level, Trade
from daemon.model.orders import (
    AccountBalance,
    AccountInfo,
    FillReport,
    NewOrder,
    OrderFill,
    OrderReport,
    OrderResponseType,
    OrderType,
    Side,
    TimeInForce,
    VenueOrderStatus,
    is_valid_client_order_id,
)
from daemon.resilience.http import parse_retry_after

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_RATE_LIMITS",
    "DEPTH_LIMIT_MAX",
    "TRADES_LIMIT_MAX",
    "PreparedRequest",
    "RequestSpec",
    "Security",
    "ServerShutdown",
    "StreamMessage",
    "UsageReport",
    "account_request",
    "cancel_order_request",
    "depth_request",
    "depth_stream",
    "depth_weight",
    "encode_params",
    "error_from_response",
    "exchange_info_request",
    "format_decimal",
    "get_order_request",
    "historical_trades_request",
    "my_trades_request",
    "new_order_request",
    "open_orders_request",
    "parse_account",
    "parse_depth",
    "parse_error_body",
    "parse_exchange_info",
    "parse_my_trades",
    "parse_order",
    "parse_orders",
    "parse_query",
    "parse_server_time",
    "parse_stream_message",
    "parse_trades",
    "parse_usage_headers",
    "ping_request",
    "prepare",
    "recent_trades_request",
    "server_time_request",
    "sign",
    "signature_payload",
    "split_signature",
    "stream_url",
    "trade_stream",
    "verify_signature",
]

#: The header that carries the API key.
API_KEY_HEADER = "X-MBX-APIKEY"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: Binance's documented default limits, used until ``exchangeInfo`` is read.
DEFAULT_RATE_LIMITS: tuple[RateLimitRule, ...] = (
    RateLimitRule(RateLimitType.REQUEST_WEIGHT, RateLimitInterval.MINUTE, 1, 6000),
    RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.SECOND, 10, 100),
    RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.DAY, 1, 200_000),
    RateLimitRule(RateLimitType.RAW_REQUESTS, RateLimitInterval.MINUTE, 5, 61_000),
)

DEPTH_LIMIT_MAX = 5000
TRADES_LIMIT_MAX = 1000

#: Documented request weights (Binance Spot REST API, ``/api/v3``).
WEIGHT_PING = 1
WEIGHT_TIME = 1
WEIGHT_EXCHANGE_INFO = 20
WEIGHT_TRADES = 25
WEIGHT_HISTORICAL_TRADES = 25
WEIGHT_NEW_ORDER = 1
WEIGHT_GET_ORDER = 4
WEIGHT_CANCEL_ORDER = 1
WEIGHT_OPEN_ORDERS_SYMBOL = 6
WEIGHT_OPEN_ORDERS_ALL = 80
WEIGHT_MY_TRADES = 20
WEIGHT_MY_TRADES_BY_ORDER = 5
WEIGHT_ACCOUNT = 20

_RAW_PREVIEW_CHARS = 120
_MESSAGE_CHARS = 300

# --------------------------------------------------------------------------- hostile-input limits
# The venue is an untrusted peer: everything it sends is decoded under these
# limits, and any failure of decoding (deep nesting, numbers beyond Python's
# int-string limit, bad UTF-8, odd shapes) is a VenueDecodeError, never
# another exception (see _decode).

#: Longest stream frame accepted (also the WebSocket's ``max_message_size``);
#: Binance's frames are a few hundred bytes, a 5000-level depth diff ~200 KB.
MAX_FRAME_BYTES = 1 << 20
#: Longest REST body decoded (``exchangeInfo`` for every symbol is a few MB).
MAX_BODY_BYTES = 64 << 20
#: Deepest nesting of a REST body (exchangeInfo nests 5 levels). Stream frames
#: are not walked (hot path): their schema refuses nested shapes, and nesting
#: beyond the interpreter's limit is caught as a RecursionError.
MAX_BODY_DEPTH = 16
#: Longest decimal accepted, as a JSON number or a string (Binance: ~20 chars).
MAX_DECIMAL_CHARS = 64
#: A decimal's adjusted exponent must lie within +-this (1e40 or 1e-40 at most):
#: ``1e999999`` is a valid JSON number but no price, and would blow up
#: arithmetic and formatting downstream.
MAX_DECIMAL_EXPONENT = 40
#: Integers (ids, times, counts) must fit a signed 64-bit column.
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
#: Longest ``Retry-After`` honoured (Binance's longest IP ban is 3 days).
MAX_RETRY_AFTER_S = 3 * 24 * 3600.0
_MAX_RETRY_AFTER_CHARS = 64

# =========================================================================== 1. encoding


def format_decimal(value: Decimal) -> str:
    """A decimal in plain notation as Binance expects it (``"0.00010000"``, ``"100"``).

    Raises:
        ValueError: NaN or infinity.
    """
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"not a finite Decimal: {value!r}")
    text = format(value, "f")
    return "0" if text in {"-0", "-0.0"} else text


def _pct(text: str) -> str:
    return quote(text, safe="", encoding="utf-8", errors="strict")


def encode_params(params: Iterable[tuple[str, str]]) -> str:
    """``k=v&k2=v2`` with RFC 3986 percent-encoding of names and values, order kept.

    Spaces become ``%20`` (never ``+``); unreserved characters
    (``A-Za-z0-9-._~``) are left alone. This exact string is both what is sent
    and what is signed, so whatever the server sees verifies.
    """
    return "&".join(f"{_pct(name)}={_pct(value)}" for name, value in params)


def parse_query(text: str) -> list[tuple[str, str]]:
    """Decode ``k=v&…`` (query string or form body) into pairs, order kept.

    ``+`` is read as a space (form encoding); empty segments are skipped. The
    server half of :func:`encode_params`: ``parse_query(encode_params(p)) == p``.
    """
    pairs: list[tuple[str, str]] = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


# =========================================================================== 2. signing


def signature_payload(query: str, body: str = "") -> str:
    """Binance's ``totalParams``: the query string immediately followed by the body.

    Both exactly as sent (percent-encoded), without the ``signature``
    parameter. There is no ``&`` between them: Binance's documented mixed
    example signs ``…timeInForce=GTCquantity=1…``.
    """
    return query + body


def sign(secret: str, payload: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``payload`` under ``secret``."""
    return hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_signature(secret: str, payload: str, signature: str) -> bool:
    """Whether ``signature`` is the HMAC-SHA256 of ``payload`` (hex, case-insensitive).

    Constant-time comparison; take the payload from :func:`split_signature`.
    The daemon never verifies a signature: the tests use this to check the
    client's requests (the simulator has its own, :mod:`daemon.venues.sim.auth`).
    """
    if not isinstance(signature, str) or len(signature) != 64:
        return False
    return hmac.compare_digest(sign(secret, payload), signature.lower())


def split_signature(encoded: str) -> tuple[str, str | None]:
    """Split an encoded query string (or body) into ``(without_signature, signature)``.

    The ``signature`` parameter is removed wherever it is, the other
    parameters keep their order and encoding, so the first element is what
    was signed (combine query and body with :func:`signature_payload`). The
    signature is ``None`` when absent; when it appears more than once the
    last one is returned (Binance rejects such requests with -1101 anyway).
    """
    kept: list[str] = []
    signature: str | None = None
    for part in encoded.split("&"):
        if part.startswith("signature="):
            signature = unquote(part[len("signature=") :])
        elif part:
            kept.append(part)
    return "&".join(kept), signature


# =========================================================================== 3. requests


class Security(enum.Enum):
    """What an endpoint needs besides its parameters (Binance's "security type")."""

    NONE = "NONE"  #: public
    API_KEY = "API_KEY"  #: the ``X-MBX-APIKEY`` header (MARKET_DATA; sent when we have one)
    SIGNED = "SIGNED"  #: key header + ``timestamp``/``recvWindow``/``signature`` (TRADE, USER_DATA)


@attrs.frozen
class RequestSpec:
    """One REST call before time, keys and signature are added.

    Attributes:
        method: ``GET``, ``POST`` or ``DELETE``.
        path: ``/api/v3/...``.
        params: Parameters in wire order, values already formatted.
        security: Whether a key and a signature are needed.
        weight: The endpoint's documented request weight for these parameters.
        order_count: What the call adds to the ORDERS limits (1 for a new order).
    """

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    security: Security = Security.NONE
    weight: int = 1
    order_count: int = 0

    @property
    def mutating(self) -> bool:
        """Whether the call can change state at the venue (never retried blindly)."""
        return self.method != "GET"

    @property
    def endpoint(self) -> str:
        """``"POST /api/v3/order"``: safe to log and to put in errors (no parameters)."""
        return f"{self.method} {self.path}"


@attrs.frozen(repr=False)
class PreparedRequest:
    """A request ready to send: exact query string, body and headers.

    Its ``repr`` shows only the endpoint: the query holds the signature and
    the headers the API key.
    """

    method: str
    path: str
    query: str
    body: str
    headers: tuple[tuple[str, str], ...]

    @property
    def target(self) -> str:
        """Path plus query string, to append to the base URL."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def __repr__(self) -> str:
        return f"PreparedRequest({self.method} {self.path}, <{len(self.query)} query chars>)"


def prepare(
    spec: RequestSpec,
    *,
    api_key: str | None = None,
    api_secret: str | None = None,
    timestamp_ms: int | None = None,
    recv_window_ms: int | None = None,
    params_in_body: bool = False,
) -> PreparedRequest:
    """Turn a :class:`RequestSpec` into exactly what goes on the wire.

    Signed requests get ``recvWindow`` (when given) and ``timestamp`` appended
    to their parameters, then ``signature`` (always last). Parameters go in
    the query string, which Binance accepts for every method (its documented
    signing example does this); ``params_in_body=True`` sends them of a
    POST/DELETE as a form body instead, signed the same way.

    Raises:
        ValueError: a signed request without key, secret or timestamp.
    """
    params = list(spec.params)
    headers: list[tuple[str, str]] = []
    if spec.security is not Security.NONE and api_key is not None:
        headers.append((API_KEY_HEADER, api_key))
    if spec.security is Security.SIGNED:
        if api_key is None or api_secret is None:
            raise ValueError(f"{spec.endpoint} is signed: api_key and api_secret are required")
        if timestamp_ms is None:
            raise ValueError(f"{spec.endpoint} is signed: timestamp_ms is required")
        if recv_window_ms is not None:
            params.append(("recvWindow", str(recv_window_ms)))
        params.append(("timestamp", str(timestamp_ms)))
    encoded = encode_params(params)
    in_body = params_in_body and spec.method != "GET" and bool(encoded)
    query, body = ("", encoded) if in_body else (encoded, "")
    if spec.security is Security.SIGNED:
        assert api_secret is not None
        signed = "signature=" + sign(api_secret, signature_payload(query, body))
        if in_body:
            body = f"{body}&{signed}"
        else:
            query = f"{query}&{signed}" if query else signed
    if body:
        headers.append(("Content-Type", FORM_CONTENT_TYPE))
    return PreparedRequest(spec.method, spec.path, query, body, tuple(headers))


def _symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not symbol or not symbol.isalnum():
        raise ValueError(f"invalid symbol {symbol!r}")
    return symbol.upper()


def _limit(limit: int, maximum: int, what: str) -> str:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum:
        raise ValueError(f"{what} limit must be an integer in 1..{maximum}, got {limit!r}")
    return str(limit)


def _non_negative(value: int, what: str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return str(value)


def _order_ref(client_order_id: str | None, order_id: int | None) -> tuple[tuple[str, str], ...]:
    if (client_order_id is None) == (order_id is None):
        raise ValueError("give exactly one of client_order_id and order_id")
    if client_order_id is not None:
        if not is_valid_client_order_id(client_order_id):
            raise ValueError(f"invalid client order id {client_order_id!r}")
        return (("origClientOrderId", client_order_id),)
    assert order_id is not None
    return (("orderId", _non_negative(order_id, "order_id")),)


def ping_request() -> RequestSpec:
    """``GET /api/v3/ping`` (weight 1): connectivity."""
    return RequestSpec("GET", "/api/v3/ping", weight=WEIGHT_PING)


def server_time_request() -> RequestSpec:
    """``GET /api/v3/time`` (weight 1): the server clock."""
    return RequestSpec("GET", "/api/v3/time", weight=WEIGHT_TIME)


def exchange_info_request(symbols: Sequence[str] | None = None) -> RequestSpec:
    """``GET /api/v3/exchangeInfo`` (weight 20), all symbols or ``symbols=["A","B"]``."""
    params: tuple[tuple[str, str], ...] = ()
    if symbols is not None:
        names = [_symbol(s) for s in symbols]
        if not names:
            raise ValueError("symbols must not be empty (pass None for all symbols)")
        if len(names) == 1:
            params = (("symbol", names[0]),)
        else:
            params = (("symbols", json.dumps(names, separators=(",", ":"))),)
    return RequestSpec("GET", "/api/v3/exchangeInfo", params, weight=WEIGHT_EXCHANGE_INFO)


def depth_weight(limit: int) -> int:
    """Documented weight of ``GET /api/v3/depth`` by ``limit``: 5, 25, 50 or 250."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def depth_request(symbol: str, limit: int = 100) -> RequestSpec:
    """``GET /api/v3/depth`` (weight 5..250 by ``limit``, 1..5000)."""
    params = (("symbol", _symbol(symbol)), ("limit", _limit(limit, DEPTH_LIMIT_MAX, "depth")))
    return RequestSpec("GET", "/api/v3/depth", params, weight=depth_weight(limit))


def recent_trades_request(symbol: str, limit: int = 500) -> RequestSpec:
    """``GET /api/v3/trades`` (weight 25): the latest ``limit`` (1..1000) trades."""
    params = (("symbol", _symbol(symbol)), ("limit", _limit(limit, TRADES_LIMIT_MAX, "trades")))
    return RequestSpec("GET", "/api/v3/trades", params, weight=WEIGHT_TRADES)


def historical_trades_request(
    symbol: str, from_id: int | None = None, limit: int = 500
) -> RequestSpec:
    """``GET /api/v3/historicalTrades`` (weight 25): ``limit`` trades from trade id ``fromId``.

    Security type NONE: Binance dropped the API key requirement in 2023 (it
    was MARKET_DATA), so no key is sent and capture needs none.
    """
    params: list[tuple[str, str]] = [
        ("symbol", _symbol(symbol)),
        ("limit", _limit(limit, TRADES_LIMIT_MAX, "trades")),
    ]
    if from_id is not None:
        params.append(("fromId", _non_negative(from_id, "from_id")))
    return RequestSpec(
        "GET",
        "/api/v3/historicalTrades",
        tuple(params),
        security=Security.NONE,
        weight=WEIGHT_HISTORICAL_TRADES,
    )


def new_order_request(
    order: NewOrder, resp_type: OrderResponseType = OrderResponseType.FULL
) -> RequestSpec:
    """``POST /api/v3/order`` (weight 1, one order): place ``order`` under its client id."""
    params: list[tuple[str, str]] = [
        ("symbol", order.symbol),
        ("side", order.side.value),
        ("type", order.type.value),
    ]
    if order.time_in_force is not None:
        params.append(("timeInForce", order.time_in_force.value))
    if order.quantity is not None:
        params.append(("quantity", format_decimal(order.quantity)))
    if order.quote_order_qty is not None:
        params.append(("quoteOrderQty", format_decimal(order.quote_order_qty)))
    if order.price is not None:
        params.append(("price", format_decimal(order.price)))
    if order.stop_price is not None:
        params.append(("stopPrice", format_decimal(order.stop_price)))
    params.append(("newClientOrderId", order.client_order_id))
    params.append(("newOrderRespType", resp_type.value))
    return RequestSpec(
        "POST",
        "/api/v3/order",
        tuple(params),
        security=Security.SIGNED,
        weight=WEIGHT_NEW_ORDER,
        order_count=1,
    )


def get_order_request(
    symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
) -> RequestSpec:
    """``GET /api/v3/order`` (weight 4) by ``origClientOrderId`` or ``orderId``."""
    params = (("symbol", _symbol(symbol)), *_order_ref(client_order_id, order_id))
    return RequestSpec(
        "GET", "/api/v3/order", params, security=Security.SIGNED, weight=WEIGHT_GET_ORDER
    )


def cancel_order_request(
    symbol: str,
    *,
    client_order_id: str | None = None,
    order_id: int | None = None,
    new_client_order_id: str | None = None,
) -> RequestSpec:
    """``DELETE /api/v3/order`` (weight 1) by ``origClientOrderId`` or ``orderId``.

    ``new_client_order_id`` names the cancel itself (Binance generates one
    otherwise).
    """
    params = [("symbol", _symbol(symbol)), *_order_ref(client_order_id, order_id)]
    if new_client_order_id is not None:
        if not is_valid_client_order_id(new_client_order_id):
            raise ValueError(f"invalid client order id {new_client_order_id!r}")
        params.append(("newClientOrderId", new_client_order_id))
    return RequestSpec(
        "DELETE",
        "/api/v3/order",
        tuple(params),
        security=Security.SIGNED,
        weight=WEIGHT_CANCEL_ORDER,
    )


def open_orders_request(symbol: str | None = None) -> RequestSpec:
    """``GET /api/v3/openOrders`` (weight 6 for one symbol, 80 for all)."""
    if symbol is None:
        return RequestSpec(
            "GET", "/api/v3/openOrders", security=Security.SIGNED, weight=WEIGHT_OPEN_ORDERS_ALL
        )
    return RequestSpec(
        "GET",
        "/api/v3/openOrders",
        (("symbol", _symbol(symbol)),),
        security=Security.SIGNED,
        weight=WEIGHT_OPEN_ORDERS_SYMBOL,
    )


def my_trades_request(
    symbol: str,
    *,
    order_id: int | None = None,
    from_id: int | None = None,
    start_time_ms: int | None = None,
    end_time_ms: int | None = None,
    limit: int = 500,
) -> RequestSpec:
    """``GET /api/v3/myTrades`` (weight 20; 5 with ``orderId``): our trades on ``symbol``.

    ``fromId`` cannot be combined with a time range (Binance refuses it).
    """
    if from_id is not None and (start_time_ms is not None or end_time_ms is not None):
        raise ValueError("from_id cannot be combined with start_time_ms/end_time_ms")
    params: list[tuple[str, str]] = [("symbol", _symbol(symbol))]
    if order_id is not None:
        params.append(("orderId", _non_negative(order_id, "order_id")))
    if start_time_ms is not None:
        params.append(("startTime", _non_negative(start_time_ms, "start_time_ms")))
    if end_time_ms is not None:
        params.append(("endTime", _non_negative(end_time_ms, "end_time_ms")))
    if from_id is not None:
        params.append(("fromId", _non_negative(from_id, "from_id")))
    params.append(("limit", _limit(limit, TRADES_LIMIT_MAX, "myTrades")))
    weight = WEIGHT_MY_TRADES_BY_ORDER if order_id is not None else WEIGHT_MY_TRADES
    return RequestSpec(
        "GET", "/api/v3/myTrades", tuple(params), security=Security.SIGNED, weight=weight
    )


def account_request(*, omit_zero_balances: bool = False) -> RequestSpec:
    """``GET /api/v3/account`` (weight 20): balances and permissions."""
    params = (("omitZeroBalances", "true"),) if omit_zero_balances else ()
    return RequestSpec(
        "GET", "/api/v3/account", params, security=Security.SIGNED, weight=WEIGHT_ACCOUNT
    )


# =========================================================================== 4. usage headers

_USAGE_HEADER = re.compile(
    r"\Ax-mbx-(used-weight|order-count)-([0-9]{1,6})([smhd])\Z", re.IGNORECASE | re.ASCII
)
#: A usage count: ASCII digits only (``int`` would accept other scripts' digits).
_USAGE_VALUE = re.compile(r"\A[0-9]{1,18}\Z")


@attrs.frozen
class UsageReport:
    """The venue's own count for one limit window, from a response header.

    ``X-MBX-USED-WEIGHT-1M: 53`` is ``UsageReport(REQUEST_WEIGHT, 1, MINUTE, 53)``.
    """

    type: RateLimitType
    interval_num: int
    interval: RateLimitInterval
    used: int

    @property
    def window_name(self) -> str:
        """The limiter window it corrects (see :attr:`RateLimitRule.window_name`)."""
        return f"{self.type.value}:{self.interval_num}{self.interval.letter}"


def parse_usage_headers(headers: Iterable[tuple[str, str]]) -> tuple[UsageReport, ...]:
    """Every ``X-MBX-USED-WEIGHT-*`` / ``X-MBX-ORDER-COUNT-*`` header (names case-insensitive).

    Headers with a value that is not a plain count (ASCII digits, at most 18)
    are skipped, and so is anything else odd about a header: a correction is
    optional, and a bad header must not fail a good answer.
    """
    reports = []
    for name, value in headers:
        try:
            report = _usage_report(name, value)
        except Exception:  # a hostile header is ignored, never a failed answer
            continue
        if report is not None:
            reports.append(report)
    return tuple(reports)


def _usage_report(name: str, value: str) -> UsageReport | None:
    match = _USAGE_HEADER.match(name.strip())
    if match is None:
        return None
    text = value.strip()
    if not _USAGE_VALUE.match(text):
        return None
    kind = (
        RateLimitType.REQUEST_WEIGHT
        if match.group(1).lower() == "used-weight"
        else RateLimitType.ORDERS
    )
    interval_num = int(match.group(2))
    if interval_num < 1:
        return None
    interval = RateLimitInterval.from_letter(match.group(3))
    return UsageReport(kind, interval_num, interval, int(text))


# =========================================================================== 5. errors

#: Codes meaning "not processed, try again later".
_OVERLOAD_CODES = frozenset({-1001, -1008})
#: Codes meaning "sent, status unknown".
_UNKNOWN_CODES = frozenset({-1000, -1006, -1007})
_RATE_LIMIT_CODES = frozenset({-1003, -1015})
DUPLICATE_ORDER_MESSAGE = "Duplicate order sent."
_FILTER_FAILURE = re.compile(r"Filter failure:\s*([A-Z_]+)")


def _clean(text: str, limit: int = _MESSAGE_CHARS) -> str:
    text = " ".join(text[: 4 * limit].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_error_body(body: bytes | str) -> tuple[int | None, str | None]:
    """``(code, msg)`` of a Binance error body, or ``(None, text)`` when it is not one.

    Non-JSON bodies (a WAF's HTML page) give their first characters as the
    message, whitespace collapsed. Never raises: a body that cannot be decoded
    (deep nesting, huge numbers, bad UTF-8, a code beyond 64 bits) is read as
    text, so the HTTP status alone decides the error.
    """
    try:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    except Exception:
        return None, None
    try:
        obj = json_loads(
            text, what="error body", max_bytes=MAX_BODY_BYTES, max_depth=MAX_BODY_DEPTH
        )
    except DecodeError:
        return None, (_clean(text) or None)
    if isinstance(obj, dict):
        code = obj.get("code")
        msg = obj.get("msg")
        code_ok = (
            isinstance(code, int) and not isinstance(code, bool) and INT64_MIN <= code <= INT64_MAX
        )
        return (
            code if code_ok else None,
            _clean(msg) if isinstance(msg, str) else None,
        )
    return None, _clean(text) or None


def _retry_after_s(value: str | None, now: dt.datetime) -> float | None:
    """``Retry-After`` in seconds, capped at :data:`MAX_RETRY_AFTER_S`; ``None`` if unusable.

    Never raises: a value that cannot be parsed (garbage, a date out of
    range, huge numbers) is treated as absent.
    """
    if value is None or len(value) > _MAX_RETRY_AFTER_CHARS:
        return None  # an HTTP date is 29 characters
    try:
        seconds = parse_retry_after(value, now=now)
    except Exception:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def error_from_response(
    status: int,
    body: bytes | str,
    headers: Iterable[tuple[str, str]],
    *,
    venue: str,
    endpoint: str,
    mutating: bool,
    now: dt.datetime | None = None,
) -> VenueError:
    """Map an error answer to the exception tree, keeping the venue's code and message.

    ==============================================  =====================================
    answer                                          exception
    ==============================================  =====================================
    HTTP 429 / 418, or code -1003 / -1015           :class:`VenueRateLimitedError`
                                                    (``Retry-After`` in ``retry_after_s``;
                                                    ``banned`` for 418)
    -1000 / -1006 / -1007, or HTTP 5xx              order request (``mutating``):
                                                    :class:`VenueOutcomeUnknownError`;
                                                    query: :class:`VenueUnavailableError`
    HTTP 403                                        :class:`ForbiddenError` (WAF)
    -1001 / -1008 (overload, not processed)         :class:`VenueUnavailableError`
    -2010 "Duplicate order sent."                   :class:`DuplicateOrderError`
    -1013, -2010 "Filter failure: X"                :class:`FilterFailureError`
    -2010                                           :class:`OrderRejectedError`
    -2013                                           :class:`OrderNotFoundError`
    -2011                                           :class:`CancelRejectedError`
    -1021                                           :class:`TimestampOutOfWindowError`
    -1022                                           :class:`SignatureError`
    -2014 / -2015                                   :class:`ApiKeyRejectedError`
    anything else                                   :class:`VenueRejectedError`
    ==============================================  =====================================

    A 5xx is checked before the code: Binance says the execution status of a
    5xx is unknown whatever the body, and for an order that means "may exist".

    Args:
        status: HTTP status (>= 400 expected).
        body: The answer's body.
        headers: The answer's headers (``Retry-After`` is read: capped at
            :data:`MAX_RETRY_AFTER_S`, ignored when it cannot be parsed).
        venue: Venue name for the error.
        endpoint: ``"POST /api/v3/order"`` (no query string: it holds the signature).
        mutating: Whether the request could change state (POST/DELETE).
        now: Wall clock for an HTTP-date ``Retry-After`` (UTC now by default).
    """
    code, msg = parse_error_body(body)
    fields: dict[str, Any] = {
        "venue": venue,
        "code": code,
        "venue_message": msg,
        "http_status": status,
        "endpoint": endpoint,
    }
    detail = f"HTTP {status}" + (f", code {code}" if code is not None else "")
    if msg:
        detail += f": {msg}"

    def text(summary: str) -> str:
        return f"{venue} {endpoint}: {summary} ({detail})"

    if status in (429, 418) or code in _RATE_LIMIT_CODES:
        retry_after = _retry_after_s(
            _header(headers, "Retry-After"), now or dt.datetime.now(dt.UTC)
        )
        banned = status == 418
        summary = "IP banned for exceeding rate limits" if banned else "rate limited"
        if retry_after is not None:
            summary += f", retry after {retry_after:g}s"
        return VenueRateLimitedError(
            text(summary), retry_after_s=retry_after, banned=banned, **fields
        )
    if status >= 500 or code in _UNKNOWN_CODES:
        if mutating:
            return VenueOutcomeUnknownError(
                text("outcome unknown, the request may have taken effect"), **fields
            )
        return VenueUnavailableError(text("venue error"), **fields)
    if status == 403:
        return ForbiddenError(text("forbidden by the venue's firewall"), **fields)
    if code in _OVERLOAD_CODES:
        return VenueUnavailableError(text("venue overloaded, not processed"), **fields)
    if code == -2010:
        if msg is not None and msg.strip().lower() == DUPLICATE_ORDER_MESSAGE.lower():
            return DuplicateOrderError(text("duplicate client order id of an open order"), **fields)
        match = _FILTER_FAILURE.search(msg or "")
        if match is not None:
            return FilterFailureError(
                text("order failed a filter"), filter_type=match.group(1), **fields
            )
        return OrderRejectedError(text("new order rejected"), **fields)
    if code == -1013:
        match = _FILTER_FAILURE.search(msg or "")
        return FilterFailureError(
            text("order failed a filter"),
            filter_type=match.group(1) if match else None,
            **fields,
        )
    if code == -2013:
        return OrderNotFoundError(text("order does not exist"), **fields)
    if code == -2011:
        return CancelRejectedError(text("cancel rejected"), **fields)
    if code == -1021:
        return TimestampOutOfWindowError(text("timestamp outside recvWindow"), **fields)
    if code == -1022:
        return SignatureError(text("signature rejected"), **fields)
    if code in (-2014, -2015):
        return ApiKeyRejectedError(text("API key rejected"), **fields)
    return VenueRejectedError(text("request rejected"), **fields)


# =========================================================================== 6. answers

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)


class _ShapeError(Exception):
    """Internal: the JSON did not have the documented shape."""


def _shape(message: str) -> NoReturn:
    raise _ShapeError(message)


def _json_decimal(text: str) -> Decimal:
    """``parse_float`` of venue JSON: a fractional number as ``Decimal``, bounded."""
    if len(text) > MAX_DECIMAL_CHARS:
        raise ValueError(f"a number of {len(text)} characters")
    return Decimal(text)


def _preview(raw: bytes | str) -> str:
    head = raw[: 4 * _RAW_PREVIEW_CHARS]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes | bytearray) else str(head)
    text = " ".join(text.split())
    if len(text) <= _RAW_PREVIEW_CHARS and len(head) == len(raw):
        return text
    return text[: _RAW_PREVIEW_CHARS - 1] + "…"


def _decode(
    payload: bytes | str,
    what: str,
    venue: str,
    build: Callable[[Any], T],
    *,
    max_bytes: int = MAX_BODY_BYTES,
    max_depth: int | None = MAX_BODY_DEPTH,
) -> T:
    """Load JSON, hand it to ``build``; *any* failure → VenueDecodeError with the raw.

    Decoding goes through :func:`daemon.decode.json_loads`, which turns every
    exception of the JSON parser (``RecursionError`` included) into a
    ``DecodeError``; whatever ``build`` raises on a hostile shape (``KeyError``,
    ``ArithmeticError`` from ``Decimal``, ``OverflowError``, a model's
    validator…) is caught as well. Only cancellation and the like
    (``BaseException``) pass through.
    """
    try:
        obj = json_loads(
            payload,
            what=what,
            max_bytes=max_bytes,
            max_depth=max_depth,
            parse_float=_json_decimal,
        )
    except DecodeError as exc:
        raise VenueDecodeError(
            f"{venue}: {what}: not JSON ({_clean(str(exc), _RAW_PREVIEW_CHARS)}); "
            f"payload: {_preview(payload)!r}",
            raw=payload,
            venue=venue,
        ) from None
    try:
        return build(obj)
    except Exception as exc:
        detail = str(exc) if isinstance(exc, _ShapeError | ValueError) else type(exc).__name__
        raise VenueDecodeError(
            f"{venue}: {what}: {_clean(detail, _RAW_PREVIEW_CHARS)}; "
            f"payload: {_preview(payload)!r}",
            raw=payload,
            venue=venue,
        ) from None


def _show(value: object) -> str:
    """A short, safe description of a value for an error message (no deep repr)."""
    if value is None or isinstance(value, bool | Decimal):
        return repr(value)
    if isinstance(value, int):
        return (
            repr(value)
            if -(10**30) < value < 10**30
            else f"an integer of {value.bit_length()} bits"
        )
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:39] + "…")
    if isinstance(value, list | dict):
        return f"a {'list' if isinstance(value, list) else 'object'} of {len(value)}"
    return type(value).__name__


class _Obj:
    """Strict, typed reads from one JSON object (raises _ShapeError)."""

    __slots__ = ("_d", "_what")

    def __init__(self, obj: object, what: str) -> None:
        if not isinstance(obj, dict):
            _shape(f"{what}: expected an object, got {type(obj).__name__}")
        self._d: dict[str, Any] = obj
        self._what = what

    def has(self, key: str) -> bool:
        return self._d.get(key) is not None

    def raw(self, key: str) -> Any:
        if key not in self._d:
            _shape(f"{self._what}: missing field {key!r}")
        return self._d[key]

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            _shape(f"{self._what}.{key}: expected a string, got {_show(value)}")
        return value

    def integer(self, key: str) -> int:
        value = self.raw(key)
        if not isinstance(value, int) or isinstance(value, bool):
            _shape(f"{self._what}.{key}: expected an integer, got {_show(value)}")
        if not INT64_MIN <= value <= INT64_MAX:
            _shape(f"{self._what}.{key}: {_show(value)} does not fit 64 bits")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            _shape(f"{self._what}.{key}: expected a boolean, got {_show(value)}")
        return value

    def dec(self, key: str) -> Decimal:
        return _decimal(self.raw(key), f"{self._what}.{key}")

    def items(self, key: str) -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list):
            _shape(f"{self._what}.{key}: expected a list, got {type(value).__name__}")
        return value

    def opt_str(self, key: str) -> str | None:
        return self.text(key) if self.has(key) else None

    def opt_int(self, key: str) -> int | None:
        return self.integer(key) if self.has(key) else None

    def opt_bool(self, key: str) -> bool | None:
        return self.flag(key) if self.has(key) else None

    def opt_dec(self, key: str) -> Decimal | None:
        return self.dec(key) if self.has(key) else None

    def enum(self, key: str, kind: type[E]) -> E:
        value = self.text(key)
        try:
            return kind(value)
        except ValueError:
            _shape(f"{self._what}.{key}: unknown {kind.__name__} {_show(value)}")

    def opt_enum(self, key: str, kind: type[E]) -> E | None:
        return self.enum(key, kind) if self.has(key) else None


def _decimal(value: object, where: str) -> Decimal:
    """A finite decimal from a string, an integer or a (bounded) JSON number.

    Refused: booleans, other types, more than :data:`MAX_DECIMAL_CHARS`
    characters, NaN/infinity, and magnitudes beyond 1e±:data:`MAX_DECIMAL_EXPONENT`
    (``"1e999999"`` parses, but no venue quantity is like it).
    """
    if isinstance(value, bool):
        _shape(f"{where}: expected a decimal string, got {_show(value)}")
    if isinstance(value, str):
        if len(value) > MAX_DECIMAL_CHARS:
            _shape(f"{where}: a decimal of {len(value)} characters")
        try:
            result = Decimal(value)
        except (InvalidOperation, ValueError):
            _shape(f"{where}: not a decimal: {_show(value)}")
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            _shape(f"{where}: {_show(value)} is out of range")
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value
    else:
        _shape(f"{where}: expected a finite decimal string, got {_show(value)}")
    if not result.is_finite():
        _shape(f"{where}: expected a finite decimal string, got {_show(value)}")
    if not -MAX_DECIMAL_EXPONENT <= result.adjusted() <= MAX_DECIMAL_EXPONENT:
        _shape(f"{where}: {_show(value)} is out of range")
    return result


def _levels(value: object, where: str) -> tuple[Level, ...]:
    if not isinstance(value, list):
        _shape(f"{where}: expected a list of [price, qty]")
    levels = []
    for i, level in enumerate(value):
        if not isinstance(level, list) or len(level) != 2:
            _shape(f"{where}[{i}]: expected [price, qty], got {_show(level)}")
        levels.append((_decimal(level[0], f"{where}[{i}]"), _decimal(level[1], f"{where}[{i}]")))
    return tuple(levels)


def _list(obj: object, what: str) -> list[Any]:
    if not isinstance(obj, list):
        _shape(f"{what}: expected a list, got {type(obj).__name__}")
    return obj


def parse_server_time(payload: bytes | str, *, venue: str = "binance") -> int:
    """``{"serverTime": 1499827319559}`` → the server clock in epoch ms."""
    return _decode(payload, "time", venue, lambda o: _Obj(o, "time").integer("serverTime"))


def _rate_limit(obj: object) -> RateLimitRule:
    o = _Obj(obj, "rateLimits[]")
    return RateLimitRule(
        o.enum("rateLimitType", RateLimitType),
        o.enum("interval", RateLimitInterval),
        o.integer("intervalNum"),
        o.integer("limit"),
    )


def _positive_or_none(value: Decimal | None) -> Decimal | None:
    """Binance writes a disabled filter part as 0."""
    return value if value is not None and value > 0 else None


def _filters(items: list[Any], where: str) -> SymbolFilters:
    fields: dict[str, Any] = {}
    saw_notional = False
    for i, item in enumerate(items):
        f = _Obj(item, f"{where}.filters[{i}]")
        kind = f.text("filterType")
        if kind == "PRICE_FILTER":
            fields["tick_size"] = _positive_or_none(f.dec("tickSize"))
            fields["min_price"] = _positive_or_none(f.dec("minPrice"))
            fields["max_price"] = _positive_or_none(f.dec("maxPrice"))
        elif kind == "LOT_SIZE":
            fields["step_size"] = _positive_or_none(f.dec("stepSize"))
            fields["min_qty"] = _positive_or_none(f.dec("minQty"))
            fields["max_qty"] = _positive_or_none(f.dec("maxQty"))
        elif kind == "MARKET_LOT_SIZE":
            fields["market_step_size"] = _positive_or_none(f.dec("stepSize"))
            fields["market_min_qty"] = _positive_or_none(f.dec("minQty"))
            fields["market_max_qty"] = _positive_or_none(f.dec("maxQty"))
        elif kind == "NOTIONAL":
            saw_notional = True
            fields["min_notional"] = _positive_or_none(f.dec("minNotional"))
            fields["apply_min_to_market"] = f.opt_bool("applyMinToMarket") is not False
            fields["max_notional"] = _positive_or_none(f.opt_dec("maxNotional"))
            fields["apply_max_to_market"] = f.opt_bool("applyMaxToMarket") is True
        elif kind == "MIN_NOTIONAL" and not saw_notional:
            fields["min_notional"] = _positive_or_none(f.dec("minNotional"))
            fields["apply_min_to_market"] = f.opt_bool("applyToMarket") is not False
        elif kind == "MAX_NUM_ORDERS":
            fields["max_num_orders"] = f.integer("maxNumOrders")
        elif kind == "PERCENT_PRICE":
            fields["multiplier_up"] = _positive_or_none(f.dec("multiplierUp"))
            fields["multiplier_down"] = _positive_or_none(f.dec("multiplierDown"))
            fields["percent_price_avg_mins"] = f.opt_int("avgPriceMins")
        elif kind == "PERCENT_PRICE_BY_SIDE":
            fields["bid_multiplier_up"] = _positive_or_none(f.dec("bidMultiplierUp"))
            fields["bid_multiplier_down"] = _positive_or_none(f.dec("bidMultiplierDown"))
            fields["ask_multiplier_up"] = _positive_or_none(f.dec("askMultiplierUp"))
            fields["ask_multiplier_down"] = _positive_or_none(f.dec("askMultiplierDown"))
            fields["percent_price_by_side_avg_mins"] = f.opt_int("avgPriceMins")
    return SymbolFilters(**fields)


def _symbol_info(obj: object) -> SymbolInfo:
    o = _Obj(obj, "symbols[]")
    name = o.text("symbol")
    where = f"symbols[{_show(name)}]"  # the venue's text, escaped for messages and logs
    order_types = (
        frozenset(_str_list(o.items("orderTypes"), f"{where}.orderTypes"))
        if o.has("orderTypes")
        else frozenset()
    )
    return SymbolInfo(
        symbol=name,
        status=o.text("status"),
        base_asset=o.text("baseAsset"),
        quote_asset=o.text("quoteAsset"),
        base_asset_precision=o.opt_int("baseAssetPrecision") or 8,
        quote_asset_precision=o.opt_int("quoteAssetPrecision") or o.opt_int("quotePrecision") or 8,
        order_types=order_types,
        filters=_filters(o.items("filters"), where),
    )


def _str_list(items: list[Any], where: str) -> list[str]:
    for item in items:
        if not isinstance(item, str):
            _shape(f"{where}: expected strings, got {_show(item)}")
    return items


def parse_exchange_info(payload: bytes | str, *, venue: str = "binance") -> ExchangeInfo:
    """``GET /api/v3/exchangeInfo`` → :class:`ExchangeInfo` (unknown fields and filters ignored)."""

    def build(obj: Any) -> ExchangeInfo:
        o = _Obj(obj, "exchangeInfo")
        symbols = [_symbol_info(s) for s in o.items("symbols")]
        return ExchangeInfo(
            venue=venue,
            timezone=o.opt_str("timezone") or "UTC",
            server_time_ms=o.integer("serverTime"),
            rate_limits=tuple(_rate_limit(r) for r in o.items("rateLimits")),
            symbols={s.symbol: s for s in symbols},
        )

    return _decode(payload, "exchangeInfo", venue, build)


def parse_depth(payload: bytes | str, *, symbol: str, venue: str = "binance") -> DepthSnapshot:
    """``{"lastUpdateId": …, "bids": [[p, q]…], "asks": […]}`` → :class:`DepthSnapshot`."""

    def build(obj: Any) -> DepthSnapshot:
        o = _Obj(obj, "depth")
        return DepthSnapshot(
            venue=venue,
            symbol=symbol,
            last_update_id=o.integer("lastUpdateId"),
            bids=_levels(o.raw("bids"), "depth.bids"),
            asks=_levels(o.raw("asks"), "depth.asks"),
        )

    return _decode(payload, "depth", venue, build)


def _rest_trade(obj: object, symbol: str, venue: str) -> Trade:
    o = _Obj(obj, "trades[]")
    price = o.dec("price")
    qty = o.dec("qty")
    quote = o.opt_dec("quoteQty")
    return Trade(
        venue=venue,
        symbol=symbol,
        trade_id=o.integer("id"),
        price=price,
        quantity=qty,
        quote_quantity=quote if quote is not None else price * qty,
        buyer_is_maker=o.flag("isBuyerMaker"),
        trade_time_ms=o.integer("time"),
        event_time_ms=None,
    )


def parse_trades(payload: bytes | str, *, symbol: str, venue: str = "binance") -> list[Trade]:
    """``/api/v3/trades`` or ``/api/v3/historicalTrades`` → trades, oldest first as sent."""
    return _decode(
        payload,
        "trades",
        venue,
        lambda obj: [_rest_trade(t, symbol, venue) for t in _list(obj, "trades")],
    )


def _fill(obj: object) -> OrderFill:
    o = _Obj(obj, "fills[]")
    return OrderFill(
        price=o.dec("price"),
        quantity=o.dec("qty"),
        commission=o.dec("commission"),
        commission_asset=o.text("commissionAsset"),
        trade_id=o.integer("tradeId"),
    )


def _order_list_id(o: _Obj) -> int:
    value = o.opt_int("orderListId")
    return -1 if value is None else value


def _order(obj: object, venue: str) -> OrderReport:
    o = _Obj(obj, "order")
    # A cancel answer names the order in origClientOrderId and the cancel in clientOrderId.
    client_id = o.opt_str("origClientOrderId") or o.text("clientOrderId")
    fills = tuple(_fill(f) for f in o.items("fills")) if o.has("fills") else ()
    return OrderReport(
        venue=venue,
        symbol=o.text("symbol"),
        order_id=o.integer("orderId"),
        client_order_id=client_id,
        order_list_id=_order_list_id(o),
        status=o.opt_enum("status", VenueOrderStatus),
        side=o.opt_enum("side", Side),
        type=o.opt_enum("type", OrderType),
        time_in_force=o.opt_enum("timeInForce", TimeInForce),
        price=o.opt_dec("price"),
        orig_qty=o.opt_dec("origQty"),
        executed_qty=o.opt_dec("executedQty"),
        cumulative_quote_qty=o.opt_dec("cummulativeQuoteQty"),
        orig_quote_order_qty=o.opt_dec("origQuoteOrderQty"),
        stop_price=o.opt_dec("stopPrice"),
        time_ms=o.opt_int("time") if o.has("time") else o.opt_int("transactTime"),
        update_time_ms=o.opt_int("updateTime"),
        working_time_ms=o.opt_int("workingTime"),
        is_working=o.opt_bool("isWorking"),
        fills=fills,
    )


def parse_order(payload: bytes | str, *, venue: str = "binance") -> OrderReport:
    """A new-order (ACK/RESULT/FULL), query or cancel answer → :class:`OrderReport`."""
    return _decode(payload, "order", venue, lambda obj: _order(obj, venue))


def parse_orders(payload: bytes | str, *, venue: str = "binance") -> list[OrderReport]:
    """``GET /api/v3/openOrders`` → reports."""
    return _decode(
        payload, "openOrders", venue, lambda obj: [_order(x, venue) for x in _list(obj, "orders")]
    )


def _my_trade(obj: object, venue: str) -> FillReport:
    o = _Obj(obj, "myTrades[]")
    return FillReport(
        venue=venue,
        symbol=o.text("symbol"),
        trade_id=o.integer("id"),
        order_id=o.integer("orderId"),
        order_list_id=_order_list_id(o),
        price=o.dec("price"),
        quantity=o.dec("qty"),
        quote_quantity=o.dec("quoteQty"),
        commission=o.dec("commission"),
        commission_asset=o.text("commissionAsset"),
        time_ms=o.integer("time"),
        is_buyer=o.flag("isBuyer"),
        is_maker=o.flag("isMaker"),
    )


def parse_my_trades(payload: bytes | str, *, venue: str = "binance") -> list[FillReport]:
    """``GET /api/v3/myTrades`` → fills."""
    return _decode(
        payload,
        "myTrades",
        venue,
        lambda obj: [_my_trade(x, venue) for x in _list(obj, "myTrades")],
    )


def _balance(obj: object) -> AccountBalance:
    o = _Obj(obj, "balances[]")
    return AccountBalance(o.text("asset"), o.dec("free"), o.dec("locked"))


def parse_account(payload: bytes | str, *, venue: str = "binance") -> AccountInfo:
    """``GET /api/v3/account`` → :class:`AccountInfo`."""

    def build(obj: Any) -> AccountInfo:
        o = _Obj(obj, "account")
        permissions = (
            tuple(_str_list(o.items("permissions"), "account.permissions"))
            if o.has("permissions")
            else ()
        )
        return AccountInfo(
            venue=venue,
            can_trade=o.flag("canTrade"),
            account_type=o.opt_str("accountType") or "SPOT",
            update_time_ms=o.integer("updateTime"),
            balances=tuple(_balance(b) for b in o.items("balances")),
            permissions=permissions,
        )

    return _decode(payload, "account", venue, build)


# =========================================================================== 7. streams

_STREAM_NAME = re.compile(r"\A[^\s/?#&]+\Z")


@attrs.frozen
class ServerShutdown:
    """The venue announced that this connection's server is going away: reconnect now."""

    event_time_ms: int | None


#: What a stream frame decodes to.
StreamMessage = Trade | DepthUpdate | ServerShutdown


def trade_stream(symbol: str) -> str:
    """``<symbol>@trade`` (symbol lower case)."""
    return f"{_symbol(symbol).lower()}@trade"


def depth_stream(symbol: str, update_speed_ms: int = 100) -> str:
    """``<symbol>@depth@100ms`` (or ``<symbol>@depth`` for the 1000 ms stream)."""
    if update_speed_ms not in (100, 1000):
        raise ValueError(f"update_speed_ms must be 100 or 1000, got {update_speed_ms}")
    name = f"{_symbol(symbol).lower()}@depth"
    return name + "@100ms" if update_speed_ms == 100 else name


def stream_url(base_url: str, streams: Sequence[str], *, combined: bool | None = None) -> str:
    """The URL of a raw (``/ws/<stream>``) or combined (``/stream?streams=a/b``) connection.

    ``combined=None`` picks raw for one stream and combined for several.
    """
    names = list(streams)
    if not names:
        raise ValueError("at least one stream is needed")
    for name in names:
        if not _STREAM_NAME.match(name):
            raise ValueError(f"invalid stream name {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate stream names in {names}")
    base = base_url.rstrip("/")
    if combined is None:
        combined = len(names) > 1
    if not combined:
        if len(names) != 1:
            raise ValueError("a raw stream connection carries exactly one stream")
        return f"{base}/ws/{names[0]}"
    return f"{base}/stream?streams={'/'.join(names)}"


def _stream_trade(o: _Obj, venue: str) -> Trade:
    price = o.dec("p")
    qty = o.dec("q")
    return Trade(
        venue=venue,
        symbol=o.text("s"),
        trade_id=o.integer("t"),
        price=price,
        quantity=qty,
        quote_quantity=price * qty,
        buyer_is_maker=o.flag("m"),
        trade_time_ms=o.integer("T"),
        event_time_ms=o.integer("E"),
    )


def _stream_depth(o: _Obj, venue: str) -> DepthUpdate:
    first = o.integer("U")
    final = o.integer("u")
    if final < first:
        _shape(f"depthUpdate: u ({final}) < U ({first})")
    return DepthUpdate(
        venue=venue,
        symbol=o.text("s"),
        first_update_id=first,
        final_update_id=final,
        bids=_levels(o.raw("b"), "depthUpdate.b"),
        asks=_levels(o.raw("a"), "depthUpdate.a"),
        event_time_ms=o.integer("E"),
    )


def _stream_event(obj: Any, venue: str) -> StreamMessage:
    o = _Obj(obj, "event")
    if isinstance(obj.get("event"), dict):
        # The WebSocket API's wrapper: {"event": {"e": "serverShutdown", "E": …}}
        o = _Obj(obj["event"], "event")
    elif "stream" in obj and "data" in obj:
        stream = o.text("stream")
        o = _Obj(obj["data"], f"{_show(stream)}.data")  # escaped: the venue's text
    kind = o.text("e")
    if kind == "trade":
        return _stream_trade(o, venue)
    if kind == "depthUpdate":
        return _stream_depth(o, venue)
    if kind == "serverShutdown":
        return ServerShutdown(o.opt_int("E"))
    _shape(f"unsupported event type {_show(kind)}")


def parse_stream_message(payload: bytes | str, *, venue: str = "binance") -> StreamMessage:
    """Decode one stream frame: raw, combined envelope, or a ``serverShutdown`` event.

    Shapes (Binance Spot WebSocket Streams)::

        {"e":"trade","E":…,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":…,"m":true,"M":true}
        {"e":"depthUpdate","E":…,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[…]}
        {"stream":"bnbbtc@trade","data":{…one of the above…}}
        {"e":"serverShutdown","E":…}   (also inside "data", or as {"event":{…}})

    Raises:
        VenueDecodeError: not JSON, not one of these shapes, or a field of the
            wrong type; ``raw`` holds the frame. This is the only exception:
            hostile frames (nested 100,000 deep, numbers beyond the int-string
            limit or 64 bits, ``1e999999`` prices, invalid UTF-8, longer than
            :data:`MAX_FRAME_BYTES`) all end here, to be dead-lettered.
    """
    return _decode(
        payload,
        "stream frame",
        venue,
        lambda obj: _stream_event(obj, venue),
        max_bytes=MAX_FRAME_BYTES,
        max_depth=None,  # hot path: the schema refuses nesting; RecursionError is caught
    )
