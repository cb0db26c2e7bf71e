"""Tests of daemon.supervise: the OTP matrix, intensity, backoff and lifecycle.

All timing is virtual (``autojump_clock``, which starts at 0.0); every time
asserted is exact. Children write a trace of ``(time, name, incarnation, what)``
so tests can assert order as well as time.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Container, Mapping
from typing import Any

import pytest
import trio

from daemon.errors import (
    ChildStartError,
    EscalationError,
    PoolFullError,
    StartTimeoutError,
    SupervisionError,
)
from daemon.supervise import (
    ChildContext,
    ChildSpec,
    ChildState,
    ChildStatus,
    EventKind,
    Restart,
    StaleHeartbeatError,
    Strategy,
    Supervisor,
    SupervisorEvent,
    SupervisorPolicy,
    SupervisorState,
    SupervisorStatus,
    UnexpectedExitError,
    backoff_delay_s,
    describe_error,
)

Trace = list[tuple[float, str, int, str]]

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _exit(kind: str, name: str) -> None:
    if kind == "return":
        return
    if kind == "raise":
        raise ValueError(f"{name} boom")
    if kind == "group":
        raise ExceptionGroup("grouped", [ValueError(f"{name} boom")])
    if kind == "keyboard":
        raise KeyboardInterrupt
    if kind == "systemexit":
        raise SystemExit(3)
    if kind == "basegroup":
        raise BaseExceptionGroup("mixed", [ValueError("x"), KeyboardInterrupt()])
    raise AssertionError(kind)


def worker(
    trace: Trace,
    *,
    exits: Mapping[int, tuple[float, str]] | None = None,
    start_s: float = 0.0,
    drain_s: float = 0.0,
    ignore_stop: bool = False,
    fail_start_on: Container[int] = (),
) -> Any:
    """A well-behaved child: ready after ``start_s``, drains ``drain_s`` on a stop request.

    ``exits[incarnation] = (after_s, kind)`` makes that incarnation end by itself.
    """
    plan = dict(exits or {})

    async def run(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        def note(what: str) -> None:
            trace.append((trio.current_time(), ctx.name, ctx.incarnation, what))

        try:
            if start_s:
                await trio.sleep(start_s)
            if ctx.incarnation in fail_start_on:
                note("start-failed")
                raise ValueError(f"{ctx.name} cannot start")
            note("ready")
            task_status.started()
            step = plan.get(ctx.incarnation)
            with trio.move_on_after(step[0] if step else math.inf):
                if ignore_stop:
                    await trio.sleep_forever()
                await ctx.wait_stop_requested()
                note("stop-requested")
                if drain_s:
                    await trio.sleep(drain_s)
                note("drained")
                return
            assert step is not None
            note(f"exit:{step[1]}")
            _exit(step[1], ctx.name)
        except trio.Cancelled:
            note("cancelled")
            raise

    return run


class Recorder:
    """``on_event`` observer keeping every event."""

    def __init__(self) -> None:
        self.events: list[SupervisorEvent] = []

    def __call__(self, event: SupervisorEvent) -> None:
        self.events.append(event)

    def of(self, child: str | None, supervisor: str | None = None) -> list[tuple[float, str]]:
        return [
            (e.at, e.kind.value)
            for e in self.events
            if e.child == child and (supervisor is None or e.supervisor == supervisor)
        ]

    def kinds(self, kind: EventKind) -> list[tuple[float, str | None]]:
        return [(e.at, e.child) for e in self.events if e.kind is kind]


class RunResult:
    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.ended_at: float | None = None


async def run_capturing(
    sup: Supervisor,
    result: RunResult,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``sup`` and record exactly what ``run()`` raised (not wrapped by a nursery)."""
    try:
        await sup.run(task_status=task_status)
    except trio.Cancelled:
        raise
    except BaseException as exc:
        result.error = exc
    result.ended_at = trio.current_time()


def child_status(status: SupervisorStatus, name: str) -> ChildStatus | None:
    return next((c for c in status.children if c.name == name), None)


def one(status: SupervisorStatus, name: str) -> ChildStatus:
    found = child_status(status, name)
    assert found is not None, f"no child {name!r} in {[c.name for c in status.children]}"
    return found


def what(trace: Trace, what_: str, at: float | None = None) -> list[str]:
    return [n for (t, n, _, w) in trace if w == what_ and (at is None or t == at)]


def policy(**overrides: Any) -> SupervisorPolicy:
    values: dict[str, Any] = {
        "max_restarts": 10,
        "period_s": 60.0,
        "backoff_initial_s": 0.5,
        "backoff_jitter": 0.0,
    }
    values.update(overrides)
    return SupervisorPolicy(**values)


# ---------------------------------------------------------------------------------------------
# restart type x exit kind x strategy
# ---------------------------------------------------------------------------------------------

SOFT_EXITS = ["return", "raise", "group"]
HARD_EXITS: dict[str, type[BaseException]] = {
    "keyboard": KeyboardInterrupt,
    "systemexit": SystemExit,
    "basegroup": KeyboardInterrupt,  # a group holding a BaseException propagates that one
}
GROUPS = {
    Strategy.ONE_FOR_ONE: ["b"],
    Strategy.DYNAMIC: ["b"],
    Strategy.ONE_FOR_ALL: ["a", "b", "c"],
    Strategy.REST_FOR_ONE: ["b", "c"],
}


async def start_tree(
    nursery: trio.Nursery,
    strategy: Strategy,
    specs: list[ChildSpec],
    rec: Recorder,
    result: RunResult,
) -> Supervisor:
    """Static children for the OTP strategies; added at run time for the dynamic pool."""
    dynamic = strategy is Strategy.DYNAMIC
    sup = Supervisor("sup", [] if dynamic else specs, policy(strategy=strategy), on_event=rec)
    await nursery.start(run_capturing, sup, result)
    if dynamic:
        for spec in specs:
            await sup.start_child(spec)
    return sup


@pytest.mark.parametrize("exit_kind", SOFT_EXITS)
@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
@pytest.mark.parametrize("strategy", list(Strategy), ids=lambda s: s.value)
async def test_restart_matrix(
    strategy: Strategy, restart: Restart, exit_kind: str, autojump_clock: Any
) -> None:
    trace: Trace = []
    rec = Recorder()
    result = RunResult()
    specs = [
        ChildSpec("a", worker(trace)),
        ChildSpec("b", worker(trace, exits={1: (1.0, exit_kind)}), restart=restart),
        ChildSpec("c", worker(trace)),
    ]
    async with trio.open_nursery() as nursery:
        sup = await start_tree(nursery, strategy, specs, rec, result)
        await trio.sleep_until(5.0)
        mid = sup.status()
        sup.request_stop()
    assert result.error is None
    assert result.ended_at == 5.0

    restarted = restart is Restart.PERMANENT or (
        restart is Restart.TRANSIENT and exit_kind != "return"
    )
    error_text = None if exit_kind == "return" else "ValueError: b boom"
    down = "exited" if exit_kind == "return" else "failed"
    b_events = rec.of("b")
    assert (1.0, down) in b_events
    readies_later = [(t, n, i) for (t, n, i, w) in trace if w == "ready" and t > 0]
    b = child_status(mid, "b")

    if restarted:
        group = GROUPS[strategy]
        # Siblings in the group are stopped in reverse order, then all restart in order.
        assert what(trace, "stop-requested", at=1.0) == [n for n in reversed(group) if n != "b"]
        assert readies_later == [(1.5, n, 2) for n in group]
        assert [c for (t, c) in rec.kinds(EventKind.RESTARTING) if t == 1.0] == group
        assert b is not None
        assert (b.state, b.incarnation, b.restarts, b.starts) == (ChildState.RUNNING, 2, 1, 2)
        assert b.last_error == error_text
        assert (mid.restarts, mid.restarts_in_period, mid.total_restarts) == (1, 1, 1)
        for name in "ac":
            expected = 2 if name in group else 1
            assert one(mid, name).incarnation == expected
    else:
        assert what(trace, "stop-requested", at=1.0) == []
        assert readies_later == []
        assert rec.kinds(EventKind.RESTARTING) == []
        assert mid.restarts == 0
        if strategy is Strategy.DYNAMIC:
            assert b is None  # ended for good: it left the pool
        else:
            assert b is not None
            expected_state = ChildState.STOPPED if exit_kind == "return" else ChildState.FAILED
            assert (b.state, b.restarts, b.last_error) == (expected_state, 0, error_text)
            assert b.last_exit_at == 1.0

    # Orderly stop at t=5, in reverse start order, of whatever is still running.
    live = ["a", "b", "c"] if restarted else ["a", "c"]
    assert what(trace, "stop-requested", at=5.0) == list(reversed(live))
    assert [c for (t, c) in rec.kinds(EventKind.STOPPED) if t == 5.0] == [
        *reversed(live),
        None,
    ]
    final = sup.status()
    assert final.state is SupervisorState.STOPPED
    assert not final.escalated


@pytest.mark.parametrize("exit_kind", list(HARD_EXITS))
@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
@pytest.mark.parametrize("strategy", list(Strategy), ids=lambda s: s.value)
async def test_non_exceptions_propagate_and_tear_down(
    strategy: Strategy, restart: Restart, exit_kind: str, autojump_clock: Any
) -> None:
    trace: Trace = []
    rec = Recorder()
    result = RunResult()
    specs = [
        ChildSpec("a", worker(trace)),
        ChildSpec("b", worker(trace, exits={1: (1.0, exit_kind)}), restart=restart),
        ChildSpec("c", worker(trace)),
    ]
    async with trio.open_nursery() as nursery:
        sup = await start_tree(nursery, strategy, specs, rec, result)
        await trio.sleep_until(5.0)
    # Unwrapped, whatever the restart type: no restart, no group.
    assert type(result.error) is HARD_EXITS[exit_kind]
    if exit_kind == "systemexit":
        assert isinstance(result.error, SystemExit) and result.error.code == 3
    assert result.ended_at == 1.0
    assert sorted(what(trace, "cancelled", at=1.0)) == ["a", "c"]
    assert [(t, n) for (t, n, _, w) in trace if w == "ready" and t > 0] == []
    assert rec.kinds(EventKind.RESTARTING) == []
    status = sup.status()
    assert status.state is SupervisorState.STOPPED
    assert {c.state for c in status.children} == {ChildState.STOPPED}


async def test_outside_cancellation_cancels_everything_promptly(autojump_clock: Any) -> None:
    trace: Trace = []
    sup = Supervisor(
        "sup",
        [ChildSpec("a", worker(trace)), ChildSpec("b", worker(trace, ignore_stop=True))],
        policy(),
    )
    with trio.move_on_after(3.0) as scope:
        await sup.run()
    assert scope.cancelled_caught
    assert trio.current_time() == 3.0
    assert sorted(what(trace, "cancelled", at=3.0)) == ["a", "b"]
    assert what(trace, "stop-requested") == []  # cancelled, not asked
    assert {c.state for c in sup.status().children} == {ChildState.STOPPED}


async def test_keyboard_interrupt_during_outside_cancellation_is_not_swallowed(
    autojump_clock: Any,
) -> None:
    """Cancelled and KeyboardInterrupt together: the KeyboardInterrupt must win.

    Were the Cancelled re-raised instead, the outer cancel scope would swallow it
    and the interrupt would be lost.
    """
    trace: Trace = []

    async def converts(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise KeyboardInterrupt from None

    sup = Supervisor("sup", [ChildSpec("a", worker(trace)), ChildSpec("k", converts)], policy())
    with pytest.raises(KeyboardInterrupt):
        with trio.move_on_after(1.0):
            await sup.run()
    assert trio.current_time() == 1.0
    assert what(trace, "cancelled", at=1.0) == ["a"]


async def test_exception_group_failure_records_first_leaf(autojump_clock: Any) -> None:
    async def grouped(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep(1)
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [KeyError("k")]), OSError("x")])

    rec = Recorder()
    sup = Supervisor(
        "sup", [ChildSpec("g", grouped, restart=Restart.TRANSIENT)], policy(), on_event=rec
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1.25)
        status = one(sup.status(), "g")
        sup.request_stop()
    assert status.state is ChildState.BACKOFF
    assert status.last_error == "KeyError: 'k' (+1 more in ExceptionGroup)"
    failed = [e for e in rec.events if e.kind is EventKind.FAILED]
    assert len(failed) == 1 and isinstance(failed[0].error, ExceptionGroup)


def test_describe_error() -> None:
    assert describe_error(ValueError("boom")) == "ValueError: boom"
    assert describe_error(TimeoutError()) == "TimeoutError"
    assert describe_error(ExceptionGroup("g", [ValueError("a")])) == "ValueError: a"
    two = ExceptionGroup("g", [ValueError("a"), KeyError("b")])
    assert describe_error(two) == "ValueError: a (+1 more in ExceptionGroup)"


# ---------------------------------------------------------------------------------------------
# one_for_all / rest_for_one details
# ---------------------------------------------------------------------------------------------


async def test_one_for_all_does_not_restart_temporary_siblings(autojump_clock: Any) -> None:
    trace: Trace = []
    specs = [
        ChildSpec("a", worker(trace), restart=Restart.TEMPORARY),
        ChildSpec("b", worker(trace, exits={1: (1.0, "raise")})),
        ChildSpec("c", worker(trace), restart=Restart.TRANSIENT),
    ]
    sup = Supervisor("sup", specs, policy(strategy=Strategy.ONE_FOR_ALL))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep_until(2.0)
        status = sup.status()
        sup.request_stop()
    assert what(trace, "stop-requested", at=1.0) == ["c", "a"]
    assert [(t, n) for (t, n, _, w) in trace if w == "ready" and t > 0] == [(1.5, "b"), (1.5, "c")]
    assert one(status, "a").state is ChildState.STOPPED
    assert one(status, "a").incarnation == 1
    assert (one(status, "c").state, one(status, "c").restarts) == (ChildState.RUNNING, 1)


async def test_one_for_all_failed_initial_start_restarts_the_group_before_ready(
    autojump_clock: Any,
) -> None:
    trace: Trace = []
    specs = [
        ChildSpec("a", worker(trace)),
        ChildSpec("b", worker(trace, fail_start_on={1})),
        ChildSpec("c", worker(trace)),
    ]
    rec = Recorder()
    sup = Supervisor(
        "sup",
        specs,
        policy(strategy=Strategy.ONE_FOR_ALL, fail_fast_start=False),
        on_event=rec,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 0.5  # ready = every child ready, after the group restart
        status = sup.status()
        sup.request_stop()
    assert [(t, n, i, w) for (t, n, i, w) in trace if w != "drained"] == [
        (0.0, "a", 1, "ready"),
        (0.0, "b", 1, "start-failed"),
        (0.0, "a", 1, "stop-requested"),
        (0.5, "a", 2, "ready"),
        (0.5, "b", 2, "ready"),
        (0.5, "c", 1, "ready"),
        (0.5, "c", 1, "stop-requested"),
        (0.5, "b", 2, "stop-requested"),
        (0.5, "a", 2, "stop-requested"),
    ]
    b = one(status, "b")
    assert b.last_error == "ChildStartError: child 'b' failed before reporting ready: " + (
        "ValueError: b cannot start"
    )
    assert rec.kinds(EventKind.STARTED)[-1] == (0.5, None)
    failure = next(e.error for e in rec.events if e.kind is EventKind.FAILED)
    assert isinstance(failure, ChildStartError)
    assert isinstance(failure.__cause__, ValueError)


async def test_rest_for_one_first_child_restarts_everything(autojump_clock: Any) -> None:
    trace: Trace = []
    specs = [
        ChildSpec("a", worker(trace, exits={1: (1.0, "raise")})),
        ChildSpec("b", worker(trace)),
        ChildSpec("c", worker(trace)),
    ]
    sup = Supervisor("sup", specs, policy(strategy=Strategy.REST_FOR_ONE))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep_until(2.0)
        sup.request_stop()
    assert what(trace, "stop-requested", at=1.0) == ["c", "b"]
    assert [n for (t, n, _, w) in trace if w == "ready" and t == 1.5] == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------
# intensity and escalation
# ---------------------------------------------------------------------------------------------


async def test_escalation_stops_children_in_reverse_and_carries_failures(
    autojump_clock: Any,
) -> None:
    trace: Trace = []
    rec = Recorder()
    always = {n: (1.0, "raise") for n in range(1, 10)}
    specs = [
        ChildSpec("a", worker(trace)),
        ChildSpec("b", worker(trace, exits=always)),
        ChildSpec("c", worker(trace)),
    ]
    sup = Supervisor(
        "sup", specs, policy(max_restarts=2, period_s=10.0, backoff_multiplier=2.0), on_event=rec
    )
    result = RunResult()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_capturing, sup, result)
    # b fails at 1.0 (restart after 0.5), 2.5 (after 1.0), 4.5: the third restart > 2.
    assert type(result.error) is EscalationError
    assert result.ended_at == 4.5
    err = result.error
    assert err.supervisor == "sup"
    assert [(f.child, type(f.error), f.at) for f in err.failures] == [
        ("b", ValueError, 1.0),
        ("b", ValueError, 2.5),
        ("b", ValueError, 4.5),
    ]
    assert what(trace, "stop-requested", at=4.5) == ["c", "a"]
    assert rec.kinds(EventKind.ESCALATED) == [(4.5, None)]
    status = sup.status()
    assert status.escalated and status.state is SupervisorState.ESCALATED
    assert (status.restarts, status.failures, status.escalations) == (2, 3, 1)
    assert [c.state for c in status.children] == [
        ChildState.STOPPED,
        ChildState.FAILED,
        ChildState.STOPPED,
    ]


async def test_normal_returns_of_permanent_children_count_toward_intensity(
    autojump_clock: Any,
) -> None:
    trace: Trace = []
    returns = {n: (1.0, "return") for n in range(1, 10)}
    sup = Supervisor("sup", [ChildSpec("p", worker(trace, exits=returns))], policy(max_restarts=1))
    with pytest.raises(EscalationError) as info:
        await sup.run()
    err = info.value
    assert [(f.child, type(f.error), f.at) for f in err.failures] == [
        ("p", UnexpectedExitError, 1.0),
        ("p", UnexpectedExitError, 2.5),
    ]


@pytest.mark.parametrize(
    ("run_s", "escalates_at"),
    [
        (4.5, None),  # failures 4.5, 9.5, 14.5 ...: the old one leaves the window exactly
        (4.25, 9.0),  # failures 4.25, 9.0: both within 5 s -> 2 > max_restarts=1
    ],
)
async def test_intensity_window_is_half_open(
    run_s: float, escalates_at: float | None, autojump_clock: Any
) -> None:
    trace: Trace = []
    exits = {n: (run_s, "raise") for n in range(1, 5)}
    sup = Supervisor(
        "sup",
        [ChildSpec("w", worker(trace, exits=exits))],
        policy(max_restarts=1, period_s=5.0, backoff_multiplier=1.0),
    )
    result = RunResult()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_capturing, sup, result)
        await trio.sleep_until(30.0)
        sup.request_stop()
    if escalates_at is None:
        assert result.error is None
        assert sup.status().restarts == 4
        assert not sup.status().escalated
    else:
        assert isinstance(result.error, EscalationError)
        assert result.ended_at == escalates_at


async def test_escalation_before_ready_fails_the_start(autojump_clock: Any) -> None:
    trace: Trace = []
    sup = Supervisor(
        "sup",
        [ChildSpec("a", worker(trace)), ChildSpec("b", worker(trace, fail_start_on=range(99)))],
        policy(max_restarts=1, fail_fast_start=False),
    )
    with pytest.raises(EscalationError) as info:
        await sup.run()
    assert trio.current_time() == 0.5
    assert [type(f.error) for f in info.value.failures] == [ChildStartError, ChildStartError]
    assert what(trace, "stop-requested") == ["a"]


# ---------------------------------------------------------------------------------------------
# backoff
# ---------------------------------------------------------------------------------------------


def test_backoff_delay_exponential_and_capped() -> None:
    p = SupervisorPolicy(backoff_initial_s=0.1, backoff_max_s=1.0, backoff_jitter=0.0)
    rng = random.Random(0)
    delays = [backoff_delay_s(p, n, rng) for n in range(1, 8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert backoff_delay_s(p, 10_000, rng) == 1.0  # no overflow in a long crash loop
    assert rng.random() == random.Random(0).random()  # jitter 0 never touches the rng


def test_backoff_delay_jitter_uses_the_injected_rng() -> None:
    p = SupervisorPolicy(backoff_initial_s=0.1, backoff_max_s=1.0, backoff_jitter=0.2)
    reference = random.Random(42)
    u1, u2 = reference.uniform(-0.2, 0.2), reference.uniform(-0.2, 0.2)
    rng = random.Random(42)
    assert backoff_delay_s(p, 1, rng) == 0.1 * (1 + u1)
    assert backoff_delay_s(p, 3, rng) == 0.4 * (1 + u2)


async def test_restart_times_follow_seeded_jittered_backoff(autojump_clock: Any) -> None:
    trace: Trace = []
    exits = {n: (0.0, "raise") for n in range(1, 9)}
    p = SupervisorPolicy(max_restarts=20, backoff_initial_s=0.1, backoff_max_s=1.0)
    sup = Supervisor("sup", [ChildSpec("w", worker(trace, exits=exits))], p, rng=random.Random(7))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep_until(20.0)
        sup.request_stop()
    ready = [t for (t, _, _, w) in trace if w == "ready"]
    assert len(ready) == 9
    expected_rng = random.Random(7)
    expected = [0.0]
    for n in range(1, 9):
        base = min(1.0, 0.1 * 2 ** (n - 1))
        expected.append(expected[-1] + min(1.0, base * (1 + expected_rng.uniform(-0.2, 0.2))))
    assert ready == pytest.approx(expected, abs=1e-12)
    # The jitter really moved them off the plain exponential schedule.
    assert ready[1] != 0.1


async def test_backoff_resets_once_old_restarts_leave_the_period(autojump_clock: Any) -> None:
    trace: Trace = []
    # Incarnations 1 and 2 fail quickly; 3 runs 20 s (> period 10 s) then fails.
    exits = {1: (1.0, "raise"), 2: (1.0, "raise"), 3: (20.0, "raise")}
    sup = Supervisor(
        "sup",
        [ChildSpec("w", worker(trace, exits=exits))],
        policy(period_s=10.0, backoff_initial_s=1.0, backoff_multiplier=2.0),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep_until(40.0)
        sup.request_stop()
    ready = [(t, i) for (t, _, i, w) in trace if w == "ready"]
    # fail 1.0 -> +1 -> 2.0; fail 3.0 -> +2 -> 5.0; fail 25.0 -> first again -> +1 -> 26.0
    assert ready == [(0.0, 1), (2.0, 2), (5.0, 3), (26.0, 4)]


# ---------------------------------------------------------------------------------------------
# ordered shutdown, grace, cancel, STUCK
# ---------------------------------------------------------------------------------------------


async def test_shutdown_reverse_order_grace_then_cancel(autojump_clock: Any) -> None:
    trace: Trace = []
    rec = Recorder()
    specs = [
        ChildSpec("a", worker(trace, drain_s=1.0), shutdown_grace_s=2.0),
        ChildSpec("b", worker(trace, ignore_stop=True), shutdown_grace_s=2.0),
        ChildSpec("c", worker(trace), shutdown_grace_s=2.0),
    ]
    sup = Supervisor("sup", specs, policy(), on_event=rec)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep_until(5.0)
        sup.request_stop()
        await trio.sleep_until(6.0)
        assert one(sup.status(), "b").state is ChildState.STOPPING
        assert one(sup.status(), "a").state is ChildState.RUNNING  # not asked yet
        assert sup.status().state is SupervisorState.STOPPING
    assert trio.current_time() == 8.0
    assert [(t, n, w) for (t, n, _, w) in trace if t >= 5.0] == [
        (5.0, "c", "stop-requested"),
        (5.0, "c", "drained"),
        (7.0, "b", "cancelled"),  # ignored the request: cancelled when its grace ran out
        (7.0, "a", "stop-requested"),
        (8.0, "a", "drained"),  # drained within its grace: never cancelled
    ]
    assert rec.kinds(EventKind.STOPPED) == [(5.0, "c"), (7.0, "b"), (8.0, "a"), (8.0, None)]


async def test_stuck_child_is_reported_and_waited_for(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.supervise")
    trace: Trace = []
    release = trio.Event()
    rec = Recorder()

    async def stubborn(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            trace.append((trio.current_time(), ctx.name, ctx.incarnation, "cancelled"))
            with trio.CancelScope(shield=True):
                await release.wait()
            trace.append((trio.current_time(), ctx.name, ctx.incarnation, "released"))
            raise

    specs = [
        ChildSpec("a", worker(trace)),
        ChildSpec("s", stubborn, shutdown_grace_s=1.0, cleanup_timeout_s=2.0),
    ]
    sup = Supervisor("sup", specs, policy(), on_event=rec)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep_until(1.0)
        sup.request_stop()
        await trio.sleep_until(3.5)
        assert one(sup.status(), "s").state is ChildState.STOPPING
        assert one(sup.status(), "s").stuck_for_s is None
        await trio.sleep_until(70.0)
        s = one(sup.status(), "s")
        assert (s.state, s.stuck_for_s) == (ChildState.STUCK, 66.0)
        assert one(sup.status(), "a").state is ChildState.RUNNING  # waits its turn
        release.set()
    assert trio.current_time() == 70.0
    assert rec.kinds(EventKind.STUCK) == [(4.0, "s")]
    assert [(t, n, w) for (t, n, _, w) in trace if w != "ready"] == [
        (2.0, "s", "cancelled"),
        (70.0, "s", "released"),
        (70.0, "a", "stop-requested"),
        (70.0, "a", "drained"),
    ]
    s = one(sup.status(), "s")
    assert (s.state, s.stuck_for_s) == (ChildState.STOPPED, None)
    messages = [r.getMessage() for r in caplog.records]
    assert any("s ignores cancellation" in m and "STUCK" in m for m in messages)
    assert any("still stuck after 60 s" in m for m in messages)


# ---------------------------------------------------------------------------------------------
# start deadline
# ---------------------------------------------------------------------------------------------


async def test_children_start_in_order_and_ready_means_all_ready(autojump_clock: Any) -> None:
    trace: Trace = []
    specs = [
        ChildSpec("a", worker(trace, start_s=1.0), start_timeout_s=2.0),
        ChildSpec("b", worker(trace, start_s=1.5), start_timeout_s=2.0),
    ]
    sup = Supervisor("sup", specs, policy())
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 2.5
        assert sup.status().state is SupervisorState.RUNNING
        sup.request_stop()
    assert [(t, n) for (t, n, _, w) in trace if w == "ready"] == [(1.0, "a"), (2.5, "b")]


async def test_start_deadline_is_a_failed_start_that_counts_as_a_restart(
    autojump_clock: Any,
) -> None:
    trace: Trace = []
    rec = Recorder()
    never_ready = worker(trace, start_s=math.inf)
    sup = Supervisor(
        "sup",
        [ChildSpec("slow", never_ready, start_timeout_s=2.0)],
        policy(max_restarts=1, fail_fast_start=False),
        on_event=rec,
    )
    with pytest.raises(EscalationError) as info:
        await sup.run()
    # start 0 -> timeout 2.0 -> backoff 0.5 -> start 2.5 -> timeout 4.5 -> 2 > 1
    assert trio.current_time() == 4.5
    assert [(type(f.error), f.at) for f in info.value.failures] == [
        (StartTimeoutError, 2.0),
        (StartTimeoutError, 4.5),
    ]
    assert [(t, i) for (t, _, i, w) in trace if w == "cancelled"] == [(2.0, 1), (4.5, 2)]
    assert one(sup.status(), "slow").last_error == (
        "StartTimeoutError: child 'slow' did not report ready within 2 s"
    )


async def test_child_ignoring_start_deadline_is_reported_stuck(autojump_clock: Any) -> None:
    rec = Recorder()

    async def shielded_start(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(10.0)
        await trio.lowlevel.checkpoint()  # the pending cancellation lands here
        task_status.started()  # pragma: no cover

    spec = ChildSpec(
        "s", shielded_start, restart=Restart.TEMPORARY, start_timeout_s=2.0, cleanup_timeout_s=1.0
    )
    sup = Supervisor("sup", [spec], policy(fail_fast_start=False), on_event=rec)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep_until(5.0)
        s = one(sup.status(), "s")
        assert (s.state, s.stuck_for_s) == (ChildState.STUCK, 2.0)
        await trio.sleep_until(11.0)
        s = one(sup.status(), "s")
        assert (s.state, s.stuck_for_s) == (ChildState.FAILED, None)
        assert s.last_error is not None and s.last_error.startswith("StartTimeoutError")
        assert sup.status().state is SupervisorState.RUNNING  # temporary: settled, ready
        sup.request_stop()
    assert rec.kinds(EventKind.STUCK) == [(3.0, "s")]
    assert rec.kinds(EventKind.STARTED) == [(10.0, None)]


async def test_stop_requested_during_a_start_abandons_it_gracefully(autojump_clock: Any) -> None:
    trace: Trace = []
    rec = Recorder()

    async def slow_start(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.move_on_after(100):
            await ctx.wait_stop_requested()
            trace.append((trio.current_time(), ctx.name, ctx.incarnation, "stop-requested"))
            return  # gives up starting
        task_status.started()  # pragma: no cover

    specs = [ChildSpec("a", worker(trace)), ChildSpec("b", slow_start, start_timeout_s=50.0)]
    sup = Supervisor("sup", specs, policy(), on_event=rec)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await trio.sleep(1.0)
            sup.request_stop()
    assert trio.current_time() == 1.0
    assert what(trace, "stop-requested", at=1.0) == ["b", "a"]
    assert rec.kinds(EventKind.FAILED) == []
    assert sup.status().failures == 0


# ---------------------------------------------------------------------------------------------
# heartbeats
# ---------------------------------------------------------------------------------------------


async def test_stale_heartbeat_restarts_the_child(autojump_clock: Any) -> None:
    trace: Trace = []
    rec = Recorder()

    async def beating(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        try:
            if ctx.incarnation == 1:
                for _ in range(2):
                    await trio.sleep(1.0)
                    ctx.heartbeat()
                await trio.sleep_forever()  # hung: the loop is fine, the task is not
            while True:
                await trio.sleep(1.0)
                ctx.heartbeat()
        except trio.Cancelled:
            trace.append((trio.current_time(), ctx.name, ctx.incarnation, "cancelled"))
            raise

    spec = ChildSpec("h", beating, heartbeat_interval_s=1.0, heartbeat_tolerance=3.0)
    sup = Supervisor("sup", [spec, ChildSpec("other", worker(trace))], policy(), on_event=rec)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep_until(4.5)
        h = one(sup.status(), "h")
        assert (h.state, h.heartbeat_age_s, h.heartbeat_stale) == (ChildState.RUNNING, 2.5, False)
        await trio.sleep_until(5.25)
        h = one(sup.status(), "h")
        assert (h.state, h.heartbeat_stale, h.heartbeat_age_s) == (ChildState.BACKOFF, True, 3.25)
        assert h.last_error == (
            "StaleHeartbeatError: child 'h': no heartbeat for 3 s (interval 1 s x tolerance 3)"
        )
        await trio.sleep_until(6.0)
        h = one(sup.status(), "h")
        assert (h.state, h.incarnation, h.heartbeat_stale) == (ChildState.RUNNING, 2, False)
        assert h.heartbeat_age_s == 0.5
        await trio.sleep_until(30.0)  # the new incarnation beats: no further restart
        assert one(sup.status(), "h").incarnation == 2
        sup.request_stop()
    assert (5.0, "stale_heartbeat") in rec.of("h")
    assert [(t, k) for (t, k) in rec.of("h") if t >= 5.0][:4] == [
        (5.0, "stale_heartbeat"),
        (5.0, "failed"),
        (5.0, "restarting"),
        (5.5, "started"),
    ]
    # Cancelled when found stale; the 2nd incarnation ignores stop requests, so shutdown
    # (requested at 30.0) cancels it after its 5 s grace.
    assert [(t, n, i) for (t, n, i, w) in trace if w == "cancelled"] == [
        (5.0, "h", 1),
        (35.0, "h", 2),
    ]
    failure = next(e.error for e in rec.events if e.kind is EventKind.FAILED)
    assert isinstance(failure, StaleHeartbeatError)
    assert one(sup.status(), "other").incarnation == 1  # one_for_one: untouched


async def test_heartbeat_of_an_undeclared_child_is_harmless(autojump_clock: Any) -> None:
    async def beats(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        ctx.heartbeat()
        await ctx.wait_stop_requested()

    sup = Supervisor("sup", [ChildSpec("x", beats)], policy())
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(100)
        x = one(sup.status(), "x")
        assert (x.heartbeat_interval_s, x.heartbeat_age_s, x.heartbeat_stale) == (
            None,
            None,
            False,
        )
        sup.request_stop()


# ---------------------------------------------------------------------------------------------
# nested supervisors
# ---------------------------------------------------------------------------------------------


async def test_nested_escalation_is_handled_by_the_parent_policy(autojump_clock: Any) -> None:
    trace: Trace = []
    rec = Recorder()
    always = {n: (1.0, "raise") for n in range(1, 10)}
    inner = Supervisor(
        "inner", [ChildSpec("w", worker(trace, exits=always))], policy(max_restarts=1), on_event=rec
    )
    parent = Supervisor(
        "root",
        [ChildSpec("p", worker(trace)), inner.as_child()],
        policy(max_restarts=1, backoff_initial_s=1.0),
        on_event=rec,
    )
    result = RunResult()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_capturing, parent, result)
        await trio.sleep_until(3.0)
        node = one(parent.status(), "inner")
        assert node.state is ChildState.BACKOFF
        assert node.last_error is not None
        assert node.last_error.startswith("EscalationError: supervisor 'inner' exceeded")
        assert node.supervisor is not None and node.supervisor.escalated
        await trio.sleep_until(4.0)
        node = one(parent.status(), "inner")
        assert (node.state, node.incarnation, node.restarts) == (ChildState.RUNNING, 2, 1)
        assert node.supervisor is not None
        assert node.supervisor.state is SupervisorState.RUNNING
        assert not node.supervisor.escalated
        assert one(node.supervisor, "w").state is ChildState.RUNNING
    # inner: w fails 1.0, 2.5 -> escalates at 2.5; parent restarts it at 3.5;
    # w fails 4.5, 6.0 -> escalates at 6.0; 2 restarts > 1 -> the parent escalates.
    assert type(result.error) is EscalationError
    assert result.ended_at == 6.0
    assert result.error.supervisor == "root"
    inner_failures = [(f.child, f.at) for f in result.error.failures]
    assert inner_failures == [("inner", 2.5), ("inner", 6.0)]
    nested = result.error.failures[0].error
    assert isinstance(nested, EscalationError) and nested.supervisor == "inner"
    assert [(f.child, f.at) for f in nested.failures] == [("w", 1.0), ("w", 2.5)]
    assert [(e.supervisor, e.at) for e in rec.events if e.kind is EventKind.ESCALATED] == [
        ("inner", 2.5),
        ("inner", 6.0),
        ("root", 6.0),
    ]
    assert what(trace, "stop-requested", at=6.0) == ["p"]


async def test_nested_graceful_stop_is_reverse_order_through_the_tree(
    autojump_clock: Any,
) -> None:
    trace: Trace = []
    inner = Supervisor(
        "inner",
        [ChildSpec("y", worker(trace, drain_s=1.0)), ChildSpec("z", worker(trace, drain_s=1.0))],
        policy(),
    )
    spec = inner.as_child()
    assert spec.shutdown_grace_s == 1.0 + 2 * (5.0 + 5.0)
    root = Supervisor(
        "root", [ChildSpec("x", worker(trace)), spec, ChildSpec("q", worker(trace))], policy()
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert [n for (_, n, _, w) in trace if w == "ready"] == ["x", "y", "z", "q"]
        root.request_stop()
    assert trio.current_time() == 2.0
    assert [(t, n) for (t, n, _, w) in trace if w == "stop-requested"] == [
        (0.0, "q"),
        (0.0, "z"),
        (1.0, "y"),
        (2.0, "x"),
    ]
    assert one(root.status(), "inner").state is ChildState.STOPPED
    # It can run again (a parent restarting it does exactly that).
    async with trio.open_nursery() as nursery:
        await nursery.start(inner.run)
        assert inner.status().state is SupervisorState.RUNNING
        inner.request_stop()


async def test_supervisor_cannot_run_twice_at_once(autojump_clock: Any) -> None:
    sup = Supervisor("sup", [], policy())
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(RuntimeError, match="already running"):
            await sup.run()
        sup.request_stop()


# ---------------------------------------------------------------------------------------------
# dynamic pool
# ---------------------------------------------------------------------------------------------


async def test_dynamic_pool_cap_duplicates_and_stop_child(autojump_clock: Any) -> None:
    trace: Trace = []
    rec = Recorder()
    sup = Supervisor("pool", [], policy(strategy=Strategy.DYNAMIC, max_children=2), on_event=rec)
    with pytest.raises(SupervisionError, match="not running"):
        await sup.start_child(ChildSpec("early", worker(trace)))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 0.0  # an empty pool is ready at once
        await sup.start_child(ChildSpec("w1", worker(trace, start_s=1.0)))
        assert trio.current_time() == 1.0  # returns once the child is ready
        assert one(sup.status(), "w1").state is ChildState.RUNNING
        await sup.start_child(ChildSpec("w2", worker(trace, drain_s=0.5)))
        with pytest.raises(PoolFullError):
            await sup.start_child(ChildSpec("w3", worker(trace)))
        with pytest.raises(ValueError, match="duplicate"):
            await sup.start_child(ChildSpec("w1", worker(trace)))

        await sup.stop_child("w2")
        assert trio.current_time() == 1.5  # graceful: drained within its grace
        assert [c.name for c in sup.status().children] == ["w1"]
        with pytest.raises(KeyError):
            await sup.stop_child("w2")

        with pytest.raises(ChildStartError) as info:
            await sup.start_child(ChildSpec("bad", worker(trace, fail_start_on={1})))
        assert isinstance(info.value.__cause__, ValueError)
        assert [c.name for c in sup.status().children] == ["w1"]  # not added, not restarted

        await sup.start_child(ChildSpec("w2", worker(trace)))  # the name is free again
        assert [c.name for c in sup.status().children] == ["w1", "w2"]
        sup.request_stop()
        with pytest.raises(SupervisionError):
            await sup.start_child(ChildSpec("late", worker(trace)))
    assert [(t, n, i) for (t, n, i, w) in trace if w == "stop-requested"] == [
        (1.5 - 0.5, "w2", 1),
        (1.5, "w2", 1),
        (1.5, "w1", 1),
    ]
    assert sup.status().failures == 1
    assert (1.5, "stopped") in rec.of("w2")


async def test_start_child_on_a_static_supervisor_appends_last(autojump_clock: Any) -> None:
    trace: Trace = []
    sup = Supervisor("sup", [ChildSpec("a", worker(trace))], policy())
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.start_child(ChildSpec("b", worker(trace)))
        sup.request_stop()
    assert what(trace, "stop-requested") == ["b", "a"]


# ---------------------------------------------------------------------------------------------
# status, events, validation
# ---------------------------------------------------------------------------------------------


async def test_status_snapshot_contents(autojump_clock: Any) -> None:
    trace: Trace = []

    async def beating(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep(2.0)
        ctx.heartbeat()
        await ctx.wait_stop_requested()

    inner = Supervisor("inner", [ChildSpec("x", worker(trace))], policy())
    root = Supervisor(
        "root",
        [
            ChildSpec("a", beating, heartbeat_interval_s=1.0),
            inner.as_child(critical=False),
            ChildSpec("b", worker(trace, exits={1: (1.0, "raise")}), restart=Restart.TEMPORARY),
        ],
        policy(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep_until(2.5)
        status = root.status()
        root.request_stop()
    doc = json.loads(json.dumps(status.to_dict()))
    assert {k: doc[k] for k in ("name", "strategy", "state", "escalated")} == {
        "name": "root",
        "strategy": "one_for_one",
        "state": "running",
        "escalated": False,
    }
    assert (doc["starts"], doc["exits"], doc["failures"], doc["restarts"]) == (3, 1, 1, 0)
    a, nested, b = doc["children"]
    assert a == {
        "name": "a",
        "state": "running",
        "restart": "permanent",
        "critical": True,
        "incarnation": 1,
        "restarts": 0,
        "starts": 1,
        "last_error": None,
        "last_exit_at": None,
        "heartbeat_interval_s": 1.0,
        "heartbeat_age_s": 0.5,
        "heartbeat_stale": False,
        "stuck_for_s": None,
        "supervisor": None,
    }
    assert (b["state"], b["restart"], b["last_error"], b["last_exit_at"]) == (
        "failed",
        "temporary",
        "ValueError: b boom",
        1.0,
    )
    assert b["heartbeat_age_s"] is None
    assert nested["critical"] is False
    assert nested["supervisor"]["name"] == "inner"
    assert nested["supervisor"]["children"][0]["state"] == "running"
    assert [path for path, _ in status.walk()] == ["root/a", "root/inner", "root/inner/x", "root/b"]


async def test_a_failing_observer_does_not_break_the_tree(autojump_clock: Any) -> None:
    trace: Trace = []

    def observer(event: SupervisorEvent) -> None:
        raise RuntimeError("observer bug")

    spec = ChildSpec("w", worker(trace, exits={1: (1.0, "raise")}))
    sup = Supervisor("sup", [spec], policy(), on_event=observer)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep_until(2.0)
        assert one(sup.status(), "w").incarnation == 2
        sup.request_stop()


def test_specs_and_policies_are_validated() -> None:
    async def noop(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()

    bad_specs: list[Callable[[], object]] = [
        lambda: ChildSpec("", noop),
        lambda: ChildSpec("x", noop, start_timeout_s=0),
        lambda: ChildSpec("x", noop, cleanup_timeout_s=-1),
        lambda: ChildSpec("x", noop, heartbeat_interval_s=0),
        lambda: ChildSpec("x", noop, heartbeat_tolerance=0.5),
        lambda: SupervisorPolicy(max_restarts=-1),
        lambda: SupervisorPolicy(period_s=0),
        lambda: SupervisorPolicy(backoff_jitter=1.0),
        lambda: SupervisorPolicy(backoff_initial_s=5, backoff_max_s=1),
        lambda: SupervisorPolicy(max_children=0),
        lambda: Supervisor("s", [ChildSpec("x", noop), ChildSpec("x", noop)]),
    ]
    for make in bad_specs:
        with pytest.raises(ValueError):
            make()


# --------------------------------------------------------------------------- fail-fast start


async def test_initial_start_failure_fails_fast_in_reverse_order(autojump_clock: Any) -> None:
    """OTP: a child failing its initial start fails the supervisor's start at once."""
    stopped: list[str] = []

    def good(name: str) -> ChildSpec:
        async def fn(
            ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            try:
                await ctx.wait_stop_requested()
            finally:
                stopped.append(name)

        return ChildSpec(name, fn)

    async def broken(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await trio.sleep(1)
        raise OSError(98, "address already in use")

    sup = Supervisor(
        "root", [good("a"), good("b"), ChildSpec("c", broken), good("d")], SupervisorPolicy()
    )
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        with pytest.raises(ChildStartError) as info:
            await nursery.start(sup.run)
    assert trio.current_time() - t0 == 1.0, "no restart loop before failing"
    assert isinstance(info.value.__cause__, OSError)
    assert stopped == ["b", "a"], "started children stopped in reverse order; d never started"
    status = sup.status()
    assert status.restarts == 0
    assert one(status, "c").state is ChildState.FAILED
    assert "address already in use" in (one(status, "c").last_error or "")


async def test_initial_start_deadline_fails_fast(autojump_clock: Any) -> None:
    async def never(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await trio.sleep_forever()

    sup = Supervisor("root", [ChildSpec("slow", never, start_timeout_s=2.5)])
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        with pytest.raises(StartTimeoutError):
            await nursery.start(sup.run)
    assert trio.current_time() - t0 == 2.5
