"""Store maintenance: retention pruning in small transactions, and the integrity check.

Retention (off by default) deletes market data older than a configured age.
It must never stall ingestion, so it deletes in batches of about
``batch_rows`` rows, **each batch its own transaction and its own call on the
store's lane**: a chunk of trades arriving meanwhile waits for at most one
batch (the lane is FIFO), never for the whole prune.

How old rows are found without an extra index on time (which would slow
every insert): trades are visited per ``(venue, symbol)`` in trade-id order,
deleting the oldest ones up to the first trade that is not older than the
cutoff. Trade times are nondecreasing in trade id on the supported venues, so
this is exact there; where they are not, it errs on the side of keeping data.
Book snapshots are keyed by ``(venue, symbol, server_time_ms, …)``, so their
age is an index range; their levels go in the same transaction.

:func:`integrity_check` opens its own read-only connection, so the CLI can
run it against the file of a running daemon (WAL lets readers in). It is
SQLite's alone: a PostgreSQL server checks its own pages (``data_checksums``,
``amcheck``, ``pg_dump`` as the backup test), and ``VACUUM`` is autovacuum's job.

The pruning loop here is backend-neutral; one batch is the owner's dialect's
(:class:`~daemon.store.dialect.PruneSql`): SQLite's batches are the
functions below, PostgreSQL's are in :mod:`daemon.store.pg_maintenance`.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon.store.base import Durability, StoreOwner
from daemon.store.errors import (
    StoreCorruptError,
    StoreOpenError,
    StoreUnavailableError,
    translate_error,
)

__all__ = [
    "DEFAULT_PRUNE_BATCH_ROWS",
    "PruneSummary",
    "integrity_check",
    "pairs",
    "prune_market_data",
    "prune_snapshots_batch",
    "prune_trades_batch",
    "run_retention",
]

log = logging.getLogger("tradingd.store.maintenance")

#: Rows deleted per pruning transaction.
DEFAULT_PRUNE_BATCH_ROWS = 5000


@attrs.frozen
class PruneSummary:
    """What one retention run deleted, and in how many transactions."""

    trades: int = 0
    book_snapshots: int = 0
    book_levels: int = 0
    batches: int = 0

    @property
    def rows(self) -> int:
        """All rows deleted (trades, snapshots and their levels)."""
        return self.trades + self.book_snapshots + self.book_levels


def pairs(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    # A loose index scan: one index seek per distinct (venue, symbol), where
    # SELECT DISTINCT would read every row of the table.
    pairs: list[tuple[str, str]] = []
    row = conn.execute(
        f"SELECT venue, symbol FROM {table} ORDER BY venue, symbol LIMIT 1"
    ).fetchone()
    while row is not None:
        pairs.append((row[0], row[1]))
        row = conn.execute(
            f"SELECT venue, symbol FROM {table} WHERE (venue, symbol) > (?, ?) "
            "ORDER BY venue, symbol LIMIT 1",
            (row[0], row[1]),
        ).fetchone()
    return pairs


def prune_trades_batch(
    conn: sqlite3.Connection, venue: str, symbol: str, older_than_ms: int, batch_rows: int
) -> tuple[int, bool]:
    rows = conn.execute(
        "SELECT trade_id, trade_time_ms FROM trades WHERE venue = ? AND symbol = ? "
        "ORDER BY trade_id LIMIT ?",
        (venue, symbol, batch_rows),
    ).fetchall()
    boundary: int | None = None
    old = 0
    for trade_id, trade_time_ms in rows:
        if trade_time_ms >= older_than_ms:
            break
        boundary = trade_id
        old += 1
    if boundary is None:
        return 0, True
    before = conn.total_changes
    conn.execute(
        "DELETE FROM trades WHERE venue = ? AND symbol = ? AND trade_id <= ?",
        (venue, symbol, boundary),
    )
    done = old < len(rows) or len(rows) < batch_rows
    return conn.total_changes - before, done


def prune_snapshots_batch(
    conn: sqlite3.Connection, venue: str, symbol: str, older_than_ms: int, batch_rows: int
) -> tuple[int, int, bool]:
    rows = conn.execute(
        "SELECT snapshot_id, bid_levels + ask_levels FROM book_snapshots "
        "WHERE venue = ? AND symbol = ? AND server_time_ms < ? "
        "ORDER BY server_time_ms, sequence_id LIMIT ?",
        (venue, symbol, older_than_ms, batch_rows),
    ).fetchall()
    doomed: list[tuple[int]] = []
    budget = 0
    for snapshot_id, levels in rows:
        if doomed and budget + 1 + levels > batch_rows:
            break
        doomed.append((snapshot_id,))
        budget += 1 + levels
    if not doomed:
        return 0, 0, True
    before = conn.total_changes
    conn.executemany("DELETE FROM book_levels WHERE snapshot_id = ?", doomed)
    levels_deleted = conn.total_changes - before
    conn.executemany("DELETE FROM book_snapshots WHERE snapshot_id = ?", doomed)
    done = len(doomed) == len(rows) and len(rows) < batch_rows
    return len(doomed), levels_deleted, done


async def prune_market_data(
    store: StoreOwner[Any],
    older_than_ms: int,
    *,
    batch_rows: int = DEFAULT_PRUNE_BATCH_ROWS,
) -> PruneSummary:
    """Delete trades (``trade_time_ms``) and book snapshots (``server_time_ms``)
    older than ``older_than_ms``, about ``batch_rows`` rows per transaction.

    Each batch is its own transaction and its own lane call, so other store
    work — ingestion above all — runs between batches. Checkpoints, gaps and
    dead letters are never pruned here. Cancellation stops between batches;
    what was deleted stays deleted.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    trades = snapshots = levels = batches = 0
    stats = store.stats
    sql = store.sql.prune
    for venue, symbol in await store.read(partial(sql.pairs, table="trades"), action="pruning"):
        done = False
        while not done:
            deleted, done = await store.write(
                partial(
                    sql.prune_trades_batch,
                    venue=venue,
                    symbol=symbol,
                    older_than_ms=older_than_ms,
                    batch_rows=batch_rows,
                ),
                durability=Durability.MARKET,
                action="pruning trades",
            )
            trades += deleted
            batches += 1
            stats.prune_batches += 1
            stats.rows_pruned += deleted
    found = await store.read(partial(sql.pairs, table="book_snapshots"), action="pruning")
    for venue, symbol in found:
        done = False
        while not done:
            n_snapshots, n_levels, done = await store.write(
                partial(
                    sql.prune_snapshots_batch,
                    venue=venue,
                    symbol=symbol,
                    older_than_ms=older_than_ms,
                    batch_rows=batch_rows,
                ),
                durability=Durability.MARKET,
                action="pruning book snapshots",
            )
            snapshots += n_snapshots
            levels += n_levels
            batches += 1
            stats.prune_batches += 1
            stats.rows_pruned += n_snapshots + n_levels
    summary = PruneSummary(trades, snapshots, levels, batches)
    log.log(
        logging.INFO if summary.rows else logging.DEBUG,
        "retention: deleted %d trades, %d book snapshots (%d levels) older than %d ms "
        "in %d transactions",
        trades,
        snapshots,
        levels,
        older_than_ms,
        batches,
    )
    return summary


async def run_retention(
    store: StoreOwner[Any],
    *,
    max_age_s: float | None,
    interval_s: float = 3600.0,
    batch_rows: int = DEFAULT_PRUNE_BATCH_ROWS,
    now_ms: Callable[[], int] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The scheduled maintenance task: prune market data older than ``max_age_s``
    every ``interval_s`` (first run at start). Off when ``max_age_s`` is ``None``.

    A run that fails because the store is unavailable (busy, full, …) is
    logged and retried at the next interval; other errors propagate to the
    supervisor. Runs until cancelled.

    Args:
        store: The store.
        max_age_s: Keep this much history; ``None`` keeps everything (default).
        interval_s: Time between runs (drift-free schedule).
        batch_rows: Rows per pruning transaction.
        now_ms: Wall clock in epoch ms (default: the store's wall clock).
        task_status: Reports ready at once.
    """
    if max_age_s is None:
        log.info("retention off: market data is kept forever")
        task_status.started()
        await trio.sleep_forever()
    if not (max_age_s > 0 and math.isfinite(max_age_s)):
        raise ValueError(f"max_age_s must be positive, got {max_age_s}")
    if not interval_s > 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    clock = now_ms if now_ms is not None else (lambda: int(store.wall_clock() * 1000))
    max_age_ms = int(max_age_s * 1000)
    log.info(
        "retention on: keeping %.0f s of market data, pruning every %.0f s", max_age_s, interval_s
    )
    task_status.started()
    next_run = trio.current_time()
    while True:
        await trio.sleep_until(next_run)
        try:
            await prune_market_data(store, clock() - max_age_ms, batch_rows=batch_rows)
        except StoreUnavailableError as exc:
            log.warning("retention run failed, retrying at the next interval: %s", exc)
        next_run += interval_s
        now = trio.current_time()
        if next_run <= now:  # a run longer than the interval: restart the schedule
            next_run = now + interval_s


def integrity_check(path: str | Path, *, max_errors: int = 100) -> list[str]:
    """Check a database file; return its problems (``[]`` when sound).

    Runs ``PRAGMA integrity_check`` (``"ok"`` → no problem) and
    ``PRAGMA foreign_key_check`` on a separate **read-only** connection, so it
    never changes the file and can run beside a live daemon. A file that is not
    a database, or is too damaged to read, is reported as a problem rather than
    raised.

    Blocking: the CLI calls it directly; async code uses
    :meth:`SqliteStore.integrity_check <daemon.store.sqlite.SqliteStore.integrity_check>`.

    Raises:
        StoreOpenError: the file does not exist or cannot be opened.
        StoreUnavailableError: busy or I/O trouble while reading.
    """
    if max_errors < 1:
        raise ValueError(f"max_errors must be >= 1, got {max_errors}")
    file = Path(path)
    text = str(file)
    if not file.is_file():
        raise StoreOpenError(f"store {text}: no such database file", path=text)
    uri = f"{file.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise (translate_error(exc, text, action="opening for an integrity check") or exc) from exc
    try:
        rows = conn.execute(f"PRAGMA integrity_check({int(max_errors)})").fetchall()
        problems = [str(row[0]) for row in rows if str(row[0]) != "ok"]
        for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
            where = f"{table} row {rowid}" if rowid is not None else f"a {table} row"
            problems.append(f"foreign key violation: {where} has no {parent} row")
    except sqlite3.Error as exc:
        translated = translate_error(exc, text, action="checking integrity")
        if isinstance(translated, StoreCorruptError):
            return [f"{text}: {exc}"]
        raise (translated or exc) from exc
    finally:
        conn.close()
    return problems
