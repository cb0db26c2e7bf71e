"""``tradingd db backup PATH`` and ``tradingd db info``: the store's database, operated.

* ``db backup PATH`` asks the running daemon (control socket) for an online
  backup of its SQLite store into the new file ``PATH`` (made absolute here),
  then follows it: a progress bar on a terminal (stderr), nothing when piped,
  and the result — size, time, ``integrity_check`` of the copy. Exit 0 when
  the copy is verified, 1 when the daemon refused or the check failed, 3 when
  the daemon is not reachable. The copy is the daemon's
  (:mod:`daemon.store.backup`): a consistent snapshot taken while it keeps
  running, in a file only its user can read.
* ``db info`` reads the store file (the configuration's ``[store] path``, or
  ``--db``) on a read-only connection, safe while the daemon runs: schema
  version, sizes of the file and its WAL, rows per table, trades per venue and
  symbol with their oldest and newest times, intents by state. ``--json``
  prints the document.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from daemon import config as configmod
from daemon import control
from daemon.cli.common import (
    DEFAULT_CONFIG,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNREACHABLE,
)
from daemon.cli.run import print_problems
from daemon.errors import ConfigError, ControlError, StoreError
from daemon.store.backup import store_info

__all__ = ["add_backup_arguments", "add_info_arguments", "cmd_db_tools"]

#: How often the progress of a backup is asked for.
POLL_S: Final = 0.2
#: The progress bar's width in characters.
BAR: Final = 30


def add_backup_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``tradingd db backup``."""
    p.add_argument("path", help="the new backup file (never overwritten)")
    p.add_argument(
        "--timeout-s",
        type=float,
        default=3600.0,
        dest="wait_s",
        help="give up following the backup after this long (default 3600)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--socket", help="control socket path (overrides the config's)")
    p.add_argument("--timeout", type=float, default=control.CLIENT_TIMEOUT_S, help="seconds")


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``tradingd db info``."""
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--db", help="the database file (overrides the config's store path)")
    p.add_argument("--json", action="store_true", help="print the document as JSON")


def cmd_db_tools(args: argparse.Namespace) -> int:
    """``tradingd db backup`` or ``tradingd db info``."""
    if args.db_action == "backup":
        return _backup(args)
    return _info(args)


def _socket(args: argparse.Namespace) -> Path:
    from daemon.cli.client import _socket_of  # noqa: PLC0415 - the clients' own resolution

    return _socket_of(args)


def _backup(args: argparse.Namespace) -> int:
    target = str(Path(args.path).expanduser().absolute())
    sock = _socket(args)
    try:
        answer = control.request(
            sock, {"cmd": "db", "action": "backup", "path": target}, timeout_s=args.timeout
        )
    except ControlError as exc:
        print(f"tradingd: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else "unexpected answer"
        print(f"tradingd: backup refused: {error}", file=sys.stderr)
        return EXIT_FAILURE
    bar = sys.stderr.isatty()
    deadline = time.monotonic() + args.wait_s
    status: dict[str, Any] = answer
    try:
        while status.get("running"):
            if bar:
                _progress(status)
            if time.monotonic() > deadline:
                print(
                    f"tradingd: still running after {args.wait_s:g}s; the daemon goes on with "
                    "it (its result shows in the daemon's log)",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            time.sleep(POLL_S)
            polled = control.request(
                sock, {"cmd": "db", "action": "backup-status"}, timeout_s=args.timeout
            )
            status = polled if isinstance(polled, dict) else {}
    except ControlError as exc:
        print(f"\ntradingd: lost the daemon while following the backup: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if bar:
        print(file=sys.stderr)
    result = status.get("result") or {}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif result.get("ok"):
        seconds = result.get("seconds") or 0.0
        print(
            f"{result.get('path')}: {result.get('bytes')} bytes in {seconds:.2f}s; "
            "integrity_check ok"
        )
    if not result.get("ok"):
        problems = result.get("problems") or [result.get("error", "the backup failed")]
        print(f"tradingd: backup {result.get('path', target)} not verified:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _progress(status: dict[str, Any]) -> None:
    total = status.get("bytes_total") or 0
    done = min(status.get("bytes_done") or 0, total) if total else 0
    share = done / total if total else 0.0
    filled = int(share * BAR)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (BAR - filled)}] {share:5.1%} {done}/{total} bytes")
    sys.stderr.flush()


def _info(args: argparse.Namespace) -> int:
    if args.db:
        path = Path(args.db)
    else:
        try:
            config = configmod.load(args.config)
        except ConfigError as exc:
            print_problems(exc.problems)
            return EXIT_CONFIG
        if config.store.backend != "sqlite":
            print(
                "tradingd: db info reads a SQLite store; this configuration's store is "
                "PostgreSQL (use psql: \\dt+ and pg_stat_user_tables)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        path = config.store_path()
    try:
        info = store_info(path)
    except StoreError as exc:
        print(f"tradingd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else render_info(info))
    return EXIT_OK


def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def render_info(info: dict[str, Any]) -> str:
    """The store's info document for a terminal."""
    lines = [
        f"{info.get('path')}: schema version {info.get('schema_version')}, "
        f"page size {info.get('page_size')}",
        f"  file {info.get('file_bytes')} bytes, WAL {info.get('wal_bytes')} bytes",
        "  rows:",
    ]
    rows = info.get("rows") or {}
    width = max((len(str(t)) for t in rows), default=0)
    lines += [f"    {str(t).ljust(width)}  {n}" for t, n in rows.items()]
    trades = info.get("trades") or []
    if trades:
        lines.append("  trades:")
        lines += [
            f"    {t.get('venue')}/{t.get('symbol')}: {t.get('trades')} "
            f"(ids {t.get('first_trade_id')}..{t.get('last_trade_id')}), "
            f"{_when(t.get('oldest_ms'))} .. {_when(t.get('newest_ms'))}"
            for t in trades
        ]
    states = info.get("orders_by_state") or {}
    if states:
        lines.append("  order intents: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    return "\n".join(lines)
