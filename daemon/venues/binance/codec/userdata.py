"""User data stream events of the WebSocket API → the values of :mod:`daemon.model.userstream`.

Reference: ``user-data-stream.md`` of Binance's Spot API documentation. The
events arrive on a WebSocket API connection as ``{"subscriptionId": N,
"event": {...}}`` (:mod:`.wsapi` unwraps the frame); :func:`user_event` reads
the event object:

==========================  ===============================================
``e``                       value
==========================  ===============================================
``executionReport``         :class:`~daemon.model.userstream.ExecutionReport`
                            (with a :class:`~daemon.model.orders.FillReport`
                            when ``x`` is ``TRADE``)
``outboundAccountPosition``  :class:`~daemon.model.userstream.AccountPosition`
``balanceUpdate``           :class:`~daemon.model.userstream.BalanceUpdate`
``eventStreamTerminated``   :class:`~daemon.model.userstream.StreamTerminated`
``serverShutdown``          :class:`.marketdata.ServerShutdown` (a connection event)
anything else               :class:`OtherEvent` (``listStatus``,
                            ``externalLockUpdate``, a type added later):
                            ignored by the client, never an error
==========================  ===============================================

**Client order ids.** An ``executionReport`` names the order in ``c``, except
for a cancel: then ``c`` is the cancel request's own id and ``C`` the order's
original one. The report's ``client_order_id`` is always the *order's* (``C``
when it is set, else ``c``); the cancel's id is kept as
``cancel_client_order_id``.

A documented type with a missing or mistyped field raises
:class:`~.decoding.ShapeError` here, :class:`~daemon.errors.VenueDecodeError`
through :func:`parse_user_event` (and :func:`.wsapi.parse_frame`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from daemon.model.orders import (
    AccountBalance,
    FillReport,
    OrderReport,
    OrderType,
    Side,
    TimeInForce,
    VenueOrderStatus,
)
from daemon.model.userstream import (
    AccountPosition,
    BalanceUpdate,
    ExecutionReport,
    ExecutionType,
    StreamTerminated,
)
from daemon.venues.binance.codec.decoding import (
    INT64_MAX,
    INT64_MIN,
    MAX_BODY_DEPTH,
    MAX_FRAME_BYTES,
    Obj,
    clean,
    decode,
)
from daemon.venues.binance.codec.marketdata import ServerShutdown

__all__ = ["OtherEvent", "UserEvent", "lenient_int", "parse_user_event", "user_event"]


@attrs.frozen
class OtherEvent:
    """A user data stream event tradingd does not use (``listStatus``, ``externalLockUpdate``…).

    Ignored by the client (counted), never an error: Binance adds event types.
    """

    venue: str
    event_type: str
    event_time_ms: int | None


#: What one event object becomes.
UserEvent = (
    ExecutionReport
    | AccountPosition
    | BalanceUpdate
    | StreamTerminated
    | ServerShutdown
    | OtherEvent
)


def lenient_int(value: object) -> int | None:
    """A 64-bit integer, or ``None`` for anything else (an error's details are optional)."""
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def _execution_report(o: Obj, venue: str) -> ExecutionReport:
    execution_type = o.enum("x", ExecutionType)
    own_id = o.text("c")
    original = o.opt_str("C") or ""
    # A cancel names the order in C (its original client id) and itself in c.
    client_order_id, cancel_id = (original, own_id) if original else (own_id, "")
    symbol = o.text("s")
    order_id = o.integer("i")
    order_list_id = o.opt_int("g")
    list_id = -1 if order_list_id is None else order_list_id
    side = o.enum("S", Side)
    transaction_ms = o.integer("T")
    report = OrderReport(
        venue=venue,
        symbol=symbol,
        order_id=order_id,
        client_order_id=client_order_id,
        order_list_id=list_id,
        status=o.enum("X", VenueOrderStatus),
        side=side,
        type=o.enum("o", OrderType),
        time_in_force=o.opt_enum("f", TimeInForce),
        price=o.opt_dec("p"),
        orig_qty=o.opt_dec("q"),
        executed_qty=o.dec("z"),
        cumulative_quote_qty=o.opt_dec("Z"),
        orig_quote_order_qty=o.opt_dec("Q"),
        stop_price=o.opt_dec("P"),
        time_ms=o.opt_int("O"),
        update_time_ms=transaction_ms,
        working_time_ms=o.opt_int("W"),
        is_working=o.opt_bool("w"),
    )
    fill = None
    if execution_type is ExecutionType.TRADE:
        price = o.dec("L")
        quantity = o.dec("l")
        quote: Decimal | None = o.opt_dec("Y")
        fill = FillReport(
            venue=venue,
            symbol=symbol,
            trade_id=o.integer("t"),
            order_id=order_id,
            order_list_id=list_id,
            price=price,
            quantity=quantity,
            quote_quantity=quote if quote is not None else price * quantity,
            commission=o.dec("n"),
            commission_asset=o.opt_str("N") or "",
            time_ms=transaction_ms,
            is_buyer=side is Side.BUY,
            is_maker=o.flag("m"),
        )
    execution_id = o.opt_int("I")
    return ExecutionReport(
        report=report,
        execution_type=execution_type,
        event_time_ms=o.integer("E"),
        transaction_time_ms=transaction_ms,
        fill=fill,
        reject_reason=o.opt_str("r") or "NONE",
        cancel_client_order_id=cancel_id,
        execution_id=-1 if execution_id is None else execution_id,
    )


def _position_balance(obj: object) -> AccountBalance:
    b = Obj(obj, "outboundAccountPosition.B[]")
    return AccountBalance(b.text("a"), b.dec("f"), b.dec("l"))


def user_event(obj: object, venue: str) -> UserEvent:
    """One event object (the ``event`` of a frame, already decoded) → its value.

    Raises :class:`~.decoding.ShapeError` on a documented type with a bad
    field (use :func:`parse_user_event` or :func:`parse_frame` for bytes).
    """
    o = Obj(obj, "event")
    kind = o.text("e")
    if kind == "executionReport":
        return _execution_report(o, venue)
    if kind == "outboundAccountPosition":
        return AccountPosition(
            venue=venue,
            event_time_ms=o.integer("E"),
            update_time_ms=o.integer("u"),
            balances=tuple(_position_balance(b) for b in o.items("B")),
        )
    if kind == "balanceUpdate":
        return BalanceUpdate(
            venue=venue,
            event_time_ms=o.integer("E"),
            asset=o.text("a"),
            delta=o.dec("d"),
            clear_time_ms=o.integer("T"),
        )
    if kind == "eventStreamTerminated":
        return StreamTerminated(venue=venue, event_time_ms=o.integer("E"))
    if kind == "serverShutdown":
        return ServerShutdown(o.opt_int("E"))
    assert isinstance(obj, dict)  # Obj checked it
    return OtherEvent(venue, clean(kind, 64), lenient_int(obj.get("E")))


def parse_user_event(payload: str | bytes, *, venue: str = "binance") -> UserEvent:
    """Decode one event: the bare object or inside ``{"subscriptionId", "event"}``.

    Raises:
        VenueDecodeError: not JSON or a documented event type with a bad field.
    """

    def build(obj: Any) -> UserEvent:
        if isinstance(obj, dict) and isinstance(obj.get("event"), dict):
            obj = obj["event"]
        return user_event(obj, venue)

    return decode(
        payload,
        "user data event",
        venue,
        build,
        max_bytes=MAX_FRAME_BYTES,
        max_depth=MAX_BODY_DEPTH,
    )
