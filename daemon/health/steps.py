"""Slow task steps: which task held the event loop, and for how long.

A task step is the run of synchronous code between two checkpoints; while it
runs, nothing else on the loop does. :class:`SlowStepInstrument` times every
step, so a block can be *blamed* on a task by name. While the loop is blocked
nothing in it can log, so a separate OS thread, :class:`BlockedLoopReporter`,
reads the instrument's current step and logs "event loop blocked for X s in
task NAME" as it happens.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

import attrs
import trio

from daemon.health.lag import MS_PER_S

__all__ = ["BlockedLoopReporter", "SlowStep", "SlowStepInstrument", "StepSource"]

log = logging.getLogger("tradingd.health")

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
        self._threshold_s = value / MS_PER_S

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
            SlowStep(task=name, duration_ms=duration_s * MS_PER_S, at=at)
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
