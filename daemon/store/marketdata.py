"""Market data tables: trades, book snapshots and levels, ingest checkpoints, gaps.

Promise 2 of docs/ARCHITECTURE.md §1 — no market data lost or duplicated — rests on three
properties of this module:

* **Idempotent writes on natural keys.** Trades are keyed by
  ``(venue, symbol, trade_id)``, snapshots by
  ``(venue, symbol, server_time_ms, sequence_id)`` (their levels by snapshot,
  side and index). ``INSERT … ON CONFLICT DO NOTHING`` makes a replay after a
  reconnect or a restart a no-op; ``on_conflict="update"`` replaces rows whose
  values differ (corrections), and the summary says which happened.
* **Chunks are transactions.** :meth:`MarketDataStore.insert_trades` writes
  ``chunk_size`` rows per transaction, one lane call per chunk (other store
  work interleaves between chunks). A chunk the schema refuses
  (:class:`~daemon.store.errors.StoreDataError`) fails alone and the next
  chunks are still written; an environment failure (disk full, read-only,
  locked, corrupt) stops the call, since every further chunk would fail the
  same way. Either way the summary lists the failed chunks.
* **The resume point moves with the data.** With ``checkpoint=(venue, symbol,
  stream)`` each chunk's transaction also advances that ingest checkpoint to
  the chunk's highest trade id — atomically, so after ``kill -9`` or a power
  cut the checkpoint never points past data that is not stored. Checkpoints
  only move forward, and stop moving at the first failed chunk of a call (a
  hole must not be skipped over).

Prices and quantities are stored as ``TEXT`` exactly as :class:`~decimal.Decimal`
prints them (the venue's spelling, e.g. ``"0.00100000"``), and read back
exactly.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, Literal, TypeVar

import attrs

from daemon.model.marketdata import DepthSnapshot, Level, Trade
from daemon.store.base import Durability, StoreOwner
from daemon.store.errors import (
    GapTransitionError,
    StoreClosedError,
    StoreDataError,
    StoreError,
)
from daemon.store.maintenance import PruneSummary, prune_market_data

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_SNAPSHOT_CHUNK_SIZE",
    "GAP_TRANSITIONS",
    "BookSnapshotRecord",
    "Checkpoint",
    "ChunkFailure",
    "Gap",
    "GapState",
    "MarketDataStore",
    "OnConflict",
    "WriteSummary",
]

log = logging.getLogger("tradingd.store.marketdata")

T = TypeVar("T")
X = TypeVar("X")

#: Trades per transaction.
DEFAULT_CHUNK_SIZE = 1000
#: Book snapshots per transaction (each carries its levels).
DEFAULT_SNAPSHOT_CHUNK_SIZE = 100

#: What to do when a row's natural key is already stored.
OnConflict = Literal["nothing", "update"]
_ON_CONFLICT = ("nothing", "update")


# ----------------------------------------------------------------------------- values


@attrs.frozen
class ChunkFailure:
    """One chunk of a bulk write that was not stored.

    Attributes:
        index: The chunk's number in the call (0-based).
        start: Position of its first row in the input.
        rows: How many rows it held.
        error: Why (typed; its ``__cause__`` is the library error).
        attempted: False when it was not tried because an earlier chunk hit an
            environment failure (disk full, read-only, locked, corrupt).
    """

    index: int
    start: int
    rows: int
    error: StoreError
    attempted: bool = True


@attrs.frozen
class WriteSummary:
    """What a bulk write did. ``attempted == inserted + updated + skipped + failed``.

    Attributes:
        attempted: Rows handed to the call.
        inserted: Rows that were new.
        skipped: Rows already stored (and, with ``"update"``, identical).
        updated: Rows stored with other values and replaced (``"update"`` only).
        failed: Rows in failed chunks (not stored by this call).
        chunks: Chunks the input was cut into.
        failed_chunks: The failed ones, in order.
        checkpoint: The checkpoint's stored ``last_trade_id`` after the call,
            when a checkpoint was advanced by it.
    """

    attempted: int = 0
    inserted: int = 0
    skipped: int = 0
    updated: int = 0
    failed: int = 0
    chunks: int = 0
    failed_chunks: tuple[ChunkFailure, ...] = ()
    checkpoint: int | None = None

    @property
    def ok(self) -> bool:
        """True when every chunk was stored."""
        return not self.failed_chunks

    def raise_for_failures(self) -> None:
        """Raise the first failed chunk's error (typed), if any."""
        if self.failed_chunks:
            raise self.failed_chunks[0].error

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for logs and ``/status``."""
        return {
            "attempted": self.attempted,
            "inserted": self.inserted,
            "skipped": self.skipped,
            "updated": self.updated,
            "failed": self.failed,
            "chunks": self.chunks,
            "failed_chunks": [
                {
                    "index": f.index,
                    "start": f.start,
                    "rows": f.rows,
                    "attempted": f.attempted,
                    "error": f"{type(f.error).__name__}: {f.error}",
                }
                for f in self.failed_chunks
            ],
            "checkpoint": self.checkpoint,
        }


def _check_levels(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(level, tuple)
        and len(level) == 2
        and all(isinstance(x, Decimal) and x.is_finite() for x in level)
        for level in value
    ):
        raise TypeError(f"{attribute.name} must be a tuple of (Decimal, Decimal) levels")


@attrs.frozen
class BookSnapshotRecord:
    """A stored order book snapshot: top levels of one symbol at one moment.

    Attributes:
        venue: Venue name.
        symbol: The venue's symbol.
        server_time_ms: When the book was in this state (venue clock, epoch ms).
        sequence_id: The book's update id at that moment (``lastUpdateId``);
            with ``server_time_ms`` it identifies the snapshot.
        bids: Best first.
        asks: Best first.
    """

    venue: str
    symbol: str
    server_time_ms: int
    sequence_id: int
    bids: tuple[Level, ...] = attrs.field(validator=_check_levels)
    asks: tuple[Level, ...] = attrs.field(validator=_check_levels)

    @classmethod
    def from_depth(
        cls, snapshot: DepthSnapshot, *, server_time_ms: int, depth: int | None = None
    ) -> BookSnapshotRecord:
        """From a REST depth snapshot (or a local book rendered as one), top ``depth`` levels."""
        if depth is not None and depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        return cls(
            venue=snapshot.venue,
            symbol=snapshot.symbol,
            server_time_ms=server_time_ms,
            sequence_id=snapshot.last_update_id,
            bids=snapshot.bids[:depth] if depth is not None else snapshot.bids,
            asks=snapshot.asks[:depth] if depth is not None else snapshot.asks,
        )


@attrs.frozen
class Checkpoint:
    """Where capture of one (venue, symbol, stream) resumes: after ``last_trade_id``."""

    venue: str
    symbol: str
    stream: str
    last_trade_id: int
    updated_at_ms: int


class GapState(enum.Enum):
    """The life of a recorded gap; see :data:`GAP_TRANSITIONS`."""

    OPEN = "open"  #: detected, not (yet) backfilled
    BACKFILLED = "backfilled"  #: the missing trades were fetched and stored
    UNRECOVERABLE = "unrecoverable"  #: the venue no longer has them: a known hole


#: Allowed state changes of a gap. Resolving to the current state is a no-op.
GAP_TRANSITIONS: dict[GapState, frozenset[GapState]] = {
    GapState.OPEN: frozenset({GapState.BACKFILLED, GapState.UNRECOVERABLE}),
    GapState.BACKFILLED: frozenset(),
    GapState.UNRECOVERABLE: frozenset(),
}


@attrs.frozen
class Gap:
    """A range of trade ids ``[from_id, to_id]`` (inclusive) found missing.

    Attributes:
        gap_id: Store-assigned id.
        reason: Why it was detected ("reconnect", "restart", "sequence jump").
        resolution: What resolved it ("backfilled via REST", "history expired").
    """

    gap_id: int
    venue: str
    symbol: str
    stream: str
    from_id: int
    to_id: int
    detected_at_ms: int
    state: GapState
    reason: str
    resolution: str | None = None
    resolved_at_ms: int | None = None


@attrs.frozen
class _ChunkResult:
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    checkpoint: int | None = None


# ----------------------------------------------------------------------------- SQL: trades

_TRADE_COLUMNS = (
    "venue, symbol, trade_id, price, quantity, quote_quantity, buyer_is_maker, "
    "trade_time_ms, event_time_ms, ingested_at_ms"
)
_INSERT_TRADE = (
    f"INSERT INTO trades ({_TRADE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (venue, symbol, trade_id) DO NOTHING"
)
_SELECT_TRADE_VALUES = (
    "SELECT price, quantity, quote_quantity, buyer_is_maker, trade_time_ms, event_time_ms "
    "FROM trades WHERE venue = ? AND symbol = ? AND trade_id = ?"
)
_UPDATE_TRADE = (
    "UPDATE trades SET price = ?, quantity = ?, quote_quantity = ?, buyer_is_maker = ?, "
    "trade_time_ms = ?, event_time_ms = ?, ingested_at_ms = ? "
    "WHERE venue = ? AND symbol = ? AND trade_id = ?"
)
# One statement (a chunk's hot path): the row is rewritten either way, but
# last_trade_id only grows, and updated_at_ms only changes when it does.
_ADVANCE_CHECKPOINT = (
    "INSERT INTO ingest_checkpoints (venue, symbol, stream, last_trade_id, updated_at_ms) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (venue, symbol, stream) DO UPDATE SET "
    "updated_at_ms = CASE WHEN excluded.last_trade_id > last_trade_id "
    "THEN excluded.updated_at_ms ELSE updated_at_ms END, "
    "last_trade_id = max(last_trade_id, excluded.last_trade_id) "
    "RETURNING last_trade_id"
)
_SELECT_CHECKPOINT = (
    "SELECT venue, symbol, stream, last_trade_id, updated_at_ms FROM ingest_checkpoints "
    "WHERE venue = ? AND symbol = ? AND stream = ?"
)
_RANGE = "venue = ? AND symbol = ? AND trade_id BETWEEN ? AND ?"
_HOLES = (
    "SELECT prev_id + 1, trade_id - 1 FROM ("
    " SELECT trade_id, lag(trade_id) OVER (ORDER BY trade_id) AS prev_id"
    f" FROM trades WHERE {_RANGE}"
    ") WHERE trade_id - prev_id > 1 ORDER BY trade_id"
)
_MAX_ID = 2**63 - 1

TradeRow = tuple[str, str, int, str, str, str, int, int, int | None, int]


def _trade_from_row(row: Sequence[Any]) -> Trade:
    return Trade(
        venue=row[0],
        symbol=row[1],
        trade_id=row[2],
        price=Decimal(row[3]),
        quantity=Decimal(row[4]),
        quote_quantity=Decimal(row[5]),
        buyer_is_maker=bool(row[6]),
        trade_time_ms=row[7],
        event_time_ms=row[8],
    )


def _advance_checkpoint(
    conn: sqlite3.Connection, key: tuple[str, str, str], last_id: int, now_ms: int
) -> int:
    return int(conn.execute(_ADVANCE_CHECKPOINT, (*key, last_id, now_ms)).fetchone()[0])


def _write_trades(
    conn: sqlite3.Connection,
    trades: Sequence[Trade],
    *,
    on_conflict: OnConflict,
    checkpoint: tuple[str, str, str] | None,
    wall_clock: Callable[[], float],
) -> _ChunkResult:
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
        stored = _advance_checkpoint(conn, checkpoint, last_id, now_ms)
    return _ChunkResult(inserted, updated, skipped, stored)


def _missing_ranges(
    conn: sqlite3.Connection, *, venue: str, symbol: str, lo: int, hi: int, limit: int | None
) -> list[tuple[int, int]]:
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


# ----------------------------------------------------------------------------- SQL: books

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


def _write_snapshots(
    conn: sqlite3.Connection,
    snapshots: Sequence[BookSnapshotRecord],
    *,
    on_conflict: OnConflict,
    wall_clock: Callable[[], float],
) -> _ChunkResult:
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
    return _ChunkResult(inserted, updated, skipped)


def _read_snapshots(
    conn: sqlite3.Connection,
    *,
    venue: str,
    symbol: str,
    from_ms: int | None,
    to_ms: int | None,
    limit: int | None,
    newest_first: bool,
) -> list[BookSnapshotRecord]:
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(
        "SELECT snapshot_id, server_time_ms, sequence_id FROM book_snapshots "
        "WHERE venue = ? AND symbol = ? AND server_time_ms BETWEEN ? AND ? "
        f"ORDER BY server_time_ms {order}, sequence_id {order} LIMIT ?",
        (
            venue,
            symbol,
            -_MAX_ID if from_ms is None else from_ms,
            _MAX_ID if to_ms is None else to_ms,
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


# ----------------------------------------------------------------------------- SQL: gaps

_GAP_COLUMNS = (
    "gap_id, venue, symbol, stream, from_id, to_id, detected_at_ms, state, reason, "
    "resolution, resolved_at_ms"
)


def _gap_from_row(row: Sequence[Any]) -> Gap:
    return Gap(
        gap_id=row[0],
        venue=row[1],
        symbol=row[2],
        stream=row[3],
        from_id=row[4],
        to_id=row[5],
        detected_at_ms=row[6],
        state=GapState(row[7]),
        reason=row[8],
        resolution=row[9],
        resolved_at_ms=row[10],
    )


def _record_gap(
    conn: sqlite3.Connection,
    *,
    key: tuple[str, str, str, int, int],
    detected_at_ms: int,
    reason: str,
) -> Gap:
    conn.execute(
        "INSERT INTO gaps (venue, symbol, stream, from_id, to_id, detected_at_ms, state, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, 'open', ?) "
        "ON CONFLICT (venue, symbol, stream, from_id, to_id) DO NOTHING",
        (*key, detected_at_ms, reason),
    )
    row = conn.execute(
        f"SELECT {_GAP_COLUMNS} FROM gaps WHERE venue = ? AND symbol = ? AND stream = ? "
        "AND from_id = ? AND to_id = ?",
        key,
    ).fetchone()
    return _gap_from_row(row)


def _resolve_gap(
    conn: sqlite3.Connection,
    *,
    gap_id: int,
    state: GapState,
    resolution: str | None,
    resolved_at_ms: int,
    path: str,
) -> Gap | None:
    row = conn.execute(f"SELECT {_GAP_COLUMNS} FROM gaps WHERE gap_id = ?", (gap_id,)).fetchone()
    if row is None:
        return None
    gap = _gap_from_row(row)
    if gap.state is state:
        return gap
    if state not in GAP_TRANSITIONS[gap.state]:
        raise GapTransitionError(
            f"store {path}: gap {gap_id} cannot go from {gap.state.value} to {state.value}",
            path=path,
        )
    conn.execute(
        "UPDATE gaps SET state = ?, resolution = ?, resolved_at_ms = ? WHERE gap_id = ?",
        (state.value, resolution, resolved_at_ms, gap_id),
    )
    return attrs.evolve(gap, state=state, resolution=resolution, resolved_at_ms=resolved_at_ms)


# ----------------------------------------------------------------------------- the shell


def _check_chunk_args(chunk_size: int, on_conflict: str) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if on_conflict not in _ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {_ON_CONFLICT}, got {on_conflict!r}")


def _check_range(from_id: int, to_id: int) -> None:
    if from_id > to_id:
        raise ValueError(f"from_id {from_id} is after to_id {to_id}")


class MarketDataStore:
    """Market data access through a store owner (:class:`~daemon.store.base.StoreOwner`);
    the SQLite owner builds one as ``store.market``.

    Every method is one or more calls on the store's lane; bulk writes are one
    call per chunk, so other store work (dead letters, orders) interleaves.
    """

    def __init__(self, store: StoreOwner[sqlite3.Connection]) -> None:
        self._store = store

    # -------------------------------------------------------------- bulk writes

    async def insert_trades(
        self,
        trades: Sequence[Trade],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_conflict: OnConflict = "nothing",
        checkpoint: tuple[str, str, str] | None = None,
    ) -> WriteSummary:
        """Store trades idempotently, ``chunk_size`` per transaction.

        Args:
            trades: In any order, duplicates allowed.
            chunk_size: Rows per transaction.
            on_conflict: ``"nothing"`` keeps the stored row; ``"update"``
                replaces it when any value differs (counted as ``updated``).
            checkpoint: ``(venue, symbol, stream)``: advance that ingest
                checkpoint to each committed chunk's highest trade id, in the
                chunk's own transaction. All trades must then be of that venue
                and symbol. It never moves backwards, and not past a failed chunk.

        Returns:
            The summary; failed chunks are listed in it, not raised (use
            :meth:`WriteSummary.raise_for_failures`). Chunks committed before a
            cancellation stay committed.

        Raises:
            StoreClosedError: the store is closed.
            ValueError: bad arguments, or a trade of another symbol with ``checkpoint``.
        """
        _check_chunk_args(chunk_size, on_conflict)
        items = list(trades)
        if checkpoint is not None:
            venue, symbol, _ = checkpoint
            for trade in items:
                if trade.venue != venue or trade.symbol != symbol:
                    raise ValueError(
                        f"checkpoint {checkpoint} given but trade {trade.trade_id} is "
                        f"{trade.venue}/{trade.symbol}"
                    )
        wall_clock = self._store.wall_clock

        def job(
            chunk: Sequence[Trade], advance: bool
        ) -> Callable[[sqlite3.Connection], _ChunkResult]:
            return partial(
                _write_trades,
                trades=chunk,
                on_conflict=on_conflict,
                checkpoint=checkpoint if advance else None,
                wall_clock=wall_clock,
            )

        return await self._insert_chunks(
            items, chunk_size=chunk_size, table="trades", action="inserting trades", job=job
        )

    async def insert_book_snapshots(
        self,
        snapshots: Sequence[BookSnapshotRecord],
        *,
        chunk_size: int = DEFAULT_SNAPSHOT_CHUNK_SIZE,
        on_conflict: OnConflict = "nothing",
    ) -> WriteSummary:
        """Store book snapshots with their levels, ``chunk_size`` snapshots per transaction.

        A snapshot and its levels are written together or not at all; a
        snapshot already stored is skipped with its levels untouched
        (``"nothing"``) or, when its levels differ, has them replaced
        (``"update"``). Failures are reported like :meth:`insert_trades`.
        """
        _check_chunk_args(chunk_size, on_conflict)
        wall_clock = self._store.wall_clock

        def job(
            chunk: Sequence[BookSnapshotRecord], advance: bool
        ) -> Callable[[sqlite3.Connection], _ChunkResult]:
            return partial(
                _write_snapshots, snapshots=chunk, on_conflict=on_conflict, wall_clock=wall_clock
            )

        return await self._insert_chunks(
            list(snapshots),
            chunk_size=chunk_size,
            table="book_snapshots",
            action="inserting book snapshots",
            job=job,
        )

    async def _insert_chunks(
        self,
        items: list[X],
        *,
        chunk_size: int,
        table: str,
        action: str,
        job: Callable[[Sequence[X], bool], Callable[[sqlite3.Connection], _ChunkResult]],
    ) -> WriteSummary:
        store = self._store
        if store.closed:
            raise StoreClosedError(f"store {store.path}: closed", path=str(store.path))
        stats = store.stats.table(table)
        stats.calls += 1
        inserted = updated = skipped = failed = 0
        failures: list[ChunkFailure] = []
        stop: StoreError | None = None
        advance = True
        checkpoint: int | None = None
        starts = range(0, len(items), chunk_size)
        for index, start in enumerate(starts):
            chunk = items[start : start + chunk_size]
            stats.rows_attempted += len(chunk)
            if stop is not None:
                failures.append(ChunkFailure(index, start, len(chunk), stop, attempted=False))
                failed += len(chunk)
                stats.rows_failed += len(chunk)
                stats.chunks_failed += 1
                continue
            try:
                result = await store.write(
                    job(chunk, advance), durability=Durability.MARKET, action=action
                )
            except StoreError as exc:
                failures.append(ChunkFailure(index, start, len(chunk), exc))
                failed += len(chunk)
                stats.rows_failed += len(chunk)
                stats.chunks_failed += 1
                advance = False  # never move a resume point over a hole
                if not isinstance(exc, StoreDataError):
                    stop = exc  # the next chunks would hit the same wall
                continue
            inserted += result.inserted
            updated += result.updated
            skipped += result.skipped
            stats.chunks_committed += 1
            stats.rows_inserted += result.inserted
            stats.rows_updated += result.updated
            stats.rows_skipped += result.skipped
            if result.checkpoint is not None:
                checkpoint = result.checkpoint
        summary = WriteSummary(
            attempted=len(items),
            inserted=inserted,
            skipped=skipped,
            updated=updated,
            failed=failed,
            chunks=len(starts),
            failed_chunks=tuple(failures),
            checkpoint=checkpoint,
        )
        if failures:
            first = failures[0]
            log.warning(
                "%s: %d of %d chunk(s) failed (%d rows; chunks %s): %s",
                action,
                len(failures),
                summary.chunks,
                failed,
                [f.index for f in failures],
                first.error,
            )
        else:
            log.debug(
                "%s: attempted %d, inserted %d, updated %d, skipped %d in %d chunk(s)",
                action,
                summary.attempted,
                inserted,
                updated,
                skipped,
                summary.chunks,
            )
        return summary

    # -------------------------------------------------------------- trades: queries

    async def last_trade_id(self, venue: str, symbol: str) -> int | None:
        """The highest stored trade id of a symbol (``None`` when none)."""

        def fn(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT max(trade_id) FROM trades WHERE venue = ? AND symbol = ?", (venue, symbol)
            ).fetchone()
            return None if row[0] is None else int(row[0])

        return await self._store.read(fn, action="reading the last trade id")

    async def count_trades(
        self, venue: str, symbol: str, from_id: int | None = None, to_id: int | None = None
    ) -> int:
        """How many trades of a symbol are stored (within ``[from_id, to_id]`` when given)."""
        args = (
            venue,
            symbol,
            0 if from_id is None else from_id,
            _MAX_ID if to_id is None else to_id,
        )

        def fn(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(f"SELECT count(*) FROM trades WHERE {_RANGE}", args).fetchone()[0]
            )

        return await self._store.read(fn, action="counting trades")

    async def trade_ids(self, venue: str, symbol: str, from_id: int, to_id: int) -> list[int]:
        """The stored trade ids in ``[from_id, to_id]``, ascending."""
        _check_range(from_id, to_id)

        def fn(conn: sqlite3.Connection) -> list[int]:
            return [
                int(row[0])
                for row in conn.execute(
                    f"SELECT trade_id FROM trades WHERE {_RANGE} ORDER BY trade_id",
                    (venue, symbol, from_id, to_id),
                )
            ]

        return await self._store.read(fn, action="reading trade ids")

    async def missing_trade_ranges(
        self, venue: str, symbol: str, from_id: int, to_id: int, *, limit: int | None = None
    ) -> list[tuple[int, int]]:
        """The holes in ``[from_id, to_id]``: inclusive ``(first, last)`` id ranges not stored.

        Computed inside SQLite from consecutive stored ids (one index range
        scan), so a large range costs no Python per stored row. ``limit``
        returns only the first holes.
        """
        _check_range(from_id, to_id)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        return await self._store.read(
            partial(_missing_ranges, venue=venue, symbol=symbol, lo=from_id, hi=to_id, limit=limit),
            action="finding missing trades",
        )

    async def trades(
        self,
        venue: str,
        symbol: str,
        from_id: int | None = None,
        to_id: int | None = None,
        *,
        limit: int | None = None,
    ) -> list[Trade]:
        """Stored trades by ascending id (for tests, the CLI and backfill checks)."""
        args = (
            venue,
            symbol,
            0 if from_id is None else from_id,
            _MAX_ID if to_id is None else to_id,
            -1 if limit is None else limit,
        )

        def fn(conn: sqlite3.Connection) -> list[Trade]:
            return [
                _trade_from_row(row)
                for row in conn.execute(
                    f"SELECT {_TRADE_COLUMNS} FROM trades WHERE {_RANGE} ORDER BY trade_id LIMIT ?",
                    args,
                )
            ]

        return await self._store.read(fn, action="reading trades")

    # -------------------------------------------------------------- books: queries

    async def book_snapshots(
        self,
        venue: str,
        symbol: str,
        from_ms: int | None = None,
        to_ms: int | None = None,
        *,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[BookSnapshotRecord]:
        """Stored snapshots of a symbol with ``from_ms <= server_time_ms <= to_ms``."""
        return await self._store.read(
            partial(
                _read_snapshots,
                venue=venue,
                symbol=symbol,
                from_ms=from_ms,
                to_ms=to_ms,
                limit=limit,
                newest_first=newest_first,
            ),
            action="reading book snapshots",
        )

    async def count_book_levels(self) -> int:
        """How many level rows are stored (all snapshots)."""

        def fn(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM book_levels").fetchone()[0])

        return await self._store.read(fn, action="counting book levels")

    # -------------------------------------------------------------- checkpoints

    async def checkpoint(self, venue: str, symbol: str, stream: str) -> Checkpoint | None:
        """Where capture of ``(venue, symbol, stream)`` resumes, or ``None``."""

        def fn(conn: sqlite3.Connection) -> Checkpoint | None:
            row = conn.execute(_SELECT_CHECKPOINT, (venue, symbol, stream)).fetchone()
            return None if row is None else Checkpoint(*row)

        return await self._store.read(fn, action="reading a checkpoint")

    async def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, ordered by venue, symbol, stream."""

        def fn(conn: sqlite3.Connection) -> list[Checkpoint]:
            return [
                Checkpoint(*row)
                for row in conn.execute(
                    "SELECT venue, symbol, stream, last_trade_id, updated_at_ms "
                    "FROM ingest_checkpoints ORDER BY venue, symbol, stream"
                )
            ]

        return await self._store.read(fn, action="reading checkpoints")

    async def advance_checkpoint(
        self, venue: str, symbol: str, stream: str, last_trade_id: int
    ) -> Checkpoint:
        """Move a checkpoint forward to ``last_trade_id`` (never backwards); return it.

        For data that is already stored (e.g. after a gap was recorded as
        unrecoverable). Trades written by :meth:`insert_trades` should advance
        it through its ``checkpoint`` argument instead, in the same transaction.
        """
        wall_clock = self._store.wall_clock

        def fn(conn: sqlite3.Connection) -> Checkpoint:
            now_ms = int(wall_clock() * 1000)
            _advance_checkpoint(conn, (venue, symbol, stream), last_trade_id, now_ms)
            return Checkpoint(*conn.execute(_SELECT_CHECKPOINT, (venue, symbol, stream)).fetchone())

        return await self._store.write(
            fn, durability=Durability.MARKET, action="advancing a checkpoint"
        )

    # -------------------------------------------------------------- gaps

    async def record_gap(
        self,
        venue: str,
        symbol: str,
        stream: str,
        from_id: int,
        to_id: int,
        *,
        reason: str = "",
        detected_at_ms: int | None = None,
    ) -> Gap:
        """Record the missing ids ``[from_id, to_id]`` as an open gap; idempotent.

        Recording the same range again returns the stored gap unchanged (a
        feed that re-detects a gap after a restart does not duplicate it).
        """
        _check_range(from_id, to_id)
        at_ms = detected_at_ms if detected_at_ms is not None else self._now_ms()
        return await self._store.write(
            partial(
                _record_gap,
                key=(venue, symbol, stream, from_id, to_id),
                detected_at_ms=at_ms,
                reason=reason,
            ),
            durability=Durability.MARKET,
            action="recording a gap",
        )

    async def record_resolved_gap(
        self,
        venue: str,
        symbol: str,
        stream: str,
        from_id: int,
        to_id: int,
        *,
        state: GapState,
        reason: str = "",
        resolution: str | None = None,
        at_ms: int | None = None,
    ) -> Gap:
        """Record a gap and move it to ``state`` in ONE transaction.

        For a gap whose outcome is already known when it is written (backfilled,
        or unrecoverable): a crash can then never leave an OPEN row for a range
        that was in fact filled. Idempotent like :meth:`record_gap`.

        Raises:
            GapTransitionError: the stored gap cannot move to ``state``.
        """
        _check_range(from_id, to_id)
        if state is GapState.OPEN:
            raise ValueError("use record_gap for an open gap")
        when = at_ms if at_ms is not None else self._now_ms()
        path = str(self._store.path)

        def write(conn: sqlite3.Connection) -> Gap:
            gap = _record_gap(
                conn,
                key=(venue, symbol, stream, from_id, to_id),
                detected_at_ms=when,
                reason=reason,
            )
            resolved = _resolve_gap(
                conn,
                gap_id=gap.gap_id,
                state=state,
                resolution=resolution,
                resolved_at_ms=when,
                path=path,
            )
            assert resolved is not None
            return resolved

        return await self._store.write(
            write, durability=Durability.MARKET, action="recording a resolved gap"
        )

    async def resolve_gap(
        self,
        gap_id: int,
        state: GapState,
        *,
        resolution: str | None = None,
        resolved_at_ms: int | None = None,
    ) -> Gap | None:
        """Move a gap to ``state`` (see :data:`GAP_TRANSITIONS`); ``None`` if no such gap.

        Resolving to the state it already has returns it unchanged.

        Raises:
            GapTransitionError: the transition is not allowed.
        """
        if state is GapState.OPEN:
            raise ValueError("a gap cannot be resolved to OPEN")
        at_ms = resolved_at_ms if resolved_at_ms is not None else self._now_ms()
        return await self._store.write(
            partial(
                _resolve_gap,
                gap_id=gap_id,
                state=state,
                resolution=resolution,
                resolved_at_ms=at_ms,
                path=str(self._store.path),
            ),
            durability=Durability.MARKET,
            action="resolving a gap",
        )

    async def gaps(
        self,
        *,
        venue: str | None = None,
        symbol: str | None = None,
        stream: str | None = None,
        state: GapState | None = None,
    ) -> list[Gap]:
        """Recorded gaps matching every given filter, by ascending id."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("venue", venue), ("symbol", symbol), ("stream", stream)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def fn(conn: sqlite3.Connection) -> list[Gap]:
            sql = f"SELECT {_GAP_COLUMNS} FROM gaps {where} ORDER BY gap_id"
            return [_gap_from_row(row) for row in conn.execute(sql, args)]

        return await self._store.read(fn, action="listing gaps")

    async def gap_counts(self) -> dict[GapState, int]:
        """Gaps per state (every state present), for metrics."""

        def fn(conn: sqlite3.Connection) -> dict[GapState, int]:
            counts = dict.fromkeys(GapState, 0)
            for state, count in conn.execute("SELECT state, count(*) FROM gaps GROUP BY state"):
                counts[GapState(state)] = int(count)
            return counts

        return await self._store.read(fn, action="counting gaps")

    # -------------------------------------------------------------- retention

    async def prune_market_data(
        self, older_than_ms: int, *, batch_rows: int = 5000
    ) -> PruneSummary:
        """Delete trades and book snapshots older than ``older_than_ms``, in small
        transactions; see :func:`~daemon.store.maintenance.prune_market_data`."""
        return await prune_market_data(self._store, older_than_ms, batch_rows=batch_rows)

    def _now_ms(self) -> int:
        return int(self._store.wall_clock() * 1000)
