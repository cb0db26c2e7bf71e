"""Trades in SQLite: idempotent chunk writes on the natural key, and the queries on them.

Trades are keyed by ``(venue, symbol, trade_id)``. ``INSERT … ON CONFLICT DO
NOTHING`` makes a replay after a reconnect or a restart a no-op;
``on_conflict="update"`` replaces rows whose values differ (corrections),
and the chunk's result says which happened. With a checkpoint key, the
chunk's transaction also advances that ingest checkpoint to the chunk's
highest trade id (:func:`~daemon.store.marketdata_gaps.advance_checkpoint`),
so the resume point never points past data that is not stored.

Prices and quantities are stored as ``TEXT`` exactly as
:class:`~decimal.Decimal` prints them (the venue's spelling, e.g.
``"0.00100000"``), and read back exactly.

Each function takes the :class:`sqlite3.Connection` of a transaction the
owner runs; :class:`~daemon.store.marketdata.MarketDataStore` is the async face.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Final

from daemon.model.marketdata import Trade
from daemon.store.marketdata_gaps import advance_checkpoint
from daemon.store.marketdata_values import MAX_ID, ChunkResult, OnConflict
from daemon.store.rows import FLAG, Conversion, RowCodec

__all__ = [
    "count_trades",
    "last_trade_id",
    "missing_ranges",
    "read_trades",
    "trade_ids",
    "write_trades",
]

_DECIMAL: Final = Conversion(load=Decimal, dump=str)
TRADE_ROWS: Final = RowCodec(
    Trade,
    {"price": _DECIMAL, "quantity": _DECIMAL, "quote_quantity": _DECIMAL, "buyer_is_maker": FLAG},
)

_INSERT_TRADE: Final = (
    f"INSERT INTO trades ({', '.join(TRADE_ROWS.columns)}, ingested_at_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (venue, symbol, trade_id) DO NOTHING"
)
_SELECT_TRADE_VALUES: Final = (
    "SELECT price, quantity, quote_quantity, buyer_is_maker, trade_time_ms, event_time_ms "
    "FROM trades WHERE venue = ? AND symbol = ? AND trade_id = ?"
)
_UPDATE_TRADE: Final = (
    "UPDATE trades SET price = ?, quantity = ?, quote_quantity = ?, buyer_is_maker = ?, "
    "trade_time_ms = ?, event_time_ms = ?, ingested_at_ms = ? "
    "WHERE venue = ? AND symbol = ? AND trade_id = ?"
)
_RANGE: Final = "venue = ? AND symbol = ? AND trade_id BETWEEN ? AND ?"
_HOLES: Final = (
    "SELECT prev_id + 1, trade_id - 1 FROM ("
    " SELECT trade_id, lag(trade_id) OVER (ORDER BY trade_id) AS prev_id"
    f" FROM trades WHERE {_RANGE}"
    ") WHERE trade_id - prev_id > 1 ORDER BY trade_id"
)

TradeRow = tuple[str, str, int, str, str, str, int, int, int | None, int]


def write_trades(
    conn: sqlite3.Connection,
    trades: Sequence[Trade],
    *,
    on_conflict: OnConflict,
    checkpoint: tuple[str, str, str] | None,
    wall_clock: Callable[[], float],
) -> ChunkResult:
    """Store one chunk of trades (and advance ``checkpoint`` to its highest id, when given)."""
    now_ms = int(wall_clock() * 1000)
    # One comprehension, no call per row: this is the ingestion hot path.
    rows: list[TradeRow] = [
        (t.venue, t.symbol, t.trade_id, str(t.price), str(t.quantity), str(t.quote_quantity),
         1 if t.buyer_is_maker else 0, t.trade_time_ms, t.event_time_ms, now_ms)
        for t in trades
    ]  # fmt: skip
    inserted = updated = skipped = 0
    if on_conflict == "nothing":
        before = conn.total_changes
        conn.executemany(_INSERT_TRADE, rows)
        inserted = conn.total_changes - before
        skipped = len(rows) - inserted
    else:
        for row in rows:
            key = row[:3]
            current = conn.execute(_SELECT_TRADE_VALUES, key).fetchone()
            if current is None:
                conn.execute(_INSERT_TRADE, row)
                inserted += 1
            elif tuple(current) == row[3:9]:
                skipped += 1
            else:
                conn.execute(_UPDATE_TRADE, (*row[3:10], *key))
                updated += 1
    stored: int | None = None
    if checkpoint is not None and trades:
        last_id = max([row[2] for row in rows])
        stored = advance_checkpoint(conn, checkpoint, last_id, now_ms)
    return ChunkResult(inserted, updated, skipped, stored)


def last_trade_id(conn: sqlite3.Connection, venue: str, symbol: str) -> int | None:
    """The highest stored trade id of a symbol (``None`` when none)."""
    row = conn.execute(
        "SELECT max(trade_id) FROM trades WHERE venue = ? AND symbol = ?", (venue, symbol)
    ).fetchone()
    return None if row[0] is None else int(row[0])


def _range(
    venue: str, symbol: str, from_id: int | None, to_id: int | None
) -> tuple[str, str, int, int]:
    return (venue, symbol, 0 if from_id is None else from_id, MAX_ID if to_id is None else to_id)


def count_trades(
    conn: sqlite3.Connection, venue: str, symbol: str, from_id: int | None, to_id: int | None
) -> int:
    """How many trades of a symbol are stored (within ``[from_id, to_id]`` when given)."""
    args = _range(venue, symbol, from_id, to_id)
    return int(conn.execute(f"SELECT count(*) FROM trades WHERE {_RANGE}", args).fetchone()[0])


def trade_ids(
    conn: sqlite3.Connection, venue: str, symbol: str, from_id: int, to_id: int
) -> list[int]:
    """The stored trade ids in ``[from_id, to_id]``, ascending."""
    rows = conn.execute(
        f"SELECT trade_id FROM trades WHERE {_RANGE} ORDER BY trade_id",
        (venue, symbol, from_id, to_id),
    )
    return [int(row[0]) for row in rows]


def read_trades(
    conn: sqlite3.Connection,
    venue: str,
    symbol: str,
    from_id: int | None,
    to_id: int | None,
    *,
    limit: int | None,
) -> list[Trade]:
    """Stored trades by ascending id, at most ``limit`` (all when ``None``)."""
    rows = conn.execute(
        f"SELECT {', '.join(TRADE_ROWS.columns)} FROM trades WHERE {_RANGE} "
        "ORDER BY trade_id LIMIT ?",
        (*_range(venue, symbol, from_id, to_id), -1 if limit is None else limit),
    )
    return [TRADE_ROWS.load(row) for row in rows]


def missing_ranges(
    conn: sqlite3.Connection, *, venue: str, symbol: str, lo: int, hi: int, limit: int | None
) -> list[tuple[int, int]]:
    """The holes in ``[lo, hi]``: inclusive ``(first, last)`` id ranges not stored.

    Computed inside SQLite from consecutive stored ids (one index range
    scan), so a large range costs no Python per stored row; ``limit`` keeps
    only the first holes.
    """
    args = (venue, symbol, lo, hi)
    first, last = conn.execute(
        f"SELECT min(trade_id), max(trade_id) FROM trades WHERE {_RANGE}", args
    ).fetchone()
    if first is None:
        return [(lo, hi)]
    found: list[tuple[int, int]] = []
    if first > lo:
        found.append((lo, first - 1))
    for start, stop in conn.execute(_HOLES, args):
        if limit is not None and len(found) >= limit:
            return found
        found.append((int(start), int(stop)))
    if last < hi:
        found.append((last + 1, hi))
    return found if limit is None else found[:limit]
