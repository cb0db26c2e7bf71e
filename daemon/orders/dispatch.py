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

Where the parts live: this module has the :class:`Dispatcher` (admission and
status) and :class:`DispatcherClosedError`; :mod:`daemon.orders.dispatch_queues`
has the queues and the two modes (:class:`WorkItem`, :class:`DispatchMode`,
the sharded and dynamic lane pools, :func:`shard_for`, the capacity errors),
re-exported here; :mod:`daemon.orders.dispatch_workers` runs the workers and
stops them (drain, abort).
"""

from __future__ import annotations

from typing import Any

import trio

from daemon.errors import TransientError
from daemon.orders.dispatch_queues import (
    CAPACITY_KEY,
    DEFAULT_RETRY_AFTER_S,
    MAX_QUEUES_KEY,
    DispatchMode,
    Lane,
    QueueFullError,
    TooManyQueuesError,
    WorkItem,
    now_or_none,
    open_lanes,
    shard_for,
)
from daemon.orders.dispatch_workers import Handler, Workers

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


class DispatcherClosedError(TransientError):
    """The dispatcher is draining or stopped and takes no new work.

    Transient from the caller's point of view: the pipeline is restarting or
    shutting down, and work kept durable runs on the next start.
    """

    def __init__(self, message: str, *, retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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

    The dispatcher admits work and answers for its state; its collaborators
    do the rest: the lane pool of the mode
    (:class:`~daemon.orders.dispatch_queues.ShardedLanes` or
    :class:`~daemon.orders.dispatch_queues.DynamicLanes`) maps accounts to
    queues, and :class:`~daemon.orders.dispatch_workers.Workers` runs and
    stops the worker of each queue.

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
        self._lanes = open_lanes(
            mode, name=name, shards=shards, capacity=capacity, max_queues=max_queues, idle_s=idle_s
        )
        self.mode = mode
        self.shards = shards
        self.capacity = capacity
        self.max_queues = max_queues
        self.idle_s = idle_s
        self.name = name
        self.submitted = 0
        self.refused = 0
        self._workers = Workers(handler, self._lanes, name=name)

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
            raise self._lanes.full_error(account, lane)
        lane.reserved += 1
        lane.idle_since = None

    def release(self, account: str) -> None:
        """Give back a slot from :meth:`reserve` that will not be submitted.

        Raises:
            ValueError: ``account`` holds no reservation (a bug in the caller).
        """
        lane = self._lanes.find(account)
        if lane is None or lane.reserved < 1:
            raise ValueError(
                f"dispatcher {self.name!r}: release({account!r}) without a reservation"
            )
        lane.reserved -= 1
        self._lanes.note_idle(lane)
        self._workers.close_if_drained(lane)

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
            lane = self._lanes.find(account)
            if lane is None or lane.reserved < 1:
                raise ValueError(
                    f"dispatcher {self.name!r}: submit(reserved=True) of {item.kind} "
                    f"{item.key!r} for account {account!r} without a reservation"
                )
            lane.reserved -= 1
            if self._workers.stopped:
                self._workers.close_if_drained(lane)
                return False
            self._enqueue(lane, item)
            self._workers.close_if_drained(lane)
            return True
        self._check_open(account)
        lane = self._lane_for(account)
        if lane.load >= self.capacity:
            self.refused += 1
            return False
        self._enqueue(lane, item)
        return True

    def _enqueue(self, lane: Lane, item: WorkItem) -> None:
        self._lanes.enqueue(lane, item)
        self.submitted += 1

    def _check_open(self, account: str) -> None:
        if self._workers.closed:
            state = "stopped" if self._workers.stopped else "draining"
            raise DispatcherClosedError(
                f"dispatcher {self.name!r} is {state}: no new work for account {account!r}"
            )

    def _lane_for(self, account: str) -> Lane:
        """The lane ``account``'s items go to, opened (dynamic mode) when it has none."""
        try:
            lane = self._lanes.lane_for(account)
        except TooManyQueuesError:
            self.refused += 1
            raise
        self._workers.start(lane)
        return lane

    # ------------------------------------------------------------------ running and stopping

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled, or until a drain or abort has stopped them.

        Reports ready once the workers of the existing queues are scheduled.
        Items submitted before :meth:`run` wait in their queues and start
        then. Called on a dispatcher that was already stopped, it reports
        ready and returns at once (a drain may have raced its start).

        Raises:
            RuntimeError: It is already running.
        """
        await self._workers.run(task_status=task_status)

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
        return await self._workers.drain(timeout_s)

    def abort(self) -> int:
        """Hard stop: refuse new work and cancel the workers now.

        Returns:
            How many queued items were not started (still durable at the caller).
        """
        return self._workers.abort()

    # ------------------------------------------------------------------ status

    @property
    def started(self) -> int:
        return self._workers.started

    @property
    def completed(self) -> int:
        return self._workers.completed

    @property
    def failed(self) -> int:
        return self._workers.failed

    @property
    def cancelled(self) -> int:
        return self._workers.cancelled

    @property
    def queues_created(self) -> int:
        return self._lanes.created

    @property
    def queues_retired(self) -> int:
        return self._lanes.retired

    @property
    def queued(self) -> int:
        """Items submitted and not started, over all queues."""
        return self._lanes.queued

    @property
    def running(self) -> int:
        """Items whose handler is running now."""
        return self._lanes.running

    def is_queued(self, key: str, kind: str | None = None) -> bool:
        """Whether an item with ``key`` (and ``kind``, if given) is waiting or running.

        Lets a recovery pass offer durable work again without queueing a
        duplicate of an item that is still on its way (a duplicate would be
        harmless to a handler that re-reads its state, but it costs a turn).
        """
        return self._lanes.is_queued(key, kind)

    def is_idle(self, account: str) -> bool:
        """Whether nothing is queued or running in ``account``'s queue.

        An item submitted now would start at once. Reserved slots do not
        count: they belong to work that is not committed yet, which comes
        later in submit order (the entry's fast path relies on this).
        """
        lane = self._lanes.find(account)
        return lane is None or (lane.pending == 0 and lane.running is None)

    def depth(self, account: str) -> int:
        """Items waiting in ``account``'s queue (in sharded mode: its shard's, all accounts)."""
        lane = self._lanes.find(account)
        return 0 if lane is None else lane.pending

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``/status`` and ``/metrics``."""
        lanes = self._lanes.lanes
        running = self._lanes.running_items(now_or_none())
        return {
            "name": self.name,
            "mode": self.mode.value,
            "state": self._workers.state,
            "capacity": self.capacity,
            **self._lanes.settings(),
            "queues": {name: lane.pending for name, lane in sorted(lanes.items())},
            "reserved": {
                name: lane.reserved for name, lane in sorted(lanes.items()) if lane.reserved
            },
            "running": running,
            "totals": {
                "queued": self.queued,
                "reserved": self._lanes.reserved,
                "running": len(running),
                "live_queues": len(lanes),
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
