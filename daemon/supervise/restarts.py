"""The restart decision: what happens when a child's incarnation ends.

:class:`Restarter` accounts for the exit (counters, logs, events), applies the
restart type, counts the failure toward the restart intensity (escalating
beyond it), stops the rest of the strategy's restart group in reverse start
order, and schedules the group's restart after the child's backoff. A child
whose heartbeat went stale is cancelled and goes down the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

from daemon.errors import ChildFailure, StaleHeartbeatError, UnexpectedExitError
from daemon.supervise.child import ChildRecord, ChildTable
from daemon.supervise.events import Reporter
from daemon.supervise.failures import describe_error, failure_error
from daemon.supervise.intensity import RestartIntensity
from daemon.supervise.policy import (
    ChildState,
    EventKind,
    Restart,
    SupervisorPolicy,
    should_restart,
)
from daemon.supervise.stopping import Stopper

__all__ = ["Escalate", "Restarter"]

log = logging.getLogger("tradingd.supervise")

#: Stops everything and raises EscalationError with the failures of the window.
Escalate = Callable[[tuple[ChildFailure, ...]], Awaitable[NoReturn]]


class Restarter:
    """Applies one supervisor's policy to the end of a child's incarnation."""

    def __init__(
        self,
        reporter: Reporter,
        policy: SupervisorPolicy,
        *,
        children: ChildTable,
        intensity: RestartIntensity,
        stopper: Stopper,
        escalate: Escalate,
    ) -> None:
        self._reporter = reporter
        self.name = reporter.name
        self.policy = policy
        self._children = children
        self._intensity = intensity
        self._stopper = stopper
        self._escalate = escalate

    async def child_down(self, child: ChildRecord, error: BaseException | None) -> None:
        """Account for the end of ``child``'s incarnation and apply the policy."""
        now = trio.current_time()
        child.inc = None
        child.last_exit_at = now
        child.stuck_since = None
        counters = self._reporter.counters
        counters.exits += 1
        if error is not None:
            child.last_error = describe_error(error)
            counters.failures += 1
            log.warning(
                "supervisor %s: %s (incarnation %d) failed: %s",
                self.name,
                child.name,
                child.incarnation,
                child.last_error,
                exc_info=error,
            )
            self._reporter.emit(EventKind.FAILED, child.name, error, at=now)
        else:
            log.info(
                "supervisor %s: %s (incarnation %d) returned",
                self.name,
                child.name,
                child.incarnation,
            )
            self._reporter.emit(EventKind.EXITED, child.name, at=now)

        if not should_restart(child.spec.restart, error):
            self._children.retire(child, failed=error is not None, strategy=self.policy.strategy)
            return

        reason = (
            error
            if error is not None
            else UnexpectedExitError(f"permanent child {child.name!r} returned")
        )
        if self._intensity.record(ChildFailure(child.name, failure_error(reason), now)):
            child.state = ChildState.FAILED
            await self._escalate(self._intensity.failures())

        delay = self._intensity.backoff_s(child.restart_times, now)
        await self._restart_group(child, reason, delay)

    async def _restart_group(self, child: ChildRecord, reason: BaseException, delay: float) -> None:
        """Stop the rest of ``child``'s group (reverse start order), schedule its restart."""
        group = self._children.restart_group(child, self.policy.strategy)
        stopped: list[ChildRecord] = []
        for sibling in reversed(group):
            if sibling is not child and sibling.inc is not None:
                await self._stopper.stop_and_record(sibling)
                stopped.append(sibling)
        restart_at = trio.current_time() + delay
        self._reporter.counters.restarts += 1
        for member in group:
            if member is not child and member not in stopped:
                # Not running (not started yet, or already in backoff): it just
                # follows the group, so the group still starts in order.
                member.restart_at = restart_at
                continue
            if member is not child and member.spec.restart is Restart.TEMPORARY:
                self._children.retire(member, failed=False, strategy=self.policy.strategy)
                continue
            member.state = ChildState.BACKOFF
            member.restart_at = restart_at
            member.restarts += 1
            log.info(
                "supervisor %s: restarting %s in %.3f s (%s)",
                self.name,
                member.name,
                delay,
                "failed" if member is child else f"{self.policy.strategy.value} after {child.name}",
            )
            self._reporter.emit(EventKind.RESTARTING, member.name, reason)

    async def handle_stale(self, child: ChildRecord, now: float) -> None:
        """``child`` missed its heartbeats: presumed hung, cancelled, and down as a failure."""
        interval = child.spec.heartbeat_interval_s
        last = child.last_heartbeat_at
        assert interval is not None and last is not None and child.inc is not None
        child.stale = True
        error = StaleHeartbeatError(
            f"child {child.name!r}: no heartbeat for {now - last:g} s "
            f"(interval {interval:g} s x tolerance {child.spec.heartbeat_tolerance:g})"
        )
        log.warning("supervisor %s: %s; cancelling it", self.name, error)
        self._reporter.emit(EventKind.STALE_HEARTBEAT, child.name, error)
        inc = child.inc
        # Presumed hung: asking it to drain would only waste the grace period.
        await self._stopper.terminate(child, inc, graceful=False)
        await self.child_down(child, error)
