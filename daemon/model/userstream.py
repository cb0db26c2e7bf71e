"""User data stream values: what a venue pushes about our own account.

Binance delivers these over its WebSocket API after a
``userDataStream.subscribe.signature`` request (``executionReport``,
``outboundAccountPosition``, ``balanceUpdate``, ``eventStreamTerminated``;
the reference is ``user-data-stream.md`` of Binance's Spot API docs). The
codec turns each event into one of the values below; the order pipeline
applies them through the same ledger calls as a polled answer, so the
stream, polling and reconciliation can overlap without double-counting.

An :class:`ExecutionReport` is one change of one order: the order's state
*after* the change (an :class:`~daemon.model.orders.OrderReport`, cumulative
quantities included) and, when the change was a trade, that trade as a
:class:`~daemon.model.orders.FillReport` (stored on its trade id, like a
polled ``myTrades`` row).

The connection events :class:`UserStreamUp` and :class:`UserStreamDown` are
not venue events: the client emits them around each subscription, so the
consumer knows when the stream is a witness and when it is not.
"""

from __future__ import annotations

import enum
from decimal import Decimal

import attrs

from daemon.model.orders import AccountBalance, FillReport, OrderReport

__all__ = [
    "AccountPosition",
    "BalanceUpdate",
    "ExecutionReport",
    "ExecutionType",
    "StreamTerminated",
    "UserStreamDown",
    "UserStreamEvent",
    "UserStreamUp",
]


class ExecutionType(enum.Enum):
    """What happened to the order (``x`` of an ``executionReport``; Binance spellings)."""

    NEW = "NEW"
    CANCELED = "CANCELED"
    REPLACED = "REPLACED"
    REJECTED = "REJECTED"
    TRADE = "TRADE"
    EXPIRED = "EXPIRED"
    TRADE_PREVENTION = "TRADE_PREVENTION"
    AMENDMENT = "AMENDMENT"


@attrs.frozen(kw_only=True)
class ExecutionReport:
    """One ``executionReport``: an order after one change, and the trade of that change.

    Attributes:
        report: The order after the change. ``client_order_id`` is always the
            *order's* id: for a cancel, Binance sends the cancel request's id
            in ``c`` and the order's in ``C``; the codec takes care of that.
        execution_type: What happened (``x``).
        event_time_ms: Event time (``E``).
        transaction_time_ms: Transaction time (``T``).
        fill: The trade, when ``execution_type`` is ``TRADE`` (``t``, ``l``,
            ``L``, ``Y``, ``n``, ``N``, ``m``); ``None`` otherwise.
        reject_reason: ``r`` (``"NONE"`` unless the order was rejected).
        cancel_client_order_id: The cancel request's own client id (``c`` of
            a ``CANCELED`` report), or ``""``.
        execution_id: ``I``, unique per event of the order (``-1`` when absent).
    """

    report: OrderReport
    execution_type: ExecutionType
    event_time_ms: int
    transaction_time_ms: int
    fill: FillReport | None = None
    reject_reason: str = "NONE"
    cancel_client_order_id: str = ""
    execution_id: int = -1


@attrs.frozen(kw_only=True)
class AccountPosition:
    """``outboundAccountPosition``: the balances a change touched, as they are now."""

    venue: str
    event_time_ms: int
    update_time_ms: int
    balances: tuple[AccountBalance, ...]


@attrs.frozen(kw_only=True)
class BalanceUpdate:
    """``balanceUpdate``: a deposit, withdrawal or transfer changed one asset by ``delta``."""

    venue: str
    event_time_ms: int
    asset: str
    delta: Decimal
    clear_time_ms: int


@attrs.frozen(kw_only=True)
class StreamTerminated:
    """``eventStreamTerminated``: the venue ended this subscription; subscribe again."""

    venue: str
    event_time_ms: int


@attrs.frozen(kw_only=True)
class UserStreamUp:
    """The client subscribed (again): events flow from ``since_ms`` (local wall clock) on.

    Events from before this moment that were not seen are lost for good: the
    consumer reconciles (open orders, recent trades) to cover the window.
    """

    venue: str
    since_ms: int
    subscription_id: int


@attrs.frozen(kw_only=True)
class UserStreamDown:
    """The subscription ended (connection lost, stalled, terminated): no witness from now."""

    venue: str
    at_ms: int
    reason: str


#: Every value a user data stream channel carries.
UserStreamEvent = (
    ExecutionReport
    | AccountPosition
    | BalanceUpdate
    | StreamTerminated
    | UserStreamUp
    | UserStreamDown
)
