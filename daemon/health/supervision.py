"""The health check of a supervision tree.

:func:`supervisor_check` turns a supervisor's ``status()`` into a check for
:class:`~daemon.health.model.HealthModel`: an escalated supervisor or a
critical child that is stale, stuck or failed makes the daemon unhealthy; a
non-critical one, or a child in backoff, degraded. The tree is read through
the duck-typed :class:`SupervisorStatusLike` / :class:`ChildStatusLike`, so
this module does not import :mod:`daemon.supervise`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from daemon.health.model import CheckFn, CheckOutcome, HealthLevel

__all__ = ["ChildStatusLike", "SupervisorStatusLike", "supervisor_check"]


class ChildStatusLike(Protocol):
    """The shape of one child in a supervisor's ``status()`` (duck-typed)."""

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> object:
        """An enum whose ``.value`` is one of ``starting``, ``running``, ``stopping``,
        ``backoff``, ``stopped``, ``failed``, ``stuck``."""

    @property
    def critical(self) -> bool: ...

    @property
    def heartbeat_stale(self) -> bool: ...

    @property
    def restarts(self) -> int: ...

    @property
    def last_error(self) -> object: ...

    @property
    def supervisor(self) -> SupervisorStatusLike | None: ...


class SupervisorStatusLike(Protocol):
    """The shape of a supervisor's ``status()`` (duck-typed)."""

    @property
    def name(self) -> str: ...

    @property
    def escalated(self) -> bool: ...

    @property
    def children(self) -> Iterable[ChildStatusLike]: ...


_MAX_ERROR_CHARS = 120


def _state_value(state: object) -> str:
    return str(getattr(state, "value", state))


def _short_error(error: object) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def supervisor_check(status_fn: Callable[[], SupervisorStatusLike]) -> CheckFn:
    """Build a health check from a supervision tree's ``status()``.

    Rules, applied recursively to nested supervisors (paths join child names
    with ``/``, starting from the root supervisor's name):

    * an escalated supervisor → unhealthy;
    * a *critical* child whose heartbeat is stale, or that is stuck → unhealthy;
    * a non-critical child stale or stuck, or any child in backoff or failed →
      degraded.

    Reasons are short and name the child path, e.g.
    ``"root/marketdata/feed-x: heartbeat stale 4.2s"`` (the age is included when
    the child status has a ``heartbeat_age_s`` attribute).
    """

    def check() -> CheckOutcome:
        status = status_fn()
        findings: list[tuple[HealthLevel, str]] = []
        _walk_supervisor(status, status.name, findings)
        level = max((found for found, _ in findings), default=HealthLevel.HEALTHY)
        ranked = sorted(findings, key=lambda finding: -finding[0].severity)
        return level, tuple(reason for _, reason in ranked)

    return check


def _walk_supervisor(
    status: SupervisorStatusLike, path: str, findings: list[tuple[HealthLevel, str]]
) -> None:
    if status.escalated:
        findings.append((HealthLevel.UNHEALTHY, f"{path}: escalated (restart intensity exceeded)"))
    for child in status.children:
        child_path = f"{path}/{child.name}"
        state = _state_value(child.state)
        severe = HealthLevel.UNHEALTHY if child.critical else HealthLevel.DEGRADED
        if state == "stuck":
            findings.append((severe, f"{child_path}: stuck"))
        if child.heartbeat_stale:
            age = getattr(child, "heartbeat_age_s", None)
            age_text = f" {age:.1f}s" if isinstance(age, int | float) else ""
            findings.append((severe, f"{child_path}: heartbeat stale{age_text}"))
        if state in ("backoff", "failed"):
            detail = f"{child_path}: {state} after {child.restarts} restart(s)"
            if child.last_error is not None:
                detail += f", last error: {_short_error(child.last_error)}"
            # Backoff is on its way back; "failed" is final (no restart will come),
            # so for a critical child the daemon can no longer do its job.
            findings.append((severe if state == "failed" else HealthLevel.DEGRADED, detail))
        if child.supervisor is not None:
            _walk_supervisor(child.supervisor, child_path, findings)
