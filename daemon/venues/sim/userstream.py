"""The User Data Stream: account events pushed over the WebSocket API.

A client subscribes with ``userDataStream.subscribe.signature`` on a
``/ws-api/v3`` connection (:mod:`daemon.venues.sim.wsapi`); from then on every
change of that account reaches it as ``{"subscriptionId": N, "event": {...}}``
in the order it happened, whichever transport caused it (REST, the WebSocket
API on any connection, or the synthetic market trading against a resting
order). Payloads follow ``user-data-stream.md``:

* ``executionReport`` per order change (``x`` = ``NEW``, ``TRADE``,
  ``CANCELED``, ``REJECTED``, ``EXPIRED``; see
  :mod:`daemon.venues.sim.orderchanges` for when each is sent), with ``E``
  (event time) and ``T`` (transaction time) from the simulator's wall clock
  and a unique execution id ``I``;
* ``outboundAccountPosition`` after each operation that moved the account's
  balances (the moved assets, free and locked, as they are now);
* ``eventStreamTerminated`` when the subscription ends
  (``userDataStream.unsubscribe``, the ``userstream_terminate`` fault, or a
  subscriber too slow to keep up).

A slow subscriber never blocks the matching engine: the engine hands events
over synchronously (:meth:`UserStreamHub.on_order`,
:meth:`UserStreamHub.on_balances`) into a bounded queue per subscription
(``[streams] send_queue`` events). When a queue is full the subscription is
terminated: the events still queued are dropped (they could no longer be
delivered in order), ``eventStreamTerminated`` is sent once the connection
takes it, and if it cannot be written within :data:`TERMINATE_TIMEOUT_S` the
connection is aborted. The client must subscribe again and reconcile.

Faults: ``userstream_stall`` holds every subscription's events while armed
(they queue, and are delivered in order when it ends; a subscription that ends
meanwhile is flushed at once); ``userstream_terminate`` ends subscriptions
(timed, or at their next event, which is then lost with any queued after it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from daemon.venues.sim.accounts import Ledger
from daemon.venues.sim.faults import FaultInjector
from daemon.venues.sim.market import WallClock
from daemon.venues.sim.orderbook import ZERO, mul
from daemon.venues.sim.orderchanges import BalanceChange, OrderChange
from daemon.venues.sim.protocol import fmt

__all__ = [
    "TERMINATE_TIMEOUT_S",
    "Subscription",
    "UserStreamHub",
    "account_position",
    "deliver",
    "execution_report",
]

log = logging.getLogger("tradingd.sim.userstream")

#: Seconds a terminated subscription's ``eventStreamTerminated`` may take to be
#: written before a slow subscriber's connection is aborted.
TERMINATE_TIMEOUT_S: Final = 5.0
#: How often a stalled subscription re-reads the faults (they may be disarmed).
STALL_POLL_S: Final = 0.5
#: Why a subscription ends when its queue overflows.
SLOW_SUBSCRIBER: Final = "slow subscriber"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def execution_report(change: OrderChange, *, event_ms: int, execution_id: int) -> dict[str, Any]:
    """The ``executionReport`` payload of one order change (every field of the docs' example)."""
    order = change.order
    trade = change.trade
    canceled = change.execution_type == "CANCELED"
    zero = fmt(ZERO)
    event: dict[str, Any] = {
        "e": "executionReport",
        "E": event_ms,
        "s": order.symbol,
        "c": change.cancel_client_order_id if canceled else order.client_order_id,
        "S": order.side,
        "o": order.type,
        "f": order.time_in_force,
        "q": fmt(order.orig_qty),
        "p": fmt(order.price),
        "P": zero,
        "F": zero,
        "g": -1,
        "C": order.client_order_id if canceled else "",
        "x": change.execution_type,
        "X": change.status,
        "r": change.reject_reason,
        "i": order.order_id,
        "l": fmt(trade.qty) if trade else zero,
        "z": fmt(change.executed_qty),
        "L": fmt(trade.price) if trade else zero,
        "n": fmt(trade.commission) if trade else "0",
        "N": trade.commission_asset if trade else None,
        "T": change.time_ms,
        "t": trade.trade_id if trade else -1,
        "I": execution_id,
        "w": change.on_book,
        "m": change.is_maker,
        "M": False,
        "O": order.time_ms,
        "Z": fmt(change.cumm_quote_qty),
        "Y": fmt(mul(trade.price, trade.qty)) if trade else zero,
        "Q": fmt(order.orig_quote_order_qty),
    }
    if order.type != "MARKET" and change.execution_type != "REJECTED":
        event["W"] = order.time_ms  # working time: the order was placed on the book
    event["V"] = "NONE"
    if change.expiry_reason is not None:
        event["eR"] = change.expiry_reason
    return event


def account_position(ledger: Ledger, change: BalanceChange, *, event_ms: int) -> dict[str, Any]:
    """The ``outboundAccountPosition`` payload: the moved assets as they are now."""
    balances = []
    for asset in sorted(change.assets):
        balance = ledger.balance(change.account, asset)
        balances.append({"a": asset, "f": fmt(balance.free), "l": fmt(balance.locked)})
    return {"e": "outboundAccountPosition", "E": event_ms, "u": change.time_ms, "B": balances}


def stream_terminated(event_ms: int) -> dict[str, Any]:
    """The ``eventStreamTerminated`` payload."""
    return {"e": "eventStreamTerminated", "E": event_ms}


def envelope(subscription_id: int, event_json: str) -> str:
    """``{"subscriptionId": N, "event": …}`` around an already encoded event."""
    return f'{{"subscriptionId":{subscription_id},"event":{event_json}}}'


class Subscription:
    """One subscription of one connection: its account and its bounded event queue.

    ``on_end`` is called once, synchronously, when the subscription ends (it
    no longer receives events from then on).
    """

    def __init__(
        self,
        subscription_id: int,
        account: str,
        queue_size: int,
        on_end: Callable[[Subscription], None],
    ) -> None:
        self.id = subscription_id
        self.account = account
        self.started_at = trio.current_time()
        self._send, self.receive = trio.open_memory_channel[str](queue_size)
        self._on_end = on_end
        #: Why it ended (``None`` while active).
        self.end_reason: str | None = None
        #: Drop what is still queued instead of delivering it.
        self.discard = False
        #: Set once ``eventStreamTerminated`` was sent.
        self.done = trio.Event()

    @property
    def active(self) -> bool:
        return self.end_reason is None

    def offer(self, event_json: str) -> None:
        """Queue one encoded event; a full queue terminates the subscription (slow subscriber)."""
        if self.end_reason is not None:
            return
        try:
            self._send.send_nowait(event_json)
        except trio.WouldBlock:
            self.stop(SLOW_SUBSCRIBER, discard=True)

    def stop(self, reason: str, *, discard: bool) -> None:
        """End the subscription (from any task); ``discard`` drops the queued events."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.discard = discard
        self._send.close()
        self._on_end(self)


class UserStreamHub:
    """The subscriptions of every connection, by account, fed by the matching engine."""

    def __init__(self, ledger: Ledger, clock: WallClock) -> None:
        self._ledger = ledger
        self._clock = clock
        self._by_account: dict[str, set[Subscription]] = {}
        #: The ``I`` (execution id) of the next executionReport; kept in the state file.
        self.next_execution_id = 1

    @property
    def subscription_count(self) -> int:
        return sum(len(subs) for subs in self._by_account.values())

    def attach(self, sub: Subscription) -> None:
        self._by_account.setdefault(sub.account, set()).add(sub)

    def detach(self, sub: Subscription) -> None:
        subs = self._by_account.get(sub.account)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_account[sub.account]

    def _publish(self, account: str, event: dict[str, Any]) -> None:
        subs = self._by_account.get(account)
        if not subs:
            return
        text = _dumps(event)
        for sub in list(subs):
            sub.offer(text)

    # -- engine listeners (synchronous, inside the engine's operation) -------------

    def on_order(self, change: OrderChange) -> None:
        """An order of a real account changed: ``executionReport`` to its subscribers."""
        if change.order.account not in self._by_account:
            return
        execution_id = self.next_execution_id
        self.next_execution_id += 1
        event = execution_report(change, event_ms=self._clock(), execution_id=execution_id)
        self._publish(change.order.account, event)

    def on_balances(self, change: BalanceChange) -> None:
        """An operation moved an account's balances: ``outboundAccountPosition``."""
        if change.account not in self._by_account:
            return
        event = account_position(self._ledger, change, event_ms=self._clock())
        self._publish(change.account, event)


async def _hold_while_stalled(sub: Subscription, faults: FaultInjector) -> None:
    while sub.active:
        now = trio.current_time()
        until = faults.userstream_stalled_until(now)
        if until is None:
            return
        await trio.sleep_until(min(until, now + STALL_POLL_S))


async def deliver(
    sub: Subscription,
    send: Callable[[str], Awaitable[None]],
    faults: FaultInjector,
    clock: WallClock,
) -> None:
    """Send ``sub``'s events with ``send`` in order until it ends, then ``eventStreamTerminated``.

    Raises whatever ``send`` raises (the connection closed).
    """
    async for event_json in sub.receive:
        await _hold_while_stalled(sub, faults)
        if sub.discard:  # also set while it was stalled
            continue
        if sub.active and faults.take_userstream_terminate(trio.current_time()):
            log.info("fault userstream_terminate: subscription %d ends", sub.id)
            sub.stop("fault: userstream_terminate", discard=True)
            continue
        await send(envelope(sub.id, event_json))
    await send(envelope(sub.id, _dumps(stream_terminated(clock()))))
    sub.done.set()
