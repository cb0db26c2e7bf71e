"""Fills and positions in PostgreSQL: each fill counted once, moving its position with it.

The rules are SQLite's (:mod:`daemon.store.orders_fills`): fills are
idempotent on ``(venue, symbol, trade_id, side)`` (``ON CONFLICT DO NOTHING``; the
first report wins) and only the fills actually inserted move the position,
in the same transaction, with exact decimal arithmetic on ``TEXT`` quantities.

What PostgreSQL adds: another daemon may move the same position at the same
time, so each position row is made to exist, then read ``FOR UPDATE`` (in a
fixed key order, so two writers cannot deadlock on two positions) before it
is rewritten: no update is ever lost. A fill being inserted by another
transaction is waited for (the primary key), then skipped.

Pure functions of a :class:`psycopg.Connection`, run inside the owner's
transaction (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

from daemon.orders.records import FillRecord, plain
from daemon.store.orders_rules import add_exact, check_fills, position_deltas
from daemon.store.pg_orders_rows import FILL_ROWS, NON_TERMINAL, SELECT_FILL

__all__ = ["filled_of_unfinished", "fills_for", "insert_fills", "positions"]

Conn = Any  # psycopg.Connection

_fill_values: Final = FILL_ROWS.dumper()
_INSERT_FILL: Final = (
    f"INSERT INTO order_fills ({', '.join(FILL_ROWS.columns)}) "
    f"VALUES ({', '.join('%s' for _ in FILL_ROWS.columns)}) "
    "ON CONFLICT (venue, symbol, trade_id, side) DO NOTHING"
)
_ENSURE_POSITION: Final = (
    "INSERT INTO positions (account, symbol, quantity, updated_at_ms) VALUES (%s, %s, '0', %s) "
    "ON CONFLICT (account, symbol) DO NOTHING RETURNING quantity"
)
_LOCK_POSITION: Final = (
    "SELECT quantity FROM positions WHERE account = %s AND symbol = %s FOR UPDATE"
)
_SET_POSITION: Final = (
    "UPDATE positions SET quantity = %s, updated_at_ms = %s WHERE account = %s AND symbol = %s"
)


def insert_fills(conn: Conn, fills: Sequence[FillRecord], now_ms: int) -> list[FillRecord]:
    """Store fills idempotently and move the positions of the new ones.

    Returns:
        The fills that were new, in input order.

    Raises:
        ValueError: a fill's quantity is not a finite decimal > 0.
        decimal.Inexact: a position would need rounding.
    """
    check_fills(fills)
    new = [fill for fill in fills if conn.execute(_INSERT_FILL, _fill_values(fill)).rowcount == 1]
    for (account, symbol), delta in sorted(position_deltas(new).items()):
        created = conn.execute(_ENSURE_POSITION, (account, symbol, now_ms)).fetchone()
        if created is not None:
            stored = Decimal(0)  # a new row: its '0' is a placeholder, not a spelling
        else:
            stored = Decimal(conn.execute(_LOCK_POSITION, (account, symbol)).fetchone()[0])
        quantity = add_exact(stored, delta)
        conn.execute(_SET_POSITION, (plain(quantity), now_ms, account, symbol))
    return new


def fills_for(conn: Conn, client_order_id: str) -> list[FillRecord]:
    """The stored fills of one intent, oldest first."""
    rows = conn.execute(
        f"{SELECT_FILL} WHERE client_order_id = %s ORDER BY time_ms, trade_id", (client_order_id,)
    )
    return [FILL_ROWS.load(row) for row in rows]


def filled_of_unfinished(conn: Conn) -> dict[str, Decimal]:
    """The stored fills' total quantity of every unfinished intent that has fills."""
    rows = conn.execute(
        "SELECT f.client_order_id, f.quantity FROM order_fills AS f "
        "JOIN order_intents AS i ON i.client_order_id = f.client_order_id "
        "WHERE i.state = ANY(%s)",
        (NON_TERMINAL,),
    )
    filled: dict[str, Decimal] = {}
    for client_order_id, quantity in rows:
        filled[client_order_id] = add_exact(
            filled.get(client_order_id, Decimal(0)), Decimal(quantity)
        )
    return filled


def positions(conn: Conn, account: str | None = None) -> dict[tuple[str, str], Decimal]:
    """Signed base quantity by ``(account, symbol)`` (of one account when given)."""
    if account is None:
        rows = conn.execute("SELECT account, symbol, quantity FROM positions")
    else:
        rows = conn.execute(
            "SELECT account, symbol, quantity FROM positions WHERE account = %s", (account,)
        )
    return {(row[0], row[1]): Decimal(row[2]) for row in rows}
