"""The REST requests: one builder per endpoint, and what turns one into wire bytes.

Each builder checks its arguments (``ValueError`` for a bad symbol, limit,
id or combination) and returns a :class:`RequestSpec` with the endpoint's
documented request weight (``WEIGHT_*``, :func:`depth_weight`), its order
count and its security type; :func:`prepare` adds ``recvWindow``,
``timestamp``, ``signature`` (:mod:`.signing`) and the ``X-MBX-APIKEY``
header and gives the exact query string, body and headers to send.

The parameter lists of an order (:func:`new_order_params`,
:func:`order_ref_params`) and the symbol check (:func:`symbol_param`) are
separate so that a WebSocket API codec (``order.place``, ``order.status``,
``order.cancel`` take the same parameters) can build its requests from them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence

import attrs

from daemon.model.orders import NewOrder, OrderResponseType, is_valid_client_order_id
from daemon.model.weights import depth_weight
from daemon.venues.binance.codec.signing import (
    encode_params,
    format_decimal,
    sign,
    signature_payload,
)

__all__ = [
    "API_KEY_HEADER",
    "DEPTH_LIMIT_MAX",
    "FORM_CONTENT_TYPE",
    "TRADES_LIMIT_MAX",
    "PreparedRequest",
    "RequestSpec",
    "Security",
    "account_request",
    "cancel_order_request",
    "depth_request",
    "depth_weight",
    "exchange_info_request",
    "get_order_request",
    "historical_trades_request",
    "my_trades_request",
    "new_order_params",
    "new_order_request",
    "open_orders_request",
    "order_ref_params",
    "ping_request",
    "prepare",
    "recent_trades_request",
    "server_time_request",
    "symbol_param",
]

#: The header that carries the API key.
API_KEY_HEADER = "X-MBX-APIKEY"
#: The content type of a request whose parameters travel in the body.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: Most levels ``GET /api/v3/depth`` takes as ``limit``.
DEPTH_LIMIT_MAX = 5000
#: Most trades ``GET /api/v3/trades``, ``historicalTrades`` and ``myTrades`` take as ``limit``.
TRADES_LIMIT_MAX = 5000
TRADES_LIMIT_MAX = 1000

#: Documented request weights (Binance Spot REST API, ``/api/v3``); the depth
#: weight depends on ``limit`` (:func:`depth_weight`, one home shared with the simulator).
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


# --------------------------------------------------------------------------- wire form


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


# --------------------------------------------------------------------------- parameters


def symbol_param(symbol: str) -> str:
    """A symbol as a parameter: letters and digits only, upper-cased (``ValueError`` else)."""
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


def order_ref_params(
    client_order_id: str | None, order_id: int | None
) -> tuple[tuple[str, str], ...]:
    """The order named by exactly one of ``origClientOrderId`` and ``orderId``."""
    if (client_order_id is None) == (order_id is None):
        raise ValueError("give exactly one of client_order_id and order_id")
    if client_order_id is not None:
        if not is_valid_client_order_id(client_order_id):
            raise ValueError(f"invalid client order id {client_order_id!r}")
        return (("origClientOrderId", client_order_id),)
    assert order_id is not None
    return (("orderId", _non_negative(order_id, "order_id")),)


def new_order_params(
    order: NewOrder, resp_type: OrderResponseType = OrderResponseType.FULL
) -> tuple[tuple[str, str], ...]:
    """The parameters of a new order in wire order, ``newOrderRespType`` last."""
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
    return tuple(params)


# --------------------------------------------------------------------------- endpoints


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
        names = [symbol_param(s) for s in symbols]
        if not names:
            raise ValueError("symbols must not be empty (pass None for all symbols)")
        if len(names) == 1:
            params = (("symbol", names[0]),)
        else:
            params = (("symbols", json.dumps(names, separators=(",", ":"))),)
    return RequestSpec("GET", "/api/v3/exchangeInfo", params, weight=WEIGHT_EXCHANGE_INFO)


def depth_request(symbol: str, limit: int = 100) -> RequestSpec:
    """``GET /api/v3/depth`` (weight 5..250 by ``limit``, 1..5000)."""
    params = (("symbol", symbol_param(symbol)), ("limit", _limit(limit, DEPTH_LIMIT_MAX, "depth")))
    return RequestSpec("GET", "/api/v3/depth", params, weight=depth_weight(limit))


def recent_trades_request(symbol: str, limit: int = 500) -> RequestSpec:
    """``GET /api/v3/trades`` (weight 25): the latest ``limit`` (1..1000) trades."""
    params = (
        ("symbol", symbol_param(symbol)),
        ("limit", _limit(limit, TRADES_LIMIT_MAX, "trades")),
    )
    return RequestSpec("GET", "/api/v3/trades", params, weight=WEIGHT_TRADES)


def historical_trades_request(
    symbol: str, from_id: int | None = None, limit: int = 500
) -> RequestSpec:
    """``GET /api/v3/historicalTrades`` (weight 25): ``limit`` trades from trade id ``fromId``.

    Security type NONE: Binance dropped the API key requirement in 2023 (it
    was MARKET_DATA), so no key is sent and capture needs none.
    """
    params: list[tuple[str, str]] = [
        ("symbol", symbol_param(symbol)),
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
    return RequestSpec(
        "POST",
        "/api/v3/order",
        new_order_params(order, resp_type),
        security=Security.SIGNED,
        weight=WEIGHT_NEW_ORDER,
        order_count=1,
    )


def get_order_request(
    symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
) -> RequestSpec:
    """``GET /api/v3/order`` (weight 4) by ``origClientOrderId`` or ``orderId``."""
    params = (("symbol", symbol_param(symbol)), *order_ref_params(client_order_id, order_id))
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
    params = [("symbol", symbol_param(symbol)), *order_ref_params(client_order_id, order_id)]
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
        (("symbol", symbol_param(symbol)),),
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
    params: list[tuple[str, str]] = [("symbol", symbol_param(symbol))]
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
