"""The executor: send → persist → ack, cancels, and resolving ambiguous outcomes.

One work item at a time per account (the :class:`~daemon.orders.dispatch.Dispatcher`
guarantees it); every state change through the :class:`~daemon.orders.ledger.OrderLedger`.

**The critical section** (docs/ARCHITECTURE.md §4 Orders, §8) of a PENDING intent::

    with move_on_after(section_deadline_s, shield=True):
        mark SENDING (durable)           ─┐ outside cancellation cannot cut in here:
        send with the client order id     │ shutdown waits for the section, but never
        persist the venue's answer       ─┘ longer than its own deadline

The send itself is bounded by ``send_timeout_s`` inside the section, which
leaves the rest of the deadline for persisting the answer. What the answer
means:

* an order report → ACCEPTED (and further: a MARKET order comes back FILLED),
  its fills stored on their trade ids;
* a definitive reject (:class:`~daemon.errors.VenueRejectedError`) →
  REJECTED with the venue's code and message, plus a dead letter;
* a rate limit that proves the order was not executed
  (:func:`~daemon.orders.state.not_executed`: our own limiter refused the
  request before writing it, or the venue answered HTTP 429/418) → back to
  PENDING, durably, with the reason in its history ("venue 429: not
  executed (-1003); retry after 2.0 s"); the venue is then held
  (:class:`~daemon.orders.holds.SendHolds`) for the ``Retry-After`` or a
  backoff, and the intent (with any later one of its account) is queued
  again when the hold ends — not UNKNOWN, not lost, not sent twice;
* anything else — timeout, connection lost, 5xx, -1006/-1007, a rate-limit
  code under another status, "duplicate order" (which proves an open order
  with our id), even an unexpected exception — → UNKNOWN: the order may
  exist. Never resent blindly: :meth:`Executor.resolve`
  (:class:`~daemon.orders.resolver.UnknownResolver`) queries the venue by
  client order id and only proven absence (``-2013`` after the visibility
  grace) sends it again, with the same id.

**Before the section.** Under the order's lock a place item finds its intent
still PENDING (or SENDING, marked by the entry's fast path) or does nothing
— a cancel before sending moved it to CANCELED already. A PENDING intent
whose cancel was requested while its outcome was unknown (then proven
absent) is canceled here, never sent. An intent whose venue is held, or
with an earlier intent of its account held back, is held back too (a
fast-path SENDING mark goes back to PENDING: nothing was written).

**The lease's send window** (several daemons, :mod:`daemon.orders.lease`).
The section starts only while the account's lease has more than
``section_deadline_s`` left by our own clock, and its deadline is counted
from that check (no await in between): a process frozen and woken late finds
the window closed, and its section is cut at the first checkpoint. A PENDING
intent then stays PENDING (queued again after the next renewal); a SENDING
mark of the entry's fast path goes to UNKNOWN (not sent, but only a query may
say so to a new owner). A store write refused by the fencing token
(:class:`~daemon.errors.LeaseLostError`) stops the account here at once.

If the section's deadline passes before the answer is persisted, the row is
still SENDING; :meth:`Executor.settle_stuck` later moves it to UNKNOWN (as
a restart does), so it is resolved the same way.

**When the store cannot write** (disk full, read-only, locked, I/O:
:class:`~daemon.errors.StoreUnavailableError`). Nothing is sent whose SENDING
mark is not durable: the mark's failure leaves the intent PENDING, and the
place item waits and tries again (:func:`until_written`: 0.5 s doubling up to
5 s) until the store writes, holding the account's later items behind it, so
nothing is lost and the order of sends is kept. A write that fails *after*
the send (the venue's answer, a reject, UNKNOWN) leaves the row SENDING: it
is handed to :meth:`Executor.settle_stuck` like an overrun section, moved to
UNKNOWN once the store writes again, and the venue is asked what became of it
(:func:`store_failed`). Fills the store could not take are read from the
venue again by the tracker and reconciliation (memory moves only after a
commit, so the next poll still sees them as new).

**On the wire first.** The entry may ask to hear when an intent's request
has been written (:class:`SendSignals`): it answers that intent's
submitter then, so on a busy event loop writing the answer does not delay
the order. The signal is given when the request is written, and in any case
when the item ends, however it ends.

**No needless checkpoints.** Each checkpoint on the way to the venue is a
pass of the scheduler in which other tasks run first, so the path waits
(for sending to be enabled, for the venue, for the order's lock) only when
there is something to wait for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import trio

from daemon.config import OrdersConfig
from daemon.errors import (
    CancelRejectedError,
    DuplicateOrderError,
    LeaseLostError,
    StoreError,
    StoreUnavailableError,
    TradingdError,
    VenueRateLimitedError,
    VenueRejectedError,
)
from daemon.orders.dispatch import WorkItem
from daemon.orders.holds import SendHolds
from daemon.orders.lease import AccountLeases
from daemon.orders.ledger import OrderLedger, VenueAccess, venue_error_code
from daemon.orders.records import IntentRecord
from daemon.orders.resolver import UnknownResolver, fills_of
from daemon.orders.state import (
    HELD_BACK,
    NotExecuted,
    OrderState,
    not_executed,
)
from daemon.orders.userstream import StreamWitness

__all__ = ["OPEN_STATES", "STORE_RETRY_BASE_S", "STORE_RETRY_MAX_S", "Executor", "SendSignals"]

log = logging.getLogger("tradingd.orders")

#: States in which the venue holds the order and it can still trade.
OPEN_STATES = frozenset({OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED})
#: First wait of a place item whose SENDING mark the store could not write, before it
#: tries again (doubling up to :data:`STORE_RETRY_MAX_S`; seconds).
STORE_RETRY_BASE_S: Final = 0.5
#: Longest such wait.
STORE_RETRY_MAX_S: Final = 5.0


class SendSignals:
    """Who waits to hear that an intent's request has been written (entry → executor).

    The entry registers an intent before it queues its place item
    (:meth:`expect`); the executor takes the event when the item runs
    (:meth:`take`) and sets it once the request is written, or when the item
    ends without sending. A waiter that gives up first removes its event
    (:meth:`forget`), so an item that never runs leaves nothing behind.
    """

    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}

    def __len__(self) -> int:
        return len(self._events)

    def expect(self, client_order_id: str) -> trio.Event:
        event = self._events.get(client_order_id)
        if event is None:
            event = self._events[client_order_id] = trio.Event()
        return event

    def take(self, client_order_id: str) -> trio.Event | None:
        return self._events.pop(client_order_id, None)

    def forget(self, client_order_id: str, event: trio.Event) -> None:
        if self._events.get(client_order_id) is event:
            del self._events[client_order_id]


class Executor:
    """Runs the work items of the order pipeline.

    Args:
        ledger: Live orders and their durable changes.
        venues: The venue clients.
        settings: ``[orders]``.
        sending_enabled: Set once start-up reconciliation is done; a place
            item waits for it (in order) before anything is sent.
        witnesses: Each venue's user data stream witness (filled in by
            :class:`~daemon.orders.userstream.UserStreams`; empty without streams).
        wall_clock: Epoch seconds (the SENDING marks are on this clock).
        leases: The account leases (the send window; told of fenced writes);
            ``None``: no lease (tests of the executor alone).
    """

    def __init__(
        self,
        ledger: OrderLedger,
        venues: VenueAccess,
        settings: OrdersConfig,
        *,
        sending_enabled: trio.Event,
        witnesses: Mapping[str, StreamWitness] | None = None,
        wall_clock: Callable[[], float] = time.time,
        leases: AccountLeases | None = None,
    ) -> None:
        self.leases = leases
        self.witnesses: Mapping[str, StreamWitness] = {} if witnesses is None else witnesses
        self.ledger = ledger
        self.venues = venues
        self.settings = settings
        self.sending_enabled = sending_enabled
        self.wall_clock = wall_clock
        #: SENDING rows whose section ended before the answer was persisted.
        self.stuck: set[str] = set()
        self.in_section: set[str] = set()
        #: Intents whose submitter waits to hear that their request is written.
        self.send_signals = SendSignals()
        #: Venues held after a rate limit, and the intents held back.
        self.holds = SendHolds()
        #: Queries UNKNOWN orders and acts on the answers.
        self.resolver = UnknownResolver(ledger, venues, self.witnesses, wall_clock)
        self.sent = 0
        self.accepted = 0
        self.section_overruns = 0
        self.cancels_sent = 0
        #: Place tries that found the store unable to write their SENDING mark (retried).
        self.store_waits = 0
        #: Place items that found their account's send window closed (and whether one
        #: waits for the next renewal to be queued again).
        self.window_closed = 0
        self.window_waiting = False

    # ------------------------------------------------------------------ dispatch

    async def handle(self, item: WorkItem) -> None:
        """The dispatcher's handler: one item of one account."""
        try:
            await self._handle(item)
        except LeaseLostError as exc:
            lease_lost(self.leases, exc)

    async def _handle(self, item: WorkItem) -> None:
        if item.kind in ("place", "send"):
            await self.place(item.key, premarked=item.kind == "send")
        elif item.kind == "cancel":
            await self.cancel(item.key)
        elif item.kind == "resolve":
            await self.resolve(item.key)
        elif item.kind == "refresh":
            await self.refresh(item.key)
        else:  # pragma: no cover - items are built in this package
            raise ValueError(f"unknown work item kind {item.kind!r}")

    # ------------------------------------------------------------------ place

    def ready(self, venue: str, account: str) -> bool:
        """Whether a new order of ``account`` would be sent now (the entry's fast path asks)."""
        return (
            self.sending_enabled.is_set()
            and self.venues.client(venue) is not None
            and not self.holds.blocks(venue, account)
            and (self.leases is None or self.leases.send_window(account) > 0)
        )

    async def place(self, client_order_id: str, *, premarked: bool = False) -> None:
        """Send a PENDING intent: the shielded, bounded send → persist → ack section.

        ``premarked``: the entry recorded the intent already marked SENDING (its
        fast path for an idle account), so the section starts at the send.
        """
        on_wire = self.send_signals.take(client_order_id)
        try:
            await until_written(lambda: self._place(client_order_id, premarked, on_wire))
        finally:
            if on_wire is not None:
                on_wire.set()

    async def _place(
        self, client_order_id: str, premarked: bool, on_wire: trio.Event | None
    ) -> bool:
        """One try of :meth:`place`; ``False``: try again, the store could not write."""
        expected = OrderState.SENDING if premarked else OrderState.PENDING
        record = self.ledger.get(client_order_id)
        if record is None or record.state is not expected:
            return True
        if not self.sending_enabled.is_set():
            await self.sending_enabled.wait()
        client = self.venues.client(record.venue)
        if client is None:
            client = await self.venues.wait_client(record.venue)
        async with self.ledger.lock(client_order_id):
            record = self.ledger.get(client_order_id)
            if record is None or record.state is not expected:
                return True
            if premarked and client_order_id in self.in_section:
                return True
            try:
                await self._under_lock(record, client, premarked, on_wire)
            except StoreError as exc:
                retry = not store_failed(self.ledger, self.stuck, client_order_id, exc)
                self.store_waits += retry
                return not retry
        return True

    async def _under_lock(
        self, record: IntentRecord, client: Any, premarked: bool, on_wire: trio.Event | None
    ) -> None:
        if record.state is OrderState.PENDING and record.cancel_requested_at_ms is not None:
            await self.ledger.cancel_unsent(record, "canceled before sending (requested earlier)")
            return
        if self.holds.blocks(record.venue, record.account, record.seq):
            await hold_back(self.ledger, self.holds, record)
            return
        # The section's deadline counts from the window check: no await in between.
        start = trio.current_time()
        if self.leases is not None and self.leases.send_window(record.account, start) <= 0:
            self.window_closed += 1
            self.window_waiting = True
            await window_closed(self.ledger, self.leases, record)
            return
        self.in_section.add(record.client_order_id)
        try:
            deadline = start + self.settings.section_deadline_s
            with trio.move_on_at(deadline, shield=True) as scope:
                await self._section(record, client, premarked=premarked, on_wire=on_wire)
            if scope.cancelled_caught:
                self.section_overruns += 1
                overran(self.ledger, self.stuck, record.client_order_id, self.settings)
        finally:
            self.in_section.discard(record.client_order_id)

    async def _section(
        self,
        record: IntentRecord,
        client: Any,
        *,
        premarked: bool,
        on_wire: trio.Event | None = None,
    ) -> None:
        sending = record if premarked else await self.ledger.mark_sending(record)
        order = sending.to_intent().to_new_order()
        report = None
        error: BaseException | None = None
        timed_out = False
        self.sent += 1
        try:
            with trio.move_on_after(self.settings.send_timeout_s) as send_scope:
                if on_wire is None:
                    report = await client.new_order(order)
                else:
                    report = await client.new_order(order, on_sent=on_wire.set)
            timed_out = send_scope.cancelled_caught
        except DuplicateOrderError as exc:
            error = exc  # an open order has our id: it exists; a query will adopt it
        except VenueRejectedError as exc:
            code, message = venue_error_code(exc)
            await self.ledger.mark_rejected(sending, exc, code=code, message=message)
            self.ledger.answered(record.client_order_id)
            return
        except VenueRateLimitedError as exc:
            if (proof := not_executed(exc)) is not None:
                await not_sent(self.ledger, self.holds, sending, proof)
                return
            error = exc  # a rate-limit code under another status: ambiguous
        except Exception as exc:  # timeout, 5xx, -1006/-1007, bugs: ambiguous
            error = exc
        self.holds.answered(record.venue)
        if report is not None:
            self.accepted += 1
            await self.ledger.apply_report(sending, report, reason="venue answered new order")
            self.ledger.answered(record.client_order_id)
            return
        if timed_out:
            reason = f"no answer within send_timeout_s={self.settings.send_timeout_s:g}"
        else:
            reason = f"{type(error).__name__}: {error}"[:300]
        await self.ledger.mark_unknown(sending, reason)
        self.ledger.received_at.pop(record.client_order_id, None)  # no answer to time

    def section_over(self, client_order_id: str) -> bool:
        """Whether the order's send section overran and left it SENDING (not settled yet)."""
        return client_order_id in self.stuck and client_order_id not in self.in_section

    async def settle_stuck(self) -> None:
        """Move SENDING rows whose section overran to UNKNOWN (as a restart would)."""
        for client_order_id in sorted(self.stuck):
            if client_order_id in self.in_section:
                continue
            async with self.ledger.lock(client_order_id):
                record = self.ledger.get(client_order_id)
                if record is None or record.state is not OrderState.SENDING:
                    self.stuck.discard(client_order_id)
                    continue
                await self.ledger.mark_unknown(record, "send section overran its deadline")
                self.stuck.discard(client_order_id)

    # ------------------------------------------------------------------ UNKNOWN

    async def resolve(self, client_order_id: str) -> float | None:
        """Query an UNKNOWN order once and act on what it proves (:mod:`.resolver`).

        Returns:
            ``None`` when resolved (adopted or sent back to PENDING), else the
            delay after which to query again.
        """
        try:
            return await self.resolver.resolve(client_order_id, self.settings)
        except LeaseLostError as exc:
            lease_lost(self.leases, exc)
            raise
        except StoreUnavailableError as exc:  # memory unchanged: the next query tells again
            log.warning("order %s: stays UNKNOWN: %s", client_order_id, exc)
            return self.settings.unknown_retry_s

    # ------------------------------------------------------------------ open orders

    async def refresh(self, client_order_id: str) -> None:
        """Query an open order; store new fills and state."""
        record = self.ledger.get(client_order_id)
        if record is None or record.state not in OPEN_STATES:
            return
        client = self.venues.client(record.venue)
        if client is None:
            return
        try:
            report = await client.get_order(record.symbol, client_order_id=client_order_id)
        except TradingdError as exc:
            log.info("order %s: status query failed: %s", client_order_id, exc)
            return
        await self.apply_observation(record, report, reason="status query")

    async def apply_observation(self, record: IntentRecord, report: Any, *, reason: str) -> None:
        """Apply a venue report of an open order (:func:`apply_observation`)."""
        await apply_observation(self.ledger, self.venues, record, report, reason=reason)

    # ------------------------------------------------------------------ cancel

    async def cancel(self, client_order_id: str) -> None:
        """Send the cancel of an open order whose cancel was requested."""
        record = self.ledger.get(client_order_id)
        if record is None or record.state not in OPEN_STATES:
            return  # not open (yet): the tracker re-queues it once it is
        client = self.venues.client(record.venue)
        if client is None:
            return
        self.cancels_sent += 1
        try:
            with trio.move_on_after(self.settings.send_timeout_s):
                report = await client.cancel_order(record.symbol, client_order_id=client_order_id)
                await self.apply_observation(record, report, reason="cancel answered")
                return
        except CancelRejectedError as exc:
            log.info("order %s: cancel refused (%s); querying it", client_order_id, exc)
        except TradingdError as exc:
            log.warning("order %s: cancel outcome unknown (%s); querying it", client_order_id, exc)
        await self.refresh(client_order_id)

    def snapshot(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted_answers": self.accepted,
            "section_overruns": self.section_overruns,
            "stuck_sending": len(self.stuck),
            "cancels_sent": self.cancels_sent,
            "store_waits": self.store_waits,
            "lease_window_closed": self.window_closed,
            "sending_enabled": self.sending_enabled.is_set(),
            **self.holds.snapshot(),
        }


async def apply_observation(
    ledger: OrderLedger, venues: VenueAccess, record: IntentRecord, report: Any, *, reason: str
) -> None:
    """Apply a venue report of an open order (fetching its fills when they moved).

    A store that cannot write now (disk full, …) is logged, not raised: memory
    moves only after a commit, so the next poll or reconciliation sees the same
    news again and stores it then. (Raised, it would end the reconciliation
    pass or the tracker round that ran it, and every other order's with it.)
    """
    fills: list[Any] = []
    if report.executed_qty is not None and report.executed_qty > record.executed_qty:
        fetched = await fills_of(venues, record, report)
        if fetched is None:
            # The fills could not be read: record nothing (not even a closed
            # state, after which nobody would look again); the next poll retries.
            return
        fills = fetched
    async with ledger.lock(record.client_order_id):
        current = ledger.get(record.client_order_id)
        if current is None:
            return
        try:
            await ledger.apply_report(current, report, reason=reason, fills=fills)
        except StoreUnavailableError as exc:
            log.warning(
                "order %s: %s not stored, read again later: %s", record.client_order_id, reason, exc
            )


async def until_written(attempt: Callable[[], Awaitable[bool]]) -> None:
    """Run a place item's ``attempt`` until it says done (``True``).

    ``False`` means the store could not write the SENDING mark: nothing was
    sent. The item waits (:data:`STORE_RETRY_BASE_S`, doubling up to
    :data:`STORE_RETRY_MAX_S`) and tries again; the account's later items wait
    behind it, so its orders still go out in submission order.
    """
    wait = STORE_RETRY_BASE_S
    while not await attempt():
        await trio.sleep(wait)
        wait = min(wait * 2, STORE_RETRY_MAX_S)


def overran(
    ledger: OrderLedger, stuck: set[str], client_order_id: str, settings: OrdersConfig
) -> None:
    """A send section passed its deadline: a row left SENDING is resolved by query."""
    current = ledger.get(client_order_id)
    if current is not None and current.state is OrderState.SENDING:
        stuck.add(client_order_id)
    log.error(
        "order %s: send section overran its %gs deadline; the outcome will be resolved by query",
        client_order_id,
        settings.section_deadline_s,
    )


def store_failed(
    ledger: OrderLedger, stuck: set[str], client_order_id: str, exc: StoreError
) -> bool:
    """A place item's store write failed (caller holds the order's lock); ``False``:
    nothing was sent, and the item tries again.

    The ledger changes memory only after a commit, so the state in memory is
    the stored one. Still PENDING after a transient failure (disk full,
    read-only, locked, I/O): the SENDING mark (or the cancel) was not written
    and nothing went out. SENDING: the request may be on the venue (or, for a
    fast-path mark held back, provably not), but what happened could not be
    written; like a section that overran, it goes to ``stuck``, and the tracker
    moves it to UNKNOWN once the store writes again
    (:meth:`Executor.settle_stuck`) and a query decides. Anything else is not
    the store's weather: raised.
    """
    current = ledger.get(client_order_id)
    state = None if current is None else current.state
    if state is OrderState.PENDING and isinstance(exc, StoreUnavailableError):
        log.warning(
            "order %s: not sent: the store cannot record it (%s); trying again",
            client_order_id,
            exc,
        )
        return False
    if state is OrderState.SENDING:
        stuck.add(client_order_id)
        log.error(
            "order %s: the store could not record its outcome (%s); it stays SENDING "
            "and is resolved by query once the store writes again",
            client_order_id,
            exc,
        )
        return True
    raise exc


async def not_sent(
    ledger: OrderLedger, holds: SendHolds, sending: IntentRecord, proof: NotExecuted
) -> None:
    """A rate limit proved the order was not executed: hold the venue, back to PENDING
    (durable), and only then remember the intent for the tracker to queue when the
    hold ends (caller holds the order's lock)."""
    wait = holds.hold(sending.venue, proof)
    pending = await ledger.mark_not_sent(sending, proof.reason(wait))
    holds.defer(pending)
    ledger.received_at.pop(sending.client_order_id, None)  # no answer to time


def lease_lost(leases: AccountLeases | None, exc: LeaseLostError) -> None:
    """A store write was fenced off: stop trading the account here."""
    log.error("orders: %s", exc)
    if leases is not None:
        leases.lost(exc.account, f"an order change was fenced off ({exc})")


async def window_closed(ledger: OrderLedger, leases: AccountLeases, record: IntentRecord) -> None:
    """The account's lease has no send window now (caller holds the order's lock): a
    PENDING intent stays so; a fast-path SENDING mark goes to UNKNOWN (nothing was sent,
    but a new owner may only learn that from a query, like any unsure send)."""
    trading = leases.trades(record.account)
    (log.warning if trading else log.debug)(
        "order %s: not sent now: the lease of account %s has %s",
        record.client_order_id,
        record.account,
        "not enough time left (section_deadline_s)" if trading else "gone from this daemon",
    )
    if record.state is OrderState.SENDING:
        await ledger.mark_unknown(record, "not sent: the lease's send window was closed")
        ledger.received_at.pop(record.client_order_id, None)


async def hold_back(ledger: OrderLedger, holds: SendHolds, record: IntentRecord) -> None:
    """Hold back an intent whose venue is held, or with earlier intents of its account
    held back (caller holds the order's lock). A SENDING mark of the entry's fast path
    goes back to PENDING: nothing was written."""
    if record.state is OrderState.SENDING:
        left = holds.remaining(record.venue)
        record = await ledger.mark_not_sent(
            record, f"{HELD_BACK}; venue {record.venue} held for {left:.1f} s more"
        )
    holds.defer(record)
