"""State transitions of stored intents in PostgreSQL: compare-and-set, one history row per step.

The rules are SQLite's (:mod:`daemon.store.orders_transitions`, through
:func:`~daemon.store.orders_rules.advance`): the first step must start from
the stored state, the table of :mod:`daemon.orders.state` is checked again,
cumulative quantities never move backwards, every step is a history row in
the same transaction.

**Two daemons can never both advance the same intent.** The row is read
``FOR UPDATE`` (:func:`~daemon.store.pg_orders_rows.lock_intent`): a second
writer waits for the first to commit, then reads the new state and gets
:class:`~daemon.store.orders_rules.StaleStateError` from the rules; and the
``UPDATE`` itself is a compare-and-set on the state read
(:func:`~daemon.store.pg_orders_rows.save_intent`), so even a writer that
skipped the lock could not overwrite a newer state.

**Fencing** (a ``fence``, as for SQLite): after the intent's row is locked,
the account's lease row is read ``FOR SHARE`` (:func:`daemon.store.pg_leases.check_fence`)
and must still carry the writer's owner and token, else
:class:`~daemon.errors.LeaseLostError` and nothing is written. The share
lock lasts until the commit, so a takeover of the account (which updates
that row) is ordered strictly after every change that passed the check.

Pure functions of a :class:`psycopg.Connection`, run inside the owner's
transaction (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Unpack

from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState, Transition
from daemon.store.lease_rules import Fence
from daemon.store.orders_rules import ProgressFields, ReportFields, advance, cancel_marked
from daemon.store.pg_orders_rows import lock_intent, save_intent

__all__ = [
    "apply_transition",
    "apply_transitions",
    "cancel_unsent",
    "request_cancel",
    "update_progress",
]

Conn = Any  # psycopg.Connection

_INSERT_HISTORY: Final = (
    "INSERT INTO order_history (client_order_id, seq, from_state, to_state, reason, at_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


def apply_transitions(
    conn: Conn,
    client_order_id: str,
    ts: Sequence[Transition],
    now_ms: int,
    *,
    fence: Fence | None = None,
    **fields: Unpack[ReportFields],
) -> IntentRecord:
    """Apply consecutive transitions and the given fields, one history row per step.

    See :func:`daemon.store.orders_transitions.apply_transitions`; nothing is
    written when it raises.

    Raises:
        UnknownIntentError, StaleStateError, InvalidStateTransitionError,
        ValueError, VenueOrderIdConflictError, LeaseLostError: as SQLite's.
    """
    current = lock_intent(conn, client_order_id)
    if fence is not None:
        fence(conn, current.account)
    record = advance(current, ts, now_ms, fields)
    if record is None:
        return current
    save_intent(conn, record, current.state, ts[0] if ts else None)
    if ts:
        row = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM order_history WHERE client_order_id = %s",
            (client_order_id,),
        ).fetchone()
        first = int(row[0]) + 1
        rows = [
            (client_order_id, first + n, t.source.value, t.target.value, t.reason, now_ms)
            for n, t in enumerate(ts)
        ]
        with conn.cursor() as cursor:
            cursor.executemany(_INSERT_HISTORY, rows)
    return record


def apply_transition(
    conn: Conn,
    client_order_id: str,
    t: Transition,
    now_ms: int,
    *,
    fence: Fence | None = None,
    **fields: Unpack[ReportFields],
) -> IntentRecord:
    """Move an intent by one transition and record it in the history."""
    return apply_transitions(conn, client_order_id, (t,), now_ms, fence=fence, **fields)


def update_progress(
    conn: Conn,
    client_order_id: str,
    now_ms: int,
    *,
    fence: Fence | None = None,
    **fields: Unpack[ProgressFields],
) -> IntentRecord:
    """Store news that does not change the state (no history row)."""
    return apply_transitions(conn, client_order_id, (), now_ms, fence=fence, **fields)


def request_cancel(
    conn: Conn, client_order_id: str, now_ms: int, *, fence: Fence | None = None
) -> IntentRecord:
    """Durably mark that a cancel was requested (idempotent: the first mark stays)."""
    current = lock_intent(conn, client_order_id)
    if fence is not None:
        fence(conn, current.account)
    record = cancel_marked(current, now_ms)
    if record is None:
        return current
    save_intent(conn, record, current.state)
    return record


def cancel_unsent(
    conn: Conn, client_order_id: str, t: Transition, now_ms: int, *, fence: Fence | None = None
) -> IntentRecord:
    """Cancel a PENDING intent locally: its cancel mark and PENDING → CANCELED, one transaction.

    Raises:
        StaleStateError: the stored state is not PENDING; nothing was changed.
        ValueError: ``t`` is not PENDING → CANCELED, or the intent has venue facts.
    """
    if (t.source, t.target) != (OrderState.PENDING, OrderState.CANCELED):
        raise ValueError(f"cancel_unsent moves PENDING -> CANCELED, not {t.source} -> {t.target}")
    current = lock_intent(conn, client_order_id)
    if fence is not None:
        fence(conn, current.account)
    if current.state is OrderState.PENDING:
        marked = cancel_marked(current, now_ms)
        if marked is not None:
            save_intent(conn, marked, current.state)
    return apply_transitions(conn, client_order_id, (t,), now_ms)
