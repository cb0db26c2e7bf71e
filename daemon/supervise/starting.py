"""Starting children: one incarnation at a time, ready or failed.

:class:`Starter` runs one incarnation of a child in the supervisor's nursery
with ``nursery.start`` (so "started" means the child called
``task_status.started()``), under the child's start deadline, and turns
whatever went wrong before readiness into a start failure
(StartTimeoutError, ChildStartError, or ``_StartAborted`` when the supervisor
is stopping). After readiness, the exit of the incarnation is posted to the
control loop's mailbox.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from daemon.errors import ChildStartError, StartTimeoutError, SupervisionError
from daemon.supervise.child import ChildContext, ChildRecord, Incarnation, ReadyStatus
from daemon.supervise.events import Reporter
from daemon.supervise.failures import _StartAborted, describe_error
from daemon.supervise.mailbox import Exit, Mailbox
from daemon.supervise.policy import ChildState, EventKind
from daemon.supervise.stopping import Stopper

if TYPE_CHECKING:
    from daemon.supervise.supervisor import Supervisor

__all__ = ["Starter"]

log = logging.getLogger("tradingd.supervise")


class Starter:
    """Starts the incarnations of one supervisor's children.

    ``nursery`` is the supervisor's nursery while it runs (None otherwise).
    """

    def __init__(
        self, supervisor: Supervisor, reporter: Reporter, mailbox: Mailbox, stopper: Stopper
    ) -> None:
        self._supervisor = supervisor
        self._reporter = reporter
        self._mailbox = mailbox
        self._stopper = stopper
        self.name = reporter.name
        self.nursery: trio.Nursery | None = None

    async def start(self, child: ChildRecord) -> SupervisionError | None:
        """Start one incarnation; None when ready, else the start failure."""
        assert self.nursery is not None
        child.incarnation += 1
        ctx = ChildContext(self._supervisor, child, child.incarnation)
        inc = Incarnation(ctx, child.spec.start_timeout_s)
        child.inc = inc
        child.state = ChildState.STARTING
        error: SupervisionError | None = None
        async with trio.open_nursery() as watch:
            watch.start_soon(self._watch_start, child, inc)
            try:
                await self.nursery.start(
                    self._run_incarnation,
                    child,
                    inc,
                    name=f"{self.name}/{child.name}#{inc.number}",
                )
            except SupervisionError as exc:
                error = exc
            finally:
                watch.cancel_scope.cancel()
        if error is None:
            now = trio.current_time()
            child.state = ChildState.RUNNING
            child.stale = False
            child.stuck_since = None
            child.starts += 1
            self._reporter.counters.starts += 1
            log.info(
                "supervisor %s: started %s (incarnation %d)", self.name, child.name, inc.number
            )
            self._reporter.emit(EventKind.STARTED, child.name, at=now)
            return None
        inc.handled = True
        if isinstance(error, _StartAborted):
            child.inc = None
            child.state = ChildState.STOPPED
            child.stuck_since = None
            log.info("supervisor %s: start of %s abandoned (stopping)", self.name, child.name)
        return error

    async def _run_incarnation(
        self,
        child: ChildRecord,
        inc: Incarnation,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The task of one incarnation. Catches every Exception of the child.

        Before ready, failures are raised (so ``nursery.start`` reports them to
        the control loop); after, the exit goes to the mailbox. BaseExceptions
        that are not Exceptions propagate and tear the supervisor down.
        """
        status = ReadyStatus(child, inc, task_status)
        try:
            with inc.scope:
                await child.spec.fn(inc.ctx, task_status=status)
        except Exception as exc:
            inc.error = exc
        finally:
            inc.done.set()
        if not inc.ready:
            raise self._start_failure(child, inc)
        self._mailbox.post(Exit(child, inc))

    def _start_failure(self, child: ChildRecord, inc: Incarnation) -> SupervisionError:
        name = child.name
        if inc.ctx.stop_requested:
            return _StartAborted(f"start of {name!r} abandoned: stop requested")
        if inc.scope.cancel_called:
            return StartTimeoutError(
                f"child {name!r} did not report ready within {child.spec.start_timeout_s:g} s"
            )
        if inc.error is not None:
            failure = ChildStartError(
                f"child {name!r} failed before reporting ready: {describe_error(inc.error)}"
            )
            failure.__cause__ = inc.error
            return failure
        return ChildStartError(f"child {name!r} returned before reporting ready")

    async def _watch_start(self, child: ChildRecord, inc: Incarnation) -> None:
        """Report STUCK if a start outlives its (possibly moved) deadline + cleanup."""
        while trio.current_time() < inc.scope.deadline:
            with trio.move_on_at(inc.scope.deadline):
                await inc.deadline_moved.wait()
                inc.deadline_moved = trio.Event()
        with trio.move_on_after(child.spec.cleanup_timeout_s):
            await inc.done.wait()
        if not inc.done.is_set():
            self._stopper.mark_stuck(child)
