"""The user data stream in the order pipeline: pushed order changes, and a second witness.

A venue's user data stream (Binance: the WebSocket API's
``userDataStream.subscribe.signature``, :mod:`daemon.venues.binance.wsapi`)
pushes every change of our orders as it happens. Two things come of it here:

**Pushed state and fills** (:class:`UserStreamApplier`). Each
:class:`~daemon.model.userstream.ExecutionReport` is applied through the
same ledger call as a polled answer, under the order's lock, so the stream,
polling and reconciliation can overlap without double-counting:

* a fill is stored on its trade id and side (a second copy of the same
  execution is a no-op in the store), and the order's quantities only move forward;
* a state is applied with :func:`~daemon.orders.state.path_to_venue_state`,
  which turns old news (NEW after a fill, a replayed event) into nothing;
* when the event's cumulative quantity is not the stored one plus this fill
  (events were missed while the stream was down), the executor fetches the
  order's trades instead (:meth:`~daemon.orders.executor.Executor.apply_observation`),
  so no fill is lost and none is counted twice;
* an event for an UNKNOWN order resolves it at once: the venue has it.

After every (re)subscription the venue is reconciled (``on_subscribed``):
whatever changed while the stream was down is read from the venue.

**A second witness for UNKNOWN outcomes** (:class:`StreamWitness`). Without
the stream, a query's "no such order" proves absence only after the
visibility grace (``[orders] query_lag_s`` among it), and exactly-once rests
on that lag being an honest bound. With the stream:

* an order the stream reports exists, at once, whatever the queries say;
* :attr:`Witness.WITNESSED` — the stream was subscribed since before the send
  and has since delivered an event stamped after the last moment the venue
  could have processed the request: the order's own events would have come
  before it (one account's events arrive in order), and none did. A query's
  "not found" then proves absence without waiting for ``query_lag_s``;
* :attr:`Witness.NOT_WITNESSED` — the stream was down at some point since the
  send: events of that window are lost for good, so the resend is *held*
  ``[orders] unwitnessed_hold_s`` beyond the usual grace (the log and
  ``/status`` say so);
* :attr:`Witness.UNSURE` — subscribed all along but nothing proves the stream
  delivered past the window (a quiet account, or a stalled stream): the usual
  rule, the visibility grace, holds.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import attrs
import trio

from daemon.config import OrdersConfig
from daemon.errors import TradingdError
from daemon.model.orders import OrderReport
from daemon.model.userstream import (
    AccountPosition,
    BalanceUpdate,
    ExecutionReport,
    StreamTerminated,
    UserStreamDown,
    UserStreamEvent,
    UserStreamUp,
)
from daemon.orders.ledger import OrderLedger
from daemon.orders.records import IntentRecord
from daemon.orders.state import NotFound, NotFoundYet, OrderState, classify_not_found

__all__ = [
    "StreamWitness",
    "UserStreamAccess",
    "UserStreamApplier",
    "UserStreamSource",
    "UserStreams",
    "Witness",
    "judge_not_found",
]

log = logging.getLogger("tradingd.orders.userstream")

#: How many client order ids a witness remembers having seen events for.
SEEN_CAPACITY = 100_000
#: How many held resends ``/status`` lists (the latest).
HELD_SHOWN = 100


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Witness(enum.Enum):
    """What the user data stream can say about an order it sent no event for."""

    WITNESSED = "witnessed"  #: subscribed all along and delivered past the window: absent
    NOT_WITNESSED = "not_witnessed"  #: down at some point since the send: hold the resend
    UNSURE = "unsure"  #: subscribed, but nothing proves delivery past the window


@attrs.define
class StreamWitness:
    """What one venue's user data stream has been, and seen, lately.

    Times: ``up_since_ms`` and ``down_at_ms`` are the local wall clock (the
    clock of ``sent_at_ms`` in the store); ``last_event_ms`` is the venue's
    event time (``E``), compared with local times widened by the configured
    clock skew.
    """

    venue: str
    up_since_ms: int | None = None
    subscription_id: int | None = None
    down_at_ms: int | None = None
    down_reason: str | None = None
    last_event_ms: int | None = None
    subscriptions: int = 0
    terminations: int = 0
    #: Orders whose resend was held because the stream was down in their window
    #: (client order id → local wall clock ms of the first hold).
    held: OrderedDict[str, int] = attrs.field(factory=OrderedDict)
    held_total: int = 0
    _seen: OrderedDict[str, int] = attrs.field(factory=OrderedDict, repr=False)

    @property
    def up(self) -> bool:
        """Whether the stream is subscribed now."""
        return self.up_since_ms is not None

    def on_up(self, event: UserStreamUp) -> None:
        self.up_since_ms = event.since_ms
        self.subscription_id = event.subscription_id
        self.subscriptions += 1

    def on_down(self, event: UserStreamDown) -> None:
        self.up_since_ms = None
        self.subscription_id = None
        self.down_at_ms = event.at_ms
        self.down_reason = event.reason

    def on_event(self, event_time_ms: int, client_order_id: str | None = None) -> None:
        if self.last_event_ms is None or event_time_ms > self.last_event_ms:
            self.last_event_ms = event_time_ms
        if client_order_id:
            self._seen[client_order_id] = event_time_ms
            self._seen.move_to_end(client_order_id)
            while len(self._seen) > SEEN_CAPACITY:
                self._seen.popitem(last=False)

    def note_held(self, client_order_id: str) -> None:
        """Record (and log once) that this order's resend waits for the longer hold."""
        if client_order_id not in self.held:
            self.held[client_order_id] = _wall_clock_ms()
            self.held_total += 1
            log.warning(
                "order %s: resend held (unwitnessed_hold_s): the user data stream of %s was "
                "down while the venue may have processed it",
                client_order_id,
                self.venue,
            )
            while len(self.held) > HELD_SHOWN:
                self.held.popitem(last=False)

    def saw(self, client_order_id: str) -> bool:
        """Whether an event for this order arrived (in the remembered past)."""
        return client_order_id in self._seen

    def verdict(self, *, sent_at_ms: int, window_end_ms: int, clock_skew_ms: int) -> Witness:
        """What the stream says about an order sent at ``sent_at_ms`` that it sent no event for.

        Args:
            sent_at_ms: The order's last durable SENDING mark (local wall clock).
            window_end_ms: The last moment (local wall clock) the venue could
                have processed the request: the mark plus the send section's
                deadline, ``recvWindow`` and the clock skew.
            clock_skew_ms: The bound on the venue's clock against ours.
        """
        if self.up_since_ms is None or self.up_since_ms > sent_at_ms:
            return Witness.NOT_WITNESSED
        if self.last_event_ms is not None and self.last_event_ms >= window_end_ms + clock_skew_ms:
            return Witness.WITNESSED
        return Witness.UNSURE

    def snapshot(self) -> dict[str, Any]:
        return {
            "subscribed": self.up,
            "subscribed_since_ms": self.up_since_ms,
            "subscription_id": self.subscription_id,
            "subscriptions": self.subscriptions,
            "terminations": self.terminations,
            "last_down_at_ms": self.down_at_ms,
            "last_down_reason": self.down_reason,
            "last_event_ms": self.last_event_ms,
            "fill_source": "stream" if self.up else "poll",
            "resends_held": list(self.held),
            "resends_held_total": self.held_total,
        }


class _Observer(Protocol):
    """The executor's part the applier needs (fills fetched when events were missed)."""

    async def apply_observation(
        self, record: IntentRecord, report: OrderReport, *, reason: str
    ) -> None: ...

    def section_over(self, client_order_id: str) -> bool:
        """Whether the order's send section ran and overran, leaving it SENDING."""
        ...


@attrs.define
class _Counts:
    events: int = 0
    applied: int = 0
    old_news: int = 0
    fetched: int = 0
    foreign: int = 0
    failed: int = 0
    account_updates: int = 0


class UserStreamApplier:
    """Applies one venue's user data stream events to the ledger; keeps its witness.

    Args:
        venue: The venue whose stream this is.
        ledger: The only place order state changes.
        executor: Fetches an order's trades when events were missed.
        witness: The venue's :class:`StreamWitness`, shared with the executor.
        on_subscribed: Called after every (re)subscription with the venue's
            name: it schedules a reconciliation, to read what changed while
            the stream was down (not awaited here: events keep flowing).
        wall_clock_ms: The local wall clock.
    """

    def __init__(
        self,
        venue: str,
        ledger: OrderLedger,
        executor: _Observer,
        witness: StreamWitness,
        *,
        on_subscribed: Callable[[str], None] | None = None,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        self.venue = venue
        self.ledger = ledger
        self.executor = executor
        self.witness = witness
        self.on_subscribed = on_subscribed
        self.wall_clock_ms = wall_clock_ms
        self.counts = _Counts()

    async def run(self, receive: trio.MemoryReceiveChannel[UserStreamEvent]) -> None:
        """Apply events until the channel closes; one failing event never stops the rest."""
        async with receive:
            async for event in receive:
                try:
                    await self.apply(event)
                except TradingdError as exc:
                    self.counts.failed += 1
                    log.warning(
                        "orders: user data stream event of %s not applied (%s: %s); "
                        "polling and reconciliation will read it",
                        self.venue,
                        type(exc).__name__,
                        exc,
                    )

    async def apply(self, event: UserStreamEvent) -> None:
        """Apply one event (connection events included)."""
        if isinstance(event, UserStreamUp):
            self.witness.on_up(event)
            log.info(
                "orders: user data stream of %s subscribed (id %d); reconciling the window "
                "it was down",
                self.venue,
                event.subscription_id,
            )
            if self.on_subscribed is not None:
                self.on_subscribed(self.venue)
            return
        if isinstance(event, UserStreamDown):
            self.witness.on_down(event)
            log.warning(
                "orders: user data stream of %s down (%s); polling until it is back",
                self.venue,
                event.reason,
            )
            return
        self.counts.events += 1
        if isinstance(event, StreamTerminated):
            self.witness.terminations += 1
            self.witness.on_event(event.event_time_ms)
            return
        if isinstance(event, AccountPosition | BalanceUpdate):
            self.counts.account_updates += 1
            self.witness.on_event(event.event_time_ms)
            return
        await self._execution(event)

    async def _execution(self, event: ExecutionReport) -> None:
        report = event.report
        coid = report.client_order_id
        self.witness.on_event(event.event_time_ms, coid)
        if self.ledger.get(coid) is None:
            # Not a live order of ours: closed already (old news), or an order
            # the store does not know (reconciliation reports those).
            self.counts.foreign += 1
            return
        reason = f"user data stream: {event.execution_type.value}"
        fetch: IntentRecord | None = None
        async with self.ledger.lock(coid):
            record = self.ledger.get(coid)
            if record is None:
                self.counts.foreign += 1
                return
            if record.state is OrderState.PENDING or (
                record.state is OrderState.SENDING and not self.executor.section_over(coid)
            ):
                # PENDING: canceled locally or proven absent and not sent again
                # yet — a report now would contradict it; SENDING whose section has
                # not run yet (the entry's premarked fast path: not on the wire).
                # Reconciliation decides. A SENDING row whose section overran (the
                # section holds the lock while it runs) is on the venue: applied.
                self.counts.old_news += 1
                return
            executed = report.executed_qty
            fill = event.fill
            if executed is not None and executed > record.executed_qty:
                if fill is None or record.executed_qty + fill.quantity != executed:
                    fetch = record  # events were missed: read the order's trades
                else:
                    before = record
                    new = await self.ledger.apply_report(
                        record, report, reason=reason, fills=[fill]
                    )
                    self._count(before, new)
            else:
                before = record
                fills = [fill] if fill is not None else []
                new = await self.ledger.apply_report(record, report, reason=reason, fills=fills)
                self._count(before, new)
        if fetch is not None:
            self.counts.fetched += 1
            await self.executor.apply_observation(fetch, report, reason=reason)

    def _count(self, before: IntentRecord, after: IntentRecord) -> None:
        if after is before:
            self.counts.old_news += 1
        else:
            self.counts.applied += 1

    def snapshot(self) -> dict[str, Any]:
        return {**self.witness.snapshot(), **attrs.asdict(self.counts)}


# ---------------------------------------------------------------------- the witness rule


def judge_not_found(
    settings: OrdersConfig,
    witness: StreamWitness | None,
    record: IntentRecord,
    *,
    now_s: float,
    recv_window_ms: int,
) -> NotFound | NotFoundYet:
    """What a venue's "no such order" proves, with the user data stream as second witness.

    Without a witness this is :func:`~daemon.orders.state.classify_not_found`
    with the visibility grace. With one (module docstring): an order the
    stream has reported is never proven absent (``NotFoundYet`` with
    ``reported``, however long ago it was sent); WITNESSED shortens
    the grace by ``query_lag_s``; NOT_WITNESSED lengthens it by
    ``unwitnessed_hold_s`` (the hold is counted and logged once per order).
    """
    sent_at_s = (record.sent_at_ms or record.created_at_ms) / 1000
    grace = settings.visibility_grace_s(recv_window_ms)
    if witness is not None and witness.saw(record.client_order_id):
        # The stream reported the order: it exists, whatever the queries say (they
        # lag). Never a proof of absence; ask again until a query shows it.
        elapsed_s = now_s - sent_at_s
        return NotFoundYet(elapsed_s, max(grace - elapsed_s, 0.0), reported=True)
    if witness is not None:
        window_s = settings.section_deadline_s + recv_window_ms / 1000 + settings.clock_skew_s
        verdict = witness.verdict(
            sent_at_ms=int(sent_at_s * 1000),
            window_end_ms=int((sent_at_s + window_s) * 1000),
            clock_skew_ms=int(settings.clock_skew_s * 1000),
        )
        if verdict is Witness.WITNESSED:
            grace = window_s
        elif verdict is Witness.NOT_WITNESSED and settings.unwitnessed_hold_s > 0:
            if now_s - sent_at_s >= grace:
                witness.note_held(record.client_order_id)
            grace += settings.unwitnessed_hold_s
    return classify_not_found(sent_at_s=sent_at_s, now_s=now_s, visibility_grace_s=grace)


# ---------------------------------------------------------------------- the streams


class UserStreamSource(Protocol):
    """One venue account's user data stream (``UserDataStream`` for Binance)."""

    async def run(
        self,
        send: trio.MemorySendChannel[UserStreamEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None: ...


@runtime_checkable
class UserStreamAccess(Protocol):
    """Which venues have a user data stream, and a fresh source for one."""

    def user_stream_enabled(self, venue: str) -> bool:
        """Configured for a stream (the daemon: ``[venues.NAME] user_stream`` and keys)."""
        ...

    def user_stream(self, venue: str) -> UserStreamSource | None:
        """A new source over the venue's current client, or ``None`` while it is down."""
        ...


#: Events a venue's stream may have in flight to the applier (``BLOCK``: the
#: stream stops reading its socket; the venue's own buffer then holds them).
EVENT_QUEUE_CAPACITY = 1024
#: Backoff between stream sessions that ended (jittered by the source itself).
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0


class UserStreams:
    """The user data streams of one pipeline incarnation, one per enabled venue.

    Each venue's loop takes a fresh source from the venue link, runs it into a
    bounded channel (:data:`EVENT_QUEUE_CAPACITY`, ``BLOCK``) that its
    :class:`UserStreamApplier` drains, and starts again after a backoff when
    the source ends (a refused key included: it is logged as an error each
    time, and polling carries on). After every subscription a reconciliation
    pass runs in the background (``reconcile``).

    Args:
        venues: The venues the accounts trade on.
        access: The venue links, or ``None`` (no streams).
        ledger: The ledger events are applied through.
        executor: Fetches trades when events were missed.
        reconcile: One reconciliation pass (``Reconciler.full_pass``).
        witnesses: Filled with each enabled venue's :class:`StreamWitness`
            (the same mapping the executor judges "not found" answers with).
    """

    def __init__(
        self,
        venues: Iterable[str],
        access: UserStreamAccess | None,
        ledger: OrderLedger,
        executor: _Observer,
        reconcile: Callable[[], Awaitable[object]],
        *,
        witnesses: dict[str, StreamWitness] | None = None,
    ) -> None:
        self.access = access
        self.reconcile = reconcile
        enabled = [v for v in sorted(set(venues)) if access and access.user_stream_enabled(v)]
        self.witnesses = {} if witnesses is None else witnesses
        self.witnesses.update({v: StreamWitness(v) for v in enabled})
        self.appliers = {
            v: UserStreamApplier(
                v, ledger, executor, self.witnesses[v], on_subscribed=self._subscribed
            )
            for v in enabled
        }
        self._nursery: trio.Nursery | None = None
        self._reconciling = False
        self.reconciles = 0

    def up(self, venue: str) -> bool:
        """Whether ``venue``'s stream is subscribed now (then it is the fill source)."""
        witness = self.witnesses.get(venue)
        return witness is not None and witness.up

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every venue's stream until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for venue in self.appliers:
                nursery.start_soon(self._venue_loop, venue)
            task_status.started()

    async def _venue_loop(self, venue: str) -> None:
        assert self.access is not None
        applier = self.appliers[venue]
        delay = RETRY_INITIAL_S
        while True:
            source = self.access.user_stream(venue)
            if source is None:
                await trio.sleep(RETRY_INITIAL_S)  # the venue link is down
                continue
            send, receive = trio.open_memory_channel[UserStreamEvent](EVENT_QUEUE_CAPACITY)
            subscriptions = applier.witness.subscriptions
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(applier.run, receive)
                    async with send:
                        await source.run(send)
            except* TradingdError as group:
                # source.run runs in the applier's nursery: its errors come grouped.
                for exc in group.exceptions:
                    log.error(
                        "orders: user data stream of %s failed: %s: %s; polling until it is back",
                        venue,
                        type(exc).__name__,
                        exc,
                    )
            except* Exception:
                # The stream is an extra source (polling and reconciliation cover
                # it): nothing that goes wrong in it may stop the order pipeline.
                log.exception(
                    "orders: user data stream of %s failed unexpectedly; polling until it is back",
                    venue,
                )
            finally:
                if applier.witness.up:
                    applier.witness.on_down(
                        UserStreamDown(venue=venue, at_ms=_wall_clock_ms(), reason="ended")
                    )
            if applier.witness.subscriptions > subscriptions:
                delay = RETRY_INITIAL_S
            await trio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _subscribed(self, venue: str) -> None:
        if self._nursery is not None and not self._reconciling:
            self._reconciling = True
            self._nursery.start_soon(self._reconcile_now)

    async def _reconcile_now(self) -> None:
        try:
            await self.reconcile()
            self.reconciles += 1
        finally:
            self._reconciling = False

    def snapshot(self) -> dict[str, Any]:
        return {venue: applier.snapshot() for venue, applier in self.appliers.items()}
