"""Periodic top-N order book snapshots, stored idempotently.

Every ``snapshot_interval_s`` (drift-free) the snapshotter takes the top
``snapshot_depth`` levels of each book that is **in sync** and stores them as
a :class:`~daemon.store.BookSnapshotRecord` keyed by ``(venue, symbol,
server_time_ms, sequence_id)``: the venue time of the book's state and its
``lastUpdateId``. The key names the book state, not the moment of the round,
so storing the same state twice (a quiet book, a restarted daemon) is a no-op
in the store, and a book that did not change since the last stored round is
not even sent. A book out of sync is skipped (a snapshot of a stale book
would be a lie). A store failure loses that round only; the next round
tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from daemon.config import MarketDataConfig
from daemon.marketdata.book import LocalBook
from daemon.marketdata.interfaces import MarketStore
from daemon.marketdata.stats import SnapshotStats
from daemon.store.errors import StoreClosedError, StoreError
from daemon.store.marketdata_values import BookSnapshotRecord
from daemon.supervise import ChildContext

__all__ = ["Snapshotter"]

log = logging.getLogger("tradingd.marketdata.snapshots")


class Snapshotter:
    """Stores top-N book snapshots periodically (a supervised child: :meth:`run`).

    Args:
        venue: Venue name.
        market: The store's market-data tables.
        books: The local books, one per symbol.
        settings: Interval, depth, heartbeat.
        stats: Counters.
    """

    def __init__(
        self,
        venue: str,
        market: MarketStore,
        books: Mapping[str, LocalBook],
        settings: MarketDataConfig,
        *,
        stats: SnapshotStats,
    ) -> None:
        if settings.snapshot_interval_s <= 0:
            raise ValueError("snapshot_interval_s must be > 0 for a snapshotter")
        self.venue = venue
        self._market = market
        self._books = books
        self._settings = settings
        self.stats = stats
        self._stored: dict[str, tuple[int, int]] = {}

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Take a round every ``snapshot_interval_s`` until stopped."""
        task_status.started()
        interval = self._settings.snapshot_interval_s
        beat = self._settings.heartbeat_interval_s / 2
        deadline = trio.current_time() + interval
        while not ctx.stop_requested:
            ctx.heartbeat()
            now = trio.current_time()
            if now < deadline:
                with trio.move_on_at(min(deadline, now + beat)):
                    await ctx.wait_stop_requested()
                continue
            deadline += interval
            if deadline <= now:  # far behind (a long store stall): skip, do not burst
                deadline = now + interval
            await self.take_round()

    def records(self) -> list[BookSnapshotRecord]:
        """This round's records: books in sync whose state changed since the last stored one."""
        records = []
        depth = self._settings.snapshot_depth
        for symbol, book in self._books.items():
            if not book.in_sync or book.last_update_id is None:
                self.stats.not_in_sync += 1
                continue
            as_of_ms = book.as_of_ms if book.as_of_ms is not None else 0
            key = (as_of_ms, book.last_update_id)
            if self._stored.get(symbol) == key:
                self.stats.unchanged += 1
                continue
            bids, asks = book.top(depth)
            records.append(
                BookSnapshotRecord(
                    venue=self.venue,
                    symbol=symbol,
                    server_time_ms=as_of_ms,
                    sequence_id=book.last_update_id,
                    bids=bids,
                    asks=asks,
                )
            )
        return records

    async def take_round(self) -> None:
        """Store one round of snapshots; a store failure is logged and counted."""
        self.stats.rounds += 1
        records = self.records()
        if not records:
            return
        try:
            summary = await self._market.insert_book_snapshots(records)
        except StoreClosedError:
            raise
        except StoreError as exc:
            self.stats.failed += len(records)
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("snapshots %s: round failed: %s", self.venue, self.stats.last_error)
            return
        self.stats.inserted += summary.inserted
        self.stats.skipped += summary.skipped
        self.stats.failed += summary.failed
        if summary.failed_chunks:
            error = summary.failed_chunks[0].error
            self.stats.last_error = f"{type(error).__name__}: {error}"
            log.warning(
                "snapshots %s: %d snapshot(s) not stored: %s", self.venue, summary.failed, error
            )
            return
        for record in records:
            self._stored[record.symbol] = (record.server_time_ms, record.sequence_id)
        log.debug(
            "snapshots %s: stored %d, already stored %d",
            self.venue,
            summary.inserted,
            summary.skipped,
        )
