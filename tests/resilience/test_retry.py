"""RetryPolicy: backoff, budgets, classifiers, hooks, stats, explicit loop."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import (
    AmbiguousOutcomeError,
    CircuitOpenError,
    PermanentError,
    RateLimitedError,
    RetryExhaustedError,
    TransientError,
)
from daemon.resilience import (
    Backoff,
    Decision,
    Jitter,
    Outcome,
    RetryEvent,
    RetryPolicy,
    RetryStats,
    Verdict,
    classify_by_taxonomy,
    retry,
    retry_on_exceptions,
)


def no_jitter(**kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("jitter", Jitter.NONE)
    return RetryPolicy(**kwargs)


class Script:
    """An async callable that plays a list of outcomes and records start times."""

    def __init__(self, *steps: object, duration_s: float = 0.0) -> None:
        self.steps = list(steps)
        self.duration_s = duration_s
        self.starts: list[float] = []

    async def __call__(self) -> object:
        self.starts.append(trio.current_time())
        step = self.steps[min(len(self.starts), len(self.steps)) - 1]
        await trio.sleep(self.duration_s)
        if isinstance(step, BaseException):
            raise step
        return step


# ---------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (Backoff.EXPONENTIAL, [1.0, 2.0, 4.0, 8.0, 16.0]),
        (Backoff.LINEAR, [1.0, 2.0, 3.0, 4.0, 5.0]),
        (Backoff.CONSTANT, [1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_backoff_sequences(backoff: Backoff, expected: list[float]) -> None:
    policy = no_jitter(backoff=backoff, base_delay_s=1.0, max_delay_s=60.0)
    assert [policy.next_delay_s(n) for n in range(1, 6)] == expected


def test_backoff_is_capped_and_never_overflows() -> None:
    policy = no_jitter(base_delay_s=1.0, max_delay_s=10.0, multiplier=3.0)
    assert [policy.backoff_delay_s(n) for n in (1, 2, 3, 4)] == [1.0, 3.0, 9.0, 10.0]
    assert policy.backoff_delay_s(100_000) == 10.0
    linear = no_jitter(backoff=Backoff.LINEAR, base_delay_s=2.0, max_delay_s=5.0)
    assert [linear.backoff_delay_s(n) for n in (1, 2, 3)] == [2.0, 4.0, 5.0]


def test_full_jitter_is_uniform_below_the_cap_and_reproducible() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0, rng=random.Random(7))
    reference = random.Random(7)
    for n in range(1, 8):
        delay = policy.next_delay_s(n)
        assert delay == reference.uniform(0.0, policy.backoff_delay_s(n))
        assert 0.0 <= delay <= policy.backoff_delay_s(n)


def test_equal_jitter_keeps_half_the_delay() -> None:
    policy = RetryPolicy(
        base_delay_s=4.0, max_delay_s=4.0, jitter=Jitter.EQUAL, rng=random.Random(1)
    )
    delays = [policy.next_delay_s(1) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # actually random


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_elapsed_s": 0.0},
        {"max_elapsed_s": float("inf")},
        {"base_delay_s": -1.0},
        {"base_delay_s": 5.0, "max_delay_s": 1.0},
        {"multiplier": 0.0},
    ],
)
def test_policy_rejects_unbounded_or_invalid_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# ---------------------------------------------------------------- classifier


@pytest.mark.parametrize(
    ("outcome", "verdict", "delay"),
    [
        (Outcome.success(42), Verdict.ACCEPT, None),
        (Outcome.success(None), Verdict.ACCEPT, None),
        (Outcome.failure(TransientError("x")), Verdict.RETRY, None),
        (Outcome.failure(RateLimitedError("x")), Verdict.RETRY, None),
        (Outcome.failure(RateLimitedError("x", retry_after_s=3.0)), Verdict.RETRY_AFTER, 3.0),
        (Outcome.failure(AmbiguousOutcomeError("x")), Verdict.AMBIGUOUS, None),
        (Outcome.failure(PermanentError("x")), Verdict.GIVE_UP, None),
        (Outcome.failure(CircuitOpenError("x")), Verdict.GIVE_UP, None),
        (
            Outcome.failure(
                RetryExhaustedError("x", reason="r", attempts=1, elapsed_s=0, waited_s=0)
            ),
            Verdict.GIVE_UP,
            None,
        ),
        (Outcome.failure(KeyError("bug")), Verdict.GIVE_UP, None),
    ],
)
def test_taxonomy_classifier(outcome: Outcome[Any], verdict: Verdict, delay: float | None) -> None:
    decision = classify_by_taxonomy(outcome)
    assert decision.verdict is verdict
    assert decision.delay_s == delay


def test_retry_on_exceptions_classifier() -> None:
    classify = retry_on_exceptions(OSError, TimeoutError)
    assert classify(Outcome.failure(ConnectionResetError())).verdict is Verdict.RETRY
    assert classify(Outcome.failure(TimeoutError())).verdict is Verdict.RETRY
    assert classify(Outcome.failure(ValueError())).verdict is Verdict.GIVE_UP
    assert classify(Outcome.success(1)).verdict is Verdict.ACCEPT
    with pytest.raises(ValueError):
        retry_on_exceptions()


def test_decision_retry_after_clamps_negative_delays() -> None:
    assert Decision.retry_after(-5.0, "x").delay_s == 0.0


# ---------------------------------------------------------------- call()


async def test_transient_failures_are_retried_with_exact_backoff(autojump_clock: Any) -> None:
    script = Script(TransientError("a"), TransientError("b"), "done")
    policy = no_jitter(base_delay_s=1.0, max_delay_s=10.0)
    assert await policy.call(script) == "done"
    assert script.starts == [0.0, 1.0, 3.0]
    assert trio.current_time() == 3.0


async def test_decorator_and_retry_factory(autojump_clock: Any) -> None:
    calls: list[int] = []

    @retry(max_attempts=3, base_delay_s=0.5, jitter=Jitter.NONE, backoff=Backoff.CONSTANT)
    async def flaky(x: int) -> int:
        """Docstring survives."""
        calls.append(x)
        if len(calls) < 3:
            raise TransientError("again")
        return x * 2

    assert await flaky(21) == 42
    assert calls == [21, 21, 21]
    assert trio.current_time() == 1.0
    assert flaky.__name__ == "flaky"
    assert flaky.__doc__ == "Docstring survives."


async def test_attempts_budget_exhausted(autojump_clock: Any) -> None:
    last = TransientError("still down")
    script = Script(TransientError("1"), TransientError("2"), last)
    policy = no_jitter(max_attempts=3, base_delay_s=1.0)
    with pytest.raises(RetryExhaustedError) as info:
        await policy.call(script)
    err = info.value
    assert err.reason == "attempts_exhausted"
    assert err.attempts == 3
    assert err.last_error is last
    assert err.__cause__ is last
    assert err.waited_s == 3.0
    assert err.elapsed_s == 3.0
    assert not isinstance(err, TransientError)  # an outer retry must not multiply it
    assert script.starts == [0.0, 1.0, 3.0]
    assert policy.stats.give_ups_by_reason == {"attempts_exhausted": 1}


async def test_elapsed_budget_stops_before_a_wait_that_would_cross_it(autojump_clock: Any) -> None:
    script = Script(TransientError("down"))
    policy = no_jitter(max_attempts=100, max_elapsed_s=10.0, base_delay_s=1.0, max_delay_s=60.0)
    with pytest.raises(RetryExhaustedError) as info:
        await policy.call(script)
    # Attempts at 0, 1, 3, 7; the next wait (8 s) would start attempt 5 at 15 > 10.
    assert script.starts == [0.0, 1.0, 3.0, 7.0]
    assert info.value.reason == "elapsed_exhausted"
    assert trio.current_time() == 7.0  # gave up at once, did not sleep first


async def test_slow_attempts_count_against_the_elapsed_budget(autojump_clock: Any) -> None:
    script = Script(TransientError("slow"), duration_s=4.0)
    policy = no_jitter(
        max_attempts=10, max_elapsed_s=10.0, base_delay_s=1.0, backoff=Backoff.CONSTANT
    )
    with pytest.raises(RetryExhaustedError):
        await policy.call(script)
    # 0-4, wait 1, 5-9, wait 1, 10-14 (starts exactly at the limit), then 15 > 10: stop.
    assert script.starts == [0.0, 5.0, 10.0]
    assert trio.current_time() == 14.0


async def test_retry_after_replaces_backoff(autojump_clock: Any) -> None:
    script = Script(RateLimitedError("429", retry_after_s=2.5), "ok")
    policy = no_jitter(base_delay_s=0.1)
    assert await policy.call(script) == "ok"
    assert script.starts == [0.0, 2.5]
    assert policy.stats.retries_by_reason == {"rate_limited": 1}
    assert policy.stats.total_wait_s == 2.5


async def test_retry_after_beyond_budget_gives_up_at_once(autojump_clock: Any) -> None:
    error = RateLimitedError("banned", retry_after_s=120.0)
    script = Script(error)
    policy = no_jitter(max_elapsed_s=30.0)
    with pytest.raises(RetryExhaustedError) as info:
        await policy.call(script)
    assert info.value.reason == "retry_after_exceeds_budget"
    assert info.value.retry_after_s == 120.0
    assert info.value.__cause__ is error
    assert trio.current_time() == 0.0
    assert len(script.starts) == 1


async def test_permanent_error_is_not_retried_and_reraised_unchanged(autojump_clock: Any) -> None:
    error = PermanentError("rejected: insufficient balance")
    script = Script(error)
    policy = no_jitter()
    with pytest.raises(PermanentError) as info:
        await policy.call(script)
    assert info.value is error
    assert len(script.starts) == 1
    assert policy.stats.give_ups_by_reason == {"not_retryable": 1}


async def test_ambiguous_error_is_reraised_unchanged(autojump_clock: Any) -> None:
    error = AmbiguousOutcomeError("timeout after send")
    script = Script(error)
    with pytest.raises(AmbiguousOutcomeError) as info:
        await no_jitter().call(script)
    assert info.value is error
    assert len(script.starts) == 1


async def test_ambiguous_verdict_on_foreign_error_and_on_result(autojump_clock: Any) -> None:
    def classify(outcome: Outcome[Any]) -> Decision:
        if outcome.error is not None or outcome.result == "maybe":
            return Decision.ambiguous("timeout_after_send")
        return Decision.accept()

    policy = no_jitter(classifier=classify, name="orders")
    cause = TimeoutError("read timed out")
    with pytest.raises(
        AmbiguousOutcomeError, match="orders: attempt 1 may have taken effect"
    ) as info:
        await policy.call(Script(cause))
    assert info.value.__cause__ is cause
    with pytest.raises(AmbiguousOutcomeError, match="'maybe'"):
        await policy.call(Script("maybe"))
    assert policy.stats.attempts == 2
    assert policy.stats.give_ups_by_reason == {"ambiguous": 2}


async def test_results_can_be_retried_and_given_up_on(autojump_clock: Any) -> None:
    def classify(outcome: Outcome[Any]) -> Decision:
        if outcome.result == "busy":
            return Decision.retry("busy")
        if outcome.result == "no":
            return Decision.give_up("refused")
        return Decision.accept()

    policy = no_jitter(classifier=classify, base_delay_s=1.0, max_attempts=3)
    assert await policy.call(Script("busy", "busy", "yes")) == "yes"
    assert await policy.call(Script("busy", "no")) == "no"  # handed back as is
    with pytest.raises(RetryExhaustedError) as info:
        await policy.call(Script("busy"))
    assert info.value.last_result == "busy"
    assert info.value.last_error is None
    assert info.value.__cause__ is None


async def test_on_retry_hook_sync_and_async(autojump_clock: Any) -> None:
    events: list[RetryEvent] = []
    times: list[float] = []

    async def async_hook(event: RetryEvent) -> None:
        times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        events.append(event)

    errors = [TransientError("a"), RateLimitedError("b", retry_after_s=5.0)]
    policy = no_jitter(on_retry=async_hook, base_delay_s=1.0, name="p")
    assert await policy.call(Script(*errors, "ok")) == "ok"
    assert [(e.attempt, e.delay_s, e.verdict, e.reason) for e in events] == [
        (1, 1.0, Verdict.RETRY, "transient"),
        (2, 5.0, Verdict.RETRY_AFTER, "rate_limited"),
    ]
    assert [e.error for e in events] == errors
    assert times == [0.0, 1.0]  # called before each wait
    assert events[1].elapsed_s == 1.0

    seen: list[int] = []
    sync_policy = no_jitter(on_retry=lambda e: seen.append(e.attempt), base_delay_s=1.0)
    assert await sync_policy.call(Script(TransientError("x"), "ok")) == "ok"
    assert seen == [1]


async def test_cancellation_during_backoff_propagates(autojump_clock: Any) -> None:
    script = Script(TransientError("down"))
    policy = no_jitter(base_delay_s=10.0, max_delay_s=10.0, max_attempts=5, max_elapsed_s=100.0)
    with trio.move_on_after(4.0) as scope:
        await policy.call(script)
    assert scope.cancelled_caught
    assert script.starts == [0.0]
    assert policy.stats.total_wait_s == 4.0


async def test_keyboard_interrupt_and_cancelled_are_never_classified(autojump_clock: Any) -> None:
    policy = no_jitter(classifier=lambda o: Decision.retry("everything"))

    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await policy.call(interrupted)
    assert policy.stats.retries == 0


async def test_stats_snapshot_is_json(autojump_clock: Any) -> None:
    stats = RetryStats()
    policy = no_jitter(stats=stats, base_delay_s=0.25, max_attempts=2)
    await policy.call(Script(TransientError("x"), 1))
    with pytest.raises(PermanentError):
        await policy.call(Script(PermanentError("no")))
    snap = json.loads(json.dumps(stats.snapshot()))
    assert snap == {
        "calls": 2,
        "attempts": 3,
        "retries": 1,
        "successes": 1,
        "give_ups": 1,
        "total_wait_s": 0.25,
        "retries_by_reason": {"transient": 1},
        "wait_s_by_reason": {"transient": 0.25},
        "give_ups_by_reason": {"not_retryable": 1},
    }


# ---------------------------------------------------------------- explicit loop


async def test_explicit_loop_retries_exceptions_and_results(autojump_clock: Any) -> None:
    script = Script(TransientError("a"), "busy", "ok")

    def classify(outcome: Outcome[Any]) -> Decision:
        if outcome.result == "busy":
            return Decision.retry("busy")
        return classify_by_taxonomy(outcome)

    policy = no_jitter(classifier=classify, base_delay_s=1.0)
    numbers = []
    async for attempt in policy:
        numbers.append(attempt.number)
        with attempt:
            result = attempt.check(await script())
    assert result == "ok"
    assert numbers == [1, 2, 3]
    assert script.starts == [0.0, 1.0, 3.0]
    assert policy.stats.successes == 1


async def test_explicit_loop_return_inside_and_budget(autojump_clock: Any) -> None:
    async def fetch(script: Script) -> object:
        async for attempt in no_jitter(max_attempts=2, base_delay_s=1.0):
            with attempt:
                return await script()
        raise AssertionError("unreachable")  # pragma: no cover

    assert await fetch(Script(TransientError("x"), 7)) == 7
    with pytest.raises(RetryExhaustedError):
        await fetch(Script(TransientError("x")))
    error = PermanentError("no")
    with pytest.raises(PermanentError) as info:
        await fetch(Script(error))
    assert info.value is error


async def test_explicit_loop_plain_body_is_success_and_misuse_is_caught(
    autojump_clock: Any,
) -> None:
    policy = no_jitter()
    count = 0
    async for attempt in policy:
        count += 1
        assert attempt.number == 1
    assert count == 1
    assert policy.stats.successes == 1
    async for attempt in policy:
        with pytest.raises(RuntimeError):
            attempt.check(1)  # outside 'with attempt:'
        with attempt, pytest.raises(RuntimeError):
            attempt.check(1)
            attempt.check(1)  # twice


async def test_check_signal_is_not_swallowed_by_broad_except(autojump_clock: Any) -> None:
    policy = no_jitter(
        classifier=lambda o: Decision.retry("r") if o.result == 0 else Decision.accept(),
        base_delay_s=0.5,
    )
    values = iter([0, 1])
    async for attempt in policy:
        with attempt:
            try:
                value = attempt.check(next(values))
            except Exception:  # pragma: no cover - must not catch the retry signal
                raise AssertionError("swallowed") from None
    assert value == 1
    assert trio.current_time() == 0.5


# ---------------------------------------------------------------- property


KINDS = ["ok", "transient", "rate_limited", "permanent", "ambiguous", "bug"]
RETRYABLE = {"transient", "rate_limited"}


@settings(max_examples=150, deadline=None)
@given(
    max_attempts=st.integers(1, 6),
    max_elapsed_s=st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0]),
    base_delay_s=st.sampled_from([0.0, 0.125, 0.25, 1.0]),
    backoff=st.sampled_from(list(Backoff)),
    jitter=st.sampled_from(list(Jitter)),
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(
        st.tuples(
            st.sampled_from(KINDS),
            st.sampled_from([0.0, 0.25, 1.0]),
            st.sampled_from([0.0, 0.5, 3.0]),
        ),
        min_size=1,
        max_size=8,
    ),
    use_loop=st.booleans(),
)
def test_retry_never_exceeds_budgets_nor_retries_final_outcomes(
    max_attempts: int,
    max_elapsed_s: float,
    base_delay_s: float,
    backoff: Backoff,
    jitter: Jitter,
    seed: int,
    steps: list[tuple[str, float, float]],
    use_loop: bool,
) -> None:
    policy = RetryPolicy(
        max_attempts=max_attempts,
        max_elapsed_s=max_elapsed_s,
        base_delay_s=base_delay_s,
        max_delay_s=max(base_delay_s, 2.0),
        backoff=backoff,
        jitter=jitter,
        rng=random.Random(seed),
    )
    starts: list[float] = []
    ends: list[float] = []
    kinds: list[str] = []
    errors: dict[int, Exception] = {}

    async def attempt_fn() -> str:
        index = min(len(starts), len(steps) - 1)
        kind, duration_s, retry_after_s = steps[index]
        starts.append(trio.current_time())
        kinds.append(kind)
        await trio.sleep(duration_s)
        ends.append(trio.current_time())
        error: Exception
        if kind == "ok":
            return "ok"
        if kind == "transient":
            error = TransientError("t")
        elif kind == "rate_limited":
            error = RateLimitedError("r", retry_after_s=retry_after_s)
        elif kind == "permanent":
            error = PermanentError("p")
        elif kind == "ambiguous":
            error = AmbiguousOutcomeError("a")
        else:
            error = ZeroDivisionError("bug")
        errors[len(starts)] = error
        raise error

    async def main() -> object:
        try:
            if use_loop:
                async for attempt in policy:
                    with attempt:
                        return await attempt_fn()
                raise AssertionError("loop ended without a result")
            return await policy.call(attempt_fn)
        except Exception as exc:
            return exc

    outcome = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    assert 1 <= len(starts) <= max_attempts
    assert all(t - starts[0] <= max_elapsed_s + 1e-9 for t in starts)
    # Every attempt but the last failed retryably: nothing final was retried.
    assert all(kind in RETRYABLE for kind in kinds[:-1])
    for i in range(len(starts) - 1):
        kind, _, retry_after_s = steps[min(i, len(steps) - 1)]
        gap = starts[i + 1] - ends[i]
        if kind == "rate_limited":
            assert gap == pytest.approx(retry_after_s, abs=1e-9)
        else:
            assert -1e-9 <= gap <= policy.backoff_delay_s(i + 1) + 1e-9
    last = kinds[-1]
    if last == "ok":
        assert outcome == "ok"
    elif last in RETRYABLE:
        assert isinstance(outcome, RetryExhaustedError)
        assert outcome.last_error is errors[len(starts)]
    else:
        assert outcome is errors[len(starts)]
    assert policy.stats.attempts == len(starts)
    assert policy.stats.retries == len(starts) - 1
