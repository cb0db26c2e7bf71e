"""The plumbing every part of the feed shares: venue and store calls, the trades queue.

One :class:`FeedIO` per :class:`~daemon.marketdata.feed.Feed`, shared by its
parts (the router, the backfill, the repair of open gaps, the tail checks, the
book sync). It holds what they all use and what must survive a restart of the
feed child:

* the venue client of the running incarnation (:meth:`FeedIO.require_client`);
* *bounded waits* (:meth:`FeedIO.bounded`): while a REST call, a backoff sleep
  or a put into a full trades queue is in progress, the feed's heartbeat task
  beats for the router — those waits can outlast a heartbeat interval without
  the feed being hung;
* REST calls retried until the venue answers (:meth:`FeedIO.rest`) and store
  calls retried while the store is unavailable (:meth:`FeedIO.store_call`),
  both with bounded jittered delays;
* the put into the trades queue with its backpressure accounting
  (:meth:`FeedIO.put`);
* the health counters of ``historicalTrades`` (:meth:`FeedIO.backfill_failed`,
  :meth:`FeedIO.backfill_ok`).
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import trio

from daemon.channels import Queue
from daemon.config import MarketDataConfig
from daemon.errors import (
    AmbiguousOutcomeError,
    PermanentError,
    RetryExhaustedError,
    TransientError,
)
from daemon.marketdata.ingest import Item
from daemon.marketdata.interfaces import (
    Backoff,
    MarketStore,
    VenueClient,
    sleep_with_heartbeat,
)
from daemon.marketdata.stats import FeedStats, SymbolStats
from daemon.store.errors import StoreUnavailableError
from daemon.supervise import ChildContext

__all__ = ["FETCH_ERRORS", "FeedIO"]

log = logging.getLogger("tradingd.marketdata.feed")

T = TypeVar("T")

#: What a venue REST call can fail with, short of a bug: each is a failed fetch.
FETCH_ERRORS = (TransientError, RetryExhaustedError, PermanentError, AmbiguousOutcomeError)


class FeedIO:
    """Shared state and calls of one feed's parts.

    Args:
        venue: Venue name (in every log line and gap record).
        market: The store's market-data tables.
        settings: Limits, backoff, heartbeat.
        trades: The registered trades queue (``Overflow.BLOCK``).
        symbols: Per-symbol stats, shared with the writer.
        stats: The feed's counters.
        enqueued_at: Trio times of the items in the trades queue, oldest first
            (appended here, popped by the writer): the queue's consumer lag.
        rng: Jitter of the backoffs.
    """

    def __init__(
        self,
        venue: str,
        market: MarketStore,
        settings: MarketDataConfig,
        *,
        trades: Queue[Any],
        symbols: Mapping[str, SymbolStats],
        stats: FeedStats,
        enqueued_at: collections.deque[float],
        rng: random.Random,
    ) -> None:
        self.venue = venue
        self.market = market
        self.settings = settings
        self.symbols = symbols
        self.stats = stats
        self._trades = trades
        self._enqueued_at = enqueued_at
        self.rest_backoff = Backoff(
            f"marketdata.{venue}.rest", settings.retry_initial_s, settings.retry_max_s, rng
        )
        self._store_backoff = Backoff(
            f"marketdata.{venue}.store", settings.retry_initial_s, settings.retry_max_s, rng
        )
        #: Waits in progress that are bounded or legitimate (the heartbeat task beats meanwhile).
        self.bounded_waits = 0
        #: The venue client of the running incarnation (``None`` when not running).
        self.client: VenueClient | None = None

    def require_client(self) -> VenueClient:
        if self.client is None:
            raise RuntimeError("the feed has no venue client (not running)")
        return self.client

    async def bounded(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` as a bounded wait (heartbeats continue meanwhile)."""
        self.bounded_waits += 1
        try:
            return await fn()
        finally:
            self.bounded_waits -= 1

    # ------------------------------------------------------------------ retries

    async def rest(
        self,
        ctx: ChildContext,
        fn: Callable[[], Awaitable[T]],
        *,
        what: str,
        backfill: bool = False,
    ) -> T | None:
        """Call the venue until it answers; ``None`` when it refuses for good.

        Failures that can clear (connect errors, 5xx, rate limits, an
        exhausted inner retry) are retried with bounded jittered delays, with
        no cap on attempts: giving up would lose trades. A permanent refusal
        returns ``None``. ``backfill``: a ``historicalTrades`` fetch (its
        failures count towards the health reason "backfill failing").
        """
        failures = 0
        while True:
            try:
                result = await self.bounded(fn)
            except (TransientError, RetryExhaustedError) as exc:
                failures += 1
                if backfill:
                    self.backfill_failed(exc, what)
                else:
                    self.stats.rest_failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                delay = self.rest_backoff.delay_s(failures)
                log.warning(
                    "marketdata %s: %s failed (%s); retry #%d in %.3fs",
                    self.venue,
                    what,
                    self.stats.last_error,
                    failures,
                    delay,
                )
                await self._backoff_sleep(ctx, delay)
            except PermanentError as exc:
                if backfill:
                    self.backfill_failed(exc, what)
                else:
                    self.stats.rest_failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error("marketdata %s: %s refused: %s", self.venue, what, self.stats.last_error)
                return None
            else:
                if backfill:
                    self.backfill_ok()
                return result

    async def _backoff_sleep(self, ctx: ChildContext, delay_s: float) -> None:
        self.bounded_waits += 1
        try:
            await sleep_with_heartbeat(ctx, delay_s, self.settings.heartbeat_interval_s)
        finally:
            self.bounded_waits -= 1

    async def store_call(
        self, ctx: ChildContext, fn: Callable[[], Awaitable[T]], *, what: str
    ) -> T:
        """Call the store, retrying while it is unavailable (disk full, locked, …)."""
        failures = 0
        while True:
            try:
                return await self.bounded(fn)
            except StoreUnavailableError as exc:
                failures += 1
                delay = self._store_backoff.delay_s(failures)
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "marketdata %s: %s failed (%s); retry #%d in %.3fs",
                        self.venue,
                        what,
                        exc,
                        failures,
                        delay,
                    )
                await self._backoff_sleep(ctx, delay)

    # ------------------------------------------------------------------ backfill health

    def backfill_failed(self, error: BaseException, what: str) -> None:
        f = self.stats
        f.rest_failures += 1
        f.backfill_failures += 1
        f.backfill_failures_total += 1
        f.last_error = f.backfill_last_error = f"{type(error).__name__}: {error}"
        if f.backfill_failing_since is None:
            f.backfill_failing_since = trio.current_time()
        log.warning(
            "marketdata %s: %s failed (%s); %d failure(s) in a row",
            self.venue,
            what,
            f.last_error,
            f.backfill_failures,
        )

    def backfill_ok(self) -> None:
        f = self.stats
        if f.backfill_failures:
            log.info(
                "marketdata %s: historicalTrades works again after %d failure(s)",
                self.venue,
                f.backfill_failures,
            )
        f.backfill_failures = 0
        f.backfill_failing_since = None

    # ------------------------------------------------------------------ the trades queue

    async def put(self, ctx: ChildContext, item: Item) -> None:
        """Hand ``item`` to the writer; wait (backpressure) when the queue is full.

        The bookkeeping (the item's enqueue time, the symbol's queued count) is
        done *before* the item can reach the writer — a waiting writer may run
        before this task resumes — and undone if the put is cancelled.
        """
        send = self._trades.send
        stats = self.symbols.get(item.symbol)
        self._enqueued_at.append(trio.current_time())
        if stats is not None:
            stats.queued += 1
        try:
            send.send_nowait(item)
        except trio.WouldBlock:
            started = trio.current_time()
            self.stats.put_waits += 1
            self.stats.blocked_since = started
            if self.stats.saturated_since is None:
                self.stats.saturated_since = started
            try:
                await self.bounded(lambda: send.send(item))
            except BaseException:
                # The feed's tasks are the only producers; concurrent catch-ups
                # append near-identical times, so dropping the newest is exact
                # enough for the queue-age figure.
                self._enqueued_at.pop()
                if stats is not None:
                    stats.queued -= 1
                raise
            finally:
                waited = trio.current_time() - started
                self.stats.blocked_since = None
                self.stats.put_wait_s_total += waited
                self.stats.put_wait_s_max = max(self.stats.put_wait_s_max, waited)
        else:
            self.stats.saturated_since = None  # room without waiting: not saturated
        depth = send.statistics().current_buffer_used
        self.stats.max_queue_depth = max(self.stats.max_queue_depth, depth)
