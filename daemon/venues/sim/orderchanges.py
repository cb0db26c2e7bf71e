"""What the matching engine tells the user data stream: every change of a real account.

The engine (:mod:`daemon.venues.sim.matching`) calls a :class:`ChangeFeed` at
each step of an operation, synchronously, in the order things happen; the
feed turns each step into an :class:`OrderChange` (one future
``executionReport``) or, once the operation is over, a :class:`BalanceChange`
per real account whose balances moved (one future ``outboundAccountPosition``),
and hands it to its listeners. The synthetic market's orders are never told.

An operation tells, in this order:

* ``NEW`` when an order is accepted (before it matches);
* ``TRADE`` for every fill of a resting (maker) order, as it happens;
* ``TRADE`` for every fill of the incoming (taker) order, once it has
  matched: its last fill says ``FILLED`` when the order is done, every other
  ``PARTIALLY_FILLED``;
* ``EXPIRED`` for what an IOC, FOK or MARKET order could not fill;
* ``CANCELED`` for a cancel, with the cancel request's own client order id;
* ``REJECTED`` for an order the matching engine refused (insufficient
  balance, a LIMIT_MAKER that would take). Not for a duplicate client order
  id: that report would carry the id of the *open* order it collided with.
  Requests refused before the engine (parameters, filters) are not orders
  and are not told, as on Binance.

:class:`OrderChange` holds the live :class:`~daemon.venues.sim.orderbook.Order`
plus the values that change during an operation (status, cumulative
quantities), so a listener must read it at once, synchronously, as the user
data stream does.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Final, Literal

import attrs

from daemon.venues.sim.accounts import MARKET_ACCOUNT, Ledger
from daemon.venues.sim.orderbook import ZERO, Fill, NewOrder, Order, mul

__all__ = [
    "BalanceChange",
    "ChangeFeed",
    "ExecutionKind",
    "OrderChange",
    "cancel_request_id",
]

#: The execution types the simulator produces (``x`` of an ``executionReport``).
ExecutionKind = Literal["NEW", "TRADE", "CANCELED", "REJECTED", "EXPIRED"]

#: ``eR`` of an expired order, by what expired it (``user-data-stream.md``).
_EXPIRY_REASONS: Final = {
    "IOC": "UNFILLED_IOC_QUANTITY_EXPIRED",
    "FOK": "UNFILLED_FOK_ORDER_EXPIRED",
    "MARKET": "INSUFFICIENT_LIQUIDITY",
}


@attrs.frozen
class OrderChange:
    """One change of one real account's order (read it at once: ``order`` is live)."""

    order: Order
    execution_type: ExecutionKind
    #: ``X``: the order's status after the change.
    status: str
    #: ``z`` and ``Z``: cumulative filled quantity and quote amount after the change.
    executed_qty: Decimal
    cumm_quote_qty: Decimal
    #: ``T``: the operation's wall-clock time.
    time_ms: int
    #: The trade of a ``TRADE`` change (``t``, ``l``, ``L``, ``n``, ``N``).
    trade: Fill | None = None
    is_maker: bool = False
    #: ``w``: whether the order is on the book after the change.
    on_book: bool = False
    reject_reason: str = "NONE"
    #: ``c`` of a ``CANCELED`` report: the cancel request's client order id.
    cancel_client_order_id: str = ""
    #: ``eR`` of an ``EXPIRED`` report.
    expiry_reason: str | None = None


@attrs.frozen
class BalanceChange:
    """The assets of one real account that one operation moved."""

    account: str
    assets: frozenset[str]
    time_ms: int


def cancel_request_id(order: Order, requested: str | None) -> str:
    """The client order id of a cancel request: the one it sent, else ``cancel<orderId>``."""
    return requested or f"cancel{order.order_id}"


def _rests(order: Order) -> bool:
    return order.type in ("LIMIT", "LIMIT_MAKER") and order.time_in_force == "GTC"


class ChangeFeed:
    """The engine's listeners for order and balance changes, and the telling of each step."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.order_listeners: list[Callable[[OrderChange], None]] = []
        self.balance_listeners: list[Callable[[BalanceChange], None]] = []

    def _tell(self, change: OrderChange) -> None:
        for listener in self.order_listeners:
            listener(change)

    def _wanted(self, order: Order) -> bool:
        return bool(self.order_listeners) and order.account != MARKET_ACCOUNT

    def new(self, order: Order, now_ms: int) -> None:
        """An order was accepted (it has not matched yet)."""
        if self._wanted(order):
            self._tell(OrderChange(order, "NEW", "NEW", ZERO, ZERO, now_ms, on_book=_rests(order)))

    def maker_trade(self, maker: Order, fill: Fill, now_ms: int) -> None:
        """A resting order traded (its status and quantities are already updated)."""
        if self._wanted(maker):
            self._tell(
                OrderChange(
                    maker,
                    "TRADE",
                    maker.status,
                    maker.executed_qty,
                    maker.cumm_quote_qty,
                    now_ms,
                    trade=fill,
                    is_maker=True,
                    on_book=maker.is_open,
                )
            )

    def taker_done(self, order: Order, now_ms: int) -> None:
        """The incoming order matched: one ``TRADE`` per fill, then ``EXPIRED`` if it expired."""
        if not self._wanted(order):
            return
        executed = cumm_quote = ZERO
        last = len(order.fills) - 1
        for i, fill in enumerate(order.fills):
            executed += fill.qty
            cumm_quote += mul(fill.price, fill.qty)
            filled = i == last and order.status == "FILLED"
            self._tell(
                OrderChange(
                    order,
                    "TRADE",
                    "FILLED" if filled else "PARTIALLY_FILLED",
                    executed,
                    cumm_quote,
                    now_ms,
                    trade=fill,
                    on_book=i == last and order.is_open,
                )
            )
        if order.status == "EXPIRED":
            kind = "MARKET" if order.type == "MARKET" else order.time_in_force
            self._tell(
                OrderChange(
                    order,
                    "EXPIRED",
                    "EXPIRED",
                    order.executed_qty,
                    order.cumm_quote_qty,
                    now_ms,
                    expiry_reason=_EXPIRY_REASONS.get(kind),
                )
            )

    def canceled(self, order: Order, cancel_id: str, now_ms: int) -> None:
        """An open order was canceled by a request whose client order id is ``cancel_id``."""
        if self._wanted(order):
            self._tell(
                OrderChange(
                    order,
                    "CANCELED",
                    "CANCELED",
                    order.executed_qty,
                    order.cumm_quote_qty,
                    now_ms,
                    cancel_client_order_id=cancel_id,
                )
            )

    def rejected(
        self, account: str, request: NewOrder, client_id: str, reason: str, now_ms: int
    ) -> None:
        """The matching engine refused a new order (``reason``: ``r`` of the report)."""
        if not self.order_listeners or account == MARKET_ACCOUNT:
            return
        order = Order(
            symbol=request.symbol,
            order_id=-1,
            client_order_id=client_id,
            account=account,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force or "GTC",
            price=request.price if request.price is not None else ZERO,
            orig_qty=request.quantity if request.quantity is not None else ZERO,
            orig_quote_order_qty=request.quote_order_qty or ZERO,
            time_ms=now_ms,
            update_time_ms=now_ms,
        )
        self._tell(
            OrderChange(order, "REJECTED", "REJECTED", ZERO, ZERO, now_ms, reject_reason=reason)
        )

    def balances(self, now_ms: int) -> None:
        """End of an operation: tell which real accounts' balances moved."""
        touched = self._ledger.take_touched()
        if not self.balance_listeners:
            return
        for account, assets in touched.items():
            change = BalanceChange(account, frozenset(assets), now_ms)
            for listener in self.balance_listeners:
                listener(change)
