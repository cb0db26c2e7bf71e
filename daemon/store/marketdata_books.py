"""Order book snapshots in SQLite: a snapshot row and its level rows, written together.

Snapshots are keyed by ``(venue, symbol, server_time_ms, sequence_id)``, their
levels by snapshot, side and index. A snapshot and its levels are written in
the same transaction or not at all; one already stored is skipped with its
levels untouched (``"nothing"``) or, when its levels differ, has them
replaced (``"update"``). Prices and quantities are stored as ``TEXT`` as
:class:`~decimal.Decimal` prints them.

Called inside the owner's transaction by
:meth:`~daemon.store.marketdata.MarketDataStore.insert_book_snapshots` (one
chunk a call) and ``book_snapshots``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal

from daemon.model.marketdata import Level
from daemon.store.marketdata_values import MAX_ID, BookSnapshotRecord, ChunkResult, OnConflict

__all__ = ["count_levels", "read_snapshots", "write_snapshots"]

_SNAPSHOT_COLUMNS = "venue, symbol, server_time_ms, sequence_id, bid_levels, ask_levels"
_INSERT_SNAPSHOT = (
    f"INSERT INTO book_snapshots ({_SNAPSHOT_COLUMNS}, ingested_at_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (venue, symbol, server_time_ms, sequence_id) DO NOTHING RETURNING snapshot_id"
)
_SNAPSHOT_ID = (
    "SELECT snapshot_id FROM book_snapshots "
    "WHERE venue = ? AND symbol = ? AND server_time_ms = ? AND sequence_id = ?"
)
_INSERT_LEVEL = (
    "INSERT INTO book_levels (snapshot_id, side, level_index, price, quantity) "
    "VALUES (?, ?, ?, ?, ?)"
)
_SELECT_LEVELS = (
    "SELECT side, level_index, price, quantity FROM book_levels WHERE snapshot_id = ? "
    "ORDER BY side, level_index"
)

LevelRow = tuple[str, int, str, str]


def _level_rows(snapshot: BookSnapshotRecord) -> list[LevelRow]:
    # Sorted as _SELECT_LEVELS returns them ('ask' < 'bid').
    return [
        (side, index, str(price), str(quantity))
        for side, levels in (("ask", snapshot.asks), ("bid", snapshot.bids))
        for index, (price, quantity) in enumerate(levels)
    ]


def write_snapshots(
    conn: sqlite3.Connection,
    snapshots: Sequence[BookSnapshotRecord],
    *,
    on_conflict: OnConflict,
    wall_clock: Callable[[], float],
) -> ChunkResult:
    """Store one chunk of snapshots, each with its levels (replaced with ``"update"``
    when they differ)."""
    now_ms = int(wall_clock() * 1000)
    inserted = updated = skipped = 0
    for snapshot in snapshots:
        key = (snapshot.venue, snapshot.symbol, snapshot.server_time_ms, snapshot.sequence_id)
        levels = _level_rows(snapshot)
        counts = (len(snapshot.bids), len(snapshot.asks))
        row = conn.execute(_INSERT_SNAPSHOT, (*key, *counts, now_ms)).fetchone()
        if row is not None:
            conn.executemany(_INSERT_LEVEL, [(row[0], *level) for level in levels])
            inserted += 1
            continue
        if on_conflict == "nothing":
            skipped += 1
            continue
        snapshot_id = conn.execute(_SNAPSHOT_ID, key).fetchone()[0]
        stored = [tuple(r) for r in conn.execute(_SELECT_LEVELS, (snapshot_id,))]
        if stored == levels:
            skipped += 1
            continue
        conn.execute("DELETE FROM book_levels WHERE snapshot_id = ?", (snapshot_id,))
        conn.executemany(_INSERT_LEVEL, [(snapshot_id, *level) for level in levels])
        conn.execute(
            "UPDATE book_snapshots SET bid_levels = ?, ask_levels = ?, ingested_at_ms = ? "
            "WHERE snapshot_id = ?",
            (*counts, now_ms, snapshot_id),
        )
        updated += 1
    return ChunkResult(inserted, updated, skipped)


def read_snapshots(
    conn: sqlite3.Connection,
    *,
    venue: str,
    symbol: str,
    from_ms: int | None,
    to_ms: int | None,
    limit: int | None,
    newest_first: bool,
) -> list[BookSnapshotRecord]:
    """Stored snapshots of a symbol with ``from_ms <= server_time_ms <= to_ms``."""
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(
        "SELECT snapshot_id, server_time_ms, sequence_id FROM book_snapshots "
        "WHERE venue = ? AND symbol = ? AND server_time_ms BETWEEN ? AND ? "
        f"ORDER BY server_time_ms {order}, sequence_id {order} LIMIT ?",
        (
            venue,
            symbol,
            -MAX_ID if from_ms is None else from_ms,
            MAX_ID if to_ms is None else to_ms,
            -1 if limit is None else limit,
        ),
    ).fetchall()
    found: list[BookSnapshotRecord] = []
    for snapshot_id, server_time_ms, sequence_id in rows:
        sides: dict[str, list[Level]] = {"bid": [], "ask": []}
        for side, _, price, quantity in conn.execute(_SELECT_LEVELS, (snapshot_id,)):
            sides[side].append((Decimal(price), Decimal(quantity)))
        found.append(
            BookSnapshotRecord(
                venue=venue,
                symbol=symbol,
                server_time_ms=server_time_ms,
                sequence_id=sequence_id,
                bids=tuple(sides["bid"]),
                asks=tuple(sides["ask"]),
            )
        )
    return found


def count_levels(conn: sqlite3.Connection) -> int:
    """How many level rows are stored (all snapshots)."""
    return int(conn.execute("SELECT count(*) FROM book_levels").fetchone()[0])
