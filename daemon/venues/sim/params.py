"""Request parameters read the way Binance validates them, and the order requests in them.

Transport-neutral: the REST layer (:mod:`daemon.venues.sim.rest`) builds a
:class:`Params` from the query string and form body; another transport builds
it from its own message. Every check raises
:class:`~daemon.venues.sim.protocol.ApiError` with Binance's code and message
(``-1100`` illegal characters, ``-1102`` mandatory, ``-1104`` unread,
``-1105`` empty, ``-1106`` not required, ``-1111`` precision, ``-1115``..``-1117``
time in force, order type, side, ``-1130`` invalid value, ``-2010`` for the
order types the simulator does not support).

* :class:`Params` — one request's parameters and the typed reads of them;
* :func:`parse_new_order` — a new-order request → :class:`~.matching.NewOrder`
  and its response type;
* :func:`order_ref` — which order a query or cancel names.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Final

from daemon.venues.sim import protocol as p
from daemon.venues.sim.orderbook import NewOrder
from daemon.venues.sim.protocol import ApiError

__all__ = ["SIGNED", "Params", "order_ref", "parse_new_order"]

_ORDER_TYPES: Final = ("LIMIT", "MARKET", "LIMIT_MAKER")
_UNSUPPORTED_TYPES: Final = {
    "STOP_LOSS": "Stop loss orders are not supported for this symbol.",
    "STOP_LOSS_LIMIT": "Stop loss limit orders are not supported for this symbol.",
    "TAKE_PROFIT": "Take profit orders are not supported for this symbol.",
    "TAKE_PROFIT_LIMIT": "Take profit limit orders are not supported for this symbol.",
}
#: The parameters of a SIGNED request's security, read by every SIGNED endpoint.
SIGNED: Final = frozenset({"timestamp", "recvWindow", "signature"})


class Params:
    """The parameters of one request, read the way Binance validates them.

    REST merges the query string and the form body (the query wins); the
    WebSocket API turns its JSON ``params`` into the same strings. The values
    are strings, as on the wire. ``transport`` (``"rest"`` or ``"ws-api"``)
    says how the request came, for the audit log.
    """

    def __init__(self, values: Mapping[str, str], *, transport: str = "rest") -> None:
        self.values = dict(values)
        self.transport = transport

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise p.mandatory(name)
            if value == "":
                raise ApiError(p.PARAM_EMPTY, f"Parameter '{name}' was empty.")
            return None
        return value

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        raw = self.text(name, required=required)
        if raw is None:
            return None
        value = p.parse_decimal(name, raw)
        if p.decimals_of(value) > p.WIRE_DECIMALS:
            raise ApiError(p.BAD_PRECISION, f"Parameter '{name}' has too much precision.")
        return value

    def integer(self, name: str, *, required: bool = False) -> int | None:
        raw = self.text(name, required=required)
        return None if raw is None else p.parse_int(name, raw)

    def limit(self, default: int, maximum: int) -> int:
        value = self.integer("limit")
        if value is None:
            return default
        if value < 1 or value > maximum:
            raise ApiError(p.INVALID_PARAMETER, "Data sent for parameter 'limit' is not valid.")
        return value

    def only(self, accepted: frozenset[str]) -> None:
        """-1104 when the request sent parameters the endpoint does not read."""
        read = sum(1 for name in self.values if name in accepted)
        if read != len(self.values):
            raise ApiError(
                p.UNREAD_PARAMETERS,
                f"Not all sent parameters were read; read '{read}' parameter(s) but was sent "
                f"'{len(self.values)}'.",
            )


def parse_new_order(params: Params) -> tuple[NewOrder, str]:
    """The new order a request asks for, and its ``newOrderRespType`` (``ACK``/``RESULT``/``FULL``).

    Raises:
        ApiError: the first parameter Binance would refuse, with its code.
    """
    symbol = params.text("symbol", required=True)
    side = params.text("side", required=True)
    order_type = params.text("type", required=True)
    assert symbol is not None and side is not None and order_type is not None
    if side not in ("BUY", "SELL"):
        raise ApiError(p.INVALID_SIDE, "Invalid side.")
    if order_type in _UNSUPPORTED_TYPES:
        raise p.order_rejected(_UNSUPPORTED_TYPES[order_type])
    if order_type not in _ORDER_TYPES:
        raise ApiError(p.INVALID_ORDER_TYPE, "Invalid orderType.")
    for unsupported in ("stopPrice", "icebergQty", "trailingDelta"):
        if params.get(unsupported) is not None:
            raise p.not_required(unsupported)
    stp = params.text("selfTradePreventionMode")
    if stp is not None and stp != "NONE":
        raise ApiError(
            p.INVALID_PARAMETER,
            "Data sent for parameter 'selfTradePreventionMode' is not valid.",
        )
    tif = params.text("timeInForce")
    if order_type == "LIMIT":
        if tif is None:
            raise p.mandatory("timeInForce")
        if tif not in ("GTC", "IOC", "FOK"):
            raise ApiError(p.INVALID_TIF, "Invalid timeInForce.")
    elif tif is not None:
        raise p.not_required("timeInForce")
    price = params.decimal("price", required=order_type != "MARKET")
    if order_type == "MARKET" and price is not None:
        raise p.not_required("price")
    quantity = params.decimal("quantity", required=order_type != "MARKET")
    quote_qty = params.decimal("quoteOrderQty")
    if order_type == "MARKET":
        if quantity is None and quote_qty is None:
            raise p.either_mandatory("quantity", "quoteOrderQty")
        if quantity is not None and quote_qty is not None:
            raise p.not_required("quoteOrderQty")
    elif quote_qty is not None:
        raise p.not_required("quoteOrderQty")
    client_id = params.get("newClientOrderId")
    if client_id is not None:
        if client_id == "":
            raise ApiError(-1118, "New client order ID was empty.")
        if not p.CLIENT_ORDER_ID_RE.fullmatch(client_id):
            raise p.illegal_chars("newClientOrderId", p.CLIENT_ORDER_ID_RE.pattern)
    resp_type = params.text("newOrderRespType") or (
        "FULL" if order_type in ("LIMIT", "MARKET") else "ACK"
    )
    if resp_type not in ("ACK", "RESULT", "FULL"):
        raise ApiError(
            p.INVALID_PARAMETER,
            "Data sent for parameter 'newOrderRespType' is not valid.",
        )
    return (
        NewOrder(
            symbol=symbol,
            side=side,  # type: ignore[arg-type]  # checked above
            type=order_type,  # type: ignore[arg-type]  # checked above
            quantity=quantity,
            quote_order_qty=quote_qty,
            price=price,
            time_in_force=tif,  # type: ignore[arg-type]  # checked above
            client_order_id=client_id,
        ),
        resp_type,
    )


def order_ref(params: Params) -> tuple[str, int | None, str | None]:
    """``(symbol, orderId, origClientOrderId)`` of a query or cancel; one of the ids is set.

    Raises:
        ApiError: -1102 when neither id was sent, -1119 for an empty client id.
    """
    symbol = params.text("symbol", required=True)
    assert symbol is not None
    order_id = params.integer("orderId")
    client_id = params.get("origClientOrderId")
    if client_id == "":
        raise ApiError(-1119, "Original client order ID was empty.")
    if order_id is None and client_id is None:
        raise p.either_mandatory("origClientOrderId", "orderId")
    return symbol, order_id, client_id
