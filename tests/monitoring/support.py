"""What the monitoring tests share: the real tools, the files under test, metric names, processes.

* :func:`require_tool` finds ``promtool``/``prometheus`` (Debian's ``prometheus`` package):
  skips with the reason when missing, fails under ``TRADINGD_REQUIRE_SERVICES=1`` (CI
  installs them, see ``.ci/run``).
* :func:`exposed_names` reads the metric names of a ``/metrics`` exposition (``# TYPE``
  lines, so families without samples count: counters as ``NAME_total``).
* :func:`promql_metric_names` lists the metric names a PromQL expression reads (also one
  of a Grafana panel, with its ``$variables``). It is a scanner, not a parser: enough for the
  expressions of ``config/``, and tested on the awkward cases in ``test_rules.py``.
* :func:`monitored_daemon` runs ``tradingd run`` against a ``tradingd sim`` process with
  market-data capture, an account (so the order pipeline runs), fault injection and
  systemd's watchdog protocol (the harness's notify socket), optionally the Redis intake.
* :class:`PrometheusServer` runs a real ``prometheus`` on 127.0.0.1 and reads its HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx2
import pytest
import trio
import yaml

from tests.helpers.orders_process import orders_config
from tests.helpers.process import DaemonProcess, Harness, await_until, child_env
from tests.helpers.sim import SimProcess

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "prometheus" / "tradingd.rules.yml"
RULE_TESTS = REPO / "config" / "prometheus" / "tests"
DASHBOARD = REPO / "config" / "grafana" / "tradingd-dashboard.json"
README = REPO / "README.md"

#: Names the rules may use that tradingd does not expose: Prometheus's own ``up``, and
#: node_exporter's file-system gauges (``TradingdDiskLow`` needs node_exporter).
FOREIGN_METRICS = frozenset({"up", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"})

INSTALL_HINT = "Debian: apt-get install prometheus (it ships prometheus and promtool)"


def require_services() -> bool:
    """``TRADINGD_REQUIRE_SERVICES=1`` (set by ``.ci/run``): a missing tool fails."""
    return os.environ.get("TRADINGD_REQUIRE_SERVICES") == "1"


def require_tool(name: str) -> str:
    """The path of ``name``; skips the test without it (fails under CI's requirement)."""
    found = shutil.which(name)
    if found is not None:
        return found
    reason = f"{name} is not installed ({INSTALL_HINT})"
    if require_services():
        pytest.fail(f"TRADINGD_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


# --------------------------------------------------------------------------- the files


def load_rules(path: Path = RULES) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def rules_of(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in doc["groups"]:
        yield from group["rules"]


def alert_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for rule in rules_of(doc) if "alert" in rule]


def recorded_names(doc: dict[str, Any]) -> set[str]:
    return {rule["record"] for rule in rules_of(doc) if "record" in rule}


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and every query variable of a dashboard."""
    found: list[tuple[str, str]] = []

    def panels(items: Iterable[dict[str, Any]]) -> None:
        for panel in items:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"panel {panel.get('title')!r}", target["expr"]))
            panels(panel.get("panels", []))

    panels(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else query or ""
        found.append((f"variable {variable.get('name')!r}", grafana_query_promql(text)))
    return found


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*?)\s*,\s*)?\w+\s*\)\s*$", re.S)


def grafana_query_promql(query: str) -> str:
    """The PromQL inside a Grafana variable query (``label_values(SELECTOR, label)``)."""
    match = _LABEL_VALUES.match(query)
    if match is not None:
        return match.group(1) or ""
    match = re.match(r"^\s*query_result\((.*)\)\s*$", query, re.S)
    return match.group(1) if match is not None else query


#: What Grafana puts for its variables when it runs a query (for parsing and evaluating).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$instance": ".*",
    "$venue": ".*",
}


def grafana_to_promql(expr: str) -> str:
    """``expr`` with the dashboard's variables replaced as Grafana would (``All`` selected)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# --------------------------------------------------------------------------- metric names


_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\w+)$", re.M)


def exposed_names(exposition: str) -> dict[str, str]:
    """Every metric name an exposition offers to PromQL, with its type.

    Read from the ``# TYPE`` lines, so a family without samples yet (no order
    in state UNKNOWN, say) still counts. Counters are queried as ``x_total``
    (the 0.0.4 text format names their family so already; OpenMetrics does not).
    """
    names: dict[str, str] = {}
    for family, kind in _TYPE_LINE.findall(exposition):
        counter = kind == "counter" and not family.endswith("_total")
        names[f"{family}_total" if counter else family] = kind
    return names


_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (bare names before ``{...}``, ``[...]`` or operators).

    Grafana variables become ``0``; string literals, label matchers, ranges and
    ``by``/``on``/``group_left`` label lists are dropped; what is left that is
    an identifier, not a function call and not a keyword is a metric name.
    """
    text = _GRAFANA_VARIABLE.sub("0", expr)
    text = _STRING.sub('""', text)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _CLAUSE.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in _KEYWORDS}


# --------------------------------------------------------------------------- processes

#: Short timeouts so that the order pipeline starts and settles in seconds.
ORDERS: dict[str, float | int | str] = {
    "send_timeout_s": 1.0,
    "section_deadline_s": 2.0,
    "drain_timeout_s": 1.0,
    "reconcile_interval_s": 1.0,
    "poll_interval_s": 0.5,
    "startup_reconcile_timeout_s": 10.0,
}
SYMBOL = "BTCUSDT"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server that cannot bind port 0 and say so)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def monitored_config(h: Harness, sim: SimProcess, *, intake_redis_url: str | None) -> str:
    """A ``tradingd run`` config: orders on ``sim``, capture of one symbol, fault injection.

    With ``intake_redis_url``, the Redis intake is enabled on that URL too.
    """
    text = orders_config(h, sim=sim, orders=ORDERS, recv_window_ms=5000, request_timeout_s=5.0)
    assert "fault_injection = false" in text
    text = text.replace("fault_injection = false", "fault_injection = true")
    text += f'\n[marketdata]\nvenue = "sim"\nsymbols = [{json.dumps(SYMBOL)}]\n'
    if intake_redis_url is not None:
        text += (
            f"\n[intake]\nenabled = true\nredis_url = {json.dumps(intake_redis_url)}\n"
            'consumer = "monitoring-test"\n'
        )
    return text


async def monitored_daemon(
    h: Harness, sim: SimProcess, *, intake_redis_url: str | None = None
) -> tuple[DaemonProcess, str]:
    """Start :func:`monitored_config`'s daemon; it and its admin URL once READY=1."""
    h.config_path.write_text(monitored_config(h, sim, intake_redis_url=intake_redis_url))
    daemon = await h.start_ready()
    return daemon, await daemon.admin_url()


async def scrape(url: str) -> str:
    async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    return response.text


# --------------------------------------------------------------------------- prometheus


def prometheus_config(*, target: str, rule_file: Path) -> str:
    """A ``prometheus.yml``: scrape and evaluate every second, job ``tradingd`` on ``target``."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rule_file)],
        "scrape_configs": [{"job_name": "tradingd", "static_configs": [{"targets": [target]}]}],
    }
    return str(yaml.safe_dump(config))


def write_prometheus_config(directory: Path, *, target: str, rule_file: Path) -> Path:
    """:func:`prometheus_config` as ``DIRECTORY/prometheus.yml`` (the directory is created)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(prometheus_config(target=target, rule_file=rule_file))
    return path


@attrs.frozen
class PrometheusServer:
    """A running ``prometheus`` and a client of its HTTP API."""

    url: str
    log_path: Path
    http: httpx2.AsyncClient

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/PATH``: its ``data`` (a failed answer fails the test)."""
        with trio.fail_after(10):
            response = await self.http.get(f"{self.url}/api/v1/{path}", params=params)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (
            f"{path} {params}: {response.status_code} {body}"
        )
        return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector."""
        data = await self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    async def alerts(self) -> dict[str, set[str]]:
        """The active alerts: name → their states (``pending``, ``firing``)."""
        found: dict[str, set[str]] = {}
        for alert in (await self.api("alerts"))["alerts"]:
            found.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return found

    async def wait_alert(self, name: str, state: str, *, timeout_s: float = 20.0) -> None:
        async def active() -> bool:
            return state in (await self.alerts()).get(name, set())

        await await_until(
            active, what=f"alert {name} {state}", timeout_s=timeout_s, poll_s=0.25, diag=self.log
        )


@asynccontextmanager
async def running_prometheus(
    tmp_path: Path, *, binary: str, target: str, rule_file: Path
) -> AsyncIterator[PrometheusServer]:
    """``prometheus`` on a free 127.0.0.1 port with storage under ``tmp_path``, until the end."""
    config_path = write_prometheus_config(tmp_path, target=target, rule_file=rule_file)
    listen = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={listen}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
        )
    url = f"http://{listen}"
    try:
        async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as http:

            async def ready() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(
                        f"prometheus exited {proc.returncode}:\n{log_path.read_text()}"
                    )
                try:
                    return (await http.get(f"{url}/-/ready")).status_code == 200
                except httpx2.TransportError:
                    return False

            await await_until(
                ready,
                what="prometheus /-/ready",
                timeout_s=20.0,
                poll_s=0.1,
                diag=lambda: log_path.read_text(errors="replace"),
            )
            yield PrometheusServer(url, log_path, http)
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                with trio.move_on_after(5):
                    await proc.wait()
