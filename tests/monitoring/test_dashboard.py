"""The Grafana dashboard of ``config/grafana/``: well-formed, and reading only real metrics.

Every PromQL expression in it (panel targets and query variables) may name only
metrics a real daemon's ``/metrics`` exposes, the recording rules of
``config/prometheus/tradingd.rules.yml`` and Prometheus's ``up``; ``promtool``
parses each one (as a recording rule of a scratch file). That the expressions
also evaluate against a real Prometheus scraping a real daemon is shown in
``test_prometheus_process.py``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.support import (
    DASHBOARD,
    dashboard_expressions,
    grafana_to_promql,
    load_rules,
    promql_metric_names,
    recorded_names,
)


def load_dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def _all_panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in items:
        out.append(panel)
        out.extend(_all_panels(panel.get("panels", [])))
    return out


def test_dashboard_is_a_grafana_dashboard() -> None:
    doc = load_dashboard()
    assert doc["uid"] == "tradingd" and doc["title"] and doc["schemaVersion"] >= 36
    panels = _all_panels(doc["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]


def test_dashboard_covers_what_the_operator_watches() -> None:
    """Health, loop lag, queues, ingest and lag, orders, venues, store, intake: all shown."""
    used: set[str] = set()
    for _, expr in dashboard_expressions(load_dashboard()):
        used |= promql_metric_names(expr)
    for name in (
        "tradingd_health",
        "tradingd_loop_lag_milliseconds",
        "tradingd:queue:fill_ratio",
        "tradingd:marketdata_trades_inserted:rate1m",
        "tradingd_marketdata_commit_lag_seconds",
        "tradingd_orders_live",
        "tradingd:orders_submissions:rate1m",
        "tradingd:venue_rate_limit:usage_ratio",
        "tradingd_venue_rate_limit_frozen_seconds",
        "tradingd:store_commits:rate1m",
        "tradingd_intake_connected",
        "tradingd_watchdog_last_ping_timestamp_seconds",
    ):
        assert name in used, f"no panel reads {name}"


def test_every_dashboard_metric_is_exposed_by_a_real_daemon(exposed: dict[str, str]) -> None:
    allowed = set(exposed) | recorded_names(load_rules()) | {"up"}
    unknown: dict[str, set[str]] = {}
    for where, expr in dashboard_expressions(load_dashboard()):
        used = promql_metric_names(expr)
        assert used, f"{where}: no metric found in {expr!r}"
        if missing := used - allowed:
            unknown[where] = missing
    assert not unknown, f"metrics /metrics does not expose: {unknown}"


def test_every_dashboard_expression_parses(promtool: str, tmp_path: Path) -> None:
    """``promtool check rules`` parses each expression (Grafana's variables filled in)."""
    exprs = dashboard_expressions(load_dashboard())
    rules = [
        {"record": f"dashboard:expr_{i}:check", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
