"""The pieces composed as docs/resilience.md recommends."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from daemon.errors import CircuitRejectedError, RateLimitedError, TransientError
from daemon.resilience import (
    BreakerConfig,
    CircuitBreaker,
    Jitter,
    RetryEvent,
    RetryPolicy,
    TokenBucket,
    Verdict,
)


async def test_retry_limiter_breaker_stack(autojump_clock: Any) -> None:
    limiter = TokenBucket(rate_per_s=1.0, capacity=1.0, name="venue")
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=3, open_timeout_s=60.0))

    def freeze_on_rate_limit(event: RetryEvent) -> None:
        if event.verdict is Verdict.RETRY_AFTER:
            limiter.freeze_for(event.delay_s)

    policy = RetryPolicy(
        name="venue",
        max_attempts=10,
        max_elapsed_s=120.0,
        base_delay_s=0.5,
        max_delay_s=0.5,
        jitter=Jitter.NONE,
        on_retry=freeze_on_rate_limit,
    )
    sent: list[float] = []
    answers: list[Exception | None] = [RateLimitedError("429", retry_after_s=5.0)]

    async def request() -> str:
        sent.append(trio.current_time())
        answer = answers.pop(0) if answers else TransientError("503")
        if answer is not None:
            raise answer
        return "ok"  # pragma: no cover

    @policy
    async def call() -> str:
        await limiter.acquire()
        async with breaker.protect():
            return await request()

    with pytest.raises(CircuitRejectedError):
        await call()
    # t=0: 429 (failure 1); the limiter is frozen 5 s and emptied, so the next
    # token is at 6: 503 (failure 2); backoff 0.5, token at 7: 503 (failure 3)
    # opens the breaker; backoff 0.5, token at 8: rejected at once, and the
    # retry gives up instead of hammering an open breaker.
    assert sent == [0.0, 6.0, 7.0]
    assert breaker.stats.rejected == 1
    assert policy.stats.attempts == 4
    assert policy.stats.give_ups_by_reason == {"not_retryable": 1}
    assert trio.current_time() == 8.0
