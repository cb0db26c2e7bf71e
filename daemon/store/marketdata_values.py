"""Market data values every backend shares: write summaries, snapshots, checkpoints, gaps.

What the market-data tables take and give back, with no SQL: the result of a
chunked bulk write (:class:`WriteSummary`, :class:`ChunkFailure`), a stored
book snapshot (:class:`BookSnapshotRecord`), an ingest checkpoint
(:class:`Checkpoint`), a recorded gap and its life (:class:`Gap`,
:class:`GapState`, :data:`GAP_TRANSITIONS`), the defaults and argument checks
of the :class:`~daemon.store.marketdata.MarketDataStore` facade, and what one
chunk's transaction reports (:class:`ChunkResult`). The SQLite table modules
(``marketdata_trades``, ``marketdata_books``, ``marketdata_gaps``) and a
second backend's would produce and read the same values.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any, Literal

import attrs

from daemon.model.marketdata import DepthSnapshot, Level
from daemon.store.errors import StoreError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_SNAPSHOT_CHUNK_SIZE",
    "GAP_TRANSITIONS",
    "MAX_ID",
    "BookSnapshotRecord",
    "Checkpoint",
    "ChunkFailure",
    "ChunkResult",
    "Gap",
    "GapState",
    "OnConflict",
    "WriteSummary",
    "check_chunk_args",
    "check_range",
]

#: Trades per transaction.
DEFAULT_CHUNK_SIZE = 1000
#: Book snapshots per transaction (each carries its levels).
DEFAULT_SNAPSHOT_CHUNK_SIZE = 100

#: The largest id or time an open-ended range query reaches (a signed 64-bit integer).
MAX_ID = 2**63 - 1

#: What to do when a row's natural key is already stored.
OnConflict = Literal["nothing", "update"]
_ON_CONFLICT = ("nothing", "update")


# ----------------------------------------------------------------------------- values


@attrs.frozen
class ChunkFailure:
    """One chunk of a bulk write that was not stored.

    Attributes:
        index: The chunk's number in the call (0-based).
        start: Position of its first row in the input.
        rows: How many rows it held.
        error: Why (typed; its ``__cause__`` is the library error).
        attempted: False when it was not tried because an earlier chunk hit an
            environment failure (disk full, read-only, locked, corrupt).
    """

    index: int
    start: int
    rows: int
    error: StoreError
    attempted: bool = True


@attrs.frozen
class WriteSummary:
    """What a bulk write did. ``attempted == inserted + updated + skipped + failed``.

    Attributes:
        attempted: Rows handed to the call.
        inserted: Rows that were new.
        skipped: Rows already stored (and, with ``"update"``, identical).
        updated: Rows stored with other values and replaced (``"update"`` only).
        failed: Rows in failed chunks (not stored by this call).
        chunks: Chunks the input was cut into.
        failed_chunks: The failed ones, in order.
        checkpoint: The checkpoint's stored ``last_trade_id`` after the call,
            when a checkpoint was advanced by it.
    """

    attempted: int = 0
    inserted: int = 0
    skipped: int = 0
    updated: int = 0
    failed: int = 0
    chunks: int = 0
    failed_chunks: tuple[ChunkFailure, ...] = ()
    checkpoint: int | None = None

    @property
    def ok(self) -> bool:
        """True when every chunk was stored."""
        return not self.failed_chunks

    def raise_for_failures(self) -> None:
        """Raise the first failed chunk's error (typed), if any."""
        if self.failed_chunks:
            raise self.failed_chunks[0].error

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for logs and ``/status``."""
        return {
            "attempted": self.attempted,
            "inserted": self.inserted,
            "skipped": self.skipped,
            "updated": self.updated,
            "failed": self.failed,
            "chunks": self.chunks,
            "failed_chunks": [
                {
                    "index": f.index,
                    "start": f.start,
                    "rows": f.rows,
                    "attempted": f.attempted,
                    "error": f"{type(f.error).__name__}: {f.error}",
                }
                for f in self.failed_chunks
            ],
            "checkpoint": self.checkpoint,
        }


def _check_levels(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(level, tuple)
        and len(level) == 2
        and all(isinstance(x, Decimal) and x.is_finite() for x in level)
        for level in value
    ):
        raise TypeError(f"{attribute.name} must be a tuple of (Decimal, Decimal) levels")


@attrs.frozen
class BookSnapshotRecord:
    """A stored order book snapshot: top levels of one symbol at one moment.

    Attributes:
        venue: Venue name.
        symbol: The venue's symbol.
        server_time_ms: When the book was in this state (venue clock, epoch ms).
        sequence_id: The book's update id at that moment (``lastUpdateId``);
            with ``server_time_ms`` it identifies the snapshot.
        bids: Best first.
        asks: Best first.
    """

    venue: str
    symbol: str
    server_time_ms: int
    sequence_id: int
    bids: tuple[Level, ...] = attrs.field(validator=_check_levels)
    asks: tuple[Level, ...] = attrs.field(validator=_check_levels)

    @classmethod
    def from_depth(
        cls, snapshot: DepthSnapshot, *, server_time_ms: int, depth: int | None = None
    ) -> BookSnapshotRecord:
        """From a REST depth snapshot (or a local book rendered as one), top ``depth`` levels."""
        if depth is not None and depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        return cls(
            venue=snapshot.venue,
            symbol=snapshot.symbol,
            server_time_ms=server_time_ms,
            sequence_id=snapshot.last_update_id,
            bids=snapshot.bids[:depth] if depth is not None else snapshot.bids,
            asks=snapshot.asks[:depth] if depth is not None else snapshot.asks,
        )


@attrs.frozen
class Checkpoint:
    """Where capture of one (venue, symbol, stream) resumes: after ``last_trade_id``."""

    venue: str
    symbol: str
    stream: str
    last_trade_id: int
    updated_at_ms: int


class GapState(enum.Enum):
    """The life of a recorded gap; see :data:`GAP_TRANSITIONS`."""

    OPEN = "open"  #: detected, not (yet) backfilled
    BACKFILLED = "backfilled"  #: the missing trades were fetched and stored
    UNRECOVERABLE = "unrecoverable"  #: the venue no longer has them: a known hole


#: Allowed state changes of a gap. Resolving to the current state is a no-op.
GAP_TRANSITIONS: dict[GapState, frozenset[GapState]] = {
    GapState.OPEN: frozenset({GapState.BACKFILLED, GapState.UNRECOVERABLE}),
    GapState.BACKFILLED: frozenset(),
    GapState.UNRECOVERABLE: frozenset(),
}


@attrs.frozen
class Gap:
    """A range of trade ids ``[from_id, to_id]`` (inclusive) found missing.

    Attributes:
        gap_id: Store-assigned id.
        reason: Why it was detected ("reconnect", "restart", "sequence jump").
        resolution: What resolved it ("backfilled via REST", "history expired").
    """

    gap_id: int
    venue: str
    symbol: str
    stream: str
    from_id: int
    to_id: int
    detected_at_ms: int
    state: GapState
    reason: str
    resolution: str | None = None
    resolved_at_ms: int | None = None


@attrs.frozen
class ChunkResult:
    """What one chunk's transaction did (summed into a :class:`WriteSummary`).

    Attributes:
        checkpoint: The checkpoint's stored ``last_trade_id`` after the chunk,
            when the chunk advanced one.
    """

    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    checkpoint: int | None = None


# ----------------------------------------------------------------------------- checks


def check_chunk_args(chunk_size: int, on_conflict: str) -> None:
    """Refuse a chunk size below 1 or an unknown ``on_conflict``.

    Raises:
        ValueError: either is out of range.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if on_conflict not in _ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {_ON_CONFLICT}, got {on_conflict!r}")


def check_range(from_id: int, to_id: int) -> None:
    """Refuse an id range whose start is after its end.

    Raises:
        ValueError: ``from_id > to_id``.
    """
    if from_id > to_id:
        raise ValueError(f"from_id {from_id} is after to_id {to_id}")
