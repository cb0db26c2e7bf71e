"""The control loop of a supervisor: the one place where decisions are made.

:class:`ControlLoop` runs a supervisor's ``run()``: it starts the children in
order, reports ready, then handles, one at a time and in this order, the
mailbox (child exits, ``start_child`` / ``stop_child`` requests), stale
heartbeats and due (re)starts, sleeping until the next of them otherwise. It
owns the supervisor's state, stops the children in reverse order on a stop
request, and stops them and raises EscalationError when the restart intensity
is exceeded. A child in backoff is a timer of this loop, so it never delays
the handling of another child's exit.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

import trio

from daemon.errors import ChildFailure, EscalationError, PoolFullError, SupervisionError
from daemon.supervise.child import ChildRecord, ChildTable
from daemon.supervise.events import Reporter, SupervisorEvent
from daemon.supervise.failures import _StartAborted, describe_error, reraise_unwrapped
from daemon.supervise.intensity import RestartIntensity
from daemon.supervise.mailbox import Exit, Mailbox, Message, Reply, StartRequest, StopRequest
from daemon.supervise.policy import ChildSpec, ChildState, EventKind, SupervisorState
from daemon.supervise.restarts import Restarter
from daemon.supervise.snapshot import now_or_none
from daemon.supervise.starting import Starter
from daemon.supervise.stopping import Stopper

if TYPE_CHECKING:
    from daemon.supervise.policy import SupervisorPolicy
    from daemon.supervise.supervisor import Supervisor

__all__ = ["ControlLoop"]

log = logging.getLogger("tradingd.supervise")


class ControlLoop:
    """The runtime of one :class:`~daemon.supervise.Supervisor` (see the module docstring).

    It outlives a single ``run()``: each run starts from the static children,
    while the counters keep counting.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        children: Sequence[ChildSpec],
        policy: SupervisorPolicy,
        rng: random.Random,
        on_event: Callable[[SupervisorEvent], None] | None,
    ) -> None:
        self.name = supervisor.name
        self.policy = policy
        self.children = ChildTable(children)
        self.reporter = Reporter(self.name, on_event)
        self.intensity = RestartIntensity(policy, rng)
        self.state = SupervisorState.STOPPED
        self.escalated = False
        self._mailbox = Mailbox()
        self._stopper = Stopper(self.reporter)
        self._starter = Starter(supervisor, self.reporter, self._mailbox, self._stopper)
        self._restarter = Restarter(
            self.reporter,
            policy,
            children=self.children,
            intensity=self.intensity,
            stopper=self._stopper,
            escalate=self._escalate,
        )
        self._running = False
        self._stop_requested = False

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        """The body of :meth:`Supervisor.run`."""
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._running = True
        self._reset_for_run()
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._starter.nursery = nursery
                    await self._control(task_status)
            except BaseExceptionGroup as group:
                reraise_unwrapped(group)
        finally:
            self._finish_run()

    def request_stop(self) -> None:
        """The body of :meth:`Supervisor.request_stop`."""
        if self._stop_requested:
            return
        self._stop_requested = True
        log.info("supervisor %s: stop requested", self.name)
        now = now_or_none()
        for child in self.children:
            inc = child.inc
            if inc is not None and not inc.ready and not inc.done.is_set():
                inc.ctx._request_stop()
                if now is not None:
                    inc.move_deadline(min(inc.scope.deadline, now + child.spec.shutdown_grace_s))
        self._mailbox.wake()

    def request(self, make: Callable[[Reply], Message]) -> Reply:
        """Post a request to the loop; its reply fails at once when the loop is not running."""
        reply = Reply()
        if not self._running or self._stop_requested:
            reply.resolve(SupervisionError(f"supervisor {self.name!r} is not running"))
        else:
            self._mailbox.post(make(reply))
        return reply

    # ------------------------------------------------------------------ the loop

    async def _control(self, task_status: trio.TaskStatus[None]) -> None:
        self.state = SupervisorState.STARTING
        self.children.schedule_all(trio.current_time())
        log.info(
            "supervisor %s: starting %d children (%s)",
            self.name,
            len(self.children),
            self.policy.strategy.value,
        )
        while not self._stop_requested:
            if self.state is SupervisorState.STARTING and self.children.all_settled():
                self.state = SupervisorState.RUNNING
                log.info("supervisor %s: ready", self.name)
                self.reporter.emit(EventKind.STARTED, None)
                task_status.started()
            if self._mailbox:
                await self._handle(self._mailbox.take())
                continue
            now = trio.current_time()
            stale = self.children.first_stale(now)
            if stale is not None:
                await self._restarter.handle_stale(stale, now)
                continue
            due = self.children.first_due(now)
            if due is not None:
                error = await self._starter.start(due)
                if error is not None and not isinstance(error, _StartAborted):
                    if self.state is SupervisorState.STARTING and self.policy.fail_fast_start:
                        await self._fail_start(due, error)
                    await self._restarter.child_down(due, error)
                continue
            await self._mailbox.wait_until(self.children.next_deadline())
        await self._shutdown()

    async def _fail_start(self, child: ChildRecord, error: SupervisionError) -> NoReturn:
        """The initial start failed: stop what started (reverse order), raise."""
        child.state = ChildState.FAILED
        child.inc = None  # its task has ended; nothing to stop
        child.last_error = describe_error(error)
        self.reporter.counters.failures += 1
        log.error("supervisor %s: start failed: %s", self.name, describe_error(error))
        self.reporter.emit(EventKind.FAILED, child.name, error=error)
        await self._shutdown()
        raise error

    async def _handle(self, message: Message) -> None:
        if isinstance(message, Exit):
            child, inc = message.child, message.inc
            if inc.handled or child.inc is not inc:
                return  # already accounted for (stopped on purpose)
            inc.handled = True
            await self._restarter.child_down(child, inc.error)
        elif isinstance(message, StartRequest):
            await self._handle_start_request(message)
        else:
            await self._handle_stop_request(message)

    async def _escalate(self, failures: tuple[ChildFailure, ...]) -> NoReturn:
        log.error(
            "supervisor %s: %d restarts within %g s exceed max_restarts=%d; "
            "stopping all children and escalating",
            self.name,
            len(failures),
            self.policy.period_s,
            self.policy.max_restarts,
        )
        self.state = SupervisorState.STOPPING
        await self._stopper.stop_all(self.children)
        self.escalated = True
        self.state = SupervisorState.ESCALATED
        self.reporter.counters.escalations += 1
        error = EscalationError(self.name, failures)
        self.reporter.emit(EventKind.ESCALATED, None, error)
        raise error

    async def _shutdown(self) -> None:
        self.state = SupervisorState.STOPPING
        log.info("supervisor %s: stopping children in reverse order", self.name)
        await self._stopper.stop_all(self.children)
        self.state = SupervisorState.STOPPED
        log.info("supervisor %s: stopped", self.name)
        self.reporter.emit(EventKind.STOPPED, None)

    # ------------------------------------------------------------------ requests

    async def _handle_start_request(self, request: StartRequest) -> None:
        spec, reply = request.spec, request.reply
        if self.children.find(spec.name) is not None:
            reply.resolve(ValueError(f"supervisor {self.name!r}: duplicate child {spec.name!r}"))
            return
        cap = self.policy.max_children
        if cap is not None and self.children.live_count() >= cap:
            reply.resolve(PoolFullError(f"supervisor {self.name!r}: pool full ({cap} children)"))
            return
        child = ChildRecord(spec)
        self.children.append(child)
        error = await self._starter.start(child)
        if error is not None:
            self.children.remove(child)
            if not isinstance(error, _StartAborted):
                child.last_error = describe_error(error)
                self.reporter.counters.failures += 1
                log.warning(
                    "supervisor %s: start_child(%s) failed: %s", self.name, spec.name, error
                )
                self.reporter.emit(EventKind.FAILED, spec.name, error)
        reply.resolve(error)

    async def _handle_stop_request(self, request: StopRequest) -> None:
        child = self.children.find(request.name)
        if child is None:
            request.reply.resolve(KeyError(request.name))
            return
        if child.inc is not None:
            await self._stopper.stop_and_record(child)
        if child in self.children:
            self.children.remove(child)
        request.reply.resolve()

    # ------------------------------------------------------------------ one run

    def _reset_for_run(self) -> None:
        self.children.reset()
        self.intensity.clear()
        self._mailbox.reset()
        self.escalated = False
        self.state = SupervisorState.STARTING

    def _finish_run(self) -> None:
        self._running = False
        self._starter.nursery = None
        self._stop_requested = False
        self._mailbox.reject_all(f"supervisor {self.name!r} stopped")
        self.children.settle_after_run()
        if self.state is not SupervisorState.ESCALATED:
            self.state = SupervisorState.STOPPED
