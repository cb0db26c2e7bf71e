"""Retention's batches in PostgreSQL (the loop is in :mod:`daemon.store.maintenance`).

As SQLite's: per ``(venue, symbol)``, trades in trade-id order up to the
first one not older than the cutoff, about ``batch_rows`` rows per
transaction; book snapshots older than the cutoff with their levels. What
SQLite's ``integrity_check`` and ``VACUUM`` do is the server's business here
(``data_checksums``/``amcheck``; autovacuum), so there is nothing else.

Functions of a :class:`psycopg.Connection`, run inside the owner's transactions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pairs", "prune_snapshots_batch", "prune_trades_batch"]

Conn = Any  # psycopg.Connection

_TABLES = frozenset({"trades", "book_snapshots"})


def pairs(conn: Conn, table: str) -> list[tuple[str, str]]:
    """The distinct ``(venue, symbol)`` of ``table`` (a loose index scan, one seek each)."""
    if table not in _TABLES:
        raise ValueError(f"no market data table {table!r}")
    found: list[tuple[str, str]] = []
    row = conn.execute(
        f"SELECT venue, symbol FROM {table} ORDER BY venue, symbol LIMIT 1"
    ).fetchone()
    while row is not None:
        found.append((row[0], row[1]))
        row = conn.execute(
            f"SELECT venue, symbol FROM {table} WHERE (venue, symbol) > (%s, %s) "
            "ORDER BY venue, symbol LIMIT 1",
            (row[0], row[1]),
        ).fetchone()
    return found


def prune_trades_batch(
    conn: Conn, venue: str, symbol: str, older_than_ms: int, batch_rows: int
) -> tuple[int, bool]:
    """Delete the oldest trades of one symbol up to the first one not older than the cutoff
    (at most ``batch_rows``); ``(deleted, done)``."""
    rows = conn.execute(
        "SELECT trade_id, trade_time_ms FROM trades WHERE venue = %s AND symbol = %s "
        "ORDER BY trade_id LIMIT %s",
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
    deleted = conn.execute(
        "DELETE FROM trades WHERE venue = %s AND symbol = %s AND trade_id <= %s",
        (venue, symbol, boundary),
    ).rowcount
    done = old < len(rows) or len(rows) < batch_rows
    return int(deleted), done


def prune_snapshots_batch(
    conn: Conn, venue: str, symbol: str, older_than_ms: int, batch_rows: int
) -> tuple[int, int, bool]:
    """Delete old snapshots of one symbol with their levels, about ``batch_rows`` rows;
    ``(snapshots, levels, done)``."""
    rows = conn.execute(
        "SELECT snapshot_id, bid_levels + ask_levels FROM book_snapshots "
        "WHERE venue = %s AND symbol = %s AND server_time_ms < %s "
        "ORDER BY server_time_ms, sequence_id LIMIT %s",
        (venue, symbol, older_than_ms, batch_rows),
    ).fetchall()
    doomed: list[int] = []
    budget = 0
    for snapshot_id, levels in rows:
        if doomed and budget + 1 + levels > batch_rows:
            break
        doomed.append(snapshot_id)
        budget += 1 + levels
    if not doomed:
        return 0, 0, True
    levels_deleted = conn.execute(
        "DELETE FROM book_levels WHERE snapshot_id = ANY(%s)", (doomed,)
    ).rowcount
    conn.execute("DELETE FROM book_snapshots WHERE snapshot_id = ANY(%s)", (doomed,))
    done = len(doomed) == len(rows) and len(rows) < batch_rows
    return len(doomed), int(levels_deleted), done
