"""The operators' trading switches in PostgreSQL (``trading_states``): one row per scope.

As SQLite's (:mod:`daemon.store.trading_states`): an upsert per scope, read
back ordered by scope. Pure functions of a :class:`psycopg.Connection`.
"""

from __future__ import annotations

from typing import Any

from daemon.risk.state import TradingState
from daemon.store.orders_rules import trading_state_name

__all__ = ["load_trading_states", "save_trading_state"]

Conn = Any  # psycopg.Connection


def save_trading_state(
    conn: Conn, scope: str, state: str | TradingState, reason: str, now_ms: int
) -> None:
    """Store an operator's switch (``scope`` ``"*"``: global, or an account name).

    Raises:
        ValueError: ``scope`` is empty or ``state`` is not ACTIVE, REDUCING or HALTED.
    """
    conn.execute(
        "INSERT INTO trading_states (scope, state, reason, changed_at_ms) "
        "VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (scope) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, "
        "changed_at_ms = EXCLUDED.changed_at_ms",
        (scope, trading_state_name(scope, state), reason, now_ms),
    )


def load_trading_states(conn: Conn) -> list[tuple[str, str, str, int]]:
    """Every stored switch as ``(scope, state, reason, changed_at_ms)``, by scope."""
    rows = conn.execute(
        'SELECT scope, state, reason, changed_at_ms FROM trading_states ORDER BY scope COLLATE "C"'
    )
    return [(row[0], row[1], row[2], int(row[3])) for row in rows]
