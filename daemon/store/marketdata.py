"""Market data tables: :class:`MarketDataStore`, their async face (``store.market``).

Promise 2 of docs/ARCHITECTURE.md §1 — no market data lost or duplicated — rests on three
properties of the market data tables:

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

The code is cut by concern, one module each, as a second backend would
implement them: the values every backend shares
(:mod:`~daemon.store.marketdata_values`: summaries, snapshots, checkpoints,
gaps), the chunk loop (:mod:`~daemon.store.marketdata_chunks`), and each
backend's tables — SQLite's trades (:mod:`~daemon.store.marketdata_trades`),
book snapshots (:mod:`~daemon.store.marketdata_books`), checkpoints and gaps
(:mod:`~daemon.store.marketdata_gaps`), PostgreSQL's ``pg_marketdata_*.py``
beside them, chosen by the owner's dialect (``store.sql.market``). This
module holds the facade only: argument checks, then one owner call per
transaction. Capture programs
against it (``daemon.marketdata.interfaces.MarketStore``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from daemon.model.marketdata import Trade
from daemon.store.base import Durability, StoreOwner
from daemon.store.dialect import MarketSql
from daemon.store.maintenance import PruneSummary, prune_market_data
from daemon.store.marketdata_chunks import insert_chunks
from daemon.store.marketdata_values import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_SNAPSHOT_CHUNK_SIZE,
    BookSnapshotRecord,
    Checkpoint,
    ChunkResult,
    Gap,
    GapState,
    OnConflict,
    WriteSummary,
    check_chunk_args,
    check_range,
)

__all__ = ["MarketDataStore"]


class _Tables:
    """What every part of the facade holds: the store owner."""

    def __init__(self, store: StoreOwner[Any]) -> None:
        self._store = store
        self._sql: MarketSql = store.sql.market

    def _now_ms(self) -> int:
        return int(self._store.wall_clock() * 1000)


class _Trades(_Tables):
    """Trades: chunked idempotent writes and the queries on them."""

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
        check_chunk_args(chunk_size, on_conflict)
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

        def job(chunk: Sequence[Trade], advance: bool) -> Callable[[Any], ChunkResult]:
            return partial(
                self._sql.write_trades,
                trades=chunk,
                on_conflict=on_conflict,
                checkpoint=checkpoint if advance else None,
                wall_clock=wall_clock,
            )

        return await insert_chunks(
            self._store,
            items,
            chunk_size=chunk_size,
            table="trades",
            action="inserting trades",
            job=job,
        )

    async def last_trade_id(self, venue: str, symbol: str) -> int | None:
        """The highest stored trade id of a symbol (``None`` when none)."""
        return await self._store.read(
            partial(self._sql.last_trade_id, venue=venue, symbol=symbol),
            action="reading the last trade id",
        )

    async def count_trades(
        self, venue: str, symbol: str, from_id: int | None = None, to_id: int | None = None
    ) -> int:
        """How many trades of a symbol are stored (within ``[from_id, to_id]`` when given)."""
        return await self._store.read(
            partial(
                self._sql.count_trades, venue=venue, symbol=symbol, from_id=from_id, to_id=to_id
            ),
            action="counting trades",
        )

    async def trade_ids(self, venue: str, symbol: str, from_id: int, to_id: int) -> list[int]:
        """The stored trade ids in ``[from_id, to_id]``, ascending."""
        check_range(from_id, to_id)
        return await self._store.read(
            partial(self._sql.trade_ids, venue=venue, symbol=symbol, from_id=from_id, to_id=to_id),
            action="reading trade ids",
        )

    async def missing_trade_ranges(
        self, venue: str, symbol: str, from_id: int, to_id: int, *, limit: int | None = None
    ) -> list[tuple[int, int]]:
        """The holes in ``[from_id, to_id]``: inclusive ``(first, last)`` id ranges not stored.

        Computed inside SQLite from consecutive stored ids (one index range
        scan), so a large range costs no Python per stored row. ``limit``
        returns only the first holes.
        """
        check_range(from_id, to_id)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        return await self._store.read(
            partial(
                self._sql.missing_ranges,
                venue=venue,
                symbol=symbol,
                lo=from_id,
                hi=to_id,
                limit=limit,
            ),
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
        return await self._store.read(
            partial(
                self._sql.read_trades,
                venue=venue,
                symbol=symbol,
                from_id=from_id,
                to_id=to_id,
                limit=limit,
            ),
            action="reading trades",
        )


class _Books(_Tables):
    """Order book snapshots with their levels."""

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
        check_chunk_args(chunk_size, on_conflict)
        wall_clock = self._store.wall_clock

        def job(chunk: Sequence[BookSnapshotRecord], advance: bool) -> Callable[[Any], ChunkResult]:
            return partial(
                self._sql.write_snapshots,
                snapshots=chunk,
                on_conflict=on_conflict,
                wall_clock=wall_clock,
            )

        return await insert_chunks(
            self._store,
            list(snapshots),
            chunk_size=chunk_size,
            table="book_snapshots",
            action="inserting book snapshots",
            job=job,
        )

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
                self._sql.read_snapshots,
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
        return await self._store.read(self._sql.count_levels, action="counting book levels")


class _Gaps(_Tables):
    """Ingest checkpoints (where capture resumes) and recorded gaps."""

    async def checkpoint(self, venue: str, symbol: str, stream: str) -> Checkpoint | None:
        """Where capture of ``(venue, symbol, stream)`` resumes, or ``None``."""
        return await self._store.read(
            partial(self._sql.read_checkpoint, key=(venue, symbol, stream)),
            action="reading a checkpoint",
        )

    async def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, ordered by venue, symbol, stream."""
        return await self._store.read(self._sql.read_checkpoints, action="reading checkpoints")

    async def advance_checkpoint(
        self, venue: str, symbol: str, stream: str, last_trade_id: int
    ) -> Checkpoint:
        """Move a checkpoint forward to ``last_trade_id`` (never backwards); return it.

        For data that is already stored (e.g. after a gap was recorded as
        unrecoverable). Trades written by :meth:`insert_trades` should advance
        it through its ``checkpoint`` argument instead, in the same transaction.
        """
        wall_clock = self._store.wall_clock
        move = self._sql.move_checkpoint

        def fn(conn: Any) -> Checkpoint:
            now_ms = int(wall_clock() * 1000)
            return move(conn, (venue, symbol, stream), last_trade_id, now_ms)

        return await self._store.write(
            fn, durability=Durability.MARKET, action="advancing a checkpoint"
        )

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
        check_range(from_id, to_id)
        at_ms = detected_at_ms if detected_at_ms is not None else self._now_ms()
        return await self._store.write(
            partial(
                self._sql.record_gap,
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
        check_range(from_id, to_id)
        if state is GapState.OPEN:
            raise ValueError("use record_gap for an open gap")
        return await self._store.write(
            partial(
                self._sql.record_resolved_gap,
                key=(venue, symbol, stream, from_id, to_id),
                state=state,
                reason=reason,
                resolution=resolution,
                at_ms=at_ms if at_ms is not None else self._now_ms(),
                path=str(self._store.path),
            ),
            durability=Durability.MARKET,
            action="recording a resolved gap",
        )

    async def resolve_gap(
        self,
        gap_id: int,
        state: GapState,
        *,
        resolution: str | None = None,
        resolved_at_ms: int | None = None,
    ) -> Gap | None:
        """Move a gap to ``state``; ``None`` if no such gap.

        Allowed moves: :data:`~daemon.store.marketdata_values.GAP_TRANSITIONS`.

        Resolving to the state it already has returns it unchanged.

        Raises:
            GapTransitionError: the transition is not allowed.
        """
        if state is GapState.OPEN:
            raise ValueError("a gap cannot be resolved to OPEN")
        at_ms = resolved_at_ms if resolved_at_ms is not None else self._now_ms()
        return await self._store.write(
            partial(
                self._sql.resolve_gap,
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
        return await self._store.read(
            partial(self._sql.list_gaps, venue=venue, symbol=symbol, stream=stream, state=state),
            action="listing gaps",
        )

    async def gap_counts(self) -> dict[GapState, int]:
        """Gaps per state (every state present), for metrics."""

        return await self._store.read(self._sql.count_gaps, action="counting gaps")


class MarketDataStore(_Trades, _Books, _Gaps):
    """Market data access through a store owner (:class:`~daemon.store.base.StoreOwner`);
    every owner builds one as ``store.market``.

    Every method is one or more calls on the store's lane; bulk writes are one
    call per chunk, so other store work (dead letters, orders) interleaves.
    """

    async def prune_market_data(
        self, older_than_ms: int, *, batch_rows: int = 5000
    ) -> PruneSummary:
        """Delete trades and book snapshots older than ``older_than_ms``, in small
        transactions; see :func:`~daemon.store.maintenance.prune_market_data`."""
        return await prune_market_data(self._store, older_than_ms, batch_rows=batch_rows)
