"""Ingest checkpoints and gaps in SQLite: where capture resumes, and what it found missing.

**The resume point moves with the data.** A checkpoint ``(venue, symbol,
stream)`` holds the last trade id stored in order; a chunk of trades advances
it in the chunk's own transaction (:func:`advance_checkpoint`, called by
:func:`~daemon.store.marketdata_trades.write_trades`), so after ``kill -9``
or a power cut it never points past data that is not stored. Checkpoints
only move forward.

A gap is a range of trade ids found missing, recorded durably as OPEN
before anything skips over it, then BACKFILLED or UNRECOVERABLE
(:data:`~daemon.store.marketdata_values.GAP_TRANSITIONS`). Recording the same
range again returns the stored gap (idempotent on ``(venue, symbol, stream,
from_id, to_id)``).

Called inside the owner's transactions by the checkpoint and gap methods of
:class:`~daemon.store.marketdata.MarketDataStore`, and by ``write_trades``.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import attrs

from daemon.store.errors import GapTransitionError
from daemon.store.marketdata_values import GAP_TRANSITIONS, Checkpoint, Gap, GapState
from daemon.store.rows import RowCodec, by_value

__all__ = [
    "CHECKPOINT_ROWS",
    "GAP_ROWS",
    "advance_checkpoint",
    "count_gaps",
    "list_gaps",
    "move_checkpoint",
    "read_checkpoint",
    "read_checkpoints",
    "record_gap",
    "record_resolved_gap",
    "resolve_gap",
]

CHECKPOINT_ROWS: Final = RowCodec(Checkpoint)
GAP_ROWS: Final = RowCodec(Gap, {"state": by_value(GapState)})

#: A gap's identity: ``(venue, symbol, stream, from_id, to_id)``.
GapKey = tuple[str, str, str, int, int]

# One statement (a chunk's hot path): the row is rewritten either way, but
# last_trade_id only grows, and updated_at_ms only changes when it does.
_ADVANCE_CHECKPOINT: Final = (
    "INSERT INTO ingest_checkpoints (venue, symbol, stream, last_trade_id, updated_at_ms) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (venue, symbol, stream) DO UPDATE SET "
    "updated_at_ms = CASE WHEN excluded.last_trade_id > last_trade_id "
    "THEN excluded.updated_at_ms ELSE updated_at_ms END, "
    "last_trade_id = max(last_trade_id, excluded.last_trade_id) "
    "RETURNING last_trade_id"
)
_SELECT_CHECKPOINT: Final = f"SELECT {', '.join(CHECKPOINT_ROWS.columns)} FROM ingest_checkpoints"
_SELECT_GAP: Final = f"SELECT {', '.join(GAP_ROWS.columns)} FROM gaps"


# ----------------------------------------------------------------------------- checkpoints


def advance_checkpoint(
    conn: sqlite3.Connection, key: tuple[str, str, str], last_id: int, now_ms: int
) -> int:
    """Move checkpoint ``key`` forward to ``last_id`` (never back); its stored last id."""
    return int(conn.execute(_ADVANCE_CHECKPOINT, (*key, last_id, now_ms)).fetchone()[0])


def read_checkpoint(conn: sqlite3.Connection, key: tuple[str, str, str]) -> Checkpoint | None:
    """Checkpoint ``(venue, symbol, stream)``, or ``None``."""
    row = conn.execute(
        f"{_SELECT_CHECKPOINT} WHERE venue = ? AND symbol = ? AND stream = ?", key
    ).fetchone()
    return None if row is None else CHECKPOINT_ROWS.load(row)


def move_checkpoint(
    conn: sqlite3.Connection, key: tuple[str, str, str], last_id: int, now_ms: int
) -> Checkpoint:
    """:func:`advance_checkpoint`, then the checkpoint as stored."""
    advance_checkpoint(conn, key, last_id, now_ms)
    found = read_checkpoint(conn, key)
    assert found is not None
    return found


def read_checkpoints(conn: sqlite3.Connection) -> list[Checkpoint]:
    """Every checkpoint, ordered by venue, symbol, stream."""
    rows = conn.execute(f"{_SELECT_CHECKPOINT} ORDER BY venue, symbol, stream")
    return [CHECKPOINT_ROWS.load(row) for row in rows]


# ----------------------------------------------------------------------------- gaps


def record_gap(conn: sqlite3.Connection, *, key: GapKey, detected_at_ms: int, reason: str) -> Gap:
    """Record the range ``key`` as an OPEN gap, or find it recorded; the gap as stored."""
    conn.execute(
        "INSERT INTO gaps (venue, symbol, stream, from_id, to_id, detected_at_ms, state, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, 'open', ?) "
        "ON CONFLICT (venue, symbol, stream, from_id, to_id) DO NOTHING",
        (*key, detected_at_ms, reason),
    )
    row = conn.execute(
        f"{_SELECT_GAP} WHERE venue = ? AND symbol = ? AND stream = ? "
        "AND from_id = ? AND to_id = ?",
        key,
    ).fetchone()
    return GAP_ROWS.load(row)


def resolve_gap(
    conn: sqlite3.Connection,
    *,
    gap_id: int,
    state: GapState,
    resolution: str | None,
    resolved_at_ms: int,
    path: str,
) -> Gap | None:
    """Move gap ``gap_id`` to ``state`` (a no-op when it is there); ``None`` if no such gap.

    Raises:
        GapTransitionError: :data:`GAP_TRANSITIONS` does not allow the move
            (``path``, the database, is named in the message).
    """
    row = conn.execute(f"{_SELECT_GAP} WHERE gap_id = ?", (gap_id,)).fetchone()
    if row is None:
        return None
    gap = GAP_ROWS.load(row)
    if gap.state is state:
        return gap
    if state not in GAP_TRANSITIONS[gap.state]:
        raise GapTransitionError(
            f"store {path}: gap {gap_id} cannot go from {gap.state.value} to {state.value}",
            path=path,
        )
    conn.execute(
        "UPDATE gaps SET state = ?, resolution = ?, resolved_at_ms = ? WHERE gap_id = ?",
        (state.value, resolution, resolved_at_ms, gap_id),
    )
    return attrs.evolve(gap, state=state, resolution=resolution, resolved_at_ms=resolved_at_ms)


def record_resolved_gap(
    conn: sqlite3.Connection,
    *,
    key: GapKey,
    state: GapState,
    reason: str,
    resolution: str | None,
    at_ms: int,
    path: str,
) -> Gap:
    """:func:`record_gap` and :func:`resolve_gap` to ``state``, in the caller's one transaction.

    Raises:
        GapTransitionError: the stored gap cannot move to ``state``.
    """
    gap = record_gap(conn, key=key, detected_at_ms=at_ms, reason=reason)
    resolved = resolve_gap(
        conn, gap_id=gap.gap_id, state=state, resolution=resolution, resolved_at_ms=at_ms, path=path
    )
    assert resolved is not None
    return resolved


def list_gaps(
    conn: sqlite3.Connection,
    *,
    venue: str | None,
    symbol: str | None,
    stream: str | None,
    state: GapState | None,
) -> list[Gap]:
    """Recorded gaps matching every given filter, by ascending id."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (("venue", venue), ("symbol", symbol), ("stream", stream)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if state is not None:
        clauses.append("state = ?")
        args.append(state.value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return [
        GAP_ROWS.load(row) for row in conn.execute(f"{_SELECT_GAP} {where} ORDER BY gap_id", args)
    ]


def count_gaps(conn: sqlite3.Connection) -> dict[GapState, int]:
    """Gaps per state (every state present)."""
    counts = dict.fromkeys(GapState, 0)
    for state, count in conn.execute("SELECT state, count(*) FROM gaps GROUP BY state"):
        counts[GapState(state)] = int(count)
    return counts
