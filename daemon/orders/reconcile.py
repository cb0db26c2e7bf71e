"""Reconciliation and tracking: our records against the venue's, at start and all along.

**At start, before anything is sent** (:meth:`Reconciler.startup`):

1. memory and the risk book are rebuilt from the store;
2. every SENDING row becomes UNKNOWN — the process died inside send→persist,
   so the request may or may not have reached the venue (never PENDING);
3. every non-terminal intent is resolved against the venue: UNKNOWN ones
   are queried by client order id (found: adopt the venue's state; proven
   absent: back to PENDING, to be sent again with the same id), open ones
   are refreshed (fills and state);
4. the venue's open orders are listed and every one the store does not know
   is *reported* (log, ``/status``, health) — never silently ignored, never
   touched: it may be an operator's manual order or an order from a lost
   database (:func:`~daemon.orders.ids.is_derived_client_order_id` tells
   whether its id has our shape);
5. sending is enabled and PENDING intents are queued in submission order.

The daemon reports READY only after this (the orders child reports started
at the end of it, and the daemon's start extends systemd's timeout while it
runs). If a venue cannot be reached within ``startup_reconcile_timeout_s``
the daemon still starts — entry keeps recording intents — but nothing is
sent until a later pass succeeds, and health says why.

**All along**, the tracker polls: every ``poll_interval_s`` it lists the
open orders of each symbol we have open orders in (one request per symbol)
and refreshes the ones whose fills moved or that closed; it re-queries
UNKNOWN orders when due, queues cancels that were requested, and moves
SENDING rows whose send section overran to UNKNOWN; and it queues again the
intents held back after a rate limit once their venue's hold has ended
(:mod:`daemon.orders.holds`), waking in time for it. Every
``reconcile_interval_s`` a full pass (3 and 4 above) runs again, and
PENDING intents that lost their place in a queue are queued again.
Queries go through the venue client's rate limiter and at most
``reconcile_concurrency`` run at once.

The open-order lists (the tracker's poll, step 4's scan) are read in
:mod:`daemon.orders.open_orders`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import trio

from daemon.config import OrdersConfig
from daemon.errors import TradingdError, TransientError
from daemon.health import HealthLevel
from daemon.orders.dispatch import Dispatcher, WorkItem
from daemon.orders.executor import OPEN_STATES, Executor
from daemon.orders.ledger import OrderLedger, VenueAccess
from daemon.orders.open_orders import poll_open_orders, scan_open_orders
from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState

__all__ = ["Reconciler"]

log = logging.getLogger("tradingd.orders.reconcile")


class Reconciler:
    """Start-up reconciliation, periodic passes, and the open-order tracker."""

    def __init__(
        self,
        ledger: OrderLedger,
        executor: Executor,
        dispatcher: Dispatcher,
        venues: VenueAccess,
        *,
        accounts: Mapping[str, str],
        settings: OrdersConfig,
        sending_enabled: trio.Event,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.executor = executor
        self.dispatcher = dispatcher
        self.venues = venues
        self.accounts = dict(accounts)
        self.settings = settings
        self.sending_enabled = sending_enabled
        self.wall_clock = wall_clock
        self.limiter = trio.CapacityLimiter(settings.reconcile_concurrency)
        #: Venue orders the store does not know, keyed by (venue, symbol, order id).
        self.unknown_venue_orders: dict[tuple[str, str, int], dict[str, Any]] = {}
        #: UNKNOWN orders and when (trio time) to query them next.
        self.due: dict[str, float] = {}
        self.reconciled = False
        self.passes = 0
        self.last_pass_at: float | None = None  # wall clock
        self.last_pass_error: str | None = None
        self.startup_s: float | None = None
        self._cancel_sent_at: dict[str, float] = {}
        #: Whether a venue's user data stream is up (then polling it is the fallback only).
        self.stream_up: Callable[[str], bool] = lambda venue: False
        self._next_poll = 0.0

    @property
    def venue_names(self) -> list[str]:
        return sorted(set(self.accounts.values()))

    # ------------------------------------------------------------------ start-up

    async def startup(self) -> None:
        """Steps 2-5 of the module docstring (the caller ran :meth:`OrderLedger.load`
        before opening entry); returns when sending is enabled or timed out."""
        started = trio.current_time()
        for record in self.ledger.live([OrderState.SENDING]):
            if record.state is OrderState.SENDING:
                async with self.ledger.lock(record.client_order_id):
                    current = self.ledger.get(record.client_order_id)
                    if current is not None and current.state is OrderState.SENDING:
                        await self.ledger.mark_unknown(
                            current,
                            "found SENDING at start: the process stopped inside send->persist",
                        )
        log.info(
            "orders: start-up reconciliation of %d live intents (%s)",
            len(self.ledger.records),
            ", ".join(f"{k} {v}" for k, v in sorted(self.ledger.counts().items())) or "none",
        )
        with trio.move_on_after(self.settings.startup_reconcile_timeout_s) as scope:
            await self.full_pass()
        self.startup_s = trio.current_time() - started
        if scope.cancelled_caught or not self.reconciled:
            log.error(
                "orders: start-up reconciliation did not finish within %gs (%s); "
                "intents are recorded but nothing is sent until a pass succeeds",
                self.settings.startup_reconcile_timeout_s,
                self.last_pass_error or "venue unreachable",
            )
            return
        self._enable_sending()

    def _enable_sending(self) -> None:
        if self.sending_enabled.is_set():
            return
        self.sending_enabled.set()
        self.queue_pending()
        log.info("orders: reconciled; sending enabled")

    def queue_pending(self) -> int:
        """Queue every PENDING intent that is not queued yet, in submission order."""
        queued = 0
        for record in self.ledger.live([OrderState.PENDING]):
            if self.executor.holds.is_deferred(record):
                continue  # held back after a rate limit: queued when the hold ends
            if self.queue(WorkItem(record.account, record.client_order_id, "place")):
                queued += 1
        return queued

    def queue_released(self) -> int:
        """Queue the intents held back after a rate limit whose venue's hold has ended,
        each account's in submission order (the tracker calls it every round)."""
        due = self.executor.holds.release_due(self._pending)
        return sum(self.queue(WorkItem(account, coid, "place")) for account, coid in due)

    def _pending(self, client_order_id: str) -> IntentRecord | None:
        record = self.ledger.get(client_order_id)
        return record if record is not None and record.state is OrderState.PENDING else None

    def queue(self, item: WorkItem) -> bool:
        """Queue work that is already durable; ``False`` when it cannot be queued now.

        The row stays as it is (PENDING, or a cancel requested), so a later
        tick or pass queues it again: refusing here loses nothing.
        """
        if self.dispatcher.is_queued(item.key, item.kind):
            return True
        try:
            return self.dispatcher.submit(item)
        except TransientError as exc:
            log.debug("orders: %s %s not queued now: %s", item.kind, item.key, exc)
            return False

    # ------------------------------------------------------------------ passes

    async def full_pass(self) -> bool:
        """Resolve every live intent against the venue and list its open orders.

        A failure of one order's query (raised inside :meth:`_each`'s nursery,
        so inside an exception group) fails the pass like any other: logged,
        ``False``, the next pass tries again — never a crash of the pipeline.
        """
        failure: TradingdError | None = None
        try:
            for venue in self.venue_names:
                await self.venues.wait_client(venue)
            live = self.ledger.live()
            unknown = [r for r in live if r.state is OrderState.UNKNOWN]
            open_ = [r for r in live if r.state in OPEN_STATES]
            await self._each(unknown, self._resolve_now)
            await self._each(open_, lambda r: self.executor.refresh(r.client_order_id))
            for venue in self.venue_names:
                await self._scan_open_orders(venue)
        except* TradingdError as group:
            failure = first_failure(group)
        if failure is not None:
            self.last_pass_error = f"{type(failure).__name__}: {failure}"
            log.warning("orders: reconciliation pass failed: %s", self.last_pass_error)
            return False
        self.passes += 1
        self.last_pass_at = self.wall_clock()
        self.last_pass_error = None
        self.reconciled = True
        return True

    async def _each(
        self, records: Iterable[IntentRecord], fn: Callable[[IntentRecord], Awaitable[Any]]
    ) -> None:
        async def one(record: IntentRecord) -> None:
            async with self.limiter:
                await fn(record)

        async with trio.open_nursery() as nursery:
            for record in records:
                nursery.start_soon(one, record)

    async def _resolve_now(self, record: IntentRecord) -> None:
        delay = await self.executor.resolve(record.client_order_id)
        self._after_resolve(record, delay)

    def _after_resolve(self, record: IntentRecord, delay: float | None) -> None:
        coid = record.client_order_id
        if delay is not None:
            self.due[coid] = trio.current_time() + delay
            return
        self.due.pop(coid, None)
        current = self.ledger.get(coid)
        if current is not None and current.state is OrderState.PENDING:
            # Proven absent: send again, same id, through the account's queue.
            self.queue(WorkItem(current.account, coid, "place"))

    async def _scan_open_orders(self, venue: str) -> None:
        client = self.venues.client(venue)
        if client is None:
            raise _VenueDown(f"venue {venue} is down")
        await scan_open_orders(
            venue,
            client,
            self.ledger,
            self.unknown_venue_orders,
            id_prefix=self.settings.id_prefix,
            wall_clock=self.wall_clock,
        )

    # ------------------------------------------------------------------ loops

    async def run_periodic(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Full passes every ``reconcile_interval_s`` (sooner while not reconciled)."""
        task_status.started()
        while True:
            interval = self.settings.reconcile_interval_s
            await trio.sleep(interval if self.sending_enabled.is_set() else min(interval, 5.0))
            ok = await self.full_pass()
            if ok:
                self._enable_sending()
                self.queue_pending()

    async def run_tracker(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll open orders, re-query UNKNOWN ones when due, queue requested cancels."""
        task_status.started()
        while True:
            delay = min(self.settings.poll_interval_s, self.settings.unknown_retry_s)
            release = self.executor.holds.next_release_in()
            await trio.sleep(delay if release is None else max(0.0, min(delay, release)))
            await self.tick()

    async def tick(self) -> None:
        """One round of the tracker (also called directly by tests).

        A failure (the store or the venue unavailable, a report contradicting
        our records) is logged and the next round tries again: the rows it
        would have changed are still there.
        """
        try:
            await self._tick()
        except* TradingdError as group:
            exc = first_failure(group)
            log.warning("orders: tracker round failed: %s: %s", type(exc).__name__, exc)

    async def _tick(self) -> None:
        await self.executor.settle_stuck()
        self.queue_released()
        now = trio.current_time()
        unknown = [
            r
            for r in self.ledger.live([OrderState.UNKNOWN])
            if self.due.get(r.client_order_id, 0.0) <= now
        ]
        if unknown:
            await self._each(unknown, self._resolve_now)
        self._queue_cancels()
        if now >= self._next_poll:
            self._next_poll = now + self.settings.poll_interval_s
            await self.poll_open()

    def _queue_cancels(self) -> None:
        now = trio.current_time()
        for record in self.ledger.live(OPEN_STATES):
            if record.cancel_requested_at_ms is None:
                continue
            last = self._cancel_sent_at.get(record.client_order_id)
            if last is not None and now - last < max(self.settings.poll_interval_s, 1.0):
                continue
            if self.queue(WorkItem(record.account, record.client_order_id, "cancel")):
                self._cancel_sent_at[record.client_order_id] = now
        for coid in [c for c in self._cancel_sent_at if self.ledger.get(c) is None]:
            del self._cancel_sent_at[coid]

    async def poll_open(self) -> None:
        """One request per (venue, symbol) with open orders; refresh what moved."""
        await poll_open_orders(
            self.ledger, self.venues, self.executor, self.limiter, self.stream_up
        )

    # ------------------------------------------------------------------ status

    def check(self) -> tuple[HealthLevel, str | None]:
        if not self.sending_enabled.is_set():
            return HealthLevel.DEGRADED, (
                "orders: not reconciled with the venue yet; nothing is sent"
                + (f" ({self.last_pass_error})" if self.last_pass_error else "")
            )
        if self.unknown_venue_orders:
            return HealthLevel.DEGRADED, (
                f"orders: {len(self.unknown_venue_orders)} open venue order(s) unknown to the store"
            )
        return HealthLevel.HEALTHY, None

    def snapshot(self) -> dict[str, Any]:
        return {
            "reconciled": self.reconciled,
            "sending_enabled": self.sending_enabled.is_set(),
            "passes": self.passes,
            "last_pass_at": self.last_pass_at,
            "last_pass_error": self.last_pass_error,
            "startup_s": round(self.startup_s, 3) if self.startup_s is not None else None,
            "unknown_awaiting_query": len(self.due),
            "unknown_venue_orders": list(self.unknown_venue_orders.values()),
        }


def first_failure(group: BaseExceptionGroup[TradingdError]) -> TradingdError:
    """The first error of a (possibly nested) exception group, for the log."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, TradingdError)
    return first


class _VenueDown(TradingdError):
    """A reconciliation pass needs a venue that is down."""
