"""Child handles: what a child gets, and what its supervisor keeps about it.

:class:`ChildContext` is the handle one incarnation of a child gets (stop
request, heartbeats, its supervisor). The rest is the supervisor's side:
:class:`Incarnation` (one run: cancel scope, readiness, outcome),
:class:`ReadyStatus` (the ``task_status`` the child reports ready through),
:class:`ChildRecord` (one child across incarnations: state, counters,
heartbeat deadline) and :class:`ChildTable` (the children in start order, and
the questions the control loop asks about them).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import trio

from daemon.supervise.policy import ChildSpec, ChildState, Strategy

if TYPE_CHECKING:
    from daemon.supervise.supervisor import Supervisor

__all__ = ["ChildContext", "ChildRecord", "ChildTable", "Incarnation", "ReadyStatus"]

log = logging.getLogger("tradingd.supervise")


class ChildContext:
    """What one incarnation of a child gets from its supervisor.

    A fresh context per incarnation, so a stop request or heartbeat of an old,
    still-unwinding incarnation can never be confused with the new one's.

    Attributes:
        name: the child's name.
        incarnation: 1 for the first start, +1 for every start attempt after.
        supervisor: the supervisor running this child (e.g. to add siblings to
            a dynamic pool).
    """

    def __init__(self, supervisor: Supervisor, child: ChildRecord, incarnation: int) -> None:
        self.supervisor = supervisor
        self.name = child.spec.name
        self.incarnation = incarnation
        self._child = child
        self._stop = trio.Event()
        self._stop_callbacks: list[Callable[[], None]] = []

    def heartbeat(self) -> None:
        """Prove liveness; needed at least every ``heartbeat_interval_s`` if declared."""
        inc = self._child.inc
        if inc is not None and inc.ctx is self and inc.ready:
            self._child.last_heartbeat_at = trio.current_time()

    @property
    def stop_requested(self) -> bool:
        """True once the supervisor asked this incarnation to stop."""
        return self._stop.is_set()

    async def wait_stop_requested(self) -> None:
        """Return when asked to stop: drain, then return within the grace period."""
        await self._stop.wait()

    def add_stop_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (synchronously) on the stop request; now if already requested.

        Used to relay a stop request into a nested supervisor.
        """
        if self._stop.is_set():
            callback()
        else:
            self._stop_callbacks.append(callback)

    def _request_stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        callbacks, self._stop_callbacks = self._stop_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("stop callback of %s failed", self.name)


class Incarnation:
    """One run of a child: its context, cancel scope and outcome."""

    def __init__(self, ctx: ChildContext, start_timeout_s: float) -> None:
        self.ctx = ctx
        self.number = ctx.incarnation
        # Entered by the runner task; the deadline is the start deadline until ready.
        self.scope = trio.CancelScope(deadline=trio.current_time() + start_timeout_s)
        self.deadline_moved = trio.Event()
        self.ready = False
        self.done = trio.Event()
        self.error: BaseException | None = None
        # Set once the control loop has accounted for the end of this incarnation.
        self.handled = False

    def move_deadline(self, deadline: float) -> None:
        self.scope.deadline = deadline
        self.deadline_moved.set()


class ReadyStatus:
    """The ``task_status`` a child sees: records readiness, then passes it on."""

    def __init__(self, child: ChildRecord, inc: Incarnation, outer: trio.TaskStatus[None]) -> None:
        self._child = child
        self._inc = inc
        self._outer = outer

    def started(self, value: None = None) -> None:
        if self._inc.ready:
            raise RuntimeError("called 'started' twice on the same task status")
        self._inc.ready = True
        self._inc.scope.deadline = math.inf  # the start deadline no longer applies
        self._child.last_heartbeat_at = trio.current_time()
        self._outer.started()


class ChildRecord:
    """The supervisor's mutable record of one child (across incarnations)."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = ChildState.STOPPED
        self.inc: Incarnation | None = None
        self.incarnation = 0
        self.starts = 0
        self.restarts = 0
        self.restart_at = math.inf
        self.restart_times: collections.deque[float] = collections.deque()
        self.last_error: str | None = None
        self.last_exit_at: float | None = None
        self.last_heartbeat_at: float | None = None
        self.stale = False
        self.stuck_since: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pending(self) -> bool:
        """Waiting for a (re)start by the control loop."""
        return self.inc is None and self.state in (ChildState.STARTING, ChildState.BACKOFF)

    @property
    def live(self) -> bool:
        """Running, starting or due to be restarted (i.e. not ended for good)."""
        return self.inc is not None or self.pending

    def heartbeat_deadline(self) -> float | None:
        interval = self.spec.heartbeat_interval_s
        if interval is None or self.state is not ChildState.RUNNING or self.inc is None:
            return None
        if self.last_heartbeat_at is None:
            return None
        return self.last_heartbeat_at + interval * self.spec.heartbeat_tolerance


class ChildTable:
    """The children of one supervisor, in start order.

    Each run starts from records of the static ``specs``; a ``dynamic`` pool
    appends children at run time and drops those that ended for good.
    """

    def __init__(self, specs: Sequence[ChildSpec]) -> None:
        self.specs = tuple(specs)
        self._children = [ChildRecord(spec) for spec in self.specs]

    def __iter__(self) -> Iterator[ChildRecord]:
        return iter(self._children)

    def __len__(self) -> int:
        return len(self._children)

    def __contains__(self, child: object) -> bool:
        return child in self._children

    def reset(self) -> None:
        """Fresh records of the static children (a new run)."""
        self._children = [ChildRecord(spec) for spec in self.specs]

    def append(self, child: ChildRecord) -> None:
        self._children.append(child)

    def remove(self, child: ChildRecord) -> None:
        self._children.remove(child)

    def find(self, name: str) -> ChildRecord | None:
        return next((c for c in self._children if c.name == name), None)

    def live_count(self) -> int:
        return sum(1 for c in self._children if c.live)

    def schedule_all(self, now: float) -> None:
        """Queue every child for its start at ``now`` (the start of a run)."""
        for child in self._children:
            child.state = ChildState.STARTING
            child.restart_at = now

    def all_settled(self) -> bool:
        """Every child is running or ended for good (the supervisor is ready)."""
        return all(
            c.state in (ChildState.RUNNING, ChildState.STOPPED, ChildState.FAILED)
            for c in self._children
        )

    def first_stale(self, now: float) -> ChildRecord | None:
        """The first child whose heartbeat deadline has passed."""
        for child in self._children:
            deadline = child.heartbeat_deadline()
            if deadline is not None and now >= deadline:
                return child
        return None

    def first_due(self, now: float) -> ChildRecord | None:
        """The first child waiting for a (re)start whose time has come."""
        for child in self._children:
            if child.pending and child.restart_at <= now:
                return child
        return None

    def next_deadline(self) -> float:
        """The earliest restart time or heartbeat deadline (inf: none)."""
        deadlines = [c.restart_at for c in self._children if c.pending]
        deadlines += [d for c in self._children if (d := c.heartbeat_deadline()) is not None]
        return min(deadlines, default=math.inf)

    def restart_group(self, child: ChildRecord, strategy: Strategy) -> list[ChildRecord]:
        """The children restarted together with ``child``, in start order."""
        if strategy is Strategy.ONE_FOR_ALL:
            return [c for c in self._children if c is child or c.live]
        if strategy is Strategy.REST_FOR_ONE:
            index = self._children.index(child)
            return [child] + [c for c in self._children[index + 1 :] if c.live]
        return [child]

    def retire(self, child: ChildRecord, *, failed: bool, strategy: Strategy) -> None:
        """``child`` ended for good: terminal state, and it leaves a dynamic pool."""
        child.state = ChildState.FAILED if failed else ChildState.STOPPED
        child.restart_at = math.inf
        if strategy is Strategy.DYNAMIC and child in self._children:
            self._children.remove(child)

    def in_stop_order(self) -> list[ChildRecord]:
        """A copy of the children in reverse start order."""
        return list(reversed(self._children))

    def settle_after_run(self) -> None:
        """After ``run()``: every task has ended, whatever the records said.

        (After outside cancellation or a propagating BaseException the nursery
        still waited for every task.)
        """
        for child in self._children:
            if child.inc is not None or child.pending or child.state is ChildState.STOPPING:
                child.inc = None
                child.state = ChildState.STOPPED
                child.stuck_since = None
