"""Order and account answers: orders, our trades (fills), balances.

* ``POST/GET/DELETE /api/v3/order`` (ACK, RESULT or FULL; a query; a cancel)
  → :class:`~daemon.model.orders.OrderReport` (:func:`parse_order`),
  ``GET /api/v3/openOrders`` → a list of them (:func:`parse_orders`);
* ``GET /api/v3/myTrades`` → :class:`~daemon.model.orders.FillReport` (:func:`parse_my_trades`);
* ``GET /api/v3/account`` → :class:`~daemon.model.orders.AccountInfo` (:func:`parse_account`).

The builders from an already-decoded object (:func:`order_report`,
:func:`fill_report`, :func:`account_info`) are public for a WebSocket API
codec: ``order.place``/``order.status``/``order.cancel``, ``myTrades`` and
``account.status`` answer with the same objects inside the frame's
``result``. Malformed input raises :class:`~daemon.errors.VenueDecodeError`
(:mod:`.decoding`).
"""

from __future__ import annotations

from daemon.model.orders import (
    AccountBalance,
    AccountInfo,
    FillReport,
    OrderFill,
    OrderReport,
    OrderType,
    Side,
    TimeInForce,
    VenueOrderStatus,
)
from daemon.venues.binance.codec.decoding import Obj, as_list, decode, str_list

__all__ = [
    "account_info",
    "fill_report",
    "order_report",
    "parse_account",
    "parse_my_trades",
    "parse_order",
    "parse_orders",
]


def _fill(obj: object) -> OrderFill:
    o = Obj(obj, "fills[]")
    return OrderFill(
        price=o.dec("price"),
        quantity=o.dec("qty"),
        commission=o.dec("commission"),
        commission_asset=o.text("commissionAsset"),
        trade_id=o.integer("tradeId"),
    )


def _order_list_id(o: Obj) -> int:
    value = o.opt_int("orderListId")
    return -1 if value is None else value


def order_report(obj: object, venue: str) -> OrderReport:
    """An order object (already decoded; a new-order, query or cancel answer) → a report."""
    o = Obj(obj, "order")
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
    return decode(payload, "order", venue, lambda obj: order_report(obj, venue))


def parse_orders(payload: bytes | str, *, venue: str = "binance") -> list[OrderReport]:
    """``GET /api/v3/openOrders`` → reports."""
    return decode(
        payload,
        "openOrders",
        venue,
        lambda obj: [order_report(x, venue) for x in as_list(obj, "orders")],
    )


def fill_report(obj: object, venue: str) -> FillReport:
    """One ``myTrades`` row (already decoded) → :class:`FillReport`."""
    o = Obj(obj, "myTrades[]")
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
    return decode(
        payload,
        "myTrades",
        venue,
        lambda obj: [fill_report(x, venue) for x in as_list(obj, "myTrades")],
    )


def _balance(obj: object) -> AccountBalance:
    o = Obj(obj, "balances[]")
    return AccountBalance(o.text("asset"), o.dec("free"), o.dec("locked"))


def account_info(obj: object, venue: str) -> AccountInfo:
    """An ``account`` object (already decoded) → :class:`AccountInfo`."""
    o = Obj(obj, "account")
    permissions = (
        tuple(str_list(o.items("permissions"), "account.permissions"))
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


def parse_account(payload: bytes | str, *, venue: str = "binance") -> AccountInfo:
    """``GET /api/v3/account`` → :class:`AccountInfo`."""
    return decode(payload, "account", venue, lambda obj: account_info(obj, venue))
