"""The Binance WebSocket API (``/ws-api/v3``), sans I/O: requests, signatures, answers, events.

Reference: ``web-socket-api.md`` and ``user-data-stream.md`` of Binance's Spot
API documentation. Everything here is a pure function of its arguments; the
connection (ids, timeouts, the clock, the limiter) is
:mod:`daemon.venues.binance.wsapi`.

* **Requests** — one builder per method (:func:`place_order_request`,
  :func:`cancel_order_request`, :func:`order_status_request`,
  :func:`open_orders_request`, :func:`my_trades_request`,
  :func:`subscribe_signature_request`, …) returning a :class:`WsRequestSpec`
  with the method's documented weight and order count. The order parameters
  are the REST ones (:func:`.requests.new_order_params`,
  :func:`.requests.order_ref_params`), so both transports send the same order.
  :func:`request_frame` makes the text frame ``{"id", "method", "params"}``.
* **Signatures** — unlike REST, the WebSocket API signs its *params object*:
  every parameter except ``signature`` (``apiKey`` included), sorted by name,
  written ``name=value`` joined with ``&``, values as UTF-8 and **not**
  percent-encoded (:func:`signature_payload`), then the hex HMAC-SHA256 of
  :func:`.signing.sign`.
* **Frames** — :func:`parse_frame` reads any text frame into a
  :class:`WsAnswer` (``id``, ``status``, ``result`` or ``error``,
  ``rateLimits``) or a :class:`WsEvent` (a user data stream event, already
  parsed). A frame that is not one of the documented
  shapes raises :class:`~daemon.errors.VenueDecodeError` (the strict readers of
  :mod:`.decoding`), never another exception. ``rateLimits`` are read
  leniently: an entry that cannot be read is skipped (a limiter correction is
  optional, and it must not cost a good answer — for an order, a decode error
  would mean "outcome unknown").
* **Errors** — :func:`answer_error` maps an error answer with the REST map
  (:func:`.errors.error_from_code`): same codes, same exceptions; the
  ``retryAfter`` of a 429/418 (an epoch-ms instant in ``error.data``) becomes
  ``retry_after_s``.
* **Events** — the event objects themselves are read by :mod:`.userdata`
  (:func:`.userdata.user_event`: the values of :mod:`daemon.model.userstream`,
  :class:`.marketdata.ServerShutdown`, or :class:`.userdata.OtherEvent` for a
  type tradingd does not use — never an error).
* **Results** — :func:`read_result` applies one of the readers below
  (:func:`order_result`, :func:`orders_result`, :func:`trades_result`,
  :func:`subscription_result`, :func:`server_time_result`) to a success's
  ``result``, any failure a :class:`~daemon.errors.VenueDecodeError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from daemon.errors import VenueDecodeError, VenueError
from daemon.model.instruments import RateLimitInterval, RateLimitType
from daemon.model.orders import (
    FillReport,
    NewOrder,
    OrderReport,
    OrderResponseType,
    is_valid_client_order_id,
)
from daemon.venues.binance.codec.decoding import (
    INT64_MAX,
    INT64_MIN,
    MAX_BODY_DEPTH,
    Obj,
    ShapeError,
    bad_shape,
    clean,
    decode,
    show,
)
from daemon.venues.binance.codec.errors import error_from_code, is_rate_limited
from daemon.venues.binance.codec.orders import fill_report, order_report
from daemon.venues.binance.codec.ratelimits import MAX_RETRY_AFTER_S, UsageReport
from daemon.venues.binance.codec.requests import (
    TRADES_LIMIT_MAX,
    WEIGHT_CANCEL_ORDER,
    WEIGHT_GET_ORDER,
    WEIGHT_MY_TRADES,
    WEIGHT_MY_TRADES_BY_ORDER,
    WEIGHT_NEW_ORDER,
    WEIGHT_OPEN_ORDERS_ALL,
    WEIGHT_OPEN_ORDERS_SYMBOL,
    WEIGHT_PING,
    WEIGHT_TIME,
    new_order_params,
    order_ref_params,
    symbol_param,
)
from daemon.venues.binance.codec.signing import sign
from daemon.venues.binance.codec.userdata import OtherEvent, UserEvent, lenient_int, user_event

__all__ = [
    "MAX_WS_FRAME_BYTES",
    "WEIGHT_CONNECT",
    "WEIGHT_USER_STREAM",
    "OtherEvent",
    "ParamValue",
    "UserEvent",
    "WsAnswer",
    "WsEvent",
    "WsFrame",
    "WsRequestSpec",
    "answer_error",
    "cancel_order_request",
    "my_trades_request",
    "open_orders_request",
    "order_result",
    "order_status_request",
    "orders_result",
    "parse_frame",
    "ping_request",
    "place_order_request",
    "read_result",
    "request_frame",
    "server_time_result",
    "session_subscriptions_request",
    "sign_params",
    "signature_payload",
    "subscribe_signature_request",
    "subscription_result",
    "time_request",
    "trades_result",
    "unsubscribe_request",
]

T = TypeVar("T")

#: Longest frame read from a WebSocket API connection (also its
#: ``max_message_size``): an answer carries a whole ``openOrders`` or
#: ``myTrades`` list (1000 trades are ~300 KB), more than a market frame.
MAX_WS_FRAME_BYTES = 8 << 20
#: Opening a WebSocket API connection costs 2 request weight.
WEIGHT_CONNECT = 2
#: ``userDataStream.subscribe.signature``, ``.unsubscribe``, ``session.subscriptions``.
WEIGHT_USER_STREAM = 2

#: A parameter value: text (symbols, enums, decimals in plain notation) or an integer.
ParamValue = str | int

#: Parameters the documentation types INT/LONG: sent as JSON numbers, as in its examples.
_INTEGER_PARAMS = frozenset(
    {"orderId", "fromId", "limit", "startTime", "endTime", "recvWindow", "timestamp"}
)
_PREVIEW_CHARS = 120


# =========================================================================== requests


@attrs.frozen
class WsRequestSpec:
    """One WebSocket API call before its id, time, key and signature are added.

    Attributes:
        method: The method name (``"order.place"``).
        params: Parameters in the order given (the order is not significant
            on the wire; the signature sorts them).
        signed: Whether ``apiKey``, ``timestamp``, ``recvWindow`` and
            ``signature`` are added (TRADE, USER_DATA, USER_STREAM).
        weight: The method's documented request weight.
        order_count: What the call adds to the ORDERS limits (1 for ``order.place``).
        mutating: Whether the call can change state at the venue (an order
            placed or canceled): never resent blindly, its lost answer is
            "outcome unknown".
    """

    method: str
    params: tuple[tuple[str, ParamValue], ...] = ()
    signed: bool = False
    weight: int = 1
    order_count: int = 0
    mutating: bool = False

    @property
    def endpoint(self) -> str:
        """``"ws-api order.place"``: safe to log and to put in errors (no parameters)."""
        return f"ws-api {self.method}"


def _typed(params: tuple[tuple[str, str], ...]) -> tuple[tuple[str, ParamValue], ...]:
    """REST-formatted parameters with the integer ones as numbers (the documented JSON)."""
    return tuple((name, int(value) if name in _INTEGER_PARAMS else value) for name, value in params)


def _non_negative(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def ping_request() -> WsRequestSpec:
    """``ping`` (weight 1): request-response connectivity."""
    return WsRequestSpec("ping", weight=WEIGHT_PING)


def time_request() -> WsRequestSpec:
    """``time`` (weight 1): the server clock (``{"serverTime": …}``)."""
    return WsRequestSpec("time", weight=WEIGHT_TIME)


def place_order_request(
    order: NewOrder, resp_type: OrderResponseType = OrderResponseType.FULL
) -> WsRequestSpec:
    """``order.place`` (weight 1, one order): the REST new order's parameters."""
    return WsRequestSpec(
        "order.place",
        _typed(new_order_params(order, resp_type)),
        signed=True,
        weight=WEIGHT_NEW_ORDER,
        order_count=1,
        mutating=True,
    )


def cancel_order_request(
    symbol: str,
    *,
    client_order_id: str | None = None,
    order_id: int | None = None,
    new_client_order_id: str | None = None,
) -> WsRequestSpec:
    """``order.cancel`` (weight 1) by ``origClientOrderId`` or ``orderId``."""
    params = [("symbol", symbol_param(symbol)), *order_ref_params(client_order_id, order_id)]
    if new_client_order_id is not None:
        if not is_valid_client_order_id(new_client_order_id):
            raise ValueError(f"invalid client order id {new_client_order_id!r}")
        params.append(("newClientOrderId", new_client_order_id))
    return WsRequestSpec(
        "order.cancel",
        _typed(tuple(params)),
        signed=True,
        weight=WEIGHT_CANCEL_ORDER,
        mutating=True,
    )


def order_status_request(
    symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
) -> WsRequestSpec:
    """``order.status`` (weight 4) by ``origClientOrderId`` or ``orderId``."""
    params = (("symbol", symbol_param(symbol)), *order_ref_params(client_order_id, order_id))
    return WsRequestSpec("order.status", _typed(params), signed=True, weight=WEIGHT_GET_ORDER)


def open_orders_request(symbol: str | None = None) -> WsRequestSpec:
    """``openOrders.status`` (weight 6 for one symbol, 80 for all)."""
    if symbol is None:
        return WsRequestSpec("openOrders.status", signed=True, weight=WEIGHT_OPEN_ORDERS_ALL)
    return WsRequestSpec(
        "openOrders.status",
        (("symbol", symbol_param(symbol)),),
        signed=True,
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
) -> WsRequestSpec:
    """``myTrades`` (weight 20; 5 with ``orderId``): our trades on ``symbol``.

    ``fromId`` cannot be combined with a time range, nor ``orderId`` with one
    (Binance refuses both).
    """
    if from_id is not None and (start_time_ms is not None or end_time_ms is not None):
        raise ValueError("from_id cannot be combined with start_time_ms/end_time_ms")
    if order_id is not None and (start_time_ms is not None or end_time_ms is not None):
        raise ValueError("order_id cannot be combined with start_time_ms/end_time_ms")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= TRADES_LIMIT_MAX:
        raise ValueError(
            f"myTrades limit must be an integer in 1..{TRADES_LIMIT_MAX}, got {limit!r}"
        )
    params: list[tuple[str, ParamValue]] = [("symbol", symbol_param(symbol))]
    if order_id is not None:
        params.append(("orderId", _non_negative(order_id, "order_id")))
    if start_time_ms is not None:
        params.append(("startTime", _non_negative(start_time_ms, "start_time_ms")))
    if end_time_ms is not None:
        params.append(("endTime", _non_negative(end_time_ms, "end_time_ms")))
    if from_id is not None:
        params.append(("fromId", _non_negative(from_id, "from_id")))
    params.append(("limit", limit))
    weight = WEIGHT_MY_TRADES_BY_ORDER if order_id is not None else WEIGHT_MY_TRADES
    return WsRequestSpec("myTrades", tuple(params), signed=True, weight=weight)


def subscribe_signature_request() -> WsRequestSpec:
    """``userDataStream.subscribe.signature`` (weight 2): this key's account events.

    Its parameters are only ``apiKey``, ``timestamp`` (and ``recvWindow``) and
    ``signature``, which :func:`request_frame` adds.
    """
    return WsRequestSpec(
        "userDataStream.subscribe.signature", signed=True, weight=WEIGHT_USER_STREAM
    )


def unsubscribe_request(subscription_id: int | None = None) -> WsRequestSpec:
    """``userDataStream.unsubscribe`` (weight 2): one subscription, or all without an id."""
    params: tuple[tuple[str, ParamValue], ...] = ()
    if subscription_id is not None:
        params = (("subscriptionId", _non_negative(subscription_id, "subscription_id")),)
    return WsRequestSpec("userDataStream.unsubscribe", params, weight=WEIGHT_USER_STREAM)


def session_subscriptions_request() -> WsRequestSpec:
    """``session.subscriptions`` (weight 2): the active subscriptions of this connection."""
    return WsRequestSpec("session.subscriptions", weight=WEIGHT_USER_STREAM)


# =========================================================================== signing


def _text(value: ParamValue) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"a parameter value must be a string or an integer, got {value!r}")
    return value if isinstance(value, str) else str(value)


def signature_payload(params: Mapping[str, ParamValue]) -> str:
    """The text the WebSocket API signs: ``name=value`` sorted by name, joined with ``&``.

    Every parameter but ``signature`` takes part (``apiKey`` too); values are
    written as they are (UTF-8, **not** percent-encoded): the documented
    payload of a full-width digit symbol contains those very characters.
    """
    return "&".join(
        f"{name}={_text(params[name])}" for name in sorted(params) if name != "signature"
    )


def sign_params(params: Mapping[str, ParamValue], secret: str) -> str:
    """The lower-case hex HMAC-SHA256 ``signature`` of ``params`` under ``secret``."""
    return sign(secret, signature_payload(params))


def request_frame(
    spec: WsRequestSpec,
    request_id: int | str,
    *,
    api_key: str | None = None,
    api_secret: str | None = None,
    timestamp_ms: int | None = None,
    recv_window_ms: int | None = None,
) -> str:
    """The text frame of one request: ``{"id", "method", "params"}``.

    A signed request gets ``apiKey``, ``recvWindow`` (when given),
    ``timestamp`` and then ``signature`` over all of them. The frame holds
    the API key and the signature: never log it.

    Raises:
        ValueError: a signed request without key, secret or timestamp.
    """
    params: dict[str, ParamValue] = dict(spec.params)
    if spec.signed:
        if not api_key or not api_secret:
            raise ValueError(f"{spec.endpoint} is signed: api_key and api_secret are required")
        if timestamp_ms is None:
            raise ValueError(f"{spec.endpoint} is signed: timestamp_ms is required")
        params["apiKey"] = api_key
        if recv_window_ms is not None:
            params["recvWindow"] = recv_window_ms
        params["timestamp"] = timestamp_ms
        params["signature"] = sign_params(params, api_secret)
    frame: dict[str, Any] = {"id": request_id, "method": spec.method}
    if params:
        frame["params"] = params
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


# =========================================================================== frames


@attrs.frozen
class WsAnswer:
    """The answer to one request.

    Attributes:
        id: The request's ``id``, echoed (``None`` when the venue could not
            read the request's).
        status: HTTP-like status (200 on success).
        result: The decoded ``result`` (an object or a list) of a success;
            read it with :func:`read_result`.
        error_code: ``error.code`` of a failure.
        error_msg: ``error.msg`` of a failure (whitespace collapsed, cut).
        retry_after_ms: ``error.data.retryAfter``: when a rate-limited caller
            may retry (epoch ms).
        server_time_ms: ``error.data.serverTime``, when given.
        rate_limits: The venue's own counts (``rateLimits``), readable entries only.
        raw: The frame as received (for a decode error's ``raw``).
    """

    id: int | str | None
    status: int
    result: Any = None
    error_code: int | None = None
    error_msg: str | None = None
    retry_after_ms: int | None = None
    server_time_ms: int | None = None
    rate_limits: tuple[UsageReport, ...] = ()
    raw: str | bytes = attrs.field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """A success (2xx) with a result."""
        return 200 <= self.status < 300


@attrs.frozen
class WsEvent:
    """A user data stream event: ``{"subscriptionId": N, "event": {...}}``."""

    subscription_id: int | None
    event: UserEvent


#: What :func:`parse_frame` returns.
WsFrame = WsAnswer | WsEvent


def _request_id(value: object) -> int | str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return value
    bad_shape(f"answer.id: expected an integer, a string or null, got {show(value)}")


def _rate_limit(entry: object) -> UsageReport | None:
    if not isinstance(entry, dict):
        return None
    kind, interval, num, count = (
        entry.get("rateLimitType"),
        entry.get("interval"),
        entry.get("intervalNum"),
        entry.get("count"),
    )
    try:
        if not (isinstance(kind, str) and isinstance(interval, str)):
            return None
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT64_MAX
            for v in (num, count)
        ):
            return None
        assert isinstance(num, int) and isinstance(count, int)
        if num < 1:
            return None
        return UsageReport(RateLimitType(kind), num, RateLimitInterval(interval), count)
    except ValueError:  # an unknown type or interval: not a window we keep
        return None


def _rate_limits(value: object) -> tuple[UsageReport, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(r for r in (_rate_limit(e) for e in value) if r is not None)


def _answer(obj: dict[str, Any], raw: str | bytes) -> WsAnswer:
    o = Obj(obj, "answer")
    status = o.integer("status")
    request_id = _request_id(obj.get("id"))
    limits = _rate_limits(obj.get("rateLimits"))
    if 200 <= status < 300:
        if "result" not in obj:
            bad_shape("answer: a success without a result")
        return WsAnswer(request_id, status, obj["result"], rate_limits=limits, raw=raw)
    error = obj.get("error")
    error = error if isinstance(error, dict) else {}
    data = error.get("data")
    data = data if isinstance(data, dict) else {}
    text = error.get("msg")
    return WsAnswer(
        request_id,
        status,
        None,
        lenient_int(error.get("code")),
        clean(text) if isinstance(text, str) else None,
        lenient_int(data.get("retryAfter")),
        lenient_int(data.get("serverTime")),
        limits,
        raw,
    )


def parse_frame(payload: str | bytes, *, venue: str = "binance") -> WsFrame:
    """Decode one WebSocket API frame: an answer or a user data stream event.

    Shapes::

        {"id": 7, "status": 200, "result": {...} | [...], "rateLimits": [...]}
        {"id": 7, "status": 400, "error": {"code": -2010, "msg": "..."}, "rateLimits": [...]}
        {"subscriptionId": 0, "event": {"e": "executionReport", ...}}
        {"event": {"e": "serverShutdown", "E": ...}}

    Raises:
        VenueDecodeError: not JSON, longer than :data:`MAX_WS_FRAME_BYTES`,
            nested deeper than the REST bodies, not one of these shapes, or a
            field of the wrong type (an event's fields included); ``raw``
            holds the frame. This is the only exception.
    """

    def build(obj: Any) -> WsFrame:
        if not isinstance(obj, dict):
            bad_shape(f"frame: expected an object, got {type(obj).__name__}")
        if "status" in obj:
            return _answer(obj, payload)
        if "event" in obj:
            sub = Obj(obj, "frame").opt_int("subscriptionId")
            return WsEvent(sub, user_event(obj["event"], venue))
        bad_shape("frame: neither an answer (status) nor an event")

    return decode(
        payload,
        "ws-api frame",
        venue,
        build,
        max_bytes=MAX_WS_FRAME_BYTES,
        max_depth=MAX_BODY_DEPTH,
    )


def read_result(answer: WsAnswer, what: str, venue: str, build: Callable[[Any], T]) -> T:
    """``build(answer.result)``, any failure a :class:`VenueDecodeError` carrying the frame.

    ``build`` is one of the codec's object readers (:func:`.orders.order_report`,
    :func:`.orders.fill_report`, …), which raise on a hostile shape.
    """
    try:
        return build(answer.result)
    except Exception as exc:
        detail = str(exc) if isinstance(exc, ShapeError | ValueError) else type(exc).__name__
        raw = answer.raw
        head = raw[: 4 * _PREVIEW_CHARS]
        text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
        raise VenueDecodeError(
            f"{venue}: {what}: {clean(detail, _PREVIEW_CHARS)}; "
            f"payload: {clean(text, _PREVIEW_CHARS)!r}",
            raw=raw,
            venue=venue,
        ) from None


def answer_error(
    answer: WsAnswer,
    *,
    venue: str,
    endpoint: str,
    mutating: bool,
    now_ms: int,
    scrub: Callable[[str], str] | None = None,
) -> VenueError:
    """The exception of an error answer: the REST map, codes and statuses alike.

    Args:
        answer: A failed answer (``not answer.ok``).
        venue: Venue name for the error.
        endpoint: What was called (``"ws-api order.place"``).
        mutating: Whether the request could change state (a 5xx, -1000,
            -1006 or -1007 then means "outcome unknown").
        now_ms: The venue's clock now (local wall clock + measured offset),
            to turn ``retryAfter`` (an instant) into a wait when the answer
            carries no ``serverTime``.
        scrub: Masks secrets in the venue's message (the caller's keys).
    """
    retry_after_s: float | None = None
    if is_rate_limited(answer.status, answer.error_code) and answer.retry_after_ms is not None:
        base = answer.server_time_ms if answer.server_time_ms is not None else now_ms
        retry_after_s = min(max(0.0, (answer.retry_after_ms - base) / 1000.0), MAX_RETRY_AFTER_S)
    msg = answer.error_msg
    if msg is not None and scrub is not None:
        msg = scrub(msg)
    status = answer.status if 100 <= answer.status <= 999 else 500
    return error_from_code(
        status,
        answer.error_code,
        msg,
        venue=venue,
        endpoint=endpoint,
        mutating=mutating,
        retry_after_s=retry_after_s,
    )


# Readers of a successful answer's ``result``, for the connection.


def order_result(result: object, venue: str) -> OrderReport:
    """An ``order.place``/``order.status``/``order.cancel`` result → :class:`OrderReport`."""
    return order_report(result, venue)


def orders_result(result: object, venue: str) -> list[OrderReport]:
    """An ``openOrders.status`` result → reports."""
    if not isinstance(result, list):
        bad_shape(f"openOrders: expected a list, got {type(result).__name__}")
    return [order_report(x, venue) for x in result]


def trades_result(result: object, venue: str) -> list[FillReport]:
    """A ``myTrades`` result → fills."""
    if not isinstance(result, list):
        bad_shape(f"myTrades: expected a list, got {type(result).__name__}")
    return [fill_report(x, venue) for x in result]


def subscription_result(result: object) -> int:
    """A ``userDataStream.subscribe*`` result → the ``subscriptionId``."""
    return Obj(result, "subscription").integer("subscriptionId")


def server_time_result(result: object) -> int:
    """A ``time`` result → ``serverTime`` (epoch ms)."""
    return Obj(result, "time").integer("serverTime")
