"""The main stage of pre-trade risk: limits that are *reserved*, then committed or rolled back.

An order that passes the start stage (:mod:`daemon.risk.checks`) is checked
against the account's limits and, if it fits, takes a :class:`Reservation` in
the :class:`RiskBook` *in the same synchronous step*, so two concurrent
submissions can never both take the last slot:

* **order rate** — at most ``max_orders_per_window`` orders per sliding
  ``order_window_s`` per account (a sliding log on the injected clock);
* **max notional per order** — ``price * quantity`` in the quote asset;
* **max open orders** per account (reserved + committed, not yet released);
* **max position** per account and symbol, in base quantity, counting the
  position *plus every open order on the same side* (the worst case if they
  all fill), so reservations can never add up past the limit.

All limits are evaluated together and every breach is reported
(:class:`~daemon.risk.checks.RiskDecision`).

The life of a reservation mirrors the intent's (docs/ARCHITECTURE.md §4 Orders)::

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
submissions only.

Everything is pure and synchronous; the only notion of time is the injected
``clock`` (``trio.current_time`` in the daemon, a fake in tests).

Reason codes of this stage:

============================  ===============================================
``ORDER_RATE_EXCEEDED``       the account used its orders for the window
``ORDER_NOTIONAL_ABOVE_MAX``  the order's notional exceeds the risk limit
``NOTIONAL_UNKNOWN``          a notional limit applies and the order has no
                              price to judge it at (pass a reference price)
``QUANTITY_UNKNOWN``          a ``quote_order_qty`` order without a reference
                              price: its base quantity cannot be reserved
``OPEN_ORDERS_EXCEEDED``      the account has its maximum of open orders
``POSITION_LIMIT_EXCEEDED``   position + same-side open orders + this order
                              would exceed the maximum position
============================  ===============================================
"""

from __future__ import annotations

import decimal
import enum
import logging
import math
import types
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs

from daemon.errors import ReservationStateError
from daemon.model.instruments import SymbolInfo
from daemon.model.orders import Side
from daemon.risk.checks import Exposure, RiskDecision, RiskReason, RiskRequest, check_start
from daemon.risk.state import TradingStates

__all__ = [
    "DEFAULT_MAX_OPEN_ORDERS",
    "DEFAULT_MAX_ORDERS_PER_WINDOW",
    "DEFAULT_ORDER_WINDOW_S",
    "NOTIONAL_UNKNOWN",
    "OPEN_ORDERS_EXCEEDED",
    "ORDER_NOTIONAL_ABOVE_MAX",
    "ORDER_RATE_EXCEEDED",
    "POSITION_LIMIT_EXCEEDED",
    "QUANTITY_UNKNOWN",
    "TRANSITIONS",
    "LimitTable",
    "PreTradeRisk",
    "Reservation",
    "ReservationState",
    "ReservationStateError",
    "RiskBook",
    "RiskLimits",
]

log = logging.getLogger("tradingd.risk.limits")

ORDER_RATE_EXCEEDED = "ORDER_RATE_EXCEEDED"
ORDER_NOTIONAL_ABOVE_MAX = "ORDER_NOTIONAL_ABOVE_MAX"
NOTIONAL_UNKNOWN = "NOTIONAL_UNKNOWN"
QUANTITY_UNKNOWN = "QUANTITY_UNKNOWN"
OPEN_ORDERS_EXCEEDED = "OPEN_ORDERS_EXCEEDED"
POSITION_LIMIT_EXCEEDED = "POSITION_LIMIT_EXCEEDED"

#: Binance Spot's own ``ORDERS`` rule is 50 per 10 s per account; staying at it
#: by default means a runaway strategy meets our limit before the venue's ban.
DEFAULT_MAX_ORDERS_PER_WINDOW = 50
DEFAULT_ORDER_WINDOW_S = 10.0
#: Binance's usual ``MAX_NUM_ORDERS`` per symbol; per account it is a sane ceiling.
DEFAULT_MAX_OPEN_ORDERS = 200

#: Wide arithmetic so that adding and removing exchange decimals is exact.
_WIDE = decimal.Context(prec=80)


# --------------------------------------------------------------------------- limits


def _to_decimal(value: Decimal | str | int | None) -> Decimal | None:
    """Accept decimal strings and ints from config; floats are refused by validation."""
    if isinstance(value, bool):
        return value  # type: ignore[return-value]  # refused by the validation below
    if isinstance(value, (str, int)):
        try:
            return Decimal(value)
        except decimal.InvalidOperation:
            return value  # type: ignore[return-value]  # refused by the validation below
    return value


def _to_decimal_map(value: Mapping[str, Decimal | str | int]) -> Mapping[str, Decimal]:
    converted = {key: _to_decimal(item) for key, item in dict(value).items()}
    return types.MappingProxyType(converted)  # type: ignore[arg-type]


def _check_decimal(problems: list[str], name: str, value: object, *, allow_zero: bool) -> None:
    if value is None:
        return
    if not isinstance(value, Decimal) or not value.is_finite():
        problems.append(f"{name} must be a finite decimal, got {value!r}")
    elif value < 0 or (value == 0 and not allow_zero):
        problems.append(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check_count(problems: list[str], name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{name} must be an integer >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class RiskLimits:
    """The main-stage limits of one account; ``None`` disables a limit.

    Attributes:
        max_orders_per_window: New orders allowed per sliding ``order_window_s``.
        order_window_s: The order-rate window in seconds.
        max_order_notional: Largest ``price * quantity`` of one order, in the
            quote asset (a decimal string in config; never a float).
        max_open_orders: Open orders (reserved or committed, not yet ended).
        max_position_qty: Largest absolute position per symbol in base
            quantity, counting open orders on the same side; the default for
            symbols not in ``position_qty_by_symbol``. 0 allows only reducing.
        position_qty_by_symbol: Per-symbol overrides of ``max_position_qty``
            (1 BTC and 1 DOGE are not the same risk).

    Raises:
        ValueError: with every invalid field at once.
    """

    max_orders_per_window: int | None = DEFAULT_MAX_ORDERS_PER_WINDOW
    order_window_s: float = DEFAULT_ORDER_WINDOW_S
    max_order_notional: Decimal | None = attrs.field(default=None, converter=_to_decimal)
    max_open_orders: int | None = DEFAULT_MAX_OPEN_ORDERS
    max_position_qty: Decimal | None = attrs.field(default=None, converter=_to_decimal)
    position_qty_by_symbol: Mapping[str, Decimal] = attrs.field(
        factory=dict, converter=_to_decimal_map, hash=False
    )

    def __attrs_post_init__(self) -> None:
        problems: list[str] = []
        _check_count(problems, "max_orders_per_window", self.max_orders_per_window)
        window = self.order_window_s
        if (
            isinstance(window, bool)
            or not isinstance(window, (int, float))
            or not math.isfinite(window)
            or window <= 0
        ):
            problems.append(f"order_window_s must be a finite number > 0, got {window!r}")
        _check_decimal(problems, "max_order_notional", self.max_order_notional, allow_zero=False)
        _check_count(problems, "max_open_orders", self.max_open_orders)
        _check_decimal(problems, "max_position_qty", self.max_position_qty, allow_zero=True)
        for symbol, qty in self.position_qty_by_symbol.items():
            if not isinstance(symbol, str) or not symbol:
                problems.append(f"position_qty_by_symbol: bad symbol {symbol!r}")
            _check_decimal(problems, f"position_qty_by_symbol.{symbol}", qty, allow_zero=True)
        if problems:
            raise ValueError("; ".join(problems))

    def max_position_for(self, symbol: str) -> Decimal | None:
        """The position limit that applies to ``symbol`` (``None``: unlimited)."""
        return self.position_qty_by_symbol.get(symbol, self.max_position_qty)


def _to_limits_map(value: Mapping[str, RiskLimits]) -> Mapping[str, RiskLimits]:
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class LimitTable:
    """Limits per account, with defaults for accounts not listed.

    A listed account's :class:`RiskLimits` replaces the default as a whole
    (the config loader builds it from the defaults plus that account's
    overrides, so every value an operator sees is explicit).
    """

    default: RiskLimits = RiskLimits()
    accounts: Mapping[str, RiskLimits] = attrs.field(
        factory=dict, converter=_to_limits_map, hash=False
    )

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.default, RiskLimits):
            raise ValueError(f"default must be RiskLimits, got {self.default!r}")
        bad = [
            name
            for name, limits in self.accounts.items()
            if not isinstance(name, str) or not name or not isinstance(limits, RiskLimits)
        ]
        if bad:
            raise ValueError(f"accounts: bad entries {bad!r} (need name -> RiskLimits)")

    def for_account(self, account: str) -> RiskLimits:
        """The limits of ``account``."""
        return self.accounts.get(account, self.default)


# --------------------------------------------------------------------------- reservations


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
            self.open_buy = _WIDE.add(self.open_buy, quantity)
        else:
            self.open_sell = _WIDE.add(self.open_sell, quantity)

    def move_position(self, side: Side, quantity: Decimal) -> None:
        signed = quantity if side is Side.BUY else -quantity
        self.position = _WIDE.add(self.position, signed)


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
        delta = _WIDE.subtract(executed_qty, self._executed_qty)
        if delta == 0:
            return
        from_open = min(delta, self._open_qty)
        self._book._fill(self, delta, from_open)
        self._executed_qty = executed_qty
        self._open_qty = _WIDE.subtract(self._open_qty, from_open)


# --------------------------------------------------------------------------- the book


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
        reservation._open_qty = max(Decimal(0), _WIDE.subtract(quantity, executed_qty))
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
        problems: list[RiskReason] = []

        if limits.max_orders_per_window is not None:
            used = 0
            if book is not None:
                book.prune(now, limits.order_window_s)
                used = len(book.rate)
            if used + 1 > limits.max_orders_per_window:
                problems.append(
                    RiskReason(
                        ORDER_RATE_EXCEEDED,
                        f"account {account!r} placed {used} orders in the last "
                        f"{limits.order_window_s:g} s; the limit is "
                        f"{limits.max_orders_per_window}",
                    )
                )

        if limits.max_order_notional is not None:
            notional = request.notional
            if notional is None:
                problems.append(
                    RiskReason(
                        NOTIONAL_UNKNOWN,
                        f"the order has no price to judge its notional against the limit "
                        f"{limits.max_order_notional}; pass a reference price",
                    )
                )
            elif notional > limits.max_order_notional:
                problems.append(
                    RiskReason(
                        ORDER_NOTIONAL_ABOVE_MAX,
                        f"notional {notional} exceeds the limit {limits.max_order_notional} "
                        f"of account {account!r}",
                    )
                )

        quantity = request.base_quantity
        if quantity is None:
            problems.append(
                RiskReason(
                    QUANTITY_UNKNOWN,
                    "a quote_order_qty order needs a reference price to reserve its base quantity",
                )
            )

        if limits.max_open_orders is not None:
            open_orders = book.open_orders if book is not None else 0
            if open_orders + 1 > limits.max_open_orders:
                problems.append(
                    RiskReason(
                        OPEN_ORDERS_EXCEEDED,
                        f"account {account!r} has {open_orders} open orders; the limit is "
                        f"{limits.max_open_orders}",
                    )
                )

        max_position = limits.max_position_for(request.symbol)
        if max_position is not None and quantity is not None:
            exposure = self.exposure(account, request.symbol)
            worst = exposure.worst_case(request.side, quantity)
            extent = worst if request.side is Side.BUY else -worst
            if extent > max_position:
                direction = "long" if request.side is Side.BUY else "short"
                problems.append(
                    RiskReason(
                        POSITION_LIMIT_EXCEEDED,
                        f"{request.side.value} {quantity} {request.symbol} could make account "
                        f"{account!r} {direction} {extent} (position {exposure.position}, open "
                        f"buys {exposure.open_buy_qty}, open sells {exposure.open_sell_qty}); "
                        f"the limit is {max_position}",
                    )
                )
        return problems

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


# --------------------------------------------------------------------------- both stages


class PreTradeRisk:
    """Both stages together, as the risk gate runs them.

    :meth:`submit` runs the start stage and the main stage's checks and, only
    if neither has a reason to refuse, reserves, all in one synchronous step.
    A rejection lists the reasons of *both* stages, so a caller learns
    everything that is wrong at once.

    Args:
        book: The main stage's limits and reservations.
        states: The operator's trading switches.
    """

    def __init__(self, book: RiskBook, states: TradingStates) -> None:
        self.book = book
        self.states = states

    def evaluate(self, request: RiskRequest, symbol_info: SymbolInfo | None) -> RiskDecision:
        """Every reason of both stages to refuse ``request``, without reserving."""
        start = check_start(
            request,
            symbol_info,
            states=self.states,
            exposure=self.book.exposure(request.account, request.symbol),
        )
        return start + self.book.check(request)

    def submit(
        self, request: RiskRequest, symbol_info: SymbolInfo | None
    ) -> Reservation | RiskDecision:
        """Judge ``request``; a ``RESERVED`` reservation when it passes, else every reason."""
        decision = self.evaluate(request, symbol_info)
        if decision.rejected:
            log.debug(
                "risk rejected %s (%s): %s",
                request.client_order_id,
                request.account,
                ", ".join(decision.codes),
            )
            return decision
        return self.book.reserve(request)
