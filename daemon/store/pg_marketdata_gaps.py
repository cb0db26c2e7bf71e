"""Ingest checkpoints and gaps in PostgreSQL: where capture resumes, and what it found missing.

As SQLite's (:mod:`daemon.store.marketdata_gaps`): a checkpoint only moves
forward, in the transaction of the chunk it covers (one upsert with
``GREATEST``); a gap is recorded idempotently on ``(venue, symbol, stream,
from_id, to_id)`` and moves along
:data:`~daemon.store.marketdata_values.GAP_TRANSITIONS` (its row read
``FOR UPDATE``, so two daemons cannot resolve it two ways).

Called inside the owner's transactions; functions of a :class:`psycopg.Connection`.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from daemon.store.errors import GapTransitionError
from daemon.store.marketdata_values import GAP_TRANSITIONS, Checkpoint, Gap, GapState
from daemon.store.rows import RowCodec, by_value

__all__ = [
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

Conn = Any  # psycopg.Connection

CHECKPOINT_ROWS: Final = RowCodec(Checkpoint)
GAP_ROWS: Final = RowCodec(Gap, {"state": by_value(GapState)})

GapKey = tuple[str, str, str, int, int]

_ADVANCE_CHECKPOINT: Final = (
    "INSERT INTO ingest_checkpoints AS c (venue, symbol, stream, last_trade_id, updated_at_ms) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (venue, symbol, stream) DO UPDATE SET "
    "updated_at_ms = CASE WHEN EXCLUDED.last_trade_id > c.last_trade_id "
    "THEN EXCLUDED.updated_at_ms ELSE c.updated_at_ms END, "
    "last_trade_id = GREATEST(c.last_trade_id, EXCLUDED.last_trade_id) "
    "RETURNING last_trade_id"
)
_SELECT_CHECKPOINT: Final = f"SELECT {', '.join(CHECKPOINT_ROWS.columns)} FROM ingest_checkpoints"
_SELECT_GAP: Final = f"SELECT {', '.join(GAP_ROWS.columns)} FROM gaps"
_GAP_KEY: Final = "venue = %s AND symbol = %s AND stream = %s AND from_id = %s AND to_id = %s"


def advance_checkpoint(conn: Conn, key: tuple[str, str, str], last_id: int, now_ms: int) -> int:
    """Move checkpoint ``key`` forward to ``last_id`` (never back); its stored last id."""
    return int(conn.execute(_ADVANCE_CHECKPOINT, (*key, last_id, now_ms)).fetchone()[0])


def read_checkpoint(conn: Conn, key: tuple[str, str, str]) -> Checkpoint | None:
    """Checkpoint ``(venue, symbol, stream)``, or ``None``."""
    row = conn.execute(
        f"{_SELECT_CHECKPOINT} WHERE venue = %s AND symbol = %s AND stream = %s", key
    ).fetchone()
    return None if row is None else CHECKPOINT_ROWS.load(row)


def move_checkpoint(conn: Conn, key: tuple[str, str, str], last_id: int, now_ms: int) -> Checkpoint:
    """:func:`advance_checkpoint`, then the checkpoint as stored."""
    advance_checkpoint(conn, key, last_id, now_ms)
    found = read_checkpoint(conn, key)
    assert found is not None
    return found


def read_checkpoints(conn: Conn) -> list[Checkpoint]:
    """Every checkpoint, ordered by venue, symbol, stream (byte order, as SQLite's)."""
    rows = conn.execute(
        f'{_SELECT_CHECKPOINT} ORDER BY venue COLLATE "C", symbol COLLATE "C", stream COLLATE "C"'
    )
    return [CHECKPOINT_ROWS.load(row) for row in rows]


def record_gap(conn: Conn, *, key: GapKey, detected_at_ms: int, reason: str) -> Gap:
    """Record the range ``key`` as an OPEN gap, or find it recorded; the gap as stored."""
    conn.execute(
        "INSERT INTO gaps (venue, symbol, stream, from_id, to_id, detected_at_ms, state, reason) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'open', %s) "
        "ON CONFLICT (venue, symbol, stream, from_id, to_id) DO NOTHING",
        (*key, detected_at_ms, reason),
    )
    row = conn.execute(f"{_SELECT_GAP} WHERE {_GAP_KEY}", key).fetchone()
    return GAP_ROWS.load(row)


def resolve_gap(
    conn: Conn,
    *,
    gap_id: int,
    state: GapState,
    resolution: str | None,
    resolved_at_ms: int,
    path: str,
) -> Gap | None:
    """Move gap ``gap_id`` to ``state`` (a no-op when it is there); ``None`` if no such gap.

    Raises:
        GapTransitionError: :data:`GAP_TRANSITIONS` does not allow the move.
    """
    row = conn.execute(f"{_SELECT_GAP} WHERE gap_id = %s FOR UPDATE", (gap_id,)).fetchone()
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
        "UPDATE gaps SET state = %s, resolution = %s, resolved_at_ms = %s WHERE gap_id = %s",
        (state.value, resolution, resolved_at_ms, gap_id),
    )
    return attrs.evolve(gap, state=state, resolution=resolution, resolved_at_ms=resolved_at_ms)


def record_resolved_gap(
    conn: Conn,
    *,
    key: GapKey,
    state: GapState,
    reason: str,
    resolution: str | None,
    at_ms: int,
    path: str,
) -> Gap:
    """:func:`record_gap` and :func:`resolve_gap` to ``state``, in the caller's one transaction."""
    gap = record_gap(conn, key=key, detected_at_ms=at_ms, reason=reason)
    resolved = resolve_gap(
        conn, gap_id=gap.gap_id, state=state, resolution=resolution, resolved_at_ms=at_ms, path=path
    )
    assert resolved is not None
    return resolved


def list_gaps(
    conn: Conn,
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
            clauses.append(f"{column} = %s")
            args.append(value)
    if state is not None:
        clauses.append("state = %s")
        args.append(state.value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return [
        GAP_ROWS.load(row) for row in conn.execute(f"{_SELECT_GAP} {where} ORDER BY gap_id", args)
    ]


def count_gaps(conn: Conn) -> dict[GapState, int]:
    """Gaps per state (every state present)."""
    counts = dict.fromkeys(GapState, 0)
    for state, count in conn.execute("SELECT state, count(*) FROM gaps GROUP BY state"):
        counts[GapState(state)] = int(count)
    return counts
