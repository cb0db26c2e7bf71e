"""Health: loop lag, slow task steps, the health model and the systemd watchdog.

tradingd promises never to hang silently (promise 3,
docs/ARCHITECTURE.md §1 and §7). Three layers make that
true, from the inside out:

* :class:`LagProbe` measures how late the event loop wakes a sleeping task
  (sleep drift). A healthy loop wakes it within a millisecond; a loop starved
  by a CPU-bound or blocking call wakes it late by exactly the time it was
  starved.
* :class:`SlowStepInstrument` times every task step, so a block can be *blamed*
  on a task by name. While the loop is blocked nothing in it can log, so a
  separate OS thread, :class:`BlockedLoopReporter`, reads the instrument's
  current step and logs "event loop blocked for X s in task NAME" as it happens.
* :class:`HealthModel` folds loop lag, the supervision tree
  (:func:`supervisor_check`) and any other checks into one
  :class:`HealthReport` (healthy / degraded / unhealthy, with reasons), and
  :func:`run_watchdog` turns it into systemd's watchdog: ``WATCHDOG=1`` is sent
  from the event loop, and *only while not unhealthy*, so systemd restarts a
  daemon that is alive but broken, not only one that is dead.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol

import attrs
import trio

__all__ = [
    "BlockedLoopReporter",
    "CheckFn",
    "CheckResult",
    "ChildStatusLike",
    "HealthLevel",
    "HealthModel",
    "HealthReport",
    "HealthThresholds",
    "LagProbe",
    "LagStats",
    "SlowStep",
    "SlowStepInstrument",
    "SupervisorStatusLike",
    "WatchdogNotifier",
    "WatchdogStats",
    "nearest_rank",
    "run_watchdog",
    "supervisor_check",
]

log = logging.getLogger("tradingd.health")

_MS_PER_S = 1000.0

# ---------------------------------------------------------------------------------------------
# Loop lag
# ---------------------------------------------------------------------------------------------


def nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of ``sorted_values`` by the nearest-rank method.

    The smallest sample such that at least ``pct`` percent of the samples are
    less than or equal to it. Nearest rank never interpolates, so a reported
    p99 is a lag that really happened. Returns 0.0 for no samples.
    """
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(pct * n / 100))
    return sorted_values[rank - 1]


@attrs.frozen
class LagStats:
    """Loop-lag statistics over the probe's window (milliseconds; all 0 without samples)."""

    last_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int

    def to_dict(self) -> dict[str, float | int]:
        return attrs.asdict(self)


class LagProbe:
    """Measures event-loop lag as the drift of a periodic sleep.

    Every ``interval_s`` the probe sleeps until a deadline and records how late
    it woke (``actual - expected``). Samples are kept for ``window_s`` seconds
    and summarised by :meth:`stats`. The next deadline is computed from the
    actual wake-up, so one long block is one large sample, not a burst of them.

    Args:
        interval_s: time between samples.
        window_s: how long samples count in :meth:`stats`.
        clock: the time source, on the same time base as Trio's clock (default
            :func:`trio.current_time`). Inject one to call :meth:`record` and
            :meth:`stats` outside a Trio run.
    """

    def __init__(
        self,
        interval_s: float = 0.1,
        window_s: float = 60.0,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if window_s < interval_s:
            raise ValueError(f"window_s ({window_s}) must be at least interval_s ({interval_s})")
        self._clock = clock if clock is not None else trio.current_time
        self._samples: deque[tuple[float, float]] = deque()  # (time, drift_s)
        self._interval_s = self._window_s = 1.0
        self.interval_s = interval_s
        self.window_s = window_s
        self.samples_total = 0

    @property
    def interval_s(self) -> float:
        """Time between samples; may be changed at run time (config reload)."""
        return self._interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"interval_s must be positive, got {value}")
        self._interval_s = value
        self._resize()

    @property
    def window_s(self) -> float:
        """How long samples count; may be changed at run time (config reload)."""
        return self._window_s

    @window_s.setter
    def window_s(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"window_s must be positive, got {value}")
        self._window_s = value
        self._resize()

    def _resize(self) -> None:
        # A running probe adds at most one sample per interval, so this bound
        # never drops a sample that is still inside the window; it only caps
        # memory should someone record() in a tight loop.
        maxlen = math.ceil(max(self._window_s, self._interval_s) / self._interval_s) + 1
        if self._samples.maxlen != maxlen:
            self._samples = deque(self._samples, maxlen=maxlen)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample forever. Ready at once."""
        task_status.started()
        expected = self._clock() + self.interval_s
        while True:
            await trio.sleep_until(expected)
            now = self._clock()
            self.record(now - expected, at=now)
            expected = now + self.interval_s

    def record(self, drift_s: float, *, at: float | None = None) -> None:
        """Record one sample of ``drift_s`` seconds taken at time ``at`` (default: now)."""
        self._samples.append((self._clock() if at is None else at, max(0.0, drift_s)))
        self.samples_total += 1

    def stats(self) -> LagStats:
        """Statistics over the samples of the last ``window_s`` seconds."""
        horizon = self._clock() - self.window_s
        samples = self._samples
        while samples and samples[0][0] < horizon:
            samples.popleft()
        if not samples:
            return LagStats(last_ms=0.0, p50_ms=0.0, p99_ms=0.0, max_ms=0.0, samples=0)
        drifts = sorted(drift for _, drift in samples)
        return LagStats(
            last_ms=samples[-1][1] * _MS_PER_S,
            p50_ms=nearest_rank(drifts, 50) * _MS_PER_S,
            p99_ms=nearest_rank(drifts, 99) * _MS_PER_S,
            max_ms=drifts[-1] * _MS_PER_S,
            samples=len(drifts),
        )


# ---------------------------------------------------------------------------------------------
# Slow task steps
# ---------------------------------------------------------------------------------------------

_OTHER_TASKS = "<other>"


@attrs.frozen
class SlowStep:
    """One recorded task step: which task, how long, and when it ended (epoch seconds)."""

    task: str
    duration_ms: float
    at: float

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class SlowStepInstrument(trio.abc.Instrument):
    """A Trio instrument that times every task step and keeps the slowest.

    A task step is the run of synchronous code between two checkpoints; while it
    runs, nothing else on the loop does. Timing steps turns "the loop was slow"
    into "task ``feed-x`` held the loop for 2.3 s".

    The hooks run for every step of every task, so they only store a tuple and
    compare a float or two; the bookkeeping happens only for steps at least as
    slow as the fastest one kept or over ``threshold_ms``.

    Args:
        keep: how many of the slowest steps to keep.
        threshold_ms: steps at least this long are counted per task.
        clock: a monotonic high-resolution clock in seconds (default
            :func:`time.perf_counter`); injectable for tests.
        wall_clock: the clock for the ``at`` timestamps (default :func:`time.time`).
        max_task_names: cap on distinct task names counted, so tasks named per
            connection cannot grow memory without bound; the rest are counted
            under ``"<other>"``.
    """

    def __init__(
        self,
        *,
        keep: int = 20,
        threshold_ms: float = 50.0,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
        max_task_names: int = 1000,
    ) -> None:
        if keep < 0:
            raise ValueError(f"keep must not be negative, got {keep}")
        self.keep = keep
        self.threshold_ms = threshold_ms
        self.clock = clock
        self._wall_clock = wall_clock
        self._max_task_names = max_task_names
        # Steps no longer than this cannot enter the slowest list: -1 while it is
        # not full (everything enters), the fastest kept duration once it is.
        self._floor_s = -1.0 if keep else math.inf
        self._heap: list[tuple[float, int, str, float]] = []  # (duration_s, seq, task, at)
        self._seq = itertools.count()
        self._slow_counts: dict[str, int] = {}
        self._current: tuple[trio.lowlevel.Task, float] | None = None
        self.steps_total = 0
        self.slow_steps_total = 0

    @property
    def threshold_ms(self) -> float:
        """Steps at least this long are counted; may be changed at run time."""
        return self._threshold_ms

    @threshold_ms.setter
    def threshold_ms(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"threshold_ms must not be negative, got {value}")
        self._threshold_ms = value
        self._threshold_s = value / _MS_PER_S

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._current = (task, self.clock())

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        current = self._current
        if current is None:
            return
        self._current = None
        duration_s = self.clock() - current[1]
        self.steps_total += 1
        if duration_s <= self._floor_s and duration_s < self._threshold_s:
            return
        self._record(task.name, duration_s)

    def _record(self, name: str, duration_s: float) -> None:
        if duration_s >= self._threshold_s:
            self.slow_steps_total += 1
            counts = self._slow_counts
            if name not in counts and len(counts) >= self._max_task_names:
                name_key = _OTHER_TASKS
            else:
                name_key = name
            counts[name_key] = counts.get(name_key, 0) + 1
        if duration_s > self._floor_s:
            entry = (duration_s, next(self._seq), name, self._wall_clock())
            if len(self._heap) < self.keep:
                heapq.heappush(self._heap, entry)
                if len(self._heap) == self.keep:
                    self._floor_s = self._heap[0][0]
            else:
                heapq.heapreplace(self._heap, entry)
                self._floor_s = self._heap[0][0]

    def current_step(self) -> tuple[str, float] | None:
        """The task whose step is running now and when it started (``clock`` time).

        Safe to call from another thread: it reads one attribute. While the loop
        is blocked, this names the task that blocks it.
        """
        current = self._current
        if current is None:
            return None
        return current[0].name, current[1]

    def slowest(self) -> tuple[SlowStep, ...]:
        """The kept steps, slowest first (earlier first among equals)."""
        entries = sorted(self._heap, key=lambda entry: (-entry[0], entry[1]))
        return tuple(
            SlowStep(task=name, duration_ms=duration_s * _MS_PER_S, at=at)
            for duration_s, _, name, at in entries
        )

    def slow_counts(self) -> dict[str, int]:
        """Per task name, how many steps took at least ``threshold_ms`` (most first)."""
        return dict(sorted(self._slow_counts.items(), key=lambda item: (-item[1], item[0])))

    def report(self) -> dict[str, Any]:
        """A JSON-able summary for ``/status``."""
        return {
            "threshold_ms": self.threshold_ms,
            "steps_total": self.steps_total,
            "slow_steps_total": self.slow_steps_total,
            "slowest": [step.to_dict() for step in self.slowest()],
            "slow_counts": self.slow_counts(),
        }


class StepSource(Protocol):
    """What :class:`BlockedLoopReporter` needs from an instrument."""

    @property
    def clock(self) -> Callable[[], float]: ...

    def current_step(self) -> tuple[str, float] | None: ...


class BlockedLoopReporter(threading.Thread):
    """An OS thread that logs while the event loop is blocked, naming the task.

    A blocked loop cannot report itself. This daemon thread polls
    ``instrument.current_step()`` every ``poll_interval_s``; once one step has
    run for ``threshold_s`` it logs a warning, repeats it every ``repeat_s``
    while the block lasts, and logs once more when the step ends. Start it
    with :meth:`start` (or ``with``) and stop it with :meth:`stop`.

    It only reads; it never touches Trio. The clock is the instrument's. Stop
    the reporter before removing the instrument: an instrument removed in the
    middle of a step never sees that step end, and would look blocked forever.
    """

    def __init__(
        self,
        instrument: StepSource,
        *,
        threshold_s: float = 1.0,
        poll_interval_s: float = 0.1,
        repeat_s: float = 5.0,
    ) -> None:
        super().__init__(name="tradingd-blocked-loop-reporter", daemon=True)
        if threshold_s <= 0 or poll_interval_s <= 0 or repeat_s <= 0:
            raise ValueError("threshold_s, poll_interval_s and repeat_s must be positive")
        self._instrument = instrument
        self.threshold_s = threshold_s
        self.poll_interval_s = poll_interval_s
        self.repeat_s = repeat_s
        self._stop_requested = threading.Event()
        self._blocked_step: tuple[str, float] | None = None
        self._blocked_for_s = 0.0
        self._next_log_at = 0.0
        self.blocks_detected = 0
        self.reports = 0

    def run(self) -> None:
        while not self._stop_requested.wait(self.poll_interval_s):
            self.check()

    def stop(self, timeout_s: float | None = 5.0) -> None:
        """Ask the thread to stop and wait (bounded) for it."""
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout_s)

    def __enter__(self) -> BlockedLoopReporter:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def check(self) -> float | None:
        """Inspect the loop once; log if it is blocked. Returns the block's length so far.

        Called by the thread every ``poll_interval_s``; public so it can be
        driven deterministically.
        """
        step = self._instrument.current_step()
        now = self._instrument.clock()
        if self._blocked_step is not None and step != self._blocked_step:
            name = self._blocked_step[0]
            log.warning(
                "event loop unblocked: task %s held it for at least %.1f s",
                name,
                self._blocked_for_s,
            )
            self._blocked_step = None
        if step is None:
            return None
        name, started = step
        blocked_for_s = now - started
        if blocked_for_s < self.threshold_s:
            return None
        if self._blocked_step is None:
            self._blocked_step = step
            self._next_log_at = now
            self.blocks_detected += 1
        self._blocked_for_s = blocked_for_s
        if now >= self._next_log_at:
            log.warning("event loop blocked for %.1f s in task %s", blocked_for_s, name)
            self.reports += 1
            self._next_log_at = now + self.repeat_s
        return blocked_for_s


# ---------------------------------------------------------------------------------------------
# Health model
# ---------------------------------------------------------------------------------------------


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

#: What a check returns: its level and zero, one or several short reasons.
CheckOutcome = tuple[HealthLevel, str | Sequence[str] | None]
CheckFn = Callable[[], CheckOutcome]


@attrs.frozen
class CheckResult:
    """The outcome of one named check."""

    name: str
    level: HealthLevel
    reasons: tuple[str, ...] = ()

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
            logger("health %s -> %s%s", was, level.value, _reasons_suffix(reasons))
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


def _reasons_suffix(reasons: Sequence[str]) -> str:
    return ": " + "; ".join(reasons) if reasons else ""


# -- the supervision tree -------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The systemd watchdog
# ---------------------------------------------------------------------------------------------


class WatchdogNotifier(Protocol):
    """What :func:`run_watchdog` needs from :class:`daemon.notify.Notifier`."""

    @property
    def watchdog_interval_s(self) -> float | None: ...

    def watchdog(self) -> bool: ...

    def status(self, text: str) -> bool: ...


@attrs.define
class WatchdogStats:
    """Counters of :func:`run_watchdog` (pass one in to read them)."""

    pings_sent: int = 0
    pings_failed: int = 0
    pings_suppressed: int = 0
    status_sent: int = 0
    suppressing: bool = False


def _next_deadline(previous: float, interval_s: float, now: float) -> float:
    """Drift-free schedule; after a late wake-up, restart the schedule from now."""
    deadline = previous + interval_s
    return deadline if deadline > now else now + interval_s


async def run_watchdog(
    notifier: WatchdogNotifier,
    health: HealthModel,
    *,
    interval_s: float | None = None,
    status_fn: Callable[[], str] | None = None,
    status_interval_s: float | Callable[[], float] = 5.0,
    stats: WatchdogStats | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed systemd's watchdog from the event loop, only while not unhealthy.

    When the notifier's watchdog is enabled, every ``interval_s`` (default and
    maximum: ``notifier.watchdog_interval_s``, i.e. half of ``WATCHDOG_USEC``)
    this evaluates ``health`` and sends ``WATCHDOG=1`` unless the level is
    unhealthy. Pings are sent from this task, so a blocked loop stops them too.
    Suppression and resumption are logged once per transition, with reasons.

    With ``status_fn``, ``STATUS=<status_fn()>`` is sent every
    ``status_interval_s``. Both schedules start immediately. Runs forever (idle
    when there is nothing to do, so a supervisor does not see it exit).

    Args:
        notifier: the sd_notify sender.
        health: the model to evaluate before each ping.
        interval_s: ping more often than ``watchdog_interval_s``.
        status_fn: the one-line status text.
        status_interval_s: how often to send the status; a callable is read
            again for every period, so a reloaded setting applies at once.
        stats: counters to update (``pings_sent``, ``pings_suppressed``, …).
        task_status: reports ready once the schedules are set up.
    """
    counters = stats if stats is not None else WatchdogStats()
    ping_interval_s = notifier.watchdog_interval_s
    if ping_interval_s is not None and interval_s is not None:
        if interval_s > ping_interval_s:
            log.warning(
                "watchdog interval %.3f s is longer than WATCHDOG_USEC/2 (%.3f s); "
                "using the latter",
                interval_s,
                ping_interval_s,
            )
        ping_interval_s = min(interval_s, ping_interval_s)
    def status_period_s() -> float:
        return status_interval_s() if callable(status_interval_s) else status_interval_s

    if status_fn is not None and status_period_s() <= 0:
        raise ValueError(f"status_interval_s must be positive, got {status_period_s()}")
    if ping_interval_s is None and status_fn is None:
        log.info("systemd watchdog not enabled and no status to send; watchdog task idle")
        task_status.started()
        await trio.sleep_forever()

    now = trio.current_time()
    next_ping = now if ping_interval_s is not None else math.inf
    next_status = now if status_fn is not None else math.inf
    suppressed_in_episode = 0
    status_failing = False
    task_status.started()
    while True:
        await trio.sleep_until(min(next_ping, next_status))
        now = trio.current_time()
        if ping_interval_s is not None and now >= next_ping:
            report = health.evaluate()
            if report.level is HealthLevel.UNHEALTHY:
                counters.pings_suppressed += 1
                suppressed_in_episode += 1
                if not counters.suppressing:
                    counters.suppressing = True
                    log.warning(
                        "health is unhealthy: suppressing systemd watchdog pings, systemd "
                        "will restart the service unless health recovers%s",
                        _reasons_suffix(report.reasons),
                    )
            else:
                if counters.suppressing:
                    counters.suppressing = False
                    log.warning(
                        "health is %s again: resuming systemd watchdog pings after %d suppressed",
                        report.level.value,
                        suppressed_in_episode,
                    )
                    suppressed_in_episode = 0
                if notifier.watchdog():
                    counters.pings_sent += 1
                else:
                    counters.pings_failed += 1
            next_ping = _next_deadline(next_ping, ping_interval_s, now)
        if status_fn is not None and now >= next_status:
            try:
                text = status_fn()
            except Exception:
                if not status_failing:
                    status_failing = True
                    log.exception("status_fn failed; STATUS= not updated")
            else:
                status_failing = False
                if notifier.status(text):
                    counters.status_sent += 1
            next_status = _next_deadline(next_status, status_period_s(), now)
