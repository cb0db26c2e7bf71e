"""The outbox in PostgreSQL: recording new order intents, each with its first history row.

The rules are SQLite's (:mod:`daemon.store.orders_outbox`): one row per
intent keyed by the deterministic client order id (``ON CONFLICT DO
NOTHING``: an id seen before comes back as stored), a batch all or nothing,
``seq`` = ``max(seq) + 1`` onwards in input order with no gap after a rolled
back batch, and the executor's fast path (recorded *and* marked SENDING in
the same transaction).

What PostgreSQL adds: several daemons may record intents at once, so
``max(seq)`` is read under a transaction-level advisory lock
(:data:`SEQ_LOCK`), held to the commit — two batches never draw the same
numbers, and an intent another daemon is inserting right now is waited for
(the unique key), then found stored.

Pure functions of a :class:`psycopg.Connection`, run inside the owner's
transaction (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Final

import attrs

from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState
from daemon.store.orders_rules import (
    INTENT_RECORDED_REASON,
    SENDING_REASON,
    DuplicateIntentError,
    check_fresh,
)
from daemon.store.pg_orders_rows import INTENT_ROWS, get_intent

__all__ = ["SEQ_LOCK", "insert_intents", "record_intents"]

Conn = Any  # psycopg.Connection

#: Serialises ``seq`` assignment between daemons (held until the transaction ends).
SEQ_LOCK: Final = "SELECT pg_advisory_xact_lock(hashtext('tradingd:order_intents.seq'))"

_intent_values: Final = INTENT_ROWS.dumper()
_INSERT_INTENT_IF_NEW: Final = (
    f"INSERT INTO order_intents ({', '.join(INTENT_ROWS.columns)}) "
    f"VALUES ({', '.join('%s' for _ in INTENT_ROWS.columns)}) ON CONFLICT DO NOTHING"
)
_INSERT_HISTORY: Final = (
    "INSERT INTO order_history (client_order_id, seq, from_state, to_state, reason, at_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


def insert_intents(conn: Conn, records: Sequence[IntentRecord], now_ms: int) -> list[IntentRecord]:
    """Record new intents as PENDING, each with its first history row (all or nothing).

    Raises:
        DuplicateIntentError: an id is already stored or repeats in the batch
            (the caller's transaction rolls back: nothing of the batch is stored).
        ValueError: a record is not a fresh PENDING intent.
    """
    inserted, existing = record_intents(conn, records, now_ms)
    if existing:
        duplicate = next(iter(existing))
        raise DuplicateIntentError(duplicate, "already stored or repeated in the batch")
    return inserted


def record_intents(
    conn: Conn,
    records: Sequence[IntentRecord],
    now_ms: int,
    *,
    sending: Collection[str] = (),
) -> tuple[list[IntentRecord], dict[str, IntentRecord]]:
    """Record what is new, find what is not; ids in ``sending`` are also marked SENDING.

    Returns:
        ``(inserted, existing)`` as :func:`daemon.store.orders_outbox.record_intents`.

    Raises:
        ValueError: a record is not a fresh PENDING intent.
    """
    for record in records:
        check_fresh(record)
    inserted: list[IntentRecord] = []
    existing: dict[str, IntentRecord] = {}
    if not records:
        return inserted, existing
    conn.execute(SEQ_LOCK)
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM order_intents").fetchone()
    next_seq = int(row[0])
    history: list[tuple[Any, ...]] = []
    for record in records:
        marked = record.client_order_id in sending
        stored = attrs.evolve(
            record,
            seq=next_seq + 1,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
            state=OrderState.SENDING if marked else OrderState.PENDING,
            sent_at_ms=now_ms if marked else None,
            send_attempts=1 if marked else 0,
        )
        cursor = conn.execute(_INSERT_INTENT_IF_NEW, _intent_values(stored))
        if cursor.rowcount != 1:
            found = get_intent(conn, record.client_order_id)
            if found is None:  # the other unique key: same (account, message_id, symbol)
                raise DuplicateIntentError(record.client_order_id, "conflicting unique key")
            existing[record.client_order_id] = found
            continue
        next_seq += 1
        coid = stored.client_order_id
        pending = OrderState.PENDING.value
        history.append((coid, 1, None, pending, INTENT_RECORDED_REASON, now_ms))
        if marked:
            sent = OrderState.SENDING.value
            history.append((coid, 2, pending, sent, SENDING_REASON, now_ms))
        inserted.append(stored)
    if history:
        with conn.cursor() as cursor:
            cursor.executemany(_INSERT_HISTORY, history)
    return inserted, existing
