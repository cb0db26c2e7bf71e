"""Fills and positions in SQLite: each fill counted once, moving its position with it.

**Fills are idempotent on one side of a venue trade** ``(venue, symbol,
trade_id, side)`` (a self-trade is two executions with one trade id, a BUY and
a SELL, both ours) and move the position in the same transaction, and only for fills actually
inserted: a fill reported twice (the order's answer, a poll, the user data
stream) counts once, even across a crash between the two reports. Position
arithmetic is exact (:func:`~daemon.store.orders_rules.add_exact`);
quantities are stored as ``TEXT``.

Pure functions of a :class:`sqlite3.Connection`, run inside the owner's
transaction (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from typing import Final

from daemon.orders.records import FillRecord, plain
from daemon.store.orders_rows import FILL_ROWS, NON_TERMINAL_SQL, SELECT_FILL
from daemon.store.orders_rules import add_exact, check_fills, position_deltas

__all__ = ["filled_of_unfinished", "fills_for", "insert_fills", "positions"]

_fill_values: Final = FILL_ROWS.dumper()
_INSERT_FILL: Final = (
    f"INSERT INTO order_fills ({', '.join(FILL_ROWS.columns)}) "
    f"VALUES ({', '.join('?' for _ in FILL_ROWS.columns)}) "
    "ON CONFLICT (venue, symbol, trade_id, side) DO NOTHING"
)
_UPSERT_POSITION: Final = (
    "INSERT INTO positions (account, symbol, quantity, updated_at_ms) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (account, symbol) DO UPDATE SET "
    "quantity = excluded.quantity, updated_at_ms = excluded.updated_at_ms"
)


def insert_fills(
    conn: sqlite3.Connection, fills: Sequence[FillRecord], now_ms: int
) -> list[FillRecord]:
    """Store fills idempotently on ``(venue, symbol, trade_id, side)``; move the positions.

    Only fills that were not stored yet (before this call or earlier in the
    same batch; the first one wins) are inserted, and only those move
    ``positions`` — in the same transaction, so a crash can never count a fill
    without storing it or the other way round.

    Returns:
        The fills that were new, in input order.

    Raises:
        ValueError: a fill's quantity is not a finite decimal > 0.
        decimal.Inexact: a position would need rounding (never for venue
            quantities; refused rather than stored wrong).
    """
    check_fills(fills)
    new = [fill for fill in fills if conn.execute(_INSERT_FILL, _fill_values(fill)).rowcount == 1]
    for (account, symbol), delta in position_deltas(new).items():
        row = conn.execute(
            "SELECT quantity FROM positions WHERE account = ? AND symbol = ?", (account, symbol)
        ).fetchone()
        quantity = add_exact(Decimal(row[0]) if row is not None else Decimal(0), delta)
        conn.execute(_UPSERT_POSITION, (account, symbol, plain(quantity), now_ms))
    return new


def fills_for(conn: sqlite3.Connection, client_order_id: str) -> list[FillRecord]:
    """The stored fills of one intent, oldest first."""
    rows = conn.execute(
        f"{SELECT_FILL} WHERE client_order_id = ? ORDER BY time_ms, trade_id", (client_order_id,)
    )
    return [FILL_ROWS.load(row) for row in rows]


def filled_of_unfinished(conn: sqlite3.Connection) -> dict[str, Decimal]:
    """The stored fills' total quantity of every unfinished intent that has fills.

    What the positions already hold of each live order (start-up: the risk
    book's reservations must not count it again). Summed exactly, in Python:
    quantities are ``TEXT`` decimals.
    """
    rows = conn.execute(
        "SELECT f.client_order_id, f.quantity FROM order_fills AS f "
        "JOIN order_intents AS i ON i.client_order_id = f.client_order_id "
        f"WHERE i.state IN ({NON_TERMINAL_SQL})"
    )
    filled: dict[str, Decimal] = {}
    for client_order_id, quantity in rows:
        filled[client_order_id] = add_exact(
            filled.get(client_order_id, Decimal(0)), Decimal(quantity)
        )
    return filled


def positions(
    conn: sqlite3.Connection, account: str | None = None
) -> dict[tuple[str, str], Decimal]:
    """Signed base quantity by ``(account, symbol)`` (of one account when given)."""
    if account is None:
        rows = conn.execute("SELECT account, symbol, quantity FROM positions")
    else:
        rows = conn.execute(
            "SELECT account, symbol, quantity FROM positions WHERE account = ?", (account,)
        )
    return {(row[0], row[1]): Decimal(row[2]) for row in rows}
