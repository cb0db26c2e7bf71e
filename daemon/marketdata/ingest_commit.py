"""What the ingest writer commits, and one commit of it: a symbol's trades or a gap record.

* :class:`GapRecord` and :data:`Item`: what travels through the trades queue
  (trades, and the outcomes of trade-id gaps behind the trades they concern);
  :data:`CHECKPOINT_STREAM` names the resume point the trades advance.
* :class:`IngestCommitter`: one store write of the
  :class:`~daemon.marketdata.ingest.IngestWriter` — a symbol's trades in
  chunks with their checkpoint, or a gap record — with the rows the schema
  refuses dead-lettered, and the counters and consumer lag of what committed.

The writer decides what to commit and when, and retries (see
:mod:`daemon.marketdata.ingest`); a write here is attempted once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from daemon.config import MarketDataConfig
from daemon.marketdata.interfaces import MarketStore
from daemon.marketdata.stats import SymbolStats, WriterStats
from daemon.model.marketdata import Trade
from daemon.resilience import DeadLetter, DeadLetterStore
from daemon.store.errors import GapTransitionError, StoreDataError, StoreError
from daemon.store.marketdata_values import GapState, WriteSummary

__all__ = ["CHECKPOINT_STREAM", "GapRecord", "IngestCommitter", "Item"]

#: The ``stream`` part of the ingest checkpoint key ``(venue, symbol, stream)``.
CHECKPOINT_STREAM = "trades"

log = logging.getLogger("tradingd.marketdata.ingest")


@attrs.frozen
class GapRecord:
    """The outcome of a trade-id gap, to be recorded in the store's gaps table.

    The feed puts it into the trades queue *after* the trades it concerns; the
    writer records it once everything before it committed.

    Attributes:
        venue: Venue name.
        symbol: The venue's symbol.
        from_id: First missing trade id (inclusive).
        to_id: Last missing trade id (inclusive).
        state: ``BACKFILLED`` (fetched through REST and queued before this
            record) or ``UNRECOVERABLE`` (the venue no longer has them), or
            ``OPEN`` (detected, could not be filled: an operator's job).
        reason: Why it was detected (``"reconnect"``, ``"restart"``,
            ``"sequence jump"``, …).
        resolution: What resolved it, in words.
    """

    venue: str
    symbol: str
    from_id: int
    to_id: int
    state: GapState
    reason: str
    resolution: str = ""

    def __attrs_post_init__(self) -> None:
        if self.from_id > self.to_id:
            raise ValueError(f"gap from_id {self.from_id} > to_id {self.to_id}")


#: What travels through the trades queue.
Item = Trade | GapRecord


def _trade_json(trade: Trade) -> dict[str, Any]:
    return {
        "venue": trade.venue,
        "symbol": trade.symbol,
        "trade_id": trade.trade_id,
        "price": str(trade.price),
        "quantity": str(trade.quantity),
        "quote_quantity": str(trade.quote_quantity),
        "buyer_is_maker": trade.buyer_is_maker,
        "trade_time_ms": trade.trade_time_ms,
        "event_time_ms": trade.event_time_ms,
    }


class IngestCommitter:
    """One venue's store writes for the ingest writer (see the module docstring).

    Args:
        venue: Venue name (the checkpoint key's first part).
        market: The market-data tables.
        dead_letters: Where chunks the schema refuses go.
        settings: The chunk size.
        symbols: Per-symbol stats, shared with the feed.
        stats: The writer's counters.
        wall_clock_ms: Epoch ms (commit time for the lag).
    """

    def __init__(
        self,
        venue: str,
        market: MarketStore,
        dead_letters: DeadLetterStore,
        settings: MarketDataConfig,
        *,
        symbols: dict[str, SymbolStats],
        stats: WriterStats,
        wall_clock_ms: Callable[[], int],
    ) -> None:
        self.venue = venue
        self._market = market
        self._dead_letters = dead_letters
        self._settings = settings
        self._symbols = symbols
        self.stats = stats
        self._wall_clock_ms = wall_clock_ms

    async def write_trades(self, symbol: str, trades: list[Trade]) -> tuple[int, StoreError | None]:
        """Insert ``trades`` of ``symbol`` in chunks, each advancing the checkpoint.

        Chunks the schema refuses are dead-lettered and count as done.

        Returns:
            How many of ``trades``, from the first, are done (committed or
            dead-lettered), and the error that stopped the rest (a store
            error that can clear; ``None`` when all are done).
        """
        started = trio.current_time()
        summary = await self._market.insert_trades(
            trades,
            chunk_size=self._settings.chunk_size,
            checkpoint=(self.venue, symbol, CHECKPOINT_STREAM),
        )
        self.stats.last_commit_s = trio.current_time() - started
        env = [f for f in summary.failed_chunks if not isinstance(f.error, StoreDataError)]
        refused = [f for f in summary.failed_chunks if isinstance(f.error, StoreDataError)]
        cut = min(f.start for f in env) if env else len(trades)
        refused_rows: set[int] = set()
        for failure in refused:
            if failure.start >= cut:
                continue
            rows = trades[failure.start : failure.start + failure.rows]
            await self._dead_letter(symbol, rows, failure.error)
            refused_rows.update(range(failure.start, failure.start + failure.rows))
        committed = [t for i, t in enumerate(trades[:cut]) if i not in refused_rows]
        self._record_commit(symbol, summary, committed, dead_lettered=len(refused_rows))
        return cut, env[0].error if env else None

    def _record_commit(
        self, symbol: str, summary: WriteSummary, committed: Sequence[Trade], *, dead_lettered: int
    ) -> None:
        st = self.stats
        st.rows_attempted += summary.attempted
        st.rows_inserted += summary.inserted
        st.rows_skipped += summary.skipped
        st.rows_failed += summary.failed
        st.chunks_committed += summary.chunks - len(summary.failed_chunks)
        st.chunks_failed += len(summary.failed_chunks)
        st.rows_dead_lettered += dead_lettered
        log.debug(
            "ingest %s %s: attempted %d, inserted %d, skipped %d, failed %d",
            self.venue,
            symbol,
            summary.attempted,
            summary.inserted,
            summary.skipped,
            summary.failed,
        )
        stats = self._symbols.get(symbol)
        if stats is None or not committed:
            return
        now_ms = self._wall_clock_ms()
        stats.inserted += summary.inserted
        stats.skipped += summary.skipped
        top = max(t.trade_id for t in committed)
        if stats.last_committed_id is None or top > stats.last_committed_id:
            stats.last_committed_id = top
        stats.last_commit_at = now_ms / 1000
        # Exchange time -> commit time. Backfilled trades have no stream event
        # time; their trade time stands in, so a backlog served from REST still
        # shows as lag instead of freezing the figure.
        stats.lag.extend(
            [
                now_ms - (t.event_time_ms if t.event_time_ms is not None else t.trade_time_ms)
                for t in committed
            ]
        )

    async def write_gap(self, record: GapRecord) -> None:
        """Record ``record`` in the gaps table (an open gap, or a resolved one in one step)."""
        if record.state is GapState.OPEN:
            await self._market.record_gap(
                record.venue,
                record.symbol,
                CHECKPOINT_STREAM,
                record.from_id,
                record.to_id,
                reason=record.reason,
            )
        else:
            # One transaction: a crash cannot leave a filled range recorded as open.
            try:
                await self._market.record_resolved_gap(
                    record.venue,
                    record.symbol,
                    CHECKPOINT_STREAM,
                    record.from_id,
                    record.to_id,
                    state=record.state,
                    reason=record.reason,
                    resolution=record.resolution,
                )
            except GapTransitionError as exc:
                # Already resolved the other way (a repair repeated after a
                # restart while the venue's history expired): keep the first
                # outcome; retrying could never succeed.
                log.warning(
                    "ingest %s %s: gap record kept as is: %s", self.venue, record.symbol, exc
                )
        stats = self._symbols.get(record.symbol)
        if stats is not None:
            stats.gap_records_committed += 1
            if record.state is GapState.BACKFILLED:
                stats.gaps_backfilled += 1
            elif record.state is GapState.UNRECOVERABLE:
                stats.gaps_unrecoverable += 1
            else:
                stats.gaps_left_open += 1
            # An open gap stays in health/status/metrics until its resolution
            # (a record with its bounds) is committed.
            if record.state is GapState.OPEN:
                stats.open_gaps[(record.from_id, record.to_id)] = record.reason
            else:
                stats.open_gaps.pop((record.from_id, record.to_id), None)
        level = logging.WARNING if record.state is not GapState.BACKFILLED else logging.INFO
        log.log(
            level,
            "ingest %s %s: gap [%d, %d] (%s) recorded as %s: %s",
            self.venue,
            record.symbol,
            record.from_id,
            record.to_id,
            record.reason,
            record.state.value,
            record.resolution,
        )

    async def _dead_letter(self, symbol: str, trades: Sequence[Trade], error: StoreError) -> None:
        first, last = trades[0].trade_id, trades[-1].trade_id
        letter = DeadLetter.from_error(
            [_trade_json(t) for t in trades],
            error,
            source=f"marketdata.{self.venue}.ingest",
            key=f"{symbol}:{first}-{last}",
        )
        await self._dead_letters.add(letter)
        log.error(
            "ingest %s %s: the store refused trades %d..%d (%s); dead-lettered",
            self.venue,
            symbol,
            first,
            last,
            error,
        )
