"""Order pipeline benchmark (not a test): ``tradingd bench orders``.

One run measures, against the bundled simulator and with the real daemon:

1. **Latency, one order at a time.** A raw baseline — a bare httpx2 POST of a
   signed new order to the simulator between two ``synchronous=FULL`` SQLite
   commits (WAL, one small INSERT each, in a worker thread) — against
   tradingd's own record of ``POST /orders`` received → the venue's answer
   persisted (``received_to_answer_persisted`` of the ledger). The two run in
   alternating blocks, so drift (a growing book, a growing WAL) hits both
   alike. Reported: p50/p99 and the ratios tradingd / baseline (target: p50
   at most 1.3 times), plus what each side spent per order (commits, CPU).
   tradingd does more durable work per order than the baseline: three FULL
   commits (intent, SENDING mark, answer) and a read against two commits.
2. **Durable intents accepted per second, in process**: 8 Trio tasks calling
   :meth:`OrdersService.submit` (the strategies' entry API), target ≥ 2000/s.
3. **The same through ``POST /orders``**: 8 keep-alive HTTP clients in a
   separate process, whose own CPU use is reported (on a 2-core machine the
   client can be the limit).

Where things run (said again in the output)::

    bench process (Trio)                 simulator process        load-generator process
    ├── tradingd: a real Daemon          python -m daemon sim     python -m daemon.bench.orders
    │   (admin API, store, venue link,   market paused            --load-generator
    │   order pipeline), state in a                               ├── baseline (1)
    │   temporary directory                                       └── HTTP clients (1, 3)
    └── in-process submitters (2)

The baseline runs in the load generator (:mod:`daemon.bench.orders_load`),
alone in its Trio loop, so it pays nothing for the daemon's tasks or its
instruments. Its orders use their own simulator API key, so tradingd's
reconciliation never sees them.

**Sending during the entry measurements.** The executor sends to the venue
while intents are accepted — what a daemon really does. One account's orders
are sent one at a time (docs/ARCHITECTURE.md §4, "Orders"), so the venue side
drains far slower than entry accepts; the bench raises
``orders.account_queue_capacity`` to hold a whole burst, so that acceptance
is measured rather than the queue's backpressure (which would answer 503 at
the send rate). The send rate (venue answers persisted per second until the
backlog is gone) is reported beside the acceptance rate.

**Order transports** (``--transport``). With ``rest`` (the default)
tradingd sends orders over REST and the baseline is the signed httpx2 POST
above. With ``ws-api`` tradingd runs with ``[venues.sim] order_transport =
"ws-api"`` (one kept-up WebSocket API connection) and the baseline is the
same thing done by hand over the WebSocket API: a bare trio-websocket client
sending a signed ``order.place`` frame on one kept-open connection and
waiting for its answer, between the same two FULL commits — so each ratio
compares like with like. ``both`` runs the two one after the other, each
with its own simulator, daemon and load generator (a state subdirectory
each), and reports them side by side; the JSON is then ``{"transports",
"runs": {"rest": …, "ws-api": …}, "bench_seconds"}``, each run the document
a single-transport run prints (which carries ``"transport"`` unless it is
``rest``, whose report is the same as before ``--transport`` existed).

**On PostgreSQL** (``--store postgres``, ``--dsn``, ``--password-file``):
tradingd runs with ``[store] backend = "postgres"`` on a fresh schema of
that server (one per transport; dropped afterwards unless ``--keep``), and
the raw baseline's two FULL commits become two committed single-row
INSERTs on a plain psycopg connection to the same server and schema with
``synchronous_commit`` on (:mod:`.orders_pg`), so that the ratio compares
like with like.

Orders are LIMIT BUYs far below the market (nothing fills); risk limits are
off (0 = unlimited); the tracker's polling and the periodic reconciliation
are slowed to an hour, because the bench leaves thousands of resting orders
and polling them is not what is measured. Numbers vary between machines; the
ratios much less.

**Where the CPU goes** (``--profile``). After the latency phase, as many
sequential orders again under :mod:`cProfile`, turned into a CPU budget per
order and stage (admin HTTP, validation and risk, group commit, executor
and ledger, venue client, HTTP client, decode, persisting the answer),
beside the baseline's own steps timed in the load generator
(:mod:`.orders_profile` says how functions map to stages and what the
profiler's inflation means). The latency figures above are not profiled.
``--quick`` runs smaller counts (:data:`~.orders_setup.QUICK`).

Where the code is: this module runs the bench (:func:`measure`) and is its
command line; :mod:`.orders_setup` holds the options, the simulator's and
tradingd's configurations and the running daemon; :mod:`.orders_phases` the
three measurements; :mod:`.orders_profile` the profiled pass;
:mod:`.orders_report` the table; :mod:`.orders_load` the load-generator
process (which runs the raw baselines of :mod:`.orders_baseline`, and the
HTTP clients).
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from daemon import config as configmod
from daemon.app import Daemon
from daemon.bench.common import (
    BenchError,
    SimProcess,
    cpu_pressure,
    load_average,
    machine_facts,
    write_private,
)
from daemon.bench.orders_baseline import PRICE, QUANTITY, SYMBOL, ws_api_url
from daemon.bench.orders_load import LoadGeneratorProcess, serve_load_generator
from daemon.bench.orders_pg import PgTarget
from daemon.bench.orders_phases import entry_phase, http_phase, latency_phase
from daemon.bench.orders_profile import profile_phase
from daemon.bench.orders_report import render
from daemon.bench.orders_setup import (
    QUICK,
    TRANSPORTS,
    BenchOptions,
    RunningDaemon,
    daemon_config,
    sim_config,
)
from daemon.bench.pg import (
    PgServer,
    add_store_arguments,
    server_from_args,
    store_toml,
)
from daemon.bench.progress import PROGRESS
from daemon.bench.runner import run_measurement
from daemon.notify import Notifier

__all__ = ["add_arguments", "main", "measure", "measure_transports", "run"]

#: Default bound of stopping the daemon at the end.
STOP_TIMEOUT_S: Final = 60.0


# ------------------------------------------------------------------ the run


async def measure(
    options: BenchOptions,
    workdir: Path,
    transport: str = "rest",
    *,
    profile: bool = False,
    server: PgServer | None = None,
) -> dict[str, Any]:
    """Start the simulator, tradingd and the load generator under ``workdir``; run every phase.

    ``transport`` (one of :data:`~daemon.bench.orders_setup.TRANSPORTS`) is
    tradingd's ``order_transport`` and the baseline's; the report carries it
    as ``"transport"`` unless it is ``rest`` (the report as it always was).
    ``profile``: the profiled pass after the latency phase, reported as
    ``"profile"`` (:func:`~daemon.bench.orders_profile.profile_phase`).
    ``server``: tradingd's store on that PostgreSQL server, in a fresh schema
    (the caller drops it: :meth:`~daemon.bench.pg.PgServer.drop_all`), and the
    baseline's commits on the same server; the report then starts with
    ``"store": "postgres"`` and ``"dsn"`` (without a password).
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown order transport {transport!r}")
    started = time.perf_counter()
    machine = machine_facts()
    ws_api_client: dict[str, int] = {}  # tradingd's WebSocket API client (ws-api runs)
    tradingd_key = ("bench" + secrets.token_hex(12), secrets.token_hex(32))
    baseline_key = ("base" + secrets.token_hex(12), secrets.token_hex(32))
    secret_files = {
        "token": write_private(workdir / "admin-token", secrets.token_urlsafe(32)),
        "api_key": write_private(workdir / "api-key", tradingd_key[0]),
        "api_secret": write_private(workdir / "api-secret", tradingd_key[1]),
    }
    baseline_setup = {
        "credentials_file": str(
            write_private(
                workdir / "baseline-key.json",
                json.dumps({"api_key": baseline_key[0], "api_secret": baseline_key[1]}),
            )
        ),
        "db": str(workdir / "baseline.db"),
        "transport": transport,
    }
    store_section, store_text = "", "SQLite store"
    if server is not None:
        machine["postgresql"] = await trio.to_thread.run_sync(server.version)
        dsn = await trio.to_thread.run_sync(
            server.fresh_schema, "orders_" + transport.replace("-", "_")
        )
        password_file = None if server.password_file is None else str(server.password_file)
        store_section = "\n" + store_toml(dsn, server.password_file)
        store_text = f"PostgreSQL store (schema {server.schemas[-1]} on {server.public})"
        baseline_setup.update(PgTarget(dsn, password_file).to_command())
    sim = await SimProcess.start(workdir, sim_config(tradingd_key, baseline_key))
    try:
        baseline_setup["sim_url"] = sim.rest_url
        baseline_setup["ws_api_url"] = ws_api_url(sim.ws_url)
        config_path = workdir / "tradingd.toml"
        config_path.write_text(
            daemon_config(
                workdir,
                sim.rest_url,
                sim.ws_url,
                options,
                secret_files,
                transport=transport,
                store=store_section,
            ),
            encoding="utf-8",
        )
        config = configmod.load(config_path)
        problems = configmod.check_environment(config)
        if problems:
            raise BenchError("tradingd configuration: " + "; ".join(problems))
        daemon = Daemon(config, notifier=Notifier.from_environ({}), config_path=config_path)
        running = RunningDaemon(daemon, trio.Event(), [])

        async def run_daemon() -> None:
            try:
                running.exit_code.append(await daemon.run())
            finally:
                running.exited.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_daemon)
            try:
                await running.wait_ready()
                assert daemon.admin_address is not None
                host, port = daemon.admin_address
                loadgen = await LoadGeneratorProcess.start(
                    f"http://{host}:{port}", secret_files["token"], workdir
                )
                try:
                    latency = await latency_phase(
                        options, running, loadgen, baseline_setup, stages=profile
                    )
                    profiled = (
                        await profile_phase(
                            options, running, loadgen, latency, workdir / "tradingd-orders.pstats"
                        )
                        if profile
                        else None
                    )
                    PROGRESS.phase("durable intents/s, in process")
                    entry = await entry_phase(options, running, sim)
                    PROGRESS.phase("durable intents/s, POST /orders")
                    http = await http_phase(options, running, sim, loadgen)
                    PROGRESS.finish()
                    if transport == "ws-api":
                        sent = (
                            options.warmup
                            + options.latency_orders * (2 if profile else 1)
                            + entry["sent"]
                            + http["sent"]
                        )
                        ws_api_client = running.ws_api_client(sent)
                    loadgen_pid = loadgen.proc.pid
                finally:
                    await loadgen.aclose()
            finally:
                daemon.request_stop("bench finished")
                with trio.move_on_after(STOP_TIMEOUT_S) as scope:
                    await running.exited.wait()
                if scope.cancelled_caught:
                    nursery.cancel_scope.cancel()
        sim_pid = sim.proc.pid
    finally:
        await sim.aclose()
    ws_api = transport == "ws-api"
    link = (
        'venue link (orders over the WebSocket API: order_transport = "ws-api", one '
        "kept-up connection)"
        if ws_api
        else "venue link"
    )
    baseline = (
        "the baseline (a bare trio-websocket client, signed order.place frames on one "
        "kept-open WebSocket API connection) and every HTTP client (httpx2, keep-alive)"
        if ws_api
        else "the baseline and every HTTP client (httpx2, keep-alive)"
    )
    report: dict[str, Any] = {
        "machine": {
            **machine,
            "load_average_1m_after": load_average(),
            "cpu_pressure_avg10_after": cpu_pressure(),
        },
        "setup": {
            "simulator": f"`python -m daemon sim` subprocess (pid {sim_pid}), {SYMBOL} only, "
            "market paused, rate limits out of reach",
            "tradingd": "a real Daemon (daemon.app) in the bench process's Trio loop: admin API "
            f"on {host}:{port}, {store_text}, {link}, order pipeline "
            f"({options.accounts} account(s), dispatch sharded); logging at WARNING",
            "load_generator": f"`python -m daemon.bench.orders --load-generator` subprocess "
            f"(pid {loadgen_pid}): {baseline}",
            "in_process_submitters": f"{options.submitters} Trio tasks in the bench process "
            "calling OrdersService.submit",
            "sending": "the executor sends to the simulator while intents are accepted; "
            "orders.account_queue_capacity holds a whole burst, so entry is not throttled "
            "to the send rate",
            "orders": f"LIMIT BUY {QUANTITY} {SYMBOL} @ {PRICE} GTC (rests, never fills); "
            "risk limits off",
            "workdir": str(workdir),
        },
        "latency": latency,
        "entry_in_process": entry,
        "entry_http": http,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    if profiled is not None:
        report["profile"] = profiled
    if server is not None:
        report["setup"]["load_generator"] += (
            "; the baseline's two commits: single-row INSERTs on a plain psycopg connection "
            "to the same PostgreSQL server and schema, synchronous_commit on"
        )
        report = {"store": "postgres", "dsn": server.public, **report}
    if transport == "rest":
        return report
    return {"transport": transport, **report, "ws_api_client": ws_api_client}


async def measure_transports(
    options: BenchOptions,
    workdir: Path,
    transports: Sequence[str],
    profile: bool = False,
    server: PgServer | None = None,
) -> dict[str, Any]:
    """One :func:`measure` per transport, one after the other.

    A single transport is measured in ``workdir`` and its report returned as
    it is; several each get a subdirectory named after the transport, and the
    report is ``{"transports", "runs": {transport: report}, "bench_seconds"}``.
    """
    if len(transports) == 1:
        return await measure(options, workdir, transports[0], profile=profile, server=server)
    started = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    for transport in transports:
        subdir = workdir / transport
        subdir.mkdir(mode=0o700)
        runs[transport] = await measure(options, subdir, transport, profile=profile, server=server)
    store = {} if server is None else {"store": "postgres", "dsn": server.public}
    return {
        **store,
        "transports": list(transports),
        "runs": runs,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }


# ------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every ``tradingd bench orders`` option to ``parser``."""
    parser.description = (__doc__ or "").split("\n\n")[0]
    defaults = BenchOptions()
    add = parser.add_argument
    add(
        "--latency-orders",
        type=int,
        default=None,
        metavar="N",
        help=f"sequential orders measured, baseline and tradingd each ({defaults.latency_orders})",
    )
    add(
        "--warmup",
        type=int,
        default=None,
        metavar="N",
        help=f"unmeasured first orders of each ({defaults.warmup})",
    )
    add(
        "--block",
        type=int,
        default=None,
        metavar="N",
        help=f"orders per alternating block ({defaults.block})",
    )
    add(
        "--entry-orders",
        type=int,
        default=None,
        metavar="N",
        help=f"orders of the in-process throughput phase ({defaults.entry_orders})",
    )
    add(
        "--http-orders",
        type=int,
        default=None,
        metavar="N",
        help=f"orders of the POST /orders throughput phase ({defaults.http_orders})",
    )
    add(
        "--submitters",
        type=int,
        default=defaults.submitters,
        metavar="N",
        help=f"in-process submitter tasks ({defaults.submitters})",
    )
    add(
        "--clients",
        type=int,
        default=defaults.clients,
        metavar="N",
        help=f"concurrent HTTP clients ({defaults.clients})",
    )
    add(
        "--accounts",
        type=int,
        default=defaults.accounts,
        metavar="N",
        help="accounts the throughput orders are spread over; one account's orders are sent "
        f"one at a time ({defaults.accounts})",
    )
    add(
        "--dir",
        metavar="PATH",
        help="where the temporary state directory goes (the disk the fsyncs hit)",
    )
    add(
        "--transport",
        choices=(*TRANSPORTS, "both"),
        default="rest",
        help="how tradingd sends orders, and the baseline with it: rest, ws-api (the "
        "WebSocket API) or both, one run each, reported side by side (rest)",
    )
    add(
        "--quick",
        action="store_true",
        help=f"smaller counts where none is given: {QUICK.latency_orders} latency orders "
        f"(after {QUICK.warmup}), {QUICK.entry_orders} in-process, {QUICK.http_orders} "
        "through POST /orders",
    )
    add(
        "--profile",
        action="store_true",
        help="after the latency phase, as many orders again under cProfile: tradingd's CPU "
        "per order by stage, beside the baseline's (the report's 'profile')",
    )
    add(
        "--keep",
        action="store_true",
        help="keep the state directory (logs, databases, the --profile pstats) and the "
        "PostgreSQL schemas afterwards",
    )
    add("--json", action="store_true", help="print the report as JSON instead of a table")
    add(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="level of tradingd's log, written to the state directory (warning)",
    )
    add_store_arguments(parser)
    # The load generator process (started by the bench itself).
    add("--load-generator", metavar="ADMIN_URL", help=argparse.SUPPRESS)
    add("--token-file", metavar="PATH", help=argparse.SUPPRESS)


def _options(args: argparse.Namespace) -> BenchOptions:
    base = QUICK if args.quick else BenchOptions()

    def count(name: str) -> int:
        value = getattr(args, name)
        return int(getattr(base, name) if value is None else value)

    return BenchOptions(
        latency_orders=count("latency_orders"),
        warmup=count("warmup"),
        block=count("block"),
        entry_orders=count("entry_orders"),
        http_orders=count("http_orders"),
        submitters=args.submitters,
        clients=args.clients,
        accounts=args.accounts,
    )


def _load_generator_main(args: argparse.Namespace) -> int:
    if not args.token_file:
        print("--load-generator needs --token-file", file=sys.stderr)
        return 2
    token = Path(args.token_file).read_text(encoding="utf-8").strip()
    trio.run(serve_load_generator, args.load_generator, token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tradingd bench orders`` with ``argv`` (the options after ``orders``)."""
    parser = argparse.ArgumentParser(prog="tradingd bench orders")
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the bench with parsed options (``tradingd bench orders`` calls this)."""
    if args.load_generator:
        return _load_generator_main(args)
    try:
        options = _options(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        server = server_from_args(args)
    except BenchError as exc:
        print(f"tradingd bench orders: {exc}", file=sys.stderr)
        return 1
    transports = TRANSPORTS if args.transport == "both" else (args.transport,)
    code, report = run_measurement(
        "orders",
        lambda workdir: measure_transports(options, workdir, transports, args.profile, server),
        directory=args.dir,
        keep=args.keep,
        log_name="tradingd.log",
        log_level=getattr(logging, args.log_level.upper()),
        server=server,
    )
    if report is None:
        return code
    if not args.keep:
        for one in report["runs"].values() if "runs" in report else (report,):
            one["setup"]["workdir"] += " (removed)"
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
