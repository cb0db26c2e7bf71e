"""Local books of one feed: diff-depth updates applied, REST snapshots fetched when needed.

Depth updates reach :class:`BookSync` through a
:class:`~daemon.marketdata.book.DepthConflator` (never blocks, merges per
symbol); its books task applies them to each symbol's
:class:`~daemon.marketdata.book.LocalBook`. Every (re)connection and every
gap in the update ids invalidates a book; a per-symbol sync task then fetches
the REST depth snapshot the procedure needs (:mod:`daemon.marketdata.book`),
once the stream is up, retrying with bounded jittered delays.

:attr:`BookSync.resyncing_since` tells health since when each book is out of
sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import trio

from daemon.errors import PermanentError, RetryExhaustedError, TransientError
from daemon.marketdata.book import DepthConflator, LocalBook, SnapshotResult, UpdateResult
from daemon.marketdata.feed_io import FeedIO
from daemon.model.marketdata import DepthUpdate

__all__ = ["BookSync"]

log = logging.getLogger("tradingd.marketdata.feed")


class BookSync:
    """Keeps one feed's local books in sync with the venue.

    Args:
        io: The feed's shared calls (venue client, REST backoff, counters).
        depth: The depth queue (conflating).
        books: The local books, one per symbol.
        wall_clock_ms: Epoch ms (snapshot time estimate).
    """

    def __init__(
        self,
        io: FeedIO,
        depth: DepthConflator,
        books: Mapping[str, LocalBook],
        wall_clock_ms: Callable[[], int],
    ) -> None:
        self._io = io
        self._depth = depth
        self.books = books
        self._wall_clock_ms = wall_clock_ms
        self.venue = io.venue
        self._snapshot_wanted: dict[str, trio.Event] = {s: trio.Event() for s in books}
        self._connected = trio.Event()
        #: Trio time since when each book is out of sync (for health).
        self.resyncing_since: dict[str, float | None] = dict.fromkeys(books)

    def start(self) -> None:
        """A new incarnation of the feed: not connected, no snapshot asked for yet."""
        self._connected = trio.Event()
        self._snapshot_wanted = {s: trio.Event() for s in self.books}

    def offer(self, update: DepthUpdate) -> bool:
        """Hand a depth update to the books task; ``False`` for a symbol not captured."""
        if update.symbol not in self.books:
            return False
        self._depth.offer(update)
        return True

    def connected(self, why: str) -> None:
        """The stream (re)connected: every book is invalid until a new snapshot."""
        self._connected.set()
        for symbol, book in self.books.items():
            book.invalidate(why)
            book.publish()
            self.mark_resyncing(symbol)
            self._snapshot_wanted[symbol].set()

    def disconnected(self, why: str) -> None:
        """The stream is down (or the feed stopped): the books are out of sync."""
        self._connected = trio.Event()
        self.invalidate(why)

    def invalidate(self, why: str) -> None:
        """Invalidate the books that are in sync; every book counts as resyncing."""
        for symbol, book in self.books.items():
            if book.in_sync:
                book.invalidate(why)
                book.publish()
            self.mark_resyncing(symbol)

    def mark_resyncing(self, symbol: str) -> None:
        if self.resyncing_since.get(symbol) is None:
            self.resyncing_since[symbol] = trio.current_time()

    # ------------------------------------------------------------------ tasks

    async def books_loop(self) -> None:
        """Apply the depth updates to the books; a gap in the ids asks for a snapshot."""
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
                self.mark_resyncing(book.symbol)
                self._snapshot_wanted[book.symbol].set()
            book.publish()

    async def sync_loop(self, symbol: str) -> None:
        """Fetch a REST snapshot whenever the book needs one (and the stream is up)."""
        io = self._io
        book = self.books[symbol]
        failures = 0
        while True:
            await self._snapshot_wanted[symbol].wait()
            self._snapshot_wanted[symbol] = trio.Event()
            while book.needs_snapshot:
                await self._connected.wait()
                client = io.require_client()
                try:
                    snapshot = await client.depth(symbol, io.settings.book_snapshot_limit)
                except (TransientError, RetryExhaustedError, PermanentError) as exc:
                    failures += 1
                    io.stats.rest_failures += 1
                    delay = io.rest_backoff.delay_s(failures)
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
                await trio.sleep(io.rest_backoff.delay_s(failures))
