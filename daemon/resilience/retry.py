"""Bounded retries with backoff, jitter and an outcome classifier.

A :class:`RetryPolicy` is a frozen value: how many attempts, how much time in
total, how long to wait between attempts, and a *classifier* that judges each
outcome. It is always bounded twice — ``max_attempts`` and ``max_elapsed_s`` —
because an unbounded retry is a hang that looks like work (docs/ARCHITECTURE.md §12).

The classifier turns an :class:`~daemon.resilience.outcomes.Outcome` into a
:class:`Decision`:

==================  ===========================================================
verdict             what the policy does
==================  ===========================================================
``ACCEPT``          success: return the result
``RETRY``           transient: wait the backoff delay, try again
``RETRY_AFTER``     told to wait: wait ``delay_s`` (not the backoff); give up
                    at once if that wait does not fit in the remaining budget
``GIVE_UP``         retrying cannot help: hand the outcome back unchanged (the
                    exception is re-raised, a result is returned)
``AMBIGUOUS``       the call may have taken effect: raise
                    :class:`~daemon.errors.AmbiguousOutcomeError`; never retried,
                    the caller must find out first (orders query by client id)
==================  ===========================================================

When a retryable failure meets an exhausted budget the policy raises
:class:`~daemon.errors.RetryExhaustedError`, carrying the last outcome. The
default classifier, :func:`classify_by_taxonomy`, follows the exception tree of
:mod:`daemon.errors`; :class:`daemon.resilience.http.HttpClassifier` judges raw
httpx2 responses and errors.

Three ways to use a policy::

    policy = RetryPolicy(max_attempts=5, max_elapsed_s=30.0)

    @policy                                   # 1. decorator
    async def fetch() -> bytes: ...

    data = await policy.call(fetch_raw, url)  # 2. one call

    async for attempt in policy:              # 3. explicit loop
        with attempt:
            response = attempt.check(await client.get(url))

Time comes from :func:`trio.current_time`, so tests run under a virtual clock;
jitter comes from the policy's injectable :class:`random.Random`.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import math
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, ParamSpec, TypeVar

import attrs
import trio

from daemon.errors import (
    AmbiguousOutcomeError,
    CircuitOpenError,
    PermanentError,
    RateLimitedError,
    RetryExhaustedError,
    TransientError,
)
from daemon.resilience.outcomes import Outcome
from daemon.resilience.validators import finite_non_negative, finite_positive, positive_int

__all__ = [
    "Attempt",
    "Backoff",
    "Classifier",
    "Decision",
    "Jitter",
    "RetryEvent",
    "RetryHook",
    "RetryLoop",
    "RetryPolicy",
    "RetryStats",
    "Verdict",
    "classify_by_taxonomy",
    "retry",
    "retry_on_exceptions",
]

log = logging.getLogger("tradingd.resilience.retry")

P = ParamSpec("P")
T = TypeVar("T")

#: Give-up reasons recorded in :attr:`RetryStats.give_ups_by_reason`.
GIVE_UP_NOT_RETRYABLE = "not_retryable"
GIVE_UP_AMBIGUOUS = "ambiguous"
GIVE_UP_ATTEMPTS = "attempts_exhausted"
GIVE_UP_ELAPSED = "elapsed_exhausted"
GIVE_UP_RETRY_AFTER = "retry_after_exceeds_budget"

_REPR_LIMIT = 200


class Backoff(enum.Enum):
    """How the delay grows with the number of failed attempts ``n`` (1, 2, …)."""

    EXPONENTIAL = "exponential"  #: ``base * multiplier**(n-1)``: 1, 2, 4, 8 …
    LINEAR = "linear"  #: ``base * n``: 1, 2, 3, 4 …
    CONSTANT = "constant"  #: ``base``: 1, 1, 1 …


class Jitter(enum.Enum):
    """How randomness is applied to the capped backoff delay ``d``.

    Full jitter (the default) spreads clients that failed together over the
    whole interval, which is what prevents synchronized retry waves.
    """

    FULL = "full"  #: uniform in ``[0, d]``
    EQUAL = "equal"  #: ``d/2`` plus uniform in ``[0, d/2]``
    NONE = "none"  #: exactly ``d``


class Verdict(enum.Enum):
    """A classifier's judgement of one outcome (see the module docstring)."""

    ACCEPT = "accept"
    RETRY = "retry"
    RETRY_AFTER = "retry_after"
    GIVE_UP = "give_up"
    AMBIGUOUS = "ambiguous"


@attrs.frozen
class Decision:
    """A verdict plus a short machine-friendly ``reason`` (``"http_503"``).

    ``delay_s`` is only meaningful for ``RETRY_AFTER``: the wait the peer asked
    for, relative to now.
    """

    verdict: Verdict
    reason: str
    delay_s: float | None = None

    @classmethod
    def accept(cls, reason: str = "ok") -> Decision:
        """The outcome is a success."""
        return cls(Verdict.ACCEPT, reason)

    @classmethod
    def retry(cls, reason: str) -> Decision:
        """Transient failure: back off and retry."""
        return cls(Verdict.RETRY, reason)

    @classmethod
    def retry_after(cls, delay_s: float, reason: str) -> Decision:
        """Wait exactly ``delay_s`` (clamped at 0) before retrying."""
        return cls(Verdict.RETRY_AFTER, reason, max(0.0, delay_s))

    @classmethod
    def give_up(cls, reason: str) -> Decision:
        """Retrying cannot help; hand the outcome back."""
        return cls(Verdict.GIVE_UP, reason)

    @classmethod
    def ambiguous(cls, reason: str) -> Decision:
        """The call may have taken effect; the caller must find out."""
        return cls(Verdict.AMBIGUOUS, reason)


#: A classifier judges one outcome. It must be a pure function of the outcome
#: (and, for ``Retry-After`` dates, of a clock) so that policies stay testable.
Classifier = Callable[[Outcome[Any]], Decision]


def classify_by_taxonomy(outcome: Outcome[Any]) -> Decision:
    """The default classifier: follow the exception tree of :mod:`daemon.errors`.

    * a returned value → ``ACCEPT``;
    * :class:`~daemon.errors.RateLimitedError` → ``RETRY_AFTER`` its
      ``retry_after_s`` (plain ``RETRY`` when it carries none);
    * :class:`~daemon.errors.TransientError` → ``RETRY``;
    * :class:`~daemon.errors.AmbiguousOutcomeError` → ``AMBIGUOUS`` (re-raised as is);
    * everything else — :class:`~daemon.errors.PermanentError`,
      :class:`~daemon.errors.CircuitOpenError` (fail fast),
      :class:`~daemon.errors.RetryExhaustedError` (never multiply an inner
      retry), and unknown exceptions (bugs are not transient) → ``GIVE_UP``.
    """
    error = outcome.error
    if error is None:
        return Decision.accept()
    if isinstance(error, RateLimitedError):
        if error.retry_after_s is not None:
            return Decision.retry_after(error.retry_after_s, "rate_limited")
        return Decision.retry("rate_limited")
    if isinstance(error, TransientError):
        return Decision.retry("transient")
    if isinstance(error, AmbiguousOutcomeError):
        return Decision.ambiguous("ambiguous")
    if isinstance(error, PermanentError):
        return Decision.give_up("permanent")
    if isinstance(error, CircuitOpenError):
        return Decision.give_up("circuit_open")
    if isinstance(error, RetryExhaustedError):
        return Decision.give_up("retry_exhausted")
    return Decision.give_up(f"unexpected:{type(error).__name__}")


def retry_on_exceptions(*types: type[Exception]) -> Classifier:
    """A classifier that retries exactly the given exception types.

    Any other exception is handed back (``GIVE_UP``); any returned value is
    accepted. For quick filters (``retry_on_exceptions(OSError)``); prefer the
    taxonomy or HTTP classifiers for network calls, which know about
    ambiguity and ``Retry-After``.
    """
    if not types:
        raise ValueError("retry_on_exceptions() needs at least one exception type")

    def classify(outcome: Outcome[Any]) -> Decision:
        error = outcome.error
        if error is None:
            return Decision.accept()
        if isinstance(error, types):
            return Decision.retry(type(error).__name__)
        return Decision.give_up(f"not_listed:{type(error).__name__}")

    return classify


@attrs.define
class RetryStats:
    """Counters of one policy, shared by every call made through it.

    ``snapshot()`` is JSON-able, for ``/status`` and metrics collectors.
    """

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    successes: int = 0
    give_ups: int = 0
    total_wait_s: float = 0.0
    retries_by_reason: dict[str, int] = attrs.field(factory=dict)
    wait_s_by_reason: dict[str, float] = attrs.field(factory=dict)
    give_ups_by_reason: dict[str, int] = attrs.field(factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the counters."""
        return {
            "calls": self.calls,
            "attempts": self.attempts,
            "retries": self.retries,
            "successes": self.successes,
            "give_ups": self.give_ups,
            "total_wait_s": self.total_wait_s,
            "retries_by_reason": dict(self.retries_by_reason),
            "wait_s_by_reason": dict(self.wait_s_by_reason),
            "give_ups_by_reason": dict(self.give_ups_by_reason),
        }


@attrs.frozen
class RetryEvent:
    """Passed to ``on_retry`` before each wait.

    ``attempt`` is the number of the attempt that just failed (1-based); the
    next attempt starts after ``delay_s``.
    """

    policy: str
    attempt: int
    delay_s: float
    verdict: Verdict
    reason: str
    elapsed_s: float
    error: Exception | None
    result: object


#: ``on_retry`` may be a plain function or a coroutine function.
RetryHook = Callable[[RetryEvent], Awaitable[None] | None]


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 1] + "…"


def _describe(outcome: Outcome[Any]) -> str:
    if outcome.error is not None:
        return f"{type(outcome.error).__name__}: {outcome.error}"
    return f"result {_short_repr(outcome.result)}"


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """A bounded retry policy; also a decorator and an async iterable of attempts.

    Attributes:
        name: Names the policy in logs, events and errors (``"binance.rest"``).
        max_attempts: Total attempts including the first (>= 1).
        max_elapsed_s: No attempt *starts* later than this after the first one;
            a wait that would cross it ends the run instead. Attempts themselves
            are not cut short: bound each one with ``trio.fail_after`` inside
            the attempt, or the whole run with ``trio.fail_after`` around it.
        backoff: Growth of the delay (exponential, linear, constant).
        base_delay_s: Delay after the first failure, before jitter.
        max_delay_s: Cap on the delay before jitter.
        multiplier: Growth factor of the exponential backoff.
        jitter: Randomisation of the capped delay (full jitter by default).
        classifier: Judges each outcome (see the module docstring).
        on_retry: Called (and awaited if it returns an awaitable) before each
            wait, with a :class:`RetryEvent`. An exception from it propagates.
        rng: Source of jitter; inject ``random.Random(seed)`` in tests.
        stats: Counters shared by every call through this policy (and by
            policies derived with ``attrs.evolve`` unless a new one is passed).
    """

    name: str = "retry"
    max_attempts: int = attrs.field(default=5, validator=positive_int)
    max_elapsed_s: float = attrs.field(default=30.0, validator=finite_positive)
    backoff: Backoff = Backoff.EXPONENTIAL
    base_delay_s: float = attrs.field(default=0.1, validator=finite_non_negative)
    max_delay_s: float = attrs.field(default=10.0, validator=finite_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=finite_positive)
    jitter: Jitter = Jitter.FULL
    classifier: Classifier = attrs.field(default=classify_by_taxonomy, eq=False)
    on_retry: RetryHook | None = attrs.field(default=None, eq=False)
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)
    stats: RetryStats = attrs.field(factory=RetryStats, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"max_delay_s ({self.max_delay_s}) must be >= base_delay_s ({self.base_delay_s})"
            )

    def backoff_delay_s(self, failed_attempts: int) -> float:
        """The capped delay after ``failed_attempts`` failures, before jitter."""
        n = max(1, failed_attempts)
        if self.backoff is Backoff.CONSTANT:
            delay = self.base_delay_s
        elif self.backoff is Backoff.LINEAR:
            delay = self.base_delay_s * n
        else:
            try:
                delay = self.base_delay_s * self.multiplier ** (n - 1)
            except OverflowError:
                delay = math.inf
        return min(delay, self.max_delay_s)

    def next_delay_s(self, failed_attempts: int) -> float:
        """The delay actually waited after ``failed_attempts`` failures (jittered)."""
        capped = self.backoff_delay_s(failed_attempts)
        if self.jitter is Jitter.FULL:
            return self.rng.uniform(0.0, capped)
        if self.jitter is Jitter.EQUAL:
            return capped / 2 + self.rng.uniform(0.0, capped / 2)
        return capped

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this policy.

        Returns:
            The accepted result, or a result the classifier gave up on.

        Raises:
            AmbiguousOutcomeError: the classifier judged the outcome ambiguous.
            RetryExhaustedError: a retryable failure met an exhausted budget.
            Exception: a non-retryable exception, re-raised unchanged.
        """
        run = _RetryRun(self)
        while True:
            run.begin_attempt()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                delay = run.settle(Outcome.failure(exc))
                if delay is None:
                    raise
            else:
                delay = run.settle(Outcome.success(result))
                if delay is None:
                    return result
            await run.pause(delay)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Use the policy as a decorator: every call of ``fn`` is retried."""

        @functools.wraps(fn)
        async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return retrying

    def __aiter__(self) -> RetryLoop:
        """Iterate over attempts: ``async for attempt in policy: with attempt: ...``."""
        return RetryLoop(self)


def retry(policy: RetryPolicy | None = None, /, **changes: Any) -> RetryPolicy:
    """Build a policy for use as a decorator: ``@retry(max_attempts=3)``.

    With a ``policy``, returns a copy with ``changes`` applied (sharing its
    ``stats`` unless ``stats=RetryStats()`` is passed).
    """
    base = policy if policy is not None else RetryPolicy()
    return attrs.evolve(base, **changes) if changes else base


class _RetryRun:
    """The state of one retried call: counts, budget and the pending wait."""

    __slots__ = ("_event", "_policy", "_started_at", "attempts", "waited_s")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._started_at = trio.current_time()
        self._event: RetryEvent | None = None
        self.attempts = 0
        self.waited_s = 0.0
        policy.stats.calls += 1

    def begin_attempt(self) -> int:
        self.attempts += 1
        self._policy.stats.attempts += 1
        return self.attempts

    def record_success(self) -> None:
        self._policy.stats.successes += 1

    def settle(self, outcome: Outcome[Any]) -> float | None:
        """Judge an outcome.

        Returns ``None`` when the outcome is final and must be handed back
        as is, or the delay to wait before the next attempt. Raises
        ``AmbiguousOutcomeError`` / ``RetryExhaustedError`` (from the error).
        """
        policy = self._policy
        stats = policy.stats
        decision = policy.classifier(outcome)
        verdict = decision.verdict
        if verdict is Verdict.ACCEPT:
            stats.successes += 1
            return None
        if verdict is Verdict.GIVE_UP:
            self._give_up(GIVE_UP_NOT_RETRYABLE, decision, outcome)
            return None
        elapsed_s = trio.current_time() - self._started_at
        if verdict is Verdict.AMBIGUOUS:
            self._give_up(GIVE_UP_AMBIGUOUS, decision, outcome)
            if isinstance(outcome.error, AmbiguousOutcomeError):
                return None
            raise AmbiguousOutcomeError(
                f"{policy.name}: attempt {self.attempts} may have taken effect "
                f"({decision.reason}; {_describe(outcome)}); not retried"
            ) from outcome.error
        if self.attempts >= policy.max_attempts:
            self._exhausted(GIVE_UP_ATTEMPTS, decision, outcome, elapsed_s, None)
        if verdict is Verdict.RETRY_AFTER:
            delay_s = max(0.0, decision.delay_s or 0.0)
            if elapsed_s + delay_s > policy.max_elapsed_s:
                self._exhausted(GIVE_UP_RETRY_AFTER, decision, outcome, elapsed_s, delay_s)
        else:
            delay_s = policy.next_delay_s(self.attempts)
            if elapsed_s + delay_s > policy.max_elapsed_s:
                self._exhausted(GIVE_UP_ELAPSED, decision, outcome, elapsed_s, None)
        stats.retries += 1
        stats.retries_by_reason[decision.reason] = (
            stats.retries_by_reason.get(decision.reason, 0) + 1
        )
        self._event = RetryEvent(
            policy=policy.name,
            attempt=self.attempts,
            delay_s=delay_s,
            verdict=verdict,
            reason=decision.reason,
            elapsed_s=elapsed_s,
            error=outcome.error,
            result=outcome.result,
        )
        log.info(
            "%s: attempt %d/%d failed (%s: %s), retrying in %.3fs",
            policy.name,
            self.attempts,
            policy.max_attempts,
            decision.reason,
            _describe(outcome),
            delay_s,
        )
        return delay_s

    async def pause(self, delay_s: float) -> None:
        """Run the ``on_retry`` hook, then wait ``delay_s``."""
        event = self._event
        hook = self._policy.on_retry
        if hook is not None and event is not None:
            maybe = hook(event)
            if inspect.isawaitable(maybe):
                await maybe
        stats = self._policy.stats
        reason = event.reason if event is not None else "unknown"
        started = trio.current_time()
        try:
            await trio.sleep(delay_s)
        finally:
            waited = trio.current_time() - started
            self.waited_s += waited
            stats.total_wait_s += waited
            stats.wait_s_by_reason[reason] = stats.wait_s_by_reason.get(reason, 0.0) + waited

    def _give_up(self, why: str, decision: Decision, outcome: Outcome[Any]) -> None:
        stats = self._policy.stats
        stats.give_ups += 1
        stats.give_ups_by_reason[why] = stats.give_ups_by_reason.get(why, 0) + 1
        # A definitive answer (a 4xx reject, "order does not exist") is the
        # caller's to judge, not a retry failure: log it quietly. Running out of
        # budget, or an ambiguous outcome, is worth an operator's attention.
        level = logging.DEBUG if why == GIVE_UP_NOT_RETRYABLE else logging.WARNING
        log.log(
            level,
            "%s: giving up after attempt %d (%s: %s; %s)",
            self._policy.name,
            self.attempts,
            why,
            decision.reason,
            _describe(outcome),
        )

    def _exhausted(
        self,
        why: str,
        decision: Decision,
        outcome: Outcome[Any],
        elapsed_s: float,
        retry_after_s: float | None,
    ) -> NoReturn:
        self._give_up(why, decision, outcome)
        policy = self._policy
        wait = f", peer asked to wait {retry_after_s:.3f}s" if retry_after_s is not None else ""
        raise RetryExhaustedError(
            f"{policy.name}: gave up after {self.attempts} attempt(s) in {elapsed_s:.3f}s "
            f"({why}{wait}; limits: {policy.max_attempts} attempts, {policy.max_elapsed_s}s); "
            f"last: {decision.reason}: {_describe(outcome)}",
            reason=why,
            attempts=self.attempts,
            elapsed_s=elapsed_s,
            waited_s=self.waited_s,
            last_error=outcome.error,
            last_result=outcome.result,
            retry_after_s=retry_after_s,
        ) from outcome.error


class _RetrySignal(BaseException):
    """Raised by :meth:`Attempt.check` to end the ``with`` block; caught by it.

    A ``BaseException`` so that a broad ``except Exception`` in the caller's
    block cannot swallow it.
    """

    def __init__(self, attempt: Attempt) -> None:
        super().__init__("retry requested")
        self.attempt = attempt


class Attempt:
    """One attempt of an explicit retry loop; use it as ``with attempt:``.

    An exception leaving the block is classified: a retryable one is
    swallowed (the loop waits and yields the next attempt), an ambiguous one
    becomes :class:`~daemon.errors.AmbiguousOutcomeError`, an exhausted budget
    :class:`~daemon.errors.RetryExhaustedError`, anything else propagates
    unchanged. A block that completes is a success and ends the loop. To let
    the classifier judge a *returned* value (an HTTP 503 response), pass it
    through :meth:`check`.
    """

    __slots__ = ("_entered", "_retry_delay_s", "_run", "_settled", "number")

    def __init__(self, run: _RetryRun, number: int) -> None:
        self._run = run
        self.number = number
        self._entered = False
        self._settled = False
        self._retry_delay_s: float | None = None

    def __enter__(self) -> Attempt:
        if self._entered:
            raise RuntimeError("an Attempt can be entered only once")
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: object,
    ) -> bool:
        if exc is None:
            if not self._settled:
                self._settled = True
                self._run.record_success()
            return False
        if isinstance(exc, _RetrySignal) and exc.attempt is self:
            return True
        if self._settled or not isinstance(exc, Exception):
            return False
        self._settled = True
        delay = self._run.settle(Outcome.failure(exc))
        if delay is None:
            return False
        self._retry_delay_s = delay
        return True

    def check(self, result: T) -> T:
        """Let the classifier judge a returned value.

        Returns ``result`` when it is accepted or given up on; when it must be
        retried, leaves the ``with`` block (the loop will try again). Raises
        like the ``with`` block does for ambiguous or exhausted outcomes.
        """
        if not self._entered or self._settled:
            raise RuntimeError("Attempt.check() must be called once, inside 'with attempt:'")
        self._settled = True
        delay = self._run.settle(Outcome.success(result))
        if delay is None:
            return result
        self._retry_delay_s = delay
        raise _RetrySignal(self)


class RetryLoop:
    """Async iterator of :class:`Attempt` objects (``async for attempt in policy``).

    Not an async generator, so leaving the loop early (``return`` inside it)
    needs no cleanup. The budget starts with the first attempt.
    """

    __slots__ = ("_attempt", "_finished", "_policy", "_run")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._run: _RetryRun | None = None
        self._attempt: Attempt | None = None
        self._finished = False

    def __aiter__(self) -> RetryLoop:
        return self

    async def __anext__(self) -> Attempt:
        if self._finished:
            raise StopAsyncIteration
        if self._run is None:
            self._run = _RetryRun(self._policy)
            await trio.lowlevel.checkpoint()
        elif self._attempt is not None:
            previous = self._attempt
            if previous._retry_delay_s is None:
                # Completed (or never entered): the loop is over.
                if not previous._settled:
                    previous._settled = True
                    self._run.record_success()
                self._finished = True
                raise StopAsyncIteration
            await self._run.pause(previous._retry_delay_s)
        number = self._run.begin_attempt()
        self._attempt = Attempt(self._run, number)
        return self._attempt
