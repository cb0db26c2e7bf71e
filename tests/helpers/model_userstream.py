"""The user data stream of the model venue: every order change pushed, in order, with faults.

:class:`~tests.helpers.model_venue.ModelVenue` publishes one
:class:`~daemon.model.userstream.ExecutionReport` per change of one of its
orders (NEW, each TRADE with its trade id, quantity and price, CANCELED,
EXPIRED) into its :class:`StreamHub`, exactly what a Binance
``userDataStream.subscribe.signature`` subscription pushes (the report is the
order *after* the change, cumulative quantities included). A plain new-order
reject (``-2010``) creates no order and, as on Binance, pushes nothing.

The account may have other activity too (:meth:`StreamHub.activity`: a
``balanceUpdate`` now and then, as deposits and transfers make): such events
are what lets a subscribed stream prove it delivered past a moment
(:attr:`~daemon.orders.userstream.Witness.WITNESSED`) on an otherwise quiet
account.

A :class:`ModelUserStream` is one session of one process: it is a
:class:`~daemon.orders.userstream.UserStreamSource` (what
:class:`~daemon.orders.userstream.UserStreams` runs). Its ``run`` subscribes,
emits :class:`~daemon.model.userstream.UserStreamUp`, delivers every event
published from the moment it subscribed, in order, and ends with
:class:`~daemon.model.userstream.UserStreamDown` when the subscription ends.
Events published while no subscription is up are lost for good (a Binance
stream does not replay), as are events a dropped subscription had not
delivered yet.

Faults (:class:`StreamFault`, armed with :meth:`StreamHub.arm`), each after
``after_events`` more published events (0: at once):

========================  =============================================================
kind                      effect on the subscriptions up at that moment
========================  =============================================================
``DROP``                  the connection is lost: undelivered events are lost,
                          ``UserStreamDown("closed")``; the consumer subscribes again
                          (after its backoff) and misses what happened meanwhile
``TERMINATE``             ``eventStreamTerminated`` after the events already queued,
                          then ``UserStreamDown("terminated")``
``STALL``                 events are held ``delay_s`` (virtual) seconds, then delivered
                          in order
``REFUSE``                the next session ends before it subscribes (no
                          ``UserStreamUp``, no error): the stream stays down one more
                          backoff
``FAIL``                  the next session raises a connect error
                          (:class:`~daemon.errors.VenueUnavailableError`) before it
                          subscribes, as a source may (a refused API key raises too)
========================  =============================================================
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import deque
from collections.abc import Callable
from decimal import Decimal

import attrs
import trio

from daemon.errors import VenueUnavailableError
from daemon.model.userstream import (
    BalanceUpdate,
    ExecutionReport,
    StreamTerminated,
    UserStreamDown,
    UserStreamEvent,
    UserStreamUp,
)

__all__ = ["ModelUserStream", "StreamFault", "StreamFaultKind", "StreamHub"]


class StreamFaultKind(enum.Enum):
    """What goes wrong with the user data stream (see the module docstring)."""

    DROP = "drop"
    TERMINATE = "terminate"
    STALL = "stall"
    REFUSE = "refuse"
    FAIL = "fail"


@attrs.frozen
class StreamFault:
    """One stream fault: ``kind`` after ``after_events`` more events (``delay_s``: a STALL's)."""

    kind: StreamFaultKind
    after_events: int = 0
    delay_s: float = 0.0

    def __attrs_post_init__(self) -> None:
        stall = self.kind is StreamFaultKind.STALL
        if stall and not (self.delay_s > 0 and math.isfinite(self.delay_s)):
            raise ValueError(f"a stall needs delay_s > 0, got {self.delay_s}")
        if not stall and self.delay_s != 0:
            raise ValueError(f"a {self.kind.value} fault takes no delay_s, got {self.delay_s}")
        if self.after_events < 0:
            raise ValueError(f"after_events must be >= 0, got {self.after_events}")


class _Subscription:
    """One subscription: the events published since it began, not delivered yet."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.queue: deque[ExecutionReport | BalanceUpdate | StreamTerminated] = deque()
        self.held_until = -math.inf
        #: Why it ended (the Down's reason), once it has.
        self.ended: str | None = None
        self._changed = trio.Event()

    def poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def next(self) -> ExecutionReport | BalanceUpdate | StreamTerminated | None:
        """The next event to deliver (waiting out a stall), or ``None`` once dropped."""
        while True:
            if self.ended is not None and not (self.ended == "terminated" and self.queue):
                return None
            if self.queue and trio.current_time() >= self.held_until:
                return self.queue.popleft()
            changed = self._changed
            with trio.move_on_at(self.held_until if self.queue else math.inf):
                await changed.wait()


class StreamHub:
    """The venue side of the user data stream: subscriptions, the event log, the faults.

    Args:
        venue: The venue name (in the events).
        clock: Virtual seconds.
        event_ms: The venue's event time (``E``, ``T``) of a virtual time.
    """

    def __init__(
        self, venue: str, *, clock: Callable[[], float], event_ms: Callable[[float], int]
    ) -> None:
        self.venue = venue
        self.clock = clock
        self.event_ms = event_ms
        #: Every event ever published, in order (the truth a test compares with).
        self.log: list[ExecutionReport] = []
        self.subscriptions: list[_Subscription] = []
        self.subscribed = 0
        self.refused = 0
        #: Armed faults and how many more events each waits for.
        self._faults: list[tuple[StreamFault, list[int]]] = []
        self._refusals: deque[StreamFaultKind] = deque()
        self._numbers = itertools.count(1)
        self._execution_ids = itertools.count(1)

    # ------------------------------------------------------------------ test side

    def arm(self, fault: StreamFault) -> None:
        """Arm ``fault`` (a REFUSE or FAIL applies to the next subscription attempt)."""
        if fault.kind in (StreamFaultKind.REFUSE, StreamFaultKind.FAIL):
            self._refusals.append(fault.kind)
        elif fault.after_events == 0:
            self._fire(fault)
        else:
            self._faults.append((fault, [fault.after_events]))

    def armed(self) -> int:
        """Stream faults waiting (refusals included)."""
        return len(self._faults) + len(self._refusals)

    def clear_faults(self) -> None:
        """Disarm what is waiting and end every stall now."""
        self._faults.clear()
        self._refusals.clear()
        for sub in self.subscriptions:
            sub.held_until = -math.inf
            sub.poke()

    @property
    def up(self) -> bool:
        return bool(self.subscriptions)

    def next_execution_id(self) -> int:
        return next(self._execution_ids)

    # ------------------------------------------------------------------ venue side

    def publish(self, event: ExecutionReport) -> None:
        """One order change: to every subscription up now, then the armed faults count it."""
        self.log.append(event)
        for sub in self.subscriptions:
            sub.queue.append(event)
            sub.poke()
        due = []
        for entry in self._faults:
            left = entry[1]
            left[0] -= 1
            if left[0] <= 0:
                due.append(entry)
        for entry in due:
            self._faults.remove(entry)
            self._fire(entry[0])

    async def activity(
        self, every_s: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Other activity of the account, until cancelled: a ``balanceUpdate`` every
        ``every_s`` (virtual) seconds to the subscriptions up then (not an order
        change: it neither enters :attr:`log` nor counts for armed faults).

        Start it with ``nursery.start``: it is asleep when that returns (a test
        driving Trio from another thread then finds nothing runnable).
        """
        task_status.started()
        while True:
            await trio.sleep(every_s)
            now = self.clock()
            event = BalanceUpdate(
                venue=self.venue,
                event_time_ms=self.event_ms(now),
                asset="BNB",
                delta=Decimal("0.001"),
                clear_time_ms=self.event_ms(now),
            )
            for sub in self.subscriptions:
                sub.queue.append(event)
                sub.poke()

    def _fire(self, fault: StreamFault) -> None:
        now = self.clock()
        for sub in list(self.subscriptions):
            if fault.kind is StreamFaultKind.DROP:
                sub.queue.clear()
                sub.ended = "closed"
                self.subscriptions.remove(sub)
            elif fault.kind is StreamFaultKind.TERMINATE:
                sub.queue.append(
                    StreamTerminated(venue=self.venue, event_time_ms=self.event_ms(now))
                )
                sub.ended = "terminated"
                self.subscriptions.remove(sub)
            else:
                sub.held_until = max(sub.held_until, now + fault.delay_s)
            sub.poke()

    def subscribe(self) -> _Subscription | None:
        """A new subscription from now on; ``None`` when a REFUSE is armed.

        Raises:
            VenueUnavailableError: a FAIL is armed.
        """
        if self._refusals:
            kind = self._refusals.popleft()
            self.refused += 1
            if kind is StreamFaultKind.REFUSE:
                return None
            raise VenueUnavailableError(
                f"{self.venue} userDataStream.subscribe.signature: connect error, not subscribed",
                venue=self.venue,
                endpoint="WS userDataStream.subscribe.signature",
            )
        sub = _Subscription(next(self._numbers))
        self.subscriptions.append(sub)
        self.subscribed += 1
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)
        if sub.ended is None:
            sub.ended = "unsubscribed"


class ModelUserStream:
    """One user data stream session of one process (a ``UserStreamSource``).

    Args:
        hub: The venue's stream.
        wall_clock_ms: The consumer's wall clock (ms), for ``since_ms`` and ``at_ms``.
        before_delivery: Called with each event before it is handed over (a
            test marks the process dead there: it raises, and the process
            gets nothing more).
    """

    def __init__(
        self,
        hub: StreamHub,
        *,
        wall_clock_ms: Callable[[], int],
        before_delivery: Callable[[UserStreamEvent], None] | None = None,
    ) -> None:
        self.hub = hub
        self.wall_clock_ms = wall_clock_ms
        self.before_delivery = before_delivery

    async def run(
        self,
        send: trio.MemorySendChannel[UserStreamEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Subscribe, deliver until the subscription ends, emit the Down and return.

        ``since_ms`` is one millisecond past the consumer's clock when the
        subscription began: the subscription's answer arrives after the venue
        registered it, so no order sent at or before ``since_ms`` (on the
        consumer's millisecond clock) can have changed before it.

        Raises:
            VenueUnavailableError: the subscription failed (``FAIL``).
        """
        await trio.lowlevel.checkpoint()
        sub = self.hub.subscribe()
        if sub is None:
            return  # ended before it subscribed (REFUSE)
        reason = "closed"
        try:
            since_ms = self.wall_clock_ms() + 1
            task_status.started()
            await self._deliver(
                send,
                UserStreamUp(venue=self.hub.venue, since_ms=since_ms, subscription_id=sub.number),
            )
            while (event := await sub.next()) is not None:
                await self._deliver(send, event)
                if isinstance(event, StreamTerminated):
                    break
            reason = sub.ended or reason
        finally:
            self.hub.unsubscribe(sub)
        await self._deliver(
            send, UserStreamDown(venue=self.hub.venue, at_ms=self.wall_clock_ms(), reason=reason)
        )

    async def _deliver(
        self, send: trio.MemorySendChannel[UserStreamEvent], event: UserStreamEvent
    ) -> None:
        if self.before_delivery is not None:
            self.before_delivery(event)
        await send.send(event)
