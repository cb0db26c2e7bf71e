"""The main stage's book: every account's counts, and every live reservation against its limits.

:class:`RiskBook` checks an order against its account's limits
(:meth:`RiskLimits.breaches <daemon.risk.limits.RiskLimits.breaches>`) and, if
it fits, takes a :class:`~daemon.risk.reservation.Reservation` *in the same
synchronous step*, so two concurrent submissions can never both take the last
slot. Per account it keeps the open orders, the order-rate log and, per
symbol, the position and the open buy and sell quantities; entries that hold
nothing are dropped, so memory follows what is live.

Everything is pure and synchronous; the only notion of time is the injected
``clock`` (``trio.current_time`` in the daemon, a fake in tests).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from daemon.errors import ReservationStateError
from daemon.model.orders import Side
from daemon.risk.checks import WIDE, Exposure, RiskDecision, RiskReason, RiskRequest
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.risk.reservation import Reservation, ReservationState

__all__ = ["RiskBook"]


class _SymbolBook:
    __slots__ = ("open_buy", "open_sell", "position")

    def __init__(self) -> None:
        self.position = Decimal(0)
        self.open_buy = Decimal(0)
        self.open_sell = Decimal(0)

    def empty(self) -> bool:
        return self.position == 0 and self.open_buy == 0 and self.open_sell == 0

    def exposure(self) -> Exposure:
        return Exposure(self.position, self.open_buy, self.open_sell)

    def add_open(self, side: Side, quantity: Decimal) -> None:
        if side is Side.BUY:
            self.open_buy = WIDE.add(self.open_buy, quantity)
        else:
            self.open_sell = WIDE.add(self.open_sell, quantity)

    def move_position(self, side: Side, quantity: Decimal) -> None:
        signed = quantity if side is Side.BUY else -quantity
        self.position = WIDE.add(self.position, signed)


class _AccountBook:
    __slots__ = ("open_orders", "rate", "symbols")

    def __init__(self) -> None:
        self.open_orders = 0
        #: ``(reserved_at, reservation id)`` of orders inside the rate window, oldest first.
        self.rate: deque[tuple[float, int]] = deque()
        self.symbols: dict[str, _SymbolBook] = {}

    def empty(self) -> bool:
        return self.open_orders == 0 and not self.rate and not self.symbols

    def prune(self, now: float, window_s: float) -> None:
        # An order reserved at t counts during [t, t + window_s).
        rate = self.rate
        while rate and rate[0][0] + window_s <= now:
            rate.popleft()


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"


class RiskBook:
    """The main stage: limits per account, and every live reservation against them.

    Args:
        limits: The limit table (or one :class:`RiskLimits` for every account).
        clock: Seconds on a monotonic clock (``trio.current_time`` in the
            daemon). A clock that steps back is treated as standing still.
    """

    def __init__(self, limits: LimitTable | RiskLimits, *, clock: Callable[[], float]) -> None:
        self._limits = limits if isinstance(limits, LimitTable) else LimitTable(default=limits)
        self._clock = clock
        self._last_now = -math.inf
        self._accounts: dict[str, _AccountBook] = {}
        self._committed: dict[str, Reservation] = {}
        self._next_id = 1

    # ------------------------------------------------------------------ configuration

    @property
    def limits(self) -> LimitTable:
        """The limit table in force."""
        return self._limits

    def set_limits(self, limits: LimitTable | RiskLimits) -> None:
        """Replace the limits (e.g. on SIGHUP reload); applies to new reservations only.

        Existing reservations are kept even if they no longer fit. A longer
        order-rate window only sees the slots a shorter one had not yet
        dropped.
        """
        self._limits = limits if isinstance(limits, LimitTable) else LimitTable(default=limits)

    # ------------------------------------------------------------------ reading

    def now(self) -> float:
        """The clock, never going backwards."""
        self._last_now = max(self._last_now, self._clock())
        return self._last_now

    def exposure(self, account: str, symbol: str) -> Exposure:
        """Position and open quantities of ``account`` in ``symbol`` (flat when unknown)."""
        book = self._accounts.get(account)
        symbol_book = book.symbols.get(symbol) if book is not None else None
        return symbol_book.exposure() if symbol_book is not None else Exposure()

    def position(self, account: str, symbol: str) -> Decimal:
        """The signed position of ``account`` in ``symbol``."""
        return self.exposure(account, symbol).position

    def open_orders(self, account: str) -> int:
        """Open orders of ``account`` (reserved or committed, not released)."""
        book = self._accounts.get(account)
        return book.open_orders if book is not None else 0

    def orders_in_window(self, account: str) -> int:
        """Orders of ``account`` counted in its order-rate window now."""
        book = self._accounts.get(account)
        if book is None:
            return 0
        book.prune(self.now(), self._limits.for_account(account).order_window_s)
        return len(book.rate)

    def find(self, client_order_id: str) -> Reservation | None:
        """The committed (not yet released) reservation of ``client_order_id``."""
        return self._committed.get(client_order_id)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view of every account with something open, counted or held.

        Decimals are canonical strings, so two books that hold the same
        amounts compare equal however those amounts were reached.
        """
        now = self.now()
        out: dict[str, Any] = {}
        for account in sorted(self._accounts):
            book = self._accounts[account]
            book.prune(now, self._limits.for_account(account).order_window_s)
            symbols = {
                symbol: {
                    "position": _fmt(sb.position),
                    "open_buy_qty": _fmt(sb.open_buy),
                    "open_sell_qty": _fmt(sb.open_sell),
                }
                for symbol, sb in sorted(book.symbols.items())
                if not sb.empty()
            }
            if book.open_orders or book.rate or symbols:
                out[account] = {
                    "open_orders": book.open_orders,
                    "order_times": [at for at, _ in book.rate],
                    "symbols": symbols,
                }
        return out

    # ------------------------------------------------------------------ the stage

    def check(self, request: RiskRequest) -> RiskDecision:
        """Every limit ``request`` would breach now, without reserving anything."""
        return RiskDecision(tuple(self._problems(request, self.now())))

    def reserve(self, request: RiskRequest) -> Reservation | RiskDecision:
        """Check every limit and, if all fit, hold them for ``request``.

        Returns:
            A ``RESERVED`` :class:`Reservation` to commit or roll back, or a
            rejected :class:`RiskDecision` with every breached limit (nothing
            is held then).
        """
        now = self.now()
        problems = self._problems(request, now)
        if problems:
            return RiskDecision(tuple(problems))
        quantity = request.base_quantity
        assert quantity is not None  # QUANTITY_UNKNOWN otherwise
        reservation = self._new(request, quantity, now, ReservationState.RESERVED)
        book = self._accounts.setdefault(request.account, _AccountBook())
        book.rate.append((now, reservation.id))
        self._hold(book, reservation)
        return reservation

    def restore(self, request: RiskRequest, *, executed_qty: Decimal = Decimal(0)) -> Reservation:
        """Re-create the committed reservation of an order that is already live.

        For start-up: every intent the store holds as non-terminal is
        restored (after :meth:`set_position` from the fill ledger), without
        limit checks (the order exists; refusing it would only hide it) and
        without an order-rate slot (it was not sent now).

        Args:
            request: The order as recorded.
            executed_qty: What it has filled so far. Those fills are taken to
                be in the position already (the ledger's), so they only
                shrink the open exposure; later fills move the position.

        Raises:
            ValueError: the request's base quantity is unknown.
            ReservationStateError: its client order id already has one.
        """
        quantity = request.base_quantity
        if quantity is None:
            raise ValueError(f"cannot restore {request.client_order_id}: quantity unknown")
        if (
            not isinstance(executed_qty, Decimal)
            or not executed_qty.is_finite()
            or executed_qty < 0
            or (executed_qty > quantity and not request.quantity_estimated)
        ):
            raise ValueError(f"executed_qty must be in [0, {quantity}], got {executed_qty!r}")
        if request.client_order_id in self._committed:
            raise ReservationStateError(
                f"client order id {request.client_order_id!r} already has a committed reservation"
            )
        reservation = self._new(request, quantity, self.now(), ReservationState.COMMITTED)
        # Fills so far are already in the ledger's position: they only shrink
        # what is still open, they do not move the position again.
        reservation._executed_qty = executed_qty
        reservation._open_qty = max(Decimal(0), WIDE.subtract(quantity, executed_qty))
        book = self._accounts.setdefault(request.account, _AccountBook())
        self._hold(book, reservation)
        self._committed[request.client_order_id] = reservation
        return reservation

    # ------------------------------------------------------------------ writing

    def set_position(self, account: str, symbol: str, position: Decimal) -> None:
        """Set the signed position from the fill ledger (start-up, reconciliation).

        Open exposure is left alone; fills of live reservations keep moving
        the position from there.
        """
        if not isinstance(position, Decimal) or not position.is_finite():
            raise ValueError(f"position must be a finite Decimal, got {position!r}")
        book = self._accounts.setdefault(account, _AccountBook())
        book.symbols.setdefault(symbol, _SymbolBook()).position = position
        self._tidy(account, symbol)

    # ------------------------------------------------------------------ internals

    def _new(
        self, request: RiskRequest, quantity: Decimal, now: float, state: ReservationState
    ) -> Reservation:
        reservation = Reservation(
            self,
            reservation_id=self._next_id,
            request=request,
            quantity=quantity,
            reserved_at=now,
            state=state,
        )
        self._next_id += 1
        return reservation

    def _problems(self, request: RiskRequest, now: float) -> list[RiskReason]:
        account = request.account
        limits = self._limits.for_account(account)
        book = self._accounts.get(account)
        used = 0
        if book is not None and limits.max_orders_per_window is not None:
            book.prune(now, limits.order_window_s)
            used = len(book.rate)
        return limits.breaches(
            request,
            orders_in_window=used,
            open_orders=book.open_orders if book is not None else 0,
            exposure=self.exposure(account, request.symbol),
        )

    def _hold(self, book: _AccountBook, reservation: Reservation) -> None:
        request = reservation.request
        book.open_orders += 1
        symbol_book = book.symbols.setdefault(request.symbol, _SymbolBook())
        symbol_book.add_open(request.side, reservation.open_qty)

    def _commit(self, reservation: Reservation) -> None:
        client_order_id = reservation.client_order_id
        holder = self._committed.get(client_order_id)
        if holder is not None and holder is not reservation:
            raise ReservationStateError(
                f"client order id {client_order_id!r} already has a committed reservation "
                f"({holder!r}); roll this one back"
            )
        self._committed[client_order_id] = reservation

    def _rollback(self, reservation: Reservation) -> None:
        request = reservation.request
        book = self._accounts[request.account]
        book.open_orders -= 1
        book.symbols[request.symbol].add_open(request.side, -reservation.quantity)
        # The slot may already have left the window; otherwise it goes now.
        for index, (_, reservation_id) in enumerate(book.rate):
            if reservation_id == reservation.id:
                del book.rate[index]
                break
        self._tidy(request.account, request.symbol)

    def _fill(self, reservation: Reservation, delta: Decimal, from_open: Decimal) -> None:
        request = reservation.request
        book = self._accounts[request.account]
        symbol_book = book.symbols.setdefault(request.symbol, _SymbolBook())
        symbol_book.add_open(request.side, -from_open)
        symbol_book.move_position(request.side, delta)
        self._tidy(request.account, request.symbol)

    def _release(self, reservation: Reservation) -> None:
        request = reservation.request
        book = self._accounts[request.account]
        book.open_orders -= 1
        symbol_book = book.symbols.setdefault(request.symbol, _SymbolBook())
        symbol_book.add_open(request.side, -reservation.open_qty)
        if self._committed.get(reservation.client_order_id) is reservation:
            del self._committed[reservation.client_order_id]
        self._tidy(request.account, request.symbol)

    def _tidy(self, account: str, symbol: str) -> None:
        """Drop empty entries so memory follows what is live, not what was ever seen."""
        book = self._accounts.get(account)
        if book is None:
            return
        symbol_book = book.symbols.get(symbol)
        if symbol_book is not None and symbol_book.empty():
            del book.symbols[symbol]
        if book.empty():
            del self._accounts[account]
