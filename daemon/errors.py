"""The exception tree of tradingd.

Every error the daemon raises on purpose is a :class:`TradingdError`. Library
errors (OSError from a socket, ``tomllib.TOMLDecodeError``, httpx2 errors, …)
are translated once, at the edge where they happen, with ``raise … from exc``.

::

    TradingdError
    ├── ConfigError                 the configuration is invalid (carries every problem)
    ├── SecretError                 a referenced secret cannot be resolved
    ├── SupervisionError
    │   ├── EscalationError         a supervisor exceeded its restart intensity
    │   ├── StartTimeoutError       a child did not report ready within its start deadline
    │   ├── ChildStartError         a child raised before reporting ready
    │   ├── PoolFullError           a dynamic pool is at its cap of live children
    │   ├── StaleHeartbeatError     a child missed its heartbeat (recorded failure)
    │   └── UnexpectedExitError     a permanent child returned (recorded failure)
    ├── ControlError                the control socket could not be reached or answered badly
    ├── TransientError              retrying may help (connect errors, 502/503/504, DB busy)
    │   └── RateLimitedError        told to wait (429/418/-1003/-1015); carries retry_after_s
    ├── AmbiguousOutcomeError       the request may have taken effect (timeout after send, 5xx on
    │                               an order, -1006/-1007): query, never resend blindly
    ├── PermanentError              retrying cannot help (4xx rejects, validation, decode errors)
    ├── CircuitOpenError            a circuit breaker is open; the call was not attempted
    │   └── CircuitRejectedError    rejected by a named breaker (carries name, state, retry_after_s)
    └── RetryExhaustedError         a bounded retry ran out of attempts or time; carries the last
                                    outcome and the run's statistics

Retryable and terminal errors are different classes, so a ``except`` clause
states a policy rather than inspecting messages.
"""

from __future__ import annotations

from collections.abc import Sequence


class TradingdError(Exception):
    """Base class of every error tradingd raises on purpose."""


class ConfigError(TradingdError):
    """The configuration is invalid.

    Raised by the loader with *every* problem found, not only the first, so an
    operator fixes a file in one pass. ``problems`` holds one line per problem,
    each naming the file, the dotted key path and (where known) the line.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid configuration")


class SecretError(TradingdError):
    """A referenced secret could not be resolved.

    The message names the *reference* (credential name, file path or variable
    name), never the secret's value.
    """


class SupervisionError(TradingdError):
    """Base class of errors raised by supervisors."""


class ControlError(TradingdError):
    """The daemon's control socket could not be reached or gave a bad answer."""


class TransientError(TradingdError):
    """A failure that a bounded retry with backoff may cure."""


class RateLimitedError(TransientError):
    """The peer asked us to slow down; wait ``retry_after_s`` before the next call."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AmbiguousOutcomeError(TradingdError):
    """The request may or may not have taken effect.

    Never retried automatically: the caller must find out (for orders: query the
    venue by client order id) before doing anything that could repeat the effect.
    """


class PermanentError(TradingdError):
    """A failure that no retry can cure (rejects, validation, decode errors)."""


class CircuitOpenError(TradingdError):
    """A circuit breaker is open; the call was rejected without being attempted."""


class ChildFailure:
    """One recorded failure of a supervised child (for escalation reports)."""

    __slots__ = ("at", "child", "error")

    def __init__(self, child: str, error: BaseException, at: float) -> None:
        self.child = child
        self.error = error
        self.at = at

    def __repr__(self) -> str:
        error = f"{type(self.error).__name__}: {self.error}"
        return f"ChildFailure({self.child!r}, {error}, at={self.at:.3f})"


class EscalationError(SupervisionError):
    """A supervisor exceeded its restart intensity and gave up.

    Raised to the supervisor's parent after all of its children were stopped in
    reverse start order. ``failures`` are the failures inside the intensity
    period that caused it (oldest first).
    """

    def __init__(self, supervisor: str, failures: Sequence[ChildFailure]) -> None:
        self.supervisor = supervisor
        self.failures: tuple[ChildFailure, ...] = tuple(failures)
        last = self.failures[-1] if self.failures else None
        detail = f"; last: {last.child}: {type(last.error).__name__}: {last.error}" if last else ""
        super().__init__(
            f"supervisor {supervisor!r} exceeded its restart intensity "
            f"({len(self.failures)} failures){detail}"
        )


class StartTimeoutError(SupervisionError):
    """A child did not call ``task_status.started()`` within its start deadline."""


class ChildStartError(SupervisionError):
    """A child failed before reporting ready."""


class PoolFullError(SupervisionError):
    """A dynamic pool already runs its maximum number of children."""


class StaleHeartbeatError(SupervisionError):
    """A child declared a heartbeat interval and missed it beyond its tolerance.

    Recorded as the failure of the child the supervisor cancelled and restarted.
    """


class UnexpectedExitError(SupervisionError):
    """A permanent child returned although it is meant to run until stopped.

    Recorded as the failure whose restart counts toward the intensity.
    """


class CircuitRejectedError(CircuitOpenError):
    """A :class:`~daemon.resilience.CircuitBreaker` rejected a call without attempting it.

    Raised immediately (no waiting) when the breaker is OPEN, or HALF_OPEN with
    all of its trial slots taken. ``state`` is the breaker's state name at the
    time (``"open"`` or ``"half_open"``); ``retry_after_s`` is how long until the
    breaker lets a trial call through, or ``None`` when that is unknown: forced
    open (only a manual reset closes it), or half-open with its trials in flight.
    """

    def __init__(
        self, message: str, *, breaker: str, state: str, retry_after_s: float | None
    ) -> None:
        super().__init__(message)
        self.breaker = breaker
        self.state = state
        self.retry_after_s = retry_after_s


class RetryExhaustedError(TradingdError):
    """A bounded retry gave up while the failure was still retryable.

    Raised by :class:`~daemon.resilience.RetryPolicy` when its attempt or
    elapsed-time budget runs out, or when a ``Retry-After`` asks for a wait that
    would not fit in what is left of the budget. It is deliberately *not* a
    :class:`TransientError`: an outer retry must not multiply the inner one's
    attempts (that is how retry storms start).

    The last outcome is kept: ``last_error`` (also the ``__cause__``) when the
    last attempt raised, ``last_result`` when it returned a value that the
    classifier wanted retried (e.g. an HTTP 503 response). ``reason`` is one of
    ``"attempts_exhausted"``, ``"elapsed_exhausted"`` and
    ``"retry_after_exceeds_budget"``; in the latter case ``retry_after_s`` is the
    wait the peer asked for, so the caller can freeze its rate limiter.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        attempts: int,
        elapsed_s: float,
        waited_s: float,
        last_error: BaseException | None = None,
        last_result: object = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.waited_s = waited_s
        self.last_error = last_error
        self.last_result = last_result
        self.retry_after_s = retry_after_s
