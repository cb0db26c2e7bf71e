"""Rate limiters: a token bucket and a multi-window sliding-log limiter.

Both share one waiting discipline, which is the part that is easy to get wrong:

* **FIFO fairness.** Waiters are served strictly in arrival order. A heavy
  request at the head is not overtaken by light ones behind it (otherwise a
  weight-50 depth query could starve forever behind weight-1 calls), and
  :meth:`try_acquire` fails while anyone is queued rather than jumping the line.
* **Cancellation safety.** Units are taken in the same step that returns from
  ``acquire``, with no checkpoint in between; a waiter that is cancelled (by a
  ``fail_after`` or a shutdown) has taken nothing and its departure wakes the
  next waiter at once, so it never blocks anyone.
* **Freezing.** A ``429``/``418`` with ``Retry-After`` means *stop*: every
  limiter can be frozen until an instant (:meth:`freeze_until`), which holds
  all acquisitions — the cure for retry storms (docs/ARCHITECTURE.md §12).

Times are :func:`trio.current_time` seconds, so everything runs under a
virtual clock in tests. The arithmetic lives in pure cores
(:class:`TokenBucketCore`, :class:`SlidingWindowCore`) that take ``now`` as an
argument; the Trio classes are thin shells around them.

Acquiring is not a lease: units are consumed, never returned. ``async with
limiter.acquiring(5):`` (and ``async with limiter:`` for one unit) is only a
convenient spelling of ``await limiter.acquire(5)`` for code that reads better
as a block. ``acquire`` itself is a plain coroutine function, so it works
everywhere Trio expects one (``nursery.start_soon(limiter.acquire, 5)``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
import trio

__all__ = [
    "LimiterStats",
    "SlidingWindowCore",
    "SlidingWindowLimiter",
    "TokenBucket",
    "TokenBucketCore",
    "Window",
]

log = logging.getLogger("tradingd.resilience.ratelimit")

C = TypeVar("C")

#: Tolerance on times (seconds): a virtual clock that jumps to a deadline may
#: land a rounding error short of it, and must not need a second jump.
TIME_EPS_S = 1e-9
#: Relative tolerance on units, for the same reason.
UNIT_EPS = 1e-9


@attrs.define
class LimiterStats:
    """Counters of one limiter; ``snapshot()`` is JSON-able.

    ``units`` is the weight admitted (for a multi-window cost, its largest
    per-window part); ``waited`` counts acquisitions that had to queue, and
    ``total_wait_s``/``max_wait_s`` their queueing time.
    """

    acquired: int = 0
    units: float = 0.0
    waited: int = 0
    total_wait_s: float = 0.0
    max_wait_s: float = 0.0
    try_rejected: int = 0
    cancelled: int = 0
    freezes: int = 0
    corrections: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the counters."""
        return attrs.asdict(self)


# --------------------------------------------------------------------------- cores


class TokenBucketCore:
    """Pure token-bucket arithmetic: ``rate_per_s`` refill up to ``capacity``.

    Over any interval of length ``t`` it admits at most ``capacity + rate * t``
    units. :meth:`freeze_until` empties the bucket and starts the refill at the
    given instant, so a limiter coming out of a ``Retry-After`` resumes at its
    steady rate instead of firing a full burst into a peer that just said stop.
    """

    __slots__ = ("capacity", "rate_per_s", "tokens", "updated_at")

    def __init__(
        self, rate_per_s: float, capacity: float, *, tokens: float | None = None, now: float = 0.0
    ) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be finite and > 0, got {rate_per_s}")
        if not (math.isfinite(capacity) and capacity > 0):
            raise ValueError(f"capacity must be finite and > 0, got {capacity}")
        initial = capacity if tokens is None else tokens
        if not 0 <= initial <= capacity:
            raise ValueError(f"initial tokens must be in [0, capacity], got {initial}")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = float(initial)
        self.updated_at = now

    def check_weight(self, weight: float) -> None:
        """Reject weights that could never be admitted."""
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be finite and > 0, got {weight}")
        if weight > self.capacity:
            raise ValueError(f"weight {weight} exceeds the bucket capacity {self.capacity}")

    def available(self, now: float) -> float:
        """Tokens available at ``now`` (0 while frozen)."""
        if now <= self.updated_at:
            return self.tokens
        return min(self.capacity, self.tokens + (now - self.updated_at) * self.rate_per_s)

    def ready_at(self, now: float, weight: float) -> float:
        """The earliest instant >= ``now`` at which ``weight`` can be taken."""
        start = max(now, self.updated_at)
        tokens = self.available(start)
        if tokens >= weight - UNIT_EPS * max(1.0, weight):
            return start
        return start + (weight - tokens) / self.rate_per_s

    def take(self, now: float, weight: float) -> None:
        """Consume ``weight`` at ``now`` (the caller checked :meth:`ready_at`)."""
        if now > self.updated_at:
            self.tokens = self.available(now)
            self.updated_at = now
        self.tokens = max(0.0, self.tokens - weight)

    def freeze_until(self, instant: float) -> None:
        """Empty the bucket; refill starts at ``instant``."""
        self.tokens = 0.0
        self.updated_at = max(self.updated_at, instant)


@attrs.frozen
class Window:
    """``limit`` units per sliding ``period_s``, named for costs and corrections."""

    name: str
    limit: float
    period_s: float

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise ValueError("a window needs a name")
        if not (math.isfinite(self.limit) and self.limit > 0):
            raise ValueError(f"window {self.name!r}: limit must be finite and > 0")
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError(f"window {self.name!r}: period_s must be finite and > 0")


class _WindowLog:
    """The admissions of one window: ``[time, units]`` entries, oldest first."""

    __slots__ = ("entries", "used", "window")

    def __init__(self, window: Window) -> None:
        self.window = window
        self.entries: deque[list[float]] = deque()
        self.used = 0.0

    def prune(self, now: float) -> None:
        period = self.window.period_s
        entries = self.entries
        while entries and entries[0][0] + period <= now + TIME_EPS_S:
            self.used -= entries.popleft()[1]
        if not entries:
            self.used = 0.0

    def ready_at(self, now: float, units: float) -> float:
        limit = self.window.limit
        eps = UNIT_EPS * max(1.0, limit)
        if self.used + units <= limit + eps:
            return now
        excess = self.used + units - limit
        freed = 0.0
        for at, amount in self.entries:
            freed += amount
            if freed >= excess - eps:
                return max(now, at + self.window.period_s)
        return now  # pragma: no cover - unreachable: units <= limit was checked

    def add(self, now: float, units: float) -> None:
        if self.entries and self.entries[-1][0] == now:
            self.entries[-1][1] += units
        else:
            self.entries.append([now, units])
        self.used += units

    def drop_oldest(self, units: float) -> None:
        while units > 0 and self.entries:
            head = self.entries[0]
            if head[1] <= units:
                units -= head[1]
                self.used -= head[1]
                self.entries.popleft()
            else:
                head[1] -= units
                self.used -= units
                units = 0.0
        if not self.entries:
            self.used = 0.0


class SlidingWindowCore:
    """Pure sliding-log arithmetic for several windows at once.

    A unit admitted at ``t`` counts against a window during ``[t, t + period_s)``.
    An admission needs room in *every* window it costs something in, so no
    interval of length ``period_s`` ever holds more than ``limit`` units of
    that window. Memory is one entry per distinct admission instant still
    inside the window.
    """

    __slots__ = ("_logs",)

    def __init__(self, windows: Sequence[Window]) -> None:
        if not windows:
            raise ValueError("a sliding-window limiter needs at least one window")
        names = [w.name for w in windows]
        if len(set(names)) != len(names):
            raise ValueError(f"window names must be unique, got {names}")
        self._logs = {w.name: _WindowLog(w) for w in windows}

    @property
    def windows(self) -> tuple[Window, ...]:
        """The windows, in definition order."""
        return tuple(log.window for log in self._logs.values())

    def cost_of(self, weight: float | Mapping[str, float]) -> dict[str, float]:
        """Normalise a weight: a number costs that much in every window."""
        if isinstance(weight, Mapping):
            unknown = set(weight) - set(self._logs)
            if unknown:
                raise ValueError(f"unknown window(s) {sorted(unknown)}; known: {list(self._logs)}")
            cost = {name: float(units) for name, units in weight.items() if units != 0}
        else:
            cost = {name: float(weight) for name in self._logs}
        if not cost:
            raise ValueError("a cost must be > 0 in at least one window")
        for name, units in cost.items():
            limit = self._logs[name].window.limit
            if not (math.isfinite(units) and units > 0):
                raise ValueError(f"cost in window {name!r} must be finite and > 0, got {units}")
            if units > limit:
                raise ValueError(f"cost {units} exceeds the limit {limit} of window {name!r}")
        return cost

    def ready_at(self, now: float, cost: Mapping[str, float]) -> float:
        """The earliest instant >= ``now`` at which ``cost`` fits every window."""
        ready = now
        for name, units in cost.items():
            window_log = self._logs[name]
            window_log.prune(now)
            ready = max(ready, window_log.ready_at(now, units))
        return ready

    def take(self, now: float, cost: Mapping[str, float]) -> None:
        """Record an admission of ``cost`` at ``now``."""
        for name, units in cost.items():
            self._logs[name].add(now, units)

    def used(self, name: str, now: float) -> float:
        """Units counted in window ``name`` at ``now``."""
        window_log = self._logs[name]
        window_log.prune(now)
        return window_log.used

    def observe_usage(
        self, name: str, used: float, now: float, *, allow_decrease: bool = False
    ) -> float:
        """Align window ``name`` with a peer's report of ``used`` units.

        A higher report (someone else shares the budget, or calls were not
        counted) adds the difference as an admission at ``now``. A lower one
        is ignored unless ``allow_decrease``: the peer's answer never includes
        calls still in flight, so it is normally *behind* our own count.

        Returns:
            The correction applied (positive, negative or zero).
        """
        if name not in self._logs:
            raise ValueError(f"unknown window {name!r}; known: {list(self._logs)}")
        if not (math.isfinite(used) and used >= 0):
            raise ValueError(f"used must be finite and >= 0, got {used}")
        window_log = self._logs[name]
        window_log.prune(now)
        delta = used - window_log.used
        if delta > 0:
            window_log.add(now, delta)
            return delta
        if delta < 0 and allow_decrease:
            window_log.drop_oldest(-delta)
            return delta
        return 0.0


# --------------------------------------------------------------------------- shells


class _Waiter:
    __slots__ = ("done", "wake")

    def __init__(self) -> None:
        self.wake = trio.Event()
        self.done = False


class _Acquiring(Generic[C]):
    """Returned by ``acquiring()``: takes the units on entry, nothing on exit."""

    __slots__ = ("_cost", "_limiter", "_units")

    def __init__(self, limiter: _FifoLimiter[C], cost: C, units: float) -> None:
        self._limiter = limiter
        self._cost = cost
        self._units = units

    async def __aenter__(self) -> None:
        await self._limiter._acquire(self._cost, self._units)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class _FifoLimiter(Generic[C]):
    """The FIFO, cancellation-safe, freezable waiting shell over a core."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = LimiterStats()
        self._waiters: deque[_Waiter] = deque()
        self._frozen_until = -math.inf

    # Subclasses provide the arithmetic.
    def _cost(self, weight: Any) -> tuple[C, float]:
        raise NotImplementedError

    def _core_ready_at(self, now: float, cost: C) -> float:
        raise NotImplementedError

    def _core_take(self, now: float, cost: C) -> None:
        raise NotImplementedError

    def _core_freeze(self, instant: float) -> None:
        return None

    def _core_unfreeze(self, now: float) -> None:
        return None

    def _ready_at(self, now: float, cost: C) -> float:
        return max(self._core_ready_at(now, cost), self._frozen_until)

    def _admit(self, now: float, cost: C, units: float) -> None:
        self._core_take(now, cost)
        self.stats.acquired += 1
        self.stats.units += units

    def _kick_head(self) -> None:
        if self._waiters:
            self._waiters[0].wake.set()

    async def _acquire(self, cost: C, units: float) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        now = trio.current_time()
        if not self._waiters and self._ready_at(now, cost) <= now:
            self._admit(now, cost, units)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter()
        self._waiters.append(waiter)
        queued_at = now
        try:
            while True:
                waiter.wake = trio.Event()
                if self._waiters[0] is waiter:
                    now = trio.current_time()
                    ready = self._ready_at(now, cost)
                    if ready <= now:
                        # Take and leave in one step: no checkpoint after this.
                        self._admit(now, cost, units)
                        self._waiters.popleft()
                        waiter.done = True
                        waited = now - queued_at
                        self.stats.waited += 1
                        self.stats.total_wait_s += waited
                        self.stats.max_wait_s = max(self.stats.max_wait_s, waited)
                        return
                    with trio.move_on_at(ready):
                        await waiter.wake.wait()
                else:
                    await waiter.wake.wait()
        finally:
            if waiter.done:
                self._kick_head()
            else:
                self.stats.cancelled += 1
                was_head = bool(self._waiters) and self._waiters[0] is waiter
                self._waiters.remove(waiter)
                if was_head:
                    self._kick_head()

    def _acquiring(self, weight: Any) -> _Acquiring[C]:
        cost, units = self._cost(weight)
        return _Acquiring(self, cost, units)

    def _try_acquire(self, weight: Any) -> bool:
        """Take ``weight`` units if that is possible right now, without waiting.

        Fails while other tasks are queued (it never jumps the line) and while
        frozen. Synchronous on purpose: it never blocks, so it needs no
        ``await``.
        """
        cost, units = self._cost(weight)
        now = trio.current_time()
        if self._waiters or self._ready_at(now, cost) > now:
            self.stats.try_rejected += 1
            return False
        self._admit(now, cost, units)
        return True

    async def __aenter__(self) -> None:
        """``async with limiter:`` acquires one unit."""
        cost, units = self._cost(1)
        await self._acquire(cost, units)

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    @property
    def waiting(self) -> int:
        """Tasks currently queued."""
        return len(self._waiters)

    @property
    def frozen_until(self) -> float | None:
        """The instant (``trio.current_time()`` scale) a freeze ends, or None."""
        return self._frozen_until if math.isfinite(self._frozen_until) else None

    def freeze_until(self, instant: float) -> None:
        """Hold every acquisition until ``instant`` (``trio.current_time()`` scale).

        Freezes only extend: a shorter freeze than the current one is ignored,
        so a late answer cannot cut short a wait a peer demanded.
        """
        if not math.isfinite(instant):
            raise ValueError(f"freeze instant must be finite, got {instant}")
        self.stats.freezes += 1
        if instant > self._frozen_until:
            self._frozen_until = instant
            self._core_freeze(instant)
            log.warning("%s: frozen for %.3fs", self.name, max(0.0, instant - trio.current_time()))
        self._kick_head()

    def freeze_for(self, delay_s: float) -> None:
        """Hold every acquisition for ``delay_s`` from now (a ``Retry-After``)."""
        self.freeze_until(trio.current_time() + delay_s)

    def unfreeze(self) -> None:
        """Lift a freeze early (operator action)."""
        self._frozen_until = -math.inf
        self._core_unfreeze(trio.current_time())
        self._kick_head()

    def _base_snapshot(self) -> dict[str, Any]:
        now = trio.current_time()
        frozen_for = (
            max(0.0, self._frozen_until - now) if math.isfinite(self._frozen_until) else 0.0
        )
        return {"name": self.name, "waiting": len(self._waiters), "frozen_for_s": frozen_for}


class TokenBucket(_FifoLimiter[float]):
    """A token bucket: ``rate_per_s`` steady rate, bursts up to ``capacity``.

    Example::

        orders = TokenBucket(rate_per_s=10, capacity=20, name="orders")
        async with orders:                 # one unit
            ...
        await orders.acquire(5)            # weighted
        async with orders.acquiring(5):    # the same, as a block
            ...
        if orders.try_acquire():           # never waits
            ...

    Args:
        rate_per_s: Refill rate in units per second.
        capacity: Burst size; also the largest admissible weight.
        initial: Units available at creation (default: a full bucket).
        name: Names the limiter in logs and snapshots.
    """

    def __init__(
        self,
        rate_per_s: float,
        capacity: float,
        *,
        initial: float | None = None,
        name: str = "token_bucket",
    ) -> None:
        super().__init__(name)
        try:
            now = trio.current_time()
        except RuntimeError:
            now = 0.0  # built outside Trio: refill counts from the first use
            self._unanchored = True
        else:
            self._unanchored = False
        self.core = TokenBucketCore(rate_per_s, capacity, tokens=initial, now=now)

    def _cost(self, weight: Any) -> tuple[float, float]:
        value = float(weight)
        self.core.check_weight(value)
        return value, value

    def _anchor(self, now: float) -> None:
        if self._unanchored:
            self._unanchored = False
            self.core.updated_at = now

    def _core_ready_at(self, now: float, cost: float) -> float:
        self._anchor(now)
        return self.core.ready_at(now, cost)

    def _core_take(self, now: float, cost: float) -> None:
        self.core.take(now, cost)

    def _core_freeze(self, instant: float) -> None:
        self._anchor(trio.current_time())
        self.core.freeze_until(instant)

    def _core_unfreeze(self, now: float) -> None:
        self.core.updated_at = min(self.core.updated_at, now)

    async def acquire(self, weight: float = 1) -> None:
        """Wait (FIFO) until ``weight`` tokens are available, then take them.

        Raises:
            ValueError: ``weight`` is <= 0 or above the capacity (it could
                never be admitted).
        """
        cost, units = self._cost(weight)
        await self._acquire(cost, units)

    def acquiring(self, weight: float = 1) -> _Acquiring[float]:
        """``async with bucket.acquiring(5):`` — :meth:`acquire` as a block."""
        return self._acquiring(weight)

    def try_acquire(self, weight: float = 1) -> bool:
        """Take ``weight`` tokens now if available and nobody is queued.

        Synchronous on purpose: it never blocks, so it needs no ``await``.
        """
        return self._try_acquire(weight)

    @property
    def rate_per_s(self) -> float:
        """Refill rate in units per second."""
        return self.core.rate_per_s

    @property
    def capacity(self) -> float:
        """Burst size."""
        return self.core.capacity

    def available(self) -> float:
        """Units available now."""
        now = trio.current_time()
        self._anchor(now)
        return self.core.available(now)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state and counters."""
        return {
            **self._base_snapshot(),
            "kind": "token_bucket",
            "rate_per_s": self.core.rate_per_s,
            "capacity": self.core.capacity,
            "available": self.available(),
            "stats": self.stats.snapshot(),
        }


class SlidingWindowLimiter(_FifoLimiter[dict[str, float]]):
    """Several sliding windows enforced together (exchange-style limits).

    Example — Binance spot: 6000 request weight per minute *and* 50 orders
    per 10 s::

        limits = SlidingWindowLimiter(
            [Window("weight_1m", 6000, 60.0), Window("orders_10s", 50, 10.0)],
            name="binance",
        )
        await limits.acquire({"weight_1m": 1, "orders_10s": 1})   # place an order
        await limits.acquire({"weight_1m": 20})                   # depth snapshot
        limits.observe_usage("weight_1m", int(resp.headers["x-mbx-used-weight-1m"]))
        limits.freeze_for(retry_after_s)                          # after a 429

    A plain number as weight costs that much in every window.
    """

    def __init__(self, windows: Sequence[Window], *, name: str = "sliding_window") -> None:
        super().__init__(name)
        self.core = SlidingWindowCore(windows)

    def _cost(self, weight: Any) -> tuple[dict[str, float], float]:
        cost = self.core.cost_of(weight)
        return cost, max(cost.values())

    def _core_ready_at(self, now: float, cost: dict[str, float]) -> float:
        return self.core.ready_at(now, cost)

    def _core_take(self, now: float, cost: dict[str, float]) -> None:
        self.core.take(now, cost)

    async def acquire(self, weight: float | Mapping[str, float] = 1) -> None:
        """Wait (FIFO) until ``weight`` fits every window it costs in, then take it.

        Raises:
            ValueError: unknown window, or a cost <= 0 or above a window's
                limit (it could never be admitted).
        """
        cost, units = self._cost(weight)
        await self._acquire(cost, units)

    def acquiring(self, weight: float | Mapping[str, float] = 1) -> _Acquiring[dict[str, float]]:
        """``async with limits.acquiring({...}):`` — :meth:`acquire` as a block."""
        return self._acquiring(weight)

    def try_acquire(self, weight: float | Mapping[str, float] = 1) -> bool:
        """Take ``weight`` now if it fits every window and nobody is queued.

        Synchronous on purpose: it never blocks, so it needs no ``await``.
        """
        return self._try_acquire(weight)

    def used(self, window: str) -> float:
        """Units counted in ``window`` now."""
        return self.core.used(window, trio.current_time())

    def observe_usage(self, window: str, used: float, *, allow_decrease: bool = False) -> float:
        """Correct ``window`` from a peer's report of usage (a response header).

        See :meth:`SlidingWindowCore.observe_usage`; returns the correction.
        """
        delta = self.core.observe_usage(
            window, used, trio.current_time(), allow_decrease=allow_decrease
        )
        if delta:
            self.stats.corrections += 1
            log.debug("%s: window %s corrected by %+g units", self.name, window, delta)
            self._kick_head()
        return delta

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state (usage per window) and counters."""
        now = trio.current_time()
        return {
            **self._base_snapshot(),
            "kind": "sliding_window",
            "windows": {
                w.name: {
                    "limit": w.limit,
                    "period_s": w.period_s,
                    "used": self.core.used(w.name, now),
                }
                for w in self.core.windows
            },
            "stats": self.stats.snapshot(),
        }
