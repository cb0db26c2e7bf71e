"""The order tables' rows in SQLite: columns, conversions, and reading or saving one intent.

``order_intents`` and ``order_fills`` hold :class:`~daemon.orders.records.IntentRecord`
and :class:`~daemon.orders.records.FillRecord` field for field (a
:class:`~daemon.store.rows.RowCodec` each). Decimals are stored as ``TEXT``
exactly as ``format(d, "f")`` prints them (the venue's spelling:
``"0.00100000"`` stays as written) and read back with ``Decimal(text)``;
enums by value; times are wall-clock Unix milliseconds.

The functions take a :class:`sqlite3.Connection` and run inside the owner's
transaction, like every SQLite table module's (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Final

from daemon.model.orders import OrderType, Side, TimeInForce
from daemon.orders.records import FillRecord, IntentRecord, plain
from daemon.orders.state import TERMINAL_STATES, OrderState
from daemon.store.orders_rules import UnknownIntentError
from daemon.store.rows import FLAG, Conversion, RowCodec, by_value, nullable

__all__ = [
    "FILL_ROWS",
    "INTENT_ROWS",
    "NON_TERMINAL_SQL",
    "SELECT_FILL",
    "SELECT_INTENT",
    "get_intent",
    "require_intent",
    "save_intent",
]

_DECIMAL: Final = Conversion(load=Decimal, dump=plain)

INTENT_ROWS: Final = RowCodec(
    IntentRecord,
    {
        "side": by_value(Side),
        "type": by_value(OrderType),
        "quantity": _DECIMAL,
        "price": nullable(_DECIMAL),
        "time_in_force": nullable(by_value(TimeInForce)),
        "state": by_value(OrderState),
        "executed_qty": _DECIMAL,
        "cum_quote_qty": _DECIMAL,
    },
)
FILL_ROWS: Final = RowCodec(
    FillRecord,
    {
        "side": by_value(Side),
        "price": _DECIMAL,
        "quantity": _DECIMAL,
        "quote_quantity": _DECIMAL,
        "commission": _DECIMAL,
        "is_maker": nullable(FLAG),
    },
)

#: What changes after insertion (everything else is the order as submitted).
_MUTABLE_COLUMNS: Final = (
    "state",
    "updated_at_ms",
    "sent_at_ms",
    "send_attempts",
    "venue_order_id",
    "executed_qty",
    "cum_quote_qty",
    "reject_code",
    "reject_reason",
    "cancel_requested_at_ms",
)
_mutable_values: Final = INTENT_ROWS.dumper(_MUTABLE_COLUMNS)

SELECT_INTENT: Final = f"SELECT {', '.join(INTENT_ROWS.columns)} FROM order_intents"
SELECT_FILL: Final = f"SELECT {', '.join(FILL_ROWS.columns)} FROM order_fills"
#: The unfinished states, as an SQL list for ``state IN (...)``.
NON_TERMINAL_SQL: Final = ", ".join(
    f"'{state.value}'" for state in OrderState if state not in TERMINAL_STATES
)
_UPDATE_INTENT: Final = (
    f"UPDATE order_intents SET {', '.join(f'{c} = ?' for c in _MUTABLE_COLUMNS)} "
    "WHERE client_order_id = ?"
)


def get_intent(conn: sqlite3.Connection, client_order_id: str) -> IntentRecord | None:
    """The intent stored under ``client_order_id``, or ``None``."""
    row = conn.execute(f"{SELECT_INTENT} WHERE client_order_id = ?", (client_order_id,)).fetchone()
    return None if row is None else INTENT_ROWS.load(row)


def require_intent(conn: sqlite3.Connection, client_order_id: str) -> IntentRecord:
    """The intent stored under ``client_order_id``.

    Raises:
        UnknownIntentError: there is none.
    """
    found = get_intent(conn, client_order_id)
    if found is None:
        raise UnknownIntentError(client_order_id)
    return found


def save_intent(conn: sqlite3.Connection, record: IntentRecord) -> None:
    """Store what changed on an intent since it was inserted (its mutable columns)."""
    conn.execute(_UPDATE_INTENT, (*_mutable_values(record), record.client_order_id))
