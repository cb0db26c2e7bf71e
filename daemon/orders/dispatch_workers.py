"""The workers of the :class:`~daemon.orders.dispatch.Dispatcher`: a task per lane, how they stop.

:class:`Workers` runs a worker per lane of a
:class:`~daemon.orders.dispatch_queues.LanePool` in one nursery, each awaiting
the handler once per item, in order, and counting the outcomes. It also holds
the run state of the dispatcher (new, running, draining, stopped) and the two
ways to stop: :meth:`Workers.drain` (refuse new work, finish what is queued
within a deadline, then cancel) and :meth:`Workers.abort` (cancel now). The
semantics are described in :mod:`daemon.orders.dispatch`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable

import trio

from daemon.orders.dispatch_queues import Lane, LanePool, WorkItem

__all__ = ["Handler", "Workers"]

log = logging.getLogger("tradingd.orders.dispatch")

Handler = Callable[[WorkItem], Awaitable[None]]


class _RunState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DONE = "done"


class Workers:
    """The workers of ``lanes``' lanes, their run state and how they stop.

    Counters (monotonic): ``started``, ``completed``, ``failed`` (the handler
    raised) and ``cancelled`` (the handler was cancelled by a stop).
    """

    def __init__(self, handler: Handler, lanes: LanePool, *, name: str) -> None:
        self._handler = handler
        self._lanes = lanes
        self.name = name
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self._state = _RunState.NEW
        #: No new reserve() or unreserved submit() (draining or stopped).
        self.closed = False
        #: Workers are being cancelled or gone: not even reserved items are taken.
        self.stopped = False
        self._closing = trio.Event()
        self._done = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def state(self) -> str:
        """``"new"``, ``"running"``, ``"draining"``, ``"stopped"`` (or ``"done"``)."""
        if self.stopped:
            return "stopped"
        if self.closed:
            return "draining"
        return self._state.value

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled, or until a drain or abort has stopped them."""
        if self._state is _RunState.RUNNING:
            raise RuntimeError(f"dispatcher {self.name!r} is already running")
        if self._state is _RunState.DONE or self.closed:
            self._finish()
            task_status.started()
            return
        self._state = _RunState.RUNNING
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for lane in list(self._lanes.lanes.values()):
                    self._start_worker(nursery, lane)
                task_status.started()
                # The nursery must outlive its workers' absence in dynamic mode (no
                # account yet); a drain releases it and the workers end on their own
                # once their queues are empty.
                await self._closing.wait()
        finally:
            self._finish()

    def start(self, lane: Lane) -> None:
        """Start ``lane``'s worker if the workers run and it has none yet (a lane just opened)."""
        if self._nursery is not None:
            self._start_worker(self._nursery, lane)

    def _finish(self) -> None:
        self._nursery = None
        self.closed = True
        self.stopped = True
        self._state = _RunState.DONE
        self._done.set()

    def _start_worker(self, nursery: trio.Nursery, lane: Lane) -> None:
        if lane.worker_started:
            return
        lane.worker_started = True
        nursery.start_soon(self._work, lane, name=f"{self.name}:{lane.name}")

    async def _work(self, lane: Lane) -> None:
        """The one worker of ``lane``: its items one after the other, in order."""
        while True:
            try:
                item = await self._lanes.next_item(lane)
            except trio.EndOfChannel:  # drained: closed and empty
                return
            if item is None:  # retired after idling
                return
            if self.stopped:
                return  # aborted: the item stays counted as not started
            lane.pending -= 1
            await self._run_one(lane, item)

    async def _run_one(self, lane: Lane, item: WorkItem) -> None:
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
            self._lanes.forget(item)
            if finished:
                lane.record_service(trio.current_time() - started_at)
            else:
                self.cancelled += 1  # a BaseException (Cancelled) is on its way out

    # ------------------------------------------------------------------ stopping

    async def drain(self, timeout_s: float) -> int:
        """Refuse new work, finish what is queued within ``timeout_s``, then cancel.

        Returns how many queued items were not started.
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
                self._lanes.queued,
                self._lanes.running,
            )
            self._cancel_workers()
            await self._done.wait()
        return self._lanes.queued

    def abort(self) -> int:
        """Refuse new work and cancel the workers now; returns the queued items never started."""
        self._begin_close()
        if self._state is _RunState.NEW:
            self._finish()
        self._cancel_workers()
        return self._lanes.queued

    def _begin_close(self) -> None:
        if self.closed and self._closing.is_set():
            return
        self.closed = True
        self._closing.set()
        for lane in self._lanes.lanes.values():
            self.close_if_drained(lane)

    def close_if_drained(self, lane: Lane) -> None:
        """While closing, end a lane's input once no reservation can still add to it.

        Its worker then finishes the items already queued and sees the end of
        the channel, which is how a drain ends without cancelling anything.
        """
        if self.closed and lane.reserved == 0:
            lane.send.close()

    def _cancel_workers(self) -> None:
        self.stopped = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
