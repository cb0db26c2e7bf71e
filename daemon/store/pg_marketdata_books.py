"""Order book snapshots in PostgreSQL: a snapshot row and its level rows, written together.

As SQLite's (:mod:`daemon.store.marketdata_books`): snapshots keyed by
``(venue, symbol, server_time_ms, sequence_id)``, levels by snapshot, side
and index; a snapshot and its levels in one transaction; one already stored
is skipped (``"nothing"``) or has its levels replaced when they differ
(``"update"``). Functions of a :class:`psycopg.Connection`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

from daemon.model.marketdata import Level
from daemon.store.marketdata_values import BookSnapshotRecord, ChunkResult, OnConflict

__all__ = ["count_levels", "read_snapshots", "write_snapshots"]

Conn = Any  # psycopg.Connection

_SNAPSHOT_COLUMNS: Final = "venue, symbol, server_time_ms, sequence_id, bid_levels, ask_levels"
_INSERT_SNAPSHOT: Final = (
    f"INSERT INTO book_snapshots ({_SNAPSHOT_COLUMNS}, ingested_at_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (venue, symbol, server_time_ms, sequence_id) DO NOTHING RETURNING snapshot_id"
)
_SNAPSHOT_ID: Final = (
    "SELECT snapshot_id FROM book_snapshots "
    "WHERE venue = %s AND symbol = %s AND server_time_ms = %s AND sequence_id = %s FOR UPDATE"
)
_INSERT_LEVEL: Final = (
    "INSERT INTO book_levels (snapshot_id, side, level_index, price, quantity) "
    "VALUES (%s, %s, %s, %s, %s)"
)
_SELECT_LEVELS: Final = (
    "SELECT side, level_index, price, quantity FROM book_levels WHERE snapshot_id = %s "
    'ORDER BY side COLLATE "C", level_index'
)

LevelRow = tuple[str, int, str, str]


def _level_rows(snapshot: BookSnapshotRecord) -> list[LevelRow]:
    # Sorted as _SELECT_LEVELS returns them ('ask' < 'bid').
    return [
        (side, index, str(price), str(quantity))
        for side, levels in (("ask", snapshot.asks), ("bid", snapshot.bids))
        for index, (price, quantity) in enumerate(levels)
    ]


def _insert_levels(conn: Conn, snapshot_id: int, levels: list[LevelRow]) -> None:
    if levels:
        with conn.cursor() as cursor:
            cursor.executemany(_INSERT_LEVEL, [(snapshot_id, *level) for level in levels])


def write_snapshots(
    conn: Conn,
    snapshots: Sequence[BookSnapshotRecord],
    *,
    on_conflict: OnConflict,
    wall_clock: Callable[[], float],
) -> ChunkResult:
    """Store one chunk of snapshots, each with its levels."""
    now_ms = int(wall_clock() * 1000)
    inserted = updated = skipped = 0
    for snapshot in snapshots:
        key = (snapshot.venue, snapshot.symbol, snapshot.server_time_ms, snapshot.sequence_id)
        levels = _level_rows(snapshot)
        counts = (len(snapshot.bids), len(snapshot.asks))
        row = conn.execute(_INSERT_SNAPSHOT, (*key, *counts, now_ms)).fetchone()
        if row is not None:
            _insert_levels(conn, row[0], levels)
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
        conn.execute("DELETE FROM book_levels WHERE snapshot_id = %s", (snapshot_id,))
        _insert_levels(conn, snapshot_id, levels)
        conn.execute(
            "UPDATE book_snapshots SET bid_levels = %s, ask_levels = %s, ingested_at_ms = %s "
            "WHERE snapshot_id = %s",
            (*counts, now_ms, snapshot_id),
        )
        updated += 1
    return ChunkResult(inserted, updated, skipped)


def read_snapshots(
    conn: Conn,
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
    clauses = ["venue = %s", "symbol = %s"]
    args: list[Any] = [venue, symbol]
    if from_ms is not None:
        clauses.append("server_time_ms >= %s")
        args.append(from_ms)
    if to_ms is not None:
        clauses.append("server_time_ms <= %s")
        args.append(to_ms)
    args.append(limit)
    rows = conn.execute(
        "SELECT snapshot_id, server_time_ms, sequence_id FROM book_snapshots "
        f"WHERE {' AND '.join(clauses)} "
        f"ORDER BY server_time_ms {order}, sequence_id {order} LIMIT %s",
        args,
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


def count_levels(conn: Conn) -> int:
    """How many level rows are stored (all snapshots)."""
    return int(conn.execute("SELECT count(*) FROM book_levels").fetchone()[0])
