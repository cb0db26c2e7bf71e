"""Market-data capture: venue stream → gapless trades in the store, local books for strategies.

The path of a trade, top to bottom (docs/ARCHITECTURE.md §4 Market data, §5)::

    venue WS ─► Feed ─[trades queue: BLOCK]─► IngestWriter ─► store (trades + checkpoint)
                 │  gap? ─► REST historicalTrades backfill ─┘   (gaps table when unrecoverable)
                 └─[depth queue: CONFLATE]─► LocalBook ─► AsyncValue[BookView] ─► strategies
                                                      └─► Snapshotter ─► store (book snapshots)

Settings: the ``[marketdata]`` config section itself
(:class:`daemon.config.MarketDataConfig`, keys checked by the config loader).

Modules:

* :mod:`.book` — :class:`LocalBook` (Binance's sync procedure, pure),
  :class:`BookView`, :class:`DepthConflator`, :func:`merge_updates`;
* :mod:`.feed` — :class:`Feed`: the child; stream routing, resume points; its parts:
  :mod:`.feed_io` (venue and store calls with retries, the trades queue),
  :mod:`.backfill` (catch-up and gap backfill), :mod:`.repair` (repair of open
  gaps, tail checks), :mod:`.depth_sync` (books and REST depth snapshots),
  :mod:`.malformed` (malformed frames to dead letters);
* :mod:`.ingest` — :class:`IngestWriter`: chunked, checkpointed, retrying writes;
  one store write (trades or a gap record) in :mod:`.ingest_commit` (:class:`GapRecord`);
* :mod:`.snapshots` — :class:`Snapshotter`: periodic top-N book snapshots;
* :mod:`.service` — :class:`MarketDataService`: the queues and the children; its health,
  status and metrics in :mod:`.report`;
* :mod:`.interfaces` — what capture needs from venue and store (protocols; the
  store's :class:`~daemon.store.marketdata.MarketDataStore` facade);
* :mod:`.stats` — shared counters and the lag window.
"""

from __future__ import annotations

from daemon.marketdata.book import (
    BookState,
    BookView,
    DepthConflator,
    LocalBook,
    SnapshotResult,
    UpdateResult,
    merge_updates,
)
from daemon.marketdata.feed import Feed
from daemon.marketdata.ingest import CHECKPOINT_STREAM, GapRecord, IngestWriter
from daemon.marketdata.interfaces import MarketStore, StoreLike, VenueClient, VenueLinkLike
from daemon.marketdata.service import MarketDataService
from daemon.marketdata.snapshots import Snapshotter

__all__ = [
    "CHECKPOINT_STREAM",
    "BookState",
    "BookView",
    "DepthConflator",
    "Feed",
    "GapRecord",
    "IngestWriter",
    "LocalBook",
    "MarketDataService",
    "MarketStore",
    "SnapshotResult",
    "Snapshotter",
    "StoreLike",
    "UpdateResult",
    "VenueClient",
    "VenueLinkLike",
    "merge_updates",
]
