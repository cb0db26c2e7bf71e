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

The service builds and holds that state; what it reports about it (health
check, ``/status``, metrics) is computed in :mod:`daemon.marketdata.report`.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from typing import Any

from daemon.channels import Overflow, Queues
from daemon.config import MarketDataConfig
from daemon.health import HealthLevel
from daemon.marketdata.book import BookView, DepthConflator, LocalBook
from daemon.marketdata.feed import Feed
from daemon.marketdata.ingest import IngestWriter, wall_clock_ms
from daemon.marketdata.interfaces import StoreLike, VenueLinkLike
from daemon.marketdata.report import capture_health, capture_metrics, capture_status, trio_now
from daemon.marketdata.snapshots import Snapshotter
from daemon.marketdata.stats import FeedStats, SnapshotStats, WriterStats, by_symbol
from daemon.metrics import MetricFamily
from daemon.resilience import DeadLetterStore
from daemon.supervise import ChildSpec

__all__ = ["MarketDataService"]

#: Feed shutdown grace: it only has to cancel its stream and REST calls.
FEED_SHUTDOWN_GRACE_S = 2.0


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
        now = trio_now() if now is None else now
        if not self.enqueued_at or now is None:
            return None
        return max(0.0, now - self.enqueued_at[0])

    # ------------------------------------------------------------------ reports

    def check(self) -> tuple[HealthLevel, list[str] | None]:
        """Health of this venue's capture (register as ``marketdata:NAME``).

        The rules (UNHEALTHY while the writer cannot commit, DEGRADED on a
        down stream, a lagging writer, a book out of sync, an open gap or a
        failing backfill) are :func:`~daemon.marketdata.report.capture_health`'s.
        """
        return capture_health(self)

    def status(self) -> dict[str, Any]:
        """JSON-able state for ``/status`` (``status["marketdata"][NAME]``)."""
        return capture_status(self)

    def metrics(self) -> list[MetricFamily]:
        """Metric families of this venue's capture (a registry collector)."""
        return capture_metrics(self)
