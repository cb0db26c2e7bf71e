"""State transitions of stored intents in SQLite: compare-and-set, one history row per step.

**Every state change is a history row in the same transaction.** The row's
state must be the transition's source
(:class:`~daemon.store.orders_rules.StaleStateError` otherwise), so two
writers that both read PENDING cannot both mark SENDING; the table of
:mod:`daemon.orders.state` is checked again, so a forged
:class:`~daemon.orders.state.Transition` cannot slip past it. **Cumulative
quantities never move backwards**: venue reports arrive out of order, and an
old one must not undo a newer one. The rules are
:func:`~daemon.store.orders_rules.advance`; this module reads the row and
writes the result.

**Fencing.** Given a ``fence`` (:data:`~daemon.store.lease_rules.Fence`),
every change first checks, in the same transaction, that the intent's
account is still leased to the writer with the writer's fencing token
(:mod:`daemon.store.lease_rules`): a daemon that lost the account gets
:class:`~daemon.errors.LeaseLostError` and nothing is written. The daemon's
order store always passes one (:class:`~daemon.store.lease_store.FencedOrdersSql`).

Pure functions of a :class:`sqlite3.Connection`, run inside the owner's
transaction (see :mod:`daemon.store.orders`). The keyword fields are
:class:`~daemon.store.orders_rules.ReportFields`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final, Unpack

from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState, Transition
from daemon.store.lease_rules import Fence
from daemon.store.orders_rows import require_intent, save_intent
from daemon.store.orders_rules import ProgressFields, ReportFields, advance, cancel_marked

__all__ = [
    "apply_transition",
    "apply_transitions",
    "cancel_unsent",
    "request_cancel",
    "update_progress",
]

_INSERT_HISTORY: Final = (
    "INSERT INTO order_history (client_order_id, seq, from_state, to_state, reason, at_ms) "
    "VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM order_history WHERE client_order_id = ?), "
    "?, ?, ?, ?)"
)


def apply_transitions(
    conn: sqlite3.Connection,
    client_order_id: str,
    ts: Sequence[Transition],
    now_ms: int,
    *,
    fence: Fence | None = None,
    **fields: Unpack[ReportFields],
) -> IntentRecord:
    """Apply consecutive transitions (a :func:`~daemon.orders.state.path_to_venue_state`
    path) and the given fields, with one history row per step.

    The first step must start from the stored state and each next one from the
    previous step's target. The fields are merged once, with the last step
    (``executed_qty`` and ``cum_quote_qty`` never decrease). Every step into
    SENDING sets ``sent_at_ms = now_ms`` and counts a send attempt. With no
    steps the fields are merged as by :func:`update_progress`.

    Returns:
        The intent as stored afterwards.

    Raises:
        UnknownIntentError: no such intent.
        StaleStateError: the stored state is not the first step's source.
        InvalidStateTransitionError: a step the table forbids (a forged
            :class:`~daemon.orders.state.Transition`).
        ValueError: the steps do not chain, or a quantity is negative.
        VenueOrderIdConflictError: ``venue_order_id`` differs from the stored one.
        LeaseLostError: ``fence`` refused the intent's account (checked first).

    Nothing is written when it raises (and the caller's transaction rolls back).
    """
    current = require_intent(conn, client_order_id)
    if fence is not None:
        fence(conn, current.account)
    record = advance(current, ts, now_ms, fields)
    if record is None:
        return current
    save_intent(conn, record)
    for step in ts:
        conn.execute(
            _INSERT_HISTORY,
            (
                client_order_id,
                client_order_id,
                step.source.value,
                step.target.value,
                step.reason,
                now_ms,
            ),
        )
    return record


def apply_transition(
    conn: sqlite3.Connection,
    client_order_id: str,
    t: Transition,
    now_ms: int,
    *,
    fence: Fence | None = None,
    **fields: Unpack[ReportFields],
) -> IntentRecord:
    """Move an intent by one transition and record it in the history.

    ``t.source`` must be the stored state. Into SENDING, ``sent_at_ms`` becomes
    ``now_ms`` and ``send_attempts`` grows by one (the durable mark
    :func:`~daemon.orders.state.classify_not_found` measures from). Given
    fields are stored too; ``executed_qty`` and ``cum_quote_qty`` never decrease.

    Returns:
        The intent as stored afterwards.

    Raises:
        UnknownIntentError: no such intent.
        StaleStateError: the stored state is not ``t.source``.
        InvalidStateTransitionError: the table forbids ``t`` (a forged transition).
        VenueOrderIdConflictError: ``venue_order_id`` differs from the stored one.
        ValueError: a quantity is negative or not finite.
    """
    return apply_transitions(conn, client_order_id, (t,), now_ms, fence=fence, **fields)


def update_progress(
    conn: sqlite3.Connection,
    client_order_id: str,
    now_ms: int,
    *,
    fence: Fence | None = None,
    **fields: Unpack[ProgressFields],
) -> IntentRecord:
    """Store news that does not change the state (a further partial fill, the venue id).

    No history row: the state did not change. ``executed_qty`` and
    ``cum_quote_qty`` never move backwards (an old report arriving late is
    ignored for them); ``updated_at_ms`` moves only when something changed.

    Raises:
        UnknownIntentError: no such intent.
        VenueOrderIdConflictError: ``venue_order_id`` differs from the stored one.
        ValueError: a quantity is negative or not finite.
    """
    return apply_transitions(conn, client_order_id, (), now_ms, fence=fence, **fields)


def request_cancel(
    conn: sqlite3.Connection, client_order_id: str, now_ms: int, *, fence: Fence | None = None
) -> IntentRecord:
    """Durably mark that a cancel was requested (idempotent: the first mark stays).

    A terminal intent is left as it is (there is nothing left to cancel); the
    returned record shows its state, so the caller can tell.

    Raises:
        UnknownIntentError: no such intent.
        LeaseLostError: ``fence`` refused the account (see below).
    """
    current = require_intent(conn, client_order_id)
    if fence is not None:
        fence(conn, current.account)
    record = cancel_marked(current, now_ms)
    if record is None:
        return current
    save_intent(conn, record)
    return record


def cancel_unsent(
    conn: sqlite3.Connection,
    client_order_id: str,
    t: Transition,
    now_ms: int,
    *,
    fence: Fence | None = None,
) -> IntentRecord:
    """Cancel a PENDING intent locally: mark the cancel request and move it PENDING →
    CANCELED (``t``) with its history row, in the caller's one transaction.

    Nothing was sent (or the venue proved it holds nothing), so no venue request
    is needed; the first cancel mark stays if there was one.

    Raises:
        UnknownIntentError: no such intent.
        StaleStateError: the stored state is not PENDING (``t.source``): its send
            section started meanwhile; nothing was changed.
        ValueError: ``t`` is not PENDING → CANCELED, or the intent has venue facts.
    """
    if (t.source, t.target) != (OrderState.PENDING, OrderState.CANCELED):
        raise ValueError(f"cancel_unsent moves PENDING -> CANCELED, not {t.source} -> {t.target}")
    current = require_intent(conn, client_order_id)
    if fence is not None:
        fence(conn, current.account)
    if current.state is OrderState.PENDING:
        marked = cancel_marked(current, now_ms)
        if marked is not None:
            save_intent(conn, marked)
    return apply_transitions(conn, client_order_id, (t,), now_ms)
