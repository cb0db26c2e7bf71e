"""Tests of daemon.strategies.service: each strategy supervised on its own, in virtual time."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio

from daemon.errors import ConfigError
from daemon.health import HealthLevel, supervisor_check
from daemon.strategies import StrategiesService, StrategyLoadError, StrategySpec
from daemon.strategies.loader import LoadProblemKind
from daemon.supervise import EventKind, SupervisorEvent, SupervisorState
from tests.helpers.strategies import strategy_spec
from tests.helpers.strategy_fakes import RecordingGateway, StaticPrices, book_view, symbol_info

from . import sample_strategies
from .sample_strategies import Trace

SAMPLES = sample_strategies.__name__


def spec(name: str, cls: str, trace: Trace, **fields: Any) -> StrategySpec:
    options = {"trace": trace, **fields.pop("options", {})}
    return strategy_spec(name, f"{SAMPLES}:{cls}", options=options, **fields)


def service(*specs: StrategySpec, events: list[SupervisorEvent] | None = None) -> StrategiesService:
    return StrategiesService(
        specs,
        gateway=RecordingGateway(),
        prices=StaticPrices(),
        symbol_info=lambda symbol: None,
        on_event=events.append if events is not None else None,
        rng=random.Random(7),
    )


def times(trace: Trace, name: str, event: str) -> list[float]:
    return [t for t, n, e in trace if n == name and e == event]


async def test_crash_loop_stops_one_strategy_and_spares_the_rest(
    autojump_clock: trio.abc.Clock,
) -> None:
    trace: Trace = []
    svc = service(
        spec("crasher", "CrashingStrategy", trace, max_restarts=2, restart_period_s=60.0),
        spec("steady", "SteadyStrategy", trace, heartbeat_interval_s=1.0),
    )
    sup = svc.supervisor()
    assert svc.supervisor() is sup
    assert svc.status()["crasher"]["state"] == "not_started"
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(30.0)

            starts = times(trace, "crasher", "start")
            assert len(starts) == 3  # the first run and max_restarts=2 restarts
            # Backoff: 1 s then 2 s (each +-20% jitter) after the 0.1 s run.
            first_gap, second_gap = starts[1] - starts[0], starts[2] - starts[1]
            assert 0.1 + 0.8 <= first_gap <= 0.1 + 1.2
            assert 0.1 + 1.6 <= second_gap <= 0.1 + 2.4

            status = svc.status()
            crasher = status["crasher"]
            assert crasher["state"] == "failed"
            assert crasher["restarts"] == 2
            assert crasher["last_error"] == "ValueError: crasher crashed on purpose"
            assert "EscalationError" in crasher["stopped_reason"]
            assert status["steady"]["state"] == "running"
            assert status["steady"]["restarts"] == 0
            assert sup.status().state is SupervisorState.RUNNING

            await trio.sleep(5.0)
            later = [t for t in times(trace, "steady", "tick") if 30.0 < t < 35.0]
            assert later == [30.0 + 0.5 * i for i in range(1, 10)]
            assert len(times(trace, "crasher", "start")) == 3  # stays stopped

            level, reason = svc.check()
            assert level is HealthLevel.DEGRADED
            assert reason == (
                "strategy crasher stopped for good after 2 restart(s), "
                "last error: ValueError: crasher crashed on purpose"
            )
            # The tree's own health check agrees: degraded, never unhealthy (which
            # would stop the watchdog and restart the whole daemon).
            assert supervisor_check(sup.status)()[0] is HealthLevel.DEGRADED

            sup.request_stop()
    assert times(trace, "steady", "cancelled") == [35.0]
    assert svc.status()["steady"]["state"] == "stopped"
    assert svc.status()["crasher"]["state"] == "failed"


async def test_a_hung_strategy_is_found_stale_and_restarted(
    autojump_clock: trio.abc.Clock,
) -> None:
    trace: Trace = []
    events: list[SupervisorEvent] = []
    svc = service(
        spec(
            "hanger",
            "HangingStrategy",
            trace,
            heartbeat_interval_s=1.0,
            max_restarts=10,
            restart_period_s=60.0,
        ),
        events=events,
    )
    sup = svc.supervisor()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert svc.check() == (HealthLevel.HEALTHY, None)
            await trio.sleep(5.0)
            # Beats at 0.0 and 0.5, hangs at 1.0: stale at 0.5 + 1.0 * 3 (tolerance).
            assert times(trace, "hanger", "hang")[0] == 1.0
            assert times(trace, "hanger", "cancelled")[0] == 3.5
            assert len(times(trace, "hanger", "start")) == 2  # restarted after its backoff
            stale = [e for e in events if e.kind is EventKind.STALE_HEARTBEAT]
            assert [(e.supervisor, e.child, e.at) for e in stale] == [
                ("strategy:hanger", "hanger", 3.5)
            ]
            status = svc.status()["hanger"]
            assert status["stale_heartbeats"] == 1
            assert status["restarts"] == 1
            assert status["last_error"].startswith("StaleHeartbeatError: child 'hanger'")
            level, reason = svc.check()
            assert level is HealthLevel.DEGRADED
            assert reason is not None
            assert "strategy hanger missed its heartbeat (1 time(s)" in reason
            sup.request_stop()


async def test_constructor_errors_count_as_crashes(autojump_clock: trio.abc.Clock) -> None:
    trace: Trace = []
    svc = service(
        spec("ctor", "BadConstructorStrategy", trace, max_restarts=1, restart_period_s=60.0),
        spec("steady", "SteadyStrategy", trace),
    )
    sup = svc.supervisor()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # The siblings' start is not held up by the failing constructor.
            await nursery.start(sup.run)
            assert times(trace, "steady", "start") == [0.0]
            await trio.sleep(10.0)
            assert len(times(trace, "ctor", "construct")) == 2
            status = svc.status()["ctor"]
            assert status["state"] == "failed"
            assert status["last_error"] == "ValueError: bad constructor on purpose"
            assert svc.status()["steady"]["state"] == "running"
            sup.request_stop()


async def test_returning_from_run_is_a_crash(autojump_clock: trio.abc.Clock) -> None:
    trace: Trace = []
    svc = service(spec("quitter", "ReturningStrategy", trace, max_restarts=1))
    sup = svc.supervisor()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(10.0)
            status = svc.status()["quitter"]
            assert status["state"] == "failed"
            assert "UnexpectedExitError" in status["last_error"]
            assert len(times(trace, "quitter", "start")) == 2
            sup.request_stop()


async def test_disabled_strategies_are_listed_not_run(autojump_clock: trio.abc.Clock) -> None:
    trace: Trace = []
    svc = service(
        spec("on", "SteadyStrategy", trace),
        strategy_spec("off", "no.such.module:Nope", enabled=False),
    )
    assert set(svc.classes) == {"on"}
    sup = svc.supervisor()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(1.0)
            status = svc.status()
            assert status["off"]["state"] == "disabled"
            assert status["off"]["class"] == "no.such.module:Nope"
            assert status["on"]["state"] == "running"
            assert [child.name for child in sup.status().children] == ["strategy:on"]
            sup.request_stop()


async def test_no_strategies_is_a_quiet_supervisor(autojump_clock: trio.abc.Clock) -> None:
    svc = service()
    sup = svc.supervisor()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert svc.status() == {}
            assert svc.check() == (HealthLevel.HEALTHY, None)
            sup.request_stop()


def test_load_errors_fail_construction() -> None:
    with pytest.raises(StrategyLoadError) as info:
        service(
            strategy_spec("a", f"{SAMPLES}:NOT_A_CLASS"),
            strategy_spec("b", "tradingd_nope:X"),
        )
    assert info.value.kinds == (LoadProblemKind.NOT_A_CLASS, LoadProblemKind.MODULE_NOT_FOUND)


def test_duplicate_names_are_refused() -> None:
    trace: Trace = []
    with pytest.raises(ConfigError, match=r"strategies\.x: defined more than once"):
        service(spec("x", "SteadyStrategy", trace), spec("x", "SteadyStrategy", trace))


async def test_the_example_strategy_runs_under_the_service(autojump_clock: trio.abc.Clock) -> None:
    gateway = RecordingGateway()
    prices = StaticPrices(book_view("BTCUSDT", "100.00", "100.20"))
    svc = StrategiesService(
        [
            strategy_spec(
                "quote",
                "daemon.strategies.example:QuoteStrategy",
                account="main",
                heartbeat_interval_s=1.0,
                options={"symbol": "BTCUSDT", "quantity": "0.001", "interval_s": 5.0},
            )
        ],
        gateway=gateway,
        prices=prices,
        symbol_info=symbol_info,
    )
    sup = svc.supervisor()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            # A 5 s interval with a 1 s heartbeat: the strategy's sleep keeps beating.
            await trio.sleep(12.0)
            assert svc.status()["quote"]["state"] == "running"
            assert svc.status()["quote"]["restarts"] == 0
            assert svc.check() == (HealthLevel.HEALTHY, None)
            sup.request_stop()
    assert [(r.side.value, str(r.price)) for r in gateway.placed()] == [
        ("BUY", "99.99"),
        ("SELL", "100.21"),
        ("BUY", "99.99"),
    ]
    assert all(r.message_id.startswith("quote:") for r in gateway.placed())
