"""The durable order store: intents (the outbox), their history, fills, positions, trading states.

Exactly-once effects (docs/ARCHITECTURE.md §4 Orders, §6) rest on what this module commits, so every
write is a ``synchronous=FULL`` transaction
(:attr:`~daemon.store.base.Durability.CRITICAL`) and carries its own proof:

* **One row per intent.** The primary key is the deterministic client order id,
  so a resubmitted message can never become a second intent; a duplicate insert
  raises :class:`DuplicateIntentError` and rolls back the *whole* batch (the
  caller dedupes first; a batch is all or nothing).
* **Every state change is a history row in the same transaction.** The row's
  state must be the transition's source (:class:`StaleStateError` otherwise), so
  two writers that both read PENDING cannot both mark SENDING; the table of
  :mod:`daemon.orders.state` is checked again here, so a forged
  :class:`~daemon.orders.state.Transition` cannot slip past it.
* **Fills are idempotent on the venue trade id** and move the position in the
  same transaction, and only for fills actually inserted: a fill reported twice
  (the order's answer, a poll, the user data stream) counts once, even across
  a crash between the two reports.
* **Cumulative quantities never move backwards**: venue reports arrive out of
  order, and an old one must not undo a newer one.

Two layers, as elsewhere in the store: pure synchronous functions taking a
:class:`sqlite3.Connection`, to be called inside the owner's
:meth:`~daemon.store.base.StoreOwner.write` / ``read`` (so a caller can
compose several in one transaction — the group-commit writer records a whole
batch of intents in one commit), and :class:`OrderStore`,
the async facade where every method is one transaction. Like every table
module it depends on the owner interface (:class:`~daemon.store.base.StoreOwner`),
not on the SQLite owner.

Decimals are stored as ``TEXT`` exactly as ``format(d, "f")`` prints them (the
venue's spelling: ``"0.00100000"`` stays as written) and read back with
``Decimal(text)``; times are wall-clock Unix milliseconds.

Errors raised here, besides the store's own (:mod:`daemon.store.errors`):
:class:`StaleStateError` (an
:class:`~daemon.orders.state.InvalidStateTransitionError`: the row is not in
the transition's source state), :class:`UnknownIntentError`,
:class:`DuplicateIntentError` and :class:`VenueOrderIdConflictError`, all
``PermanentError`` s; the tree is drawn in :mod:`daemon.errors`.
"""

from __future__ import annotations

import builtins
import decimal
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from decimal import Decimal
from typing import Any, Final, Protocol, TypeVar

import attrs

from daemon.errors import PermanentError
from daemon.model.orders import OrderType, Side, TimeInForce
from daemon.orders.records import FillRecord, HistoryRow, IntentRecord, plain
from daemon.orders.state import (
    TERMINAL_STATES,
    TRANSITIONS,
    InvalidStateTransitionError,
    OrderState,
    Transition,
)
from daemon.resilience.deadletter import DeadLetterStore
from daemon.risk.state import TradingState
from daemon.store.base import Durability, StoreOwner

__all__ = [
    "GLOBAL_SCOPE",
    "INTENT_RECORDED_REASON",
    "DuplicateIntentError",
    "OrderStore",
    "OrdersBackend",
    "StaleStateError",
    "UnknownIntentError",
    "VenueOrderIdConflictError",
    "apply_transition",
    "apply_transitions",
    "counts_by_state",
    "fills_for",
    "find_by_venue_order_id",
    "get_intent",
    "history",
    "insert_fills",
    "insert_intents",
    "list_intents",
    "load_intents",
    "load_trading_states",
    "non_terminal",
    "positions",
    "request_cancel",
    "save_trading_state",
    "update_progress",
]

T = TypeVar("T")

#: ``trading_states.scope`` of the global switch (any other scope is an account name).
GLOBAL_SCOPE: Final = "*"
#: The reason of every intent's first history row (``None -> PENDING``).
INTENT_RECORDED_REASON: Final = "intent recorded"

#: Position arithmetic: wide enough that sums of venue quantities are exact, and
#: a sum that would need rounding raises instead of drifting silently.
_EXACT: Final = decimal.Context(
    prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow]
)


# ----------------------------------------------------------------------------- errors


class StaleStateError(InvalidStateTransitionError):
    """The intent is not in the state a transition starts from.

    Someone else moved it between the caller's read and its write (or the
    caller's view is simply out of date). Nothing was changed; read the intent
    again and decide anew — never retry the same transition blindly.

    Attributes:
        client_order_id: The intent.
        expected: The transition's source state.
        current: The state actually stored.
        target: The state that was asked for.
        reason: The transition's reason.
    """

    def __init__(self, client_order_id: str, t: Transition, actual: OrderState) -> None:
        PermanentError.__init__(
            self,
            f"order {client_order_id}: stale transition {t.source.value} -> {t.target.value} "
            f"({t.reason}): expected state {t.source.value}, but the stored state is "
            f"{actual.value}; nothing was changed",
        )
        self.client_order_id = client_order_id
        self.expected = t.source
        self.current = actual
        self.target = t.target
        self.reason = t.reason


class UnknownIntentError(PermanentError):
    """No intent is stored under the client order id.

    Attributes:
        client_order_id: The id that was asked for.
    """

    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"no order intent with client order id {client_order_id!r}")
        self.client_order_id = client_order_id


class DuplicateIntentError(PermanentError):
    """An intent being inserted is already stored (or appears twice in the batch).

    The whole batch was rolled back. Callers dedupe against the store first
    (the same message id answers with the stored intent), so this is a bug or
    a race between two writers.

    Attributes:
        client_order_id: The first duplicate found.
    """

    def __init__(self, client_order_id: str, detail: str) -> None:
        super().__init__(
            f"order intent {client_order_id} is already stored ({detail}); "
            "the whole batch was rolled back"
        )
        self.client_order_id = client_order_id


class VenueOrderIdConflictError(PermanentError):
    """A venue answer contradicts the stored intent (another venue order id).

    One client order id maps to one venue order; a second venue order id means
    the venue holds two orders for one intent — exactly what the outbox exists
    to prevent — so the store refuses the update and leaves the row for an
    operator instead of overwriting the evidence.

    Attributes:
        client_order_id: The intent.
        stored: The venue order id on record.
        reported: The venue order id of the contradicting answer.
    """

    def __init__(self, client_order_id: str, *, stored: int, reported: int) -> None:
        super().__init__(
            f"order {client_order_id}: the venue reported venue order id {reported}, but "
            f"{stored} is on record; refusing to overwrite (two venue orders for one intent?)"
        )
        self.client_order_id = client_order_id
        self.stored = stored
        self.reported = reported


# ----------------------------------------------------------------------------- rows

_INTENT_COLUMNS: Final = (
    "client_order_id",
    "message_id",
    "account",
    "venue",
    "symbol",
    "side",
    "type",
    "quantity",
    "price",
    "time_in_force",
    "state",
    "seq",
    "created_at_ms",
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
_SELECT_INTENT: Final = f"SELECT {', '.join(_INTENT_COLUMNS)} FROM order_intents"
_INSERT_INTENT: Final = (
    f"INSERT INTO order_intents ({', '.join(_INTENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _INTENT_COLUMNS)})"
)
_UPDATE_INTENT: Final = (
    f"UPDATE order_intents SET {', '.join(f'{c} = ?' for c in _MUTABLE_COLUMNS)} "
    "WHERE client_order_id = ?"
)
_INSERT_HISTORY: Final = (
    "INSERT INTO order_history (client_order_id, seq, from_state, to_state, reason, at_ms) "
    "VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM order_history WHERE client_order_id = ?), "
    "?, ?, ?, ?)"
)
_FILL_COLUMNS: Final = (
    "venue",
    "symbol",
    "trade_id",
    "client_order_id",
    "account",
    "venue_order_id",
    "side",
    "price",
    "quantity",
    "quote_quantity",
    "commission",
    "commission_asset",
    "time_ms",
    "is_maker",
)
_INSERT_FILL: Final = (
    f"INSERT INTO order_fills ({', '.join(_FILL_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _FILL_COLUMNS)}) "
    "ON CONFLICT (venue, symbol, trade_id) DO NOTHING"
)
_UPSERT_POSITION: Final = (
    "INSERT INTO positions (account, symbol, quantity, updated_at_ms) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (account, symbol) DO UPDATE SET "
    "quantity = excluded.quantity, updated_at_ms = excluded.updated_at_ms"
)
_NON_TERMINAL_SQL: Final = ", ".join(
    f"'{state.value}'" for state in OrderState if state not in TERMINAL_STATES
)
_TRADING_STATE_NAMES: Final = frozenset(state.value for state in TradingState)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _intent(row: Sequence[Any]) -> IntentRecord:
    return IntentRecord(
        client_order_id=row[0],
        message_id=row[1],
        account=row[2],
        venue=row[3],
        symbol=row[4],
        side=Side(row[5]),
        type=OrderType(row[6]),
        quantity=Decimal(row[7]),
        price=_decimal(row[8]),
        time_in_force=None if row[9] is None else TimeInForce(row[9]),
        state=OrderState(row[10]),
        seq=row[11],
        created_at_ms=row[12],
        updated_at_ms=row[13],
        sent_at_ms=row[14],
        send_attempts=row[15],
        venue_order_id=row[16],
        executed_qty=Decimal(row[17]),
        cum_quote_qty=Decimal(row[18]),
        reject_code=row[19],
        reject_reason=row[20],
        cancel_requested_at_ms=row[21],
    )


def _intent_values(r: IntentRecord) -> tuple[Any, ...]:
    return (
        r.client_order_id,
        r.message_id,
        r.account,
        r.venue,
        r.symbol,
        r.side.value,
        r.type.value,
        plain(r.quantity),
        plain(r.price),
        None if r.time_in_force is None else r.time_in_force.value,
        r.state.value,
        r.seq,
        r.created_at_ms,
        r.updated_at_ms,
        r.sent_at_ms,
        r.send_attempts,
        r.venue_order_id,
        plain(r.executed_qty),
        plain(r.cum_quote_qty),
        r.reject_code,
        r.reject_reason,
        r.cancel_requested_at_ms,
    )


def _mutable_values(r: IntentRecord) -> tuple[Any, ...]:
    return (
        r.state.value,
        r.updated_at_ms,
        r.sent_at_ms,
        r.send_attempts,
        r.venue_order_id,
        plain(r.executed_qty),
        plain(r.cum_quote_qty),
        r.reject_code,
        r.reject_reason,
        r.cancel_requested_at_ms,
    )


def _fill(row: Sequence[Any]) -> FillRecord:
    return FillRecord(
        venue=row[0],
        symbol=row[1],
        trade_id=row[2],
        client_order_id=row[3],
        account=row[4],
        venue_order_id=row[5],
        side=Side(row[6]),
        price=Decimal(row[7]),
        quantity=Decimal(row[8]),
        quote_quantity=Decimal(row[9]),
        commission=Decimal(row[10]),
        commission_asset=row[11],
        time_ms=row[12],
        is_maker=None if row[13] is None else bool(row[13]),
    )


def _fill_values(f: FillRecord) -> tuple[Any, ...]:
    return (
        f.venue,
        f.symbol,
        f.trade_id,
        f.client_order_id,
        f.account,
        f.venue_order_id,
        f.side.value,
        plain(f.price),
        plain(f.quantity),
        plain(f.quote_quantity),
        plain(f.commission),
        f.commission_asset,
        f.time_ms,
        None if f.is_maker is None else int(f.is_maker),
    )


def _json_list(values: Iterable[str]) -> str:
    return json.dumps(list(values))


# ----------------------------------------------------------------------------- intents


def get_intent(conn: sqlite3.Connection, client_order_id: str) -> IntentRecord | None:
    """The intent stored under ``client_order_id``, or ``None``."""
    row = conn.execute(f"{_SELECT_INTENT} WHERE client_order_id = ?", (client_order_id,)).fetchone()
    return None if row is None else _intent(row)


def _require(conn: sqlite3.Connection, client_order_id: str) -> IntentRecord:
    found = get_intent(conn, client_order_id)
    if found is None:
        raise UnknownIntentError(client_order_id)
    return found


def load_intents(
    conn: sqlite3.Connection, client_order_ids: Sequence[str]
) -> dict[str, IntentRecord]:
    """The stored intents among ``client_order_ids``, by id (missing ids are absent)."""
    if not client_order_ids:
        return {}
    rows = conn.execute(
        f"{_SELECT_INTENT} WHERE client_order_id IN (SELECT value FROM json_each(?))",
        (_json_list(client_order_ids),),
    )
    return {record.client_order_id: record for record in map(_intent, rows)}


def _check_fresh(record: IntentRecord) -> None:
    # A record carrying lifecycle facts is not a new intent: storing it as
    # PENDING would silently drop them, storing them would invent history.
    # (Field by field rather than comparing with a fresh instance: this runs
    # for every intent of every group commit.)
    if not (
        record.state is OrderState.PENDING
        and record.sent_at_ms is None
        and record.send_attempts == 0
        and record.venue_order_id is None
        and record.executed_qty == 0
        and record.cum_quote_qty == 0
        and record.reject_code is None
        and record.reject_reason is None
        and record.cancel_requested_at_ms is None
    ):
        raise ValueError(
            f"order intent {record.client_order_id} is not a fresh PENDING intent "
            f"(state {record.state.value}, send_attempts {record.send_attempts}, "
            f"venue_order_id {record.venue_order_id}); only new intents can be inserted"
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


_INSERT_INTENT_IF_NEW: Final = _INSERT_INTENT + " ON CONFLICT DO NOTHING"
_INSERT_FIRST_HISTORY: Final = (
    "INSERT INTO order_history (client_order_id, seq, from_state, to_state, reason, at_ms) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
#: History reason of the SENDING mark written together with the intent (fast path).
SENDING_REASON: Final = "sending new order"


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
        _check_fresh(record)
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


def _merge_fields(
    current: IntentRecord,
    *,
    venue_order_id: int | None,
    executed_qty: Decimal | None,
    cum_quote_qty: Decimal | None,
    reject_code: int | None = None,
    reject_reason: str | None = None,
) -> IntentRecord:
    changes: dict[str, Any] = {}
    if venue_order_id is not None and venue_order_id != current.venue_order_id:
        if current.venue_order_id is not None:
            raise VenueOrderIdConflictError(
                current.client_order_id, stored=current.venue_order_id, reported=venue_order_id
            )
        changes["venue_order_id"] = venue_order_id
    for name, value in (("executed_qty", executed_qty), ("cum_quote_qty", cum_quote_qty)):
        if value is None:
            continue
        if not value.is_finite() or value < 0:
            raise ValueError(
                f"order {current.client_order_id}: {name} must be a finite decimal >= 0, "
                f"got {value}"
            )
        if value > getattr(current, name):  # cumulative: an older report never undoes a newer
            changes[name] = value
    if reject_code is not None:
        changes["reject_code"] = reject_code
    if reject_reason is not None:
        changes["reject_reason"] = reject_reason
    return attrs.evolve(current, **changes) if changes else current


def _save(conn: sqlite3.Connection, record: IntentRecord) -> None:
    conn.execute(_UPDATE_INTENT, (*_mutable_values(record), record.client_order_id))


def apply_transitions(
    conn: sqlite3.Connection,
    client_order_id: str,
    ts: Sequence[Transition],
    now_ms: int,
    *,
    venue_order_id: int | None = None,
    executed_qty: Decimal | None = None,
    cum_quote_qty: Decimal | None = None,
    reject_code: int | None = None,
    reject_reason: str | None = None,
) -> IntentRecord:
    """Apply consecutive transitions (a :func:`~daemon.orders.state.path_to_venue_state`
    path) and the given fields, with one history row per step.

    The first step must start from the stored state and each next one from the
    previous step's target. The fields are merged once, with the last step
    (``executed_qty`` and ``cum_quote_qty`` never decrease). Every step into
    SENDING sets ``sent_at_ms = now_ms`` and counts a send attempt. With no
    steps the fields are merged as by :func:`update_progress`.

    Returns:
        The intent as stored afterwards.

    Raises:
        UnknownIntentError: no such intent.
        StaleStateError: the stored state is not the first step's source.
        InvalidStateTransitionError: a step the table forbids (a forged
            :class:`~daemon.orders.state.Transition`).
        ValueError: the steps do not chain, or a quantity is negative.
        VenueOrderIdConflictError: ``venue_order_id`` differs from the stored one.

    Nothing is written when it raises (and the caller's transaction rolls back).
    """
    current = _require(conn, client_order_id)
    record = current
    for index, step in enumerate(ts):
        if step.target not in TRANSITIONS[step.source]:
            raise InvalidStateTransitionError(step.source, step.target, reason=step.reason)
        if step.source is not record.state:
            if index == 0:
                raise StaleStateError(client_order_id, step, record.state)
            raise ValueError(
                f"order {client_order_id}: step {index} starts from {step.source.value} but "
                f"step {index - 1} ends in {record.state.value}; steps must chain"
            )
        changes: dict[str, Any] = {"state": step.target}
        if step.target is OrderState.SENDING:
            changes["sent_at_ms"] = now_ms
            changes["send_attempts"] = record.send_attempts + 1
        record = attrs.evolve(record, **changes)
    record = _merge_fields(
        record,
        venue_order_id=venue_order_id,
        executed_qty=executed_qty,
        cum_quote_qty=cum_quote_qty,
        reject_code=reject_code,
        reject_reason=reject_reason,
    )
    if not ts and record == current:
        return current  # nothing new: not even updated_at_ms moves
    record = attrs.evolve(record, updated_at_ms=now_ms)
    _save(conn, record)
    for step in ts:
        conn.execute(
            _INSERT_HISTORY,
            (
                client_order_id,
                client_order_id,
                step.source.value,
                step.target.value,
                step.reason,
                now_ms,
            ),
        )
    return record


def apply_transition(
    conn: sqlite3.Connection,
    client_order_id: str,
    t: Transition,
    now_ms: int,
    *,
    venue_order_id: int | None = None,
    executed_qty: Decimal | None = None,
    cum_quote_qty: Decimal | None = None,
    reject_code: int | None = None,
    reject_reason: str | None = None,
) -> IntentRecord:
    """Move an intent by one transition and record it in the history.

    ``t.source`` must be the stored state. Into SENDING, ``sent_at_ms`` becomes
    ``now_ms`` and ``send_attempts`` grows by one (the durable mark
    :func:`~daemon.orders.state.classify_not_found` measures from). Given
    fields are stored too; ``executed_qty`` and ``cum_quote_qty`` never decrease.

    Returns:
        The intent as stored afterwards.

    Raises:
        UnknownIntentError: no such intent.
        StaleStateError: the stored state is not ``t.source``.
        InvalidStateTransitionError: the table forbids ``t`` (a forged transition).
        VenueOrderIdConflictError: ``venue_order_id`` differs from the stored one.
        ValueError: a quantity is negative or not finite.
    """
    return apply_transitions(
        conn,
        client_order_id,
        (t,),
        now_ms,
        venue_order_id=venue_order_id,
        executed_qty=executed_qty,
        cum_quote_qty=cum_quote_qty,
        reject_code=reject_code,
        reject_reason=reject_reason,
    )


def update_progress(
    conn: sqlite3.Connection,
    client_order_id: str,
    now_ms: int,
    *,
    venue_order_id: int | None = None,
    executed_qty: Decimal | None = None,
    cum_quote_qty: Decimal | None = None,
) -> IntentRecord:
    """Store news that does not change the state (a further partial fill, the venue id).

    No history row: the state did not change. ``executed_qty`` and
    ``cum_quote_qty`` never move backwards (an old report arriving late is
    ignored for them); ``updated_at_ms`` moves only when something changed.

    Raises:
        UnknownIntentError: no such intent.
        VenueOrderIdConflictError: ``venue_order_id`` differs from the stored one.
        ValueError: a quantity is negative or not finite.
    """
    return apply_transitions(
        conn,
        client_order_id,
        (),
        now_ms,
        venue_order_id=venue_order_id,
        executed_qty=executed_qty,
        cum_quote_qty=cum_quote_qty,
    )


def request_cancel(conn: sqlite3.Connection, client_order_id: str, now_ms: int) -> IntentRecord:
    """Durably mark that a cancel was requested (idempotent: the first mark stays).

    A terminal intent is left as it is (there is nothing left to cancel); the
    returned record shows its state, so the caller can tell.

    Raises:
        UnknownIntentError: no such intent.
    """
    current = _require(conn, client_order_id)
    if current.cancel_requested_at_ms is not None or current.is_terminal:
        return current
    record = attrs.evolve(current, cancel_requested_at_ms=now_ms, updated_at_ms=now_ms)
    _save(conn, record)
    return record


def non_terminal(conn: sqlite3.Connection) -> list[IntentRecord]:
    """Every intent that is not finished, in submission order (what recovery resolves)."""
    rows = conn.execute(f"{_SELECT_INTENT} WHERE state IN ({_NON_TERMINAL_SQL}) ORDER BY seq")
    return [_intent(row) for row in rows]


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
    rows = conn.execute(f"{_SELECT_INTENT}{where} ORDER BY seq DESC LIMIT ?", args)
    return [_intent(row) for row in rows]


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
        f"{_SELECT_INTENT} WHERE venue = ? AND venue_order_id = ? ORDER BY seq DESC LIMIT 1",
        (venue, venue_order_id),
    ).fetchone()
    return None if row is None else _intent(row)


def counts_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """How many intents are in each state (every state named, zeros included)."""
    counts = {state.value: 0 for state in OrderState}
    for state, count in conn.execute("SELECT state, count(*) FROM order_intents GROUP BY state"):
        counts[state] = int(count)
    return counts


# ----------------------------------------------------------------------------- fills


def insert_fills(
    conn: sqlite3.Connection, fills: Sequence[FillRecord], now_ms: int
) -> list[FillRecord]:
    """Store fills idempotently on ``(venue, symbol, trade_id)`` and move the positions.

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
    for fill in fills:
        if not fill.quantity.is_finite() or fill.quantity <= 0:
            raise ValueError(
                f"fill {fill.venue}/{fill.symbol}/{fill.trade_id}: quantity must be a finite "
                f"decimal > 0, got {fill.quantity}"
            )
    new: list[FillRecord] = []
    deltas: dict[tuple[str, str], Decimal] = {}
    for fill in fills:
        if conn.execute(_INSERT_FILL, _fill_values(fill)).rowcount != 1:
            continue
        new.append(fill)
        key = (fill.account, fill.symbol)
        so_far = deltas.get(key, Decimal(0))
        deltas[key] = (
            _EXACT.add(so_far, fill.quantity)
            if fill.side is Side.BUY
            else _EXACT.subtract(so_far, fill.quantity)
        )
    for (account, symbol), delta in deltas.items():
        row = conn.execute(
            "SELECT quantity FROM positions WHERE account = ? AND symbol = ?", (account, symbol)
        ).fetchone()
        quantity = _EXACT.add(Decimal(row[0]) if row is not None else Decimal(0), delta)
        conn.execute(_UPSERT_POSITION, (account, symbol, plain(quantity), now_ms))
    return new


def fills_for(conn: sqlite3.Connection, client_order_id: str) -> list[FillRecord]:
    """The stored fills of one intent, oldest first."""
    rows = conn.execute(
        f"SELECT {', '.join(_FILL_COLUMNS)} FROM order_fills WHERE client_order_id = ? "
        "ORDER BY time_ms, trade_id",
        (client_order_id,),
    )
    return [_fill(row) for row in rows]


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


# ----------------------------------------------------------------------------- trading states


def save_trading_state(
    conn: sqlite3.Connection,
    scope: str,
    state: str | TradingState,
    reason: str,
    now_ms: int,
) -> None:
    """Store an operator's switch (``scope`` :data:`GLOBAL_SCOPE` or an account name).

    Raises:
        ValueError: ``scope`` is empty or ``state`` is not ACTIVE, REDUCING or HALTED.
    """
    name = state.value if isinstance(state, TradingState) else state
    if name not in _TRADING_STATE_NAMES:
        raise ValueError(
            f"trading state must be one of {sorted(_TRADING_STATE_NAMES)}, got {state!r}"
        )
    if not scope:
        raise ValueError(f"trading state scope must be {GLOBAL_SCOPE!r} or an account name")
    conn.execute(
        "INSERT INTO trading_states (scope, state, reason, changed_at_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (scope) DO UPDATE SET state = excluded.state, reason = excluded.reason, "
        "changed_at_ms = excluded.changed_at_ms",
        (scope, name, reason, now_ms),
    )


def load_trading_states(conn: sqlite3.Connection) -> list[tuple[str, str, str, int]]:
    """Every stored switch as ``(scope, state, reason, changed_at_ms)``, by scope."""
    rows = conn.execute(
        "SELECT scope, state, reason, changed_at_ms FROM trading_states ORDER BY scope"
    )
    return [(row[0], row[1], row[2], int(row[3])) for row in rows]


# ----------------------------------------------------------------------------- facade


class OrdersBackend(StoreOwner[sqlite3.Connection], Protocol):
    """What the orders service needs of the open store (its ``open_store`` returns one).

    The owner the order tables run on (:class:`OrderStore` is built over it)
    and its durable dead letters; :class:`~daemon.store.sqlite.SqliteStore` is one.
    """

    @property
    def dead_letters(self) -> DeadLetterStore:
        """Where an order the pipeline cannot settle is parked for the operator."""
        ...


class OrderStore:
    """The async face of the order tables: every method is one transaction.

    Writes are :attr:`~daemon.store.base.Durability.CRITICAL` (``synchronous=FULL``):
    a caller told "recorded" must find the row after a power cut. Compose
    several steps in one transaction with :meth:`run_write` and the module's
    functions (the group-commit writer does).

    Args:
        store: The database owner.
        wall_clock: Epoch seconds; every ``*_at_ms`` written comes from it.
    """

    def __init__(
        self, store: StoreOwner[sqlite3.Connection], *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._wall_clock = wall_clock

    def now_ms(self) -> int:
        """The wall clock in Unix milliseconds (what the facade stamps rows with)."""
        return int(self._wall_clock() * 1000)

    async def run_write(self, fn: Callable[[sqlite3.Connection], T], action: str) -> T:
        """Run ``fn(conn)`` in one CRITICAL write transaction (rolled back if it raises)."""
        return await self._store.write(fn, durability=Durability.CRITICAL, action=action)

    async def run_read(self, fn: Callable[[sqlite3.Connection], T], action: str) -> T:
        """Run ``fn(conn)`` in one read transaction (a consistent snapshot)."""
        return await self._store.read(fn, action=action)

    # ------------------------------------------------------------------ writes

    async def record_intents(
        self, records: Sequence[IntentRecord], *, sending: Collection[str] = ()
    ) -> tuple[builtins.list[IntentRecord], dict[str, IntentRecord]]:
        """Record what is new, return what was stored before; see :func:`record_intents`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: record_intents(conn, records, now, sending=sending),
            "recording order intents",
        )

    async def insert_intents(self, records: Sequence[IntentRecord]) -> builtins.list[IntentRecord]:
        """Record new PENDING intents (all or nothing); see :func:`insert_intents`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: insert_intents(conn, records, now), "recording order intents"
        )

    async def apply_transition(
        self,
        client_order_id: str,
        t: Transition,
        *,
        venue_order_id: int | None = None,
        executed_qty: Decimal | None = None,
        cum_quote_qty: Decimal | None = None,
        reject_code: int | None = None,
        reject_reason: str | None = None,
    ) -> IntentRecord:
        """One state change with its history row; see :func:`apply_transition`."""
        return await self.apply_transitions(
            client_order_id,
            (t,),
            venue_order_id=venue_order_id,
            executed_qty=executed_qty,
            cum_quote_qty=cum_quote_qty,
            reject_code=reject_code,
            reject_reason=reject_reason,
        )

    async def apply_transitions(
        self,
        client_order_id: str,
        ts: Sequence[Transition],
        *,
        venue_order_id: int | None = None,
        executed_qty: Decimal | None = None,
        cum_quote_qty: Decimal | None = None,
        reject_code: int | None = None,
        reject_reason: str | None = None,
    ) -> IntentRecord:
        """Several consecutive steps in one transaction, the fields with the last;
        see :func:`apply_transitions`."""
        now = self.now_ms()
        steps = tuple(ts)
        path = " -> ".join([steps[0].source.value, *(t.target.value for t in steps)]) if ts else "-"
        return await self.run_write(
            lambda conn: apply_transitions(
                conn,
                client_order_id,
                steps,
                now,
                venue_order_id=venue_order_id,
                executed_qty=executed_qty,
                cum_quote_qty=cum_quote_qty,
                reject_code=reject_code,
                reject_reason=reject_reason,
            ),
            f"moving order {client_order_id} {path}",
        )

    async def apply_changes(
        self,
        client_order_id: str,
        ts: Sequence[Transition],
        *,
        venue_order_id: int | None = None,
        executed_qty: Decimal | None = None,
        cum_quote_qty: Decimal | None = None,
        reject_code: int | None = None,
        reject_reason: str | None = None,
        fills: Sequence[FillRecord] = (),
    ) -> IntentRecord:
        """What one venue report says, in one transaction: fills, steps, fields.

        The fills are stored first (idempotently, moving positions), then the
        steps and fields are applied as by :func:`apply_transitions` (``ts`` may
        be empty: old news that still brings fills or quantities). Either all of
        it commits or nothing does, so a report is never half-recorded.
        """
        now = self.now_ms()
        steps = tuple(ts)
        rows = tuple(fills)

        def fn(conn: sqlite3.Connection) -> IntentRecord:
            insert_fills(conn, rows, now)
            return apply_transitions(
                conn,
                client_order_id,
                steps,
                now,
                venue_order_id=venue_order_id,
                executed_qty=executed_qty,
                cum_quote_qty=cum_quote_qty,
                reject_code=reject_code,
                reject_reason=reject_reason,
            )

        return await self.run_write(fn, f"recording a venue report for order {client_order_id}")

    async def update_progress(
        self,
        client_order_id: str,
        *,
        venue_order_id: int | None = None,
        executed_qty: Decimal | None = None,
        cum_quote_qty: Decimal | None = None,
    ) -> IntentRecord:
        """Same-state news (fills so far, venue id); see :func:`update_progress`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: update_progress(
                conn,
                client_order_id,
                now,
                venue_order_id=venue_order_id,
                executed_qty=executed_qty,
                cum_quote_qty=cum_quote_qty,
            ),
            f"updating order {client_order_id}",
        )

    async def request_cancel(self, client_order_id: str) -> IntentRecord:
        """Durably mark a cancel request; see :func:`request_cancel`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: request_cancel(conn, client_order_id, now),
            f"requesting cancel of order {client_order_id}",
        )

    async def insert_fills(self, fills: Sequence[FillRecord]) -> builtins.list[FillRecord]:
        """Store fills idempotently and move positions; returns the new ones."""
        now = self.now_ms()
        return await self.run_write(lambda conn: insert_fills(conn, fills, now), "storing fills")

    async def save_trading_state(self, scope: str, state: str | TradingState, reason: str) -> None:
        """Store an operator's switch; see :func:`save_trading_state`."""
        now = self.now_ms()
        await self.run_write(
            lambda conn: save_trading_state(conn, scope, state, reason, now),
            f"saving trading state of {scope}",
        )

    # ------------------------------------------------------------------ reads

    async def get(self, client_order_id: str) -> IntentRecord | None:
        """One intent, or ``None``."""
        return await self.run_read(
            lambda conn: get_intent(conn, client_order_id), "reading an order intent"
        )

    async def load(self, client_order_ids: Sequence[str]) -> dict[str, IntentRecord]:
        """The stored intents among ``client_order_ids``, by id."""
        return await self.run_read(
            lambda conn: load_intents(conn, client_order_ids), "reading order intents"
        )

    async def non_terminal(self) -> builtins.list[IntentRecord]:
        """Unfinished intents in submission order."""
        return await self.run_read(non_terminal, "listing unfinished order intents")

    async def history(self, client_order_id: str) -> builtins.list[HistoryRow]:
        """The intent's state changes, oldest first."""
        return await self.run_read(
            lambda conn: history(conn, client_order_id), "reading order history"
        )

    async def fills_for(self, client_order_id: str) -> builtins.list[FillRecord]:
        """The intent's fills, oldest first."""
        return await self.run_read(
            lambda conn: fills_for(conn, client_order_id), "reading order fills"
        )

    async def positions(self, account: str | None = None) -> dict[tuple[str, str], Decimal]:
        """Signed positions by ``(account, symbol)``."""
        return await self.run_read(lambda conn: positions(conn, account), "reading positions")

    async def find_by_venue_order_id(self, venue: str, venue_order_id: int) -> IntentRecord | None:
        """The intent the venue knows by ``venue_order_id``, or ``None``."""
        return await self.run_read(
            lambda conn: find_by_venue_order_id(conn, venue, venue_order_id),
            "finding an order by venue order id",
        )

    async def load_trading_states(self) -> builtins.list[tuple[str, str, str, int]]:
        """Every stored switch as ``(scope, state, reason, changed_at_ms)``."""
        return await self.run_read(load_trading_states, "reading trading states")

    async def counts_by_state(self) -> dict[str, int]:
        """Intents per state (zeros included)."""
        return await self.run_read(counts_by_state, "counting order intents")

    async def list(
        self,
        *,
        account: str | None = None,
        states: Collection[OrderState] | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> builtins.list[IntentRecord]:
        """Intents newest first; see :func:`list_intents`."""
        return await self.run_read(
            lambda conn: list_intents(
                conn, account=account, states=states, limit=limit, before_seq=before_seq
            ),
            "listing order intents",
        )
