"""``tradingd bench orders --profile`` (:mod:`daemon.bench.orders_profile`): the stage budget.

Nothing here looks at a timing. The mapping of functions to stages is
checked on names (modules, methods, builtins), the attribution of shared
code on a hand-made profile whose split is known, the report on a real
cProfile of a small program (every stage row there, shares adding up), and
the whole thing once with the bench's tiny counts (``--profile``, slow).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.bench import orders as bench
from daemon.bench import orders_profile as prof
from daemon.bench import orders_report, orders_setup
from daemon.bench.common import BenchError

from .test_orders import SMOKE_TIMEOUT_S, TINY, _bench_env

SITE = "/work/.venv/lib/python3.11/site-packages"


@pytest.mark.parametrize(
    ("filename", "module"),
    [
        (f"{SITE}/httpx2/_urlparse.py", "httpx2._urlparse"),
        ("/usr/lib/python3/dist-packages/h11/_headers.py", "h11._headers"),
        ("/repo/daemon/orders/ledger.py", "daemon.orders.ledger"),
        ("/a/daemon/b/daemon/venues/binance/http.py", "daemon.venues.binance.http"),
        ("/repo/daemon/http/__init__.py", "daemon.http"),
        ("/usr/lib/python3.11/json/encoder.py", "json.encoder"),
        ("/usr/lib/python3.11/logging/__init__.py", "logging"),
        ("~", "~"),
    ],
)
def test_module_of_a_profiled_file(filename: str, module: str) -> None:
    assert prof.module_of(filename) == module


@pytest.mark.parametrize(
    ("module", "function", "stage"),
    [
        ("daemon.http.server", "handle", "admin_http"),
        ("daemon.admin.api", "post_order", "admin_http"),
        ("daemon.orders.entry", "submit", "validation_risk"),
        ("daemon.orders.entry", "run_writer", "group_commit"),
        ("daemon.orders.entry_commit", "write_batch", "group_commit"),
        ("daemon.orders.entry_commit", "_risk", "validation_risk"),
        ("daemon.risk.checks", "check", "validation_risk"),
        ("daemon.orders.executor", "_section", "executor_ledger"),
        ("daemon.orders.ledger", "lock", "executor_ledger"),
        ("daemon.orders.ledger", "apply_report", "persist_answer"),
        ("daemon.orders.ledger", "OrderLedger.apply_report", "persist_answer"),
        ("daemon.venues.binance.http", "_prepare", "venue_client"),
        ("daemon.venues.binance.http", "_exchange", "http_client"),
        ("daemon.venues.binance.codec.signing", "sign", "venue_client"),
        ("daemon.venues.binance.codec.orders", "parse_order", "decode"),
        ("daemon.venues.binance.userstream", "_pump", "user_stream"),
        ("httpx2._urlparse", "_parse_url", "http_client"),
        ("httpcore2._async.connection_pool", "handle_async_request", "http_client"),
        ("trio._core._run", "unrolled_run", "event_loop"),
        ("daemon.health.steps", "after_task_step", "background"),
        ("daemon.bench.orders_phases", "one_tradingd_order", "bench"),
        # Shared code goes to its callers.
        ("daemon.store.sqlite", "apply_changes", prof.GENERIC),
        ("h11._connection", "next_event", prof.GENERIC),
        ("trio._threads", "to_thread_run_sync", prof.GENERIC),
        ("trio._core._run", "reschedule", prof.GENERIC),
        ("json.decoder", "decode", prof.GENERIC),
        ("~", "<built-in method builtins.isinstance>", prof.GENERIC),
    ],
)
def test_functions_map_to_stages_by_module_and_name(module: str, function: str, stage: str) -> None:
    assert prof.classify(module, function) == stage


def test_every_rule_names_a_known_stage() -> None:
    for rule in prof.RULES:
        assert rule.stage in prof.STAGE_KEYS, rule


def _f(module: str, name: str) -> tuple[str, int, str]:
    return (f"/repo/{module.replace('.', '/')}.py", 1, name)


def test_shared_code_is_split_over_its_callers_by_the_profile_edges() -> None:
    """A store call under the entry writer (3 s) and under the ledger's answer (1 s)."""
    writer = _f("daemon.orders.entry_commit", "write_batch")
    answer = _f("daemon.orders.ledger", "apply_report")
    store = _f("daemon.store.sqlite", "apply_changes")  # generic
    hop = _f("trio._threads", "to_thread_run_sync")  # generic, called by the store only
    step = ("~", 0, "<method 'send' of 'coroutine' objects>")
    root = _f("daemon.somewhere", "orphan_task")  # generic task root: "other"
    # func: (cc, nc, tt, ct, {caller: (nc, cc, tt, ct)})
    stats: dict[Any, Any] = {
        writer: (1, 1, 0.5, 3.5, {}),
        answer: (1, 1, 0.25, 1.25, {}),
        store: (2, 2, 2.0, 4.0, {writer: (1, 1, 1.5, 3.0), answer: (1, 1, 0.5, 1.0)}),
        hop: (2, 2, 2.0, 2.0, {store: (2, 2, 2.0, 2.0)}),
        step: (1, 1, 0.0, 0.75, {}),
        root: (1, 1, 0.75, 0.75, {step: (1, 1, 0.75, 0.75)}),
    }
    budget = prof.stage_budget(stats)
    stages = budget["stages"]
    # The store's own 2 s by own-time edges (1.5 : 0.5); the hop's 2 s through
    # the store by cumulative edges (3 : 1).
    assert stages["group_commit"] == pytest.approx(0.5 + 1.5 + 1.5)
    assert stages["persist_answer"] == pytest.approx(0.25 + 0.5 + 0.5)
    assert stages["other"] == pytest.approx(0.75)
    assert budget["other"] == [("daemon.somewhere:1(orphan_task)", pytest.approx(0.75))]
    assert sum(stages.values()) == pytest.approx(budget["raw_s"])
    # The calibrated cost of a call comes off each function's own time (never below 0:
    # the task step has none to give).
    corrected = prof.stage_budget(stats, bias_s=0.125)
    assert sum(corrected["stages"].values()) == pytest.approx(budget["raw_s"] - 7 * 0.125)


def _work() -> int:
    return sum(json.loads(json.dumps({"a": i}))["a"] for i in range(2000))


def test_report_of_a_real_profile_is_complete_and_sane() -> None:
    profiler = prof.StageProfiler(bias_s=prof.calibrate(2000))
    profiler.start()
    _work()
    profiler.stop()
    baseline = {key: 10.0 for key, _ in prof.BASELINE_STAGES} | {"process": 60.0}
    report = prof.StageProfiler.report(
        profiler, 4, {"process": 0.002, "main_thread": 0.0015}, baseline
    )
    prof.check_complete(report)
    rows = report["stages"]
    assert [r["stage"] for r in rows] == [*prof.STAGE_KEYS, "store_worker_threads"]
    shares = [r["share_pct"] for r in rows if r["share_pct"] is not None]
    assert all(s >= 0 for s in shares) and sum(shares) == pytest.approx(100, abs=1)
    assert all(r["estimated_us_per_order"] >= 0 for r in rows)
    # Nothing here is tradingd: its time is "other", named by where it started.
    assert report["stages"][prof.STAGE_KEYS.index("other")]["share_pct"] > 50
    assert report["other_top"] and report["own_time_top"]
    assert rows[-1]["estimated_us_per_order"] == 500.0  # process - main thread, per order
    assert report["unprofiled_cpu_us_per_order"] == {
        "process": 2000.0,
        "main_thread": 1500.0,
        "worker_threads": 500.0,
    }
    assert [r["stage"] for r in report["baseline"]["stages"]] == [
        k for k, _ in prof.BASELINE_STAGES
    ]
    assert prof.GENERIC in report["mapping"]
    text = "\n".join(prof.render_profile(report))
    assert "cProfile inflates" in text and "4. CPU per order by stage" in text
    for _, label in prof.STAGES:
        assert label in text


def test_check_complete_refuses_a_missing_stage() -> None:
    with pytest.raises(BenchError, match="stages"):
        prof.check_complete({"stages": [{"stage": "admin_http"}]})


def test_quick_sets_the_counts_not_given() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    quick = bench._options(parser.parse_args(["--quick", "--entry-orders", "7"]))
    assert quick.latency_orders == orders_setup.QUICK.latency_orders
    assert quick.http_orders == orders_setup.QUICK.http_orders
    assert quick.entry_orders == 7
    assert bench._options(parser.parse_args([])) == orders_setup.BenchOptions()
    assert parser.parse_args(["--profile"]).profile


@pytest.mark.slow
def test_bench_with_profile_reports_a_complete_stage_budget(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.bench.orders",
            *TINY,
            "--dir",
            str(tmp_path),
            "--json",
            "--profile",
        ],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        env=_bench_env(),
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    profile = report["profile"]
    prof.check_complete(profile)
    assert profile["orders"] == 3
    rows = {r["stage"]: r for r in profile["stages"]}
    shares = [r["share_pct"] for r in profile["stages"] if r["share_pct"] is not None]
    assert sum(shares) == pytest.approx(100, abs=1)
    # An order passes through every stage of its way (time is never asserted, only presence).
    for stage in ("admin_http", "group_commit", "venue_client", "http_client", "decode"):
        assert rows[stage]["profiled_us_per_order"] > 0, stage
    assert all(r["estimated_us_per_order"] >= 0 for r in profile["stages"])
    cpu = profile["unprofiled_cpu_us_per_order"]
    assert cpu["process"] >= cpu["main_thread"] > 0
    assert {r["stage"] for r in profile["baseline"]["stages"]} == {
        k for k, _ in prof.BASELINE_STAGES
    }
    assert set(report["latency"]["baseline_parts"]["cpu_stages_us_per_order"]) >= {
        "commit_intent",
        "http_client",
    }
    assert "4. CPU per order by stage" in orders_report.render(report)
