"""What one venue's market-data capture reports: its health check, its status and its metrics.

The :class:`~daemon.marketdata.service.MarketDataService` of a venue hands
these to the daemon (``health.add_check``, ``/status``, a metrics collector);
they only read its state, described by :class:`Capture`:

* :func:`capture_health`: the level and reasons of ``marketdata:NAME``;
* :func:`capture_status`: ``status["marketdata"][NAME]``;
* :func:`capture_metrics`: the ``tradingd_marketdata_*`` metric families.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from daemon.channels import Queue
from daemon.config import MarketDataConfig
from daemon.health import HealthLevel
from daemon.marketdata.book import BookView, DepthConflator, LocalBook
from daemon.marketdata.feed import Feed
from daemon.marketdata.ingest import IngestWriter
from daemon.marketdata.snapshots import Snapshotter
from daemon.marketdata.stats import FeedStats, SnapshotStats, SymbolStats, WriterStats
from daemon.metrics import MetricFamily

__all__ = ["Capture", "capture_health", "capture_metrics", "capture_status", "trio_now"]


def trio_now() -> float | None:
    """Trio's clock, or ``None`` when called outside a Trio run (a CLI snapshot)."""
    try:
        return trio.current_time()
    except RuntimeError:  # called outside a Trio run (a CLI snapshot)
        return None


class Capture(Protocol):
    """The state of one venue's capture that its reports read (the service's attributes)."""

    venue: str
    settings: MarketDataConfig
    trades_queue: Queue[Any]
    stream_queue: Queue[Any]
    depth: DepthConflator
    books: dict[str, LocalBook]
    symbol_stats: dict[str, SymbolStats]
    feed_stats: FeedStats
    writer_stats: WriterStats
    snapshot_stats: SnapshotStats
    feed: Feed
    writer: IngestWriter
    snapshotter: Snapshotter | None

    def queue_age_s(self, now: float | None = None) -> float | None:
        """Age of the oldest item in the trades queue, or ``None``."""
        ...


def capture_health(capture: Capture) -> tuple[HealthLevel, list[str] | None]:
    """Health of ``capture`` (the service registers it as ``marketdata:NAME``).

    UNHEALTHY while the writer cannot commit (the store's own check says
    why); DEGRADED while the stream is down, the feed has been blocked on
    a full queue or the consumer lag has exceeded ``lag_warn_s``, a book
    has been out of sync for ``resync_warn_s`` with the stream up, a
    recorded gap is still open (trades neither stored nor known lost), or
    ``backfill_failures_warn`` ``historicalTrades`` fetches failed in a row.
    """
    now = trio_now()
    name = f"marketdata {capture.venue}"
    level = HealthLevel.HEALTHY
    reasons: list[str] = []
    w = capture.writer_stats
    if w.failing_since is not None:
        level = HealthLevel.UNHEALTHY
        failing = "" if now is None else f" for {now - w.failing_since:.1f}s"
        reasons.append(
            f"{name}: writer cannot commit{failing} ({w.consecutive_failures} failed "
            f"attempt(s), {capture.writer.pending} item(s) kept): {w.last_error}"
        )
    f = capture.feed_stats
    warn_s = capture.settings.lag_warn_s
    age = capture.queue_age_s(now)
    if age is not None and age > warn_s:
        level = max(level, HealthLevel.DEGRADED)
        depth = capture.trades_queue.send.statistics().current_buffer_used
        blocked = "" if f.blocked_since is None else "; the feed is blocked on it"
        reasons.append(
            f"{name}: writer behind: the oldest queued trade waited {age:.1f}s "
            f"(trades queue {depth}/{capture.trades_queue.capacity}{blocked})"
        )
    if f.saturated_since is not None and now is not None and now - f.saturated_since > warn_s:
        # Every put has waited for that long: the writer is the bottleneck,
        # however young the oldest queued trade looks with a small queue.
        level = max(level, HealthLevel.DEGRADED)
        reasons.append(
            f"{name}: trades queue saturated for {now - f.saturated_since:.1f}s "
            "(the writer is behind the venue; the feed waits, nothing is dropped)"
        )
    for symbol, stats in capture.symbol_stats.items():
        last = stats.lag.last_ms
        backlog = stats.queued + stats.pending
        if backlog and last is not None and last > warn_s * 1000:
            level = max(level, HealthLevel.DEGRADED)
            p50, top = stats.lag.quantile(0.5), stats.lag.quantile(1.0)
            reasons.append(
                f"{name} {symbol}: consumer lag {last / 1000:.1f}s "
                f"(p50 {_seconds(p50)}, max {_seconds(top)}; {backlog} waiting)"
            )
    for symbol, stats in capture.symbol_stats.items():
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
    if f.backfill_failures >= capture.settings.backfill_failures_warn:
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
        for symbol, resyncing in capture.feed.resyncing_since.items():
            if resyncing is not None and now - resyncing > capture.settings.resync_warn_s:
                level = max(level, HealthLevel.DEGRADED)
                reasons.append(
                    f"{name} {symbol}: book out of sync for {now - resyncing:.1f}s "
                    f"({capture.books[symbol].reason})"
                )
    return level, reasons or None


def capture_status(capture: Capture) -> dict[str, Any]:
    """JSON-able state of ``capture`` for ``/status`` (``status["marketdata"][NAME]``)."""
    now = trio_now()
    now_or_zero = 0.0 if now is None else now
    level, reasons = capture_health(capture)
    trades_queue = capture.trades_queue.stats()
    symbols: dict[str, Any] = {}
    for symbol, stats in capture.symbol_stats.items():
        book = capture.books[symbol]
        view: BookView = book.latest.value
        since = capture.feed.resyncing_since.get(symbol)
        symbols[symbol] = {
            **stats.snapshot(),
            "book": {
                "state": book.state.value,
                "reason": book.reason or None,
                "resyncing_for_s": None if since is None or now is None else now - since,
                "resyncs": book.resyncs,
                "gaps": book.gaps,
                "snapshots": book.snapshots,
                "conflated": capture.depth.conflated.get(symbol, 0),
                **view.to_dict(),
            },
        }
    stream = capture.feed.stream
    return {
        "venue": capture.venue,
        "health": {"level": level.value, "reasons": reasons},
        "open_gaps": {
            "count": sum(len(st.open_gaps) for st in capture.symbol_stats.values()),
            "trades": sum(st.open_gap_trades for st in capture.symbol_stats.values()),
            "symbols": sorted(s for s, st in capture.symbol_stats.items() if st.open_gaps),
        },
        "symbols": symbols,
        "feed": {
            **capture.feed_stats.snapshot(now_or_zero),
            "stream": stream.snapshot() if hasattr(stream, "snapshot") else None,
        },
        "writer": {
            **capture.writer_stats.snapshot(now_or_zero),
            "pending": capture.writer.pending,
        },
        "snapshots": None if capture.snapshotter is None else capture.snapshot_stats.snapshot(),
        "queues": {
            "trades": {**trades_queue, "oldest_age_s": capture.queue_age_s(now)},
            "stream": capture.stream_queue.stats(),
            "depth": {
                "pending": capture.depth.pending(),
                "dropped": sum(capture.depth.conflated.values()),
            },
        },
    }


def capture_metrics(capture: Capture) -> list[MetricFamily]:
    """Metric families of ``capture`` (the service's registry collector)."""
    v = capture.venue
    now = trio_now()
    per_symbol = capture.symbol_stats.items()

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
    f, w = capture.feed_stats, capture.writer_stats
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
            [(sym(s), 1.0 if b.in_sync else 0.0) for s, b in capture.books.items()],
        ),
        MetricFamily.counter(
            "tradingd_marketdata_book_resyncs",
            "Times a synced book was invalidated (gap, reconnect).",
            [(sym(s), b.resyncs) for s, b in capture.books.items()],
        ),
        MetricFamily.counter(
            "tradingd_marketdata_depth_conflated",
            "Depth updates merged into a pending one (the depth queue conflates).",
            [(sym(s), n) for s, n in sorted(capture.depth.conflated.items())],
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
            [(ven(), capture.queue_age_s(now) or 0.0)],
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
                (ven(result="inserted"), capture.snapshot_stats.inserted),
                (ven(result="skipped"), capture.snapshot_stats.skipped),
                (ven(result="failed"), capture.snapshot_stats.failed),
            ],
        ),
    ]
    return families


def _seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s"
