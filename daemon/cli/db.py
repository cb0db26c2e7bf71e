"""``tradingd db``: commands on the store's database itself (``migrate-to-postgres``).

``tradingd db migrate-to-postgres --config PATH [--dsn DSN] [--password-file F]
[--db FILE] [--batch N] [--dry-run]`` copies the SQLite store of a
configuration (its ``[store] path``, or ``--db``) into PostgreSQL and
verifies the copy (:mod:`daemon.store.migrate_pg`). The target is ``--dsn``,
or else the configuration's own ``[store] dsn`` with its ``password`` secret
reference (so a configuration already switched to ``backend = "postgres"``
migrates its old file with no other argument). ``--password-file`` (or
libpq's ``PGPASSWORD``/``.pgpass``) gives a password for ``--dsn``; a DSN
that spells one is refused, as the configuration refuses it.

The daemon must be stopped: the command refuses to run while the
configuration's control socket answers. Exit status: 0 every table verified
(equal row counts and checksums); 1 not verified (the tables are named) or
the target failed mid-way (run it again: the copy resumes); 2 a usage or
configuration error, or a refusal before anything was written. The per-table
table goes to stdout; progress goes to stderr only when it is a terminal.
The password is never printed: the target is shown without it.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from daemon import config as configmod
from daemon.cli.common import DEFAULT_CONFIG, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from daemon.errors import ConfigError, SecretError, StoreError
from daemon.secrets import resolve

if TYPE_CHECKING:
    from daemon.store.migrate_pg import TableReport

#: Largest ``--batch``.
MAX_BATCH_ROWS = 1_000_000


def add_migrate_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``tradingd db migrate-to-postgres``."""
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument(
        "--dsn",
        help="target PostgreSQL DSN, without a password (default: the config's [store] dsn)",
    )
    p.add_argument(
        "--password-file",
        help="a file holding the target's password (default: the config's [store] password "
        "when the DSN is the config's; else libpq's PGPASSWORD/.pgpass)",
    )
    p.add_argument("--db", help="the SQLite file to copy (default: the config's [store] path)")
    p.add_argument(
        "--batch", type=_batch_arg, default=None, help="rows per copy transaction (default 5000)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read and count only: check both sides, write nothing",
    )


def _batch_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_BATCH_ROWS:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_BATCH_ROWS}")
    return value


def cmd_db(args: argparse.Namespace) -> int:
    """``tradingd db ACTION``."""
    if args.db_action == "migrate-to-postgres":
        return cmd_migrate_to_postgres(args)
    from daemon.cli.dbtools import cmd_db_tools  # noqa: PLC0415 - backup, info

    return cmd_db_tools(args)


def _usage(message: str) -> int:
    print(f"tradingd db migrate-to-postgres: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _daemon_running(path: Path) -> bool:
    """Whether something listens on the control socket (a running daemon)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(os.fspath(path))
        except OSError:
            return False
    return True


def cmd_migrate_to_postgres(args: argparse.Namespace) -> int:
    """Copy the configuration's SQLite store into PostgreSQL and verify it."""
    # psycopg and the migration engine are imported here only, not by `tradingd run`.
    from daemon.store.migrate_pg import (  # noqa: PLC0415
        DEFAULT_BATCH_ROWS,
        MigrationRefused,
        migrate_to_postgres,
    )
    from daemon.store.pg_errors import public_dsn  # noqa: PLC0415

    try:
        config = configmod.load(args.config)
    except ConfigError as exc:
        print(f"invalid configuration ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    source = Path(args.db) if args.db else config.store_path()
    dsn = args.dsn if args.dsn is not None else config.store.dsn
    if not dsn.strip():
        return _usage('no target: give --dsn, or set [store] dsn (backend = "postgres")')
    if configmod.StoreConfig(backend="postgres", dsn=dsn).problems():
        return _usage(
            "the DSN must not contain a password: use --password-file "
            "(or the config's [store] password)"
        )
    try:
        password = _password(args, config)
    except (OSError, SecretError) as exc:
        return _usage(f"password: {exc}")
    if _daemon_running(config.control_socket_path()):
        return _usage(
            f"a daemon is running on this configuration ({config.control_socket_path()} "
            "answers): stop it first (systemctl stop tradingd); the SQLite file must not change "
            "while it is copied"
        )
    out = sys.stdout
    print(f"source: {source} (SQLite, read-only)", file=out)
    print(f"target: {public_dsn(dsn)} (PostgreSQL)", file=out)
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        reports = migrate_to_postgres(
            source,
            dsn,
            password=password,
            batch_rows=args.batch or DEFAULT_BATCH_ROWS,
            dry_run=args.dry_run,
            progress=progress,
        )
    except MigrationRefused as exc:
        return _usage(f"refused, nothing written: {exc}")
    except StoreError as exc:
        if progress is not None:
            progress.clear()
        print(
            f"tradingd db migrate-to-postgres: {exc}\n"
            "not verified; what was committed stays: run the command again to complete the copy",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        if progress is not None:
            progress.clear()
    _print_table(reports, out, dry_run=args.dry_run)
    if args.dry_run:
        print("dry run: nothing was written", file=out)
        return EXIT_OK
    failed = [r for r in reports if not r.verified]
    if failed:
        names = ", ".join(f"{r.name} ({r.problem()})" for r in failed)
        print(f"tradingd db migrate-to-postgres: NOT verified: {names}", file=sys.stderr)
        return EXIT_FAILURE
    total = sum(r.source_rows for r in reports)
    print(f"verified: {len(reports)} tables, {total} rows, counts and checksums equal", file=out)
    return EXIT_OK


def _password(args: argparse.Namespace, config: configmod.Config) -> str | None:
    """``--password-file``; else the config's secret reference when its DSN is used."""
    if args.password_file:
        text = Path(args.password_file).read_text(encoding="utf-8")
        return text.rstrip("\r\n")
    if args.dsn is None and config.store.password is not None:
        return resolve(config.store.password).reveal()
    return None


class _Progress:
    """One self-overwriting line on a terminal: the table and its rows done."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False

    def __call__(self, table: str, done: int, total: int) -> None:
        self.stream.write(f"\r\x1b[K{table}: {done}/{total} rows")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _print_table(reports: Sequence[TableReport], out: TextIO, *, dry_run: bool) -> None:
    header = ("table", "source rows", "target rows", "copied", "skipped", "checksum")
    lines = [header]
    for r in reports:
        target = "-" if r.target_rows is None else str(r.target_rows)
        if dry_run:
            check = "-"
        else:
            check = "ok" if r.verified else ("MISMATCH" if r.target_rows is not None else "-")
        copied = "-" if dry_run else str(r.copied)
        skipped = "-" if dry_run else str(r.skipped)
        lines.append((r.name, str(r.source_rows), target, copied, skipped, check))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(widths[i]) for i, cell in enumerate(line[1:-1], start=1)]
        cells.append(line[-1])
        print("  ".join(cells), file=out)
