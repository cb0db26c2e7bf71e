"""Resolving an UNKNOWN order, and reading an order's fills.

An order whose outcome is unknown (docs/ARCHITECTURE.md §4 Orders: a send that
timed out, a 5xx, a SENDING row found at start) is never resent blindly.
:class:`UnknownResolver` asks the venue about it by client order id and acts
on what the answer proves (:func:`~daemon.orders.state.resolve_unknown`):

* found → its state is adopted, with its fills (:func:`fills_of`); if they
  cannot be read in full yet, nothing is recorded and it is asked again;
* proven absent (``-2013`` after the visibility grace, shortened or
  lengthened by the user data stream's witness:
  :func:`~daemon.orders.userstream.judge_not_found`) → back to PENDING, to be
  sent again with the same id;
* anything else → still UNKNOWN; asked again after a delay.

The :class:`~daemon.orders.executor.Executor` runs it for its ``resolve``
work items and the reconciler's passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from daemon.config import OrdersConfig
from daemon.errors import OrderNotFoundError, TradingdError
from daemon.orders.ledger import OrderLedger, VenueAccess
from daemon.orders.records import IntentRecord
from daemon.orders.state import (
    DecisionKind,
    Found,
    OrderState,
    QueryFailed,
    QueryOutcome,
    resolve_unknown,
)
from daemon.orders.userstream import StreamWitness, judge_not_found

__all__ = ["UnknownResolver", "fills_of"]

# The executor's logger: these lines were its own before resolving was split out.
log = logging.getLogger("tradingd.orders")


class UnknownResolver:
    """Queries UNKNOWN orders by client order id and acts on what that proves.

    Args:
        ledger: Live orders and their durable changes.
        venues: The venue clients.
        witnesses: Each venue's user data stream witness (the executor's
            mapping, filled in by :class:`~daemon.orders.userstream.UserStreams`).
        wall_clock: Epoch seconds (when a query was asked).
    """

    def __init__(
        self,
        ledger: OrderLedger,
        venues: VenueAccess,
        witnesses: Mapping[str, StreamWitness],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._venues = venues
        self._witnesses = witnesses
        self._wall_clock = wall_clock

    async def query(self, record: IntentRecord, settings: OrdersConfig) -> QueryOutcome:
        """Ask the venue about ``record`` by client order id; what that proves."""
        client = self._venues.client(record.venue)
        if client is None:
            return QueryFailed(f"venue {record.venue} is down")
        # A "no such order" describes the venue when the query reached it, which is
        # no later than when it left: the grace counts up to here, not to the answer.
        asked_at_s = self._wall_clock()
        try:
            report = await client.get_order(record.symbol, client_order_id=record.client_order_id)
        except OrderNotFoundError:
            return judge_not_found(
                settings,
                self._witnesses.get(record.venue),
                record,
                now_s=asked_at_s,
                recv_window_ms=self._venues.recv_window_ms(record.venue),
            )
        except TradingdError as exc:
            return QueryFailed(f"{type(exc).__name__}: {exc}"[:300])
        return Found(report)

    async def resolve(self, client_order_id: str, settings: OrdersConfig) -> float | None:
        """Query an UNKNOWN order once and act on what it proves.

        Returns:
            ``None`` when resolved (adopted or sent back to PENDING), else the
            delay after which to query again.
        """
        asked = self._ledger.get(client_order_id)
        if asked is None or asked.state is not OrderState.UNKNOWN:
            return None
        outcome = await self.query(asked, settings)
        decision = resolve_unknown(outcome)
        async with self._ledger.lock(client_order_id):
            record = self._ledger.get(client_order_id)
            if record is None or record.state is not OrderState.UNKNOWN:
                return None
            if (record.send_attempts, record.sent_at_ms) != (asked.send_attempts, asked.sent_at_ms):
                # Resent while the query was out: its answer is about the older send
                # (a "not found" then proves nothing about the newer one). Ask again.
                return 0.0
            if decision.kind is DecisionKind.ADOPT:
                assert decision.report is not None
                fills = await fills_of(self._venues, record, decision.report)
                if fills is None:
                    # Found, but its fills could not be read: recording the state
                    # without them would lose them for good. Ask again.
                    return settings.unknown_retry_s
                await self._ledger.apply_report(
                    record, decision.report, reason=decision.reason, fills=fills
                )
                return None
            if decision.kind is DecisionKind.RESEND:
                await self._ledger.mark_resend(record, decision.reason)
                return None
        log.info("order %s still UNKNOWN: %s", client_order_id, decision.reason)
        retry = decision.retry_after_s
        return max(retry if retry is not None else 0.0, settings.unknown_retry_s)


async def fills_of(venues: VenueAccess, record: IntentRecord, report: Any) -> list[Any] | None:
    """The order's fills, or ``None`` when they cannot be read in full now.

    ``None`` also when the trades returned do not add up to the report's
    ``executed_qty`` (a venue's trade list may lag its order status): a
    caller must then not record the report, or the missing fills (and the
    position they make) would never be fetched again.
    """
    if report.executed_qty is None or report.executed_qty <= 0:
        return []
    client = venues.client(record.venue)
    if client is None:
        return None
    try:
        fills: list[Any] = await client.my_trades(
            record.symbol, order_id=report.order_id, limit=1000
        )
    except TradingdError as exc:
        log.info("order %s: fill query failed: %s", record.client_order_id, exc)
        return None
    mine = [f for f in fills if f.order_id == report.order_id]
    if sum((f.quantity for f in mine), Decimal(0)) < report.executed_qty:
        log.info(
            "order %s: the venue lists fills for less than its executed %s; later",
            record.client_order_id,
            report.executed_qty,
        )
        return None
    return fills
