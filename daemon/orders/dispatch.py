"""Per-account ordering of order work: one account's items one at a time, in submit order.

The operations of one account never run concurrently and run in the order
they were submitted (docs/ARCHITECTURE.md §4 Orders), because a venue answers
an account's orders in the order it receives them (a cancel must not overtake its place; a position
limit assumes the earlier order went first). Different accounts are
independent and may run side by side.

A :class:`Dispatcher` runs :class:`WorkItem` s through one async handler, with
one of two strategies (``orders.dispatch``):

``sharded`` (:attr:`DispatchMode.SHARDED`)
    ``orders.shards`` fixed workers, each draining its own bounded queue. An
    account always goes to the same shard, ``zlib.crc32(account) % shards``
    (see :func:`shard_for`). CRC-32 and not :func:`hash`: Python salts string
    hashes per process, and an operator reading logs (or a test) must be able
    to tell which shard an account uses on every run. Cheap and bounded (the
    task count never grows), at the price of head-of-line blocking: accounts
    that share a shard wait for each other.

``dynamic`` (:attr:`DispatchMode.DYNAMIC`)
    A queue and a worker per account, created on first use and retired after
    ``orders.idle_queue_s`` without work, so a slow account never delays
    another. At most ``orders.max_account_queues`` queues are live; opening
    one more raises :class:`TooManyQueuesError`.

Capacity and admission. Every queue holds at most
``orders.account_queue_capacity`` items (a shard's queue in sharded mode).
The order entry *reserves* a slot (:meth:`Dispatcher.reserve`) before it
commits an intent, so a full queue is refused with a 503 *before* anything
becomes durable, and the commit can then always be handed over
(:meth:`Dispatcher.submit` with ``reserved=True`` never fails for capacity).
Recovery paths that already hold durable work (PENDING rows at start, UNKNOWN
retries) submit without a reservation and simply get ``False`` on a full
queue: the row stays PENDING and is offered again later. Nothing is ever
dropped, and nothing waits: every call here except :meth:`Dispatcher.run` and
:meth:`Dispatcher.drain` is synchronous.

Stopping. :meth:`Dispatcher.drain` refuses new work, lets the workers finish
what is queued within a deadline and then cancels them;
:meth:`Dispatcher.abort` cancels them at once. Both return how many queued
items never started; those are still durable at the caller (PENDING rows) and
run on the next start. An item running when the workers are cancelled sees
the cancellation at its next checkpoint, like any task: the handler shields
its own critical section with a bounded scope
(``trio.move_on_after(t, shield=True)``).

Errors, all ``TransientError`` s (the tree is drawn in :mod:`daemon.errors`):
:class:`QueueFullError` (the account's queue has no free slot,
``orders.account_queue_capacity``), :class:`TooManyQueuesError` (dynamic mode:
``orders.max_account_queues`` live queues already) and
:class:`DispatcherClosedError` (draining or stopped: no new work is taken).
"""

from __future__ import annotations

import enum
import logging
import math
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from daemon.errors import TransientError

__all__ = [
    "CAPACITY_KEY",
    "MAX_QUEUES_KEY",
    "DispatchMode",
    "Dispatcher",
    "DispatcherClosedError",
    "Handler",
    "QueueFullError",
    "TooManyQueuesError",
    "WorkItem",
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

    Raised by :meth:`Dispatcher.reserve` before the caller commits anything,
    so the order entry answers 503 with ``Retry-After: retry_after_s``.
    ``retry_after_s`` estimates when one slot frees: the queue's average
    handler duration.
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


class DispatcherClosedError(TransientError):
    """The dispatcher is draining or stopped and takes no new work.

    Transient from the caller's point of view: the pipeline is restarting or
    shutting down, and work kept durable runs on the next start.
    """

    def __init__(self, message: str, *, retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@attrs.frozen
class WorkItem:
    """One unit of work for one account; the dispatcher only reads ``account``."""

    account: str
    #: What the item is about, e.g. the client order id (shown in logs and status).
    key: str
    #: ``"place"``, ``"cancel"``, … — opaque here, interpreted by the handler.
    kind: str


Handler = Callable[[WorkItem], Awaitable[None]]


def shard_for(account: str, shards: int) -> int:
    """The shard of ``account`` among ``shards``: ``zlib.crc32(utf-8 name) % shards``.

    Stable across processes, restarts and Python versions (unlike
    :func:`hash`, which is salted per process), so the same account always
    shows up on the same shard in logs and status.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return zlib.crc32(account.encode("utf-8")) % shards


class _RunState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DONE = "done"


@attrs.define(eq=False)
class _Lane:
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


def _now_or_none() -> float | None:
    try:
        return trio.current_time()
    except RuntimeError:  # outside trio.run (e.g. building status in a sync test)
        return None


class Dispatcher:
    """Runs work items so that one account's items run one at a time, in submit order.

    Args:
        handler: Awaited once per item. It keeps its own state durable: an
            exception is logged and the worker goes on with the next item.
        mode: The dispatch strategy (module docstring).
        shards: Number of workers in sharded mode (``orders.shards``).
        capacity: Items per queue, counting reservations
            (``orders.account_queue_capacity``).
        max_queues: Live queues in dynamic mode (``orders.max_account_queues``).
        idle_s: Dynamic mode: a queue with nothing queued, running or reserved
            for this long is retired (``orders.idle_queue_s``).
        name: Shown in logs, errors, status and task names.

    A dispatcher runs once: after :meth:`drain` or :meth:`abort` (or after
    :meth:`run` was cancelled), build a new one for the next incarnation of the
    pipeline; the work that did not run is still durable at the caller.

    Counters for metrics (monotonic): ``submitted``, ``started``,
    ``completed``, ``failed`` (the handler raised), ``cancelled`` (the handler
    was cancelled by a stop), ``refused`` (capacity refusals by
    :meth:`reserve` or :meth:`submit`), ``queues_created`` and
    ``queues_retired`` (dynamic mode).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        mode: DispatchMode,
        shards: int = 4,
        capacity: int = 1000,
        max_queues: int = 64,
        idle_s: float = 60.0,
        name: str = "orders",
    ) -> None:
        mode = DispatchMode(mode)
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
            raise ValueError(
                f"dispatcher {name!r}: idle_s must be a finite number > 0, got {idle_s}"
            )
        self._handler = handler
        self.mode = mode
        self.shards = shards
        self.capacity = capacity
        self.max_queues = max_queues
        self.idle_s = idle_s
        self.name = name

        self.submitted = 0
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.refused = 0
        self.queues_created = 0
        self.queues_retired = 0

        #: Sharded: "shard-<i>" → lane, fixed. Dynamic: account → lane, live ones only.
        self._lanes: dict[str, _Lane] = {}
        #: (key, kind) of every item queued or running, for is_queued().
        self._keys: Counter[tuple[str, str]] = Counter()
        self._state = _RunState.NEW
        #: No new reserve() or unreserved submit() (draining or stopped).
        self._closed = False
        #: Workers are being cancelled or gone: not even reserved items are taken.
        self._stopped = False
        self._closing = trio.Event()
        self._done = trio.Event()
        self._nursery: trio.Nursery | None = None
        if mode is DispatchMode.SHARDED:
            for index in range(shards):
                self._open_lane(f"shard-{index}")

    # ------------------------------------------------------------------ admission

    def shard_of(self, account: str) -> int:
        """The shard index ``account`` maps to (:func:`shard_for` with this dispatcher's count)."""
        return shard_for(account, self.shards)

    def reserve(self, account: str) -> None:
        """Promise ``account`` one slot in its queue, before the caller commits the work.

        Counts the items queued and the slots reserved but not yet submitted.
        In dynamic mode the account's queue is created if needed (it counts
        toward the cap), and a reservation pins it: it is not retired until
        the slot is submitted or released.

        Raises:
            QueueFullError: The queue (its shard's, in sharded mode) is full.
            TooManyQueuesError: Dynamic mode, a new queue would exceed the cap.
            DispatcherClosedError: Draining or stopped.
        """
        self._check_open(account)
        lane = self._lane_for(account)
        if lane.load >= self.capacity:
            self.refused += 1
            raise self._full_error(account, lane)
        lane.reserved += 1
        lane.idle_since = None

    def release(self, account: str) -> None:
        """Give back a slot from :meth:`reserve` that will not be submitted.

        Raises:
            ValueError: ``account`` holds no reservation (a bug in the caller).
        """
        lane = self._find_lane(account)
        if lane is None or lane.reserved < 1:
            raise ValueError(
                f"dispatcher {self.name!r}: release({account!r}) without a reservation"
            )
        lane.reserved -= 1
        if self.mode is DispatchMode.DYNAMIC:
            self._note_idle(lane)
        self._close_if_drained(lane)

    def submit(self, item: WorkItem, *, reserved: bool = False) -> bool:
        """Queue ``item`` behind the earlier items of its account, without waiting.

        Args:
            item: The work.
            reserved: Consume a slot from :meth:`reserve`. Such a submit never
                fails for capacity and never raises for a closed dispatcher:
                while draining it is still queued (the drain runs it within
                its deadline). It returns ``False`` only once the workers are
                stopped (after :meth:`abort`, a drain's deadline, or
                :meth:`run` cancelled), when the work must wait, durable, for
                the next start.

        Returns:
            ``True`` when queued; ``False`` when not queued (an unreserved
            submit to a full queue, or see ``reserved``). The caller keeps
            the work durable and offers it again later.

        Raises:
            TooManyQueuesError: Dynamic mode, unreserved, and a new queue
                would exceed the cap.
            DispatcherClosedError: Unreserved while draining or stopped.
            ValueError: ``reserved=True`` without a reservation (a bug).
        """
        account = item.account
        if reserved:
            lane = self._find_lane(account)
            if lane is None or lane.reserved < 1:
                raise ValueError(
                    f"dispatcher {self.name!r}: submit(reserved=True) of {item.kind} "
                    f"{item.key!r} for account {account!r} without a reservation"
                )
            lane.reserved -= 1
            if self._stopped:
                self._close_if_drained(lane)
                return False
            self._enqueue(lane, item)
            self._close_if_drained(lane)
            return True
        self._check_open(account)
        lane = self._lane_for(account)
        if lane.load >= self.capacity:
            self.refused += 1
            return False
        self._enqueue(lane, item)
        return True

    def _enqueue(self, lane: _Lane, item: WorkItem) -> None:
        # Cannot block: pending + reserved <= capacity == the channel's buffer size.
        lane.send.send_nowait(item)
        lane.pending += 1
        self._keys[(item.key, item.kind)] += 1
        lane.idle_since = None
        self.submitted += 1

    def _check_open(self, account: str) -> None:
        if self._closed:
            state = "stopped" if self._stopped else "draining"
            raise DispatcherClosedError(
                f"dispatcher {self.name!r} is {state}: no new work for account {account!r}"
            )

    def _find_lane(self, account: str) -> _Lane | None:
        """The lane ``account``'s items go to, if it has one."""
        if self.mode is DispatchMode.SHARDED:
            return self._lanes[f"shard-{self.shard_of(account)}"]
        return self._lanes.get(account)

    def _lane_for(self, account: str) -> _Lane:
        """The lane ``account``'s items go to, opened (dynamic mode) when it has none."""
        lane = self._find_lane(account)
        if lane is not None:
            return lane
        if len(self._lanes) >= self.max_queues:
            self.refused += 1
            retry_after_s = self._earliest_retirement_s()
            raise TooManyQueuesError(
                f"dispatcher {self.name!r}: cannot open a queue for account {account!r}: "
                f"{len(self._lanes)} account queues are live, the cap {MAX_QUEUES_KEY} = "
                f"{self.max_queues} is reached (idle queues retire after {self.idle_s:g} s; "
                f"retry in {retry_after_s:.3g} s or raise the cap)",
                account=account,
                max_queues=self.max_queues,
                retry_after_s=retry_after_s,
            )
        lane = self._open_lane(account)
        if self._nursery is not None:
            self._start_worker(self._nursery, lane)
        return lane

    def _open_lane(self, name: str) -> _Lane:
        send, receive = trio.open_memory_channel[WorkItem](self.capacity)
        lane = _Lane(name, send, receive)
        self._lanes[name] = lane
        if self.mode is DispatchMode.DYNAMIC:
            self.queues_created += 1
            log.debug("dispatcher %r: opened the queue of account %r", self.name, name)
        return lane

    def _full_error(self, account: str, lane: _Lane) -> QueueFullError:
        where = f"its queue {lane.name}" if self.mode is DispatchMode.SHARDED else "its queue"
        retry_after_s = (
            DEFAULT_RETRY_AFTER_S
            if lane.service_ewma_s is None
            else max(MIN_RETRY_AFTER_S, lane.service_ewma_s)
        )
        return QueueFullError(
            f"dispatcher {self.name!r}: account {account!r}: {where} is full "
            f"({lane.pending} queued + {lane.reserved} reserved of capacity "
            f"{CAPACITY_KEY} = {self.capacity}); retry in {retry_after_s:.3g} s",
            account=account,
            capacity=self.capacity,
            retry_after_s=retry_after_s,
        )

    def _earliest_retirement_s(self) -> float:
        now = _now_or_none()
        best = self.idle_s
        if now is None:
            return best
        for lane in self._lanes.values():
            if lane.load == 0 and lane.running is None and lane.idle_since is not None:
                best = min(best, max(0.0, lane.idle_since + self.idle_s - now))
        return max(MIN_RETRY_AFTER_S, best)

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled, or until a drain or abort has stopped them.

        Reports ready once the workers of the existing queues are scheduled.
        Items submitted before :meth:`run` wait in their queues and start
        then. Called on a dispatcher that was already stopped, it reports
        ready and returns at once (a drain may have raced its start).

        Raises:
            RuntimeError: It is already running.
        """
        if self._state is _RunState.RUNNING:
            raise RuntimeError(f"dispatcher {self.name!r} is already running")
        if self._state is _RunState.DONE or self._closed:
            self._finish()
            task_status.started()
            return
        self._state = _RunState.RUNNING
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for lane in list(self._lanes.values()):
                    self._start_worker(nursery, lane)
                task_status.started()
                # The nursery must outlive its workers' absence in dynamic mode (no
                # account yet); a drain releases it and the workers end on their own
                # once their queues are empty.
                await self._closing.wait()
        finally:
            self._finish()

    def _finish(self) -> None:
        self._nursery = None
        self._closed = True
        self._stopped = True
        self._state = _RunState.DONE
        self._done.set()

    def _start_worker(self, nursery: trio.Nursery, lane: _Lane) -> None:
        if lane.worker_started:
            return
        lane.worker_started = True
        nursery.start_soon(self._work, lane, name=f"{self.name}:{lane.name}")

    async def _work(self, lane: _Lane) -> None:
        """The one worker of ``lane``: its items one after the other, in order."""
        dynamic = self.mode is DispatchMode.DYNAMIC
        while True:
            item: WorkItem | None = None
            try:
                if dynamic:
                    self._note_idle(lane)
                    with trio.move_on_at(self._retire_at(lane)) as lane.idle_scope:
                        item = await lane.receive.receive()
                    lane.idle_scope = None
                else:
                    item = await lane.receive.receive()
            except trio.EndOfChannel:  # drained: closed and empty
                return
            if item is None:
                # The idle timer fired. Nothing below checkpoints, so no submit can
                # slip in between this check and the removal: a later submit finds
                # no queue and opens a new one.
                if self._retire_if_idle(lane):
                    return
                continue
            if self._stopped:
                return  # aborted: the item stays counted as not started
            lane.pending -= 1
            await self._run_one(lane, item)

    def _note_idle(self, lane: _Lane) -> None:
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

    def _retire_at(self, lane: _Lane) -> float:
        return math.inf if lane.idle_since is None else lane.idle_since + self.idle_s

    def _retire_if_idle(self, lane: _Lane) -> bool:
        self._note_idle(lane)
        if (
            lane.idle_since is None
            or trio.current_time() < self._retire_at(lane)
            or self._lanes.get(lane.name) is not lane
        ):
            return False
        del self._lanes[lane.name]
        lane.send.close()
        lane.receive.close()
        self.queues_retired += 1
        log.debug(
            "dispatcher %r: retired the queue of account %r after %g s idle",
            self.name,
            lane.name,
            self.idle_s,
        )
        return True

    async def _run_one(self, lane: _Lane, item: WorkItem) -> None:
        lane.running = item
        started_at = lane.running_since = trio.current_time()
        self.started += 1
        finished = False
        try:
            await self._handler(item)
            finished = True
            self.completed += 1
        except Exception:
            finished = True
            self.failed += 1
            log.exception(
                "dispatcher %r: %s of %r for account %r failed; going on with the next item",
                self.name,
                item.kind,
                item.key,
                item.account,
            )
        finally:
            lane.running = None
            self._keys[(item.key, item.kind)] -= 1
            if self._keys[(item.key, item.kind)] <= 0:
                del self._keys[(item.key, item.kind)]
            if finished:
                duration_s = trio.current_time() - started_at
                previous = lane.service_ewma_s
                lane.service_ewma_s = (
                    duration_s
                    if previous is None
                    else previous + SERVICE_EWMA_ALPHA * (duration_s - previous)
                )
            else:
                self.cancelled += 1  # a BaseException (Cancelled) is on its way out

    # ------------------------------------------------------------------ stopping

    async def drain(self, timeout_s: float) -> int:
        """Graceful stop: refuse new work, finish what is queued within ``timeout_s``.

        New :meth:`reserve` and unreserved :meth:`submit` calls raise
        :class:`DispatcherClosedError` from now on; reserved submits still
        queue until the workers stop. Once ``timeout_s`` has passed, the
        workers are cancelled (an item running then is cancelled like any
        task). Returns when :meth:`run` has ended.

        Returns:
            How many queued items were not started (still durable at the caller).

        Raises:
            ValueError: ``timeout_s`` is negative or not a number (nothing changed).
        """
        if not timeout_s >= 0:
            raise ValueError(
                f"dispatcher {self.name!r}: drain timeout_s must be >= 0, got {timeout_s}"
            )
        self._begin_close()
        if self._state is _RunState.NEW:
            self._finish()  # nothing runs them; run() will return at once
        with trio.move_on_after(timeout_s):
            await self._done.wait()
        if not self._done.is_set():
            log.warning(
                "dispatcher %r: drain deadline of %g s passed with %d items queued and "
                "%d running; cancelling the workers",
                self.name,
                timeout_s,
                self.queued,
                self.running,
            )
            self._cancel_workers()
            await self._done.wait()
        return self.queued

    def abort(self) -> int:
        """Hard stop: refuse new work and cancel the workers now.

        Returns:
            How many queued items were not started (still durable at the caller).
        """
        self._begin_close()
        if self._state is _RunState.NEW:
            self._finish()
        self._cancel_workers()
        return self.queued

    def _begin_close(self) -> None:
        if self._closed and self._closing.is_set():
            return
        self._closed = True
        self._closing.set()
        for lane in self._lanes.values():
            self._close_if_drained(lane)

    def _close_if_drained(self, lane: _Lane) -> None:
        """While closing, end a lane's input once no reservation can still add to it.

        Its worker then finishes the items already queued and sees the end of
        the channel, which is how a drain ends without cancelling anything.
        """
        if self._closed and lane.reserved == 0:
            lane.send.close()

    def _cancel_workers(self) -> None:
        self._stopped = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ status

    @property
    def queued(self) -> int:
        """Items submitted and not started, over all queues."""
        return sum(lane.pending for lane in self._lanes.values())

    @property
    def running(self) -> int:
        """Items whose handler is running now."""
        return sum(1 for lane in self._lanes.values() if lane.running is not None)

    def is_queued(self, key: str, kind: str | None = None) -> bool:
        """Whether an item with ``key`` (and ``kind``, if given) is waiting or running.

        Lets a recovery pass offer durable work again without queueing a
        duplicate of an item that is still on its way (a duplicate would be
        harmless to a handler that re-reads its state, but it costs a turn).
        """
        if kind is not None:
            return (key, kind) in self._keys
        return any(k == key for k, _ in self._keys)

    def is_idle(self, account: str) -> bool:
        """Whether nothing is queued or running in ``account``'s queue.

        An item submitted now would start at once. Reserved slots do not
        count: they belong to work that is not committed yet, which comes
        later in submit order (the entry's fast path relies on this).
        """
        lane = self._find_lane(account)
        return lane is None or (lane.pending == 0 and lane.running is None)

    def depth(self, account: str) -> int:
        """Items waiting in ``account``'s queue (in sharded mode: its shard's, all accounts)."""
        lane = self._find_lane(account)
        return 0 if lane is None else lane.pending

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``/status`` and ``/metrics``."""
        now = _now_or_none()
        running: list[dict[str, Any]] = []
        for lane in self._lanes.values():
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
        if self._stopped:
            state = "stopped"
        elif self._closed:
            state = "draining"
        else:
            state = self._state.value
        return {
            "name": self.name,
            "mode": self.mode.value,
            "state": state,
            "capacity": self.capacity,
            "shards": self.shards if self.mode is DispatchMode.SHARDED else None,
            "max_queues": self.max_queues if self.mode is DispatchMode.DYNAMIC else None,
            "idle_s": self.idle_s if self.mode is DispatchMode.DYNAMIC else None,
            "queues": {name: lane.pending for name, lane in sorted(self._lanes.items())},
            "reserved": {
                name: lane.reserved for name, lane in sorted(self._lanes.items()) if lane.reserved
            },
            "running": running,
            "totals": {
                "queued": self.queued,
                "reserved": sum(lane.reserved for lane in self._lanes.values()),
                "running": len(running),
                "live_queues": len(self._lanes),
                "submitted": self.submitted,
                "started": self.started,
                "completed": self.completed,
                "failed": self.failed,
                "cancelled": self.cancelled,
                "refused": self.refused,
                "queues_created": self.queues_created,
                "queues_retired": self.queues_retired,
            },
        }
