"""Copy a SQLite store into PostgreSQL, resumably, and prove the copy equal.

The engine of ``tradingd db migrate-to-postgres`` (:mod:`daemon.cli.db` is
its command line). A user moving up from the embedded store must not lose a
row of history, and must be able to tell that nothing was lost, so:

* the **source** is opened read-only (``mode=ro``, never migrated, never
  written) and read in **one snapshot** (one read transaction for the whole
  run): what is copied and what is checksummed are the same rows. The daemon
  should be stopped (the command refuses to run while the configuration's
  control socket answers); a file a killed daemon left with its WAL is read
  as it is, WAL included;
* the **target** schema is created or brought up to date by the PostgreSQL
  migrations (:func:`daemon.store.pg_migrations.migrate`: one transaction under
  the advisory lock; a newer or foreign schema is refused before anything is
  written);
* every table is copied **in batches**, one transaction each: binary-safe
  ``COPY`` into a session temp table, then ``INSERT … SELECT … ON CONFLICT DO
  NOTHING`` (every unique key of the schema is a natural key, so a row
  already there is skipped, never duplicated). Ids are **preserved**
  (``OVERRIDING SYSTEM VALUE``: snapshot ids that levels point to, gap and
  dead-letter ids an operator may have written down, order-intent ``seq``),
  and the identity sequences are moved past them afterwards (the dead
  letters' past SQLite's ``AUTOINCREMENT`` high mark, so a purged id is
  never handed out again). Foreign keys are respected by the table order;
* a run that stops half-way (Ctrl-C, a lost connection) leaves whole batches
  behind; running the command again copies what is missing — it reads every
  row again and inserts only the absent ones — and ends verified;
* **verification**: per table, the row counts of both sides and a SHA-256 of
  every row's canonical text in key order (:func:`canonical_row`, the same
  function on both sides: integers and text as written, flags as 0/1, floats
  exactly, payloads as hex). Equal counts and equal digests for every table
  is the only success. The target side is read in one ``REPEATABLE READ``
  snapshot after the copy.

Text keys are ordered bytewise on both sides (SQLite's ``BINARY``,
PostgreSQL's ``COLLATE "C"``), so both digests see the same row order. Nothing
here logs or prints the DSN's password: errors name the target by
:func:`~daemon.store.pg_errors.public_dsn`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import psycopg

from daemon.store.errors import StoreError, StoreOpenError, StoreVersionError
from daemon.store.migrations import check_file
from daemon.store.pg_errors import public_dsn, translate_pg_error
from daemon.store.pg_migrations import check_schema
from daemon.store.pg_migrations import migrate as pg_migrate

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "NOT_COPIED",
    "TABLES",
    "MigrationRefused",
    "TableReport",
    "TableSpec",
    "canonical_row",
    "migrate_to_postgres",
]

#: Rows per copy transaction (``--batch``).
DEFAULT_BATCH_ROWS: Final = 5000
#: Rows fetched at once while checksumming the target.
_FETCH_ROWS: Final = 5000
#: How long connecting to the target may take.
_CONNECT_TIMEOUT_S: Final = 10

#: How a column's values are written in a row's canonical text.
Kind = Literal["int", "text", "bool", "real", "bytes"]


class MigrationRefused(Exception):
    """The inputs are wrong and nothing was written (the command's exit status 2).

    A missing or foreign source file, a source or target schema newer than
    this tradingd, a target schema of another program.
    """


@attrs.frozen
class TableSpec:
    """One table as the migration copies and checksums it (its columns in schema order)."""

    name: str
    columns: tuple[tuple[str, Kind], ...]
    #: The primary key: the order of the copy and of both checksums.
    key: tuple[str, ...]
    #: The ``GENERATED ALWAYS AS IDENTITY`` column on PostgreSQL, if any.
    identity: str | None = None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def order_by(self, *, postgres: bool) -> str:
        """The key as an ``ORDER BY`` list; text columns bytewise on PostgreSQL."""
        kinds = dict(self.columns)
        return ", ".join(
            f'{col} COLLATE "C"' if postgres and kinds[col] == "text" else col for col in self.key
        )


def _cols(spec: str) -> tuple[tuple[str, Kind], ...]:
    """``"name:kind name:kind …"`` (kind defaults to ``text``) as column pairs."""
    out: list[tuple[str, Kind]] = []
    for item in spec.split():
        name, _, kind = item.partition(":")
        out.append((name, kind or "text"))  # type: ignore[arg-type]
    return tuple(out)


#: Every table of the schema (version 3), parents before children. A table or
#: column a later migration adds must be added here: the copy refuses a source
#: whose tables it does not know (:func:`_check_source_shape`).
TABLES: Final[tuple[TableSpec, ...]] = (
    TableSpec(
        "trades",
        _cols(
            "venue symbol trade_id:int price quantity quote_quantity buyer_is_maker:bool "
            "trade_time_ms:int event_time_ms:int ingested_at_ms:int"
        ),
        ("venue", "symbol", "trade_id"),
    ),
    TableSpec(
        "ingest_checkpoints",
        _cols("venue symbol stream last_trade_id:int updated_at_ms:int"),
        ("venue", "symbol", "stream"),
    ),
    TableSpec(
        "gaps",
        _cols(
            "gap_id:int venue symbol stream from_id:int to_id:int detected_at_ms:int state "
            "reason resolution resolved_at_ms:int"
        ),
        ("gap_id",),
        identity="gap_id",
    ),
    TableSpec(
        "book_snapshots",
        _cols(
            "snapshot_id:int venue symbol server_time_ms:int sequence_id:int bid_levels:int "
            "ask_levels:int ingested_at_ms:int"
        ),
        ("snapshot_id",),
        identity="snapshot_id",
    ),
    TableSpec(
        "book_levels",
        _cols("snapshot_id:int side level_index:int price quantity"),
        ("snapshot_id", "side", "level_index"),
    ),
    TableSpec(
        "dead_letters",
        _cols(
            "letter_id:int source key payload_kind payload:bytes error_type error_message "
            "attempts:int first_failed_at:real last_failed_at:real"
        ),
        ("letter_id",),
        identity="letter_id",
    ),
    TableSpec(
        "order_intents",
        _cols(
            "client_order_id seq:int message_id account venue symbol side type quantity price "
            "time_in_force state created_at_ms:int updated_at_ms:int sent_at_ms:int "
            "send_attempts:int venue_order_id:int executed_qty cum_quote_qty reject_code:int "
            "reject_reason cancel_requested_at_ms:int"
        ),
        ("client_order_id",),
    ),
    TableSpec(
        "order_history",
        _cols("client_order_id seq:int from_state to_state reason at_ms:int"),
        ("client_order_id", "seq"),
    ),
    TableSpec(
        "order_fills",
        _cols(
            "venue symbol trade_id:int client_order_id account venue_order_id:int side price "
            "quantity quote_quantity commission commission_asset time_ms:int is_maker:bool"
        ),
        ("venue", "symbol", "trade_id", "side"),
    ),
    TableSpec(
        "positions",
        _cols("account symbol quantity updated_at_ms:int"),
        ("account", "symbol"),
    ),
    TableSpec(
        "trading_states",
        _cols("scope state reason changed_at_ms:int"),
        ("scope",),
    ),
)

#: Tables of the schema that are not copied: the target has its own migrations log.
#: Account leases are runtime state: the daemons on the target take their accounts
#: anew (a fencing token restarts there; no daemon of the SQLite store writes to it).
NOT_COPIED: Final = frozenset({"schema_migrations", "account_leases"})


@attrs.define
class TableReport:
    """What one table's copy and verification found."""

    name: str
    source_rows: int = 0
    #: Rows this run inserted, and rows it found already there (ON CONFLICT).
    copied: int = 0
    skipped: int = 0
    source_digest: str = ""
    #: ``None`` until verified (and in a dry run).
    target_rows: int | None = None
    target_digest: str | None = None

    @property
    def verified(self) -> bool:
        return self.target_rows == self.source_rows and self.target_digest == self.source_digest

    def problem(self) -> str | None:
        """Why the table is not verified (``None``: it is)."""
        if self.target_rows is None:
            return "not verified"
        if self.target_rows != self.source_rows:
            return f"{self.source_rows} rows in SQLite, {self.target_rows} in PostgreSQL"
        if self.target_digest != self.source_digest:
            return "same row count, different rows (checksum)"
        return None


# --------------------------------------------------------------------------- values


def _canonical(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "bool":
        return 1 if value else 0
    if kind == "real":
        return float(value).hex()
    if kind == "bytes":
        return (value.encode("utf-8") if isinstance(value, str) else bytes(value)).hex()
    return str(value)


def canonical_row(spec: TableSpec, row: Sequence[Any]) -> bytes:
    """One row as the checksums see it: the same bytes for the same row on either backend."""
    values = [_canonical(kind, v) for (_, kind), v in zip(spec.columns, row, strict=True)]
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _to_pg(spec: TableSpec, row: Sequence[Any]) -> tuple[Any, ...]:
    """A SQLite row in PostgreSQL's types (flags as booleans, payloads as bytes)."""
    out: list[Any] = []
    for (_, kind), value in zip(spec.columns, row, strict=True):
        if value is not None and kind == "bool":
            out.append(bool(value))
        elif isinstance(value, str) and kind == "bytes":
            out.append(value.encode("utf-8"))
        else:
            out.append(value)
    return tuple(out)


# --------------------------------------------------------------------------- the two sides


@contextmanager
def open_source(path: Path) -> Iterator[sqlite3.Connection]:
    """The SQLite store, read-only, in one read transaction (one snapshot) for the block.

    Raises:
        MigrationRefused: no such file, not a tradingd store, or newer than the code.
    """
    if not path.is_file():
        raise MigrationRefused(f"source {path}: no such file (is [store] path right?)")
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=10.0
        )
    except sqlite3.Error as exc:
        raise MigrationRefused(f"source {path}: cannot open it read-only: {exc}") from None
    with closing(conn):
        try:
            version = check_file(conn, str(path))
        except StoreError as exc:
            raise MigrationRefused(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise MigrationRefused(f"source {path}: not a database: {exc}") from None
        if version == 0:
            raise MigrationRefused(f"source {path}: not a tradingd store (no schema)")
        conn.execute("BEGIN")  # deferred: the snapshot starts with the first read
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


def _source_tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows}


def _check_source_shape(conn: sqlite3.Connection, path: Path) -> set[str]:
    """The source's tables, each one known with exactly :data:`TABLES`' columns.

    Raises:
        MigrationRefused: a table or a column this code would not copy.
    """
    present = _source_tables(conn)
    known = {spec.name: spec for spec in TABLES}
    unknown = sorted(
        t for t in present if t not in known and t not in NOT_COPIED and not t.startswith("sqlite_")
    )
    if unknown:
        raise MigrationRefused(
            f"source {path}: tables this tradingd cannot copy: {', '.join(unknown)}"
        )
    for name in present & known.keys():
        columns = tuple(str(r[1]) for r in conn.execute(f"PRAGMA table_info({name})"))
        if columns != known[name].column_names:
            raise MigrationRefused(
                f"source {path}: table {name} has columns {list(columns)}, "
                f"this tradingd copies {list(known[name].column_names)}"
            )
    return present


def _source_sequence(conn: sqlite3.Connection, table: str) -> int:
    """SQLite's ``AUTOINCREMENT`` high mark of ``table`` (0: none)."""
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    except sqlite3.OperationalError:  # no AUTOINCREMENT table in the file
        return 0
    return int(row[0]) if row is not None and row[0] is not None else 0


def connect_target(dsn: str, password: str | None) -> psycopg.Connection[Any]:
    """An autocommit connection to the target (the password passed apart from the DSN).

    Raises:
        StoreError: the server cannot be reached or refuses the login (message
            without the password).
    """
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT_S}
    if password is not None:
        kwargs["password"] = password
    kwargs.setdefault("application_name", "tradingd-migrate")
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.Error as exc:
        raise _translated(exc, dsn, "connecting") from None


def _translated(exc: psycopg.Error, dsn: str, action: str) -> StoreError:
    where = public_dsn(dsn)
    found = translate_pg_error(exc, where, action=action)
    if found is not None:
        return found
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return StoreError(f"store {where}: {action} failed: {first}")


def target_schema(conn: psycopg.Connection[Any]) -> str:
    """The schema the tables live in (the first of ``search_path``)."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise MigrationRefused("target: no schema (search_path names no existing schema)")
    return str(row[0])


# --------------------------------------------------------------------------- copy


def _stage(spec: TableSpec) -> str:
    return f"tradingd_migrate_{spec.name}"


def _copy_batch(dst: psycopg.Connection[Any], spec: TableSpec, rows: list[tuple[Any, ...]]) -> int:
    """Insert what of ``rows`` is absent, in one transaction; return how many were inserted."""
    cols = ", ".join(spec.column_names)
    with dst.transaction(), dst.cursor() as cur:
        with cur.copy(f"COPY {_stage(spec)} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO {spec.name} ({cols}) OVERRIDING SYSTEM VALUE "
            f"SELECT {cols} FROM {_stage(spec)} ORDER BY {spec.order_by(postgres=True)} "
            "ON CONFLICT DO NOTHING"
        )
        return max(cur.rowcount, 0)


#: Called after each committed batch with (table, rows read so far); tests raise from it.
BatchHook = Callable[[str, int], None]


def _copy_table(
    src: sqlite3.Connection,
    dst: psycopg.Connection[Any] | None,
    spec: TableSpec,
    report: TableReport,
    *,
    batch_rows: int,
    after_batch: BatchHook | None,
) -> None:
    """Read ``spec`` in key order; copy it (unless ``dst`` is None: dry run); hash it."""
    digest = hashlib.sha256()
    cur = src.execute(
        f"SELECT {', '.join(spec.column_names)} FROM {spec.name} "
        f"ORDER BY {spec.order_by(postgres=False)}"
    )
    if dst is not None:
        dst.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_stage(spec)} "
            f"(LIKE {spec.name}) ON COMMIT DELETE ROWS"
        )
    while rows := cur.fetchmany(batch_rows):
        for row in rows:
            digest.update(canonical_row(spec, row))
        report.source_rows += len(rows)
        if dst is not None:
            inserted = _copy_batch(dst, spec, [_to_pg(spec, r) for r in rows])
            report.copied += inserted
            report.skipped += len(rows) - inserted
        if after_batch is not None:
            after_batch(spec.name, report.source_rows)
    report.source_digest = digest.hexdigest()


def _sync_identity(dst: psycopg.Connection[Any], spec: TableSpec, source_high_mark: int) -> None:
    """Move the identity sequence past every copied id (and SQLite's high mark)."""
    if spec.identity is None:
        return
    row = dst.execute(
        "SELECT pg_get_serial_sequence(%s, %s)", (spec.name, spec.identity)
    ).fetchone()
    if row is None or row[0] is None:
        raise StoreOpenError(f"target: {spec.name}.{spec.identity} has no identity sequence")
    sequence = str(row[0])
    found = dst.execute(
        f"SELECT coalesce(max({spec.identity}), 0), "
        "coalesce(pg_sequence_last_value(%s::regclass), 0) "
        f"FROM {spec.name}",
        (sequence,),
    ).fetchone()
    assert found is not None
    high = max(int(found[0]), int(found[1]), source_high_mark)
    if high > 0:
        dst.execute("SELECT setval(%s::regclass, %s, true)", (sequence, high))


def _target_digests(dst: psycopg.Connection[Any], reports: dict[str, TableReport]) -> None:
    """Count and hash every table of the target in one snapshot."""
    with dst.transaction():
        dst.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for spec in TABLES:
            digest = hashlib.sha256()
            rows = 0
            with dst.cursor(name=f"tradingd_verify_{spec.name}") as cur:
                cur.itersize = _FETCH_ROWS
                cur.execute(
                    f"SELECT {', '.join(spec.column_names)} FROM {spec.name} "
                    f"ORDER BY {spec.order_by(postgres=True)}"
                )
                for row in cur:
                    digest.update(canonical_row(spec, row))
                    rows += 1
            reports[spec.name].target_rows = rows
            reports[spec.name].target_digest = digest.hexdigest()


def _target_counts(dst: psycopg.Connection[Any], reports: dict[str, TableReport]) -> None:
    """Row counts of an existing target schema (dry run)."""
    for spec in TABLES:
        row = dst.execute(f"SELECT count(*) FROM {spec.name}").fetchone()
        reports[spec.name].target_rows = int(row[0]) if row is not None else 0


# --------------------------------------------------------------------------- the run


def _hooks(
    progress: Callable[[str, int, int], None] | None, after_batch: BatchHook | None, total: int
) -> BatchHook:
    def hook(table: str, done: int) -> None:
        if progress is not None:
            progress(table, done, total)
        if after_batch is not None:
            after_batch(table, done)

    return hook


def migrate_to_postgres(
    source: Path,
    dsn: str,
    *,
    password: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    dry_run: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    after_batch: BatchHook | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> list[TableReport]:
    """Copy ``source`` (a SQLite store) into the PostgreSQL schema of ``dsn``, then verify.

    ``progress(table, rows_done, rows_total)`` is called after every batch.
    A dry run writes nothing: it reads and hashes the source and counts the
    target's rows if its schema exists (``target_rows`` stays ``None``
    otherwise); nothing is verified.

    Returns:
        One report per table of :data:`TABLES`, in copy order; the copy is
        proven equal when every report is ``verified``.

    Raises:
        MigrationRefused: see the class (nothing was written).
        StoreError: the target failed (connection, server); batches committed
            so far stay, a rerun completes the copy.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    where = public_dsn(dsn)
    reports = {spec.name: TableReport(spec.name) for spec in TABLES}
    with open_source(source) as src, closing(connect_target(dsn, password)) as dst:
        try:
            target_schema(dst)
            if dry_run:
                if check_schema(dst, where) > 0:
                    _target_counts(dst, reports)
            else:
                pg_migrate(dst, where, now_ms=int(wall_clock() * 1000))
        except (StoreOpenError, StoreVersionError) as exc:
            raise MigrationRefused(str(exc)) from None
        except psycopg.Error as exc:
            raise _translated(exc, dsn, "preparing the schema") from None
        present = _check_source_shape(src, source)
        totals = {
            spec.name: int(src.execute(f"SELECT count(*) FROM {spec.name}").fetchone()[0])
            if spec.name in present
            else 0
            for spec in TABLES
        }
        try:
            for spec in TABLES:
                report = reports[spec.name]
                if spec.name not in present:  # an older schema: the table is empty
                    report.source_digest = hashlib.sha256().hexdigest()
                    continue
                _copy_table(
                    src,
                    None if dry_run else dst,
                    spec,
                    report,
                    batch_rows=batch_rows,
                    after_batch=_hooks(progress, after_batch, totals[spec.name]),
                )
                if not dry_run:
                    _sync_identity(dst, spec, _source_sequence(src, spec.name))
            if not dry_run:
                _target_digests(dst, reports)
        except psycopg.Error as exc:
            raise _translated(exc, dsn, "copying") from None
    return list(reports.values())
