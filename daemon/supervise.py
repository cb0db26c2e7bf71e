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
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, NoReturn, Protocol

import attrs
import trio

from daemon.errors import (
    ChildFailure,
    ChildStartError,
    EscalationError,
    PoolFullError,
    StaleHeartbeatError,
    StartTimeoutError,
    SupervisionError,
    UnexpectedExitError,
)

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

log = logging.getLogger("tradingd.supervise")

#: While a child stays STUCK, the supervisor repeats the error log this often,
#: so a hang is never silent in the journal.
STUCK_RELOG_INTERVAL_S = 60.0
#: Default start deadline of a nested supervisor (it starts a whole subtree).
NESTED_START_TIMEOUT_S = 60.0
#: Default restart intensity of a :class:`SupervisorPolicy`: more than this many
#: restarts within ``DEFAULT_PERIOD_S`` seconds escalates. ``[supervision]``
#: defaults to the same two constants (each number is written once).
DEFAULT_MAX_RESTARTS = 5
DEFAULT_PERIOD_S = 30.0


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------


class Strategy(enum.Enum):
    """What else is restarted when one child must be restarted."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"
    #: A pool of children added at run time (OTP ``simple_one_for_one``): each is
    #: restarted on its own, and children that end for good leave the pool.
    DYNAMIC = "dynamic"


class Restart(enum.Enum):
    """When a child that ended is started again."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class ChildState(enum.Enum):
    """Lifecycle of one supervised child, as shown in status."""

    STARTING = "starting"  # queued for, or inside, a start (before ``started()``)
    RUNNING = "running"
    STOPPING = "stopping"  # stop requested / cancelled, waiting for it to return
    BACKOFF = "backoff"  # waiting to be restarted
    STOPPED = "stopped"  # ended normally or was stopped; not coming back by itself
    FAILED = "failed"  # ended with an exception and is not restarted
    STUCK = "stuck"  # ignored cancellation beyond its cleanup timeout


class SupervisorState(enum.Enum):
    """Lifecycle of a supervisor's ``run()``."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ESCALATED = "escalated"


class EventKind(enum.StrEnum):
    """What a :class:`SupervisorEvent` reports (a ``str``, usable as a metric label)."""

    STARTED = "started"
    EXITED = "exited"
    FAILED = "failed"
    RESTARTING = "restarting"
    STALE_HEARTBEAT = "stale_heartbeat"
    STUCK = "stuck"
    ESCALATED = "escalated"
    STOPPED = "stopped"


class _StartAborted(ChildStartError):
    """A start was abandoned because the supervisor is stopping (not a failure)."""


# ---------------------------------------------------------------------------------------------
# Specs and policy
# ---------------------------------------------------------------------------------------------


class ChildFn(Protocol):
    """A supervised child: runs until stopped, reports readiness via ``task_status``."""

    def __call__(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = ...
    ) -> Awaitable[None]: ...


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class ChildSpec:
    """How to run, stop and watch one child.

    Attributes:
        name: unique within its supervisor; used in logs, status and metrics.
        fn: the child (see :class:`ChildFn`).
        restart: when it is started again after it ended.
        start_timeout_s: it must call ``task_status.started()`` within this, or
            it is cancelled and the start fails with StartTimeoutError (a
            failure, so it counts toward the intensity).
        shutdown_grace_s: after the stop request, time it gets to drain and
            return by itself before it is cancelled.
        cleanup_timeout_s: after cancellation, how long it may take to unwind
            before it is reported STUCK (the supervisor keeps waiting).
        heartbeat_interval_s: if set, the child promises a heartbeat at least
            this often; none for ``interval * heartbeat_tolerance`` means hung.
        heartbeat_tolerance: how many intervals may be missed.
        critical: health uses it: a stale or stuck critical child makes the
            daemon unhealthy, a non-critical one only degraded.
        supervisor: set by :meth:`Supervisor.as_child` so that status nests.
    """

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    fn: ChildFn
    restart: Restart = Restart.PERMANENT
    start_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    shutdown_grace_s: float = attrs.field(default=5.0, validator=_non_negative)
    cleanup_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    heartbeat_interval_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    heartbeat_tolerance: float = attrs.field(default=3.0, validator=attrs.validators.ge(1.0))
    critical: bool = True
    supervisor: Supervisor | None = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class SupervisorPolicy:
    """Strategy, restart intensity and backoff of one supervisor.

    ``max_children`` caps the number of live children (mostly for ``dynamic``
    pools); :meth:`Supervisor.start_child` raises PoolFullError beyond it.
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = attrs.field(default=DEFAULT_MAX_RESTARTS, validator=attrs.validators.ge(0))
    period_s: float = attrs.field(default=DEFAULT_PERIOD_S, validator=_positive)
    backoff_initial_s: float = attrs.field(default=0.1, validator=_non_negative)
    backoff_max_s: float = attrs.field(default=10.0, validator=_non_negative)
    backoff_multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1.0))
    backoff_jitter: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)]
    )
    max_children: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    #: OTP semantics: a child that fails its *initial* start (before the
    #: supervisor is ready) fails the supervisor's start at once: the children
    #: already started are stopped in reverse order and the ChildStartError /
    #: StartTimeoutError is raised to the parent. A broken config or a taken
    #: socket then surfaces in a second, not after a restart loop. False: such
    #: failures go through the normal restart rules instead.
    fail_fast_start: bool = True

    def __attrs_post_init__(self) -> None:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_initial_s "
                f"({self.backoff_initial_s})"
            )


def backoff_delay_s(policy: SupervisorPolicy, attempt: int, rng: random.Random) -> float:
    """Delay before restart number ``attempt`` (1-based) of a child.

    Exponential so that a crash loop does not burn CPU or hammer a peer, with
    jitter so that children failing together (a venue outage) do not come back
    in lock-step. The rng is only consulted when ``backoff_jitter > 0``, which
    keeps jitter-free tests independent of the rng.

    ``min(max, initial * multiplier**(attempt-1) * (1 + u))`` with
    ``u = rng.uniform(-jitter, jitter)``.
    """
    exponent = max(attempt - 1, 0)
    # Cap before multiplying out so a long crash loop cannot overflow the float.
    base = policy.backoff_initial_s
    for _ in range(exponent):
        base *= policy.backoff_multiplier
        if base >= policy.backoff_max_s:
            base = policy.backoff_max_s
            break
    if policy.backoff_jitter > 0:
        base *= 1.0 + rng.uniform(-policy.backoff_jitter, policy.backoff_jitter)
    return max(0.0, min(policy.backoff_max_s, base))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def describe_error(exc: BaseException) -> str:
    """``"Type: message"`` for an error; for a group, its first leaf (+ how many more)."""
    leaves = _leaves(exc)
    first = leaves[0] if leaves else exc
    text = f"{type(first).__name__}: {first}" if str(first) else type(first).__name__
    if len(leaves) > 1:
        text += f" (+{len(leaves) - 1} more in {type(exc).__name__})"
    return text


def _failure_error(exc: BaseException) -> BaseException:
    """The error recorded for escalation: a lone leaf rather than its wrapping group."""
    leaves = _leaves(exc)
    return leaves[0] if len(leaves) == 1 else exc


def _raise_saving_context(exc: BaseException) -> NoReturn:
    """Re-raise ``exc`` without chaining it to the group being handled."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def _reraise_unwrapped(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Unwrap the supervisor nursery's group at the supervisor boundary.

    A non-Exception (KeyboardInterrupt, SystemExit) wins over Cancelled, which
    wins over Exceptions; a single Exception (EscalationError) is raised bare.
    """
    leaves = _leaves(group)
    base = [e for e in leaves if not isinstance(e, Exception)]
    hard = [e for e in base if not isinstance(e, trio.Cancelled)]
    if hard:
        _raise_saving_context(hard[0])
    if base:
        _raise_saving_context(base[0])
    if len(leaves) == 1:
        _raise_saving_context(leaves[0])
    raise group  # several Exceptions: a bug in this module; keep all of them


# ---------------------------------------------------------------------------------------------
# Status and events
# ---------------------------------------------------------------------------------------------


def _json_value(_inst: object, _field: object, value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


@attrs.frozen
class ChildStatus:
    """Snapshot of one child (see :meth:`Supervisor.status`)."""

    name: str
    state: ChildState
    restart: Restart
    critical: bool
    incarnation: int
    restarts: int
    starts: int
    last_error: str | None
    last_exit_at: float | None
    heartbeat_interval_s: float | None
    heartbeat_age_s: float | None
    heartbeat_stale: bool
    stuck_for_s: float | None
    supervisor: SupervisorStatus | None = None


@attrs.frozen
class SupervisorStatus:
    """Snapshot of a supervisor and, recursively, its children.

    ``restarts_in_period`` is what the intensity limit is compared with;
    ``total_restarts`` (== ``restarts``) counts restart decisions since
    construction (a ``one_for_all`` restart of three children is one).
    """

    name: str
    strategy: Strategy
    state: SupervisorState
    max_restarts: int
    period_s: float
    restarts_in_period: int
    total_restarts: int
    escalated: bool
    starts: int
    exits: int
    restarts: int
    failures: int
    escalations: int
    children: tuple[ChildStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (enums as their string values)."""
        return attrs.asdict(self, value_serializer=_json_value)

    def walk(self, prefix: str = "") -> Iterator[tuple[str, ChildStatus]]:
        """Yield ``(path, child)`` for every child in the tree, e.g. ``root/orders/executor``."""
        path = f"{prefix}{self.name}"
        for child in self.children:
            yield f"{path}/{child.name}", child
            if child.supervisor is not None:
                yield from child.supervisor.walk(f"{path}/")


@attrs.frozen
class SupervisorEvent:
    """Something that happened to a supervisor or one of its children.

    ``child`` is None for events of the supervisor itself (started = ready,
    stopped, escalated). ``at`` is ``trio.current_time()``.
    """

    kind: EventKind
    supervisor: str
    child: str | None
    error: BaseException | None
    at: float


# ---------------------------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------------------------


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

    def __init__(self, supervisor: Supervisor, child: _Child, incarnation: int) -> None:
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


class _Incarnation:
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


class _ReadyStatus:
    """The ``task_status`` a child sees: records readiness, then passes it on."""

    def __init__(self, child: _Child, inc: _Incarnation, outer: trio.TaskStatus[None]) -> None:
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


class _Child:
    """The supervisor's mutable record of one child (across incarnations)."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = ChildState.STOPPED
        self.inc: _Incarnation | None = None
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


# ---------------------------------------------------------------------------------------------
# Mailbox
# ---------------------------------------------------------------------------------------------


class _Reply:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None

    def resolve(self, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise self.error


@attrs.define
class _Exit:
    child: _Child
    inc: _Incarnation


@attrs.define
class _StartRequest:
    spec: ChildSpec
    reply: _Reply


@attrs.define
class _StopRequest:
    name: str
    reply: _Reply


_Message = _Exit | _StartRequest | _StopRequest


@attrs.define
class _Counters:
    starts: int = 0
    exits: int = 0
    restarts: int = 0
    failures: int = 0
    escalations: int = 0


# ---------------------------------------------------------------------------------------------
# The supervisor
# ---------------------------------------------------------------------------------------------


class Supervisor:
    """An OTP-style supervisor on a Trio nursery (see the module docstring).

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
        policy: SupervisorPolicy = SupervisorPolicy(),
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
        self._specs = tuple(children)
        self._rng = rng if rng is not None else random.Random()
        self._on_event = on_event
        self._children: list[_Child] = [_Child(spec) for spec in self._specs]
        self._state = SupervisorState.STOPPED
        self._escalated = False
        self._counters = _Counters()
        self._window: collections.deque[ChildFailure] = collections.deque()
        self._mailbox: collections.deque[_Message] = collections.deque()
        self._wake = trio.Event()
        self._running = False
        self._stop_requested = False
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ public API

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, report ready, supervise until stopped.

        Returns after :meth:`request_stop` once every child stopped (reverse
        order). Raises EscalationError when the restart intensity is exceeded,
        after stopping every child in reverse order. BaseExceptions that are not
        Exceptions (Cancelled, KeyboardInterrupt, SystemExit) propagate, unwrapped.
        ``task_status.started()`` is only called once every child is ready, so a
        stop requested before that makes ``nursery.start(sup.run)`` fail.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._running = True
        self._reset_for_run()
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._control(task_status)
            except BaseExceptionGroup as group:
                _reraise_unwrapped(group)
        finally:
            self._finish_run()

    def request_stop(self) -> None:
        """Ask for a graceful stop: children stop in reverse start order.

        Safe to call at any time and more than once; a request made before
        ``run()`` makes that run stop before starting anything. A child that is
        still starting is asked to stop and cancelled after its grace period.
        """
        if self._stop_requested:
            return
        self._stop_requested = True
        log.info("supervisor %s: stop requested", self.name)
        now = _now()
        for child in self._children:
            inc = child.inc
            if inc is not None and not inc.ready and not inc.done.is_set():
                inc.ctx._request_stop()
                if now is not None:
                    inc.move_deadline(min(inc.scope.deadline, now + child.spec.shutdown_grace_s))
        self._wake.set()

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
                spec.shutdown_grace_s + spec.cleanup_timeout_s for spec in self._specs
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
        reply = self._request(lambda r: _StartRequest(spec, r))
        await reply.wait()

    async def stop_child(self, name: str) -> None:
        """Stop a child gracefully (stop request → grace → cancel) and remove it.

        Raises:
            KeyError: no child of that name.
            SupervisionError: the supervisor is not running or is stopping.
        """
        reply = self._request(lambda r: _StopRequest(name, r))
        await reply.wait()

    def status(self) -> SupervisorStatus:
        """A consistent snapshot of this supervisor and its subtree."""
        now = _now()
        in_period = (
            sum(1 for f in self._window if f.at > now - self.policy.period_s)
            if now is not None
            else len(self._window)
        )
        c = self._counters
        return SupervisorStatus(
            name=self.name,
            strategy=self.policy.strategy,
            state=self._state,
            max_restarts=self.policy.max_restarts,
            period_s=self.policy.period_s,
            restarts_in_period=in_period,
            total_restarts=c.restarts,
            escalated=self._escalated,
            starts=c.starts,
            exits=c.exits,
            restarts=c.restarts,
            failures=c.failures,
            escalations=c.escalations,
            children=tuple(self._child_status(child, now) for child in self._children),
        )

    # ------------------------------------------------------------------ the control loop

    async def _control(self, task_status: trio.TaskStatus[None]) -> None:
        self._state = SupervisorState.STARTING
        now = trio.current_time()
        for child in self._children:
            child.state = ChildState.STARTING
            child.restart_at = now
        log.info(
            "supervisor %s: starting %d children (%s)",
            self.name,
            len(self._children),
            self.policy.strategy.value,
        )
        while not self._stop_requested:
            if self._state is SupervisorState.STARTING and self._all_settled():
                self._state = SupervisorState.RUNNING
                log.info("supervisor %s: ready", self.name)
                self._emit(EventKind.STARTED, None)
                task_status.started()
            if self._mailbox:
                await self._handle(self._mailbox.popleft())
                continue
            now = trio.current_time()
            stale = self._first_stale(now)
            if stale is not None:
                await self._handle_stale(stale, now)
                continue
            due = self._first_due(now)
            if due is not None:
                error = await self._start(due)
                if error is not None and not isinstance(error, _StartAborted):
                    if self._state is SupervisorState.STARTING and self.policy.fail_fast_start:
                        await self._fail_start(due, error)
                    await self._child_down(due, error)
                continue
            self._wake = wake = trio.Event()
            with trio.move_on_at(self._next_deadline()):
                await wake.wait()
        await self._shutdown()

    async def _fail_start(self, child: _Child, error: SupervisionError) -> NoReturn:
        """The initial start failed: stop what started (reverse order), raise."""
        child.state = ChildState.FAILED
        child.inc = None  # its task has ended; nothing to stop
        child.last_error = describe_error(error)
        self._counters.failures += 1
        log.error("supervisor %s: start failed: %s", self.name, describe_error(error))
        self._emit(EventKind.FAILED, child.name, error=error)
        await self._shutdown()
        raise error

    def _all_settled(self) -> bool:
        return all(
            c.state in (ChildState.RUNNING, ChildState.STOPPED, ChildState.FAILED)
            for c in self._children
        )

    def _first_stale(self, now: float) -> _Child | None:
        for child in self._children:
            deadline = child.heartbeat_deadline()
            if deadline is not None and now >= deadline:
                return child
        return None

    def _first_due(self, now: float) -> _Child | None:
        for child in self._children:
            if child.pending and child.restart_at <= now:
                return child
        return None

    def _next_deadline(self) -> float:
        deadlines = [c.restart_at for c in self._children if c.pending]
        deadlines += [d for c in self._children if (d := c.heartbeat_deadline()) is not None]
        return min(deadlines, default=math.inf)

    async def _handle(self, message: _Message) -> None:
        if isinstance(message, _Exit):
            child, inc = message.child, message.inc
            if inc.handled or child.inc is not inc:
                return  # already accounted for (stopped on purpose)
            inc.handled = True
            await self._child_down(child, inc.error)
        elif isinstance(message, _StartRequest):
            await self._handle_start_request(message)
        else:
            await self._handle_stop_request(message)

    # ------------------------------------------------------------------ starting

    async def _start(self, child: _Child) -> SupervisionError | None:
        """Start one incarnation; None when ready, else the start failure."""
        assert self._nursery is not None
        child.incarnation += 1
        ctx = ChildContext(self, child, child.incarnation)
        inc = _Incarnation(ctx, child.spec.start_timeout_s)
        child.inc = inc
        child.state = ChildState.STARTING
        error: SupervisionError | None = None
        async with trio.open_nursery() as watch:
            watch.start_soon(self._watch_start, child, inc)
            try:
                await self._nursery.start(
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
            self._counters.starts += 1
            log.info(
                "supervisor %s: started %s (incarnation %d)", self.name, child.name, inc.number
            )
            self._emit(EventKind.STARTED, child.name, at=now)
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
        child: _Child,
        inc: _Incarnation,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The task of one incarnation. Catches every Exception of the child.

        Before ready, failures are raised (so ``nursery.start`` reports them to
        the control loop); after, the exit goes to the mailbox. BaseExceptions
        that are not Exceptions propagate and tear the supervisor down.
        """
        status = _ReadyStatus(child, inc, task_status)
        try:
            with inc.scope:
                await child.spec.fn(inc.ctx, task_status=status)
        except Exception as exc:
            inc.error = exc
        finally:
            inc.done.set()
        if not inc.ready:
            raise self._start_failure(child, inc)
        self._post(_Exit(child, inc))

    def _start_failure(self, child: _Child, inc: _Incarnation) -> SupervisionError:
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

    async def _watch_start(self, child: _Child, inc: _Incarnation) -> None:
        """Report STUCK if a start outlives its (possibly moved) deadline + cleanup."""
        while trio.current_time() < inc.scope.deadline:
            with trio.move_on_at(inc.scope.deadline):
                await inc.deadline_moved.wait()
                inc.deadline_moved = trio.Event()
        with trio.move_on_after(child.spec.cleanup_timeout_s):
            await inc.done.wait()
        if not inc.done.is_set():
            self._mark_stuck(child)

    # ------------------------------------------------------------------ failures and restarts

    async def _child_down(self, child: _Child, error: BaseException | None) -> None:
        """Account for the end of ``child``'s incarnation and apply the policy."""
        now = trio.current_time()
        child.inc = None
        child.last_exit_at = now
        child.stuck_since = None
        self._counters.exits += 1
        if error is not None:
            child.last_error = describe_error(error)
            self._counters.failures += 1
            log.warning(
                "supervisor %s: %s (incarnation %d) failed: %s",
                self.name,
                child.name,
                child.incarnation,
                child.last_error,
                exc_info=error,
            )
            self._emit(EventKind.FAILED, child.name, error, at=now)
        else:
            log.info(
                "supervisor %s: %s (incarnation %d) returned",
                self.name,
                child.name,
                child.incarnation,
            )
            self._emit(EventKind.EXITED, child.name, at=now)

        if not _should_restart(child.spec.restart, error):
            self._retire(child, failed=error is not None)
            return

        reason = (
            error
            if error is not None
            else UnexpectedExitError(f"permanent child {child.name!r} returned")
        )
        failure = ChildFailure(child.name, _failure_error(reason), now)
        self._window.append(failure)
        while self._window and self._window[0].at <= now - self.policy.period_s:
            self._window.popleft()
        if len(self._window) > self.policy.max_restarts:
            child.state = ChildState.FAILED
            await self._escalate(tuple(self._window))

        child.restart_times.append(now)
        while child.restart_times and child.restart_times[0] <= now - self.policy.period_s:
            child.restart_times.popleft()
        delay = backoff_delay_s(self.policy, len(child.restart_times), self._rng)

        group = self._restart_group(child)
        # Stop the rest of the group (reverse start order) before restarting any of it.
        stopped: list[_Child] = []
        for sibling in reversed(group):
            if sibling is not child and sibling.inc is not None:
                await self._stop_and_record(sibling)
                stopped.append(sibling)
        restart_at = trio.current_time() + delay
        self._counters.restarts += 1
        for member in group:
            if member is not child and member not in stopped:
                # Not running (not started yet, or already in backoff): it just
                # follows the group, so the group still starts in order.
                member.restart_at = restart_at
                continue
            if member is not child and member.spec.restart is Restart.TEMPORARY:
                self._retire(member, failed=False)
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
            self._emit(EventKind.RESTARTING, member.name, reason)

    def _restart_group(self, child: _Child) -> list[_Child]:
        """The children restarted together with ``child``, in start order."""
        strategy = self.policy.strategy
        if strategy is Strategy.ONE_FOR_ALL:
            return [c for c in self._children if c is child or c.live]
        if strategy is Strategy.REST_FOR_ONE:
            index = self._children.index(child)
            return [child] + [c for c in self._children[index + 1 :] if c.live]
        return [child]

    def _retire(self, child: _Child, *, failed: bool) -> None:
        """``child`` ended for good: terminal state, and it leaves a dynamic pool."""
        child.state = ChildState.FAILED if failed else ChildState.STOPPED
        child.restart_at = math.inf
        if self.policy.strategy is Strategy.DYNAMIC and child in self._children:
            self._children.remove(child)

    async def _escalate(self, failures: tuple[ChildFailure, ...]) -> NoReturn:
        log.error(
            "supervisor %s: %d restarts within %g s exceed max_restarts=%d; "
            "stopping all children and escalating",
            self.name,
            len(failures),
            self.policy.period_s,
            self.policy.max_restarts,
        )
        self._state = SupervisorState.STOPPING
        await self._stop_all()
        self._escalated = True
        self._state = SupervisorState.ESCALATED
        self._counters.escalations += 1
        error = EscalationError(self.name, failures)
        self._emit(EventKind.ESCALATED, None, error)
        raise error

    async def _handle_stale(self, child: _Child, now: float) -> None:
        interval = child.spec.heartbeat_interval_s
        last = child.last_heartbeat_at
        assert interval is not None and last is not None and child.inc is not None
        child.stale = True
        error = StaleHeartbeatError(
            f"child {child.name!r}: no heartbeat for {now - last:g} s "
            f"(interval {interval:g} s x tolerance {child.spec.heartbeat_tolerance:g})"
        )
        log.warning("supervisor %s: %s; cancelling it", self.name, error)
        self._emit(EventKind.STALE_HEARTBEAT, child.name, error)
        inc = child.inc
        # Presumed hung: asking it to drain would only waste the grace period.
        await self._terminate(child, inc, graceful=False)
        await self._child_down(child, error)

    # ------------------------------------------------------------------ stopping

    async def _terminate(self, child: _Child, inc: _Incarnation, *, graceful: bool) -> None:
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
        self._mark_stuck(child)
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

    def _mark_stuck(self, child: _Child) -> None:
        child.state = ChildState.STUCK
        child.stuck_since = trio.current_time()
        log.error(
            "supervisor %s: %s ignores cancellation beyond its %g s cleanup timeout; "
            "it is STUCK (waiting for it; Trio cannot abandon a task)",
            self.name,
            child.name,
            child.spec.cleanup_timeout_s,
        )
        self._emit(EventKind.STUCK, child.name)

    async def _stop_and_record(self, child: _Child) -> None:
        """Gracefully stop a running child and record it as STOPPED."""
        inc = child.inc
        assert inc is not None
        await self._terminate(child, inc, graceful=True)
        now = trio.current_time()
        child.inc = None
        child.state = ChildState.STOPPED
        child.restart_at = math.inf
        child.last_exit_at = now
        child.stuck_since = None
        self._counters.exits += 1
        if inc.error is not None:
            child.last_error = describe_error(inc.error)
            self._counters.failures += 1
            log.warning(
                "supervisor %s: %s raised while stopping: %s",
                self.name,
                child.name,
                child.last_error,
                exc_info=inc.error,
            )
        log.info("supervisor %s: stopped %s", self.name, child.name)
        self._emit(EventKind.STOPPED, child.name, inc.error, at=now)

    async def _stop_all(self) -> None:
        for child in reversed(list(self._children)):
            if child.inc is not None:
                await self._stop_and_record(child)
            elif child.pending:
                child.state = ChildState.STOPPED
                child.restart_at = math.inf

    async def _shutdown(self) -> None:
        self._state = SupervisorState.STOPPING
        log.info("supervisor %s: stopping children in reverse order", self.name)
        await self._stop_all()
        self._state = SupervisorState.STOPPED
        log.info("supervisor %s: stopped", self.name)
        self._emit(EventKind.STOPPED, None)

    # ------------------------------------------------------------------ requests

    def _request(self, make: Callable[[_Reply], _Message]) -> _Reply:
        reply = _Reply()
        if not self._running or self._stop_requested:
            reply.resolve(SupervisionError(f"supervisor {self.name!r} is not running"))
        else:
            self._post(make(reply))
        return reply

    async def _handle_start_request(self, request: _StartRequest) -> None:
        spec, reply = request.spec, request.reply
        if any(c.name == spec.name for c in self._children):
            reply.resolve(ValueError(f"supervisor {self.name!r}: duplicate child {spec.name!r}"))
            return
        cap = self.policy.max_children
        if cap is not None and sum(1 for c in self._children if c.live) >= cap:
            reply.resolve(PoolFullError(f"supervisor {self.name!r}: pool full ({cap} children)"))
            return
        child = _Child(spec)
        self._children.append(child)
        error = await self._start(child)
        if error is not None:
            self._children.remove(child)
            if not isinstance(error, _StartAborted):
                child.last_error = describe_error(error)
                self._counters.failures += 1
                log.warning(
                    "supervisor %s: start_child(%s) failed: %s", self.name, spec.name, error
                )
                self._emit(EventKind.FAILED, spec.name, error)
        reply.resolve(error)

    async def _handle_stop_request(self, request: _StopRequest) -> None:
        child = next((c for c in self._children if c.name == request.name), None)
        if child is None:
            request.reply.resolve(KeyError(request.name))
            return
        if child.inc is not None:
            await self._stop_and_record(child)
        if child in self._children:
            self._children.remove(child)
        request.reply.resolve()

    # ------------------------------------------------------------------ plumbing

    def _post(self, message: _Message) -> None:
        # Bounded by construction: one _Exit per live incarnation plus one per
        # pending caller of start_child/stop_child (each waits for its reply).
        self._mailbox.append(message)
        self._wake.set()

    def _emit(
        self,
        kind: EventKind,
        child: str | None,
        error: BaseException | None = None,
        *,
        at: float | None = None,
    ) -> None:
        if self._on_event is None:
            return
        event = SupervisorEvent(
            kind=kind,
            supervisor=self.name,
            child=child,
            error=error,
            at=trio.current_time() if at is None else at,
        )
        try:
            self._on_event(event)
        except Exception:
            log.exception("supervisor %s: on_event observer failed", self.name)

    def _reset_for_run(self) -> None:
        self._children = [_Child(spec) for spec in self._specs]
        self._window.clear()
        self._mailbox.clear()
        self._wake = trio.Event()
        self._escalated = False
        self._state = SupervisorState.STARTING

    def _finish_run(self) -> None:
        self._running = False
        self._nursery = None
        self._stop_requested = False
        for message in self._mailbox:
            if not isinstance(message, _Exit):
                message.reply.resolve(SupervisionError(f"supervisor {self.name!r} stopped"))
        self._mailbox.clear()
        for child in self._children:
            # After outside cancellation or a propagating BaseException every
            # task has ended (the nursery waited), whatever the records said.
            if child.inc is not None or child.pending or child.state is ChildState.STOPPING:
                child.inc = None
                child.state = ChildState.STOPPED
                child.stuck_since = None
        if self._state is not SupervisorState.ESCALATED:
            self._state = SupervisorState.STOPPED

    def _child_status(self, child: _Child, now: float | None) -> ChildStatus:
        interval = child.spec.heartbeat_interval_s
        age: float | None = None
        stale = child.stale
        if interval is not None and child.last_heartbeat_at is not None and now is not None:
            age = now - child.last_heartbeat_at
            deadline = child.heartbeat_deadline()
            stale = stale or (deadline is not None and now >= deadline)
        nested = child.spec.supervisor
        return ChildStatus(
            name=child.name,
            state=child.state,
            restart=child.spec.restart,
            critical=child.spec.critical,
            incarnation=child.incarnation,
            restarts=child.restarts,
            starts=child.starts,
            last_error=child.last_error,
            last_exit_at=child.last_exit_at,
            heartbeat_interval_s=interval,
            heartbeat_age_s=age,
            heartbeat_stale=stale,
            stuck_for_s=(
                now - child.stuck_since
                if child.stuck_since is not None and now is not None
                else None
            ),
            supervisor=nested.status() if nested is not None else None,
        )


def _should_restart(restart: Restart, error: BaseException | None) -> bool:
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return error is not None
    return False


def _now() -> float | None:
    """``trio.current_time()``, or None outside Trio (status from another thread)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None
