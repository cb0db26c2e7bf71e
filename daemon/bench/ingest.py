"""Market-data ingest benchmark (not a test): ``tradingd bench ingest``.

How close does tradingd's capture run to the WebSocket client's own limit?
One run, on loopback, against the bundled simulator in its bench mode
(pre-encoded trade frames, sent with backpressure, never dropping a slow
reader: :mod:`daemon.venues.sim.benchfeed`) measures:

1. **The raw baseline.** A bare trio-websocket client in its own process
   (:mod:`.ingest_raw`) on the stream URL tradingd's feed uses, doing nothing
   but ``json.loads`` per frame, receives ``--raw-trades`` frames sent flat
   out: frames per second. The simulator's sender capacity (frames per CPU
   second it spent sending) must be at least 1.5 times that, or the baseline
   measures the simulator (a warning says so).
2. **tradingd end to end.** The real daemon (``python -m daemon run``, a
   subprocess; default ``[marketdata]`` and ``[store]`` settings) captures
   ``--trades`` trades sent flat out; they are counted *from its database
   file* (read-only): trades durably committed per second from the first
   frame sent to the last trade committed, and the ratio to the raw rate
   (target ≥ 0.8). Meanwhile, every 0.25 s: its loop lag (its own probe,
   ``/status``; target p99 ≤ 5 ms), memory (``/proc``), CPU (per trade, also
   net of its idle use) and the depth of its stream and trades queues.
3. **The store's write rate**, in the bench process: tradingd's chunked
   trade write (:meth:`~daemon.store.MarketDataStore.insert_trades`, as the
   ingest writer calls it) against raw ``sqlite3`` ``executemany`` of the
   same rows into the same schema at the same ``synchronous`` level
   (:mod:`.ingest_store`; target ≥ 0.8).
4. **Overload.** The sender paced at ``--overload-factor`` (10) times the
   rate of 2. for about ``--overload-s`` (60 s): RSS growth (target ≤ 20 MB),
   no trade lost (every id stored, or every missing one in a recorded gap,
   after a bounded wait for backfill and repair) and what ``/health`` said.

Where things run (said again in the output)::

    bench process (Trio)          simulator process          raw client process (1.)
    ├── phases, sampling          python -m daemon sim       python -m daemon.bench.ingest_raw
    ├── store file, read-only     market paused, bench mode
    └── store phase (3.)          tradingd process (2., 4.): python -m daemon run

**On PostgreSQL** (``--store postgres``, ``--dsn``, ``--password-file``):
the daemon runs with ``[store] backend = "postgres"`` on a fresh schema of
that server (dropped afterwards unless ``--keep``); 2. and 4. count from the
server with a psycopg connection of the bench's own, and 3. sets tradingd's
write against the same technique by hand — binary ``COPY`` into a temporary
table, ``INSERT … SELECT … ON CONFLICT DO NOTHING``, ``COMMIT`` per chunk —
and against ``executemany`` (:mod:`.ingest_pg`).

Numbers vary between machines; the ratios much less. ``--quick`` is a
smoke run of every phase with small counts and a short overload. Where the
code is: :mod:`.ingest_setup` (options, configurations, the processes'
handles, the store witness), :mod:`.ingest_phases` (1., 2., the sampling),
:mod:`.ingest_store` (3.), :mod:`.ingest_overload` (4.),
:mod:`.ingest_stats` (the arithmetic), :mod:`.ingest_report` (the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon.bench.common import (
    BenchError,
    SimProcess,
    cpu_pressure,
    load_average,
    machine_facts,
    ratio,
)
from daemon.bench.ingest_overload import overload_phase
from daemon.bench.ingest_pg import PgWitness, pg_store_phase
from daemon.bench.ingest_phases import SENDER_HEADROOM, TARGET_RATIO, raw_phase, tradingd_phase
from daemon.bench.ingest_report import render
from daemon.bench.ingest_setup import (
    LAG_PROBE_INTERVAL_S,
    LAG_WINDOW_S,
    SAMPLE_INTERVAL_S,
    SYMBOL,
    DaemonProcess,
    IngestOptions,
    SimBench,
    StoreWitness,
    Witness,
    daemon_config,
    free_port,
    sim_config,
)
from daemon.bench.ingest_store import store_phase
from daemon.bench.pg import (
    PgServer,
    add_store_arguments,
    server_from_args,
    store_toml,
)
from daemon.bench.progress import PROGRESS
from daemon.bench.runner import run_measurement
from daemon.venues.binance.codec import depth_stream, stream_url, trade_stream

__all__ = ["add_arguments", "main", "measure", "run"]


async def measure(
    options: IngestOptions,
    workdir: Path,
    *,
    log_level: str = "info",
    daemon_module: Sequence[str] = ("daemon",),
    server: PgServer | None = None,
) -> dict[str, Any]:
    """Start the simulator, the raw client and tradingd under ``workdir``; run every phase.

    ``daemon_module`` is what runs tradingd after ``python -m`` (see
    :meth:`DaemonProcess.start`: a profiler can wrap it). ``server``: tradingd's
    store on that PostgreSQL server, fresh schemas made on it (the caller drops
    them: :meth:`PgServer.drop_all`); ``None``: the SQLite file.
    """
    started = time.perf_counter()
    machine = machine_facts()
    store_section, dsn = "", ""
    if server is not None:
        machine["postgresql"] = await trio.to_thread.run_sync(server.version)
        dsn = await trio.to_thread.run_sync(server.fresh_schema, "ingest")
        store_section = store_toml(dsn, server.password_file)
    sim = await SimProcess.start(workdir, sim_config(options))
    bench = SimBench.open(sim)
    overload: dict[str, Any] | None = None
    try:
        url = stream_url(sim.ws_url, [trade_stream(SYMBOL), depth_stream(SYMBOL)])
        PROGRESS.phase("raw client")
        raw = await raw_phase(options, bench, url, workdir)
        port = free_port()
        config = daemon_config(workdir, sim, port, log_level=log_level, store=store_section)
        daemon = await DaemonProcess.start(workdir, config, port, module=daemon_module)
        witness: Witness = (
            StoreWitness(daemon.db_path) if server is None else PgWitness(server, dsn)
        )
        try:
            PROGRESS.phase("tradingd end to end")
            tradingd = await tradingd_phase(options, daemon, bench, witness)
            if options.overload_s > 0:
                if not tradingd["trades_per_s"]:
                    raise BenchError("no tradingd rate to pace the overload by")
                PROGRESS.phase("overload")
                overload = await overload_phase(
                    options,
                    daemon,
                    bench,
                    witness,
                    writer_rate=tradingd["trades_per_s"],
                    sender_capacity=raw["sender"]["capacity_per_cpu_s"],
                    first_id=tradingd["first_id"],
                )
            daemon_pid = daemon.pid
        finally:
            await trio.to_thread.run_sync(witness.close)
            exit_code = await daemon.stop()
        sim_pid = sim.proc.pid
    finally:
        await bench.aclose()
        await sim.aclose()
    PROGRESS.phase("store write")
    if server is None:
        store = await store_phase(options, workdir)
    else:
        store = await pg_store_phase(options, server)
    PROGRESS.finish()
    tradingd["ratio_to_raw"] = ratio(tradingd["trades_per_s"], raw["trades_per_s"])
    tradingd["target_ratio"] = TARGET_RATIO
    report: dict[str, Any] = {
        "machine": {
            **machine,
            "load_average_1m_after": load_average(),
            "cpu_pressure_avg10_after": cpu_pressure(),
        },
        "setup": _setup(options, workdir, sim_pid, daemon_pid, exit_code, server=server),
        "raw": raw,
        "tradingd": tradingd,
        "store": store,
        "overload": overload,
        "warnings": warnings(raw, tradingd, overload, exit_code),
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    if server is not None:
        report = {"store_backend": "postgres", "dsn": server.public, **report}
        report["setup"]["schemas"] = ", ".join(server.schemas)
    return report


def _setup(
    options: IngestOptions,
    workdir: Path,
    sim_pid: int,
    daemon_pid: int,
    exit_code: int | None,
    *,
    server: PgServer | None,
) -> dict[str, Any]:
    if server is not None:
        return {
            **_setup(options, workdir, sim_pid, daemon_pid, exit_code, server=None),
            "tradingd": f"`python -m daemon run` subprocess (pid {daemon_pid}, exit "
            f'{exit_code}): default [marketdata] settings, [store] backend = "postgres" '
            f"(a fresh schema, default settings); loop-lag probe every {LAG_PROBE_INTERVAL_S:g} "
            f"s, window {LAG_WINDOW_S:g} s (default 60 s), read every {SAMPLE_INTERVAL_S:g} s",
            "counting": "trades durably committed, counted from the PostgreSQL server (a psycopg "
            "connection of the bench's own, autocommit, polled every 50 ms)",
            "store_phase": "in the bench process after the others stopped: tradingd's "
            "MarketDataStore.insert_trades on a PostgresStore vs raw psycopg binary COPY + "
            "INSERT ... SELECT ... ON CONFLICT DO NOTHING (and executemany), a fresh schema "
            "emptied before every round",
        }
    return {
        "simulator": f"`python -m daemon sim` subprocess (pid {sim_pid}), {SYMBOL} only, "
        "market paused, bench mode (pre-encoded frames, backpressure, no slow-consumer drop)",
        "raw_client": "`python -m daemon.bench.ingest_raw` subprocess: trio-websocket "
        "get_message + json.loads per frame, on tradingd's stream URL (combined trade + depth)",
        "tradingd": f"`python -m daemon run` subprocess (pid {daemon_pid}, exit {exit_code}): "
        f"default [marketdata] and [store] settings; loop-lag probe every "
        f"{LAG_PROBE_INTERVAL_S:g} s, window {LAG_WINDOW_S:g} s (default 60 s), read every "
        f"{SAMPLE_INTERVAL_S:g} s",
        "counting": "trades durably committed, counted from tradingd's database file "
        "(read-only sqlite3 connection, polled every 50 ms)",
        "store_phase": "in the bench process after the others stopped: tradingd's "
        "MarketDataStore.insert_trades vs raw sqlite3 executemany, fresh files, same schema",
        "options": attrs.asdict(options),
        "workdir": str(workdir),
    }


def warnings(
    raw: dict[str, Any],
    tradingd: dict[str, Any],
    overload: dict[str, Any] | None,
    exit_code: int | None,
) -> list[str]:
    """What makes a number doubtful or a result bad (a bench never fails on a number)."""
    out: list[str] = []
    over_raw = raw["sender"]["capacity_over_raw"]
    if over_raw is not None and over_raw < SENDER_HEADROOM:
        out.append(
            f"the simulator's sender capacity is only {over_raw:.2f}x the raw client's rate "
            f"(want >= {SENDER_HEADROOM}x): the raw baseline may measure the simulator"
        )
    if tradingd["stored"] != tradingd["trades"]:
        out.append(f"tradingd stored {tradingd['stored']} of {tradingd['trades']} trades")
    if exit_code not in (0, None):
        out.append(f"tradingd exited with {exit_code} at the end (see its log)")
    if overload is not None:
        gaps = overload["gaps"]
        if gaps["lost_unrecorded"]:
            out.append(
                f"overload: {gaps['lost_unrecorded']} trade(s) missing from the store and "
                "from every recorded gap: lost"
            )
        elif gaps["missing_trades"]:
            out.append(
                f"overload: {gaps['missing_trades']} trade(s) still missing after "
                f"{overload['repair']['waited_s']} s, each in a recorded gap"
            )
        if overload["sender_stopped_at_deadline"]:
            out.append("overload: not everything was stored in time; the sender was stopped")
    return out


# ------------------------------------------------------------------ command line


_FLAGS = (
    ("--raw-trades", "raw_trades", int, "N", "frames the raw client receives"),
    ("--trades", "trades", int, "N", "trades tradingd captures in the end-to-end phase"),
    ("--store-rows", "store_rows", int, "N", "rows each side writes per round in the store phase"),
    ("--store-rounds", "store_rounds", int, "N", "alternating rounds of the store phase"),
    ("--overload-s", "overload_s", float, "S", "length of the overload phase (0: none)"),
    ("--overload-factor", "overload_factor", float, "X", "sender pace over tradingd's rate"),
    (
        "--overload-max-trades",
        "overload_max_trades",
        int,
        "N",
        "most trades sent in the overload phase",
    ),
    (
        "--repair-wait-s",
        "repair_wait_s",
        float,
        "S",
        "after the overload, how long gaps may take to be filled",
    ),
    ("--stall-s", "stall_s", float, "S", "a phase with no trade stored this long fails"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every ``tradingd bench ingest`` option to ``parser``."""
    parser.description = (__doc__ or "").split("\n\n")[0]
    defaults, quick = IngestOptions(), IngestOptions.quick()
    add = parser.add_argument

    def shown(value: float) -> str:
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"

    for flag, name, kind, metavar, text in _FLAGS:
        default, smoke = getattr(defaults, name), getattr(quick, name)
        add(
            flag,
            type=kind,
            default=None,
            metavar=metavar,
            help=f"{text} ({shown(default)}; --quick {shown(smoke)})",
        )
    add("--quick", action="store_true", help="a smoke run: small counts, a short overload")
    add(
        "--dir",
        metavar="PATH",
        help="where the temporary state directory goes (the disk the commits hit)",
    )
    add(
        "--keep",
        action="store_true",
        help="keep the state directory (logs, databases) and the PostgreSQL schemas afterwards",
    )
    add("--json", action="store_true", help="print the report as JSON instead of a table")
    add(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="tradingd's log level (info, its default), written to the state directory",
    )
    add_store_arguments(parser)


def _options(args: argparse.Namespace) -> IngestOptions:
    base = IngestOptions.quick() if args.quick else IngestOptions()
    given = {name: getattr(args, name) for _, name, *_ in _FLAGS if getattr(args, name) is not None}
    return attrs.evolve(base, **given)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tradingd bench ingest`` with ``argv`` (the options after ``ingest``)."""
    parser = argparse.ArgumentParser(prog="tradingd bench ingest")
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the bench with parsed options (``tradingd bench ingest`` calls this)."""
    try:
        options = _options(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        server = server_from_args(args)
    except BenchError as exc:
        print(f"tradingd bench ingest: {exc}", file=sys.stderr)
        return 1
    code, report = run_measurement(
        "ingest",
        lambda workdir: measure(options, workdir, log_level=args.log_level, server=server),
        directory=args.dir,
        keep=args.keep,
        log_name="bench.log",
        log_level=logging.WARNING,
        server=server,
    )
    if report is None:
        return code
    if not args.keep:
        report["setup"]["workdir"] += " (removed)"
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
