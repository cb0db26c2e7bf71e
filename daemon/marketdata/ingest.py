"""The ingest writer: trades queue → chunked, idempotent, checkpointed store writes.

One writer per venue drains the bounded trades queue (docs/ARCHITECTURE.md §5: producer
the feed, consumer this writer, ``Overflow.BLOCK``) and commits what it takes:

* **Chunks.** Up to ``chunk_size`` trades per batch, or fewer once the first
  of them has waited ``flush_interval_s`` (a quiet market still commits
  promptly). Each symbol's trades of a batch are one
  :meth:`~daemon.store.MarketDataStore.insert_trades` call with
  ``checkpoint=(venue, symbol, "trades")``, so the resume point advances in
  the same transaction as the rows: never past data that is not stored.
* **Nothing is dropped.** On a store error that can clear (disk full,
  read-only, locked, I/O — :class:`~daemon.store.StoreUnavailableError`) the
  writer keeps the uncommitted trades, backs off with bounded jittered delays
  and tries again until it works; meanwhile the queue fills and the feed
  blocks (backpressure), and the store's own health check turns unhealthy.
  A chunk the schema refuses (:class:`~daemon.store.StoreDataError`) is
  dead-lettered with its rows, and the rest goes on. Items taken from the
  queue live in the writer object, not in a task, so a restarted writer
  incarnation continues with them.
* **Order.** Per symbol, items are committed in queue order. Gap outcomes
  (:class:`GapRecord`) travel through the same queue behind the trades they
  concern, so a gap is recorded as backfilled only once its trades committed.
* **Lag.** For every committed trade with a venue event time, the consumer lag
  (event time → commit time, wall clock) feeds the symbol's
  :class:`~daemon.marketdata.stats.LagWindow`.

Here: the :class:`IngestWriter` (taking items from the queue into a batch,
committing the batch with retries, the periodic summary). One store write of a
symbol's trades or of a gap record, with its dead letters and counters, is the
:class:`~daemon.marketdata.ingest_commit.IngestCommitter`'s; :class:`GapRecord`,
:data:`Item` and :data:`CHECKPOINT_STREAM` are defined there and re-exported here.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import trio

from daemon.channels import Queue
from daemon.config import MarketDataConfig
from daemon.marketdata.ingest_commit import CHECKPOINT_STREAM, GapRecord, IngestCommitter, Item
from daemon.marketdata.interfaces import Backoff, MarketStore, sleep_with_heartbeat
from daemon.marketdata.stats import SymbolStats, WriterStats
from daemon.model.marketdata import Trade
from daemon.resilience import DeadLetterStore
from daemon.store.errors import StoreClosedError, StoreError
from daemon.supervise import ChildContext

__all__ = ["CHECKPOINT_STREAM", "GapRecord", "IngestWriter", "Item", "wall_clock_ms"]

log = logging.getLogger("tradingd.marketdata.ingest")

#: How often the writer logs a one-line summary of what it committed.
SUMMARY_LOG_INTERVAL_S = 60.0


def wall_clock_ms() -> int:
    """The wall clock in epoch milliseconds (the default of every capture component)."""
    return time.time_ns() // 1_000_000


class IngestWriter:
    """The consumer of one venue's trades queue (see the module docstring).

    Args:
        venue: Venue name (the checkpoint key's first part).
        market: The market-data tables.
        queue: The registered trades queue (its receive end is read).
        dead_letters: Where chunks the schema refuses go.
        settings: Chunk size, flush interval, backoff, heartbeat.
        symbols: Per-symbol stats, shared with the feed.
        stats: The writer's counters.
        enqueued_at: Trio times of the queued items, oldest first (the feed
            appends, the writer pops): the age of the oldest unprocessed item.
        wall_clock_ms: Epoch ms (commit time for the lag; inject in tests).
        rng: Jitter of the backoff.
    """

    def __init__(
        self,
        venue: str,
        market: MarketStore,
        queue: Queue[Any],
        dead_letters: DeadLetterStore,
        settings: MarketDataConfig,
        *,
        symbols: dict[str, SymbolStats],
        stats: WriterStats,
        enqueued_at: collections.deque[float],
        wall_clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue
        self._queue = queue
        self._settings = settings
        self._symbols = symbols
        self.stats = stats
        self._enqueued_at = enqueued_at
        self._commit = IngestCommitter(
            venue,
            market,
            dead_letters,
            settings,
            symbols=symbols,
            stats=stats,
            wall_clock_ms=wall_clock_ms,
        )
        self._backoff = Backoff(
            f"marketdata.{venue}.ingest",
            settings.retry_initial_s,
            settings.retry_max_s,
            rng if rng is not None else random.Random(),
        )
        self._pending: dict[str, collections.deque[Item]] = {}
        self._pending_trades = 0
        self._idle_scope: trio.CancelScope | None = None
        self._summary_at: float | None = None
        self._summary_rows = (0, 0, 0)

    @property
    def pending(self) -> int:
        """Items taken from the queue and not yet committed."""
        return sum(len(items) for items in self._pending.values())

    @property
    def failing(self) -> bool:
        """True while commits fail (the writer is retrying)."""
        return self.stats.failing_since is not None

    # ------------------------------------------------------------------ the child

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Drain the queue into the store until stopped; then commit what is queued and return.

        Reports ready at once: the writer needs nothing but the queue.
        """
        ctx.add_stop_callback(self._wake)
        task_status.started()
        self._summary_at = trio.current_time()
        while True:
            if not self.pending:
                item = await self._wait_first(ctx)
                if item is None:
                    log.info("ingest %s: stopped; queue drained", self.venue)
                    return
                self._take(item)
            await self._fill(ctx)
            await self._commit_all(ctx)
            self._maybe_log_summary()

    def _wake(self) -> None:
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def _wait_first(self, ctx: ChildContext) -> Item | None:
        """The next item, heartbeating while idle; ``None`` once stopped with an empty queue."""
        receive = self._queue.receive
        while True:
            ctx.heartbeat()
            try:
                item: Item = receive.receive_nowait()
            except trio.WouldBlock:
                if ctx.stop_requested:
                    return None
            else:
                return item
            with trio.move_on_after(self._settings.heartbeat_interval_s) as scope:
                self._idle_scope = scope
                try:
                    return await receive.receive()  # type: ignore[no-any-return]
                finally:
                    self._idle_scope = None

    async def _fill(self, ctx: ChildContext) -> None:
        """Take items until a chunk is full or the first one waited ``flush_interval_s``."""
        receive = self._queue.receive
        chunk_size = self._settings.chunk_size
        deadline = trio.current_time() + self._settings.flush_interval_s
        while self._pending_trades < chunk_size:
            try:
                item: Item = receive.receive_nowait()
            except trio.WouldBlock:
                if ctx.stop_requested or trio.current_time() >= deadline:
                    return
                with trio.move_on_at(deadline) as scope:
                    self._idle_scope = scope
                    try:
                        item = await receive.receive()
                    finally:
                        self._idle_scope = None
                if scope.cancelled_caught:
                    return
            self._take(item)

    def _take(self, item: Item) -> None:
        if self._enqueued_at:
            self._enqueued_at.popleft()
        items = self._pending.get(item.symbol)
        if items is None:
            items = self._pending[item.symbol] = collections.deque()
        items.append(item)
        stats = self._symbols.get(item.symbol)
        if stats is not None:
            stats.queued -= 1
            stats.pending += 1
        if isinstance(item, Trade):
            self._pending_trades += 1

    # ------------------------------------------------------------------ committing

    async def _commit_all(self, ctx: ChildContext) -> None:
        """Commit every pending item, retrying store errors that can clear, forever."""
        self.stats.batches += 1
        failures = 0
        while self.pending:
            try:
                await self._commit_once()
            except StoreClosedError:
                raise
            except StoreError as exc:
                failures += 1
                self.stats.retries += 1
                self.stats.consecutive_failures += 1
                self.stats.record_error(exc)
                if self.stats.failing_since is None:
                    self.stats.failing_since = trio.current_time()
                delay = self._backoff.delay_s(failures)
                message = (
                    "ingest %s: commit failed (%s: %s); keeping %d item(s), retry #%d in %.3fs"
                )
                args = (self.venue, type(exc).__name__, exc, self.pending, failures, delay)
                if failures == 1:
                    log.error(message, *args)
                elif failures % 10 == 0:
                    log.warning(message, *args)
                await sleep_with_heartbeat(ctx, delay, self._settings.heartbeat_interval_s)
                continue
            ctx.heartbeat()
        if self.stats.failing_since is not None:
            log.warning(
                "ingest %s: commits work again after %d failed attempt(s) (%.1fs)",
                self.venue,
                self.stats.consecutive_failures,
                trio.current_time() - self.stats.failing_since,
            )
        self.stats.failing_since = None
        self.stats.consecutive_failures = 0

    async def _commit_once(self) -> None:
        for symbol, items in self._pending.items():
            while items:
                head = items[0]
                if isinstance(head, GapRecord):
                    await self._commit.write_gap(head)
                    items.popleft()
                    self._done(symbol, 1)
                    continue
                trades: list[Trade] = []
                for item in items:
                    if not isinstance(item, Trade):
                        break
                    trades.append(item)
                cut, error = await self._commit.write_trades(symbol, trades)
                for _ in range(cut):
                    items.popleft()
                self._pending_trades -= cut
                self._done(symbol, cut)
                if error is not None:
                    raise error

    def _done(self, symbol: str, count: int) -> None:
        stats = self._symbols.get(symbol)
        if stats is not None:
            stats.pending -= count

    def _maybe_log_summary(self) -> None:
        now = trio.current_time()
        if self._summary_at is None or now - self._summary_at < SUMMARY_LOG_INTERVAL_S:
            return
        st = self.stats
        attempted, inserted, skipped = self._summary_rows
        log.info(
            "ingest %s: %d trades in %.0fs (inserted %d, skipped %d); totals attempted %d, "
            "inserted %d, skipped %d",
            self.venue,
            st.rows_attempted - attempted,
            now - self._summary_at,
            st.rows_inserted - inserted,
            st.rows_skipped - skipped,
            st.rows_attempted,
            st.rows_inserted,
            st.rows_skipped,
        )
        self._summary_at = now
        self._summary_rows = (st.rows_attempted, st.rows_inserted, st.rows_skipped)
