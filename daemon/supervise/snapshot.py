"""Status snapshots of a supervision tree.

:class:`ChildStatus` and :class:`SupervisorStatus` are frozen, JSON-ready
pictures of a supervisor and, recursively, its nested supervisors; they are
what ``/status``, the metrics and health read. :func:`child_status` takes the
picture of one child record.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any

import attrs
import trio

from daemon.supervise.child import ChildRecord
from daemon.supervise.policy import ChildState, Restart, Strategy, SupervisorState

__all__ = ["ChildStatus", "SupervisorStatus", "child_status", "now_or_none"]


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


def now_or_none() -> float | None:
    """``trio.current_time()``, or None outside Trio (status from another thread)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None


def child_status(child: ChildRecord, now: float | None) -> ChildStatus:
    """The snapshot of one child at ``now`` (None: ages and staleness not computed)."""
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
            now - child.stuck_since if child.stuck_since is not None and now is not None else None
        ),
        supervisor=nested.status() if nested is not None else None,
    )
