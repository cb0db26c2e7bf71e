"""``tradingd bench orders`` (:mod:`daemon.bench.orders`): it runs and it reports.

A benchmark is not a test, so nothing here looks at a timing. The smoke tests
run the real thing with tiny counts — simulator and load generator as
subprocesses, a real daemon — over each order transport (``--transport rest``,
``ws-api``, ``both``) and check that every report key is there and that the
counts add up (every order measured, accepted, answered; none rejected or
unknown). The pieces it is built from are checked against independent code:
the baseline's inline signature against the simulator's verifier, the
configurations against the strict loaders (the WebSocket API baseline's
pieces: ``test_orders_baseline.py``). With ``--store postgres`` a ``--quick``
run puts tradingd's store and the baseline's commits on the real PostgreSQL
server; it skips when none is reachable, and fails instead under
``TRADINGD_REQUIRE_SERVICES=1`` (:mod:`tests.store.pg`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon import config as configmod
from daemon.bench import orders as bench
from daemon.bench import orders_baseline, orders_report, orders_setup
from daemon.bench.orders_pg import TABLE, PgCommits, PgTarget
from daemon.bench.pg import PgServer, store_toml, with_search_path
from daemon.venues.sim import auth as simauth
from daemon.venues.sim import config as simconfig
from tests.store.pg import ADMIN_DSN, admin, fresh_schema, require_postgres

SMOKE_TIMEOUT_S = 120

REPORT_KEYS = {"machine", "setup", "latency", "entry_in_process", "entry_http", "bench_seconds"}
LATENCY_KEYS = {
    "orders",
    "warmup",
    "block",
    "baseline",
    "tradingd",
    "ratio_p50",
    "ratio_p99",
    "target_ratio_p50",
    "tradingd_received_to_committed",
    "client_post_to_202",
    "baseline_parts",
    "tradingd_store",
}
ENTRY_KEYS = {
    "orders",
    "accepted",
    "accepted_per_s",
    "seconds",
    "commits",
    "mean_batch",
    "saturated",
    "sent_while_accepting",
    "answered_while_accepting",
    "sent",
    "answered",
    "rejected",
    "unknown",
    "drained_after_s",
    "send_rate_per_s",
    "cpu_share_while_accepting",
}


def _bench_env() -> dict[str, str]:
    """This environment minus what would make the in-process daemon think it runs under systemd."""
    hostile = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
    return {k: v for k, v in os.environ.items() if k not in hostile}


#: Tiny counts: 3 latency orders after 1 warm-up, 24 in-process, 16 through POST /orders.
TINY = (
    "--latency-orders",
    "3",
    "--warmup",
    "1",
    "--block",
    "2",
    "--entry-orders",
    "24",
    "--http-orders",
    "16",
    "--submitters",
    "4",
    "--clients",
    "2",
)
#: What a ws-api run adds to a REST run's report.
WS_API_KEYS = {"transport", "ws_api_client"}


def _run_bench(
    tmp_path: Path, *extra: str, runs: int = 1, counts: tuple[str, ...] = TINY
) -> dict[str, Any]:
    """``python -m daemon.bench.orders`` with :data:`TINY` counts and ``--json``; its report."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.bench.orders",
            *counts,
            "--dir",
            str(tmp_path),
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S * runs,
        env=_bench_env(),
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    # The state directory is gone.
    assert list(tmp_path.iterdir()) == []
    return report


def _check_run(report: dict[str, Any], counts: orders_setup.BenchOptions | None = None) -> None:
    """One transport's report: every key, and the counts (default :data:`TINY`) add up."""
    latency_n, entry_n, http_n, submitters, clients = (
        (3, 24, 16, 4, 2)
        if counts is None
        else (
            counts.latency_orders,
            counts.entry_orders,
            counts.http_orders,
            counts.submitters,
            counts.clients,
        )
    )
    assert {"cores", "python", "sqlite", "load_average_1m_before"} <= set(report["machine"])
    assert {"simulator", "tradingd", "load_generator", "sending"} <= set(report["setup"])
    assert report["setup"]["workdir"].endswith(" (removed)")

    latency = report["latency"]
    assert set(latency) == LATENCY_KEYS
    for key in ("baseline", "tradingd", "tradingd_received_to_committed", "client_post_to_202"):
        assert latency[key]["count"] == latency_n, key
        assert latency[key]["p50_ms"] > 0 and latency[key]["p99_ms"] >= latency[key]["p50_ms"]
    assert latency["ratio_p50"] > 0 and latency["ratio_p99"] > 0
    assert latency["baseline_parts"]["commits"]["count"] == latency_n
    assert latency["baseline_parts"]["post"]["count"] == latency_n
    # Intent, SENDING mark, answer: at least three durable writes per order.
    assert latency["tradingd_store"]["writes_per_order"] >= 2  # fast path: SENDING with the intent

    entry = report["entry_in_process"]
    assert set(entry) >= ENTRY_KEYS
    assert (entry["submitters"], entry["orders"], entry["accepted"]) == (
        submitters,
        entry_n,
        entry_n,
    )
    http = report["entry_http"]
    assert set(http) >= ENTRY_KEYS
    assert (http["clients"], http["orders"], http["accepted"]) == (clients, http_n, http_n)
    assert {"user_s", "sys_s", "wall_s", "share"} <= set(http["load_generator_cpu"])
    for phase, n in ((entry, entry_n), (http, http_n)):
        # Every accepted intent was sent once and answered; nothing was refused.
        assert (phase["sent"], phase["answered"], phase["rejected"], phase["unknown"]) == (
            n,
            n,
            0,
            0,
        )
        assert phase["commits"] >= 1


def _check_ws_api_client(report: dict[str, Any]) -> None:
    """tradingd's orders went over its WebSocket API client, none lost."""
    client = report["ws_api_client"]
    orders = 1 + 3 + 24 + 16  # warm-up, latency, in-process, POST /orders
    assert client["connections"] >= 1
    assert client["requests"] >= orders and client["answers"] >= orders
    assert client["lost_in_flight"] == 0


@pytest.mark.slow
def test_bench_runs_with_tiny_counts_and_reports_every_key(tmp_path: Path) -> None:
    report = _run_bench(tmp_path)
    # The default transport is REST, and its report is the one of before --transport.
    assert set(report) == REPORT_KEYS
    _check_run(report)
    assert "WebSocket API" not in report["setup"]["tradingd"]

    # The table renders from the same report.
    table = orders_report.render(report)
    for heading in ("1. latency", "2. durable intents", "3. durable intents", "ratio tradingd"):
        assert heading in table
    assert table.splitlines()[0] == "tradingd bench orders"
    assert "baseline: signed httpx2 POST + 2 FULL commits" in table


@pytest.mark.slow
def test_bench_over_the_websocket_api_reports_the_same_table(tmp_path: Path) -> None:
    report = _run_bench(tmp_path, "--transport", "ws-api")
    assert set(report) == REPORT_KEYS | WS_API_KEYS
    assert report["transport"] == "ws-api"
    _check_run(report)
    _check_ws_api_client(report)
    assert 'order_transport = "ws-api"' in report["setup"]["tradingd"]
    assert "trio-websocket" in report["setup"]["load_generator"]

    table = orders_report.render(report)
    assert table.splitlines()[0] == "tradingd bench orders --transport ws-api"
    for heading in ("1. latency", "2. durable intents", "3. durable intents", "ratio tradingd"):
        assert heading in table
    assert "baseline: signed ws-api order.place + 2 FULL commits" in table
    assert "WebSocket API client over the run" in table


@pytest.mark.slow
def test_bench_both_transports_reports_them_side_by_side(tmp_path: Path) -> None:
    report = _run_bench(tmp_path, "--transport", "both", runs=2)
    assert set(report) == {"transports", "runs", "bench_seconds"}
    assert report["transports"] == ["rest", "ws-api"] == list(report["runs"])
    rest, ws_api = report["runs"]["rest"], report["runs"]["ws-api"]
    assert set(rest) == REPORT_KEYS  # the same document as a REST-only run
    assert set(ws_api) == REPORT_KEYS | WS_API_KEYS
    for run in (rest, ws_api):
        _check_run(run)
    _check_ws_api_client(ws_api)
    assert rest["setup"]["workdir"] != ws_api["setup"]["workdir"]

    table = orders_report.render(report)
    assert table.splitlines()[0] == "tradingd bench orders --transport rest + ws-api"
    lines = table.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("summary"))
    assert [line.split()[0] for line in lines[summary + 2 : summary + 4]] == ["rest", "ws-api"]
    for heading in ("rest: orders over REST", "ws-api: orders over the WebSocket API"):
        assert table.count(heading) == 3  # one block of rows per measurement
    assert "where (rest run):" in table and "where (ws-api run):" in table


@pytest.mark.slow
def test_quick_bench_on_postgres_reports_every_key_and_drops_its_schema(tmp_path: Path) -> None:
    require_postgres()
    report = _run_bench(tmp_path, "--quick", "--store", "postgres", "--dsn", ADMIN_DSN, counts=())
    # The SQLite report's keys, and the store's.
    assert set(report) == REPORT_KEYS | {"store", "dsn"}
    assert report["store"] == "postgres"
    assert report["dsn"] == PgServer(ADMIN_DSN).public and "password" not in report["dsn"]
    assert report["machine"]["postgresql"]
    _check_run(report, orders_setup.QUICK)
    setup = report["setup"]
    assert "PostgreSQL store (schema tradingd_bench_orders_rest_" in setup["tradingd"]
    assert "psycopg" in setup["load_generator"]
    assert report["latency"]["tradingd_store"]["mean_commit_ms"] > 0

    schema = setup["tradingd"].split("(schema ")[1].split()[0]
    with admin() as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None  # dropped after the run

    table = orders_report.render(report)
    assert table.splitlines()[0] == "tradingd bench orders --store postgres"
    assert "baseline: signed httpx2 POST + 2 PG commits" in table
    assert "store: PostgreSQL" in table


def test_pg_baseline_commits_two_durable_rows_and_its_target_travels_by_command() -> None:
    with fresh_schema() as dsn:
        target = PgTarget.from_command({"op": "baseline", **PgTarget(dsn).to_command()})
        assert target == PgTarget(dsn)
        commits = PgCommits(target)
        commits.open()
        try:
            assert commits.commit("c-1", "intent") >= 0 and commits.commit("c-1", "answer") >= 0
        finally:
            commits.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(f"SELECT client_order_id, kind FROM {TABLE} ORDER BY id")
            assert rows.fetchall() == [("c-1", "intent"), ("c-1", "answer")]
    assert PgTarget.from_command({"op": "baseline"}) is None


def test_daemon_config_takes_the_postgres_store_section(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("token", "api_key", "api_secret")}
    dsn = with_search_path(ADMIN_DSN, "tradingd_bench_orders_rest_0")
    text = orders_setup.daemon_config(
        tmp_path,
        "http://127.0.0.1:1",
        "ws://127.0.0.1:2",
        orders_setup.BenchOptions(),
        files,
        store="\n" + store_toml(dsn, None),
    )
    config = configmod.loads(text, source="bench.toml")
    assert (config.store.backend, config.store.dsn, config.store.password) == (
        "postgres",
        dsn,
        None,
    )
    assert config.store.problems() == []


def test_baseline_signature_verifies_with_the_simulators_own_check() -> None:
    secret = "s3cr3t-for-the-bench"
    target = orders_baseline.signed_order_target(secret.encode(), "bench-base-7", 1_700_000_000_123)
    path, _, query = target.partition("?")
    assert path == "/api/v3/order"
    payloads = simauth.signature_payloads({}, b"", raw_query=query)
    signature = dict(urllib.parse.parse_qsl(query))["signature"]
    assert simauth.verify_signature(secret.encode(), payloads, signature)
    assert not simauth.verify_signature(b"another secret", payloads, signature)
    params = dict(urllib.parse.parse_qsl(query))
    assert params["newClientOrderId"] == "bench-base-7"
    assert params["timestamp"] == "1700000000123"
    assert (params["type"], params["price"], params["quantity"]) == (
        "LIMIT",
        orders_baseline.PRICE,
        orders_baseline.QUANTITY,
    )


def test_sim_config_passes_the_simulators_strict_loader() -> None:
    text = orders_setup.sim_config(("benchKey1", "secret-1"), ("baseKey2", "secret-2"))
    config = simconfig.loads(text, source="bench-sim.toml")
    assert config.market.paused
    assert [s.symbol for s in config.symbols] == [orders_baseline.SYMBOL]
    assert [a.api_key for a in config.accounts] == ["benchKey1", "baseKey2"]
    assert all(r.limit == orders_setup.UNLIMITED for r in config.rate_limits)


@pytest.mark.parametrize("transport", ["rest", "ws-api"])
def test_daemon_config_sets_the_order_transport(tmp_path: Path, transport: str) -> None:
    files = {name: tmp_path / name for name in ("token", "api_key", "api_secret")}
    text = orders_setup.daemon_config(
        tmp_path,
        "http://127.0.0.1:1",
        "ws://127.0.0.1:2",
        orders_setup.BenchOptions(),
        files,
        transport=transport,
    )
    config = configmod.loads(text, source="bench.toml")
    assert config.venues[orders_setup.VENUE].order_transport == transport


def test_daemon_config_refuses_an_unknown_transport(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("token", "api_key", "api_secret")}
    with pytest.raises(ValueError, match="grpc"):
        orders_setup.daemon_config(
            tmp_path, "http://1", "ws://2", orders_setup.BenchOptions(), files, transport="grpc"
        )


async def test_measure_refuses_an_unknown_transport_before_starting_anything(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="grpc"):
        await bench.measure(orders_setup.BenchOptions(), tmp_path, "grpc")


def test_daemon_config_passes_the_strict_loader_with_risk_off(tmp_path: Path) -> None:
    options = orders_setup.BenchOptions(entry_orders=5000, http_orders=10, accounts=3)
    files = {name: tmp_path / name for name in ("token", "api_key", "api_secret")}
    text = orders_setup.daemon_config(
        tmp_path, "http://127.0.0.1:1", "ws://127.0.0.1:2", options, files
    )
    config = configmod.loads(text, source="bench.toml")
    assert sorted(config.accounts) == ["acct1", "acct2", "main"]
    assert config.orders.account_queue_capacity >= 5000
    table = config.limit_table()
    for name in config.accounts:
        limits = table.accounts[name]
        assert limits.max_open_orders is None
        assert limits.max_orders_per_window is None
    assert config.admin.token is not None and config.admin.token.kind == "file"
    assert config.venues[orders_setup.VENUE].order_transport == "rest"  # the default


@pytest.mark.parametrize(
    ("flag", "value"), [("--submitters", "0"), ("--latency-orders", "0"), ("--warmup", "-1")]
)
def test_bad_counts_are_refused_naming_the_flag(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main([flag, value])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_transport_defaults_to_rest_and_takes_ws_api_or_both() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args([]).transport == "rest"
    for value in ("rest", "ws-api", "both"):
        assert parser.parse_args(["--transport", value]).transport == value


@pytest.mark.parametrize("value", ["grpc", "ws", "REST", ""])
def test_an_unknown_transport_is_refused_naming_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--transport", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--transport" in err and "invalid choice" in err
