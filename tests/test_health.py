"""Tests for daemon.health: loop lag, slow steps, the health model and the watchdog."""

from __future__ import annotations

import enum
import functools
import json
import logging
import socket
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.health import (
    BlockedLoopReporter,
    CheckOutcome,
    HealthLevel,
    HealthModel,
    HealthReport,
    HealthThresholds,
    LagProbe,
    LagStats,
    SlowStep,
    SlowStepInstrument,
    WatchdogStats,
    nearest_rank,
    run_watchdog,
    supervisor_check,
)
from daemon.notify import Notifier
from tests.helpers.clock import FakeClock

H, D, U = HealthLevel.HEALTHY, HealthLevel.DEGRADED, HealthLevel.UNHEALTHY


def _messages(records: Sequence[logging.LogRecord], needle: str) -> list[str]:
    return [r.getMessage() for r in records if needle in r.getMessage()]


# =================================================================================================
# nearest_rank and LagStats
# =================================================================================================


def test_nearest_rank_examples() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert nearest_rank(values, 50) == 50.0
    assert nearest_rank(values, 99) == 99.0
    assert nearest_rank(values, 100) == 100.0
    assert nearest_rank([7.0], 50) == 7.0
    assert nearest_rank([1.0, 2.0], 50) == 1.0
    assert nearest_rank([1.0, 2.0], 99) == 2.0
    assert nearest_rank([], 99) == 0.0
    with pytest.raises(ValueError):
        nearest_rank(values, 0)
    with pytest.raises(ValueError):
        nearest_rank(values, 101)


def _model_percentile(values: list[float], pct: float) -> float:
    """Smallest sample with at least pct% of the samples <= it (a direct search)."""
    n = len(values)
    return min(v for v in values if sum(1 for x in values if x <= v) * 100 >= pct * n)


_drifts = st.lists(
    st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(values=_drifts, pct=st.integers(min_value=1, max_value=100))
def test_nearest_rank_matches_model(values: list[float], pct: int) -> None:
    assert nearest_rank(sorted(values), pct) == _model_percentile(values, pct)


@settings(max_examples=100, deadline=None)
@given(values=_drifts)
def test_lag_stats_match_sorted_list_model(values: list[float]) -> None:
    clock = FakeClock(100.0)
    probe = LagProbe(interval_s=0.1, window_s=60.0, clock=clock)
    for i, value in enumerate(values):
        probe.record(value, at=50.0 + i * 0.01)
    stats = probe.stats()
    assert stats.samples == len(values)
    assert stats.last_ms == values[-1] * 1000
    assert stats.p50_ms == _model_percentile(values, 50) * 1000
    assert stats.p99_ms == _model_percentile(values, 99) * 1000
    assert stats.max_ms == max(values) * 1000
    assert stats.p50_ms <= stats.p99_ms <= stats.max_ms


# =================================================================================================
# LagProbe
# =================================================================================================


def test_lag_probe_window_and_clamping() -> None:
    clock = FakeClock(0.0)
    probe = LagProbe(interval_s=1.0, window_s=10.0, clock=clock)
    assert probe.stats() == LagStats(last_ms=0.0, p50_ms=0.0, p99_ms=0.0, max_ms=0.0, samples=0)
    probe.record(0.5)  # at 0.0
    clock.now = 5.0
    probe.record(0.25)
    probe.record(-0.125)  # a clock quirk never counts as negative lag
    clock.now = 10.0  # the horizon is inclusive: the sample at 0.0 still counts
    assert probe.stats() == LagStats(
        last_ms=0.0, p50_ms=250.0, p99_ms=500.0, max_ms=500.0, samples=3
    )
    clock.now = 10.5
    assert probe.stats() == LagStats(last_ms=0.0, p50_ms=0.0, p99_ms=250.0, max_ms=250.0, samples=2)
    clock.now = 100.0
    assert probe.stats().samples == 0
    assert probe.samples_total == 3
    assert probe.stats().to_dict() == {
        "last_ms": 0.0,
        "p50_ms": 0.0,
        "p99_ms": 0.0,
        "max_ms": 0.0,
        "samples": 0,
    }


def test_lag_probe_validates() -> None:
    with pytest.raises(ValueError):
        LagProbe(interval_s=0)
    with pytest.raises(ValueError):
        LagProbe(interval_s=1.0, window_s=0.5)
    probe = LagProbe()
    with pytest.raises(ValueError):
        probe.interval_s = 0.0
    with pytest.raises(ValueError):
        probe.window_s = -1.0


def test_lag_probe_reconfigured_at_run_time_keeps_samples() -> None:
    clock = FakeClock(0.0)
    probe = LagProbe(interval_s=1.0, window_s=4.0, clock=clock)
    for i in range(5):
        probe.record(0.25 * i, at=float(i))
    clock.now = 4.0
    assert probe.stats().samples == 5
    probe.record(0.0, at=4.0)  # one more than a 4 s window at 1 s can hold: capped
    assert probe.stats().samples == 5
    # Reload: sample twice as often over a longer window; nothing is lost.
    probe.interval_s = 0.5
    probe.window_s = 10.0
    assert probe.stats() == LagStats(
        last_ms=0.0, p50_ms=500.0, p99_ms=1000.0, max_ms=1000.0, samples=5
    )
    for i in range(16):
        probe.record(0.0, at=4.0 + 0.5 * (i + 1))
    clock.now = 12.0
    assert probe.stats().samples == 20  # 2.0, 3.0, 4.0, 4.0 and the 16 new ones
    probe.window_s = 1.0
    assert probe.stats().samples == 3  # 11.0, 11.5, 12.0


async def test_lag_probe_idle_loop_has_no_lag(autojump_clock: trio.testing.MockClock) -> None:
    probe = LagProbe(interval_s=0.125, window_s=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run)
        await trio.sleep(1.0625)
        assert probe.stats() == LagStats(last_ms=0.0, p50_ms=0.0, p99_ms=0.0, max_ms=0.0, samples=8)
        nursery.cancel_scope.cancel()


async def test_lag_probe_measures_a_block(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    probe = LagProbe(interval_s=0.125, window_s=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run)
        await trio.sleep_until(t0 + 0.3125)  # probe sampled at 0.125 and 0.25; next due 0.375
        # Simulate this task holding the loop for 0.5 s: time passes, nobody runs.
        autojump_clock.jump(0.5)
        assert trio.current_time() - t0 == 0.8125
        await trio.sleep_until(t0 + 0.875)
        # The probe woke at 0.8125 instead of 0.375.
        assert probe.stats() == LagStats(
            last_ms=437.5, p50_ms=0.0, p99_ms=437.5, max_ms=437.5, samples=3
        )
        # Sampling resumes from the late wake-up (0.9375, 1.0625, ...) and the
        # block leaves the window once it is older than 1 s.
        await trio.sleep_until(t0 + 1.8)
        stats = probe.stats()
        assert (stats.last_ms, stats.max_ms, stats.samples) == (0.0, 437.5, 8)
        await trio.sleep_until(t0 + 1.85)
        stats = probe.stats()
        assert (stats.last_ms, stats.max_ms, stats.samples) == (0.0, 0.0, 8)
        nursery.cancel_scope.cancel()


# =================================================================================================
# SlowStepInstrument
# =================================================================================================


def _task(name: str) -> Any:
    return SimpleNamespace(name=name)


def _step(inst: SlowStepInstrument, clock: FakeClock, name: str, duration_s: float) -> None:
    task = _task(name)
    inst.before_task_step(task)
    clock.advance(duration_s)
    inst.after_task_step(task)


def test_slow_steps_keep_the_slowest_and_count_over_threshold() -> None:
    clock = FakeClock(10.0)
    wall = FakeClock(1_700_000_000.0)
    inst = SlowStepInstrument(keep=3, threshold_ms=125.0, clock=clock, wall_clock=wall)
    for name, duration_s in [
        ("fast", 0.0),
        ("feed", 0.25),
        ("fast", 2**-10),
        ("store", 0.125),
        ("feed", 0.5),
        ("fast", 0.0625),  # below threshold and below the kept floor: ignored
        ("ingest", 0.125),  # exactly the threshold: counted as slow, but not kept
    ]:
        wall.advance(1.0)
        _step(inst, clock, name, duration_s)
    assert inst.slowest() == (
        SlowStep(task="feed", duration_ms=500.0, at=1_700_000_005.0),
        SlowStep(task="feed", duration_ms=250.0, at=1_700_000_002.0),
        SlowStep(task="store", duration_ms=125.0, at=1_700_000_004.0),
    )
    assert inst.slow_counts() == {"feed": 2, "ingest": 1, "store": 1}
    assert (inst.steps_total, inst.slow_steps_total) == (7, 4)
    report = inst.report()
    assert json.loads(json.dumps(report)) == report
    assert report == {
        "threshold_ms": 125.0,
        "steps_total": 7,
        "slow_steps_total": 4,
        "slowest": [
            {"task": "feed", "duration_ms": 500.0, "at": 1_700_000_005.0},
            {"task": "feed", "duration_ms": 250.0, "at": 1_700_000_002.0},
            {"task": "store", "duration_ms": 125.0, "at": 1_700_000_004.0},
        ],
        "slow_counts": {"feed": 2, "ingest": 1, "store": 1},
    }


def test_slow_steps_ties_do_not_displace_earlier_steps() -> None:
    clock = FakeClock()
    inst = SlowStepInstrument(keep=2, threshold_ms=1000.0, clock=clock, wall_clock=lambda: 0.0)
    for name in ("a", "b", "c"):
        _step(inst, clock, name, 0.25)
    assert [s.task for s in inst.slowest()] == ["a", "b"]
    _step(inst, clock, "d", 0.375)
    assert [s.task for s in inst.slowest()] == ["d", "b"]
    assert inst.slow_counts() == {}


def test_slow_steps_keep_zero_and_name_cap() -> None:
    clock = FakeClock()
    inst = SlowStepInstrument(keep=0, threshold_ms=10.0, clock=clock, max_task_names=2)
    for name in ("a", "b", "c", "d", "a"):
        _step(inst, clock, name, 0.5)
    assert inst.slowest() == ()
    assert inst.slow_counts() == {"<other>": 2, "a": 2, "b": 1}


def test_current_step() -> None:
    clock = FakeClock(3.0)
    inst = SlowStepInstrument(clock=clock)
    task = _task("hog")
    assert inst.current_step() is None
    inst.before_task_step(task)
    assert inst.current_step() == ("hog", 3.0)
    inst.after_task_step(task)
    assert inst.current_step() is None
    inst.after_task_step(task)  # unpaired: ignored
    assert inst.steps_total == 1


def test_threshold_can_be_changed_at_run_time() -> None:
    clock = FakeClock()
    inst = SlowStepInstrument(keep=0, threshold_ms=500.0, clock=clock)
    _step(inst, clock, "a", 0.25)
    assert inst.slow_counts() == {}
    inst.threshold_ms = 250.0
    _step(inst, clock, "a", 0.25)
    assert inst.slow_counts() == {"a": 1}
    assert inst.report()["threshold_ms"] == 250.0
    with pytest.raises(ValueError):
        inst.threshold_ms = -1.0


def test_instrument_validates() -> None:
    with pytest.raises(ValueError):
        SlowStepInstrument(keep=-1)
    with pytest.raises(ValueError):
        SlowStepInstrument(threshold_ms=-1.0)


async def test_instrument_blames_tasks_in_a_real_run() -> None:
    clock = FakeClock()
    inst = SlowStepInstrument(keep=3, threshold_ms=100.0, clock=clock, wall_clock=lambda: 0.0)
    seen: list[tuple[str, float] | None] = []

    async def hog() -> None:
        clock.advance(0.25)  # "blocks" the loop for 0.25 s in its first step
        await trio.lowlevel.checkpoint()
        seen.append(inst.current_step())
        clock.advance(0.5)  # and 0.5 s in its second

    async def middling() -> None:
        clock.advance(0.125)

    async def polite() -> None:
        for _ in range(10):
            await trio.lowlevel.checkpoint()

    trio.lowlevel.add_instrument(inst)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hog, name="hog")
            nursery.start_soon(middling, name="middling")
            nursery.start_soon(polite, name="polite")
    finally:
        trio.lowlevel.remove_instrument(inst)
    # hog's second step starts after the first batch (hog 0.25 s + middling 0.125 s).
    assert seen == [("hog", 0.375)]
    assert [(s.task, s.duration_ms) for s in inst.slowest()] == [
        ("hog", 500.0),
        ("hog", 250.0),
        ("middling", 125.0),
    ]
    assert inst.slow_counts() == {"hog": 2, "middling": 1}
    assert inst.steps_total >= 13
    # Still inside this test's own step (the instrument was removed mid-step).
    assert inst.current_step() == (trio.lowlevel.current_task().name, 0.875)


# =================================================================================================
# BlockedLoopReporter
# =================================================================================================


class FakeSource:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.step: tuple[str, float] | None = None

    def current_step(self) -> tuple[str, float] | None:
        return self.step


def test_reporter_logs_while_blocked_and_on_release(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.health")
    clock = FakeClock(100.0)
    source = FakeSource(clock)
    reporter = BlockedLoopReporter(source, threshold_s=1.0, repeat_s=5.0)
    assert reporter.check() is None
    source.step = ("hog", 100.0)
    clock.now = 100.5
    assert reporter.check() is None
    clock.now = 101.0
    assert reporter.check() == 1.0
    clock.now = 103.0
    assert reporter.check() == 3.0  # reported already; repeats after 5 s
    clock.now = 106.0
    assert reporter.check() == 6.0
    source.step = ("polite", 107.0)
    clock.now = 107.25
    assert reporter.check() is None
    assert _messages(caplog.records, "event loop") == [
        "event loop blocked for 1.0 s in task hog",
        "event loop blocked for 6.0 s in task hog",
        "event loop unblocked: task hog held it for at least 6.0 s",
    ]
    assert (reporter.blocks_detected, reporter.reports) == (1, 2)
    # A second block by the same task name is a new episode.
    source.step = ("hog", 110.0)
    clock.now = 112.0
    assert reporter.check() == 2.0
    assert (reporter.blocks_detected, reporter.reports) == (2, 3)


def test_reporter_validates() -> None:
    with pytest.raises(ValueError):
        BlockedLoopReporter(FakeSource(FakeClock()), threshold_s=0)


class _Signal(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.event = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.needle in message:
            self.event.set()


@pytest.mark.timeout(30)
async def test_reporter_thread_names_the_task_blocking_the_loop() -> None:
    inst = SlowStepInstrument(threshold_ms=10.0)
    handler = _Signal("in task loop-hog")
    logger = logging.getLogger("tradingd.health")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    reporter = BlockedLoopReporter(inst, threshold_s=0.05, poll_interval_s=0.005)
    reported: list[bool] = []

    async def loop_hog() -> None:
        # Block the event loop (a synchronous wait) until the thread has
        # reported us: this cannot return True unless the reporter works while
        # the loop is stuck in this very step.
        reported.append(handler.event.wait(timeout=10.0))
        await trio.lowlevel.checkpoint()

    trio.lowlevel.add_instrument(inst)
    try:
        with reporter:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(loop_hog, name="loop-hog")
            await trio.to_thread.run_sync(reporter.stop)
    finally:
        trio.lowlevel.remove_instrument(inst)
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert reported == [True]
    assert not reporter.is_alive()
    assert any(m.startswith("event loop blocked for ") for m in handler.messages)
    assert reporter.blocks_detected == 1
    assert inst.slowest()[0].task == "loop-hog"
    assert inst.slowest()[0].duration_ms >= 50.0


# =================================================================================================
# Health levels, thresholds, model
# =================================================================================================


def test_health_levels_are_ordered() -> None:
    assert H < D < U
    assert U > D > H
    assert H <= H and U >= U
    assert max(H, U, D) is U
    assert sorted([U, H, D]) == [H, D, U]
    with pytest.raises(TypeError):
        _ = H < "degraded"


def test_thresholds_validate() -> None:
    assert HealthThresholds() == HealthThresholds(lag_degraded_ms=100.0, lag_unhealthy_ms=1000.0)
    with pytest.raises(ValueError):
        HealthThresholds(lag_degraded_ms=0.0)
    with pytest.raises(ValueError):
        HealthThresholds(lag_degraded_ms=500.0, lag_unhealthy_ms=400.0)


def _probe_with(drifts_s: Sequence[float]) -> LagProbe:
    clock = FakeClock(10.0)
    probe = LagProbe(interval_s=0.1, window_s=60.0, clock=clock)
    for drift in drifts_s:
        probe.record(drift)
    return probe


def test_no_checks_is_healthy() -> None:
    report = HealthModel().evaluate()
    assert report == HealthReport(level=H, reasons=(), checks=())
    assert report.healthy
    assert report.to_dict() == {"level": "healthy", "reasons": [], "checks": {}}


@pytest.mark.parametrize(
    ("drifts_s", "level", "reasons"),
    [
        ([], H, ()),
        ([0.0] * 99 + [0.5], H, ()),  # one outlier in 100 is not the p99
        ([0.0] * 97 + [0.5, 0.5, 0.0], D, ("event loop lag p99 500.0 ms over 60 s > 100 ms",)),
        ([0.1] * 10, H, ()),  # exactly at the threshold is fine
        ([0.0] * 500 + [1.0], H, ()),  # last sample exactly 1000 ms
        (
            [0.0] * 500 + [1.5],
            U,
            ("event loop lag 1500.0 ms now > 1000 ms",),
        ),
        (
            [0.25, 1.5],
            U,
            (
                "event loop lag 1500.0 ms now > 1000 ms",
                "event loop lag p99 1500.0 ms over 60 s > 100 ms",
            ),
        ),
    ],
)
def test_lag_check(drifts_s: list[float], level: HealthLevel, reasons: tuple[str, ...]) -> None:
    report = HealthModel(HealthThresholds(), lag_probe=_probe_with(drifts_s)).evaluate()
    assert report.level is level
    assert report.reasons == reasons
    assert [c.name for c in report.checks] == ["loop_lag"]


def test_model_combines_checks_worst_wins() -> None:
    levels: dict[str, CheckOutcome] = {"disk": (H, None), "feeds": (H, "all fine")}
    model = HealthModel()
    model.add_check("disk", lambda: levels["disk"])
    model.add_check("feeds", lambda: levels["feeds"])
    report = model.evaluate()
    assert (report.level, report.reasons) == (H, ())
    assert report.to_dict()["checks"] == {
        "disk": {"level": "healthy", "reasons": []},
        "feeds": {"level": "healthy", "reasons": ["all fine"]},
    }
    levels["disk"] = (D, "disk 91% full")
    levels["feeds"] = (U, ["feed-a down", "feed-b down"])
    report = model.evaluate()
    assert report.level is U
    assert report.reasons == ("feed-a down", "feed-b down", "disk 91% full")
    assert report.to_dict() == {
        "level": "unhealthy",
        "reasons": ["feed-a down", "feed-b down", "disk 91% full"],
        "checks": {
            "disk": {"level": "degraded", "reasons": ["disk 91% full"]},
            "feeds": {"level": "unhealthy", "reasons": ["feed-a down", "feed-b down"]},
        },
    }
    assert model.last_report == report
    model.remove_check("feeds")
    assert model.evaluate().level is D


def test_duplicate_check_names_rejected() -> None:
    model = HealthModel(lag_probe=_probe_with([]))
    model.add_check("disk", lambda: (H, None))
    with pytest.raises(ValueError):
        model.add_check("disk", lambda: (H, None))
    with pytest.raises(ValueError):
        model.add_check("loop_lag", lambda: (H, None))


def test_failing_check_degrades_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.health")
    broken = [True]

    def check() -> CheckOutcome:
        if broken[0]:
            raise OSError("statvfs failed")
        return H, None

    model = HealthModel()
    model.add_check("disk", check)
    for _ in range(3):
        report = model.evaluate()
        assert report.level is D
        assert report.reasons == ("check disk failed: OSError: statvfs failed",)
    assert len(_messages(caplog.records, "health check 'disk' failed")) == 1
    broken[0] = False
    assert model.evaluate().level is H
    broken[0] = True
    model.evaluate()
    assert len(_messages(caplog.records, "health check 'disk' failed")) == 2


def test_model_logs_level_transitions_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.health")
    outcome: list[CheckOutcome] = [(H, None)]
    model = HealthModel()
    model.add_check("x", lambda: outcome[0])
    model.evaluate()
    model.evaluate()
    outcome[0] = (D, "slow")
    model.evaluate()
    model.evaluate()
    outcome[0] = (H, None)
    model.evaluate()
    assert _messages(caplog.records, "health ") == [
        "health unknown -> healthy",
        "health healthy -> degraded: slow",
        "health degraded -> healthy",
    ]


# =================================================================================================
# Supervision tree check
# =================================================================================================


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"
    STUCK = "stuck"


@attrs.frozen
class Child:
    name: str
    state: State = State.RUNNING
    critical: bool = False
    heartbeat_stale: bool = False
    restarts: int = 0
    last_error: str | None = None
    supervisor: Sup | None = None


@attrs.frozen
class AgedChild(Child):
    heartbeat_age_s: float | None = None


@attrs.frozen
class Sup:
    name: str
    children: tuple[Child, ...] = ()
    escalated: bool = False


def _check_tree(tree: Sup) -> CheckOutcome:
    return supervisor_check(lambda: tree)()


def test_supervisor_all_running_is_healthy() -> None:
    tree = Sup(
        "root",
        (
            Child("signals", critical=True),
            Child("marketdata", supervisor=Sup("marketdata", (Child("feed-x"),))),
            Child("startup", state=State.STOPPED),
            Child("admin", state=State.STARTING, restarts=3),
        ),
    )
    assert _check_tree(tree) == (H, ())


def test_supervisor_nested_critical_stale_is_unhealthy() -> None:
    tree = Sup(
        "root",
        (
            Child(
                "marketdata",
                critical=True,
                supervisor=Sup(
                    "marketdata",
                    (
                        AgedChild(
                            "feed-x", critical=True, heartbeat_stale=True, heartbeat_age_s=4.2
                        ),
                        Child("feed-y", heartbeat_stale=True),
                    ),
                ),
            ),
        ),
    )
    assert _check_tree(tree) == (
        U,
        (
            "root/marketdata/feed-x: heartbeat stale 4.2s",
            "root/marketdata/feed-y: heartbeat stale",
        ),
    )


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        (Child("c", heartbeat_stale=True), (D, ("root/c: heartbeat stale",))),
        (Child("c", critical=True, heartbeat_stale=True), (U, ("root/c: heartbeat stale",))),
        (Child("c", state=State.STUCK), (D, ("root/c: stuck",))),
        (Child("c", critical=True, state=State.STUCK), (U, ("root/c: stuck",))),
        (
            Child(
                "c", state=State.BACKOFF, restarts=3, last_error="ConnectionError: refused\nat x"
            ),
            (D, ("root/c: backoff after 3 restart(s), last error: ConnectionError: refused at x",)),
        ),
        (
            Child("c", critical=True, state=State.FAILED, restarts=1),
            (U, ("root/c: failed after 1 restart(s)",)),
        ),
        (
            Child("c", critical=False, state=State.FAILED, restarts=1),
            (D, ("root/c: failed after 1 restart(s)",)),
        ),
        (
            Child("c", critical=True, state=State.BACKOFF, restarts=1),
            (D, ("root/c: backoff after 1 restart(s)",)),
        ),
        (
            AgedChild(
                "c", critical=True, state=State.STUCK, heartbeat_stale=True, heartbeat_age_s=12
            ),
            (U, ("root/c: stuck", "root/c: heartbeat stale 12.0s")),
        ),
    ],
)
def test_supervisor_child_rules(child: Child, expected: CheckOutcome) -> None:
    assert _check_tree(Sup("root", (child,))) == expected


def test_supervisor_escalation_is_unhealthy_and_worst_first() -> None:
    tree = Sup(
        "root",
        (
            Child("feeds", state=State.BACKOFF, restarts=2),
            Child("orders", supervisor=Sup("orders", (Child("executor"),), escalated=True)),
        ),
    )
    assert _check_tree(tree) == (
        U,
        (
            "root/orders: escalated (restart intensity exceeded)",
            "root/feeds: backoff after 2 restart(s)",
        ),
    )
    assert _check_tree(Sup("root", escalated=True)) == (
        U,
        ("root: escalated (restart intensity exceeded)",),
    )


def test_supervisor_long_error_is_truncated() -> None:
    child = Child("c", state=State.FAILED, last_error="x" * 500)
    level, reasons = _check_tree(Sup("root", (child,)))
    assert level is D
    assert isinstance(reasons, tuple)
    assert reasons[0] == "root/c: failed after 0 restart(s), last error: " + "x" * 119 + "…"


def test_supervisor_check_in_model_follows_the_live_tree() -> None:
    tree = [Sup("root", (Child("feed", critical=True),))]
    model = HealthModel()
    model.add_check("supervision", supervisor_check(lambda: tree[0]))
    assert model.evaluate().level is H
    tree[0] = Sup("root", (Child("feed", critical=True, heartbeat_stale=True),))
    report = model.evaluate()
    assert (report.level, report.reasons) == (U, ("root/feed: heartbeat stale",))


# =================================================================================================
# run_watchdog
# =================================================================================================


class FakeNotifier:
    """Records what would be sent, with the virtual time it was sent at."""

    def __init__(self, watchdog_interval_s: float | None, *, ok: bool = True) -> None:
        self.watchdog_interval_s = watchdog_interval_s
        self.ok = ok
        self.t0 = trio.current_time()
        self.calls: list[tuple[float, str]] = []

    def watchdog(self) -> bool:
        self.calls.append((trio.current_time() - self.t0, "WATCHDOG=1"))
        return self.ok

    def status(self, text: str) -> bool:
        self.calls.append((trio.current_time() - self.t0, f"STATUS={text}"))
        return self.ok

    def pings(self) -> list[float]:
        return [t for t, msg in self.calls if msg == "WATCHDOG=1"]


class Switch:
    """A health check whose outcome the test sets."""

    def __init__(self) -> None:
        self.outcome: CheckOutcome = (H, None)
        self.calls = 0

    def __call__(self) -> CheckOutcome:
        self.calls += 1
        return self.outcome


def _model(switch: Switch) -> HealthModel:
    model = HealthModel()
    model.add_check("switch", switch)
    return model


async def _start_watchdog(nursery: trio.Nursery, *args: Any, **kwargs: Any) -> None:
    await nursery.start(functools.partial(run_watchdog, *args, **kwargs))


async def test_watchdog_pings_only_while_not_unhealthy(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.health")
    t0 = trio.current_time()
    notifier = FakeNotifier(1.5)
    switch = Switch()
    stats = WatchdogStats()
    async with trio.open_nursery() as nursery:
        await _start_watchdog(nursery, notifier, _model(switch), stats=stats)
        await trio.sleep_until(t0 + 4.0)
        assert notifier.pings() == [0.0, 1.5, 3.0]
        switch.outcome = (U, "root/feed: heartbeat stale 4.2s")
        await trio.sleep_until(t0 + 7.0)
        assert notifier.pings() == [0.0, 1.5, 3.0]  # 4.5 and 6.0 suppressed
        assert (stats.pings_sent, stats.pings_suppressed, stats.suppressing) == (3, 2, True)
        switch.outcome = (D, "loop lag p99 high")  # degraded still pings
        await trio.sleep_until(t0 + 9.25)
        nursery.cancel_scope.cancel()
    assert notifier.pings() == [0.0, 1.5, 3.0, 7.5, 9.0]
    assert stats == WatchdogStats(
        pings_sent=5, pings_failed=0, pings_suppressed=2, status_sent=0, suppressing=False
    )
    assert switch.calls == 7
    assert _messages(caplog.records, "watchdog pings") == [
        "health is unhealthy: suppressing systemd watchdog pings, systemd will restart the "
        "service unless health recovers: root/feed: heartbeat stale 4.2s",
        "health is degraded again: resuming systemd watchdog pings after 2 suppressed",
    ]


async def test_watchdog_interval_override(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    t0 = trio.current_time()
    fast, clamped = FakeNotifier(1.5), FakeNotifier(1.5)
    async with trio.open_nursery() as nursery:
        await _start_watchdog(nursery, fast, HealthModel(), interval_s=0.5)
        await _start_watchdog(nursery, clamped, HealthModel(), interval_s=10.0)
        await trio.sleep_until(t0 + 3.25)
        nursery.cancel_scope.cancel()
    assert fast.pings() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert clamped.pings() == [0.0, 1.5, 3.0]
    assert len(_messages(caplog.records, "longer than WATCHDOG_USEC/2")) == 1


async def test_watchdog_reschedules_after_a_blocked_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    notifier = FakeNotifier(1.5)
    async with trio.open_nursery() as nursery:
        await _start_watchdog(nursery, notifier, HealthModel())
        await trio.sleep_until(t0 + 0.25)
        autojump_clock.jump(3.0)  # the loop was blocked; the 1.5 ping is late
        await trio.sleep_until(t0 + 5.0)
        nursery.cancel_scope.cancel()
    # The late ping goes out at once, and the schedule restarts from it rather
    # than sending a burst to catch up.
    assert notifier.pings() == [0.0, 3.25, 4.75]


async def test_watchdog_counts_failed_pings(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    stats = WatchdogStats()
    async with trio.open_nursery() as nursery:
        await _start_watchdog(nursery, FakeNotifier(1.0, ok=False), HealthModel(), stats=stats)
        await trio.sleep_until(t0 + 2.5)
        nursery.cancel_scope.cancel()
    assert (stats.pings_sent, stats.pings_failed) == (0, 3)


async def test_watchdog_disabled_without_status_idles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    notifier = FakeNotifier(None)
    switch = Switch()
    async with trio.open_nursery() as nursery:
        await _start_watchdog(nursery, notifier, _model(switch), interval_s=1.0)
        await trio.sleep(1000.0)
        assert trio.current_time() - t0 == 1000.0
        nursery.cancel_scope.cancel()
    assert notifier.calls == []
    assert switch.calls == 0


async def test_status_updates_without_watchdog(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    t0 = trio.current_time()
    notifier = FakeNotifier(None)
    stats = WatchdogStats()
    switch = Switch()
    calls = [0]

    def status_fn() -> str:
        calls[0] += 1
        if calls[0] in (2, 3):
            raise RuntimeError("status source broken")
        return f"up {trio.current_time() - t0:g}s, 3 feeds"

    async with trio.open_nursery() as nursery:
        await _start_watchdog(nursery, notifier, _model(switch), status_fn=status_fn, stats=stats)
        await trio.sleep_until(t0 + 21.0)
        nursery.cancel_scope.cancel()
    assert notifier.calls == [
        (0.0, "STATUS=up 0s, 3 feeds"),
        (15.0, "STATUS=up 15s, 3 feeds"),
        (20.0, "STATUS=up 20s, 3 feeds"),
    ]
    assert stats.status_sent == 3
    assert switch.calls == 0  # no watchdog: health is not evaluated here
    assert len(_messages(caplog.records, "status_fn failed")) == 1


async def test_watchdog_and_status_interleave(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    notifier = FakeNotifier(2.0)
    async with trio.open_nursery() as nursery:
        await _start_watchdog(
            nursery, notifier, HealthModel(), status_fn=lambda: "ok", status_interval_s=3.0
        )
        await trio.sleep_until(t0 + 6.5)
        nursery.cancel_scope.cancel()
    assert notifier.calls == [
        (0.0, "WATCHDOG=1"),
        (0.0, "STATUS=ok"),
        (2.0, "WATCHDOG=1"),
        (3.0, "STATUS=ok"),
        (4.0, "WATCHDOG=1"),
        (6.0, "WATCHDOG=1"),
        (6.0, "STATUS=ok"),
    ]


async def test_blocked_loop_lag_stops_the_pings(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.health")
    t0 = trio.current_time()
    notifier = FakeNotifier(3.0)
    probe = LagProbe(interval_s=0.5, window_s=60.0)
    model = HealthModel(HealthThresholds(), lag_probe=probe)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run)
        await _start_watchdog(nursery, notifier, model)
        await trio.sleep_until(t0 + 3.25)
        autojump_clock.jump(2.5)  # block the loop: the probe (due at 3.5) wakes at 5.75
        await trio.sleep_until(t0 + 9.25)
        nursery.cancel_scope.cancel()
    # 6.0: the last lag sample is 2250 ms -> unhealthy -> no ping. By 9.0 the
    # loop is fine again (last sample 0 ms) but the p99 remembers: degraded,
    # which pings.
    assert notifier.pings() == [0.0, 3.0, 9.0]
    assert model.last_report is not None
    assert model.last_report.level is D
    assert model.last_report.reasons == ("event loop lag p99 2250.0 ms over 60 s > 100 ms",)
    assert _messages(caplog.records, "suppressing") == [
        "health is unhealthy: suppressing systemd watchdog pings, systemd will restart the "
        "service unless health recovers: event loop lag 2250.0 ms now > 1000 ms; "
        "event loop lag p99 2250.0 ms over 60 s > 100 ms",
    ]


async def test_watchdog_with_real_notifier(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    directory = tmp_path if len(str(tmp_path)) < 90 else Path(tempfile.mkdtemp(prefix="td-"))
    path = str(directory / "n.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.setblocking(False)
    t0 = trio.current_time()
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    try:
        async with trio.open_nursery() as nursery:
            await _start_watchdog(nursery, notifier, HealthModel())
            await trio.sleep_until(t0 + 2.5)
            nursery.cancel_scope.cancel()
        received: list[bytes] = []
        while True:
            try:
                received.append(rx.recv(4096))
            except BlockingIOError:
                break
    finally:
        notifier.close()
        rx.close()
    assert received == [b"WATCHDOG=1"] * 3
    assert notifier.sent == 3


def test_stats_defaults() -> None:
    assert WatchdogStats() == WatchdogStats(0, 0, 0, 0, False)
