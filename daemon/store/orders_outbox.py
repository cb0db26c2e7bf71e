"""The outbox in SQLite: recording new order intents, each with its first history row.

**One row per intent.** The primary key is the deterministic client order
id, so a resubmitted message can never become a second intent:
:func:`record_intents` (the group commit's statement batch) returns the
stored intent for an id seen before, and :func:`insert_intents` raises
:class:`~daemon.store.orders_rules.DuplicateIntentError`, rolling back the
*whole* batch (a batch is all or nothing). The executor's fast path records
an intent and its first SENDING mark (the send attempt) in the same
transaction.

Pure functions of a :class:`sqlite3.Connection`, run inside the owner's
transaction (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Final

import attrs

from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState
from daemon.store.orders_rows import INTENT_ROWS, get_intent
from daemon.store.orders_rules import (
    INTENT_RECORDED_REASON,
    SENDING_REASON,
    DuplicateIntentError,
    check_fresh,
)

__all__ = ["insert_intents", "record_intents"]

_intent_values: Final = INTENT_ROWS.dumper()
_INSERT_INTENT_IF_NEW: Final = (
    f"INSERT INTO order_intents ({', '.join(INTENT_ROWS.columns)}) "
    f"VALUES ({', '.join('?' for _ in INTENT_ROWS.columns)}) ON CONFLICT DO NOTHING"
)
_INSERT_FIRST_HISTORY: Final = (
    "INSERT INTO order_history (client_order_id, seq, from_state, to_state, reason, at_ms) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def insert_intents(
    conn: sqlite3.Connection, records: Sequence[IntentRecord], now_ms: int
) -> list[IntentRecord]:
    """Record new intents as PENDING, each with its first history row.

    ``seq`` is assigned here (``max(seq) + 1`` onwards, in input order; intents
    are never deleted, so it never repeats), and
    ``created_at_ms``/``updated_at_ms`` are ``now_ms``; whatever the records
    carried in those fields is replaced.

    Returns:
        The records as stored.

    Raises:
        DuplicateIntentError: an id is already stored or repeats in the batch.
            Raised inside the caller's transaction, which then rolls back:
            nothing of the batch is stored.
        ValueError: a record is not a fresh PENDING intent.
    """
    inserted, existing = record_intents(conn, records, now_ms)
    if existing:  # every id not inserted is in ``existing``
        duplicate = next(iter(existing))
        raise DuplicateIntentError(duplicate, "already stored or repeated in the batch")
    return inserted


def record_intents(
    conn: sqlite3.Connection,
    records: Sequence[IntentRecord],
    now_ms: int,
    *,
    sending: Collection[str] = (),
) -> tuple[list[IntentRecord], dict[str, IntentRecord]]:
    """The group commit's one statement batch: record what is new, find what is not.

    Each record is inserted unless its client order id is already stored
    (``ON CONFLICT DO NOTHING``: a message id seen before, in an earlier
    batch or earlier in this one); those are returned as stored instead.
    One lane call, one transaction, whatever the mix.

    Intents whose id is in ``sending`` are recorded *and* marked SENDING in
    the same transaction (history ``None → PENDING → SENDING``): the
    executor's fast path for an idle account, which saves the separate
    SENDING commit. The intent row still commits before any I/O and before
    the caller's answer; a crash before the send leaves a SENDING row, which
    start-up reconciliation resolves like any other (UNKNOWN, query, resend
    only after proven absence).

    Returns:
        ``(inserted, existing)``: the new records as stored (in input order),
        and the stored record of every id that was already there.

    Raises:
        ValueError: a record is not a fresh PENDING intent.
    """
    for record in records:
        check_fresh(record)
    inserted: list[IntentRecord] = []
    existing: dict[str, IntentRecord] = {}
    if not records:
        return inserted, existing
    next_seq = int(conn.execute("SELECT coalesce(max(seq), 0) FROM order_intents").fetchone()[0])
    for record in records:
        marked = record.client_order_id in sending
        row = attrs.evolve(
            record,
            seq=next_seq + 1,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
            state=OrderState.SENDING if marked else OrderState.PENDING,
            sent_at_ms=now_ms if marked else None,
            send_attempts=1 if marked else 0,
        )
        cursor = conn.execute(_INSERT_INTENT_IF_NEW, _intent_values(row))
        if cursor.rowcount != 1:
            found = get_intent(conn, record.client_order_id)
            if found is None:  # the other unique key: same (account, message_id, symbol)
                raise DuplicateIntentError(record.client_order_id, "conflicting unique key")
            existing[record.client_order_id] = found
            continue
        next_seq += 1
        coid = row.client_order_id
        conn.execute(
            _INSERT_FIRST_HISTORY,
            (coid, 1, None, OrderState.PENDING.value, INTENT_RECORDED_REASON, now_ms),
        )
        if marked:
            conn.execute(
                _INSERT_FIRST_HISTORY,
                (
                    coid,
                    2,
                    OrderState.PENDING.value,
                    OrderState.SENDING.value,
                    SENDING_REASON,
                    now_ms,
                ),
            )
        inserted.append(row)
    return inserted, existing
