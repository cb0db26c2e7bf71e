"""Stopping children: one at a time, in reverse start order, never abandoned.

:class:`Stopper` carries out the shutdown sequence of one child (stop request
→ ``shutdown_grace_s`` → cancel → ``cleanup_timeout_s`` → STUCK, and keeps
waiting, since Trio cannot abandon a task), records the stopped child, and
stops a whole table of children in reverse order.
"""

from __future__ import annotations

import logging
import math

import trio

from daemon.supervise.child import ChildRecord, ChildTable, Incarnation
from daemon.supervise.events import Reporter
from daemon.supervise.failures import describe_error
from daemon.supervise.policy import STUCK_RELOG_INTERVAL_S, ChildState, EventKind

__all__ = ["Stopper"]

log = logging.getLogger("tradingd.supervise")


class Stopper:
    """The shutdown ordering of one supervisor's children."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self.name = reporter.name

    async def terminate(self, child: ChildRecord, inc: Incarnation, *, graceful: bool) -> None:
        """Stop request → grace → cancel → bounded cleanup → STUCK (and keep waiting)."""
        inc.handled = True
        if inc.done.is_set():
            return
        child.state = ChildState.STOPPING
        inc.ctx._request_stop()
        if graceful and child.spec.shutdown_grace_s > 0:
            with trio.move_on_after(child.spec.shutdown_grace_s):
                await inc.done.wait()
            if inc.done.is_set():
                return
            log.warning(
                "supervisor %s: %s did not stop within its %g s grace; cancelling",
                self.name,
                child.name,
                child.spec.shutdown_grace_s,
            )
        inc.scope.cancel()
        with trio.move_on_after(child.spec.cleanup_timeout_s):
            await inc.done.wait()
        if inc.done.is_set():
            return
        self.mark_stuck(child)
        while not inc.done.is_set():
            with trio.move_on_after(STUCK_RELOG_INTERVAL_S):
                await inc.done.wait()
            if not inc.done.is_set() and child.stuck_since is not None:
                log.error(
                    "supervisor %s: %s still stuck after %.0f s",
                    self.name,
                    child.name,
                    trio.current_time() - child.stuck_since,
                )

    def mark_stuck(self, child: ChildRecord) -> None:
        """``child`` outlived its cleanup timeout: STUCK, logged and reported."""
        child.state = ChildState.STUCK
        child.stuck_since = trio.current_time()
        log.error(
            "supervisor %s: %s ignores cancellation beyond its %g s cleanup timeout; "
            "it is STUCK (waiting for it; Trio cannot abandon a task)",
            self.name,
            child.name,
            child.spec.cleanup_timeout_s,
        )
        self._reporter.emit(EventKind.STUCK, child.name)

    async def stop_and_record(self, child: ChildRecord) -> None:
        """Gracefully stop a running child and record it as STOPPED."""
        inc = child.inc
        assert inc is not None
        await self.terminate(child, inc, graceful=True)
        now = trio.current_time()
        child.inc = None
        child.state = ChildState.STOPPED
        child.restart_at = math.inf
        child.last_exit_at = now
        child.stuck_since = None
        counters = self._reporter.counters
        counters.exits += 1
        if inc.error is not None:
            child.last_error = describe_error(inc.error)
            counters.failures += 1
            log.warning(
                "supervisor %s: %s raised while stopping: %s",
                self.name,
                child.name,
                child.last_error,
                exc_info=inc.error,
            )
        log.info("supervisor %s: stopped %s", self.name, child.name)
        self._reporter.emit(EventKind.STOPPED, child.name, inc.error, at=now)

    async def stop_all(self, children: ChildTable) -> None:
        """Stop every running child, last started first; cancel pending (re)starts."""
        for child in children.in_stop_order():
            if child.inc is not None:
                await self.stop_and_record(child)
            elif child.pending:
                child.state = ChildState.STOPPED
                child.restart_at = math.inf
