"""What the order tables promise, as pure rules every backend applies (no SQL here).

The exactly-once proofs of :mod:`daemon.store.orders` that do not depend on
the database: which records may be inserted (:func:`check_fresh`), how a run
of transitions and a venue report's fields move an intent
(:func:`advance`: compare-and-set on the state, chained steps, the guarded
steps SENDING → PENDING and PENDING → CANCELED, cumulative quantities that
never move backwards, one venue order id per intent), how a cancel request is
marked (:func:`cancel_marked`), how fills move positions
(:func:`check_fills`, :func:`position_deltas`, :func:`add_exact`) and which
operator switches are valid (:func:`trading_state_name`). The SQLite modules
(``orders_outbox``, ``orders_transitions``, ``orders_fills``,
``trading_states``) read rows, apply these, and write the result in the
caller's transaction; a second backend's modules would apply the same.

The errors the order tables raise besides the store's own live here too
(drawn in :mod:`daemon.errors`), and so do the names of the keyword fields a
venue report brings (:class:`ProgressFields`, :class:`ReportFields`), shared
by the functions and the :class:`~daemon.store.orders.OrderStore` facade.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Final, TypedDict

import attrs

from daemon.errors import PermanentError
from daemon.model.orders import Side
from daemon.orders.records import FillRecord, IntentRecord
from daemon.orders.state import (
    InvalidStateTransitionError,
    OrderState,
    Transition,
    check_transition,
)
from daemon.risk.state import TradingState

__all__ = [
    "GLOBAL_SCOPE",
    "INTENT_RECORDED_REASON",
    "SENDING_REASON",
    "DuplicateIntentError",
    "ProgressFields",
    "ReportFields",
    "StaleStateError",
    "UnknownIntentError",
    "VenueOrderIdConflictError",
    "add_exact",
    "advance",
    "cancel_marked",
    "check_fills",
    "check_fresh",
    "merge_fields",
    "position_deltas",
    "trading_state_name",
]

#: ``trading_states.scope`` of the global switch (any other scope is an account name).
GLOBAL_SCOPE: Final = "*"
#: The reason of every intent's first history row (``None -> PENDING``).
INTENT_RECORDED_REASON: Final = "intent recorded"
#: History reason of the SENDING mark written together with the intent (fast path).
SENDING_REASON: Final = "sending new order"

#: Position arithmetic: wide enough that sums of venue quantities are exact, and
#: a sum that would need rounding raises instead of drifting silently.
_EXACT: Final = decimal.Context(
    prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow]
)
_TRADING_STATE_NAMES: Final = frozenset(state.value for state in TradingState)


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


# ----------------------------------------------------------------------------- fields


class ProgressFields(TypedDict, total=False):
    """Same-state news of an order (keyword arguments; ``None`` or absent: no news).

    Attributes:
        venue_order_id: The venue's order id (must match one already stored).
        executed_qty: Cumulative filled base quantity (never decreases).
        cum_quote_qty: Cumulative filled quote quantity (never decreases).
    """

    venue_order_id: int | None
    executed_qty: Decimal | None
    cum_quote_qty: Decimal | None


class ReportFields(ProgressFields, total=False):
    """Everything a venue report may set on an intent with its transitions.

    Attributes:
        reject_code: The venue's error code of a rejection.
        reject_reason: Why it was rejected.
    """

    reject_code: int | None
    reject_reason: str | None


# ----------------------------------------------------------------------------- intents


def check_fresh(record: IntentRecord) -> None:
    """Refuse a record that is not a fresh PENDING intent (only those are inserted).

    Raises:
        ValueError: it carries lifecycle facts (state, send attempts, venue id, fills, …).
    """
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


def merge_fields(current: IntentRecord, fields: ReportFields) -> IntentRecord:
    """``current`` with a report's fields merged (``current`` itself when none applies).

    Raises:
        VenueOrderIdConflictError: ``venue_order_id`` differs from the stored one.
        ValueError: a quantity is negative or not finite.
    """
    changes: dict[str, Any] = {}
    venue_order_id = fields.get("venue_order_id")
    if venue_order_id is not None and venue_order_id != current.venue_order_id:
        if current.venue_order_id is not None:
            raise VenueOrderIdConflictError(
                current.client_order_id, stored=current.venue_order_id, reported=venue_order_id
            )
        changes["venue_order_id"] = venue_order_id
    quantities = (
        ("executed_qty", fields.get("executed_qty")),
        ("cum_quote_qty", fields.get("cum_quote_qty")),
    )
    for name, value in quantities:
        if value is None:
            continue
        if not value.is_finite() or value < 0:
            raise ValueError(
                f"order {current.client_order_id}: {name} must be a finite decimal >= 0, "
                f"got {value}"
            )
        if value > getattr(current, name):  # cumulative: an older report never undoes a newer
            changes[name] = value
    if (reject_code := fields.get("reject_code")) is not None:
        changes["reject_code"] = reject_code
    if (reject_reason := fields.get("reject_reason")) is not None:
        changes["reject_reason"] = reject_reason
    return attrs.evolve(current, **changes) if changes else current


def advance(
    current: IntentRecord, ts: Sequence[Transition], now_ms: int, fields: ReportFields
) -> IntentRecord | None:
    """The intent after consecutive transitions and a report's fields, or ``None`` when
    nothing is new (no steps, and no field changes anything).

    The first step must start from ``current.state`` (compare-and-set) and
    each next one from the previous step's target. The fields are merged once,
    with the last step. Every step into SENDING sets ``sent_at_ms = now_ms``
    and counts a send attempt; ``updated_at_ms`` becomes ``now_ms``.

    The guarded steps are checked again here: SENDING → PENDING needs a proof
    of non-execution in its reason (:func:`~daemon.orders.state.check_transition`),
    and PENDING → CANCELED (canceled before sending) needs a durable cancel
    request and nothing from the venue (no venue order id, no fill).

    Raises:
        StaleStateError: ``current.state`` is not the first step's source.
        InvalidStateTransitionError: a step the table (or its guard) forbids (a
            forged :class:`~daemon.orders.state.Transition`).
        ValueError: the steps do not chain, a quantity is negative, or a
            PENDING → CANCELED step without a cancel request or with venue facts.
        VenueOrderIdConflictError: ``venue_order_id`` differs from the stored one.
    """
    record = current
    for index, step in enumerate(ts):
        check_transition(step.source, step.target, step.reason)
        if step.source is not record.state:
            if index == 0:
                raise StaleStateError(current.client_order_id, step, record.state)
            raise ValueError(
                f"order {current.client_order_id}: step {index} starts from "
                f"{step.source.value} but step {index - 1} ends in {record.state.value}; "
                "steps must chain"
            )
        if step.source is OrderState.PENDING and step.target is OrderState.CANCELED:
            _check_unsent_cancel(record)
        changes: dict[str, Any] = {"state": step.target}
        if step.target is OrderState.SENDING:
            changes["sent_at_ms"] = now_ms
            changes["send_attempts"] = record.send_attempts + 1
        record = attrs.evolve(record, **changes)
    record = merge_fields(record, fields)
    if not ts and record == current:
        return None  # nothing new: not even updated_at_ms moves
    return attrs.evolve(record, updated_at_ms=now_ms)


def _check_unsent_cancel(record: IntentRecord) -> None:
    if record.cancel_requested_at_ms is None or (
        record.venue_order_id is not None or record.executed_qty != 0
    ):
        raise ValueError(
            f"order {record.client_order_id}: PENDING -> CANCELED needs a recorded cancel "
            f"request and nothing from the venue (cancel requested at "
            f"{record.cancel_requested_at_ms}, venue order id {record.venue_order_id}, "
            f"executed {record.executed_qty})"
        )


def cancel_marked(current: IntentRecord, now_ms: int) -> IntentRecord | None:
    """The intent with its cancel request marked, or ``None`` when there is nothing to
    mark (already requested — the first mark stays — or the intent is finished)."""
    if current.cancel_requested_at_ms is not None or current.is_terminal:
        return None
    return attrs.evolve(current, cancel_requested_at_ms=now_ms, updated_at_ms=now_ms)


# ----------------------------------------------------------------------------- fills


def check_fills(fills: Iterable[FillRecord]) -> None:
    """Refuse fills that cannot move a position.

    Raises:
        ValueError: a fill's quantity is not a finite decimal > 0.
    """
    for fill in fills:
        if not fill.quantity.is_finite() or fill.quantity <= 0:
            raise ValueError(
                f"fill {fill.venue}/{fill.symbol}/{fill.trade_id}: quantity must be a finite "
                f"decimal > 0, got {fill.quantity}"
            )


def add_exact(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` exactly.

    Raises:
        decimal.Inexact: the sum would need rounding (never for venue
            quantities; refused rather than stored wrong).
    """
    return _EXACT.add(a, b)


def position_deltas(fills: Iterable[FillRecord]) -> dict[tuple[str, str], Decimal]:
    """How much ``fills`` move each ``(account, symbol)`` position (buys add, sells subtract)."""
    deltas: dict[tuple[str, str], Decimal] = {}
    for fill in fills:
        key = (fill.account, fill.symbol)
        so_far = deltas.get(key, Decimal(0))
        deltas[key] = (
            _EXACT.add(so_far, fill.quantity)
            if fill.side is Side.BUY
            else _EXACT.subtract(so_far, fill.quantity)
        )
    return deltas


# ----------------------------------------------------------------------------- trading states


def trading_state_name(scope: str, state: str | TradingState) -> str:
    """The stored name of an operator's switch for ``scope``.

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
    return name
