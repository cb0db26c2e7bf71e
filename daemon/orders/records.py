"""What the order store keeps, as immutable values: intents, their history, fills.

These are the shapes every layer above the store shares (entry, executor,
reconciler, admin API, strategies). They carry no behaviour beyond JSON
rendering; the state rules live in :mod:`daemon.orders.state` and the SQL in
:mod:`daemon.store.orders`.

Decimals are kept as :class:`~decimal.Decimal` and rendered as plain strings
(never floats) in JSON; times are Unix milliseconds (wall clock) as the venue
uses them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from daemon.model.orders import OrderType, Side, TimeInForce
from daemon.orders.intent import OrderIntent
from daemon.orders.state import OrderState

__all__ = ["FillRecord", "HistoryRow", "IntentRecord", "plain"]


def plain(value: Decimal | None) -> str | None:
    """A decimal in plain notation (``"0.00100000"`` stays as written), or ``None``."""
    return None if value is None else format(value, "f")


@attrs.frozen(kw_only=True)
class IntentRecord:
    """One durable order intent and where it stands.

    Attributes:
        client_order_id: The deterministic id (primary key; sent to the venue).
        message_id: The caller's idempotency key.
        account: The account it trades on.
        venue: The venue the account trades at (``[accounts.NAME] venue``).
        symbol, side, type, quantity, price, time_in_force: The order.
        state: Its durable state now.
        seq: Submission order (monotonic across the store's life).
        created_at_ms: When the intent was recorded.
        updated_at_ms: When its row last changed.
        sent_at_ms: The last durable SENDING mark (the clock
            :func:`~daemon.orders.state.classify_not_found` measures from).
        send_attempts: How many SENDING marks it has had (1 + resends).
        venue_order_id: The venue's order id, once known.
        executed_qty: Cumulative filled base quantity (the venue's ``executedQty``).
        cum_quote_qty: Cumulative filled quote quantity.
        reject_code: The venue's error code of a REJECTED intent.
        reject_reason: Why it was rejected.
        cancel_requested_at_ms: When a cancel was durably requested (``None``: never).
    """

    client_order_id: str
    message_id: str
    account: str
    venue: str
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    state: OrderState = OrderState.PENDING
    seq: int = 0
    created_at_ms: int = 0
    updated_at_ms: int = 0
    sent_at_ms: int | None = None
    send_attempts: int = 0
    venue_order_id: int | None = None
    executed_qty: Decimal = Decimal(0)
    cum_quote_qty: Decimal = Decimal(0)
    reject_code: int | None = None
    reject_reason: str | None = None
    cancel_requested_at_ms: int | None = None

    @classmethod
    def from_intent(
        cls, intent: OrderIntent, *, venue: str, seq: int = 0, now_ms: int = 0
    ) -> IntentRecord:
        """The PENDING record of a freshly accepted intent."""
        return cls(
            client_order_id=intent.client_order_id,
            message_id=intent.message_id,
            account=intent.account,
            venue=venue,
            symbol=intent.symbol,
            side=intent.side,
            type=intent.type,
            quantity=intent.quantity,
            price=intent.price,
            time_in_force=intent.time_in_force,
            state=OrderState.PENDING,
            seq=seq,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
        )

    def to_intent(self) -> OrderIntent:
        """The intent as submitted (its client order id is re-derived and must match)."""
        return OrderIntent(
            message_id=self.message_id,
            account=self.account,
            symbol=self.symbol,
            side=self.side,
            type=self.type,
            quantity=self.quantity,
            price=self.price,
            time_in_force=self.time_in_force,
            client_order_id=self.client_order_id,
        )

    @property
    def is_terminal(self) -> bool:
        """Whether the intent is finished for good."""
        return self.state.is_terminal

    def to_json(self) -> dict[str, Any]:
        """JSON-able view for the admin API (decimals as strings)."""
        return {
            "client_order_id": self.client_order_id,
            "message_id": self.message_id,
            "account": self.account,
            "venue": self.venue,
            "symbol": self.symbol,
            "side": self.side.value,
            "type": self.type.value,
            "quantity": plain(self.quantity),
            "price": plain(self.price),
            "time_in_force": self.time_in_force.value if self.time_in_force else None,
            "state": self.state.value,
            "seq": self.seq,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "sent_at_ms": self.sent_at_ms,
            "send_attempts": self.send_attempts,
            "venue_order_id": self.venue_order_id,
            "executed_qty": plain(self.executed_qty),
            "cum_quote_qty": plain(self.cum_quote_qty),
            "reject_code": self.reject_code,
            "reject_reason": self.reject_reason,
            "cancel_requested_at_ms": self.cancel_requested_at_ms,
        }


@attrs.frozen(kw_only=True)
class HistoryRow:
    """One durable state change of an intent (``source`` is ``None`` for the first row)."""

    client_order_id: str
    seq: int
    source: OrderState | None
    target: OrderState
    reason: str
    at_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "from": self.source.value if self.source else None,
            "to": self.target.value,
            "reason": self.reason,
            "at_ms": self.at_ms,
        }


@attrs.frozen(kw_only=True)
class FillRecord:
    """One execution of one of our orders: one side of a venue trade.

    ``(venue, symbol, trade_id, side)`` is unique: storing the same fill twice
    (a poll and the order's own answer both reporting it) is a no-op, and a
    self-trade (a BUY and a SELL of ours in one trade) is two fills.
    """

    venue: str
    symbol: str
    trade_id: int
    client_order_id: str
    account: str
    venue_order_id: int
    side: Side
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool | None = None

    @property
    def signed_quantity(self) -> Decimal:
        """``+quantity`` for a buy, ``-quantity`` for a sell (how it moves the position)."""
        return self.quantity if self.side is Side.BUY else -self.quantity

    def to_json(self) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "symbol": self.symbol,
            "trade_id": self.trade_id,
            "client_order_id": self.client_order_id,
            "account": self.account,
            "venue_order_id": self.venue_order_id,
            "side": self.side.value,
            "price": plain(self.price),
            "quantity": plain(self.quantity),
            "quote_quantity": plain(self.quote_quantity),
            "commission": plain(self.commission),
            "commission_asset": self.commission_asset,
            "time_ms": self.time_ms,
            "is_maker": self.is_maker,
        }
