"""The health model: named checks folded into one healthy / degraded / unhealthy report.

:class:`HealthModel` runs its checks — the loop lag of a
:class:`~daemon.health.lag.LagProbe` (judged against :class:`HealthThresholds`),
the supervision tree (:func:`daemon.health.supervision.supervisor_check`) and
any other check a component adds — and returns a :class:`HealthReport`: the
worst :class:`HealthLevel` of all checks, with the reasons of every check that
is not healthy, worst first.

A check that is unhealthy for a reason no restart can cure (the disk is
full) says so with a :class:`LastingReason`: the report still says unhealthy,
but its :attr:`HealthReport.restart_level`, which the systemd watchdog
follows, counts that check as degraded.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from daemon.health.lag import LagProbe

__all__ = [
    "LAG_CHECK",
    "CheckFn",
    "CheckOutcome",
    "CheckResult",
    "HealthLevel",
    "HealthModel",
    "HealthReport",
    "HealthThresholds",
    "LastingReason",
    "reasons_suffix",
]

log = logging.getLogger("tradingd.health")


class HealthLevel(enum.Enum):
    """How well the daemon is. Ordered: ``max(levels)`` is the worst."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, HealthLevel):
            return NotImplemented
        return self.severity < other.severity

    def __le__(self, other: object) -> bool:
        if not isinstance(other, HealthLevel):
            return NotImplemented
        return self.severity <= other.severity

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, HealthLevel):
            return NotImplemented
        return self.severity > other.severity

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, HealthLevel):
            return NotImplemented
        return self.severity >= other.severity


_SEVERITY = {HealthLevel.HEALTHY: 0, HealthLevel.DEGRADED: 1, HealthLevel.UNHEALTHY: 2}


class LastingReason(str):
    """A reason that a restart cannot cure (the disk is full, the file system read-only).

    A check returns it instead of a plain ``str`` for an unhealthy state that
    would outlive the process. Health still says unhealthy (``/health`` 503,
    the reason listed), but a check whose every reason is lasting counts as
    degraded in :attr:`HealthReport.restart_level`, so the systemd watchdog
    keeps pinging: a restart would only add a restart loop to the trouble and
    drop what is in memory, while the daemon recovers by itself once the
    condition clears.
    """

    __slots__ = ()


#: What a check returns: its level and zero, one or several short reasons.
CheckOutcome = tuple[HealthLevel, str | Sequence[str] | None]
CheckFn = Callable[[], CheckOutcome]


@attrs.frozen
class CheckResult:
    """The outcome of one named check."""

    name: str
    level: HealthLevel
    reasons: tuple[str, ...] = ()

    @property
    def restart_level(self) -> HealthLevel:
        """The level as a restart would see it: unhealthy only for a reason it may cure."""
        lasting = self.reasons and all(isinstance(r, LastingReason) for r in self.reasons)
        if self.level is HealthLevel.UNHEALTHY and lasting:
            return HealthLevel.DEGRADED
        return self.level

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level.value, "reasons": list(self.reasons)}


@attrs.frozen
class HealthReport:
    """The daemon's health at one moment: the worst level of all checks, and why."""

    level: HealthLevel
    reasons: tuple[str, ...]
    checks: tuple[CheckResult, ...]

    @property
    def healthy(self) -> bool:
        return self.level is HealthLevel.HEALTHY

    @property
    def restart_level(self) -> HealthLevel:
        """The worst :attr:`CheckResult.restart_level`: what the systemd watchdog follows."""
        return max((check.restart_level for check in self.checks), default=HealthLevel.HEALTHY)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for ``/health`` and ``/status``."""
        return {
            "level": self.level.value,
            "reasons": list(self.reasons),
            "checks": {check.name: check.to_dict() for check in self.checks},
        }


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class HealthThresholds:
    """Where loop lag turns health degraded or unhealthy.

    ``lag_degraded_ms`` applies to the p99 over the probe's window (a loop that
    is often slow); ``lag_unhealthy_ms`` to the latest sample (a loop that is
    slow right now, which stops the watchdog pings).
    """

    lag_degraded_ms: float = attrs.field(default=100.0, validator=_positive)
    lag_unhealthy_ms: float = attrs.field(default=1000.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.lag_unhealthy_ms < self.lag_degraded_ms:
            raise ValueError(
                f"lag_unhealthy_ms ({self.lag_unhealthy_ms}) must not be below "
                f"lag_degraded_ms ({self.lag_degraded_ms})"
            )


LAG_CHECK = "loop_lag"


class HealthModel:
    """Folds named checks into one :class:`HealthReport`.

    With a ``lag_probe`` it includes the loop-lag check (named ``"loop_lag"``);
    other checks (the supervision tree, disk space, …) are added with
    :meth:`add_check`. A check that raises is reported as degraded with the
    error as its reason (and logged once per run of failures): a broken check
    must be visible, but must not by itself make systemd restart the daemon.
    """

    def __init__(
        self, thresholds: HealthThresholds | None = None, lag_probe: LagProbe | None = None
    ) -> None:
        self.thresholds = thresholds if thresholds is not None else HealthThresholds()
        self.lag_probe = lag_probe
        self._checks: dict[str, CheckFn] = {}
        if lag_probe is not None:
            self._checks[LAG_CHECK] = self._check_lag
        self._failing_checks: set[str] = set()
        self.last_report: HealthReport | None = None

    def add_check(self, name: str, fn: CheckFn) -> None:
        """Add a check. Names are unique; they key ``checks`` in the report."""
        if name in self._checks:
            raise ValueError(f"a health check named {name!r} already exists")
        self._checks[name] = fn

    def remove_check(self, name: str) -> None:
        """Remove a check (e.g. a pool member that was retired)."""
        del self._checks[name]

    def evaluate(self) -> HealthReport:
        """Run every check and return the report; logs when the level changes."""
        results = [self._run_check(name, fn) for name, fn in list(self._checks.items())]
        level = max((result.level for result in results), default=HealthLevel.HEALTHY)
        ranked = sorted(results, key=lambda result: -result.level.severity)
        reasons = tuple(
            reason
            for result in ranked
            if result.level is not HealthLevel.HEALTHY
            for reason in result.reasons
        )
        report = HealthReport(level=level, reasons=reasons, checks=tuple(results))
        previous = self.last_report
        if previous is None or previous.level is not level:
            was = previous.level.value if previous is not None else "unknown"
            logger = log.info if level is HealthLevel.HEALTHY else log.warning
            logger("health %s -> %s%s", was, level.value, reasons_suffix(reasons))
        self.last_report = report
        return report

    def _run_check(self, name: str, fn: CheckFn) -> CheckResult:
        try:
            level, reason = fn()
        except Exception as exc:
            if name not in self._failing_checks:
                self._failing_checks.add(name)
                log.exception("health check %r failed", name)
            return CheckResult(
                name, HealthLevel.DEGRADED, (f"check {name} failed: {type(exc).__name__}: {exc}",)
            )
        self._failing_checks.discard(name)
        if reason is None:
            reasons: tuple[str, ...] = ()
        elif isinstance(reason, str):
            reasons = (reason,)
        else:
            reasons = tuple(reason)
        return CheckResult(name, level, reasons)

    def _check_lag(self) -> CheckOutcome:
        assert self.lag_probe is not None
        stats = self.lag_probe.stats()
        t = self.thresholds
        level = HealthLevel.HEALTHY
        reasons: list[str] = []
        if stats.last_ms > t.lag_unhealthy_ms:
            level = HealthLevel.UNHEALTHY
            reasons.append(f"event loop lag {stats.last_ms:.1f} ms now > {t.lag_unhealthy_ms:g} ms")
        if stats.p99_ms > t.lag_degraded_ms:
            level = max(level, HealthLevel.DEGRADED)
            reasons.append(
                f"event loop lag p99 {stats.p99_ms:.1f} ms over {self.lag_probe.window_s:g} s "
                f"> {t.lag_degraded_ms:g} ms"
            )
        return level, tuple(reasons)


def reasons_suffix(reasons: Sequence[str]) -> str:
    return ": " + "; ".join(reasons) if reasons else ""
