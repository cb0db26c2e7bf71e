"""The queues of the :class:`~daemon.orders.dispatch.Dispatcher`, and how accounts map to them.

What is queued (:class:`WorkItem`), one queue with the state of the single
worker that drains it (:class:`Lane`), and the lane pools that decide which
lane an account's items go to, behind one interface (:class:`LanePool`):

* :class:`ShardedLanes` (``orders.dispatch = "sharded"``): ``orders.shards``
  fixed lanes, an account always on lane ``shard-<shard_for(account)>``;
* :class:`DynamicLanes` (``orders.dispatch = "dynamic"``): a lane per
  account, opened on first use, retired after ``orders.idle_queue_s`` idle,
  at most ``orders.max_account_queues`` live (:class:`TooManyQueuesError`).

A pool also keeps what its lanes hold (queued and running items, by key, for
:meth:`LanePool.is_queued`) and builds the capacity error of a full lane
(:class:`QueueFullError`). The strategies themselves are described in
:mod:`daemon.orders.dispatch`; :func:`open_lanes` builds the pool of a mode.
"""

from __future__ import annotations

import abc
import enum
import logging
import math
import zlib
from collections import Counter
from typing import Any

import attrs
import trio

from daemon.errors import TransientError

__all__ = [
    "CAPACITY_KEY",
    "DEFAULT_RETRY_AFTER_S",
    "MAX_QUEUES_KEY",
    "MIN_RETRY_AFTER_S",
    "SERVICE_EWMA_ALPHA",
    "DispatchMode",
    "DynamicLanes",
    "Lane",
    "LanePool",
    "QueueFullError",
    "ShardedLanes",
    "TooManyQueuesError",
    "WorkItem",
    "now_or_none",
    "open_lanes",
    "shard_for",
]

log = logging.getLogger("tradingd.orders.dispatch")

#: The configuration key that sets a queue's capacity (named in errors).
CAPACITY_KEY = "orders.account_queue_capacity"
#: The configuration key that caps the live queues of dynamic mode (named in errors).
MAX_QUEUES_KEY = "orders.max_account_queues"

#: ``retry_after_s`` of a full queue before any item was timed on it.
DEFAULT_RETRY_AFTER_S = 1.0
#: Lower bound of the ``retry_after_s`` estimate, so a queue of instant
#: handlers does not invite a client to hammer the entry point.
MIN_RETRY_AFTER_S = 0.05
#: Weight of the newest handler duration in a queue's service-time average.
SERVICE_EWMA_ALPHA = 0.2


class DispatchMode(enum.StrEnum):
    """How accounts are mapped to workers (``orders.dispatch``)."""

    #: Fixed workers; an account is hashed to one of them.
    SHARDED = "sharded"
    #: A worker per account, created on demand and retired when idle.
    DYNAMIC = "dynamic"


class QueueFullError(TransientError):
    """An account's queue cannot take one more item (``orders.account_queue_capacity``).

    Raised by :meth:`~daemon.orders.dispatch.Dispatcher.reserve` before the
    caller commits anything, so the order entry answers 503 with
    ``Retry-After: retry_after_s``. ``retry_after_s`` estimates when one slot
    frees: the queue's average handler duration.
    """

    def __init__(self, message: str, *, account: str, capacity: int, retry_after_s: float) -> None:
        super().__init__(message)
        self.account = account
        self.capacity = capacity
        self.retry_after_s = retry_after_s


class TooManyQueuesError(TransientError):
    """Dynamic mode: ``orders.max_account_queues`` queues are live; no new account fits.

    ``retry_after_s`` is the time until the earliest idle queue retires (or
    the idle timeout, when none is idle now).
    """

    def __init__(
        self, message: str, *, account: str, max_queues: int, retry_after_s: float
    ) -> None:
        super().__init__(message)
        self.account = account
        self.max_queues = max_queues
        self.retry_after_s = retry_after_s


@attrs.frozen
class WorkItem:
    """One unit of work for one account; the dispatcher only reads ``account``."""

    account: str
    #: What the item is about, e.g. the client order id (shown in logs and status).
    key: str
    #: ``"place"``, ``"cancel"``, … — opaque here, interpreted by the handler.
    kind: str


def shard_for(account: str, shards: int) -> int:
    """The shard of ``account`` among ``shards``: ``zlib.crc32(utf-8 name) % shards``.

    Stable across processes, restarts and Python versions (unlike
    :func:`hash`, which is salted per process), so the same account always
    shows up on the same shard in logs and status.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return zlib.crc32(account.encode("utf-8")) % shards


def now_or_none() -> float | None:
    """Trio's clock, or ``None`` outside ``trio.run`` (e.g. status built in a sync test)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None


@attrs.define(eq=False)
class Lane:
    """One FIFO queue and the single worker that drains it."""

    name: str
    send: trio.MemorySendChannel[WorkItem]
    receive: trio.MemoryReceiveChannel[WorkItem]
    #: Items submitted and not yet started. Counted here rather than read from
    #: the channel: an item handed straight to a waiting worker is in neither
    #: the buffer nor running until the worker is scheduled.
    pending: int = 0
    #: Slots promised by reserve() and not yet submitted or released.
    reserved: int = 0
    running: WorkItem | None = None
    running_since: float = 0.0
    #: Dynamic mode: since when nothing is queued, running or reserved (None: busy).
    idle_since: float | None = None
    #: Dynamic mode: the worker's idle timer while it waits, so that a release
    #: can restart it at the moment the queue becomes idle.
    idle_scope: trio.CancelScope | None = None
    worker_started: bool = False
    service_ewma_s: float | None = None

    @property
    def load(self) -> int:
        return self.pending + self.reserved

    def record_service(self, duration_s: float) -> None:
        """Fold one handler duration into the lane's service-time average."""
        previous = self.service_ewma_s
        self.service_ewma_s = (
            duration_s
            if previous is None
            else previous + SERVICE_EWMA_ALPHA * (duration_s - previous)
        )


class LanePool(abc.ABC):
    """The lanes of one dispatcher, the rule that maps an account to its lane, and what they hold.

    Args:
        name: The dispatcher's name (logs, errors).
        capacity: Items per lane, counting reservations.
    """

    def __init__(self, *, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        #: Sharded: "shard-<i>" → lane, fixed. Dynamic: account → lane, live ones only.
        self.lanes: dict[str, Lane] = {}
        #: (key, kind) of every item queued or running, for is_queued().
        self._keys: Counter[tuple[str, str]] = Counter()
        #: Lanes opened and retired on demand (dynamic mode; monotonic).
        self.created = 0
        self.retired = 0

    @abc.abstractmethod
    def find(self, account: str) -> Lane | None:
        """The lane ``account``'s items go to, if it has one."""

    @abc.abstractmethod
    def lane_for(self, account: str) -> Lane:
        """The lane ``account``'s items go to, opened when it has none (dynamic mode).

        Raises:
            TooManyQueuesError: Dynamic mode, a new lane would exceed the cap.
        """

    @abc.abstractmethod
    async def next_item(self, lane: Lane) -> WorkItem | None:
        """Wait for ``lane``'s next item; ``None`` once the lane is retired (its worker ends).

        Raises:
            trio.EndOfChannel: The lane was closed and is empty (a drain).
        """

    @abc.abstractmethod
    def note_idle(self, lane: Lane) -> None:
        """Called when ``lane`` may have become idle (a reservation was released)."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """The mode's sizes for the status: ``shards``, ``max_queues``, ``idle_s`` (or ``None``)."""

    @abc.abstractmethod
    def _where(self, lane: Lane) -> str:
        """How a full-queue error names ``lane``."""

    def _open(self, name: str) -> Lane:
        send, receive = trio.open_memory_channel[WorkItem](self.capacity)
        lane = Lane(name, send, receive)
        self.lanes[name] = lane
        return lane

    def enqueue(self, lane: Lane, item: WorkItem) -> None:
        """Put ``item`` on ``lane``: never blocks, the caller checked its load."""
        # Cannot block: pending + reserved <= capacity == the channel's buffer size.
        lane.send.send_nowait(item)
        lane.pending += 1
        self._keys[(item.key, item.kind)] += 1
        lane.idle_since = None

    def forget(self, item: WorkItem) -> None:
        """``item`` has finished (or was cancelled): it is no longer queued or running."""
        self._keys[(item.key, item.kind)] -= 1
        if self._keys[(item.key, item.kind)] <= 0:
            del self._keys[(item.key, item.kind)]

    def is_queued(self, key: str, kind: str | None = None) -> bool:
        """Whether an item with ``key`` (and ``kind``, if given) is waiting or running."""
        if kind is not None:
            return (key, kind) in self._keys
        return any(k == key for k, _ in self._keys)

    def full_error(self, account: str, lane: Lane) -> QueueFullError:
        """The error of a reservation or submit that finds ``lane`` full."""
        retry_after_s = (
            DEFAULT_RETRY_AFTER_S
            if lane.service_ewma_s is None
            else max(MIN_RETRY_AFTER_S, lane.service_ewma_s)
        )
        return QueueFullError(
            f"dispatcher {self.name!r}: account {account!r}: {self._where(lane)} is full "
            f"({lane.pending} queued + {lane.reserved} reserved of capacity "
            f"{CAPACITY_KEY} = {self.capacity}); retry in {retry_after_s:.3g} s",
            account=account,
            capacity=self.capacity,
            retry_after_s=retry_after_s,
        )

    @property
    def queued(self) -> int:
        """Items submitted and not started, over all lanes."""
        return sum(lane.pending for lane in self.lanes.values())

    @property
    def running(self) -> int:
        """Items whose handler is running now."""
        return sum(1 for lane in self.lanes.values() if lane.running is not None)

    @property
    def reserved(self) -> int:
        """Slots reserved and not yet submitted or released, over all lanes."""
        return sum(lane.reserved for lane in self.lanes.values())

    def running_items(self, now: float | None) -> list[dict[str, Any]]:
        """The items running now, for the status (with ``running_s`` when ``now`` is known)."""
        running: list[dict[str, Any]] = []
        for lane in self.lanes.values():
            if lane.running is not None:
                entry: dict[str, Any] = {
                    "queue": lane.name,
                    "account": lane.running.account,
                    "key": lane.running.key,
                    "kind": lane.running.kind,
                }
                if now is not None:
                    entry["running_s"] = round(now - lane.running_since, 6)
                running.append(entry)
        return running


class ShardedLanes(LanePool):
    """``shards`` fixed lanes; an account always goes to ``shard-<shard_for(account)>``."""

    def __init__(self, *, name: str, capacity: int, shards: int) -> None:
        super().__init__(name=name, capacity=capacity)
        self.shards = shards
        for index in range(shards):
            self._open(f"shard-{index}")

    def find(self, account: str) -> Lane:
        return self.lanes[f"shard-{shard_for(account, self.shards)}"]

    def lane_for(self, account: str) -> Lane:
        return self.find(account)

    async def next_item(self, lane: Lane) -> WorkItem | None:
        return await lane.receive.receive()

    def note_idle(self, lane: Lane) -> None:
        """Nothing to do: sharded lanes are fixed and never retire."""

    def settings(self) -> dict[str, Any]:
        return {"shards": self.shards, "max_queues": None, "idle_s": None}

    def _where(self, lane: Lane) -> str:
        return f"its queue {lane.name}"


class DynamicLanes(LanePool):
    """A lane per account, opened on first use and retired after ``idle_s`` idle.

    At most ``max_queues`` lanes are live. A lane with a reservation, a queued
    or a running item is never retired; its idle period starts when it
    *becomes* idle.
    """

    def __init__(self, *, name: str, capacity: int, max_queues: int, idle_s: float) -> None:
        super().__init__(name=name, capacity=capacity)
        self.max_queues = max_queues
        self.idle_s = idle_s

    def find(self, account: str) -> Lane | None:
        return self.lanes.get(account)

    def lane_for(self, account: str) -> Lane:
        lane = self.find(account)
        if lane is not None:
            return lane
        if len(self.lanes) >= self.max_queues:
            retry_after_s = self._earliest_retirement_s()
            raise TooManyQueuesError(
                f"dispatcher {self.name!r}: cannot open a queue for account {account!r}: "
                f"{len(self.lanes)} account queues are live, the cap {MAX_QUEUES_KEY} = "
                f"{self.max_queues} is reached (idle queues retire after {self.idle_s:g} s; "
                f"retry in {retry_after_s:.3g} s or raise the cap)",
                account=account,
                max_queues=self.max_queues,
                retry_after_s=retry_after_s,
            )
        return self._open(account)

    def _open(self, name: str) -> Lane:
        lane = super()._open(name)
        self.created += 1
        log.debug("dispatcher %r: opened the queue of account %r", self.name, name)
        return lane

    async def next_item(self, lane: Lane) -> WorkItem | None:
        while True:
            item: WorkItem | None = None
            self.note_idle(lane)
            with trio.move_on_at(self._retire_at(lane)) as lane.idle_scope:
                item = await lane.receive.receive()
            lane.idle_scope = None
            if item is not None:
                return item
            # The idle timer fired. Nothing below checkpoints, so no submit can
            # slip in between this check and the removal: a later submit finds
            # no queue and opens a new one.
            if self._retire_if_idle(lane):
                return None

    def note_idle(self, lane: Lane) -> None:
        """Start a lane's idle period when nothing is queued, running or reserved.

        The period starts when the lane *becomes* idle (its last item ended,
        or its last reservation was released), so it retires exactly
        ``idle_s`` later, unless work arrives in between.
        """
        if lane.load or lane.running is not None:
            lane.idle_since = None
        elif lane.idle_since is None:
            lane.idle_since = trio.current_time()
            if lane.idle_scope is not None:
                lane.idle_scope.deadline = self._retire_at(lane)

    def settings(self) -> dict[str, Any]:
        return {"shards": None, "max_queues": self.max_queues, "idle_s": self.idle_s}

    def _where(self, lane: Lane) -> str:
        return "its queue"

    def _retire_at(self, lane: Lane) -> float:
        return math.inf if lane.idle_since is None else lane.idle_since + self.idle_s

    def _retire_if_idle(self, lane: Lane) -> bool:
        self.note_idle(lane)
        if (
            lane.idle_since is None
            or trio.current_time() < self._retire_at(lane)
            or self.lanes.get(lane.name) is not lane
        ):
            return False
        del self.lanes[lane.name]
        lane.send.close()
        lane.receive.close()
        self.retired += 1
        log.debug(
            "dispatcher %r: retired the queue of account %r after %g s idle",
            self.name,
            lane.name,
            self.idle_s,
        )
        return True

    def _earliest_retirement_s(self) -> float:
        now = now_or_none()
        best = self.idle_s
        if now is None:
            return best
        for lane in self.lanes.values():
            if lane.load == 0 and lane.running is None and lane.idle_since is not None:
                best = min(best, max(0.0, lane.idle_since + self.idle_s - now))
        return max(MIN_RETRY_AFTER_S, best)


def open_lanes(
    mode: DispatchMode, *, name: str, shards: int, capacity: int, max_queues: int, idle_s: float
) -> LanePool:
    """The lane pool of ``mode``, after checking every size (whatever the mode).

    Raises:
        ValueError: A size is out of range (the message names the dispatcher and the key).
    """
    if shards < 1:
        raise ValueError(f"dispatcher {name!r}: shards must be >= 1, got {shards}")
    if capacity < 1:
        raise ValueError(
            f"dispatcher {name!r}: capacity ({CAPACITY_KEY}) must be >= 1, got {capacity}"
        )
    if max_queues < 1:
        raise ValueError(
            f"dispatcher {name!r}: max_queues ({MAX_QUEUES_KEY}) must be >= 1, not {max_queues}"
        )
    if not (idle_s > 0 and math.isfinite(idle_s)):
        raise ValueError(f"dispatcher {name!r}: idle_s must be a finite number > 0, got {idle_s}")
    if mode is DispatchMode.SHARDED:
        return ShardedLanes(name=name, capacity=capacity, shards=shards)
    return DynamicLanes(name=name, capacity=capacity, max_queues=max_queues, idle_s=idle_s)
