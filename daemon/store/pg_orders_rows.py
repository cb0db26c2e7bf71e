"""The order tables' rows in PostgreSQL: columns, conversions, and reading or saving one intent.

The same columns as SQLite's (:mod:`daemon.store.orders_rows`): decimals as
``TEXT`` in the spelling they were given (``"0.00100000"`` round-trips
exactly), enums by value, times in Unix milliseconds; ``is_maker`` is a
``BOOLEAN``.

**Saving is compare-and-set.** Several daemons may share the tables, so
:func:`save_intent` updates the row only while its state is still the one
the change was computed from (``WHERE client_order_id = %s AND state = %s
RETURNING``), and raises :class:`~daemon.store.orders_rules.StaleStateError`
otherwise, changing nothing. Writers also read the row ``FOR UPDATE``
(:func:`lock_intent`), so a concurrent writer waits for this transaction and
then sees its outcome; the compare-and-set is the guarantee, the lock makes
the loser's error precise.

Pure functions of a :class:`psycopg.Connection`, run inside the owner's
transaction (see :mod:`daemon.store.orders`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from daemon.model.orders import OrderType, Side, TimeInForce
from daemon.orders.records import FillRecord, IntentRecord, plain
from daemon.orders.state import TERMINAL_STATES, OrderState, Transition
from daemon.store.orders_rules import StaleStateError, UnknownIntentError
from daemon.store.rows import Conversion, RowCodec, by_value, nullable

__all__ = [
    "FILL_ROWS",
    "INTENT_ROWS",
    "NON_TERMINAL",
    "SELECT_FILL",
    "SELECT_INTENT",
    "get_intent",
    "lock_intent",
    "save_intent",
]

Conn = Any  # psycopg.Connection: functions of the owner's connection

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
    },
)

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
#: The unfinished states (a list parameter for ``state = ANY(%s)``).
NON_TERMINAL: Final = [state.value for state in OrderState if state not in TERMINAL_STATES]
_UPDATE_INTENT: Final = (
    f"UPDATE order_intents SET {', '.join(f'{c} = %s' for c in _MUTABLE_COLUMNS)} "
    "WHERE client_order_id = %s AND state = %s RETURNING state"
)


def get_intent(conn: Conn, client_order_id: str) -> IntentRecord | None:
    """The intent stored under ``client_order_id``, or ``None``."""
    row = conn.execute(f"{SELECT_INTENT} WHERE client_order_id = %s", (client_order_id,)).fetchone()
    return None if row is None else INTENT_ROWS.load(row)


def lock_intent(conn: Conn, client_order_id: str) -> IntentRecord:
    """The intent, its row locked until the transaction ends (``FOR UPDATE``).

    Raises:
        UnknownIntentError: there is none.
    """
    row = conn.execute(
        f"{SELECT_INTENT} WHERE client_order_id = %s FOR UPDATE", (client_order_id,)
    ).fetchone()
    if row is None:
        raise UnknownIntentError(client_order_id)
    return INTENT_ROWS.load(row)


def save_intent(
    conn: Conn, record: IntentRecord, expected: OrderState, step: Transition | None = None
) -> None:
    """Store the intent's mutable columns if its stored state is still ``expected``.

    ``step`` is the first transition of the change (named in the error).

    Raises:
        StaleStateError: another writer moved it first; nothing was changed.
        UnknownIntentError: the row is gone.
    """
    row = conn.execute(
        _UPDATE_INTENT, (*_mutable_values(record), record.client_order_id, expected.value)
    ).fetchone()
    if row is not None:
        return
    current = get_intent(conn, record.client_order_id)
    if current is None:
        raise UnknownIntentError(record.client_order_id)
    if step is None:  # writers hold the row lock (lock_intent): the row cannot have moved
        raise AssertionError(
            f"order {record.client_order_id}: state moved to {current.state.value} under the "
            f"row lock (expected {expected.value})"
        )
    raise StaleStateError(record.client_order_id, step, current.state)
