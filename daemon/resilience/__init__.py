"""Resilience toolkit: bounded retries, rate limits, circuit breakers, fan-out.

Every network call of tradingd goes through these, composed in this order
(outermost first)::

    retry policy  →  rate limiter  →  circuit breaker  →  the call (with its own timeout)

so that each retry waits for a token, and a breaker that is open fails the
attempt at once (which the retry then gives up on, without waiting). The
error taxonomy they implement is docs/ARCHITECTURE.md §12 and :mod:`daemon.errors`:

=================  ==========================================================
error              handled by
=================  ==========================================================
transient          :class:`RetryPolicy` — bounded backoff with full jitter
ambiguous          raised as :class:`~daemon.errors.AmbiguousOutcomeError`,
                   never retried: the caller queries first
rate limited       ``Retry-After`` honoured by the retry policy, and
                   :meth:`~TokenBucket.freeze_until` on the limiter
permanent          handed back unchanged; :mod:`~daemon.resilience.deadletter`
downstream down    :class:`CircuitBreaker`
=================  ==========================================================

Modules: :mod:`.retry`, :mod:`.http` (httpx2 classifier), :mod:`.ratelimit`,
:mod:`.breaker`, :mod:`.gather`, :mod:`.threads`, :mod:`.deadletter`. User
documentation: ``docs/resilience.md``. Overhead micro-benchmark:
``python -m daemon.bench.resilience``.
"""

from __future__ import annotations

from daemon.resilience.breaker import (
    BreakerConfig,
    BreakerPermit,
    BreakerState,
    BreakerStats,
    BreakerTransition,
    CircuitBreaker,
)
from daemon.resilience.deadletter import (
    DeadLetter,
    DeadLetterStore,
    InMemoryDeadLetterStore,
    ReplayResult,
    ReplayStatus,
)
from daemon.resilience.gather import GatherMode, gather
from daemon.resilience.http import HttpClassifier, is_idempotent, parse_retry_after, retry_after_s
from daemon.resilience.outcomes import Outcome
from daemon.resilience.ratelimit import (
    LimiterStats,
    SlidingWindowLimiter,
    TokenBucket,
    Window,
)
from daemon.resilience.retry import (
    Attempt,
    Backoff,
    Classifier,
    Decision,
    Jitter,
    RetryEvent,
    RetryPolicy,
    RetryStats,
    Verdict,
    classify_by_taxonomy,
    retry,
    retry_on_exceptions,
)
from daemon.resilience.threads import ThreadLane, run_in_thread

__all__ = [
    "Attempt",
    "Backoff",
    "BreakerConfig",
    "BreakerPermit",
    "BreakerState",
    "BreakerStats",
    "BreakerTransition",
    "CircuitBreaker",
    "Classifier",
    "DeadLetter",
    "DeadLetterStore",
    "Decision",
    "GatherMode",
    "HttpClassifier",
    "InMemoryDeadLetterStore",
    "Jitter",
    "LimiterStats",
    "Outcome",
    "ReplayResult",
    "ReplayStatus",
    "RetryEvent",
    "RetryPolicy",
    "RetryStats",
    "SlidingWindowLimiter",
    "ThreadLane",
    "TokenBucket",
    "Verdict",
    "Window",
    "classify_by_taxonomy",
    "gather",
    "is_idempotent",
    "parse_retry_after",
    "retry",
    "retry_after_s",
    "retry_on_exceptions",
    "run_in_thread",
]
