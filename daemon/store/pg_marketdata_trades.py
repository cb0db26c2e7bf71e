"""Trades in PostgreSQL: idempotent chunk writes by binary COPY, and the queries on them.

The semantics are SQLite's (:mod:`daemon.store.marketdata_trades`): trades
keyed by ``(venue, symbol, trade_id)``, a replay is a no-op
(``on_conflict="nothing"``) or replaces rows whose values differ
(``"update"``), the chunk's result counts inserted/updated/skipped, and with
a checkpoint key the chunk's own transaction advances that checkpoint to its
highest trade id. Prices and quantities are ``TEXT`` in the venue's spelling.

The hot path (``"nothing"``): the chunk goes by **binary COPY into a
session-local temporary table** (:data:`STAGE`, ``ON COMMIT DELETE ROWS``,
created once per connection by :func:`prepare_session`), then one
``INSERT … SELECT … ORDER BY n ON CONFLICT DO NOTHING`` moves it into
``trades`` — duplicates inside the chunk too (the first one wins, as with
SQLite's ``executemany``). Two round trips per chunk instead of one per row:
about twice ``executemany`` for 1000-row chunks on loopback.

Each function takes the :class:`psycopg.Connection` of a transaction the
owner runs; :class:`~daemon.store.marketdata.MarketDataStore` is the async face.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

from daemon.model.marketdata import Trade
from daemon.store.marketdata_values import MAX_ID, ChunkResult, OnConflict
from daemon.store.pg_marketdata_gaps import advance_checkpoint
from daemon.store.rows import Conversion, RowCodec

__all__ = [
    "STAGE",
    "count_trades",
    "last_trade_id",
    "missing_ranges",
    "prepare_session",
    "read_trades",
    "trade_ids",
    "write_trades",
]

Conn = Any  # psycopg.Connection

_DECIMAL: Final = Conversion(load=Decimal, dump=str)
TRADE_ROWS: Final = RowCodec(
    Trade, {"price": _DECIMAL, "quantity": _DECIMAL, "quote_quantity": _DECIMAL}
)
_COLUMNS: Final = (*TRADE_ROWS.columns, "ingested_at_ms")

#: The session's staging table for COPY (temporary: private to the connection).
STAGE: Final = "tradingd_trades_in"
_CREATE_STAGE: Final = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} ("
    "n INTEGER NOT NULL, venue TEXT, symbol TEXT, trade_id BIGINT, price TEXT, quantity TEXT, "
    "quote_quantity TEXT, buyer_is_maker BOOLEAN, trade_time_ms BIGINT, event_time_ms BIGINT, "
    "ingested_at_ms BIGINT) ON COMMIT DELETE ROWS"
)
_COPY: Final = f"COPY {STAGE} (n, {', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES: Final = (
    "int4", "text", "text", "int8", "text", "text", "text", "bool", "int8", "int8", "int8",
)  # fmt: skip
_MOVE: Final = (
    f"INSERT INTO trades ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM {STAGE} "
    "ORDER BY n ON CONFLICT (venue, symbol, trade_id) DO NOTHING"
)
_INSERT_TRADE: Final = (
    f"INSERT INTO trades ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in _COLUMNS)}) "
    "ON CONFLICT (venue, symbol, trade_id) DO NOTHING"
)
_SELECT_TRADE_VALUES: Final = (
    "SELECT price, quantity, quote_quantity, buyer_is_maker, trade_time_ms, event_time_ms "
    "FROM trades WHERE venue = %s AND symbol = %s AND trade_id = %s"
)
_UPDATE_TRADE: Final = (
    "UPDATE trades SET price = %s, quantity = %s, quote_quantity = %s, buyer_is_maker = %s, "
    "trade_time_ms = %s, event_time_ms = %s, ingested_at_ms = %s "
    "WHERE venue = %s AND symbol = %s AND trade_id = %s"
)
_RANGE: Final = "venue = %s AND symbol = %s AND trade_id BETWEEN %s AND %s"
_HOLES: Final = (
    "SELECT prev_id + 1, trade_id - 1 FROM ("
    " SELECT trade_id, lag(trade_id) OVER (ORDER BY trade_id) AS prev_id"
    f" FROM trades WHERE {_RANGE}"
    ") AS t WHERE trade_id - prev_id > 1 ORDER BY trade_id"
)

TradeRow = tuple[str, str, int, str, str, str, bool, int, int | None, int]


def prepare_session(conn: Conn) -> None:
    """Create the session's staging table (once per connection, outside a transaction)."""
    conn.execute(_CREATE_STAGE)


def _check_ids(rows: Sequence[TradeRow]) -> None:
    # Binary COPY packs int8 on the client: an id out of range must be the
    # schema's refusal (a data error), as it is with SQLite, not a struct error.
    for row in rows:
        if not -MAX_ID - 1 <= row[2] <= MAX_ID:
            raise OverflowError(f"trade id {row[2]} is out of the 64-bit range")


def write_trades(
    conn: Conn,
    trades: Sequence[Trade],
    *,
    on_conflict: OnConflict,
    checkpoint: tuple[str, str, str] | None,
    wall_clock: Callable[[], float],
) -> ChunkResult:
    """Store one chunk of trades (and advance ``checkpoint`` to its highest id, when given)."""
    now_ms = int(wall_clock() * 1000)
    rows: list[TradeRow] = [
        (t.venue, t.symbol, t.trade_id, str(t.price), str(t.quantity), str(t.quote_quantity),
         t.buyer_is_maker, t.trade_time_ms, t.event_time_ms, now_ms)
        for t in trades
    ]  # fmt: skip
    inserted = updated = skipped = 0
    if on_conflict == "nothing":
        _check_ids(rows)
        with conn.cursor() as cursor:
            with cursor.copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for n, row in enumerate(rows):
                    copy.write_row((n, *row))
            cursor.execute(_MOVE)
            inserted = cursor.rowcount
            # The stage empties at COMMIT; a later statement of the same
            # transaction (another chunk composed with this one) must not see it.
            cursor.execute(f"TRUNCATE {STAGE}")
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


def last_trade_id(conn: Conn, venue: str, symbol: str) -> int | None:
    """The highest stored trade id of a symbol (``None`` when none)."""
    row = conn.execute(
        "SELECT max(trade_id) FROM trades WHERE venue = %s AND symbol = %s", (venue, symbol)
    ).fetchone()
    return None if row[0] is None else int(row[0])


def _range(
    venue: str, symbol: str, from_id: int | None, to_id: int | None
) -> tuple[str, str, int, int]:
    return (venue, symbol, 0 if from_id is None else from_id, MAX_ID if to_id is None else to_id)


def count_trades(
    conn: Conn, venue: str, symbol: str, from_id: int | None, to_id: int | None
) -> int:
    """How many trades of a symbol are stored (within ``[from_id, to_id]`` when given)."""
    args = _range(venue, symbol, from_id, to_id)
    return int(conn.execute(f"SELECT count(*) FROM trades WHERE {_RANGE}", args).fetchone()[0])


def trade_ids(conn: Conn, venue: str, symbol: str, from_id: int, to_id: int) -> list[int]:
    """The stored trade ids in ``[from_id, to_id]``, ascending."""
    rows = conn.execute(
        f"SELECT trade_id FROM trades WHERE {_RANGE} ORDER BY trade_id",
        (venue, symbol, from_id, to_id),
    )
    return [int(row[0]) for row in rows]


def read_trades(
    conn: Conn,
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
        "ORDER BY trade_id LIMIT %s",
        (*_range(venue, symbol, from_id, to_id), limit),
    )
    return [TRADE_ROWS.load(row) for row in rows]


def missing_ranges(
    conn: Conn, *, venue: str, symbol: str, lo: int, hi: int, limit: int | None
) -> list[tuple[int, int]]:
    """The holes in ``[lo, hi]``: inclusive ``(first, last)`` id ranges not stored."""
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
