"""Process level: a real ``prometheus`` scrapes a real ``tradingd run``, and its alerts go pending.

The daemon runs against a ``tradingd sim`` process (capture, an account, fault injection,
systemd's watchdog protocol on the harness's notify socket). ``prometheus`` listens on a free
127.0.0.1 port with its storage under the test's directory, scrapes every second and
evaluates the rules of ``config/prometheus/tradingd.rules.yml`` every second — a copy whose
``for:`` are all 10 minutes, so that an alert whose condition holds stays *pending* for the
whole test (the real durations are what the promtool unit tests exercise).

Shown through Prometheus's HTTP API:

1. the series arrive (the daemon's, and the recording rules' computed from them), every
   expression of the Grafana dashboard evaluates, and the alerts under test are quiet;
2. the simulator sends malformed frames → dead letters grow → ``TradingdDeadLettersGrowing``
   goes pending;
3. ``tradingd debug-fault hang-heartbeat`` hangs a critical child → health unhealthy and
   the watchdog pings suppressed → ``TradingdUnhealthy`` and ``TradingdWatchdogPingsMissing``
   go pending.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from tests.helpers.process import await_until, open_harness
from tests.helpers.sim import sim_process
from tests.monitoring.support import (
    DASHBOARD,
    RULES,
    SYMBOL,
    PrometheusServer,
    alert_rules,
    dashboard_expressions,
    grafana_to_promql,
    load_rules,
    monitored_daemon,
    running_prometheus,
)

pytestmark = pytest.mark.slow

#: Every ``for:`` in the test copy of the rules: longer than the test, so alerts stay pending.
TEST_FOR = "10m"
UNDER_TEST = ("TradingdDeadLettersGrowing", "TradingdUnhealthy", "TradingdWatchdogPingsMissing")
#: Series that must reach Prometheus (the daemon's, then recording rules over them).
ARRIVING = (
    'tradingd_up{job="tradingd"}',
    "tradingd_health",
    'tradingd_loop_lag_milliseconds{quantile="0.99"}',
    "tradingd_marketdata_trades_stored_total",
    "tradingd_orders_submissions_total",
    "tradingd_venue_rate_limit_used",
    "tradingd_watchdog_last_ping_timestamp_seconds",
    "tradingd:marketdata_trades_inserted:rate1m > 0",
    "tradingd:venue_rate_limit:usage_ratio",
    "tradingd:store_commits:rate1m",
)


def rules_for_test(path: Path) -> Path:
    """The rules file with every alert's ``for:`` set to :data:`TEST_FOR`."""
    doc = load_rules(RULES)
    for rule in alert_rules(doc):
        rule["for"] = TEST_FOR
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def test_prometheus_scrapes_the_daemon_and_alerts_go_pending_on_faults(
    tmp_path: Path, sockdir: Path, prometheus: str
) -> None:
    with trio.fail_after(90):
        async with (
            open_harness(tmp_path, sockdir) as h,
            sim_process(tmp_path, "--symbols", SYMBOL) as sim,
        ):
            daemon, admin = await monitored_daemon(h, sim)
            rules = rules_for_test(tmp_path / "tradingd.rules.yml")
            target = admin.removeprefix("http://")
            async with running_prometheus(
                tmp_path / "prometheus", binary=prometheus, target=target, rule_file=rules
            ) as prom:
                await _series_arrive(prom)
                await _dashboard_evaluates(prom)
                active = await prom.alerts()
                assert not {name for name in UNDER_TEST if name in active}, active

                await sim.arm(kind="ws_malformed", probability=1.0)
                await prom.wait_alert("TradingdDeadLettersGrowing", "pending")
                grown = await prom.query("sum(tradingd:dead_letters:increase15m)")
                assert float(grown[0]["value"][1]) >= 10, grown
                assert "TradingdUnhealthy" not in await prom.alerts()

                res = await h.cli(
                    "debug-fault", "hang-heartbeat", "--config", os.fspath(h.config_path)
                )
                assert res.returncode == 0, res
                await prom.wait_alert("TradingdUnhealthy", "pending")
                await prom.wait_alert("TradingdWatchdogPingsMissing", "pending")
                suppressing = await prom.query("tradingd_watchdog_suppressing == 1")
                assert suppressing, await prom.alerts()
                assert daemon.proc.returncode is None, daemon.diag()


async def _series_arrive(prom: PrometheusServer) -> None:
    for promql in ARRIVING:

        async def present(promql: str = promql) -> list[dict[str, Any]]:
            return await prom.query(promql)

        await await_until(present, what=f"{promql} in Prometheus", timeout_s=20.0, poll_s=0.25)
    up = await prom.query('up{job="tradingd"}')
    assert [float(s["value"][1]) for s in up] == [1.0], up
    health = await prom.query("tradingd_health")
    assert float(health[0]["value"][1]) == 0.0, health
    loaded = await prom.api("rules")
    names = {rule["name"] for group in loaded["groups"] for rule in group["rules"]}
    assert {rule["alert"] for rule in alert_rules(load_rules())} <= names


async def _dashboard_evaluates(prom: PrometheusServer) -> None:
    """Every dashboard expression is a valid query here; the core panels have data."""
    dashboard = json.loads(DASHBOARD.read_text())
    empty = []
    for where, expr in dashboard_expressions(dashboard):
        if where.startswith("variable"):
            continue
        if not await prom.query(grafana_to_promql(expr)):
            empty.append(where)
    for must in (
        "'Health'",
        "'Loop lag'",
        "'Ingest rate (trades committed)'",
        "'Rate-limit usage'",
    ):
        assert f"panel {must}" not in empty, empty
