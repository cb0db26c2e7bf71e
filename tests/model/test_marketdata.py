"""Market data values and the pure gap checks (trade ids, depth update ids)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.model import (
    DepthContinuity,
    DepthSnapshot,
    DepthUpdate,
    Trade,
    classify_depth_update,
    depth_continuous,
    trade_gap,
)

D = Decimal


def update(first: int, final: int) -> DepthUpdate:
    return DepthUpdate(
        venue="binance",
        symbol="BNBBTC",
        first_update_id=first,
        final_update_id=final,
        bids=((D("0.0024"), D("10")),),
        asks=(),
        event_time_ms=1,
    )


def test_values_refuse_floats_and_bad_levels() -> None:
    with pytest.raises(TypeError, match="price"):
        Trade("binance", "X", 1, 1.5, D(1), D(1), True, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="finite"):
        Trade("binance", "X", 1, D("NaN"), D(1), D(1), True, 1)
    with pytest.raises(TypeError, match="bids"):
        DepthSnapshot("binance", "X", 1, ((D(1), 2.0),), ())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="asks"):
        DepthUpdate("binance", "X", 1, 2, (), [(D(1), D(1))], 1)  # type: ignore[arg-type]


def test_trade_gap() -> None:
    assert list(trade_gap(10, 11)) == []
    assert list(trade_gap(10, 14)) == [11, 12, 13]
    assert list(trade_gap(None, 14)) == []  # nothing seen yet
    assert list(trade_gap(10, 10)) == []  # duplicate
    assert list(trade_gap(10, 3)) == []  # replay


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=50, unique=True)
)
def test_trade_gap_finds_exactly_the_missing_ids(ids: list[int]) -> None:
    ids.sort()
    seen = set(ids)
    missing: list[int] = []
    prev = None
    for trade_id in ids:
        missing.extend(trade_gap(prev, trade_id))
        prev = trade_id
    assert missing == [i for i in range(ids[0], ids[-1] + 1) if i not in seen]


@pytest.mark.parametrize(
    ("prev_u", "first", "final", "after_snapshot", "expected"),
    [
        # First update after a snapshot with lastUpdateId 100: U <= 101 <= u.
        (100, 95, 105, True, DepthContinuity.APPLY),
        (100, 101, 101, True, DepthContinuity.APPLY),
        (100, 90, 100, True, DepthContinuity.STALE),  # u <= lastUpdateId: drop
        (100, 102, 110, True, DepthContinuity.GAP),  # 101 missing
        # Later updates: U == prev_u + 1.
        (160, 161, 165, False, DepthContinuity.APPLY),
        (160, 162, 165, False, DepthContinuity.GAP),
        (160, 150, 160, False, DepthContinuity.STALE),
        (160, 158, 165, False, DepthContinuity.GAP),  # overlaps: not a valid continuation
    ],
)
def test_classify_depth_update(
    prev_u: int, first: int, final: int, after_snapshot: bool, expected: DepthContinuity
) -> None:
    upd = update(first, final)
    assert classify_depth_update(prev_u, upd, after_snapshot=after_snapshot) is expected
    assert depth_continuous(prev_u, upd, after_snapshot=after_snapshot) is (
        expected is DepthContinuity.APPLY
    )


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5), min_size=2, max_size=30),
    snapshot_offset=st.integers(min_value=0, max_value=4),
    drop=st.integers(min_value=1, max_value=29),
)
def test_depth_sequence_detects_a_dropped_update(
    sizes: list[int], snapshot_offset: int, drop: int
) -> None:
    updates = []
    next_id = 1
    for size in sizes:
        updates.append(update(next_id, next_id + size - 1))
        next_id += size
    last_update_id = min(snapshot_offset, updates[0].final_update_id - 1)
    # Without a drop every update applies.
    prev, fresh = last_update_id, True
    for upd in updates:
        assert classify_depth_update(prev, upd, after_snapshot=fresh) is DepthContinuity.APPLY
        prev, fresh = upd.final_update_id, False
    # Drop one update (not the first): the next one is a gap.
    drop = 1 + drop % (len(updates) - 1)
    stream = updates[:drop] + updates[drop + 1 :]
    prev, fresh = last_update_id, True
    verdicts = []
    for upd in stream:
        verdict = classify_depth_update(prev, upd, after_snapshot=fresh)
        verdicts.append(verdict)
        if verdict is not DepthContinuity.APPLY:
            break
        prev, fresh = upd.final_update_id, False
    if drop < len(updates) - 1:
        assert verdicts[-1] is DepthContinuity.GAP
        assert len(verdicts) == drop + 1
    else:  # the last one was dropped: nothing follows it to notice
        assert all(v is DepthContinuity.APPLY for v in verdicts)
