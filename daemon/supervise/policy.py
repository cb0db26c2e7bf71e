"""The supervision vocabulary: strategies, restart types, states, child specs and policy.

Pure values, no Trio: :class:`Strategy`, :class:`Restart`, :class:`ChildState`,
:class:`SupervisorState`, :class:`EventKind`, the :class:`ChildFn` protocol,
:class:`ChildSpec` (how to run, stop and watch one child) and
:class:`SupervisorPolicy` (strategy, restart intensity, backoff), with the
default constants ``[supervision]`` shares.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from daemon.supervise.child import ChildContext
    from daemon.supervise.supervisor import Supervisor

__all__ = [
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_PERIOD_S",
    "NESTED_START_TIMEOUT_S",
    "STUCK_RELOG_INTERVAL_S",
    "ChildFn",
    "ChildSpec",
    "ChildState",
    "EventKind",
    "Restart",
    "Strategy",
    "SupervisorPolicy",
    "SupervisorState",
    "should_restart",
]

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


def should_restart(restart: Restart, error: BaseException | None) -> bool:
    """Whether a child of this restart type is started again after this exit."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return error is not None
    return False


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
