"""``tradingd bench ingest`` (:mod:`daemon.bench.ingest`): it runs and it reports.

A benchmark is not a test, so nothing here looks at a timing. The smoke test
runs the real thing with ``--quick`` — simulator, raw client and daemon as
subprocesses — and checks that every report key is there and that the counts
add up (every trade sent was received, stored; none lost). The pure parts are
checked on their own: the quantiles of a sampled series and of the loop lag,
the accounting of missing trade ids against recorded gaps, what ``/health``
said, the table, the configurations against the strict loaders, the store
witness against a store made by tradingd's own code, and the store phase
with tiny counts. With ``--store postgres`` (the daemon on PostgreSQL, the
witness and the store phase on the server) the same smoke run and the
PostgreSQL witness and store phase run against the real server; they skip
when none is reachable, and fail instead under ``TRADINGD_REQUIRE_SERVICES=1``
(:mod:`tests.store.pg`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon import config as configmod
from daemon.bench import ingest as bench
from daemon.bench.common import BenchError, SimProcess
from daemon.bench.ingest_pg import PgWitness, pg_rows, pg_store_phase
from daemon.bench.ingest_report import _store as render_store
from daemon.bench.ingest_report import render
from daemon.bench.ingest_setup import (
    SYMBOL,
    VENUE,
    IngestOptions,
    StoreWitness,
    daemon_config,
    sim_config,
)
from daemon.bench.ingest_stats import (
    gap_accounting,
    health_summary,
    lag_summary,
    nearest_rank,
    reason_kind,
    summarize,
    uncovered,
)
from daemon.bench.ingest_store import bench_trades, raw_rows, store_phase
from daemon.bench.pg import PgServer, server_from_args, store_toml, with_search_path
from daemon.cli.parser import build_parser
from daemon.store import GapState, SqliteStore
from daemon.store.postgres import PostgresStore
from daemon.venues.sim import config as simconfig
from tests.store.pg import ADMIN_DSN, admin, fresh_schema, require_postgres

SMOKE_TIMEOUT_S = 180

REPORT_KEYS = {
    "machine",
    "setup",
    "raw",
    "tradingd",
    "store",
    "overload",
    "warnings",
    "bench_seconds",
}


def _bench_env() -> dict[str, str]:
    hostile = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
    return {k: v for k, v in os.environ.items() if k not in hostile}


# ------------------------------------------------------------------ the smoke run


def _run_quick(tmp_path: Path, *extra: str) -> dict[str, Any]:
    """``python -m daemon.bench.ingest --quick --json`` (and ``extra``); its report."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.bench.ingest",
            "--quick",
            "--json",
            "--dir",
            str(tmp_path),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        env=_bench_env(),
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    assert list(tmp_path.iterdir()) == []  # the state directory is gone
    return report


@pytest.mark.slow
def test_quick_run_reports_every_phase_and_loses_nothing(tmp_path: Path) -> None:
    report = _run_quick(tmp_path)
    assert set(report) == REPORT_KEYS
    _check_quick_report(report)
    assert report["store"]["raw"]["stored"] == report["store"]["tradingd"]["stored"]
    assert render(report).splitlines()[0] == "tradingd bench ingest"


@pytest.mark.slow
def test_quick_run_on_postgres_counts_from_the_server_and_drops_its_schemas(
    tmp_path: Path,
) -> None:
    require_postgres()
    report = _run_quick(tmp_path, "--store", "postgres", "--dsn", ADMIN_DSN)
    assert set(report) == REPORT_KEYS | {"store_backend", "dsn"}
    assert report["store_backend"] == "postgres"
    assert report["dsn"] == PgServer(ADMIN_DSN).public and "password" not in report["dsn"]
    assert report["machine"]["postgresql"]
    assert "PostgreSQL server" in report["setup"]["counting"]
    _check_quick_report(report)

    store = report["store"]
    assert store["backend"] == "postgres" and store["synchronous_commit"] == "off"
    for side in ("raw", "raw_executemany", "tradingd"):
        assert store[side]["stored"] == [IngestOptions.quick().store_rows], side
        assert store[side]["rows_per_s"] > 0 and store[side]["cpu_us_per_row"] > 0, side
    assert store["ratio"] > 0 and store["ratio_to_executemany"] > 0
    assert report["overload"]["store_page_cache_max_mb"] is None
    assert report["overload"]["store_file_mb_after"] > 0

    # Every schema the run made (the daemon's, the store phase's) is dropped.
    schemas = report["setup"]["schemas"].split(", ")
    assert len(schemas) == 2 and all(s.startswith("tradingd_bench_ingest") for s in schemas)
    with admin() as conn:
        left = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)
        ).fetchall()
    assert left == []

    table = render(report)
    assert table.splitlines()[0] == "tradingd bench ingest --store postgres"
    for line in ("store: PostgreSQL", "raw psycopg binary COPY", "raw psycopg executemany"):
        assert line in table


def _check_quick_report(report: dict[str, Any]) -> None:
    """A ``--quick`` report of either store: every phase complete, nothing lost."""
    quick = IngestOptions.quick()
    assert {"cores", "python", "sqlite", "load_average_1m_after"} <= set(report["machine"])
    assert report["setup"]["workdir"].endswith(" (removed)")
    assert report["setup"]["options"]["trades"] == quick.trades

    raw = report["raw"]
    assert raw["trades"] == quick.raw_trades and raw["frames"] >= raw["trades"]
    assert raw["trades_per_s"] > 0 and raw["cpu_us_per_frame"] > 0
    assert raw["sender"]["capacity_per_cpu_s"] > 0 and raw["sender"]["send_s"] > 0

    td = report["tradingd"]
    assert td["trades"] == td["stored"] == quick.trades
    assert td["last_id"] - td["first_id"] + 1 == quick.trades
    assert td["trades_per_s"] > 0 and td["ratio_to_raw"] > 0
    assert td["cpu_us_per_trade"] > 0 and td["peak_rss_mb"] > 0
    assert td["loop_lag"]["max_ms"] is not None
    assert td["loop_lag"]["max_ms"] >= td["loop_lag"]["p99_ms"] >= td["loop_lag"]["p50_ms"]
    assert td["queues"]["trades_queue_capacity"] > 0
    assert len(td["queues"]["series"]) == td["queues"]["samples"] >= 1
    assert td["writer"]["rows_inserted"] == quick.trades

    store = report["store"]
    assert store["tradingd"]["stored"] == [quick.store_rows]
    assert store["ratio"] > 0

    ov = report["overload"]
    assert ov["first_id"] == td["last_id"] + 1
    assert ov["stored_in_time"] == ov["trades"] and not ov["sender_stopped_at_deadline"]
    assert ov["sent"] == ov["trades"] == sum(run["trades"] for run in ov["runs"])
    assert ov["checked_ids"] == [td["first_id"], ov["last_id"]]
    assert ov["gaps"]["lost_unrecorded"] == 0 and ov["gaps"]["missing_trades"] == 0
    assert ov["health"]["reads"] >= 1 and sum(ov["health"]["seconds_by_level"].values()) > 0
    assert ov["rss_mb_max"] >= ov["rss_mb_before"] > 0
    assert not [w for w in report["warnings"] if "lost" in w or "stored" in w]

    table = render(report)
    for heading in ("1. raw client", "2. tradingd end to end", "3. store write", "4. overload"):
        assert heading in table


# ------------------------------------------------------------------ pure parts


def test_nearest_rank_never_interpolates() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert nearest_rank(values, 0.5) == 2.0
    assert nearest_rank(values, 0.51) == 3.0
    assert nearest_rank(values, 1.0) == 4.0
    assert nearest_rank([7.0], 0.01) == 7.0
    with pytest.raises(ValueError):
        nearest_rank([], 0.5)
    with pytest.raises(ValueError):
        nearest_rank(values, 0)


def test_summarize_skips_missing_samples_and_rounds() -> None:
    s = summarize([None, *range(1, 101)], 1)
    assert s == {"count": 100, "min": 1, "p50": 50, "p90": 90, "p99": 99, "max": 100, "mean": 50.5}
    empty = summarize([None, None])
    assert empty["count"] == 0 and empty["p99"] is None and empty["max"] is None


def test_lag_summary_is_exact_for_the_max_and_conservative_for_p99() -> None:
    reads = [
        {"p50_ms": 0.2, "p99_ms": 1.0, "max_ms": 1.0, "samples": 5},
        {"p50_ms": 0.3, "p99_ms": 9.0, "max_ms": 9.0, "samples": 5},
        {"p50_ms": 0.4, "p99_ms": 2.0, "max_ms": 2.0, "samples": 5},
        {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "samples": 0},  # an empty window
    ]
    assert lag_summary(reads) == {"reads": 3, "p50_ms": 0.3, "p99_ms": 9.0, "max_ms": 9.0}
    assert lag_summary([])["p99_ms"] is None


def test_uncovered_subtracts_overlapping_and_adjacent_covers() -> None:
    assert uncovered([(1, 10)], []) == [(1, 10)]
    assert uncovered([(1, 10)], [(1, 10)]) == []
    assert uncovered([(1, 10)], [(3, 4), (4, 5), (6, 6)]) == [(1, 2), (7, 10)]
    assert uncovered([(1, 3), (8, 12)], [(0, 1), (10, 20)]) == [(2, 3), (8, 9)]
    assert uncovered([(5, 5)], [(1, 4), (6, 9)]) == [(5, 5)]


def test_gap_accounting_tells_recorded_gaps_from_lost_trades() -> None:
    gaps = [
        {"from_id": 10, "to_id": 19, "state": "unrecoverable", "reason": "sequence jump"},
        {"from_id": 30, "to_id": 39, "state": "backfilled", "reason": "reconnect"},
        {"from_id": 50, "to_id": 50, "state": "open", "reason": "sequence jump"},
    ]
    # 10-19 recorded as lost by the venue; 35 missing though claimed backfilled;
    # 50 open; 60-61 missing with no record at all.
    result = gap_accounting([(10, 19), (35, 35), (50, 50), (60, 61)], gaps)
    assert result["holes"] == 4
    assert result["missing_trades"] == 14
    assert result["lost_unrecorded"] == 2
    assert result["unrecorded_ranges"] == [[60, 61]]
    assert result["backfilled_but_missing"] == 1
    assert result["gaps_by_state"] == {"backfilled": 1, "open": 1, "unrecoverable": 1}
    assert result["gap_trades_by_state"] == {"backfilled": 10, "open": 1, "unrecoverable": 10}
    clean = gap_accounting([], [])
    assert clean["lost_unrecorded"] == clean["missing_trades"] == 0


def test_health_summary_counts_time_per_level_and_first_reasons() -> None:
    reads = [
        {"t_s": 0.0, "code": 200, "level": "healthy", "reasons": []},
        {"t_s": 0.25, "code": 200, "level": "degraded", "reasons": ["loop lag p99 120 ms"]},
        {"t_s": 0.5, "code": 200, "level": "degraded", "reasons": ["loop lag p99 130 ms", "x"]},
        {"t_s": 0.75, "code": 200, "level": "healthy", "reasons": []},
    ]
    h = health_summary(reads, 0.25)
    assert h["seconds_by_level"] == {"degraded": 0.5, "healthy": 0.5}
    assert h["http_codes"] == {"200": 4}
    assert h["first_not_healthy_at_s"] == 0.25
    # The same condition with other figures is one reason, shown as first given.
    assert h["reasons"] == [
        {"reason": "loop lag p99 120 ms", "first_at_s": 0.25, "reads": 2},
        {"reason": "x", "first_at_s": 0.5, "reads": 1},
    ]
    assert reason_kind("consumer lag 30.4s (p50 29.8s; 134 waiting)") == (
        "consumer lag #s (p# #s; # waiting)"
    )


def _report() -> dict[str, Any]:
    """A complete report with made-up numbers (the shape :func:`bench.measure` returns)."""
    lag = {"reads": 12, "p50_ms": 0.2, "p99_ms": 3.5, "max_ms": 3.5}
    series = summarize([0, 10, 20])
    queues = {
        "samples": 3,
        "interval_s": 0.25,
        "trades_queue_capacity": 10000,
        "trades_queue": series,
        "stream_queue": series,
        "series": [[0.0, 0, 0], [0.25, 10, 0], [0.5, 20, 1]],
    }
    writer = {
        "writer": {"batches": 10, "chunks_committed": 10, "rows_inserted": 10000, "retries": 0},
        "feed": {"put_waits": 3, "put_wait_s_total": 0.5},
    }
    return {
        "machine": {
            "cores": 2,
            "usable_cores": 2,
            "cpu_model": "cpu",
            "implementation": "CPython",
            "python": "3.11",
            "sqlite": "3.40",
            "trio": "0.35",
            "platform": "Linux",
            "load_average_1m_before": 0.5,
            "load_average_1m_after": 1.5,
            "cpu_pressure_avg10_before": 1.0,
            "cpu_pressure_avg10_after": 2.0,
        },
        "setup": {"simulator": "sim", "options": {}, "workdir": "/tmp/x (removed)"},
        "raw": {
            "trades": 20000,
            "frames": 20000,
            "trades_per_s": 40000.0,
            "cpu_us_per_frame": 24.0,
            "sender": {
                "capacity_per_cpu_s": 1e6,
                "capacity_is_lower_bound": False,
                "capacity_over_raw": 25.0,
                "target_over_raw": 1.5,
                "cpu_s": 0.02,
                "sent_per_s_wall": 39000.0,
            },
        },
        "tradingd": {
            "trades": 10000,
            "trades_per_s": 4000.0,
            "ratio_to_raw": 0.1,
            "target_ratio": 0.8,
            "cpu_us_per_trade": 150.0,
            "cpu_us_per_trade_net": 140.0,
            "cpu_share": 0.6,
            "loop_lag": {**lag, "target_p99_ms": 5.0},
            "rss_mb_before": 50.0,
            "rss_mb_after": 52.0,
            "peak_rss_mb": 53.0,
            "queues": queues,
            **writer,
        },
        "store": {
            "rows": 1000,
            "rounds": 1,
            "chunk_size": 1000,
            "synchronous": "NORMAL",
            "raw": {"rows_per_s": 3e5, "cpu_us_per_row": 3.0},
            "tradingd": {"rows_per_s": 2.7e5, "cpu_us_per_row": 3.4},
            "ratio": 0.9,
            "target_ratio": 0.8,
        },
        "overload": {
            "trades": 12000,
            "runs": [{"trades": 10000}, {"trades": 2000}],
            "rate_asked_per_s": 40000.0,
            "rate_capped_at_sender_capacity": False,
            "factor": 10.0,
            "target_s": 3.0,
            "seconds": 3.1,
            "trades_per_s": 3900.0,
            "sender_stopped_at_deadline": False,
            "rss_growth_mb": 1.5,
            "rss_mb_before": 52.0,
            "rss_mb_max": 53.5,
            "store_file_mb_before": 10.0,
            "store_file_mb_after": 20.0,
            "store_page_cache_max_mb": 32.0,
            "target_rss_growth_mb": 20.0,
            "checked_ids": [1, 22000],
            "repair": {"missing_before": 0, "waited_s": 0.0, "wait_bound_s": 20.0},
            "gaps": gap_accounting([], []),
            "health": health_summary(
                [{"t_s": 0.0, "code": 200, "level": "degraded", "reasons": ["slow"]}], 0.25
            ),
            "loop_lag": lag,
            "consumer_lag_ms": summarize([100, 2000]),
            "stream_reconnects": 0,
            "queues": queues,
        },
        "warnings": ["a warning"],
        "bench_seconds": 12.3,
    }


def test_render_lays_out_every_measure_with_its_target() -> None:
    table = render(_report())
    lines = table.splitlines()
    assert lines[0] == "tradingd bench ingest"
    assert any(line.split() == ["measure", "result", "target"] for line in lines)
    for text in (
        "frames received per second",
        "40,000/s",
        "ratio tradingd / raw client",
        "0.100x",
        ">= 0.8x",
        "p99 <= 5 ms",
        "0.20 / 3.50 / 3.50 ms",
        "trades queue depth p50 / p90 / max (of 10000)",
        "ratio tradingd / raw",
        "0.900x",
        "12000 trades (2 runs)",
        "<= 20 MB",
        "trades lost",
        "reason: slow (from 0 s, in 1 reads)",
        "  - a warning",
        "bench time 12.3 s",
    ):
        assert text in table, text
    report = _report()
    report["overload"] = None
    assert "4. overload: not run" in render(report)


# ------------------------------------------------------------------ options, configurations


def test_options_refuse_nonsense_and_quick_is_smaller() -> None:
    with pytest.raises(ValueError, match="--trades"):
        IngestOptions(trades=0)
    IngestOptions(overload_s=0)  # no overload phase: allowed
    quick, full = IngestOptions.quick(), IngestOptions()
    assert quick.trades < full.trades and quick.overload_s < full.overload_s


def test_command_line_registers_ingest_and_explicit_flags_beat_quick() -> None:
    parser = build_parser()
    args = parser.parse_args(["bench", "ingest", "--quick", "--trades", "1234", "--json"])
    assert args.command == "bench" and args.bench == "ingest"
    options = bench._options(args)
    assert options.trades == 1234
    assert options.raw_trades == IngestOptions.quick().raw_trades
    plain = bench._options(build_parser().parse_args(["bench", "ingest"]))
    assert plain == IngestOptions()


def test_sim_config_passes_the_simulators_strict_loader() -> None:
    options = IngestOptions()
    config = simconfig.loads(sim_config(options), source="bench-sim.toml")
    assert config.market.paused
    assert [s.symbol for s in config.symbols] == [SYMBOL]
    assert config.market.trade_retention >= options.history()
    assert config.audit_trade_retention >= config.market.trade_retention


def test_daemon_config_passes_the_strict_loader(tmp_path: Path) -> None:
    sim = SimProcess(None, "http://127.0.0.1:1234", "ws://127.0.0.1:1235")  # type: ignore[arg-type]
    text = daemon_config(tmp_path, sim, 8123, log_level="info")
    config = configmod.loads(text, source="bench-tradingd.toml", base_dir=tmp_path)
    assert config.marketdata.venue == VENUE and config.marketdata.symbols == (SYMBOL,)
    assert config.marketdata == configmod.MarketDataConfig(venue=VENUE, symbols=(SYMBOL,))
    assert config.store == configmod.StoreConfig()


# ------------------------------------------------------------------ the store witness and phase


async def test_store_witness_reads_holes_and_gaps_of_tradingds_own_file(tmp_path: Path) -> None:
    path = tmp_path / "tradingd.db"
    trades = [t for t in bench_trades(30) if not 10 <= t.trade_id <= 12 and t.trade_id != 20]
    with trio.fail_after(10):
        async with await SqliteStore.open(path) as store:
            await store.market.insert_trades(trades, checkpoint=(VENUE, SYMBOL, "trades"))
            await store.market.record_resolved_gap(
                VENUE, SYMBOL, "trades", 10, 12, state=GapState.UNRECOVERABLE, reason="test"
            )
            witness = StoreWitness(path)
            try:
                assert witness.last_id(1, 1000) == 30
                assert witness.count(1, 1000) == 26
                assert witness.holes(1, 35) == [(10, 12), (20, 20), (31, 35)]
                assert witness.holes(100, 200) == [(100, 200)]
                gaps = witness.gaps()
            finally:
                witness.close()
    assert [(g["from_id"], g["to_id"], g["state"]) for g in gaps] == [(10, 12, "unrecoverable")]
    accounting = gap_accounting([(10, 12), (20, 20)], gaps)
    assert accounting["lost_unrecorded"] == 1 and accounting["unrecorded_ranges"] == [[20, 20]]


def test_raw_rows_are_what_tradingd_stores() -> None:
    trade = bench_trades(1)[0]
    (row,) = raw_rows([trade], 123)
    assert row == (
        VENUE,
        SYMBOL,
        1,
        str(trade.price),
        str(trade.quantity),
        str(trade.quote_quantity),
        0,
        trade.trade_time_ms,
        trade.event_time_ms,
        123,
    )


async def test_store_phase_writes_the_same_rows_both_ways(tmp_path: Path) -> None:
    options = IngestOptions(store_rows=2500, store_rounds=1)
    with trio.fail_after(30):
        result = await store_phase(options, tmp_path)
    assert result["raw"]["stored"] == result["tradingd"]["stored"] == [2500]
    assert result["chunk_size"] == configmod.MarketDataConfig().chunk_size
    assert result["synchronous"] == configmod.StoreConfig().synchronous_market
    assert result["raw"]["rows_per_s"] > 0 and result["tradingd"]["rows_per_s"] > 0
    assert result["ratio"] > 0


def test_bench_module_runs_as_a_script_help() -> None:
    parser = argparse.ArgumentParser(prog="x")
    bench.add_arguments(parser)
    text = parser.format_help()
    for flag in ("--trades", "--raw-trades", "--quick", "--json", "--overload-s", "--keep"):
        assert flag in text


# ------------------------------------------------------------------ --store postgres


def test_daemon_config_with_the_postgres_store_passes_the_strict_loader(tmp_path: Path) -> None:
    sim = SimProcess(None, "http://127.0.0.1:1234", "ws://127.0.0.1:1235")  # type: ignore[arg-type]
    dsn = with_search_path(ADMIN_DSN, "tradingd_bench_ingest_0")
    store = store_toml(dsn, tmp_path / "pg-password")
    text = daemon_config(tmp_path, sim, 8123, log_level="info", store=store)
    config = configmod.loads(text, source="bench-tradingd.toml", base_dir=tmp_path)
    assert config.store.backend == "postgres" and config.store.dsn == dsn
    assert config.store.password is not None and config.store.password.kind == "file"
    assert config.store.problems() == []
    assert config.marketdata == configmod.MarketDataConfig(venue=VENUE, symbols=(SYMBOL,))


def test_search_path_is_added_to_the_dsns_own_options() -> None:
    assert "search_path=s1" in with_search_path("host=h dbname=d", "s1")
    both = with_search_path("host=h options='-c work_mem=8MB'", "s2")
    assert "work_mem=8MB" in both and "search_path=s2" in both


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--store", "postgres", "--dsn", "host=h password=hunter2"], "--password-file"),
        (["--store", "postgres", "--dsn", "postgresql://u:hunter2@h/d"], "--password-file"),
        (["--dsn", "host=h"], "--store postgres"),
        (["--store", "postgres", "--password-file", "/nonexistent/pw"], "does not exist"),
    ],
)
def test_store_options_refuse_a_password_in_the_dsn_and_never_show_it(
    argv: list[str], message: str
) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    with pytest.raises(BenchError, match=message) as caught:
        server_from_args(parser.parse_args(argv))
    assert "hunter2" not in str(caught.value)


@pytest.fixture
def postgres() -> None:
    """Skip (or fail) before the Trio test starts, so the reason is reported."""
    require_postgres()


@pytest.mark.usefixtures("postgres")
async def test_pg_witness_reads_holes_and_gaps_from_the_server() -> None:
    trades = [t for t in bench_trades(30) if not 10 <= t.trade_id <= 12 and t.trade_id != 20]
    with fresh_schema() as dsn, trio.fail_after(20):
        async with await PostgresStore.open(dsn) as store:
            await store.market.insert_trades(trades, checkpoint=(VENUE, SYMBOL, "trades"))
            await store.market.record_resolved_gap(
                VENUE, SYMBOL, "trades", 10, 12, state=GapState.UNRECOVERABLE, reason="test"
            )
        witness = PgWitness(PgServer(ADMIN_DSN), dsn)
        try:
            assert witness.last_id(1, 1000) == 30
            assert witness.count(1, 1000) == 26
            assert witness.holes(1, 35) == [(10, 12), (20, 20), (31, 35)]
            assert witness.holes(100, 200) == [(100, 200)]
            assert [(g["from_id"], g["to_id"], g["state"]) for g in witness.gaps()] == [
                (10, 12, "unrecoverable")
            ]
            assert witness.file_bytes() > 0 and witness.page_cache_max_mb is None
            stored = witness._connect().execute(
                "SELECT venue, symbol, trade_id, price, quantity, quote_quantity, "
                "buyer_is_maker, trade_time_ms, event_time_ms FROM trades WHERE trade_id = 1"
            )
            # The raw sides of the store phase insert exactly what tradingd stores.
            assert tuple(stored.fetchone() or ()) == pg_rows(trades[:1], 0)[0][:9]
        finally:
            witness.close()


@pytest.mark.usefixtures("postgres")
async def test_pg_store_phase_writes_the_same_rows_three_ways_and_drops_its_schema() -> None:
    server = PgServer(ADMIN_DSN)
    options = IngestOptions(store_rows=2500, store_rounds=1)
    try:
        with trio.fail_after(30):
            result = await pg_store_phase(options, server)
        (schema,) = server.schemas
    finally:
        server.drop_all()
    assert server.schemas == []
    with admin() as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None
    for side in ("raw", "raw_executemany", "tradingd"):
        assert result[side]["stored"] == [2500], side
        assert result[side]["rows_per_s"] > 0, side
    assert result["synchronous_commit"] == "off"  # the default synchronous_market, NORMAL
    assert result["ratio"] > 0 and result["ratio_to_executemany"] > 0
    assert "3. store write" in "\n".join(render_store(result))
