"""The venue's open-order lists: the tracker's poll, and orders the store does not know.

* :func:`poll_open_orders` — the tracker's round (:class:`~daemon.orders.reconcile.Reconciler`):
  one request per (venue, symbol) we have open orders in, and a refresh of
  each order whose fills moved or that closed.
* :func:`scan_open_orders` — step 4 of a reconciliation pass: every open
  order of a venue that the store does not know is *reported* (log,
  ``/status``, health) — never silently ignored, never touched
  (:func:`~daemon.orders.ids.is_derived_client_order_id` tells whether its
  id has our shape).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import trio

from daemon.errors import TradingdError
from daemon.model.orders import OrderReport
from daemon.orders.executor import OPEN_STATES, Executor
from daemon.orders.ids import is_derived_client_order_id
from daemon.orders.ledger import OrderLedger, OrderVenue, VenueAccess
from daemon.orders.records import IntentRecord

__all__ = ["poll_open_orders", "scan_open_orders"]

# The reconciler's logger: these lines were its own before they were split out.
log = logging.getLogger("tradingd.orders.reconcile")


async def poll_open_orders(
    ledger: OrderLedger,
    venues: VenueAccess,
    executor: Executor,
    limiter: trio.CapacityLimiter,
    stream_up: Callable[[str], bool],
) -> None:
    """One request per (venue, symbol) with open orders; refresh what moved.

    Venues whose user data stream is up are skipped (``stream_up``): the
    stream pushes their changes. Requests and refreshes take ``limiter``.
    """
    groups: dict[tuple[str, str], list[IntentRecord]] = defaultdict(list)
    for record in ledger.live(OPEN_STATES):
        if not stream_up(record.venue):  # else the user data stream pushes changes
            groups[(record.venue, record.symbol)].append(record)

    async def one(key: tuple[str, str], records: list[IntentRecord]) -> None:
        venue, symbol = key
        client = venues.client(venue)
        if client is None:
            return
        async with limiter:
            try:
                reports = await client.open_orders(symbol)
            except TradingdError as exc:
                log.info("orders: open-order poll of %s %s failed: %s", venue, symbol, exc)
                return
        by_id = {r.client_order_id: r for r in reports}
        for record in records:
            report = by_id.get(record.client_order_id)
            if report is None:
                # Closed since (filled, canceled, expired): ask for its final state.
                async with limiter:
                    await executor.refresh(record.client_order_id)
            elif (
                report.executed_qty is not None and report.executed_qty != record.executed_qty
            ) or (report.status is not None and record.venue_order_id is None):
                async with limiter:
                    await executor.apply_observation(record, report, reason="open-order poll")

    async with trio.open_nursery() as nursery:
        for key, records in groups.items():
            nursery.start_soon(one, key, records)


async def scan_open_orders(
    venue: str,
    client: OrderVenue,
    ledger: OrderLedger,
    unknown: dict[tuple[str, str, int], dict[str, Any]],
    *,
    id_prefix: str,
    wall_clock: Callable[[], float],
) -> None:
    """List ``venue``'s open orders; keep ``unknown`` to the ones the store does not know.

    ``unknown`` is keyed by ``(venue, symbol, order id)``; a new one is logged
    once (``id_prefix`` tells whether its client id has our shape), one that
    is gone is dropped. None of them is touched.
    """
    reports = await client.open_orders()
    seen: set[tuple[str, str, int]] = set()
    for report in reports:
        coid = report.client_order_id
        if ledger.get(coid) is not None:
            continue
        stored = await ledger.store.get(coid)
        if stored is not None and stored.venue == venue:
            continue
        key = (venue, report.symbol, report.order_id)
        seen.add(key)
        if key not in unknown:
            ours = is_derived_client_order_id(coid, prefix=id_prefix)
            entry = _unknown_entry(venue, report, ours, wall_clock())
            unknown[key] = entry
            _log_unknown(entry, ours)
    for key in [k for k in unknown if k[0] == venue and k not in seen]:
        del unknown[key]


def _unknown_entry(venue: str, report: OrderReport, ours: bool, now: float) -> dict[str, Any]:
    """How ``/status`` lists a venue open order the store does not know."""
    return {
        "venue": venue,
        "symbol": report.symbol,
        "order_id": report.order_id,
        "client_order_id": report.client_order_id,
        "side": report.side.value if report.side else None,
        "price": format(report.price, "f") if report.price is not None else None,
        "orig_qty": format(report.orig_qty, "f") if report.orig_qty is not None else None,
        "status": report.status.value if report.status else None,
        "has_our_id_shape": ours,
        "first_seen_at": now,
    }


def _log_unknown(entry: dict[str, Any], ours: bool) -> None:
    log.warning(
        "orders: venue %s has an open order the store does not know: %s %s "
        "order %d client id %s%s — reported, not touched",
        entry["venue"],
        entry["symbol"],
        entry["side"],
        entry["order_id"],
        entry["client_order_id"],
        " (shaped like ours: was the database replaced?)" if ours else "",
    )
