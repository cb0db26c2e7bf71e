"""The local book procedure (pure): buffer, snapshot, drop stale, straddle, continuity, resync."""

from __future__ import annotations

from decimal import Decimal

import pytest

from daemon.channels import Overflow, Queues
from daemon.marketdata.book import (
    BookState,
    DepthConflator,
    LocalBook,
    SnapshotResult,
    UpdateResult,
    merge_updates,
)
from daemon.model.marketdata import DepthSnapshot, DepthUpdate

V, S = "fake", "BTCUSDT"


def D(x: str | int) -> Decimal:
    return Decimal(str(x))


def upd(first: int, last: int, bids=(), asks=(), t: int = 0) -> DepthUpdate:
    return DepthUpdate(
        venue=V,
        symbol=S,
        first_update_id=first,
        final_update_id=last,
        bids=tuple((D(p), D(q)) for p, q in bids),
        asks=tuple((D(p), D(q)) for p, q in asks),
        event_time_ms=t or last,
    )


def snap(last: int, bids=(), asks=()) -> DepthSnapshot:
    return DepthSnapshot(
        venue=V,
        symbol=S,
        last_update_id=last,
        bids=tuple((D(p), D(q)) for p, q in bids),
        asks=tuple((D(p), D(q)) for p, q in asks),
    )


def test_a_new_book_buffers_until_a_snapshot_then_applies_the_straddling_event() -> None:
    book = LocalBook(V, S)
    assert book.state is BookState.RESYNCING and book.needs_snapshot
    assert book.on_update(upd(95, 99, bids=[(99, 1)])) is UpdateResult.BUFFERED
    assert book.on_update(upd(100, 104, bids=[(100, 2)], asks=[(101, 3)])) is UpdateResult.BUFFERED
    # Buffered events merged into one: [95, 104].
    assert book.buffer is not None
    assert (book.buffer.first_update_id, book.buffer.final_update_id) == (95, 104)
    result = book.on_snapshot(snap(101, bids=[(99, 5)], asks=[(102, 1)]), as_of_ms=7)
    assert result is SnapshotResult.SYNCED
    assert book.in_sync and book.last_update_id == 104
    bids, asks = book.levels()
    assert bids == {D(99): D(1), D(100): D(2)}  # buffered levels applied over the snapshot
    assert asks == {D(101): D(3), D(102): D(1)}
    assert book.on_update(upd(105, 105, bids=[(100, 0)])) is UpdateResult.APPLIED
    assert book.levels()[0] == {D(99): D(1)}  # quantity 0 removed the level


def test_events_at_or_before_the_snapshot_are_dropped_and_the_first_must_straddle() -> None:
    book = LocalBook(V, S)
    assert book.on_snapshot(snap(200, bids=[(10, 1)])) is SnapshotResult.SYNCED
    assert book.on_update(upd(190, 200, bids=[(10, 9)])) is UpdateResult.STALE
    assert book.levels()[0] == {D(10): D(1)}
    # The first applied event must satisfy U <= 201 <= u.
    assert book.on_update(upd(199, 203, bids=[(11, 1)])) is UpdateResult.APPLIED
    assert book.last_update_id == 203
    # Then exactly U == previous u + 1.
    assert book.on_update(upd(204, 204)) is UpdateResult.APPLIED
    assert book.on_update(upd(204, 204)) is UpdateResult.STALE


def test_an_event_after_a_hole_invalidates_the_book_and_the_next_snapshot_must_match_it() -> None:
    book = LocalBook(V, S)
    book.on_snapshot(snap(10, bids=[(1, 1)]))
    assert book.on_update(upd(11, 12)) is UpdateResult.APPLIED
    assert book.on_update(upd(15, 16, asks=[(2, 1)])) is UpdateResult.GAP
    assert book.state is BookState.RESYNCING and book.resyncs == 1 and book.gaps == 1
    assert "gap" in book.reason
    # A snapshot older than the buffered event (L + 1 < U) cannot be used.
    assert book.on_snapshot(snap(13)) is SnapshotResult.TOO_OLD
    assert book.needs_snapshot and book.snapshots_too_old == 1
    assert book.on_snapshot(snap(15, bids=[(1, 2)])) is SnapshotResult.SYNCED
    assert book.last_update_id == 16
    assert book.levels() == ({D(1): D(2)}, {D(2): D(1)})


def test_first_event_after_a_snapshot_that_skips_ahead_is_a_gap() -> None:
    book = LocalBook(V, S)
    book.on_snapshot(snap(50))
    assert book.on_update(upd(53, 55)) is UpdateResult.GAP
    assert book.needs_snapshot


def test_invalidate_clears_the_buffer_and_counts_a_resync_only_when_synced() -> None:
    book = LocalBook(V, S)
    book.on_update(upd(1, 2))
    book.invalidate("reconnect")
    assert book.buffer is None and book.resyncs == 0
    book.on_snapshot(snap(5))
    book.invalidate("reconnect")
    assert book.resyncs == 1 and book.reason == "reconnect"


def test_view_is_sorted_best_first_and_published_to_the_async_value() -> None:
    book = LocalBook(V, S, view_depth=2)
    book.on_snapshot(
        snap(1, bids=[(98, 1), (100, 2), (99, 3)], asks=[(103, 1), (101, 2), (102, 3)]), as_of_ms=5
    )
    view = book.publish()
    assert book.latest.value is view
    assert view.in_sync and view.last_update_id == 1 and view.as_of_ms == 5
    assert view.bids == ((D(100), D(2)), (D(99), D(3)))
    assert view.asks == ((D(101), D(2)), (D(102), D(3)))
    assert view.best_bid == (D(100), D(2)) and view.best_ask == (D(101), D(2))
    assert view.mid == D("100.5")
    book.invalidate("dropped")
    assert not book.publish().in_sync


def test_merge_updates_rules() -> None:
    a = upd(1, 3, bids=[(10, 1), (11, 1)])
    b = upd(4, 5, bids=[(10, 0)], asks=[(12, 2)])
    merged = merge_updates(a, b)
    assert merged is not None
    assert (merged.first_update_id, merged.final_update_id) == (1, 5)
    assert dict(merged.bids) == {D(10): D(0), D(11): D(1)}
    assert dict(merged.asks) == {D(12): D(2)}
    assert merge_updates(a, upd(5, 6)) is None  # hole at 4
    assert merge_updates(b, a) is None  # adds nothing newer
    assert merge_updates(a, upd(2, 6)) is not None  # overlapping continuation


def test_mismatched_symbols_are_refused() -> None:
    book = LocalBook(V, S)
    other = DepthUpdate(V, "ETHUSDT", 1, 1, (), (), 1)
    with pytest.raises(ValueError):
        book.on_update(other)


async def test_depth_conflator_merges_per_symbol_never_blocks_and_counts() -> None:
    queues = Queues()
    queue = queues.open("d", 2, overflow=Overflow.CONFLATE, producer="feed", consumer="books")
    conflator = DepthConflator(queue, ["BTCUSDT", "ETHUSDT"])
    conflator.offer(upd(1, 1, bids=[(1, 1)]))
    conflator.offer(upd(2, 2, bids=[(1, 2)]))
    conflator.offer(upd(3, 4, bids=[(2, 1)]))
    eth = DepthUpdate(V, "ETHUSDT", 7, 7, (), (), 7)
    conflator.offer(eth)
    assert queue.stats()["depth"] == 2 and queue.dropped == 2
    assert conflator.conflated == {"BTCUSDT": 2, "ETHUSDT": 0}
    first = await conflator.take()
    assert (first.first_update_id, first.final_update_id) == (1, 4)
    assert dict(first.bids) == {D(1): D(2), D(2): D(1)}
    assert await conflator.take() == eth
    # A non-chaining newer event replaces the pending one (the book will see the gap).
    conflator.offer(upd(10, 10))
    conflator.offer(upd(20, 21))
    assert (await conflator.take()).first_update_id == 20
    with pytest.raises(ValueError):
        conflator.offer(DepthUpdate(V, "XRPUSDT", 1, 1, (), (), 1))
