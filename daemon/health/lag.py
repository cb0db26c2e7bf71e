"""Loop lag: how late the event loop wakes a sleeping task.

:class:`LagProbe` measures event-loop lag as sleep drift. A healthy loop wakes
a sleeping task within a millisecond; a loop starved by a CPU-bound or
blocking call wakes it late by exactly the time it was starved. The samples of
the last window are summarised as :class:`LagStats` (nearest-rank
percentiles, :func:`nearest_rank`), which :class:`daemon.health.HealthModel`
judges and ``/status`` and ``/metrics`` show.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence

import attrs
import trio

__all__ = ["MS_PER_S", "LagProbe", "LagStats", "nearest_rank"]

#: Milliseconds per second (the stats are in milliseconds, the clocks in seconds).
MS_PER_S = 1000.0


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
            last_ms=samples[-1][1] * MS_PER_S,
            p50_ms=nearest_rank(drifts, 50) * MS_PER_S,
            p99_ms=nearest_rank(drifts, 99) * MS_PER_S,
            max_ms=drifts[-1] * MS_PER_S,
            samples=len(drifts),
        )
