"""Supervision: nurseries as Erlang/OTP-style supervisors.

A :class:`Supervisor` owns one nursery. It starts its children *in order* with
``nursery.start`` (so "started" means *ready*: the child called
``task_status.started()``), watches them, and reacts to their exits:

* **strategy** (:class:`Strategy`): ``one_for_one`` restarts only the child that
  failed; ``one_for_all`` stops every other live child (reverse order) and
  restarts them all in order; ``rest_for_one`` does that for the children
  started *after* the failed one; ``dynamic`` is a pool of children added at run
  time with :meth:`Supervisor.start_child`, each restarted on its own.
* **restart type** (:class:`Restart`): ``permanent`` children are always
  restarted (a normal return is unexpected and counts toward the intensity),
  ``transient`` only after an exception, ``temporary`` never. Temporary siblings
  stopped by ``one_for_all``/``rest_for_one`` are not restarted either (OTP).
* **intensity**: more than ``max_restarts`` restarts within ``period_s`` stops
  all children in reverse order and raises :class:`~daemon.errors.EscalationError`
  carrying the failures of that window. Never a silent return.
* **backoff**: a restart waits ``backoff_initial_s * backoff_multiplier**(n-1)``
  (capped at ``backoff_max_s``, then ``± backoff_jitter``), where *n* counts the
  child's own restarts within the intensity period. A failed start (exception
  before ``started()``, or no ``started()`` within ``start_timeout_s``) is a
  failure like any other, so a failing restart counts as a restart.
* **only ``Exception`` restarts.** ``trio.Cancelled``, ``KeyboardInterrupt``,
  ``SystemExit`` (any ``BaseException`` that is not an ``Exception``) propagate
  out of :meth:`Supervisor.run` and tear the tree down. Exception groups are
  unwrapped at the boundary: a group of ``Exception`` s is a failure (the first
  leaf is what status shows), a group holding a ``BaseException`` propagates
  that ``BaseException``.
* **shutdown** in reverse start order, one child at a time: stop request
  (:meth:`ChildContext.wait_stop_requested` returns) → ``shutdown_grace_s`` →
  cancel → ``cleanup_timeout_s``. A child still running after that is **STUCK**:
  logged, reported in :meth:`Supervisor.status` (health turns unhealthy and the
  systemd watchdog takes over), and waited for, since Trio cannot abandon a task.
* **heartbeats**: a child that declares ``heartbeat_interval_s`` must call
  :meth:`ChildContext.heartbeat` at least every ``interval * tolerance``;
  otherwise it is presumed hung, cancelled and restarted (a failure).

Every start, exit, restart, stop and escalation is logged (logger
``tradingd.supervise``), counted, and reported to the optional ``on_event``
observer as a :class:`SupervisorEvent`.

Design: one *control loop* per supervisor makes every decision, sequentially
(like an OTP supervisor process). Children report exits through a mailbox;
restart backoffs and heartbeat deadlines are timers of that loop, so a child in
backoff never delays the handling of another child's exit.

Modules:

* ``policy``: the vocabulary (strategies, restart types, states, event kinds),
  :class:`ChildSpec`, :class:`SupervisorPolicy` and their default constants;
* ``supervisor``: :class:`Supervisor`, the public API;
* ``loop``: the control loop (``ControlLoop``) that makes every decision;
* ``starting`` / ``restarts`` / ``stopping``: starting an incarnation, the
  restart decision after an exit, and the shutdown sequence in reverse order;
* ``intensity``: the restart intensity window and :func:`backoff_delay_s`;
* ``child``: :class:`ChildContext` and the supervisor's records of its children;
* ``mailbox``: the messages children and callers post to the control loop;
* ``events``: :class:`SupervisorEvent`, the observer and the counters;
* ``snapshot``: :class:`SupervisorStatus` / :class:`ChildStatus`;
* ``failures``: :func:`describe_error` and the unwrapping of exception groups.
"""

from daemon.errors import StaleHeartbeatError, UnexpectedExitError
from daemon.supervise.child import ChildContext
from daemon.supervise.events import SupervisorEvent
from daemon.supervise.failures import describe_error
from daemon.supervise.intensity import backoff_delay_s
from daemon.supervise.policy import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_PERIOD_S,
    NESTED_START_TIMEOUT_S,
    STUCK_RELOG_INTERVAL_S,
    ChildFn,
    ChildSpec,
    ChildState,
    EventKind,
    Restart,
    Strategy,
    SupervisorPolicy,
    SupervisorState,
)
from daemon.supervise.snapshot import ChildStatus, SupervisorStatus
from daemon.supervise.supervisor import Supervisor

__all__ = [
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_PERIOD_S",
    "NESTED_START_TIMEOUT_S",
    "STUCK_RELOG_INTERVAL_S",
    "ChildContext",
    "ChildFn",
    "ChildSpec",
    "ChildState",
    "ChildStatus",
    "EventKind",
    "Restart",
    "StaleHeartbeatError",
    "Strategy",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorPolicy",
    "SupervisorState",
    "SupervisorStatus",
    "UnexpectedExitError",
    "backoff_delay_s",
    "describe_error",
]
