"""Reading the order tables in SQLite: for recovery, reconciliation, risk and the admin API.

Unfinished intents in submission order (what start-up recovery resolves),
lookups by client or venue order id (reconciliation), pages of intents and
their history (``GET /orders``, ``tradingd orders``), counts by state
(``/status``, metrics). Reading one intent is
:func:`~daemon.store.orders_rows.get_intent`; fills and positions are in
:mod:`~daemon.store.orders_fills`.

Pure functions of a :class:`sqlite3.Connection`, run in the owner's read
transaction (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from daemon.orders.records import HistoryRow, IntentRecord
from daemon.orders.state import OrderState
from daemon.store.orders_rows import INTENT_ROWS, NON_TERMINAL_SQL, SELECT_INTENT

__all__ = [
    "counts_by_state",
    "find_by_venue_order_id",
    "history",
    "list_intents",
    "load_intents",
    "non_terminal",
]


def load_intents(
    conn: sqlite3.Connection, client_order_ids: Sequence[str]
) -> dict[str, IntentRecord]:
    """The stored intents among ``client_order_ids``, by id (missing ids are absent)."""
    if not client_order_ids:
        return {}
    rows = conn.execute(
        f"{SELECT_INTENT} WHERE client_order_id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(client_order_ids)),),
    )
    return {record.client_order_id: record for record in map(INTENT_ROWS.load, rows)}


def non_terminal(conn: sqlite3.Connection) -> list[IntentRecord]:
    """Every intent that is not finished, in submission order (what recovery resolves)."""
    rows = conn.execute(f"{SELECT_INTENT} WHERE state IN ({NON_TERMINAL_SQL}) ORDER BY seq")
    return [INTENT_ROWS.load(row) for row in rows]


def list_intents(
    conn: sqlite3.Connection,
    *,
    account: str | None = None,
    states: Collection[OrderState] | None = None,
    limit: int = 100,
    before_seq: int | None = None,
) -> list[IntentRecord]:
    """Intents newest first (by ``seq``), optionally of one account and some states.

    Page with ``before_seq`` = the last ``seq`` of the previous page.

    Raises:
        ValueError: ``limit`` < 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    clauses: list[str] = []
    args: list[Any] = []
    if account is not None:
        clauses.append("account = ?")
        args.append(account)
    if states is not None:
        wanted = sorted({OrderState(state).value for state in states})
        if not wanted:
            return []
        clauses.append(f"state IN ({', '.join('?' for _ in wanted)})")
        args += wanted
    if before_seq is not None:
        clauses.append("seq < ?")
        args.append(before_seq)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(limit)
    rows = conn.execute(f"{SELECT_INTENT}{where} ORDER BY seq DESC LIMIT ?", args)
    return [INTENT_ROWS.load(row) for row in rows]


def history(conn: sqlite3.Connection, client_order_id: str) -> list[HistoryRow]:
    """The intent's state changes, oldest first (empty for an unknown id)."""
    rows = conn.execute(
        "SELECT client_order_id, seq, from_state, to_state, reason, at_ms FROM order_history "
        "WHERE client_order_id = ? ORDER BY seq",
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


def find_by_venue_order_id(
    conn: sqlite3.Connection, venue: str, venue_order_id: int
) -> IntentRecord | None:
    """The intent the venue knows as ``venue_order_id`` (the newest, should two claim it)."""
    row = conn.execute(
        f"{SELECT_INTENT} WHERE venue = ? AND venue_order_id = ? ORDER BY seq DESC LIMIT 1",
        (venue, venue_order_id),
    ).fetchone()
    return None if row is None else INTENT_ROWS.load(row)


def counts_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """How many intents are in each state (every state named, zeros included)."""
    counts = {state.value: 0 for state in OrderState}
    for state, count in conn.execute("SELECT state, count(*) FROM order_intents GROUP BY state"):
        counts[state] = int(count)
    return counts
