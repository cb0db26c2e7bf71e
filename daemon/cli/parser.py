"""The ``tradingd`` argument parser: every subcommand and its options.

:func:`build_parser` declares them all. The ``sim``, ``bench`` and
``check-venue`` subcommands take their options from their own module
(:class:`_LazyParser`), which is imported only when that subcommand's
arguments are parsed, so building the parser (and ``tradingd run``) imports
no simulator and no benchmark.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from daemon import __version__, control
from daemon.cli.common import DEFAULT_CONFIG
from daemon.faults import FAULT_KINDS
from daemon.orders.ids import validate_client_order_id

DEMO_ADMIN_PORT = 8787


class _LazyParser(argparse.ArgumentParser):
    """A subcommand's parser whose options a tool module declares, imported on first use.

    ``arguments="package.module:function"`` names the function that adds the
    options (``function(parser)``); the module is imported only when this
    subcommand's arguments are parsed (its ``--help`` included), so that
    ``tradingd run`` never imports the simulator or a benchmark.
    """

    def __init__(self, *args: Any, arguments: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arguments = arguments

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        if self._arguments is not None:
            module, _, function = self._arguments.partition(":")
            self._arguments = None
            getattr(importlib.import_module(module), function)(self)
        return super().parse_known_args(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradingd",
        description="A Trio trading daemon: supervised market data and exactly-once orders.",
    )
    parser.add_argument("--version", action="version", version=f"tradingd {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_LazyParser
    )

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("path")

    sub.add_parser(
        "check-venue",
        help="check each configured venue: connectivity, clock, symbols, key, rate limits",
        description="Check each [venues.NAME] of a configuration (or the one --venue names) "
        "against the real venue: REST, market stream and WebSocket API connectivity, clock "
        "offset against recvWindow, exchangeInfo of the configured symbols, the API key's "
        "permissions and rate-limit headroom. One PASS/FAIL/SKIP line per check; exit 0 when "
        "none failed, 1 when one did, 2 for a configuration that cannot be loaded.",
        arguments="daemon.cli.checkvenue:add_arguments",
    )

    p = sub.add_parser("demo", help="run on an embedded configuration until Ctrl-C")
    p.add_argument("--state-dir", default="./var", help="default ./var")
    p.add_argument(
        "--admin-port",
        type=int,
        default=DEMO_ADMIN_PORT,
        help=f"admin API port on 127.0.0.1 (default {DEMO_ADMIN_PORT}; 0 picks a free one)",
    )

    for name, text in (
        ("status", "show a running daemon's status"),
        ("reload", "reload a running daemon's configuration and wait for the result"),
    ):
        p = sub.add_parser(name, help=text)
        _add_target(p)
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the raw JSON")
            p.add_argument(
                "--watch",
                nargs="?",
                const=1.0,
                type=_positive_seconds,
                metavar="SECONDS",
                help="refresh every SECONDS (1 when not given) until Ctrl-C; a daemon that is "
                "not reachable is said so and asked again",
            )
            p.add_argument(
                "--count", type=int, metavar="N", help="with --watch: stop after N refreshes"
            )

    sub.add_parser(
        "top",
        help="a live, full-screen view of a running daemon (q quits, h halts/resumes, / filters)",
        description="Health, supervision tree, loop lag with a one-minute sparkline, slowest task "
        "steps, queues, venues, orders, positions and dead letters of a running daemon, refreshed "
        "every --interval seconds. Keys: q quit, h halt or resume an account (asks to confirm), "
        "/ filter rows. Not on a terminal (or --plain): one plain-text rendering per refresh. A "
        "daemon that stops or restarts is shown as not reachable and asked again.",
        arguments="daemon.cli.top:add_top_arguments",
    )

    p = sub.add_parser(
        "dead-letters",
        help="list, show or purge a running daemon's dead letters",
        description="Dead letters are messages that could not be processed (malformed "
        "frames, rows the store refused), kept durably with the error and raw payload.",
    )
    dl = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = dl.add_parser("list", help="list dead letters (oldest first)")
    q.add_argument("--source", help="only this source, e.g. marketdata.sim.stream")
    q.add_argument("--after", type=int, dest="after_id", help="page: ids after this one")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(q)
    q = dl.add_parser("show", help="one dead letter, with its payload")
    q.add_argument("id", type=int)
    _add_target(q)
    q = dl.add_parser("purge", help="delete dead letters (all given filters must match)")
    q.add_argument("--id", type=int, action="append", dest="ids", help="repeatable")
    q.add_argument("--source")
    q.add_argument("--older-than-days", type=float, help="last failure older than this")
    q.add_argument("--all", action="store_true", help="required to purge without a filter")
    _add_target(q)
    q = dl.add_parser(
        "replay",
        help="send dead letters back through their normal path (safe: idempotency keys)",
        description="An order intent is submitted again under its message_id (a duplicate of "
        "a stored intent sends nothing); a malformed frame is decoded again and a trade stored "
        "on its trade id. Replayed letters are removed; the others stay, their outcome said.",
    )
    q.add_argument("ids", type=int, nargs="*", metavar="ID", help="letters to replay")
    q.add_argument("--source", help="every letter of this source (at most 1000)")
    q.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    q.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(q)

    _add_order_commands(sub)

    p = sub.add_parser(
        "integrity-check",
        help="check the store's database file (SQLite integrity_check); safe while running",
    )
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--db", help="the database file (overrides the config's store path)")

    p = sub.add_parser("db", help="the store's database: backup, info, migrate-to-postgres")
    dbs = p.add_subparsers(dest="db_action", required=True, metavar="ACTION")
    dbs.add_parser(
        "backup",
        help="an online, verified copy of a running daemon's SQLite store",
        description="The running daemon copies its SQLite store into the new file PATH (a "
        "consistent snapshot while it keeps running; 0600; never overwrites) and checks the "
        "copy with integrity_check. Progress on a terminal. Exit 0 verified, 1 refused or not "
        "verified, 3 daemon not reachable.",
        arguments="daemon.cli.dbtools:add_backup_arguments",
    )
    dbs.add_parser(
        "info",
        help="schema version, sizes, rows per table, trades' time range, intents by state",
        description="Read the store file on a read-only connection (safe while the daemon runs).",
        arguments="daemon.cli.dbtools:add_info_arguments",
    )
    dbs.add_parser(
        "migrate-to-postgres",
        help="copy the SQLite store into PostgreSQL (resumable) and verify it",
        description="Copy the configuration's SQLite store ([store] path, read-only; stop the "
        "daemon first) into PostgreSQL (--dsn, or the config's [store] dsn): create or migrate "
        "the schema, copy every table in batches (ON CONFLICT DO NOTHING: a rerun completes an "
        "interrupted copy), then verify per-table row counts and checksums. Exit 0 when "
        "verified, 1 when not (the tables are named), 2 for a usage or configuration error.",
        arguments="daemon.cli.db:add_migrate_arguments",
    )

    p = sub.add_parser(
        "sim",
        help="run the Binance-protocol exchange simulator",
        description="Serve the Binance Spot REST and WebSocket API subset tradingd uses, "
        "with a seeded market, matching, rate limits and fault injection.",
        arguments="daemon.venues.sim.cli:add_arguments",
    )

    p = sub.add_parser("bench", help="benchmarks (not tests): ratios against a raw baseline")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    benches.add_parser(
        "orders",
        help="order pipeline: latency vs a raw baseline, durable intents/s",
        arguments="daemon.bench.orders:add_arguments",
    )
    benches.add_parser(
        "ingest",
        help="market-data capture: trades committed/s vs a raw WebSocket client, lag, overload",
        arguments="daemon.bench.ingest:add_arguments",
    )

    sub.add_parser(
        "torture",
        help="torture run: real processes, random faults, invariants checked after each",
        description="Start the simulator and tradingd as processes, drive market data and "
        "orders, apply a seeded schedule of faults (kills, freezes, venue outages, 5xx, "
        "rate limits, stream faults, clock skew, a full disk), then check exactly-once, "
        "no loss, fills, positions and captured trades against the venue's own record. "
        "Exit 0 when every invariant held and the negative control saw its duplicate.",
        arguments="daemon.torture.cli:add_arguments",
    )

    p = sub.add_parser(
        "debug-fault",
        help="inject a fault into a running daemon (test configurations only)",
    )
    p.add_argument("kind", choices=FAULT_KINDS)
    p.add_argument("--seconds", type=float, default=30.0, help="block-loop duration")
    _add_target(p)
    return parser


def _add_order_commands(sub: argparse._SubParsersAction[_LazyParser]) -> None:
    """``halt``/``reduce-only``/``resume``, ``trading``, ``positions``, ``orders`` (control)."""
    for name, text in (
        ("halt", "refuse new orders, of one account or all (accepted orders still proceed)"),
        ("reduce-only", "accept only orders that reduce a position, of one account or all"),
        ("resume", "accept new orders again (a global resume keeps per-account halts)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--account", help="one account (default: the switch over all accounts)")
        p.add_argument("--reason", help="why; kept with the switch, logged and persisted")
        p.add_argument("--json", action="store_true", help="print the raw JSON")
        _add_target(p)
    p = sub.add_parser("trading", help="show the trading switches and each account's state")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(p)
    p = sub.add_parser(
        "positions", help="signed positions per account and symbol, from the stored fills"
    )
    p.add_argument("--account", help="only this account")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(p)
    p = sub.add_parser(
        "reconcile",
        help="run a reconciliation pass now; print what it found and changed",
        description="Every live order is queried at its venue (UNKNOWN ones resolved, fills "
        "fetched, ends learnt) and each venue's open orders are listed; the orders the pass "
        "changed and the venue orders the store does not know are printed. Exit 0 when the "
        "pass completed, 1 when it failed (a venue down: the reason is printed).",
    )
    p.add_argument("--account", help="report only this account's orders")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(p)

    p = sub.add_parser("orders", help="list, show or cancel a running daemon's orders")
    od = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = od.add_parser("list", help="orders, newest first")
    q.add_argument("--account", help="only this account")
    q.add_argument(
        "--state",
        action="append",
        dest="states",
        help="a state (FILLED, ...) or 'open' for every unfinished one; repeatable or a,b",
    )
    q.add_argument("--limit", type=int, default=50, help="default 50")
    q.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(q)
    for action, text in (
        ("show", "one order with its state history and fills"),
        ("cancel", "request the cancel of an open order (idempotent)"),
    ):
        q = od.add_parser(action, help=text)
        q.add_argument("client_order_id", type=_client_order_id_arg)
        q.add_argument("--json", action="store_true", help="print the raw JSON")
        _add_target(q)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be in 0.1..3600 seconds, got {text}")
    return value


def _client_order_id_arg(text: str) -> str:
    """Check the id's format before asking the daemon (a typo is a usage error: exit 2)."""
    try:
        return validate_client_order_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--socket", help="control socket path (overrides the config's)")
    p.add_argument("--timeout", type=float, default=control.CLIENT_TIMEOUT_S, help="seconds")
