"""Counters shared by the feed, the writer and the snapshotter of one venue.

Plain objects updated on the event loop (no locks needed); the service turns
them into ``/status`` and ``/metrics``. Counters only grow; gauges say "now".
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

__all__ = [
    "FeedStats",
    "LagWindow",
    "SnapshotStats",
    "SymbolStats",
    "WriterStats",
    "by_symbol",
]


class LagWindow:
    """The last ``size`` consumer-lag samples (ms), for p50/p99/max.

    Consumer lag is the venue's event time of a trade to the time its chunk
    committed: what the whole pipeline (stream, queue, writer, disk) adds.
    """

    def __init__(self, size: int) -> None:
        self._samples: collections.deque[int] = collections.deque(maxlen=size)
        self.last_ms: int | None = None
        self.max_ever_ms: int | None = None
        self.count = 0

    def extend(self, samples_ms: Sequence[int]) -> None:
        if not samples_ms:
            return
        self._samples.extend(samples_ms)
        self.count += len(samples_ms)
        self.last_ms = samples_ms[-1]
        top = max(samples_ms)
        self.max_ever_ms = top if self.max_ever_ms is None else max(self.max_ever_ms, top)

    def quantile(self, q: float) -> int | None:
        """Nearest-rank quantile of the window (``None`` when empty)."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1]

    def snapshot(self) -> dict[str, int | None]:
        return {
            "p50": self.quantile(0.5),
            "p99": self.quantile(0.99),
            "max": max(self._samples) if self._samples else None,
            "last": self.last_ms,
            "max_ever": self.max_ever_ms,
            "samples": self.count,
        }


@attrs.define
class SymbolStats:
    """Capture state and counters of one symbol."""

    symbol: str
    lag: LagWindow
    #: Highest trade id handed to the writer (the feed's resume point in memory).
    last_enqueued_id: int | None = None
    #: Highest trade id committed by the writer.
    last_committed_id: int | None = None
    #: Wall-clock epoch seconds of the last commit.
    last_commit_at: float | None = None
    #: Items of this symbol in the trades queue (put by the feed, not yet taken).
    queued: int = 0
    #: Items taken by the writer and not yet committed.
    pending: int = 0
    trades_stream: int = 0
    trades_backfill: int = 0
    duplicates: int = 0
    inserted: int = 0
    skipped: int = 0
    backfill_requests: int = 0
    gaps_detected: int = 0
    #: Gaps being backfilled right now (detected, not yet closed).
    gaps_open: int = 0
    gaps_backfilled: int = 0
    gaps_unrecoverable: int = 0
    #: Gaps recorded OPEN: the venue refused the backfill; an operator's job.
    gaps_left_open: int = 0
    trades_unrecoverable: int = 0
    gap_records_committed: int = 0
    #: Gaps recorded OPEN in the store and not resolved yet, ``(from_id, to_id)``
    #: → reason: trades neither stored nor known lost (the repair backfills them).
    open_gaps: dict[tuple[int, int], str] = attrs.Factory(dict)
    #: Quiet-stream checks of the venue's latest trade id, and tails they found.
    tail_checks: int = 0
    tail_gaps: int = 0

    @property
    def open_gap_trades(self) -> int:
        """Trade ids inside the open gaps."""
        return sum(high - low + 1 for low, high in self.open_gaps)

    def snapshot(self) -> dict[str, Any]:
        return {
            "last_trade_id": self.last_enqueued_id,
            "last_committed_id": self.last_committed_id,
            "last_commit_at": self.last_commit_at,
            "lag_ms": self.lag.snapshot(),
            "queued": self.queued,
            "pending": self.pending,
            "trades": {
                "stream": self.trades_stream,
                "backfill": self.trades_backfill,
                "duplicates": self.duplicates,
                "inserted": self.inserted,
                "skipped": self.skipped,
            },
            "gaps": {
                "open": self.gaps_open,
                "detected": self.gaps_detected,
                "backfilled": self.gaps_backfilled,
                "unrecoverable": self.gaps_unrecoverable,
                "left_open": self.gaps_left_open,
                "trades_unrecoverable": self.trades_unrecoverable,
                "backfill_requests": self.backfill_requests,
                "open_gaps": [
                    {"from_id": low, "to_id": high, "trades": high - low + 1, "reason": why}
                    for (low, high), why in sorted(self.open_gaps.items())
                ],
                "open_gap_trades": self.open_gap_trades,
                "tail_checks": self.tail_checks,
                "tail_gaps": self.tail_gaps,
            },
        }


@attrs.define
class FeedStats:
    """Counters of one venue's feed (all incarnations)."""

    connected: bool = False
    #: True while a (re)connection's catch-up backfill runs.
    catching_up: bool = False
    #: Catch-ups completed (one per connection).
    catch_ups: int = 0
    connections: int = 0
    disconnects: dict[str, int] = attrs.Factory(dict)
    malformed: int = 0
    dead_lettered: int = 0
    dead_letter_failures: int = 0
    unexpected: int = 0
    rest_failures: int = 0
    #: Puts into the trades queue that had to wait (queue full).
    put_waits: int = 0
    put_wait_s_total: float = 0.0
    put_wait_s_max: float = 0.0
    #: Trio time since when the feed is waiting on a full queue (``None``: not blocked).
    blocked_since: float | None = None
    #: Since when every put has had to wait (the writer is the bottleneck).
    saturated_since: float | None = None

    max_queue_depth: int = 0
    last_error: str | None = None
    #: ``historicalTrades`` fetches that failed in a row (0 after one works),
    #: since when (Trio time), and the last such error.
    backfill_failures: int = 0
    backfill_failing_since: float | None = None
    backfill_last_error: str | None = None
    #: Every failed ``historicalTrades`` fetch.
    backfill_failures_total: int = 0

    def snapshot(self, now: float) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["backfill_failing_for_s"] = (
            None if self.backfill_failing_since is None else now - self.backfill_failing_since
        )
        del data["backfill_failing_since"]
        data["blocked_for_s"] = None if self.blocked_since is None else now - self.blocked_since
        del data["blocked_since"]
        data["saturated_for_s"] = (
            None if self.saturated_since is None else now - self.saturated_since
        )
        del data["saturated_since"]
        return data


@attrs.define
class WriterStats:
    """Counters of one venue's ingest writer (all incarnations)."""

    batches: int = 0
    rows_attempted: int = 0
    rows_inserted: int = 0
    rows_skipped: int = 0
    rows_failed: int = 0
    chunks_committed: int = 0
    chunks_failed: int = 0
    rows_dead_lettered: int = 0
    store_errors: dict[str, int] = attrs.Factory(dict)
    retries: int = 0
    #: Trio time of the first failure of the current run of failed commits.
    failing_since: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    last_commit_s: float | None = None

    def record_error(self, error: BaseException) -> None:
        name = type(error).__name__
        self.store_errors[name] = self.store_errors.get(name, 0) + 1
        self.last_error = f"{name}: {error}"

    def snapshot(self, now: float) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["failing_for_s"] = None if self.failing_since is None else now - self.failing_since
        del data["failing_since"]
        return data


@attrs.define
class SnapshotStats:
    """Counters of one venue's book snapshotter."""

    rounds: int = 0
    inserted: int = 0
    skipped: int = 0
    unchanged: int = 0
    not_in_sync: int = 0
    failed: int = 0
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return attrs.asdict(self)


def by_symbol(symbols: Iterable[str], lag_window: int) -> dict[str, SymbolStats]:
    """Fresh :class:`SymbolStats` for each symbol."""
    return {s: SymbolStats(s, LagWindow(lag_window)) for s in symbols}
