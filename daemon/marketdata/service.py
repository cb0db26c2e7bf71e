"""One venue's market-data capture as supervised children, with health, status and metrics.

:class:`MarketDataService` builds the pipeline of one venue — its queues in
the daemon's registry, the local books, the :class:`~.feed.Feed`, the
:class:`~.ingest.IngestWriter` and the :class:`~.snapshots.Snapshotter` —
and hands the lead three :class:`~daemon.supervise.ChildSpec` s to put under a
``one_for_one`` supervisor named ``"marketdata"``::

    service = MarketDataService(
        "binance", link, store, store.dead_letters, app.queues, settings
    )
    marketdata = Supervisor("marketdata", service.children(), policy)
    health.add_check("marketdata:binance", service.check)
    metrics.register_collector(service.metrics)

All state that must outlive a child's restart (resume points, uncommitted
trades taken by the writer, books, counters) lives in the service, and the
queues are the registry's: a restarted feed finds the writer's queue intact,
and a restarted writer finds the trades the previous incarnation had taken.
Children are ordered writer, feed, snapshotter, so a graceful stop (reverse
order) stops the feed first and lets the writer drain the queue.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from typing import Any

import trio

from daemon.channels import Overflow, Queues
from daemon.config import MarketDataConfig
from daemon.health import HealthLevel
from daemon.marketdata.book import BookView, DepthConflator, LocalBook
from daemon.marketdata.feed import Feed
from daemon.marketdata.ingest import IngestWriter, wall_clock_ms
from daemon.marketdata.interfaces import StoreLike, VenueLinkLike
from daemon.marketdata.snapshots import Snapshotter
from daemon.marketdata.stats import FeedStats, SnapshotStats, WriterStats, by_symbol
from daemon.metrics import MetricFamily
from daemon.resilience import DeadLetterStore
from daemon.supervise import ChildSpec

__all__ = ["MarketDataService"]

#: Feed shutdown grace: it only has to cancel its stream and REST calls.
FEED_SHUTDOWN_GRACE_S = 2.0


def _trio_now() -> float | None:
    try:
        return trio.current_time()
    except RuntimeError:  # called outside a Trio run (a CLI snapshot)
        return None


class MarketDataService:
    """Market-data capture of one venue (see the module docstring).

    Args:
        venue_name: The venue's name (``[venues.NAME]``); equals the client's
            name and the ``venue`` of every stored trade.
        link: Gives the venue client once the venue answered
            (:class:`~daemon.venues.link.VenueLink`).
        store: The store owner (:class:`~daemon.store.SqliteStore`); its
            ``market`` tables are used.
        dead_letters: Durable dead letters (``store.dead_letters``).
        queues: The daemon's queue registry; three queues are declared in it:
            ``marketdata.NAME.trades`` (BLOCK), ``marketdata.NAME.stream``
            (BLOCK) and ``marketdata.NAME.depth`` (CONFLATE).
        settings: What to capture and how.
        wall_clock_ms: Epoch ms (lag, dead letters); inject in tests.
        rng: Jitter source of the backoffs (seed it in tests).
    """

    def __init__(  # noqa: PLR0917 - the lead's call site passes these positionally
        self,
        venue_name: str,
        link: VenueLinkLike,
        store: StoreLike,
        dead_letters: DeadLetterStore,
        queues: Queues,
        settings: MarketDataConfig,
        *,
        wall_clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue_name
        self.settings = settings
        rng = rng if rng is not None else random.Random()
        market = store.market
        prefix = f"marketdata.{venue_name}"
        self.trades_queue = queues.open(
            f"{prefix}.trades",
            settings.trades_queue_capacity,
            overflow=Overflow.BLOCK,
            producer=f"feed:{venue_name}",
            consumer=f"ingest:{venue_name}",
        )
        self.stream_queue = queues.open(
            f"{prefix}.stream",
            settings.stream_queue_capacity,
            overflow=Overflow.BLOCK,
            producer=f"stream:{venue_name}",
            consumer=f"feed:{venue_name}",
        )
        depth_queue = queues.open(
            f"{prefix}.depth",
            len(settings.symbols),
            overflow=Overflow.CONFLATE,
            producer=f"feed:{venue_name}",
            consumer=f"books:{venue_name}",
        )
        self.depth = DepthConflator(depth_queue, settings.symbols)
        self.books = {
            symbol: LocalBook(venue_name, symbol, view_depth=settings.view_depth)
            for symbol in settings.symbols
        }
        self.symbol_stats = by_symbol(settings.symbols, settings.lag_window)
        self.feed_stats = FeedStats()
        self.writer_stats = WriterStats()
        self.snapshot_stats = SnapshotStats()
        #: Trio time each item in the trades queue was put, oldest first.
        self.enqueued_at: collections.deque[float] = collections.deque()
        self.writer = IngestWriter(
            venue_name,
            market,
            self.trades_queue,
            dead_letters,
            settings,
            symbols=self.symbol_stats,
            stats=self.writer_stats,
            enqueued_at=self.enqueued_at,
            wall_clock_ms=wall_clock_ms,
            rng=rng,
        )
        self.feed = Feed(
            venue_name,
            link,
            market,
            dead_letters,
            settings,
            trades=self.trades_queue,
            stream_queue=self.stream_queue,
            depth=self.depth,
            books=self.books,
            symbols=self.symbol_stats,
            stats=self.feed_stats,
            enqueued_at=self.enqueued_at,
            wall_clock_ms=wall_clock_ms,
            rng=rng,
        )
        self.snapshotter: Snapshotter | None = None
        if settings.snapshot_interval_s > 0:
            self.snapshotter = Snapshotter(
                venue_name, market, self.books, settings, stats=self.snapshot_stats
            )

    # ------------------------------------------------------------------ wiring

    def children(self) -> list[ChildSpec]:
        """The children to supervise (``one_for_one``), in start order.

        ``ingest:NAME`` (critical: without it nothing is stored),
        ``feed:NAME`` and ``snapshots:NAME`` (not critical: a venue outage
        must not make systemd restart the daemon). All declare heartbeats.
        """
        beat = self.settings.heartbeat_interval_s
        specs = [
            ChildSpec(
                f"ingest:{self.venue}",
                self.writer.run,
                shutdown_grace_s=self.settings.drain_timeout_s,
                heartbeat_interval_s=beat,
                critical=True,
            ),
            ChildSpec(
                f"feed:{self.venue}",
                self.feed.run,
                shutdown_grace_s=FEED_SHUTDOWN_GRACE_S,
                heartbeat_interval_s=beat,
                critical=False,
            ),
        ]
        if self.snapshotter is not None:
            specs.append(
                ChildSpec(
                    f"snapshots:{self.venue}",
                    self.snapshotter.run,
                    shutdown_grace_s=FEED_SHUTDOWN_GRACE_S,
                    heartbeat_interval_s=beat,
                    critical=False,
                )
            )
        return specs

    def book(self, symbol: str) -> LocalBook:
        """The local book of ``symbol`` (``KeyError`` if not captured)."""
        return self.books[symbol]

    def latest(self, symbol: str) -> Any:
        """``AsyncValue[BookView]`` of ``symbol``: what strategies read and wait on."""
        return self.books[symbol].latest

    def view(self, symbol: str) -> BookView:
        """The latest published :class:`BookView` of ``symbol``."""
        view: BookView = self.books[symbol].latest.value
        return view

    def queue_age_s(self, now: float | None = None) -> float | None:
        """Age of the oldest item in the trades queue (its consumer lag), or ``None``."""
        now = _trio_now() if now is None else now
        if not self.enqueued_at or now is None:
            return None
        return max(0.0, now - self.enqueued_at[0])

    # ------------------------------------------------------------------ health

    def check(self) -> tuple[HealthLevel, list[str] | None]:
        """Health of this venue's capture (register as ``marketdata:NAME``).

        UNHEALTHY while the writer cannot commit (the store's own check says
        why); DEGRADED while the stream is down, the feed has been blocked on
        a full queue or the consumer lag has exceeded ``lag_warn_s``, a book
        has been out of sync for ``resync_warn_s`` with the stream up, a
        recorded gap is still open (trades neither stored nor known lost), or
        ``backfill_failures_warn`` ``historicalTrades`` fetches failed in a row.
        """
        now = _trio_now()
        name = f"marketdata {self.venue}"
        level = HealthLevel.HEALTHY
        reasons: list[str] = []
        w = self.writer_stats
        if w.failing_since is not None:
            level = HealthLevel.UNHEALTHY
            failing = "" if now is None else f" for {now - w.failing_since:.1f}s"
            reasons.append(
                f"{name}: writer cannot commit{failing} ({w.consecutive_failures} failed "
                f"attempt(s), {self.writer.pending} item(s) kept): {w.last_error}"
            )
        f = self.feed_stats
        warn_s = self.settings.lag_warn_s
        age = self.queue_age_s(now)
        if age is not None and age > warn_s:
            level = max(level, HealthLevel.DEGRADED)
            depth = self.trades_queue.send.statistics().current_buffer_used
            blocked = "" if f.blocked_since is None else "; the feed is blocked on it"
            reasons.append(
                f"{name}: writer behind: the oldest queued trade waited {age:.1f}s "
                f"(trades queue {depth}/{self.trades_queue.capacity}{blocked})"
            )
        if f.saturated_since is not None and now is not None and now - f.saturated_since > warn_s:
            # Every put has waited for that long: the writer is the bottleneck,
            # however young the oldest queued trade looks with a small queue.
            level = max(level, HealthLevel.DEGRADED)
            reasons.append(
                f"{name}: trades queue saturated for {now - f.saturated_since:.1f}s "
                "(the writer is behind the venue; the feed waits, nothing is dropped)"
            )
        for symbol, stats in self.symbol_stats.items():
            last = stats.lag.last_ms
            backlog = stats.queued + stats.pending
            if backlog and last is not None and last > warn_s * 1000:
                level = max(level, HealthLevel.DEGRADED)
                p50, top = stats.lag.quantile(0.5), stats.lag.quantile(1.0)
                reasons.append(
                    f"{name} {symbol}: consumer lag {last / 1000:.1f}s "
                    f"(p50 {_seconds(p50)}, max {_seconds(top)}; {backlog} waiting)"
                )
        for symbol, stats in self.symbol_stats.items():
            if stats.open_gaps:
                # Trades neither stored nor known lost: capture is incomplete.
                level = max(level, HealthLevel.DEGRADED)
                ranges = sorted(stats.open_gaps)
                shown = ", ".join(f"{low}..{high}" for low, high in ranges[:3])
                more = f" and {len(ranges) - 3} more" if len(ranges) > 3 else ""
                reasons.append(
                    f"{name} {symbol}: {len(ranges)} open gap(s), {stats.open_gap_trades} "
                    f"trade(s) not stored yet (ids {shown}{more}); backfill pending"
                )
        if f.backfill_failures >= self.settings.backfill_failures_warn:
            level = max(level, HealthLevel.DEGRADED)
            failing = (
                ""
                if f.backfill_failing_since is None or now is None
                else f" for {now - f.backfill_failing_since:.1f}s"
            )
            reasons.append(
                f"{name}: backfill failing: {f.backfill_failures} historicalTrades fetch(es) "
                f"failed in a row{failing} (last: {f.backfill_last_error})"
            )
        if not f.connected:
            level = max(level, HealthLevel.DEGRADED)
            reasons.append(f"{name}: stream not connected")
        elif now is not None:
            for symbol, resyncing in self.feed.resyncing_since.items():
                if resyncing is not None and now - resyncing > self.settings.resync_warn_s:
                    level = max(level, HealthLevel.DEGRADED)
                    reasons.append(
                        f"{name} {symbol}: book out of sync for {now - resyncing:.1f}s "
                        f"({self.books[symbol].reason})"
                    )
        return level, reasons or None

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """JSON-able state for ``/status`` (``status["marketdata"][NAME]``)."""
        now = _trio_now()
        now_or_zero = 0.0 if now is None else now
        level, reasons = self.check()
        trades_queue = self.trades_queue.stats()
        symbols: dict[str, Any] = {}
        for symbol, stats in self.symbol_stats.items():
            book = self.books[symbol]
            view: BookView = book.latest.value
            since = self.feed.resyncing_since.get(symbol)
            symbols[symbol] = {
                **stats.snapshot(),
                "book": {
                    "state": book.state.value,
                    "reason": book.reason or None,
                    "resyncing_for_s": None if since is None or now is None else now - since,
                    "resyncs": book.resyncs,
                    "gaps": book.gaps,
                    "snapshots": book.snapshots,
                    "conflated": self.depth.conflated.get(symbol, 0),
                    **view.to_dict(),
                },
            }
        stream = self.feed.stream
        return {
            "venue": self.venue,
            "health": {"level": level.value, "reasons": reasons},
            "open_gaps": {
                "count": sum(len(st.open_gaps) for st in self.symbol_stats.values()),
                "trades": sum(st.open_gap_trades for st in self.symbol_stats.values()),
                "symbols": sorted(s for s, st in self.symbol_stats.items() if st.open_gaps),
            },
            "symbols": symbols,
            "feed": {
                **self.feed_stats.snapshot(now_or_zero),
                "stream": stream.snapshot() if hasattr(stream, "snapshot") else None,
            },
            "writer": {
                **self.writer_stats.snapshot(now_or_zero),
                "pending": self.writer.pending,
            },
            "snapshots": None if self.snapshotter is None else self.snapshot_stats.snapshot(),
            "queues": {
                "trades": {**trades_queue, "oldest_age_s": self.queue_age_s(now)},
                "stream": self.stream_queue.stats(),
                "depth": {
                    "pending": self.depth.pending(),
                    "dropped": sum(self.depth.conflated.values()),
                },
            },
        }

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> list[MetricFamily]:
        """Metric families of this venue's capture (a registry collector)."""
        v = self.venue
        now = _trio_now()
        per_symbol = self.symbol_stats.items()

        def sym(symbol: str, **extra: str) -> tuple[tuple[str, str], ...]:
            return (("venue", v), ("symbol", symbol), *extra.items())

        def ven(**extra: str) -> tuple[tuple[str, str], ...]:
            return (("venue", v), *extra.items())

        lag: list[tuple[Any, float]] = []
        for symbol, stats in per_symbol:
            for stat, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
                value = stats.lag.quantile(q)
                if value is not None:
                    lag.append((sym(symbol, stat=stat), value / 1000))
        f, w = self.feed_stats, self.writer_stats
        blocked = 0.0 if f.blocked_since is None or now is None else now - f.blocked_since
        families = [
            MetricFamily.counter(
                "tradingd_marketdata_trades_received",
                "Trades handed to the writer, by source (live stream or REST backfill).",
                [(sym(s, source="stream"), st.trades_stream) for s, st in per_symbol]
                + [(sym(s, source="backfill"), st.trades_backfill) for s, st in per_symbol],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_trades_duplicate",
                "Live trades already captured (replays after a reconnect), skipped.",
                [(sym(s), st.duplicates) for s, st in per_symbol],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_trades_stored",
                "Trades written by the writer: inserted (new) or skipped (already stored).",
                [(sym(s, result="inserted"), st.inserted) for s, st in per_symbol]
                + [(sym(s, result="skipped"), st.skipped) for s, st in per_symbol],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_last_trade_id",
                "Highest trade id committed to the store.",
                [
                    (sym(s), st.last_committed_id)
                    for s, st in per_symbol
                    if st.last_committed_id is not None
                ],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_commit_lag_seconds",
                "Consumer lag (venue event time to commit) over the recent window.",
                lag,
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_gaps_open",
                "Trade-id gaps being backfilled now.",
                [(sym(s), st.gaps_open) for s, st in per_symbol],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_gaps",
                "Trade-id gaps recorded in the store, by outcome.",
                [(sym(s, state="backfilled"), st.gaps_backfilled) for s, st in per_symbol]
                + [(sym(s, state="unrecoverable"), st.gaps_unrecoverable) for s, st in per_symbol]
                + [(sym(s, state="open"), st.gaps_left_open) for s, st in per_symbol],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_open_gaps",
                "Recorded gaps still open: trades neither stored nor known lost (health is "
                "degraded while any is open).",
                [(sym(s), len(st.open_gaps)) for s, st in per_symbol],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_gap_trades",
                "Trade ids inside the open gaps (their span).",
                [(sym(s), st.open_gap_trades) for s, st in per_symbol],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_backfill_consecutive_failures",
                "historicalTrades fetches failed in a row (0 once one works).",
                [(ven(), f.backfill_failures)],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_backfill_failures",
                "historicalTrades fetches that failed (the gap is kept open and retried).",
                [(ven(), f.backfill_failures_total)],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_tail_checks",
                "Quiet-stream checks of the venue's latest trade id, and tails they found.",
                [(sym(s, result="checked"), st.tail_checks) for s, st in per_symbol]
                + [(sym(s, result="tail_found"), st.tail_gaps) for s, st in per_symbol],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_trades_unrecoverable",
                "Trade ids the venue no longer had when they were backfilled (recorded gaps).",
                [(sym(s), st.trades_unrecoverable) for s, st in per_symbol],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_backfill_requests",
                "historicalTrades requests made to fill gaps.",
                [(sym(s), st.backfill_requests) for s, st in per_symbol],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_book_in_sync",
                "1 when the local book is verified, 0 while it resyncs.",
                [(sym(s), 1.0 if b.in_sync else 0.0) for s, b in self.books.items()],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_book_resyncs",
                "Times a synced book was invalidated (gap, reconnect).",
                [(sym(s), b.resyncs) for s, b in self.books.items()],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_depth_conflated",
                "Depth updates merged into a pending one (the depth queue conflates).",
                [(sym(s), n) for s, n in sorted(self.depth.conflated.items())],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_stream_connected",
                "1 while the venue stream is connected.",
                [(ven(), 1.0 if f.connected else 0.0)],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_stream_disconnects",
                "Stream connections that ended, by reason.",
                [(ven(reason=r), n) for r, n in sorted(f.disconnects.items())],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_malformed_frames",
                "Stream frames that could not be decoded (dead-lettered and skipped).",
                [(ven(), f.malformed)],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_dead_letters",
                "Dead letters written (malformed frames, refused rows).",
                [(ven(kind="frame"), f.dead_lettered), (ven(kind="rows"), w.rows_dead_lettered)],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_put_waits",
                "Puts into the full trades queue (the feed waited: backpressure).",
                [(ven(), f.put_waits)],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_put_wait_seconds",
                "Time the feed spent waiting on the full trades queue.",
                [(ven(), f.put_wait_s_total)],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_queue_oldest_age_seconds",
                "Age of the oldest item in the trades queue (the writer's consumer lag).",
                [(ven(), self.queue_age_s(now) or 0.0)],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_feed_blocked_seconds",
                "How long the feed has been waiting on the full trades queue (0: not blocked).",
                [(ven(), blocked)],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_write_rows",
                "Rows handed to the store by the writer, by result.",
                [
                    (ven(result="attempted"), w.rows_attempted),
                    (ven(result="inserted"), w.rows_inserted),
                    (ven(result="skipped"), w.rows_skipped),
                    (ven(result="failed"), w.rows_failed),
                ],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_write_chunks",
                "Store transactions of the writer, by result.",
                [
                    (ven(result="committed"), w.chunks_committed),
                    (ven(result="failed"), w.chunks_failed),
                ],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_store_errors",
                "Store errors met by the writer (it keeps the data and retries).",
                [(ven(error=e), n) for e, n in sorted(w.store_errors.items())],
            ),
            MetricFamily.gauge(
                "tradingd_marketdata_writer_failing",
                "1 while the writer cannot commit.",
                [(ven(), 1.0 if w.failing_since is not None else 0.0)],
            ),
            MetricFamily.counter(
                "tradingd_marketdata_book_snapshots",
                "Stored order book snapshots, by result.",
                [
                    (ven(result="inserted"), self.snapshot_stats.inserted),
                    (ven(result="skipped"), self.snapshot_stats.skipped),
                    (ven(result="failed"), self.snapshot_stats.failed),
                ],
            ),
        ]
        return families


def _seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s"
