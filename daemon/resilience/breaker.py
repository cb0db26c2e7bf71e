"""Circuit breaker: stop calling a downstream that keeps failing.

States and transitions (the table is :data:`TRANSITIONS`; anything else is a bug
and raises)::

             failures reach the threshold               open_timeout_s elapsed
    CLOSED ─────────────────────────────────► OPEN ─────────────────────────► HALF_OPEN
      ▲  ▲                                    ▲  │                               │  │
      │  └──────────── reset() ───────────────┼──┘                               │  │
      │                                       └──── a trial call fails ──────────┘  │
      └──────────── success_threshold trial calls succeed (or reset()) ─────────────┘

* **CLOSED** — calls go through. It opens after ``failure_threshold``
  consecutive counted failures, and/or when at least ``min_calls`` calls in the
  last ``window_s`` seconds failed in a ratio >= ``failure_ratio``.
* **OPEN** — calls are rejected at once with
  :class:`~daemon.errors.CircuitRejectedError` (a
  :class:`~daemon.errors.CircuitOpenError`), which says how long remains.
  After ``open_timeout_s`` the next look at the breaker finds it HALF_OPEN.
  :meth:`CircuitBreaker.force_open` keeps it open until :meth:`~CircuitBreaker.reset`.
* **HALF_OPEN** — at most ``half_open_max_calls`` trial calls run at a time
  (others are rejected); ``success_threshold`` successes close the breaker, one
  counted failure reopens it for another ``open_timeout_s``.

Which exceptions count is a filter (``failure_on``/``ignore`` or an
``is_failure`` predicate). An exception that does not count is recorded as a
*success* — the downstream answered, e.g. a definitive 400 reject proves it is
up. Cancellation counts as nothing. A call admitted before a state change does
not affect the new state when it finishes (generations), so a slow call from
the CLOSED era cannot close a breaker that has since opened.

Transitions are synchronous and the state-change callback is a plain function
called at the transition; to do async work from it, hand the
:class:`BreakerTransition` to a task (``send_channel.send_nowait``). The clock
is injectable (``trio.current_time`` by default), so the state machine also
runs outside Trio, in property tests.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import attrs
import trio

from daemon.errors import CircuitRejectedError, PermanentError
from daemon.resilience.validators import finite_positive, optional_positive_int, positive_int, ratio

__all__ = [
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerPermit",
    "BreakerState",
    "BreakerStats",
    "BreakerTransition",
    "CircuitBreaker",
    "InvalidBreakerTransition",
]

log = logging.getLogger("tradingd.resilience.breaker")

P = ParamSpec("P")
T = TypeVar("T")


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Legal transitions. CLOSED never goes to HALF_OPEN directly.
TRANSITIONS: dict[BreakerState, frozenset[BreakerState]] = {
    BreakerState.CLOSED: frozenset({BreakerState.OPEN}),
    BreakerState.OPEN: frozenset({BreakerState.HALF_OPEN, BreakerState.CLOSED}),
    BreakerState.HALF_OPEN: frozenset({BreakerState.OPEN, BreakerState.CLOSED}),
}


class InvalidBreakerTransition(RuntimeError):
    """An illegal state transition was attempted (a bug in the breaker)."""


@attrs.frozen(kw_only=True)
class BreakerConfig:
    """When a breaker opens, how long it stays open, and how it probes.

    Attributes:
        failure_threshold: Consecutive counted failures that open a CLOSED
            breaker; ``None`` disables this trigger.
        failure_ratio: Failure ratio over the rolling window that opens it;
            ``None`` (default) disables this trigger.
        window_s: Length of the rolling window for ``failure_ratio``.
        min_calls: Calls needed in the window before the ratio is judged.
        open_timeout_s: Time spent OPEN before trial calls are allowed.
        half_open_max_calls: Trial calls allowed in flight at once.
        success_threshold: Trial successes that close the breaker.
        failure_on: Exception types that count as failures…
        ignore: …except these (default: ``PermanentError``, a definitive
            answer from a live downstream).
        is_failure: A predicate replacing ``failure_on``/``ignore``.
    """

    failure_threshold: int | None = attrs.field(default=5, validator=optional_positive_int)
    failure_ratio: float | None = attrs.field(default=None, validator=ratio)
    window_s: float = attrs.field(default=60.0, validator=finite_positive)
    min_calls: int = attrs.field(default=10, validator=positive_int)
    open_timeout_s: float = attrs.field(default=30.0, validator=finite_positive)
    half_open_max_calls: int = attrs.field(default=1, validator=positive_int)
    success_threshold: int = attrs.field(default=1, validator=positive_int)
    failure_on: tuple[type[BaseException], ...] = (Exception,)
    ignore: tuple[type[BaseException], ...] = (PermanentError,)
    is_failure: Callable[[BaseException], bool] | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.failure_threshold is None and self.failure_ratio is None:
            raise ValueError("set failure_threshold, failure_ratio, or both")

    def counts(self, error: BaseException) -> bool:
        """Whether ``error`` counts as a failure of the downstream."""
        if self.is_failure is not None:
            return self.is_failure(error)
        return isinstance(error, self.failure_on) and not isinstance(error, self.ignore)


@attrs.frozen
class BreakerTransition:
    """One state change, as passed to ``on_state_change`` and logged."""

    breaker: str
    old: BreakerState
    new: BreakerState
    at: float
    reason: str


@attrs.define
class BreakerStats:
    """Counters of one breaker; ``snapshot()`` is JSON-able.

    ``successes``/``failures``/``neutral`` count finished calls (``neutral``:
    cancelled or released without a verdict); ``stale`` counts finished
    calls admitted before the last state change, which did not affect it.
    """

    admitted: int = 0
    rejected: int = 0
    successes: int = 0
    failures: int = 0
    neutral: int = 0
    stale: int = 0
    opened: int = 0
    half_opened: int = 0
    closed: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the counters."""
        return attrs.asdict(self)


class BreakerPermit:
    """Permission for one call; report how it ended exactly once.

    Returned by :meth:`CircuitBreaker.admit` for code that cannot use
    :meth:`CircuitBreaker.protect` (e.g. a failure that is a returned value).
    """

    __slots__ = ("_breaker", "_done", "generation", "trial")

    def __init__(self, breaker: CircuitBreaker, generation: int, trial: bool) -> None:
        self._breaker = breaker
        self.generation = generation
        self.trial = trial
        self._done = False

    def _finish(self, kind: str) -> None:
        if self._done:
            raise RuntimeError("a breaker permit can be settled only once")
        self._done = True
        self._breaker._settle(self, kind)

    def success(self) -> None:
        """The call succeeded (the downstream answered)."""
        self._finish("success")

    def failure(self) -> None:
        """The call failed in a way that counts against the downstream."""
        self._finish("failure")

    def release(self) -> None:
        """The call ended without a verdict (cancelled, not attempted)."""
        self._finish("neutral")

    def record(self, error: BaseException | None) -> None:
        """Settle from how the call ended: ``None`` for a return, else its exception."""
        if error is None:
            self.success()
        elif not isinstance(error, Exception):
            self.release()
        elif self._breaker.config.counts(error):
            self.failure()
        else:
            self.success()


class _Guard:
    """``with``/``async with`` wrapper from :meth:`CircuitBreaker.protect`."""

    __slots__ = ("_breaker", "_permit")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._permit: BreakerPermit | None = None

    def __enter__(self) -> BreakerPermit:
        if self._permit is not None:
            raise RuntimeError("a protect() guard can be entered only once")
        self._permit = self._breaker.admit()
        return self._permit

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        permit = self._permit
        if permit is not None and not permit._done:
            permit.record(exc)

    async def __aenter__(self) -> BreakerPermit:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)


class CircuitBreaker:
    """A circuit breaker guarding one downstream (see the module docstring).

    Example::

        breaker = CircuitBreaker("binance.rest", BreakerConfig(failure_threshold=5))
        async with breaker.protect():     # raises CircuitRejectedError when open
            response = await client.get(url)
        result = await breaker.call(fetch, url)

    Args:
        name: Names the breaker in logs, errors and snapshots.
        config: Thresholds and timings.
        on_state_change: Called synchronously on every transition; an exception
            from it is logged and swallowed, so a broken observer cannot wedge
            the breaker.
        clock: Time source in seconds (``trio.current_time`` by default).
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        on_state_change: Callable[[BreakerTransition], object] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.name = name
        self.config = config if config is not None else BreakerConfig()
        self.on_state_change = on_state_change
        self.stats = BreakerStats()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._forced = False
        self._opened_at = -math.inf
        self._changed_at: float | None = None
        self._consecutive_failures = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._window_failures = 0
        self._trials_in_flight = 0
        self._trial_successes = 0

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> BreakerState:
        """The current state (an elapsed open timeout is applied on reading)."""
        self._refresh(self._clock())
        return self._state

    @property
    def forced_open(self) -> bool:
        """True while held open by :meth:`force_open`."""
        return self._forced

    @property
    def consecutive_failures(self) -> int:
        """Counted failures in a row while CLOSED."""
        return self._consecutive_failures

    def open_remaining_s(self) -> float | None:
        """Seconds until an OPEN breaker allows a trial (None: not open, or forced)."""
        self._refresh(self._clock())
        if self._state is not BreakerState.OPEN or self._forced:
            return None
        return max(0.0, self._opened_at + self.config.open_timeout_s - self._clock())

    def _refresh(self, now: float) -> None:
        if (
            self._state is BreakerState.OPEN
            and not self._forced
            and now >= self._opened_at + self.config.open_timeout_s
        ):
            self._transition(BreakerState.HALF_OPEN, now, "open timeout elapsed")

    def _transition(self, new: BreakerState, now: float, reason: str) -> None:
        old = self._state
        if new not in TRANSITIONS[old]:
            raise InvalidBreakerTransition(
                f"{self.name}: illegal transition {old.value} → {new.value}"
            )
        self._state = new
        self._generation += 1
        self._changed_at = now
        self._trials_in_flight = 0
        self._trial_successes = 0
        if new is BreakerState.OPEN:
            self._opened_at = now
            self.stats.opened += 1
            log.warning("circuit %s opened: %s", self.name, reason)
        elif new is BreakerState.HALF_OPEN:
            self.stats.half_opened += 1
            log.info("circuit %s half-open: %s", self.name, reason)
        else:
            self._forced = False
            self.stats.closed += 1
            log.info("circuit %s closed: %s", self.name, reason)
        self._consecutive_failures = 0
        self._window.clear()
        self._window_failures = 0
        callback = self.on_state_change
        if callback is not None:
            try:
                callback(BreakerTransition(self.name, old, new, now, reason))
            except Exception:
                log.exception("circuit %s: on_state_change callback failed", self.name)

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window_s
        window = self._window
        while window and window[0][0] <= horizon:
            _, failed = window.popleft()
            if failed:
                self._window_failures -= 1

    def _tripped(self) -> str | None:
        config = self.config
        threshold = config.failure_threshold
        if threshold is not None and self._consecutive_failures >= threshold:
            return f"{self._consecutive_failures} consecutive failures"
        ratio = config.failure_ratio
        calls = len(self._window)
        if (
            ratio is not None
            and calls >= config.min_calls
            and self._window_failures >= ratio * calls
        ):
            return f"{self._window_failures}/{calls} calls failed in {config.window_s}s"
        return None

    # --------------------------------------------------------------- calls

    def admit(self) -> BreakerPermit:
        """Ask to make one call.

        Raises:
            CircuitRejectedError: the breaker is OPEN, or HALF_OPEN with all
                trial slots taken. Never waits.
        """
        now = self._clock()
        self._refresh(now)
        state = self._state
        if state is BreakerState.CLOSED:
            self.stats.admitted += 1
            return BreakerPermit(self, self._generation, trial=False)
        if (
            state is BreakerState.HALF_OPEN
            and self._trials_in_flight < self.config.half_open_max_calls
        ):
            self._trials_in_flight += 1
            self.stats.admitted += 1
            return BreakerPermit(self, self._generation, trial=True)
        self.stats.rejected += 1
        if state is BreakerState.OPEN and not self._forced:
            retry_after_s: float | None = max(
                0.0, self._opened_at + self.config.open_timeout_s - now
            )
            detail = f"open, retry in {retry_after_s:.3f}s"
        elif state is BreakerState.OPEN:
            retry_after_s = None
            detail = "forced open"
        else:
            retry_after_s = None
            detail = f"half-open, {self._trials_in_flight} trial call(s) in flight"
        raise CircuitRejectedError(
            f"circuit {self.name} rejected the call ({detail})",
            breaker=self.name,
            state=state.value,
            retry_after_s=retry_after_s,
        )

    def _settle(self, permit: BreakerPermit, kind: str) -> None:
        stats = self.stats
        if kind == "success":
            stats.successes += 1
        elif kind == "failure":
            stats.failures += 1
        else:
            stats.neutral += 1
        if permit.generation != self._generation:
            stats.stale += 1
            return
        now = self._clock()
        state = self._state
        if permit.trial:
            self._trials_in_flight -= 1
        if kind == "neutral":
            return
        if state is BreakerState.HALF_OPEN:
            if kind == "failure":
                self._transition(BreakerState.OPEN, now, "trial call failed")
            else:
                self._trial_successes += 1
                if self._trial_successes >= self.config.success_threshold:
                    self._transition(
                        BreakerState.CLOSED, now, f"{self._trial_successes} trial call(s) succeeded"
                    )
            return
        if state is not BreakerState.CLOSED:  # pragma: no cover - OPEN has no current permits
            return
        failed = kind == "failure"
        self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
        if self.config.failure_ratio is not None:
            self._prune(now)
            self._window.append((now, failed))
            self._window_failures += failed
        if failed:
            reason = self._tripped()
            if reason is not None:
                self._transition(BreakerState.OPEN, now, reason)

    def protect(self) -> _Guard:
        """Guard one call: ``async with breaker.protect():`` (or plain ``with``).

        Entering raises :class:`~daemon.errors.CircuitRejectedError` when the
        breaker rejects; leaving records the outcome through the filter.
        """
        return _Guard(self)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        permit = self.admit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            permit.record(exc)
            raise
        permit.success()
        return result

    # ---------------------------------------------------------- operator

    def reset(self) -> None:
        """Close the breaker and clear its counters (operator action)."""
        self._forced = False
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED, self._clock(), "manual reset")
        else:
            self._consecutive_failures = 0
            self._window.clear()
            self._window_failures = 0

    def force_open(self) -> None:
        """Open the breaker and keep it open until :meth:`reset`."""
        self._forced = True
        if self._state is not BreakerState.OPEN:
            self._transition(BreakerState.OPEN, self._clock(), "forced open")

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state and counters."""
        state = self.state
        return {
            "name": self.name,
            "state": state.value,
            "forced_open": self._forced,
            "open_remaining_s": self.open_remaining_s(),
            "consecutive_failures": self._consecutive_failures,
            "window_calls": len(self._window),
            "window_failures": self._window_failures,
            "trials_in_flight": self._trials_in_flight,
            "stats": self.stats.snapshot(),
        }
