"""Reading the order tables in PostgreSQL: recovery, reconciliation, risk and the admin API.

The same queries as SQLite's (:mod:`daemon.store.orders_queries`), in
PostgreSQL's dialect (``= ANY(%s)`` for lists). Pure functions of a
:class:`psycopg.Connection`, run in the owner's read transaction (one
REPEATABLE READ snapshot; see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from daemon.orders.records import HistoryRow, IntentRecord
from daemon.orders.state import OrderState
from daemon.store.pg_orders_rows import INTENT_ROWS, NON_TERMINAL, SELECT_INTENT

__all__ = [
    "counts_by_state",
    "find_by_venue_order_id",
    "history",
    "list_intents",
    "load_intents",
    "non_terminal",
]

Conn = Any  # psycopg.Connection


def load_intents(conn: Conn, client_order_ids: Sequence[str]) -> dict[str, IntentRecord]:
    """The stored intents among ``client_order_ids``, by id (missing ids are absent)."""
    if not client_order_ids:
        return {}
    rows = conn.execute(
        f"{SELECT_INTENT} WHERE client_order_id = ANY(%s)", (list(client_order_ids),)
    )
    return {record.client_order_id: record for record in map(INTENT_ROWS.load, rows)}


def non_terminal(conn: Conn) -> list[IntentRecord]:
    """Every intent that is not finished, in submission order (what recovery resolves)."""
    rows = conn.execute(f"{SELECT_INTENT} WHERE state = ANY(%s) ORDER BY seq", (NON_TERMINAL,))
    return [INTENT_ROWS.load(row) for row in rows]


def list_intents(
    conn: Conn,
    *,
    account: str | None = None,
    states: Collection[OrderState] | None = None,
    limit: int = 100,
    before_seq: int | None = None,
) -> list[IntentRecord]:
    """Intents newest first (by ``seq``), optionally of one account and some states.

    Raises:
        ValueError: ``limit`` < 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    clauses: list[str] = []
    args: list[Any] = []
    if account is not None:
        clauses.append("account = %s")
        args.append(account)
    if states is not None:
        wanted = sorted({OrderState(state).value for state in states})
        if not wanted:
            return []
        clauses.append("state = ANY(%s)")
        args.append(wanted)
    if before_seq is not None:
        clauses.append("seq < %s")
        args.append(before_seq)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(limit)
    rows = conn.execute(f"{SELECT_INTENT}{where} ORDER BY seq DESC LIMIT %s", args)
    return [INTENT_ROWS.load(row) for row in rows]


def history(conn: Conn, client_order_id: str) -> list[HistoryRow]:
    """The intent's state changes, oldest first (empty for an unknown id)."""
    rows = conn.execute(
        "SELECT client_order_id, seq, from_state, to_state, reason, at_ms FROM order_history "
        "WHERE client_order_id = %s ORDER BY seq",
        (client_order_id,),
    )
    return [
        HistoryRow(
            client_order_id=row[0],
            seq=row[1],
            source=None if row[2] is None else OrderState(row[2]),
            target=OrderState(row[3]),
            reason=row[4],
            at_ms=row[5],
        )
        for row in rows
    ]


def find_by_venue_order_id(conn: Conn, venue: str, venue_order_id: int) -> IntentRecord | None:
    """The intent the venue knows as ``venue_order_id`` (the newest, should two claim it)."""
    row = conn.execute(
        f"{SELECT_INTENT} WHERE venue = %s AND venue_order_id = %s ORDER BY seq DESC LIMIT 1",
        (venue, venue_order_id),
    ).fetchone()
    return None if row is None else INTENT_ROWS.load(row)


def counts_by_state(conn: Conn) -> dict[str, int]:
    """How many intents are in each state (every state named, zeros included)."""
    counts = {state.value: 0 for state in OrderState}
    for state, count in conn.execute("SELECT state, count(*) FROM order_intents GROUP BY state"):
        counts[state] = int(count)
    return counts
