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

**Where the parts live.** This module holds the child itself (:class:`Feed`:
its incarnations, the stream session and the routing of its events, resume
points); its parts are siblings, sharing one
:class:`~daemon.marketdata.feed_io.FeedIO`:

* :mod:`.feed_io` — venue and store calls with retries, bounded waits, the
  put into the trades queue with its backpressure accounting;
* :mod:`.backfill` — catch-up and gap backfill, gap records;
* :mod:`.repair` — the repair of OPEN gaps, tail checks of quiet streams;
* :mod:`.depth_sync` — the local books: depth updates and REST snapshots;
* :mod:`.malformed` — malformed frames: dead letters, the check they call for.
"""

from __future__ import annotations

import collections
import logging
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import trio

from daemon.channels import Queue
from daemon.config import MarketDataConfig
from daemon.marketdata.backfill import Backfiller, OpenGaps
from daemon.marketdata.book import DepthConflator, LocalBook
from daemon.marketdata.depth_sync import BookSync
from daemon.marketdata.feed_io import FeedIO
from daemon.marketdata.ingest import wall_clock_ms
from daemon.marketdata.interfaces import MarketStore, VenueLinkLike
from daemon.marketdata.malformed import MalformedFrames
from daemon.marketdata.repair import GapRepair, TailCheck
from daemon.marketdata.stats import FeedStats, SymbolStats
from daemon.model.marketdata import DepthUpdate, Trade
from daemon.resilience import DeadLetterStore
from daemon.supervise import ChildContext
from daemon.venues.base import StreamKind, Subscription
from daemon.venues.binance.stream import MalformedFrame, StreamConnected, StreamDisconnected

__all__ = ["Feed"]

log = logging.getLogger("tradingd.marketdata.feed")


class Feed:
    """One venue connection's market data, as a supervised child (:meth:`run`).

    State that must survive a restart of the child (resume points, books,
    counters) lives in this object and its parts; each incarnation only owns
    its tasks.

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
        self._settings = settings
        self._stream_queue = stream_queue
        self.books = books
        self._symbols = symbols
        self.stats = stats
        self._io = FeedIO(
            venue,
            market,
            settings,
            trades=trades,
            symbols=symbols,
            stats=stats,
            enqueued_at=enqueued_at,
            rng=rng if rng is not None else random.Random(),
        )
        open_gaps = OpenGaps()
        self._backfill = Backfiller(self._io, open_gaps)
        self._repair = GapRepair(self._io, self._backfill, open_gaps)
        self._tail = TailCheck(self._io, self._backfill)
        self._malformed = MalformedFrames(self._io, dead_letters, wall_clock_ms)
        self._books = BookSync(self._io, depth, books, wall_clock_ms)
        self._resume_loaded = False
        self._connections_seen = 0
        self._incarnation_connections = 0
        self._tail_due_at = -math.inf
        self.stream: Any = None  # the current stream object, for /status
        #: Trio time since when each book is out of sync (for health).
        self.resyncing_since: dict[str, float | None] = self._books.resyncing_since

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
        self._books.start()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._beater, ctx)
                nursery.start_soon(self._stop_on_request, ctx, nursery.cancel_scope)
                # A venue down is not a hang.
                client = await self._io.bounded(self._link.wait_up)
                if client.name != self.venue:
                    raise ValueError(
                        f"marketdata {self.venue!r}: the venue client is named {client.name!r}; "
                        "trades carry the client's name, so they must be the same"
                    )
                self._io.client = client
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
                nursery.start_soon(self._books.books_loop)
                nursery.start_soon(self._repair.run, ctx)
                for symbol in self.books:
                    nursery.start_soon(self._books.sync_loop, symbol)
                await self._route(ctx)
        finally:
            self.stats.connected = False
            self.stats.blocked_since = None
            self._io.client = None
            self._books.invalidate("feed stopped")

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
            if self._io.bounded_waits:
                ctx.heartbeat()

    # ------------------------------------------------------------------ resume points

    async def _load_resume_points(self, ctx: ChildContext) -> None:
        """On the first start only: resume each symbol after its last stored trade."""
        if self._resume_loaded:
            return
        for symbol, stats in self._symbols.items():

            async def read(symbol: str = symbol) -> int | None:
                return await self._market.last_trade_id(self.venue, symbol)

            last = await self._io.store_call(
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
        await self._repair.load(ctx)
        self._resume_loaded = True

    # ------------------------------------------------------------------ routing

    async def _route(self, ctx: ChildContext) -> None:
        """Route stream events until cancelled; heartbeat, tail checks and the check after
        a malformed frame are due even while nothing arrives.

        The wait for the next event is timed by one cancel scope that lives
        across many waits (a scope per wait is a large share of the hot path):
        its deadline is set before each wait and lifted right after, so it only
        ever interrupts the wait, never the routing of an event (a put into the
        trades queue, a backfill). An event received in the instant the
        deadline passed (the scope is cancelled already) is routed outside it.
        """
        receive = self._stream_queue.receive
        interval = self._settings.heartbeat_interval_s
        in_hand: object = None
        while True:
            if in_hand is not None:
                await self._dispatch(ctx, in_hand)
                in_hand = None
            with trio.CancelScope() as scope:
                while True:
                    ctx.heartbeat()
                    if trio.current_time() >= self._tail_due_at:
                        # Also while events flow: a busy depth stream must not hide a
                        # quiet symbol.
                        tail_in = await self._tail.due(ctx)
                        self._tail_due_at = trio.current_time() + (
                            interval if tail_in is None else tail_in
                        )
                    try:
                        event = receive.receive_nowait()
                    except trio.WouldBlock:
                        now = trio.current_time()
                        wait_s = min(interval, max(0.0, self._tail_due_at - now))
                        verify_in = self._malformed.verify_in()
                        if verify_in is not None:
                            if verify_in <= 0:
                                await self._verify_after_malformed(ctx)
                                continue
                            wait_s = min(wait_s, verify_in)
                        scope.deadline = now + wait_s
                        event = await receive.receive()
                        scope.deadline = math.inf
                        if scope.cancel_called:
                            in_hand = event
                            break
                    await self._dispatch(ctx, event)
            # Here after a wait timed out (idle: heartbeat and wait again) or with an
            # event received as its deadline passed.

    async def _dispatch(self, ctx: ChildContext, event: object) -> None:
        if isinstance(event, Trade):
            await self._on_trade(ctx, event)
        elif isinstance(event, DepthUpdate):
            if not self._books.offer(event):
                self.stats.unexpected += 1
        elif isinstance(event, StreamConnected):
            await self._on_connected(ctx, event)
        elif isinstance(event, StreamDisconnected):
            self._on_disconnected(event)
        elif isinstance(event, MalformedFrame):
            await self._malformed.on_frame(ctx, event)
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
            await self._backfill.backfill(
                ctx, trade.symbol, last + 1, trade.trade_id - 1, reason="sequence jump"
            )
            last = stats.last_enqueued_id
            if last is not None and trade.trade_id <= last:
                stats.duplicates += 1
                return
        await self._io.put(ctx, trade)
        stats.last_enqueued_id = trade.trade_id
        stats.trades_stream += 1
        self._tail.heard(trade.symbol)

    async def _on_connected(self, ctx: ChildContext, event: StreamConnected) -> None:
        self._connections_seen += 1
        self._incarnation_connections += 1
        self.stats.connections += 1
        self.stats.connected = True
        self._books.connected(f"stream connection {event.connection_number} opened")
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
                    nursery.start_soon(self._backfill.catch_up, ctx, symbol, reason)
        finally:
            self.stats.catching_up = False
        self.stats.catch_ups += 1
        self._tail.restart()
        self._tail_due_at = -math.inf  # plan the checks of this connection now

    def _on_disconnected(self, event: StreamDisconnected) -> None:
        self.stats.connected = False
        key = event.reason.value
        self.stats.disconnects[key] = self.stats.disconnects.get(key, 0) + 1
        self._books.disconnected(f"stream disconnected ({event.reason.value})")

    async def _verify_after_malformed(self, ctx: ChildContext) -> None:
        """The stream went quiet after a malformed frame: fetch any trade it replaced.

        A garbled frame may have been a trade. While trades keep coming the
        next one reveals the gap; if it was the last before a quiet spell,
        only asking the venue does.
        """
        self._malformed.verifying()
        for symbol in self._symbols:
            await self._backfill.catch_up(ctx, symbol, "malformed frame")
