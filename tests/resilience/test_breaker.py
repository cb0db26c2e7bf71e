"""CircuitBreaker: thresholds, half-open probing, filters, callbacks, model-based test."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from daemon.errors import (
    CircuitOpenError,
    CircuitRejectedError,
    PermanentError,
    TransientError,
)
from daemon.resilience import (
    BreakerConfig,
    BreakerPermit,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
)
from daemon.resilience.breaker import TRANSITIONS
from tests.helpers.clock import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


async def fail() -> None:
    raise TransientError("down")


async def succeed() -> str:
    return "ok"


async def test_opens_after_consecutive_failures_and_rejects_immediately(
    autojump_clock: Any,
) -> None:
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=3, open_timeout_s=10.0))
    for _ in range(3):
        with pytest.raises(TransientError):
            await breaker.call(fail)
    assert breaker.state is OPEN
    await trio.sleep(4.0)
    called = False

    async def never() -> None:
        nonlocal called
        called = True

    with pytest.raises(CircuitRejectedError) as info:
        await breaker.call(never)
    assert not called
    assert isinstance(info.value, CircuitOpenError)
    assert info.value.breaker == "venue"
    assert info.value.state == "open"
    assert info.value.retry_after_s == 6.0
    assert trio.current_time() == 4.0  # rejected without waiting
    assert breaker.stats.rejected == 1


async def test_success_resets_the_consecutive_count(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=3))
    for _ in range(2):
        with pytest.raises(TransientError):
            await breaker.call(fail)
    assert await breaker.call(succeed) == "ok"
    assert breaker.consecutive_failures == 0
    for _ in range(2):
        with pytest.raises(TransientError):
            await breaker.call(fail)
    assert breaker.state is CLOSED


async def test_half_open_after_timeout_then_close_on_success(autojump_clock: Any) -> None:
    breaker = CircuitBreaker(
        "venue", BreakerConfig(failure_threshold=1, open_timeout_s=5.0, success_threshold=2)
    )
    with pytest.raises(TransientError):
        await breaker.call(fail)
    await trio.sleep(4.5)
    assert breaker.state is OPEN
    assert breaker.open_remaining_s() == 0.5
    await trio.sleep(0.5)
    assert breaker.state is HALF_OPEN
    assert await breaker.call(succeed) == "ok"
    assert breaker.state is HALF_OPEN  # needs two
    assert await breaker.call(succeed) == "ok"
    assert breaker.state is CLOSED


async def test_trial_failure_reopens_for_a_full_timeout(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=1, open_timeout_s=5.0))
    with pytest.raises(TransientError):
        await breaker.call(fail)
    await trio.sleep(5.0)
    with pytest.raises(TransientError):
        await breaker.call(fail)  # the trial
    assert breaker.state is OPEN
    assert breaker.open_remaining_s() == 5.0
    assert breaker.stats.opened == 2
    assert breaker.stats.half_opened == 1


async def test_half_open_bounds_concurrent_trials(autojump_clock: Any) -> None:
    breaker = CircuitBreaker(
        "venue", BreakerConfig(failure_threshold=1, open_timeout_s=1.0, half_open_max_calls=2)
    )
    breaker.force_open()
    breaker.reset()
    with pytest.raises(TransientError):
        await breaker.call(fail)
    await trio.sleep(1.0)
    results: list[str] = []

    async def slow_trial() -> None:
        async with breaker.protect():
            await trio.sleep(1.0)
            results.append("trial")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_trial)
        nursery.start_soon(slow_trial)
        await trio.sleep(0.5)
        with pytest.raises(CircuitRejectedError) as info:
            async with breaker.protect():
                pass  # pragma: no cover
        assert info.value.state == "half_open"
        assert info.value.retry_after_s is None
    assert results == ["trial", "trial"]
    assert breaker.state is CLOSED


async def test_failure_ratio_over_a_rolling_window(autojump_clock: Any) -> None:
    config = BreakerConfig(failure_threshold=None, failure_ratio=0.5, min_calls=4, window_s=10.0)
    breaker = CircuitBreaker("venue", config)
    for call in (fail, succeed, fail):
        try:
            await breaker.call(call)
        except TransientError:
            pass
    assert breaker.state is CLOSED  # 2/3 failed, but only 3 calls
    await breaker.call(succeed)
    assert breaker.state is CLOSED  # 2/4: a success never trips
    await trio.sleep(10.0)  # the window empties
    for call in (succeed, succeed, succeed):
        await breaker.call(call)
    with pytest.raises(TransientError):
        await breaker.call(fail)
    assert breaker.state is CLOSED  # 1/4
    with pytest.raises(TransientError):
        await breaker.call(fail)
    assert breaker.state is CLOSED  # 2/5 < 0.5
    with pytest.raises(TransientError):
        await breaker.call(fail)
    assert breaker.state is OPEN  # 3/6 >= 0.5


async def test_a_call_exactly_window_s_old_has_left_the_window(autojump_clock: Any) -> None:
    config = BreakerConfig(failure_threshold=None, failure_ratio=0.5, min_calls=4, window_s=10.0)
    breaker = CircuitBreaker("venue", config)
    for call in (fail, fail, succeed, succeed):
        try:
            await breaker.call(call)
        except TransientError:
            pass
    assert breaker.state is CLOSED
    await trio.sleep(10.0)
    with pytest.raises(TransientError):
        await breaker.call(fail)
    assert breaker.state is CLOSED  # 1 call in the window, below min_calls
    assert breaker.snapshot()["window_calls"] == 1


async def test_filter_ignored_errors_count_as_successes(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=2))

    async def reject() -> None:
        raise PermanentError("400 bad symbol")

    with pytest.raises(TransientError):
        await breaker.call(fail)
    with pytest.raises(PermanentError):
        await breaker.call(reject)  # the downstream answered
    with pytest.raises(TransientError):
        await breaker.call(fail)
    assert breaker.state is CLOSED
    assert breaker.stats.failures == 2
    assert breaker.stats.successes == 1


async def test_custom_failure_types_and_predicate(autojump_clock: Any) -> None:
    only_timeouts = CircuitBreaker(
        "a", BreakerConfig(failure_threshold=1, failure_on=(TimeoutError,), ignore=())
    )

    async def boom(exc: Exception) -> None:
        raise exc

    with pytest.raises(ValueError):
        await only_timeouts.call(boom, ValueError("x"))
    assert only_timeouts.state is CLOSED
    with pytest.raises(TimeoutError):
        await only_timeouts.call(boom, TimeoutError())
    assert only_timeouts.state is OPEN

    predicate = CircuitBreaker(
        "b", BreakerConfig(failure_threshold=1, is_failure=lambda e: "503" in str(e))
    )
    with pytest.raises(RuntimeError):
        await predicate.call(boom, RuntimeError("404"))
    assert predicate.state is CLOSED
    with pytest.raises(RuntimeError):
        await predicate.call(boom, RuntimeError("503"))
    assert predicate.state is OPEN


async def test_cancellation_counts_as_nothing(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=1, open_timeout_s=1.0))
    breaker.force_open()
    breaker.reset()
    with pytest.raises(TransientError):
        await breaker.call(fail)
    await trio.sleep(1.0)
    with trio.move_on_after(0.5):
        async with breaker.protect():  # takes the only trial slot
            await trio.sleep(10)
    assert breaker.state is HALF_OPEN
    assert breaker.stats.neutral == 1
    await breaker.call(succeed)  # the slot was released
    assert breaker.state is CLOSED


async def test_stale_calls_do_not_move_the_new_state(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=1, open_timeout_s=100.0))
    slow = breaker.admit()  # admitted while CLOSED
    with pytest.raises(TransientError):
        await breaker.call(fail)
    assert breaker.state is OPEN
    slow.success()  # finishes late: must not close anything
    assert breaker.state is OPEN
    assert breaker.stats.stale == 1
    with pytest.raises(RuntimeError):
        slow.failure()  # settled once only


async def test_callback_sees_every_transition_and_cannot_break_the_breaker(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[BreakerState, BreakerState, float, str]] = []

    def callback(t: BreakerTransition) -> None:
        seen.append((t.old, t.new, t.at, t.reason))
        raise RuntimeError("observer bug")

    breaker = CircuitBreaker(
        "venue", BreakerConfig(failure_threshold=1, open_timeout_s=2.0), on_state_change=callback
    )
    with caplog.at_level(logging.ERROR, logger="tradingd.resilience.breaker"):
        with pytest.raises(TransientError):
            await breaker.call(fail)
        await trio.sleep(2.0)
        await breaker.call(succeed)
        breaker.force_open()
        breaker.reset()
    assert seen == [
        (CLOSED, OPEN, 0.0, "1 consecutive failures"),
        (OPEN, HALF_OPEN, 2.0, "open timeout elapsed"),
        (HALF_OPEN, CLOSED, 2.0, "1 trial call(s) succeeded"),
        (CLOSED, OPEN, 2.0, "forced open"),
        (OPEN, CLOSED, 2.0, "manual reset"),
    ]
    assert breaker.state is CLOSED
    assert "on_state_change callback failed" in caplog.text


async def test_force_open_holds_until_reset(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("venue", BreakerConfig(open_timeout_s=1.0))
    breaker.force_open()
    await trio.sleep(100.0)
    assert breaker.state is OPEN
    assert breaker.forced_open
    assert breaker.open_remaining_s() is None
    with pytest.raises(CircuitRejectedError) as info:
        breaker.admit()
    assert info.value.retry_after_s is None
    breaker.reset()
    assert breaker.state is CLOSED
    assert not breaker.forced_open


async def test_sync_guard_and_snapshot(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("venue", BreakerConfig(failure_threshold=2))
    with breaker.protect():
        pass
    with pytest.raises(TransientError), breaker.protect():
        raise TransientError("x")
    snap = json.loads(json.dumps(breaker.snapshot()))
    assert snap["state"] == "closed"
    assert snap["consecutive_failures"] == 1
    assert snap["stats"]["admitted"] == 2
    assert snap["stats"]["successes"] == 1
    assert snap["stats"]["failures"] == 1


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(failure_threshold=None, failure_ratio=None)
    with pytest.raises(ValueError):
        BreakerConfig(failure_ratio=1.5)
    with pytest.raises(ValueError):
        BreakerConfig(open_timeout_s=0)
    with pytest.raises(ValueError):
        BreakerConfig(half_open_max_calls=0)


def test_transition_table_forbids_closed_to_half_open() -> None:
    assert HALF_OPEN not in TRANSITIONS[CLOSED]
    for state, targets in TRANSITIONS.items():
        assert state not in targets


# ---------------------------------------------------------------- model-based


class BreakerModel:
    """An independent, deliberately naive model of the specified behaviour."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = CLOSED
        self.forced = False
        self.opened_at = 0.0
        self.generation = 0
        self.streak = 0
        self.calls: list[tuple[float, bool]] = []
        self.trials = 0
        self.trial_successes = 0

    def move(self, state: BreakerState, now: float) -> None:
        self.state = state
        self.generation += 1
        self.streak = 0
        self.calls = []
        self.trials = 0
        self.trial_successes = 0
        if state is OPEN:
            self.opened_at = now
        if state is CLOSED:
            self.forced = False

    def look(self, now: float) -> BreakerState:
        if (
            self.state is OPEN
            and not self.forced
            and now >= self.opened_at + self.config.open_timeout_s
        ):
            self.move(HALF_OPEN, now)
        return self.state

    def admit(self, now: float) -> tuple[int, bool] | None:
        state = self.look(now)
        if state is CLOSED:
            return (self.generation, False)
        if state is HALF_OPEN and self.trials < self.config.half_open_max_calls:
            self.trials += 1
            return (self.generation, True)
        return None

    def settle(self, ticket: tuple[int, bool], kind: str, now: float) -> None:
        generation, trial = ticket
        if generation != self.generation:
            return
        if trial:
            self.trials -= 1
        if kind == "neutral":
            return
        if self.state is HALF_OPEN:
            if kind == "failure":
                self.move(OPEN, now)
            else:
                self.trial_successes += 1
                if self.trial_successes >= self.config.success_threshold:
                    self.move(CLOSED, now)
            return
        failed = kind == "failure"
        self.streak = self.streak + 1 if failed else 0
        self.calls = [(t, f) for t, f in self.calls if t > now - self.config.window_s]
        self.calls.append((now, failed))
        if not failed:
            return
        threshold, ratio = self.config.failure_threshold, self.config.failure_ratio
        if threshold is not None and self.streak >= threshold:
            self.move(OPEN, now)
            return
        if ratio is not None and len(self.calls) >= self.config.min_calls:
            failures = sum(1 for _, f in self.calls if f)
            if failures >= ratio * len(self.calls):
                self.move(OPEN, now)


class BreakerMachine(RuleBasedStateMachine):
    permits = Bundle("permits")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker: CircuitBreaker | None = None
        self.model: BreakerModel | None = None

    @precondition(lambda self: self.breaker is None)
    @rule(
        threshold=st.one_of(st.none(), st.integers(1, 4)),
        ratio=st.one_of(st.none(), st.sampled_from([0.25, 0.5, 1.0])),
        min_calls=st.integers(1, 5),
        window_s=st.sampled_from([1.0, 3.0, 10.0]),
        open_timeout_s=st.sampled_from([0.5, 1.0, 4.0]),
        half_open_max_calls=st.integers(1, 3),
        success_threshold=st.integers(1, 3),
    )
    def configure(
        self,
        threshold: int | None,
        ratio: float | None,
        min_calls: int,
        window_s: float,
        open_timeout_s: float,
        half_open_max_calls: int,
        success_threshold: int,
    ) -> None:
        if threshold is None and ratio is None:
            threshold = 2
        config = BreakerConfig(
            failure_threshold=threshold,
            failure_ratio=ratio,
            min_calls=min_calls,
            window_s=window_s,
            open_timeout_s=open_timeout_s,
            half_open_max_calls=half_open_max_calls,
            success_threshold=success_threshold,
        )
        self.breaker = CircuitBreaker("model", config, clock=self.clock)
        self.model = BreakerModel(config)

    def ready(self) -> bool:
        return self.breaker is not None

    @precondition(ready)
    @rule(target=permits)
    def admit(self) -> tuple[BreakerPermit, tuple[int, bool]] | None:
        assert self.breaker is not None and self.model is not None
        expected = self.model.admit(self.clock.now)
        try:
            permit = self.breaker.admit()
        except CircuitRejectedError as exc:
            assert expected is None
            assert exc.state == self.model.state.value
            if self.model.state is OPEN and not self.model.forced:
                remaining = self.model.opened_at + self.model.config.open_timeout_s - self.clock.now
                assert exc.retry_after_s == pytest.approx(remaining)
            return None
        assert expected is not None
        assert permit.trial == expected[1]
        return (permit, expected)

    @precondition(ready)
    @rule(entry=consumes(permits), kind=st.sampled_from(["success", "failure", "neutral", "error"]))
    def settle(self, entry: tuple[BreakerPermit, tuple[int, bool]] | None, kind: str) -> None:
        assert self.model is not None
        if entry is None:
            return
        permit, ticket = entry
        if kind == "success":
            permit.success()
        elif kind == "failure":
            permit.failure()
        elif kind == "neutral":
            permit.release()
        else:
            permit.record(PermanentError("ignored by the filter: a success"))
            kind = "success"
        self.model.settle(ticket, kind, self.clock.now)

    @precondition(ready)
    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 2.0, 5.0]))
    def advance(self, dt: float) -> None:
        self.clock.now += dt

    @precondition(ready)
    @rule()
    def reset(self) -> None:
        assert self.breaker is not None and self.model is not None
        self.breaker.reset()
        if self.model.state is not CLOSED:
            self.model.move(CLOSED, self.clock.now)
        else:
            self.model.streak = 0
            self.model.calls = []
        self.model.forced = False

    @precondition(ready)
    @rule()
    def force_open(self) -> None:
        assert self.breaker is not None and self.model is not None
        self.breaker.force_open()
        self.model.forced = True
        if self.model.state is not OPEN:
            self.model.move(OPEN, self.clock.now)

    @invariant()
    def same_state(self) -> None:
        if self.breaker is None or self.model is None:
            return
        assert self.breaker.state is self.model.look(self.clock.now)
        assert self.breaker.forced_open == self.model.forced
        if self.model.state is CLOSED:
            assert self.breaker.consecutive_failures == self.model.streak

    @invariant()
    def counters_add_up(self) -> None:
        if self.breaker is None:
            return
        stats = self.breaker.stats
        assert stats.opened >= stats.half_opened
        assert stats.successes + stats.failures + stats.neutral <= stats.admitted


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestBreakerStateMachine = BreakerMachine.TestCase
