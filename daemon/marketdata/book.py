"""Local order books kept in sync with a diff-depth stream, the Binance way.

Binance's procedure ("How to manage a local order book correctly"), which
:class:`LocalBook` implements as a pure, synchronous state machine:

1. Open the stream and **buffer** the diff events.
2. Get a REST **snapshot** (``lastUpdateId`` = L).
3. **Drop** buffered events with ``u <= L``.
4. The **first** event applied must straddle the snapshot: ``U <= L + 1 <= u``.
   If ``L + 1 < U`` the snapshot is older than the buffer: get another one.
5. Every later event must follow on exactly: ``U == previous u + 1``.
   Anything else is a **gap**: the book is invalid and the procedure restarts.

Quantities in events are absolute (0 removes the level), which is what makes
*conflation* sound: two events that chain (``U2 <= u1 + 1``) merge into one
event ``[U1, u2]`` whose levels are the first's overridden by the second's
(:func:`merge_updates`), and applying the merged event equals applying both.
So the buffer of step 1 is a single merged event (bounded by the number of
price levels, not by time), and the feed → book queue
(:class:`DepthConflator`) holds at most one merged event per symbol — depth
never queues unboundedly, and a slow consumer sees fewer, larger events.

Strategies read a book through :attr:`LocalBook.latest`, a trio-util
``AsyncValue`` holding an immutable :class:`BookView` (top levels, best
bid/ask, whether the book is in sync): the latest state, never a queue of
prices. ``await book.latest.wait_value(lambda v: v.in_sync)`` waits for a
valid book.

Prices and quantities are :class:`~decimal.Decimal` end to end.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import attrs
from trio_util import AsyncValue

from daemon.channels import Queue
from daemon.model.marketdata import (
    DepthContinuity,
    DepthSnapshot,
    DepthUpdate,
    Level,
    classify_depth_update,
)

__all__ = [
    "BookState",
    "BookView",
    "DepthConflator",
    "LocalBook",
    "SnapshotResult",
    "UpdateResult",
    "merge_updates",
]

log = logging.getLogger("tradingd.marketdata.book")

_ZERO = Decimal(0)


class BookState(enum.Enum):
    """Whether a local book can be trusted."""

    #: No valid book: waiting for a REST snapshot; diff events are buffered (merged).
    RESYNCING = "resyncing"
    #: Snapshot plus every diff since, verified by update id.
    SYNCED = "synced"


class UpdateResult(enum.Enum):
    """What :meth:`LocalBook.on_update` did with one diff event."""

    APPLIED = "applied"  #: it continued the book
    STALE = "stale"  #: already contained in the book (``u <= last_update_id``): dropped
    BUFFERED = "buffered"  #: the book is resyncing: kept for the next snapshot
    GAP = "gap"  #: updates are missing: the book went to RESYNCING


class SnapshotResult(enum.Enum):
    """What :meth:`LocalBook.on_snapshot` did with a REST snapshot."""

    SYNCED = "synced"  #: the book is valid from this snapshot on
    TOO_OLD = "too_old"  #: older than the buffered events (``L + 1 < U``): get another


@attrs.frozen
class BookView:
    """An immutable picture of one book, published to strategies.

    Attributes:
        venue: Venue name.
        symbol: The venue's symbol.
        in_sync: True when the book is verified (snapshot + continuous diffs).
            When false the levels are the last known ones: do not trade on them.
        last_update_id: The book's update id (``None`` before the first snapshot).
        as_of_ms: Venue time (epoch ms) of that state: the event time of the
            last applied diff, or the estimated server time of the snapshot.
        bids: Top bid levels, best (highest) first.
        asks: Top ask levels, best (lowest) first.
    """

    venue: str
    symbol: str
    in_sync: bool = False
    last_update_id: int | None = None
    as_of_ms: int | None = None
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()

    @property
    def best_bid(self) -> Level | None:
        """The highest bid ``(price, quantity)``, or ``None``."""
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        """The lowest ask ``(price, quantity)``, or ``None``."""
        return self.asks[0] if self.asks else None

    @property
    def mid(self) -> Decimal | None:
        """Mid price, when both sides have a level."""
        if not self.bids or not self.asks:
            return None
        return (self.bids[0][0] + self.asks[0][0]) / 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for ``/status`` (prices as strings)."""
        bid, ask = self.best_bid, self.best_ask
        return {
            "in_sync": self.in_sync,
            "last_update_id": self.last_update_id,
            "as_of_ms": self.as_of_ms,
            "best_bid": None if bid is None else [str(bid[0]), str(bid[1])],
            "best_ask": None if ask is None else [str(ask[0]), str(ask[1])],
        }


def _merged_levels(older: Iterable[Level], newer: Iterable[Level]) -> tuple[Level, ...]:
    levels = dict(older)
    levels.update(newer)
    return tuple(levels.items())


def merge_updates(older: DepthUpdate, newer: DepthUpdate) -> DepthUpdate | None:
    """One diff equivalent to applying ``older`` and then ``newer``, or ``None``.

    They merge when ``newer`` continues ``older`` (``U2 <= u1 + 1`` and
    ``u2 > u1``); then ``[U1, u2]`` with ``newer``'s levels overriding. Because
    quantities are absolute, a level both touch ends at ``newer``'s value,
    which is its value at ``u2``. ``None`` when there is a gap between them or
    ``newer`` adds nothing (``u2 <= u1``), or they are of different symbols.
    """
    if (older.venue, older.symbol) != (newer.venue, newer.symbol):
        return None
    if newer.final_update_id <= older.final_update_id:
        return None
    if newer.first_update_id > older.final_update_id + 1:
        return None
    return DepthUpdate(
        venue=newer.venue,
        symbol=newer.symbol,
        first_update_id=min(older.first_update_id, newer.first_update_id),
        final_update_id=newer.final_update_id,
        bids=_merged_levels(older.bids, newer.bids),
        asks=_merged_levels(older.asks, newer.asks),
        event_time_ms=max(older.event_time_ms, newer.event_time_ms),
    )


def _apply_levels(side: dict[Decimal, Decimal], levels: Iterable[Level]) -> None:
    for price, quantity in levels:
        if quantity == _ZERO:
            side.pop(price, None)
        else:
            side[price] = quantity


class LocalBook:
    """One symbol's order book, kept with Binance's procedure (module docstring).

    Pure and synchronous: the feed feeds it diff events (:meth:`on_update`) and
    REST snapshots (:meth:`on_snapshot`), and tells it when the stream
    (re)connects or drops (:meth:`invalidate`). :meth:`publish` renders the
    current state into :attr:`latest` for readers.

    Attributes:
        state: :class:`BookState`.
        last_update_id: Update id of the book's state (``None`` before a snapshot).
        as_of_ms: Venue time of that state (see :class:`BookView`).
        reason: Why the book last went out of sync.
        latest: ``AsyncValue[BookView]`` — what strategies read and wait on.
    """

    def __init__(self, venue: str, symbol: str, *, view_depth: int = 20) -> None:
        if view_depth < 1:
            raise ValueError(f"view_depth must be >= 1, got {view_depth}")
        self.venue = venue
        self.symbol = symbol
        self.view_depth = view_depth
        self.state = BookState.RESYNCING
        self.reason = "not synced yet"
        self.last_update_id: int | None = None
        self.as_of_ms: int | None = None
        self._bids: dict[Decimal, Decimal] = {}
        self._asks: dict[Decimal, Decimal] = {}
        self._after_snapshot = False
        self._buffer: DepthUpdate | None = None
        # Counters (monotonic, for metrics).
        self.applied = 0
        self.stale = 0
        self.buffered = 0
        self.gaps = 0
        self.resyncs = 0
        self.snapshots = 0
        self.snapshots_too_old = 0
        self.latest: Any = AsyncValue(BookView(venue, symbol))

    def __repr__(self) -> str:
        return (
            f"LocalBook({self.venue!r}, {self.symbol!r}, {self.state.value}, "
            f"last_update_id={self.last_update_id})"
        )

    # ------------------------------------------------------------------ state

    @property
    def in_sync(self) -> bool:
        """True when the book is verified."""
        return self.state is BookState.SYNCED

    @property
    def needs_snapshot(self) -> bool:
        """True while the book waits for a REST snapshot."""
        return self.state is BookState.RESYNCING

    @property
    def buffer(self) -> DepthUpdate | None:
        """The (merged) diff events held while resyncing."""
        return self._buffer

    def levels(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """Copies of every bid and ask level (price → quantity)."""
        return dict(self._bids), dict(self._asks)

    def top(self, depth: int) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """The best ``depth`` bids (highest first) and asks (lowest first)."""
        bids = heapq.nlargest(depth, self._bids.items())
        asks = heapq.nsmallest(depth, self._asks.items())
        return tuple(bids), tuple(asks)

    def view(self, depth: int | None = None) -> BookView:
        """The current state as a :class:`BookView` of ``depth`` levels per side."""
        bids, asks = self.top(self.view_depth if depth is None else depth)
        return BookView(
            venue=self.venue,
            symbol=self.symbol,
            in_sync=self.in_sync,
            last_update_id=self.last_update_id,
            as_of_ms=self.as_of_ms,
            bids=bids,
            asks=asks,
        )

    def publish(self) -> BookView:
        """Render the current state into :attr:`latest` (readers wake up); return it."""
        view = self.view()
        self.latest.value = view
        return view

    # ------------------------------------------------------------------ transitions

    def invalidate(self, reason: str) -> None:
        """The book can no longer be trusted (stream reconnected or dropped): resync.

        The buffer is cleared: events from before a reconnect say nothing
        about what the new connection will deliver.
        """
        self._go_resyncing(reason)
        self._buffer = None

    def on_update(self, update: DepthUpdate) -> UpdateResult:
        """Take one diff event (in stream order) and say what happened to it."""
        if update.symbol != self.symbol:
            raise ValueError(f"{self.symbol} book got an update for {update.symbol}")
        if self.state is BookState.RESYNCING:
            self._buffer_update(update)
            return UpdateResult.BUFFERED
        assert self.last_update_id is not None
        verdict = classify_depth_update(
            self.last_update_id, update, after_snapshot=self._after_snapshot
        )
        if verdict is DepthContinuity.STALE:
            self.stale += 1
            return UpdateResult.STALE
        if verdict is DepthContinuity.GAP:
            self.gaps += 1
            expected = (
                f"an update straddling {self.last_update_id + 1}"
                if self._after_snapshot
                else f"U={self.last_update_id + 1}"
            )
            self._go_resyncing(
                f"gap: expected {expected}, got U={update.first_update_id} "
                f"u={update.final_update_id}"
            )
            # The event that revealed the gap is the first one the next
            # snapshot has to match: keep it.
            self._buffer = update
            return UpdateResult.GAP
        self._apply(update)
        return UpdateResult.APPLIED

    def on_snapshot(
        self, snapshot: DepthSnapshot, *, as_of_ms: int | None = None
    ) -> SnapshotResult:
        """Load a REST snapshot and replay the buffer on it (steps 2-4).

        Args:
            snapshot: ``GET /api/v3/depth`` of this symbol.
            as_of_ms: Estimated venue time of the snapshot (for :attr:`as_of_ms`).

        Returns:
            :attr:`SnapshotResult.SYNCED`, or :attr:`SnapshotResult.TOO_OLD`
            when the buffered events start after ``lastUpdateId + 1`` — the
            book stays RESYNCING (buffer kept) and needs a newer snapshot.
        """
        if snapshot.symbol != self.symbol:
            raise ValueError(f"{self.symbol} book got a snapshot of {snapshot.symbol}")
        self.snapshots += 1
        buffered = self._buffer
        last = snapshot.last_update_id
        if buffered is not None and buffered.first_update_id > last + 1:
            self.snapshots_too_old += 1
            self.reason = (
                f"snapshot lastUpdateId={last} is older than the buffered events "
                f"(U={buffered.first_update_id}); need a newer one"
            )
            return SnapshotResult.TOO_OLD
        self._bids = {p: q for p, q in snapshot.bids if q != _ZERO}
        self._asks = {p: q for p, q in snapshot.asks if q != _ZERO}
        self.last_update_id = last
        self.as_of_ms = as_of_ms
        self.state = BookState.SYNCED
        self.reason = ""
        self._after_snapshot = True
        self._buffer = None
        if buffered is not None:
            if buffered.final_update_id <= last:
                self.stale += 1
            else:
                # Straddles (U <= L + 1 < u): apply it as the first event.
                self._apply(buffered)
        return SnapshotResult.SYNCED

    # ------------------------------------------------------------------ internals

    def _go_resyncing(self, reason: str) -> None:
        if self.state is BookState.SYNCED:
            self.resyncs += 1
        self.state = BookState.RESYNCING
        self.reason = reason
        self._after_snapshot = False

    def _buffer_update(self, update: DepthUpdate) -> None:
        self.buffered += 1
        current = self._buffer
        if current is None:
            self._buffer = update
            return
        merged = merge_updates(current, update)
        if merged is not None:
            self._buffer = merged
        elif update.final_update_id > current.final_update_id:
            # Events are missing between the buffer and this one: the older
            # part can never be made continuous; the snapshot must match this.
            self._buffer = update
        # else: nothing newer than the buffer; drop it.

    def _apply(self, update: DepthUpdate) -> None:
        _apply_levels(self._bids, update.bids)
        _apply_levels(self._asks, update.asks)
        self.last_update_id = update.final_update_id
        self.as_of_ms = update.event_time_ms
        self._after_snapshot = False
        self.applied += 1


class DepthConflator:
    """The feed → books depth queue: at most one (merged) pending event per symbol.

    Declared in the :class:`~daemon.channels.Queues` registry with
    ``Overflow.CONFLATE`` and a capacity of one slot per symbol, so it shows in
    ``/status`` like every queue. The registry's channel carries *symbol
    names* (a notification per symbol with a pending event, never two), the
    events themselves sit in a dict slot where a newer event merges into the
    pending one (:func:`merge_updates`) or replaces it when they do not chain
    — then the book sees the gap and resyncs, which is the truth. Every merge
    or replacement is counted in ``queue.dropped`` and :attr:`conflated`.

    :meth:`offer` never blocks: the feed must not wait for book consumers.
    """

    def __init__(self, queue: Queue[Any], symbols: Iterable[str]) -> None:
        self._queue = queue
        self.symbols = frozenset(symbols)
        if queue.capacity < len(self.symbols):
            raise ValueError(
                f"queue {queue.name!r}: capacity {queue.capacity} < {len(self.symbols)} symbols"
            )
        self._pending: dict[str, DepthUpdate] = {}
        self.conflated: dict[str, int] = dict.fromkeys(self.symbols, 0)

    @property
    def name(self) -> str:
        return self._queue.name

    def pending(self) -> int:
        """Symbols with an event waiting."""
        return len(self._pending)

    def offer(self, update: DepthUpdate) -> None:
        """Queue ``update`` without waiting, merging it into a pending one.

        Raises:
            ValueError: the symbol is not one of this queue's.
        """
        symbol = update.symbol
        if symbol not in self.symbols:
            raise ValueError(f"depth queue {self.name!r}: unexpected symbol {symbol!r}")
        current = self._pending.get(symbol)
        if current is None:
            self._pending[symbol] = update
            # One notification per symbol with a pending event: never more than
            # len(symbols) in the channel, so this cannot block.
            self._queue.send.send_nowait(symbol)
            return
        merged = merge_updates(current, update)
        if merged is not None:
            self._pending[symbol] = merged
        elif update.final_update_id > current.final_update_id:
            self._pending[symbol] = update
        self._queue.dropped += 1
        self.conflated[symbol] += 1

    async def take(self) -> DepthUpdate:
        """Wait for the next pending event (any symbol) and remove it from the queue."""
        while True:
            symbol = await self._queue.receive.receive()
            update = self._pending.pop(symbol, None)
            if update is not None:
                return update

    def take_nowait(self) -> DepthUpdate:
        """Like :meth:`take`; raises :class:`trio.WouldBlock` when nothing is pending."""
        while True:
            symbol = self._queue.receive.receive_nowait()
            update = self._pending.pop(symbol, None)
            if update is not None:
                return update
