"""The operators' trading switches in SQLite (``trading_states``): one row per scope.

A scope is :data:`~daemon.store.orders_rules.GLOBAL_SCOPE` or an account
name; the state is a :class:`~daemon.risk.state.TradingState` name, checked
by :func:`~daemon.store.orders_rules.trading_state_name`. Risk reads them at
start; the :class:`~daemon.store.orders.OrderStore` facade writes them.

Pure functions of a :class:`sqlite3.Connection`, run inside the owner's
transaction (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

import sqlite3

from daemon.risk.state import TradingState
from daemon.store.orders_rules import trading_state_name

__all__ = ["load_trading_states", "save_trading_state"]


def save_trading_state(
    conn: sqlite3.Connection,
    scope: str,
    state: str | TradingState,
    reason: str,
    now_ms: int,
) -> None:
    """Store an operator's switch (``scope`` ``"*"``: global, or an account name).

    Raises:
        ValueError: ``scope`` is empty or ``state`` is not ACTIVE, REDUCING or HALTED.
    """
    conn.execute(
        "INSERT INTO trading_states (scope, state, reason, changed_at_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (scope) DO UPDATE SET state = excluded.state, reason = excluded.reason, "
        "changed_at_ms = excluded.changed_at_ms",
        (scope, trading_state_name(scope, state), reason, now_ms),
    )


def load_trading_states(conn: sqlite3.Connection) -> list[tuple[str, str, str, int]]:
    """Every stored switch as ``(scope, state, reason, changed_at_ms)``, by scope."""
    rows = conn.execute(
        "SELECT scope, state, reason, changed_at_ms FROM trading_states ORDER BY scope"
    )
    return [(row[0], row[1], row[2], int(row[3])) for row in rows]
