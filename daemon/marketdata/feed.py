"""The feed: one venue connection → trades queue (gapless) and local books.

One feed per venue connection, supervised. Inside one incarnation::

    stream.run ─[stream queue: BLOCK]─► router ─[trades queue: BLOCK]─► writer
                                         │ ├ gap? → REST historicalTrades (paged, limiter)
                                         │ └ malformed → dead letter (durable), skip
                                         └─[depth queue: CONFLATE]─► books task ─► LocalBook
                         per symbol: sync task ─ REST depth snapshot ─┘

**Trades are gapless.** Binance trade ids are sequential per symbol. The
feed remembers, per symbol, the last id it handed to the writer (its resume
point; on the first start it is the store's last stored id). Then:

* a live trade at or below it is a duplicate (replay after a reconnect): skipped;
* a live trade above ``last + 1`` reveals a gap (a missed message): the
  missing ids are fetched with ``historicalTrades?fromId=`` in pages of
  ``backfill_limit`` and queued, in order, before the live trade;
* every (re)connection — including the first after a daemon restart — starts
  with a *catch-up*: pages from ``last + 1`` until the venue has no more, so
  trades made while disconnected (or while the daemon was down) are fetched
  even if the market then goes quiet.

REST calls go through the client, hence through its rate limiter; failures
that can clear are retried with bounded jittered delays. When the venue no
longer has the history (a page starts after the requested ``fromId``), the
missing ids are recorded as an ``UNRECOVERABLE`` gap in the store and counted,
never hidden. Each gap's outcome (:class:`~daemon.marketdata.ingest.GapRecord`)
travels through the trades queue behind its trades.

**Backpressure.** Putting into the trades queue waits when it is full (the
writer is behind): the router stops reading, the stream queue fills, the
stream stops reading the socket, TCP pushes back to the venue. Nothing is
dropped; the wait is measured (``put_waits``, ``put_wait_s_total``,
``blocked_for_s``). A venue that then drops the slow connection causes a
reconnect, whose catch-up fills the hole.

**Books.** Depth updates go to a :class:`~daemon.marketdata.book.DepthConflator`
(never blocks, merges per symbol) consumed by the books task. Every
(re)connection invalidates the books; a per-symbol sync task fetches the REST
snapshot the procedure needs (:mod:`daemon.marketdata.book`).

**Malformed frames** are counted, dead-lettered durably with the raw payload
and skipped; they never end the feed.
"""

from __future__ import annotations

import collections
import logging
import math
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
from daemon.marketdata.book import DepthConflator, LocalBook, SnapshotResult, UpdateResult
from daemon.marketdata.ingest import CHECKPOINT_STREAM, GapRecord, Item, wall_clock_ms
from daemon.marketdata.interfaces import (
    Backoff,
    MarketStore,
    VenueClient,
    VenueLinkLike,
    sleep_with_heartbeat,
)
from daemon.marketdata.stats import FeedStats, SymbolStats
from daemon.model.marketdata import DepthUpdate, Trade
from daemon.resilience import DeadLetter, DeadLetterStore
from daemon.store.errors import StoreError, StoreUnavailableError
from daemon.store.marketdata import GapState
from daemon.supervise import ChildContext
from daemon.venues.base import StreamKind, Subscription
from daemon.venues.binance.stream import MalformedFrame, StreamConnected, StreamDisconnected

__all__ = ["Feed"]

log = logging.getLogger("tradingd.marketdata.feed")

T = TypeVar("T")

#: After a malformed frame (which may have replaced a trade), the feed checks
#: with the venue for missed trades as soon as the stream goes quiet — at most
#: this often, so a flood of garbage cannot exhaust the REST weight budget.
VERIFY_AFTER_MALFORMED_INTERVAL_S = 1.0

#: What a venue REST call can fail with, short of a bug: each is a failed fetch.
_FETCH_ERRORS = (TransientError, RetryExhaustedError, PermanentError, AmbiguousOutcomeError)

#: Malformed frames are logged one by one up to this many, then every N-th.
_LOG_FIRST_MALFORMED = 10
_LOG_EVERY_MALFORMED = 1000


class Feed:
    """One venue connection's market data, as a supervised child (:meth:`run`).

    State that must survive a restart of the child (resume points, books,
    counters) lives in this object; each incarnation only owns its tasks.

    Args:
        venue: Venue name; must equal the client's ``name`` (it is in every trade).
        link: Gives the venue client once the venue answered.
        market: The store's market-data tables (resume points on first start).
        dead_letters: Durable dead letters (malformed frames).
        settings: Symbols, limits, backoff, heartbeat.
        trades: The registered trades queue (``Overflow.BLOCK``).
        stream_queue: The registered stream → feed queue (``Overflow.BLOCK``).
        depth: The depth queue (conflating).
        books: The local books, one per symbol.
        symbols: Per-symbol stats, shared with the writer.
        stats: The feed's counters.
        enqueued_at: Trio times of the items in the trades queue, oldest first
            (appended here, popped by the writer): the queue's consumer lag.
        wall_clock_ms: Epoch ms (dead letters, snapshot time estimate).
        rng: Jitter of the backoffs.
    """

    def __init__(
        self,
        venue: str,
        link: VenueLinkLike,
        market: MarketStore,
        dead_letters: DeadLetterStore,
        settings: MarketDataConfig,
        *,
        trades: Queue[Any],
        stream_queue: Queue[Any],
        depth: DepthConflator,
        books: Mapping[str, LocalBook],
        symbols: Mapping[str, SymbolStats],
        stats: FeedStats,
        enqueued_at: collections.deque[float],
        wall_clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue
        self._link = link
        self._market = market
        self._dead_letters = dead_letters
        self._settings = settings
        self._trades = trades
        self._stream_queue = stream_queue
        self._depth = depth
        self.books = books
        self._symbols = symbols
        self.stats = stats
        self._enqueued_at = enqueued_at
        self._wall_clock_ms = wall_clock_ms
        rng = rng if rng is not None else random.Random()
        self._rest_backoff = Backoff(
            f"marketdata.{venue}.rest", settings.retry_initial_s, settings.retry_max_s, rng
        )
        self._store_backoff = Backoff(
            f"marketdata.{venue}.store", settings.retry_initial_s, settings.retry_max_s, rng
        )
        self._resume_loaded = False
        self._connections_seen = 0
        self._incarnation_connections = 0
        self._bounded_waits = 0
        self._verify_due = False
        self._verified_at = -math.inf
        self._snapshot_wanted: dict[str, trio.Event] = {s: trio.Event() for s in books}
        self._connected = trio.Event()
        self._client: VenueClient | None = None
        self.stream: Any = None  # the current stream object, for /status
        #: Trio time since when each book is out of sync (for health).
        self.resyncing_since: dict[str, float | None] = dict.fromkeys(books)
        #: Recorded OPEN gaps waiting for the repair task, ``(symbol, from_id, to_id)``
        #: → reason. Survives a restart of the child; reloaded from the store on
        #: the first start (a crash forgets nothing: the store has them).
        self._repairs: dict[tuple[str, int, int], str] = {}
        self._repair_wanted = trio.Event()
        #: Trio time of each symbol's last stream trade (or last tail check):
        #: when it is ``tail_check_interval_s`` old, the venue is asked.
        self._quiet_since: dict[str, float] = {}
        self._tail_due_at = -math.inf

    # ------------------------------------------------------------------ the child

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Capture until stopped.

        Reports ready at once, before the venue answers: a venue that is down
        at start must not fail the daemon's start (the link keeps trying, and
        health says why nothing is captured).
        """
        task_status.started()
        self._incarnation_connections = 0
        self._connected = trio.Event()
        self._snapshot_wanted = {s: trio.Event() for s in self.books}
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._beater, ctx)
                nursery.start_soon(self._stop_on_request, ctx, nursery.cancel_scope)
                client = await self._bounded(self._link.wait_up)  # a venue down is not a hang
                if client.name != self.venue:
                    raise ValueError(
                        f"marketdata {self.venue!r}: the venue client is named {client.name!r}; "
                        "trades carry the client's name, so they must be the same"
                    )
                self._client = client
                await self._load_resume_points(ctx)
                stream = client.market_stream(
                    [
                        Subscription(kind, symbol)
                        for symbol in self._settings.symbols
                        for kind in (StreamKind.TRADES, StreamKind.DEPTH)
                    ]
                )
                self.stream = stream
                nursery.start_soon(stream.run, self._stream_queue.send.clone())
                nursery.start_soon(self._books_loop)
                nursery.start_soon(self._repair_loop, ctx)
                for symbol in self.books:
                    nursery.start_soon(self._sync_loop, symbol)
                await self._route(ctx)
        finally:
            self.stats.connected = False
            self.stats.blocked_since = None
            self._client = None
            for symbol, book in self.books.items():
                if book.in_sync:
                    book.invalidate("feed stopped")
                    book.publish()
                self._mark_resyncing(symbol)

    async def _stop_on_request(self, ctx: ChildContext, scope: trio.CancelScope) -> None:
        await ctx.wait_stop_requested()
        scope.cancel()

    async def _beater(self, ctx: ChildContext) -> None:
        """Heartbeat while the router is inside a wait that is bounded or legitimate.

        REST calls (bounded by the client's timeouts and retry budget),
        backoff sleeps and puts into a full trades queue (backpressure) can
        take longer than a heartbeat interval without the feed being hung.
        """
        step = self._settings.heartbeat_interval_s / 2
        while True:
            await trio.sleep(step)
            if self._bounded_waits:
                ctx.heartbeat()

    async def _bounded(self, fn: Callable[[], Awaitable[T]]) -> T:
        self._bounded_waits += 1
        try:
            return await fn()
        finally:
            self._bounded_waits -= 1

    # ------------------------------------------------------------------ resume points

    async def _load_resume_points(self, ctx: ChildContext) -> None:
        """On the first start only: resume each symbol after its last stored trade."""
        if self._resume_loaded:
            return
        for symbol, stats in self._symbols.items():

            async def read(symbol: str = symbol) -> int | None:
                return await self._market.last_trade_id(self.venue, symbol)

            last = await self._store_call(
                ctx, read, what=f"reading the last stored trade of {symbol}"
            )
            if stats.last_enqueued_id is None or (
                last is not None and last > stats.last_enqueued_id
            ):
                stats.last_enqueued_id = last
            if stats.last_committed_id is None:
                stats.last_committed_id = last
            log.info(
                "marketdata %s %s: %s",
                self.venue,
                symbol,
                f"resuming after stored trade {last}" if last is not None else "nothing stored yet",
            )
        await self._load_open_gaps(ctx)
        self._resume_loaded = True

    async def _load_open_gaps(self, ctx: ChildContext) -> None:
        """Queue the store's OPEN gaps of the captured symbols for the repair task."""

        async def read() -> list[Any]:
            return await self._market.gaps(
                venue=self.venue, stream=CHECKPOINT_STREAM, state=GapState.OPEN
            )

        for gap in await self._store_call(ctx, read, what="reading the open gaps"):
            stats = self._symbols.get(gap.symbol)
            if stats is None:
                continue
            stats.open_gaps[(gap.from_id, gap.to_id)] = gap.reason
            self._repairs[(gap.symbol, gap.from_id, gap.to_id)] = gap.reason
            log.warning(
                "marketdata %s %s: open gap [%d, %d] (%s) from the store; backfilling it",
                self.venue,
                gap.symbol,
                gap.from_id,
                gap.to_id,
                gap.reason,
            )
        if self._repairs:
            self._repair_wanted.set()

    # ------------------------------------------------------------------ routing

    async def _route(self, ctx: ChildContext) -> None:
        receive = self._stream_queue.receive
        interval = self._settings.heartbeat_interval_s
        while True:
            ctx.heartbeat()
            if trio.current_time() >= self._tail_due_at:
                # Also while events flow: a busy depth stream must not hide a quiet symbol.
                tail_in = await self._tail_checks(ctx)
                self._tail_due_at = trio.current_time() + (interval if tail_in is None else tail_in)
            try:
                event = receive.receive_nowait()
            except trio.WouldBlock:
                wait_s = min(interval, max(0.0, self._tail_due_at - trio.current_time()))
                if self._verify_due:
                    verify_in = (
                        self._verified_at + VERIFY_AFTER_MALFORMED_INTERVAL_S - trio.current_time()
                    )
                    if verify_in <= 0:
                        await self._verify_after_malformed(ctx)
                        continue
                    wait_s = min(wait_s, verify_in)
                with trio.move_on_after(wait_s) as scope:
                    event = await receive.receive()
                if scope.cancelled_caught:
                    continue  # idle: heartbeat and wait again
            await self._dispatch(ctx, event)

    async def _dispatch(self, ctx: ChildContext, event: object) -> None:
        if isinstance(event, Trade):
            await self._on_trade(ctx, event)
        elif isinstance(event, DepthUpdate):
            if event.symbol in self.books:
                self._depth.offer(event)
            else:
                self.stats.unexpected += 1
        elif isinstance(event, StreamConnected):
            await self._on_connected(ctx, event)
        elif isinstance(event, StreamDisconnected):
            self._on_disconnected(event)
        elif isinstance(event, MalformedFrame):
            await self._on_malformed(ctx, event)
        else:
            self.stats.unexpected += 1
            log.warning("marketdata %s: unexpected stream event %r; skipped", self.venue, event)

    async def _on_trade(self, ctx: ChildContext, trade: Trade) -> None:
        stats = self._symbols.get(trade.symbol)
        if stats is None or trade.venue != self.venue:
            self.stats.unexpected += 1
            return
        last = stats.last_enqueued_id
        if last is not None and trade.trade_id <= last:
            stats.duplicates += 1
            return
        if last is not None and trade.trade_id > last + 1:
            await self._backfill(
                ctx, trade.symbol, last + 1, trade.trade_id - 1, reason="sequence jump"
            )
            last = stats.last_enqueued_id
            if last is not None and trade.trade_id <= last:
                stats.duplicates += 1
                return
        await self._put(ctx, trade)
        stats.last_enqueued_id = trade.trade_id
        stats.trades_stream += 1
        self._quiet_since[trade.symbol] = trio.current_time()

    async def _on_connected(self, ctx: ChildContext, event: StreamConnected) -> None:
        self._connections_seen += 1
        self._incarnation_connections += 1
        self.stats.connections += 1
        self.stats.connected = True
        self._connected.set()
        for symbol, book in self.books.items():
            book.invalidate(f"stream connection {event.connection_number} opened")
            book.publish()
            self._mark_resyncing(symbol)
            self._snapshot_wanted[symbol].set()
        if self._connections_seen == 1:
            reason = "restart"
        elif self._incarnation_connections == 1:
            reason = "feed restart"
        else:
            reason = "reconnect"
        self.stats.catching_up = True
        try:
            # Concurrently, so one busy symbol's catch-up cannot starve the others
            # (the trades queue's FIFO of waiting senders interleaves them).
            async with trio.open_nursery() as nursery:
                for symbol in self._symbols:
                    nursery.start_soon(self._catch_up, ctx, symbol, reason)
        finally:
            self.stats.catching_up = False
        self.stats.catch_ups += 1
        now = trio.current_time()
        self._quiet_since = dict.fromkeys(self._symbols, now)
        self._tail_due_at = -math.inf  # plan the checks of this connection now

    def _on_disconnected(self, event: StreamDisconnected) -> None:
        self.stats.connected = False
        self._connected = trio.Event()
        key = event.reason.value
        self.stats.disconnects[key] = self.stats.disconnects.get(key, 0) + 1
        for symbol, book in self.books.items():
            if book.in_sync:
                book.invalidate(f"stream disconnected ({event.reason.value})")
                book.publish()
            self._mark_resyncing(symbol)

    async def _verify_after_malformed(self, ctx: ChildContext) -> None:
        """The stream went quiet after a malformed frame: fetch any trade it replaced.

        A garbled frame may have been a trade. While trades keep coming the
        next one reveals the gap; if it was the last before a quiet spell,
        only asking the venue does.
        """
        self._verify_due = False
        self._verified_at = trio.current_time()
        for symbol in self._symbols:
            await self._catch_up(ctx, symbol, "malformed frame")

    async def _on_malformed(self, ctx: ChildContext, frame: MalformedFrame) -> None:
        self._verify_due = True
        self.stats.malformed += 1
        total = self.stats.malformed
        if total <= _LOG_FIRST_MALFORMED or total % _LOG_EVERY_MALFORMED == 0:
            log.warning(
                "marketdata %s: malformed frame #%d (%s); dead-lettering it",
                self.venue,
                total,
                frame.error,
            )
        now = self._wall_clock_ms() / 1000
        letter = DeadLetter(
            source=f"marketdata.{self.venue}.stream",
            payload=frame.raw,
            error_type="daemon.errors.VenueDecodeError",
            error_message=frame.error[:2000],
            first_failed_at=now,
            last_failed_at=now,
        )
        try:
            await self._store_call(
                ctx, lambda: self._dead_letters.add(letter), what="dead-lettering a malformed frame"
            )
        except StoreError as exc:
            self.stats.dead_letter_failures += 1
            raw = frame.raw[:200]
            log.error(
                "marketdata %s: could not dead-letter a malformed frame (%s); raw prefix %r",
                self.venue,
                exc,
                raw,
            )
            return
        self.stats.dead_lettered += 1

    # ------------------------------------------------------------------ gaps

    async def _catch_up(self, ctx: ChildContext, symbol: str, reason: str) -> None:
        """Fetch what the venue has after the resume point (after a (re)connect)."""
        stats = self._symbols[symbol]
        client = self._require_client()
        if stats.last_enqueued_id is None:
            # Nothing captured yet: start after the venue's latest trade, so
            # trades missed by a later disconnect are still found.
            recent = await self._rest(
                ctx, lambda: client.recent_trades(symbol, 1), what=f"recent trades of {symbol}"
            )
            if recent is not None and recent and stats.last_enqueued_id is None:
                stats.last_enqueued_id = recent[-1].trade_id
                log.info(
                    "marketdata %s %s: capture starts after venue trade %d",
                    self.venue,
                    symbol,
                    stats.last_enqueued_id,
                )
            return
        # Bounded by the venue's latest trade *now*: while the venue outpaces the
        # writer a catch-up "until a short page" would never end and the stream
        # would never be read again. Later trades come from the stream, whose
        # own gap detection fills any hole.
        latest = await self._rest(
            ctx, lambda: client.recent_trades(symbol, 1), what=f"recent trades of {symbol}"
        )
        stop_at = latest[-1].trade_id if latest else None
        if stop_at is not None and stop_at <= stats.last_enqueued_id:
            return
        await self._backfill(
            ctx, symbol, stats.last_enqueued_id + 1, None, reason=reason, stop_at=stop_at
        )

    async def _backfill(
        self,
        ctx: ChildContext,
        symbol: str,
        from_id: int,
        to_id: int | None,
        *,
        reason: str,
        stop_at: int | None = None,
    ) -> None:
        """Queue trades ``from_id..to_id`` (``None``: up to the venue's latest) from REST.

        Pages of ``backfill_limit`` with ``fromId``; ids the venue no longer
        has are recorded as an unrecoverable gap; the fetched range as a
        backfilled one. Advances the resume point as trades are queued. With
        ``to_id=None``, ``stop_at`` (the venue's latest id when the catch-up
        began) bounds the work.

        A fetch that fails (after the client's own retries) while the range's
        upper bound is known never leaves a silent hole and never holds up the
        live stream: the rest of the range is recorded as an OPEN gap in the
        store at once (durable: a crash does not forget it), the resume point
        moves past it, and the repair task (:meth:`_repair_loop`) backfills it
        with retries. Only without a bound (the venue's latest id is unknown)
        are failures retried here.
        """
        stats = self._symbols[symbol]
        client = self._require_client()
        limit = self._settings.backfill_limit
        bound = to_id if to_id is not None else stop_at
        next_id = from_id
        fetched_first: int | None = None
        fetched_last: int | None = None
        fetched = 0
        if to_id is not None:
            stats.gaps_detected += 1
            log.warning(
                "marketdata %s %s: trades %d..%d missing (%s); backfilling",
                self.venue,
                symbol,
                from_id,
                to_id,
                reason,
            )
        stats.gaps_open += 1
        try:
            while to_id is None or next_id <= to_id:
                if to_id is None and stop_at is not None and next_id > stop_at:
                    break  # caught up with where the venue was when we started
                want = limit if to_id is None else min(limit, to_id - next_id + 1)
                stats.backfill_requests += 1

                async def fetch(start: int = next_id, size: int = want) -> list[Trade]:
                    return await client.historical_trades(symbol, from_id=start, limit=size)

                what = f"historical trades of {symbol} from {next_id}"
                page: list[Trade] | None
                if bound is None:
                    page = await self._rest(ctx, fetch, what=what, backfill=True)
                    if page is None:  # refused for good, no bound to record
                        log.error(
                            "marketdata %s %s: catch-up from %d refused and the venue's latest "
                            "trade is unknown; the next trade or tail check bounds the gap",
                            self.venue,
                            symbol,
                            next_id,
                        )
                        return
                else:
                    try:
                        page = await self._bounded(fetch)
                    except _FETCH_ERRORS as exc:
                        self._backfill_failed(exc, what)
                        if fetched_first is not None and fetched_last is not None:
                            if to_id is None:
                                stats.gaps_detected += 1
                            await self._record_backfilled(
                                ctx,
                                symbol,
                                fetched_first,
                                fetched_last,
                                fetched=fetched,
                                reason=reason,
                            )
                        if to_id is None:
                            stats.gaps_detected += 1
                        await self._record_open_gap(
                            ctx, symbol, next_id, bound, reason=reason, error=exc
                        )
                        return
                    self._backfill_ok()
                page = sorted(
                    (
                        t
                        for t in page
                        if t.trade_id >= next_id and (to_id is None or t.trade_id <= to_id)
                    ),
                    key=lambda t: t.trade_id,
                )
                if not page:
                    break
                for trade in page:
                    if trade.trade_id > next_id:
                        await self._lost(ctx, symbol, next_id, trade.trade_id - 1, reason)
                    if fetched_first is None:
                        fetched_first = trade.trade_id
                    fetched_last = trade.trade_id
                    await self._put(ctx, trade)
                    stats.last_enqueued_id = trade.trade_id
                    stats.trades_backfill += 1
                    fetched += 1
                    next_id = trade.trade_id + 1
                if to_id is None and len(page) < want:
                    break  # caught up with the venue
            if to_id is not None and next_id <= to_id:
                # The venue has later trades (the live one) but not these.
                await self._lost(ctx, symbol, next_id, to_id, reason)
                next_id = to_id + 1
            if fetched_first is not None and fetched_last is not None:
                if to_id is None:
                    stats.gaps_detected += 1
                await self._record_backfilled(
                    ctx, symbol, fetched_first, fetched_last, fetched=fetched, reason=reason
                )
        finally:
            stats.gaps_open -= 1

    async def _record_backfilled(
        self, ctx: ChildContext, symbol: str, first: int, last: int, *, fetched: int, reason: str
    ) -> None:
        await self._put(
            ctx,
            GapRecord(
                self.venue,
                symbol,
                first,
                last,
                GapState.BACKFILLED,
                reason,
                f"{fetched} trade(s) fetched via REST historicalTrades",
            ),
        )
        log.info(
            "marketdata %s %s: backfilled %d..%d (%s)", self.venue, symbol, first, last, reason
        )

    async def _record_open_gap(
        self,
        ctx: ChildContext,
        symbol: str,
        from_id: int,
        to_id: int,
        *,
        reason: str,
        error: BaseException,
    ) -> None:
        """Record ``from_id..to_id`` OPEN in the store now, move past it, hand it to the repair.

        Written straight to the store (not through the trades queue) and
        awaited *before* the resume point moves: no trade after the gap can be
        committed — advancing the checkpoint past it — before the gap is durable.
        """
        stats = self._symbols[symbol]
        count = to_id - from_id + 1
        log.error(
            "marketdata %s %s: trades %d..%d (%d) could not be fetched (%s: %s); "
            "recorded as an open gap, backfilled when the venue serves them",
            self.venue,
            symbol,
            from_id,
            to_id,
            count,
            type(error).__name__,
            error,
        )

        async def write() -> Any:
            return await self._market.record_gap(
                self.venue, symbol, CHECKPOINT_STREAM, from_id, to_id, reason=reason
            )

        await self._store_call(ctx, write, what=f"recording the open gap {from_id}..{to_id}")
        stats.gaps_left_open += 1
        stats.open_gaps[(from_id, to_id)] = reason
        stats.last_enqueued_id = max(stats.last_enqueued_id or to_id, to_id)
        self._repairs[(symbol, from_id, to_id)] = reason
        self._repair_wanted.set()

    def _backfill_failed(self, error: BaseException, what: str) -> None:
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

    def _backfill_ok(self) -> None:
        f = self.stats
        if f.backfill_failures:
            log.info(
                "marketdata %s: historicalTrades works again after %d failure(s)",
                self.venue,
                f.backfill_failures,
            )
        f.backfill_failures = 0
        f.backfill_failing_since = None

    # ------------------------------------------------------------------ repair of open gaps

    async def _repair_loop(self, ctx: ChildContext) -> None:
        """Backfill the recorded OPEN gaps, oldest first, retrying until the venue serves them."""
        while True:
            if not self._repairs:
                await self._repair_wanted.wait()
                self._repair_wanted = trio.Event()
                continue
            key = min(self._repairs, key=lambda k: (k[1], k[0], k[2]))
            await self._repair(ctx, *key, reason=self._repairs[key])
            self._repairs.pop(key, None)

    async def _repair(
        self, ctx: ChildContext, symbol: str, low: int, high: int, *, reason: str
    ) -> None:
        """Fetch ``low..high`` (a recorded OPEN gap), queue it, then queue its resolution.

        The resolution is a :class:`GapRecord` with the open gap's own bounds,
        so the writer moves that row out of OPEN once the trades before it
        committed: BACKFILLED when every id was fetched, UNRECOVERABLE (with
        the counts) when the venue no longer had some (those parts get their
        own UNRECOVERABLE rows, as in :meth:`_backfill`).
        """
        stats = self._symbols[symbol]
        client = self._require_client()
        limit = self._settings.backfill_limit
        next_id = low
        first: int | None = None
        last: int | None = None
        fetched = 0
        lost: list[tuple[int, int]] = []
        failures = 0
        stats.gaps_open += 1
        try:
            while next_id <= high:
                want = min(limit, high - next_id + 1)
                stats.backfill_requests += 1
                try:
                    page = await client.historical_trades(symbol, from_id=next_id, limit=want)
                except _FETCH_ERRORS as exc:
                    failures += 1
                    self._backfill_failed(
                        exc, f"repair of open gap {symbol} {low}..{high} from {next_id}"
                    )
                    # A plain sleep: this task is not the one that heartbeats.
                    await trio.sleep(self._rest_backoff.delay_s(failures))
                    continue
                failures = 0
                self._backfill_ok()
                page = sorted(
                    (t for t in page if next_id <= t.trade_id <= high), key=lambda t: t.trade_id
                )
                if not page:
                    break
                for trade in page:
                    if trade.trade_id > next_id:
                        lost.append((next_id, trade.trade_id - 1))
                        await self._lost(ctx, symbol, next_id, trade.trade_id - 1, reason)
                    if first is None:
                        first = trade.trade_id
                    last = trade.trade_id
                    await self._put(ctx, trade)
                    stats.trades_backfill += 1
                    fetched += 1
                    next_id = trade.trade_id + 1
            if next_id <= high:
                lost.append((next_id, high))
                await self._lost(ctx, symbol, next_id, high, reason)
        finally:
            stats.gaps_open -= 1
        total = high - low + 1
        if not lost:
            resolution = f"{fetched} trade(s) fetched via REST historicalTrades (was open)"
            await self._put(
                ctx,
                GapRecord(self.venue, symbol, low, high, GapState.BACKFILLED, reason, resolution),
            )
            log.info(
                "marketdata %s %s: open gap %d..%d backfilled (%s)",
                self.venue,
                symbol,
                low,
                high,
                reason,
            )
            return
        if first is not None and last is not None:
            await self._record_backfilled(ctx, symbol, first, last, fetched=fetched, reason=reason)
        if lost != [(low, high)]:  # else _lost's own record resolves the open row
            missing = sum(b - a + 1 for a, b in lost)
            resolution = (
                f"{missing} of {total} trade(s) no longer available from the venue; "
                f"{fetched} backfilled"
            )
            await self._put(
                ctx,
                GapRecord(
                    self.venue, symbol, low, high, GapState.UNRECOVERABLE, reason, resolution
                ),
            )

    # ------------------------------------------------------------------ tail checks

    async def _tail_checks(self, ctx: ChildContext) -> float | None:
        """Check the symbols whose stream has been quiet ``tail_check_interval_s``.

        Returns the time until the next check is due (``None``: none planned).
        """
        interval = self._settings.tail_check_interval_s
        if interval <= 0 or not self.stats.connected or not self._quiet_since:
            return None
        now = trio.current_time()
        for symbol in self._symbols:
            since = self._quiet_since.get(symbol)
            if since is not None and now - since >= interval:
                await self._tail_check(ctx, symbol)
                self._quiet_since[symbol] = trio.current_time()
        now = trio.current_time()
        return max(0.0, min(self._quiet_since.values()) + interval - now)

    async def _tail_check(self, ctx: ChildContext, symbol: str) -> None:
        """Compare the resume point with the venue's latest trade; backfill a missed tail.

        One cheap call (``GET /api/v3/trades?limit=1``). A failure is only
        logged: the next quiet interval tries again.
        """
        stats = self._symbols[symbol]
        client = self._require_client()
        stats.tail_checks += 1
        try:
            recent = await self._bounded(lambda: client.recent_trades(symbol, 1))
        except _FETCH_ERRORS as exc:
            self.stats.rest_failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "marketdata %s %s: tail check failed (%s); trying again in %.1fs",
                self.venue,
                symbol,
                self.stats.last_error,
                self._settings.tail_check_interval_s,
            )
            return
        last = stats.last_enqueued_id
        if not recent or last is None:
            return
        latest = max(t.trade_id for t in recent)
        if latest <= last:
            return
        stats.tail_gaps += 1
        log.warning(
            "marketdata %s %s: the stream is quiet but the venue is at trade %d, capture at %d",
            self.venue,
            symbol,
            latest,
            last,
        )
        await self._backfill(ctx, symbol, last + 1, latest, reason="tail check")

    async def _lost(
        self, ctx: ChildContext, symbol: str, from_id: int, to_id: int, reason: str
    ) -> None:
        """Record ``from_id..to_id`` as unrecoverable (the venue no longer has them)."""
        stats = self._symbols[symbol]
        count = to_id - from_id + 1
        stats.trades_unrecoverable += count
        log.error(
            "marketdata %s %s: trades %d..%d (%d) are no longer available from the venue; "
            "recording an unrecoverable gap",
            self.venue,
            symbol,
            from_id,
            to_id,
            count,
        )
        await self._put(
            ctx,
            GapRecord(
                self.venue,
                symbol,
                from_id,
                to_id,
                GapState.UNRECOVERABLE,
                reason,
                f"the venue's history starts after these {count} trade(s)",
            ),
        )
        stats.last_enqueued_id = max(stats.last_enqueued_id or to_id, to_id)

    # ------------------------------------------------------------------ the trades queue

    async def _put(self, ctx: ChildContext, item: Item) -> None:
        """Hand ``item`` to the writer; wait (backpressure) when the queue is full.

        The bookkeeping (the item's enqueue time, the symbol's queued count) is
        done *before* the item can reach the writer — a waiting writer may run
        before this task resumes — and undone if the put is cancelled.
        """
        send = self._trades.send
        stats = self._symbols.get(item.symbol)
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
                await self._bounded(lambda: send.send(item))
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

    # ------------------------------------------------------------------ books

    async def _books_loop(self) -> None:
        while True:
            update = await self._depth.take()
            book = self.books[update.symbol]
            result = book.on_update(update)
            if result is UpdateResult.GAP:
                log.warning(
                    "marketdata %s %s: book gap (%s); resyncing",
                    self.venue,
                    book.symbol,
                    book.reason,
                )
                self._mark_resyncing(book.symbol)
                self._snapshot_wanted[book.symbol].set()
            book.publish()

    async def _sync_loop(self, symbol: str) -> None:
        """Fetch a REST snapshot whenever the book needs one (and the stream is up)."""
        book = self.books[symbol]
        failures = 0
        while True:
            await self._snapshot_wanted[symbol].wait()
            self._snapshot_wanted[symbol] = trio.Event()
            while book.needs_snapshot:
                await self._connected.wait()
                client = self._require_client()
                try:
                    snapshot = await client.depth(symbol, self._settings.book_snapshot_limit)
                except (TransientError, RetryExhaustedError, PermanentError) as exc:
                    failures += 1
                    self.stats.rest_failures += 1
                    delay = self._rest_backoff.delay_s(failures)
                    log.warning(
                        "marketdata %s %s: depth snapshot failed (%s: %s); retry in %.3fs",
                        self.venue,
                        symbol,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    await trio.sleep(delay)
                    continue
                offset = client.time_offset_ms or 0
                result = book.on_snapshot(snapshot, as_of_ms=self._wall_clock_ms() + offset)
                book.publish()
                if result is SnapshotResult.SYNCED:
                    failures = 0
                    self.resyncing_since[symbol] = None
                    log.debug(
                        "marketdata %s %s: book in sync at %d",
                        self.venue,
                        symbol,
                        snapshot.last_update_id,
                    )
                    break
                failures += 1
                await trio.sleep(self._rest_backoff.delay_s(failures))

    def _mark_resyncing(self, symbol: str) -> None:
        if self.resyncing_since.get(symbol) is None:
            self.resyncing_since[symbol] = trio.current_time()

    # ------------------------------------------------------------------ retries

    def _require_client(self) -> VenueClient:
        if self._client is None:
            raise RuntimeError("the feed has no venue client (not running)")
        return self._client

    async def _rest(
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
                result = await self._bounded(fn)
            except (TransientError, RetryExhaustedError) as exc:
                failures += 1
                if backfill:
                    self._backfill_failed(exc, what)
                else:
                    self.stats.rest_failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                delay = self._rest_backoff.delay_s(failures)
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
                    self._backfill_failed(exc, what)
                else:
                    self.stats.rest_failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error("marketdata %s: %s refused: %s", self.venue, what, self.stats.last_error)
                return None
            else:
                if backfill:
                    self._backfill_ok()
                return result

    async def _backoff_sleep(self, ctx: ChildContext, delay_s: float) -> None:
        self._bounded_waits += 1
        try:
            await sleep_with_heartbeat(ctx, delay_s, self._settings.heartbeat_interval_s)
        finally:
            self._bounded_waits -= 1

    async def _store_call(
        self, ctx: ChildContext, fn: Callable[[], Awaitable[T]], *, what: str
    ) -> T:
        """Call the store, retrying while it is unavailable (disk full, locked, …)."""
        failures = 0
        while True:
            try:
                return await self._bounded(fn)
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
