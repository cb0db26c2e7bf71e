"""Property tests of daemon.supervise: restart intensity and backoff.

The intensity property drives a real Supervisor (under a MockClock, so each
example runs in milliseconds) with a child whose incarnations fail after drawn
run times, and compares every restart and the escalation with a small model of
the OTP rule: a restart at ``t`` is allowed only while the restarts in
``(t - period_s, t]`` (including it) number at most ``max_restarts``.
"""

from __future__ import annotations

import random
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import EscalationError
from daemon.supervise import (
    ChildContext,
    ChildSpec,
    EventKind,
    Supervisor,
    SupervisorEvent,
    SupervisorPolicy,
    UnexpectedExitError,
    backoff_delay_s,
)

RUN_TIMES = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
EXITS = st.sampled_from(["raise", "return"])


def model(
    steps: list[tuple[float, str]], max_restarts: int, period_s: float, backoff_s: float
) -> tuple[list[float], float | None, list[float]]:
    """(restart times, escalation time or None, failure times carried by the escalation)."""
    t = 0.0
    window: list[float] = []
    restarts: list[float] = []
    for run_s, _ in steps:
        t += run_s
        window = [w for w in window if w > t - period_s] + [t]
        if len(window) > max_restarts:
            return restarts, t, window
        restarts.append(t)
        t += backoff_s
    return restarts, None, []


@settings(max_examples=150, deadline=None)
@given(
    max_restarts=st.integers(min_value=0, max_value=3),
    period_s=st.sampled_from([1.0, 2.0, 5.0]),
    backoff_s=st.sampled_from([0.0, 0.25, 1.0]),
    steps=st.lists(st.tuples(RUN_TIMES, EXITS), max_size=10),
)
def test_intensity_matches_model_and_never_exceeds_max_restarts(
    max_restarts: int, period_s: float, backoff_s: float, steps: list[tuple[float, str]]
) -> None:
    events: list[SupervisorEvent] = []
    outcome: dict[str, Any] = {}

    async def flaky(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        if ctx.incarnation <= len(steps):
            run_s, kind = steps[ctx.incarnation - 1]
            await trio.sleep(run_s)
            if kind == "raise":
                raise ValueError(ctx.incarnation)
            return
        await ctx.wait_stop_requested()

    policy = SupervisorPolicy(
        max_restarts=max_restarts,
        period_s=period_s,
        backoff_initial_s=backoff_s,
        backoff_max_s=backoff_s,
        backoff_multiplier=1.0,
        backoff_jitter=0.0,
    )
    sup = Supervisor("s", [ChildSpec("f", flaky)], policy, on_event=events.append)

    async def runner(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await sup.run(task_status=task_status)
        except EscalationError as exc:
            outcome["error"] = exc
            outcome["at"] = trio.current_time()

    async def main() -> None:
        horizon = sum(run_s for run_s, _ in steps) + len(steps) * backoff_s + 1.0
        async with trio.open_nursery() as nursery:
            await nursery.start(runner)
            await trio.sleep(horizon)
            if "error" not in outcome:
                sup.request_stop()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    restarts = [e.at for e in events if e.kind is EventKind.RESTARTING]
    # The invariant itself, independent of the model:
    for r in restarts:
        assert sum(1 for other in restarts if r - period_s < other <= r) <= max_restarts

    expected_restarts, escalated_at, window = model(steps, max_restarts, period_s, backoff_s)
    assert restarts == expected_restarts
    if escalated_at is None:
        assert "error" not in outcome
        assert not sup.status().escalated
    else:
        error = outcome["error"]
        assert outcome["at"] == escalated_at
        assert [f.at for f in error.failures] == window
        for failure in error.failures:
            assert isinstance(failure.error, ValueError | UnexpectedExitError)
        assert sup.status().escalated


@settings(max_examples=300, deadline=None)
@given(
    initial=st.floats(min_value=0.0, max_value=5.0),
    extra=st.floats(min_value=0.0, max_value=50.0),
    multiplier=st.floats(min_value=1.0, max_value=4.0),
    jitter=st.floats(min_value=0.0, max_value=0.99),
    attempt=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_delay_stays_within_jitter_bounds_and_cap(
    initial: float, extra: float, multiplier: float, jitter: float, attempt: int, seed: int
) -> None:
    maximum = initial + extra
    policy = SupervisorPolicy(
        backoff_initial_s=initial,
        backoff_max_s=maximum,
        backoff_multiplier=multiplier,
        backoff_jitter=jitter,
    )
    delay = backoff_delay_s(policy, attempt, random.Random(seed))
    base = min(maximum, initial * multiplier ** min(attempt - 1, 1000))
    assert 0.0 <= delay <= maximum
    assert delay >= base * (1 - jitter) - 1e-9
    assert delay <= base * (1 + jitter) + 1e-9
