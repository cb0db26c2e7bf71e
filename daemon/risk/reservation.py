"""A reservation: one order's hold on its account's limits, and the life it goes through.

:meth:`RiskBook.reserve <daemon.risk.book.RiskBook.reserve>` hands out a
:class:`Reservation`; its life mirrors the intent's (docs/ARCHITECTURE.md §4
Orders)::

    reserve() ──► RESERVED ──commit()──► COMMITTED ──release(filled_qty)──► RELEASED
                     │                      │ record_fill(executed_qty)
                     └──rollback()──► ROLLED_BACK

* ``commit()`` once the intent row is durably recorded; ``rollback()``
  otherwise (write failed, duplicate ``message_id``, caller gone). Both are
  idempotent; rolling back a committed reservation is an error, because the
  intent exists and may be sent. A rollback undoes the reservation exactly,
  including its order-rate slot: an order that was never recorded was never
  sent.
* ``release(filled_qty=…)`` when the order ends: the filled part moves the
  position, the rest of the open exposure and the open-order slot are freed.
  Canceled, expired and rejected orders release with what they filled (often
  0). ``record_fill`` moves cumulative fills into the position while the
  order is still working. Fill quantities are *cumulative* (the venue's
  ``executedQty``), so a repeated report is harmless.

Halting (:mod:`daemon.risk.state`) never touches reservations: it gates new
submissions only. A reservation changes its book's counts through the book
(:class:`~daemon.risk.book.RiskBook`), which owns them.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from daemon.errors import ReservationStateError
from daemon.risk.checks import WIDE, RiskRequest

if TYPE_CHECKING:
    from daemon.risk.book import RiskBook

__all__ = ["TRANSITIONS", "Reservation", "ReservationState", "ReservationStateError"]


class ReservationState(enum.Enum):
    """Where a reservation is in its life (see the module docstring)."""

    RESERVED = "RESERVED"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"
    RELEASED = "RELEASED"


#: Legal transitions; a call that asks for another one raises
#: :class:`ReservationStateError`. Repeating ``commit``/``rollback``/``release``
#: in the state it leads to is an idempotent no-op and not listed.
TRANSITIONS: Mapping[ReservationState, frozenset[ReservationState]] = types.MappingProxyType(
    {
        ReservationState.RESERVED: frozenset(
            {ReservationState.COMMITTED, ReservationState.ROLLED_BACK}
        ),
        ReservationState.COMMITTED: frozenset({ReservationState.RELEASED}),
        ReservationState.ROLLED_BACK: frozenset(),
        ReservationState.RELEASED: frozenset(),
    }
)


class Reservation:
    """One order's hold on its account's limits; created by :meth:`RiskBook.reserve`.

    Attributes:
        id: Unique within the book (for logs).
        request: The order it reserves for.
        quantity: Base quantity held as open exposure (an estimate for a
            ``quote_order_qty`` order: ``quantity_estimated``).
        reserved_at: The book's clock at reservation (its order-rate slot).
    """

    __slots__ = (
        "_book",
        "_executed_qty",
        "_open_qty",
        "_state",
        "id",
        "quantity",
        "request",
        "reserved_at",
    )

    def __init__(
        self,
        book: RiskBook,
        *,
        reservation_id: int,
        request: RiskRequest,
        quantity: Decimal,
        reserved_at: float,
        state: ReservationState,
    ) -> None:
        self._book = book
        self.id = reservation_id
        self.request = request
        self.quantity = quantity
        self.reserved_at = reserved_at
        self._state = state
        self._executed_qty = Decimal(0)
        #: The part of ``quantity`` still counted as open exposure.
        self._open_qty = quantity

    def __repr__(self) -> str:
        return (
            f"Reservation(id={self.id}, {self.request.account}/{self.request.symbol} "
            f"{self.request.side.value} {self.quantity}, {self._state.value})"
        )

    @property
    def state(self) -> ReservationState:
        """Where the reservation is in its life."""
        return self._state

    @property
    def account(self) -> str:
        """The account it holds limits of."""
        return self.request.account

    @property
    def client_order_id(self) -> str:
        """The order's client order id."""
        return self.request.client_order_id

    @property
    def quantity_estimated(self) -> bool:
        """``quantity`` is an estimate (a ``quote_order_qty`` MARKET order)."""
        return self.request.quantity_estimated

    @property
    def executed_qty(self) -> Decimal:
        """Cumulative filled base quantity recorded so far."""
        return self._executed_qty

    @property
    def open_qty(self) -> Decimal:
        """The part of the reserved quantity still counted as open exposure."""
        return self._open_qty

    def commit(self) -> None:
        """The intent is durably recorded: keep the reservation until the order ends.

        Idempotent (a no-op when already committed or released).

        Raises:
            ReservationStateError: it was rolled back, or another committed
                reservation already holds the same client order id.
        """
        if self._state in (ReservationState.COMMITTED, ReservationState.RELEASED):
            return
        self._require(ReservationState.COMMITTED, "commit")
        self._book._commit(self)
        self._state = ReservationState.COMMITTED

    def rollback(self) -> None:
        """The intent was not recorded: undo the reservation exactly.

        Frees the open exposure, the open-order slot and the order-rate slot.
        Idempotent (a no-op when already rolled back).

        Raises:
            ReservationStateError: it was committed (the intent exists).
        """
        if self._state is ReservationState.ROLLED_BACK:
            return
        self._require(ReservationState.ROLLED_BACK, "roll back")
        self._book._rollback(self)
        self._state = ReservationState.ROLLED_BACK

    def record_fill(self, executed_qty: Decimal) -> None:
        """Move fills into the position while the order works.

        Args:
            executed_qty: The order's *cumulative* filled base quantity (the
                venue's ``executedQty``); repeating a value is a no-op.

        Raises:
            ReservationStateError: the reservation is not committed.
            ValueError: the quantity is negative, goes backwards, or exceeds
                the order's quantity (allowed only for an estimated quantity).
        """
        if self._state is not ReservationState.COMMITTED:
            raise ReservationStateError(
                f"cannot record fills on a {self._state.value} reservation ({self!r})"
            )
        self._apply_fill(executed_qty)

    def release(self, *, filled_qty: Decimal) -> None:
        """The order ended (filled, canceled, expired, rejected): settle the reservation.

        The filled part moves the position; the rest of the open exposure and
        the open-order slot are freed. The order-rate slot is kept until it
        leaves the window (the order was sent). Releasing again with the same
        ``filled_qty`` is a no-op.

        Args:
            filled_qty: The order's final cumulative filled base quantity.

        Raises:
            ReservationStateError: not committed, or already released with a
                different ``filled_qty``.
            ValueError: as for :meth:`record_fill`.
        """
        if self._state is ReservationState.RELEASED:
            if filled_qty == self._executed_qty:
                return
            raise ReservationStateError(
                f"{self!r} was released with filled_qty={self._executed_qty}, not {filled_qty}"
            )
        self._require(ReservationState.RELEASED, "release")
        self._apply_fill(filled_qty)
        self._book._release(self)
        self._open_qty = Decimal(0)
        self._state = ReservationState.RELEASED

    # ------------------------------------------------------------------ internals

    def _require(self, target: ReservationState, verb: str) -> None:
        if target not in TRANSITIONS[self._state]:
            raise ReservationStateError(
                f"cannot {verb} a {self._state.value} reservation ({self!r})"
            )

    def _apply_fill(self, executed_qty: Decimal) -> None:
        if not isinstance(executed_qty, Decimal) or not executed_qty.is_finite():
            raise ValueError(f"executed_qty must be a finite Decimal, got {executed_qty!r}")
        if executed_qty < self._executed_qty:
            raise ValueError(
                f"executed_qty {executed_qty} is below the {self._executed_qty} already "
                f"recorded for {self!r}: fills are cumulative"
            )
        if executed_qty > self.quantity and not self.quantity_estimated:
            raise ValueError(f"executed_qty {executed_qty} exceeds the order's {self.quantity}")
        delta = WIDE.subtract(executed_qty, self._executed_qty)
        if delta == 0:
            return
        from_open = min(delta, self._open_qty)
        self._book._fill(self, delta, from_open)
        self._executed_qty = executed_qty
        self._open_qty = WIDE.subtract(self._open_qty, from_open)
