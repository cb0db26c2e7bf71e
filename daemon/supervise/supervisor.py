"""The :class:`Supervisor`: the public face of one supervision node.

Construction (checked child specs and policy), ``run()``, stop requests,
nesting with :meth:`Supervisor.as_child`, the ``dynamic`` pool's
:meth:`~Supervisor.start_child` / :meth:`~Supervisor.stop_child`, and
:meth:`~Supervisor.status`. The decisions are made by its
:class:`~daemon.supervise.loop.ControlLoop`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import trio

from daemon.supervise.child import ChildContext
from daemon.supervise.events import SupervisorEvent
from daemon.supervise.loop import ControlLoop
from daemon.supervise.mailbox import StartRequest, StopRequest
from daemon.supervise.policy import (
    NESTED_START_TIMEOUT_S,
    ChildSpec,
    Restart,
    SupervisorPolicy,
)
from daemon.supervise.snapshot import SupervisorStatus, child_status, now_or_none

__all__ = ["Supervisor"]

#: The policy of a supervisor constructed without one (frozen, so shareable).
_DEFAULT_POLICY = SupervisorPolicy()


class Supervisor:
    """An OTP-style supervisor on a Trio nursery (see :mod:`daemon.supervise`).

    Args:
        name: used in logs, events, status paths and escalation errors.
        children: static children, started in this order, stopped in reverse.
        policy: strategy, intensity and backoff.
        rng: source of backoff jitter (inject a seeded one for deterministic tests).
        on_event: observer called synchronously for every event; its exceptions
            are logged and ignored (an observer must not kill the tree).

    A supervisor can be run again after ``run()`` ended (that is how a parent
    restarts a nested one); each run starts from the static children, while the
    counters keep counting.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        policy: SupervisorPolicy = _DEFAULT_POLICY,
        *,
        rng: random.Random | None = None,
        on_event: Callable[[SupervisorEvent], None] | None = None,
    ) -> None:
        names = [spec.name for spec in children]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"supervisor {name!r}: duplicate child names {duplicates}")
        self.name = name
        self.policy = policy
        self._loop = ControlLoop(
            self, children, policy, rng if rng is not None else random.Random(), on_event
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, report ready, supervise until stopped.

        Returns after :meth:`request_stop` once every child stopped (reverse
        order). Raises EscalationError when the restart intensity is exceeded,
        after stopping every child in reverse order. BaseExceptions that are not
        Exceptions (Cancelled, KeyboardInterrupt, SystemExit) propagate, unwrapped.
        ``task_status.started()`` is only called once every child is ready, so a
        stop requested before that makes ``nursery.start(sup.run)`` fail.
        """
        await self._loop.run(task_status)

    def request_stop(self) -> None:
        """Ask for a graceful stop: children stop in reverse start order.

        Safe to call at any time and more than once; a request made before
        ``run()`` makes that run stop before starting anything. A child that is
        still starting is asked to stop and cancelled after its grace period.
        """
        self._loop.request_stop()

    def as_child(
        self,
        *,
        restart: Restart = Restart.PERMANENT,
        start_timeout_s: float = NESTED_START_TIMEOUT_S,
        shutdown_grace_s: float | None = None,
        cleanup_timeout_s: float = 5.0,
        critical: bool = True,
    ) -> ChildSpec:
        """This supervisor as a child of another one.

        The parent's stop request becomes :meth:`request_stop` here (a graceful
        reverse-order stop); an escalation here is a failure of this child in
        the parent, handled by the parent's own policy. The default grace is
        what the static children need to stop one after the other
        (sum of their grace and cleanup timeouts, plus one second).
        """
        if shutdown_grace_s is None:
            shutdown_grace_s = 1.0 + sum(
                spec.shutdown_grace_s + spec.cleanup_timeout_s for spec in self._loop.children.specs
            )

        async def run_nested(
            ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            ctx.add_stop_callback(self.request_stop)
            await self.run(task_status=task_status)

        return ChildSpec(
            name=self.name,
            fn=run_nested,
            restart=restart,
            start_timeout_s=start_timeout_s,
            shutdown_grace_s=shutdown_grace_s,
            cleanup_timeout_s=cleanup_timeout_s,
            critical=critical,
            supervisor=self,
        )

    async def start_child(self, spec: ChildSpec) -> None:
        """Add a child at run time (appended last) and return once it is ready.

        Raises:
            PoolFullError: ``policy.max_children`` live children already.
            ValueError: a child of that name exists.
            StartTimeoutError, ChildStartError: the start failed; the child is
                not added (the caller decides; no restart, no intensity).
            SupervisionError: the supervisor is not running or is stopping.

        The start runs in the supervisor's control loop (starts are sequential):
        a caller that is cancelled while waiting does not undo it. Do not call it
        from a child of the same supervisor before that child is ready (the loop
        is busy starting that child: deadlock until its start deadline).
        """
        reply = self._loop.request(lambda r: StartRequest(spec, r))
        await reply.wait()

    async def stop_child(self, name: str) -> None:
        """Stop a child gracefully (stop request → grace → cancel) and remove it.

        Raises:
            KeyError: no child of that name.
            SupervisionError: the supervisor is not running or is stopping.
        """
        reply = self._loop.request(lambda r: StopRequest(name, r))
        await reply.wait()

    def status(self) -> SupervisorStatus:
        """A consistent snapshot of this supervisor and its subtree."""
        now = now_or_none()
        loop = self._loop
        c = loop.reporter.counters
        return SupervisorStatus(
            name=self.name,
            strategy=self.policy.strategy,
            state=loop.state,
            max_restarts=self.policy.max_restarts,
            period_s=self.policy.period_s,
            restarts_in_period=loop.intensity.in_period(now),
            total_restarts=c.restarts,
            escalated=loop.escalated,
            starts=c.starts,
            exits=c.exits,
            restarts=c.restarts,
            failures=c.failures,
            escalations=c.escalations,
            children=tuple(child_status(child, now) for child in loop.children),
        )
