"""Settings of market-data capture: one frozen value, validated on construction.

The daemon's ``[marketdata]`` config section maps onto this class
(:meth:`MarketDataSettings.from_config`); tests build it directly. Every
field has a unit in its name and one default, so a reader knows what a number
means without opening the code that uses it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, Protocol

import attrs

__all__ = ["CHECKPOINT_STREAM", "MarketDataConfigLike", "MarketDataSettings"]

#: The ``stream`` part of the ingest checkpoint key ``(venue, symbol, stream)``.
CHECKPOINT_STREAM = "trades"

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")


def _symbols(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("symbols must be a list of symbol names, not one string")
    return tuple(value)


def _check_symbols(_: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("symbols: at least one symbol is needed")
    for symbol in value:
        if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
            raise ValueError(
                f"symbols: {symbol!r} is not a venue symbol (upper case, e.g. 'BTCUSDT')"
            )
    duplicates = sorted({s for s in value if value.count(s) > 1})
    if duplicates:
        raise ValueError(f"symbols: duplicates {duplicates}")


def _int_range(low: int, high: int | None = None) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{attribute.name} must be {bound}, got {value}")

    return check


def _seconds(*, allow_zero: bool = False) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError(f"{attribute.name} must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{attribute.name} must be finite and {bound}, got {value}")

    return check


class MarketDataConfigLike(Protocol):
    """The fields of the daemon's ``[marketdata]`` section that capture reads."""

    @property
    def symbols(self) -> tuple[str, ...]: ...
    @property
    def chunk_size(self) -> int: ...
    @property
    def trades_queue_capacity(self) -> int: ...
    @property
    def flush_interval_s(self) -> float: ...
    @property
    def snapshot_interval_s(self) -> float: ...
    @property
    def snapshot_depth(self) -> int: ...
    @property
    def lag_warn_s(self) -> float: ...
    @property
    def backfill_limit(self) -> int: ...
    @property
    def tail_check_interval_s(self) -> float: ...


@attrs.frozen(kw_only=True)
class MarketDataSettings:
    """How one venue's market data is captured.

    Attributes:
        symbols: Venue symbols to capture (upper case), trades and books.
        chunk_size: Trades per store transaction (the writer's batch size).
        trades_queue_capacity: Bound of the feed → writer trades queue. When it
            is full the feed waits (backpressure); it never drops a trade.
        stream_queue_capacity: Bound of the stream → feed event queue. When it
            is full the stream stops reading the socket, and TCP pushes back.
        flush_interval_s: Longest time a partial chunk waits before it is
            written, so a quiet market still commits promptly.
        snapshot_interval_s: Period of stored top-N book snapshots; 0 disables
            the snapshotter.
        snapshot_depth: Levels per side in a stored snapshot.
        view_depth: Levels per side in the book view published to strategies.
        book_snapshot_limit: ``limit`` of the REST depth snapshot a book is
            (re)synchronised from. Deeper than ``snapshot_depth`` on purpose:
            diff updates remove levels, and the book must still have N after.
        backfill_limit: Trades per ``historicalTrades`` request (1..1000).
        retry_initial_s: First delay after a failed store write or REST call.
        retry_max_s: Cap of those delays (equal jitter: half fixed, half random).
        heartbeat_interval_s: Heartbeat promise of the feed, writer and snapshotter.
        drain_timeout_s: Grace the writer gets at shutdown to commit what is queued.
        lag_window: How many recent commit lags p50/p99/max are computed over.
        lag_warn_s: Health is degraded when the consumer lag (or the time the
            feed has been blocked on a full queue) exceeds this.
        resync_warn_s: Health is degraded when a book has been out of sync
            this long while the stream is connected.
        tail_check_interval_s: When a symbol's stream has delivered no trade
            for this long, the feed asks the venue for its latest trade id
            (``GET /api/v3/trades?limit=1``, weight 25) and backfills any tail
            it missed (a lost last trade before a quiet market); again every
            interval while the symbol stays quiet. 0 disables the check (the
            stream's staleness timeout and the next trade still reveal it).
        backfill_failures_warn: Health is degraded after this many consecutive
            failed ``historicalTrades`` fetches (a backfill that keeps failing).
    """

    symbols: tuple[str, ...] = attrs.field(converter=_symbols, validator=_check_symbols)
    chunk_size: int = attrs.field(default=1000, validator=_int_range(1, 100_000))
    trades_queue_capacity: int = attrs.field(default=10_000, validator=_int_range(1))
    stream_queue_capacity: int = attrs.field(default=1000, validator=_int_range(1))
    flush_interval_s: float = attrs.field(default=0.5, validator=_seconds())
    snapshot_interval_s: float = attrs.field(default=60.0, validator=_seconds(allow_zero=True))
    snapshot_depth: int = attrs.field(default=20, validator=_int_range(1, 5000))
    view_depth: int = attrs.field(default=20, validator=_int_range(1, 5000))
    book_snapshot_limit: int = attrs.field(default=1000, validator=_int_range(1, 5000))
    backfill_limit: int = attrs.field(default=1000, validator=_int_range(1, 1000))
    retry_initial_s: float = attrs.field(default=0.1, validator=_seconds())
    retry_max_s: float = attrs.field(default=5.0, validator=_seconds())
    heartbeat_interval_s: float = attrs.field(default=5.0, validator=_seconds())
    drain_timeout_s: float = attrs.field(default=10.0, validator=_seconds())
    lag_window: int = attrs.field(default=10_000, validator=_int_range(1))
    lag_warn_s: float = attrs.field(default=30.0, validator=_seconds())
    resync_warn_s: float = attrs.field(default=30.0, validator=_seconds())
    tail_check_interval_s: float = attrs.field(default=5.0, validator=_seconds(allow_zero=True))
    backfill_failures_warn: int = attrs.field(default=3, validator=_int_range(1))

    def __attrs_post_init__(self) -> None:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(
                f"retry_max_s ({self.retry_max_s}) must be >= retry_initial_s "
                f"({self.retry_initial_s})"
            )
        if self.book_snapshot_limit < self.snapshot_depth:
            raise ValueError(
                f"book_snapshot_limit ({self.book_snapshot_limit}) must be >= snapshot_depth "
                f"({self.snapshot_depth}): a stored snapshot cannot be deeper than the book"
            )

    @classmethod
    def from_config(cls, config: MarketDataConfigLike, **overrides: Any) -> MarketDataSettings:
        """Settings from the daemon's ``[marketdata]`` section (plus explicit overrides).

        Raises:
            ValueError, TypeError: a value is out of range (the config loader
                checks ranges first, so this only fires on cross-field rules).
        """
        fields: dict[str, Any] = {
            "symbols": tuple(config.symbols),
            "chunk_size": config.chunk_size,
            "trades_queue_capacity": config.trades_queue_capacity,
            "flush_interval_s": config.flush_interval_s,
            "snapshot_interval_s": config.snapshot_interval_s,
            "snapshot_depth": config.snapshot_depth,
            "backfill_limit": config.backfill_limit,
            "lag_warn_s": config.lag_warn_s,
            "tail_check_interval_s": config.tail_check_interval_s,
        }
        fields["book_snapshot_limit"] = max(1000, config.snapshot_depth)
        fields.update(overrides)
        return cls(**fields)
