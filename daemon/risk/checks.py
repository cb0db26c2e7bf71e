"""The start stage of pre-trade risk: cheap checks that see every request.

Pre-trade risk has two stages (docs/ARCHITECTURE.md §4 Orders). This module is the first one and
the vocabulary both share:

* :class:`RiskRequest`: what is judged, an account plus a :class:`NewOrder`
  (and a reference price for orders without a limit price);
* :class:`RiskReason`: one coded reason for a reject; a decision carries
  *every* reason at once, so a caller fixes an order in one pass and the
  admin API can answer 422 with the full list;
* :class:`RiskDecision`: accepted, or rejected with reasons;
* :func:`check_start`: exchange filters (reusing
  :meth:`daemon.model.instruments.SymbolInfo.check_order`, the venue's own
  rules), symbol status, and the operator's trading state
  (:mod:`daemon.risk.state`).

Everything here is pure and synchronous: no I/O, no clock, no awaits.

Reason codes of this stage:

=========================  ==================================================
``UNKNOWN_SYMBOL``         the venue did not list the symbol
``SYMBOL_MISMATCH``        the rules passed are for another symbol
``SYMBOL_NOT_TRADING``     the symbol's status is not ``TRADING``
``ORDER_TYPE_NOT_ALLOWED`` the symbol does not allow the order type
``PRICE_TICK`` …           ``PRICE_BELOW_MIN``, ``PRICE_ABOVE_MAX``,
                           ``STOP_PRICE_*``, ``QTY_BELOW_MIN``,
                           ``QTY_ABOVE_MAX``, ``QTY_STEP``,
                           ``NOTIONAL_BELOW_MIN``, ``NOTIONAL_ABOVE_MAX``:
                           the venue's filters (``filter_type`` names it)
``TRADING_HALTED``         the global switch is ``HALTED``
``ACCOUNT_HALTED``         the account's switch is ``HALTED``
``REDUCE_ONLY_VIOLATION``  ``REDUCING`` applies and the order would not
                           reduce the position, or could flip it
=========================  ==================================================

The main stage (:mod:`daemon.risk.limits`) adds its own codes.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import attrs

from daemon.errors import RiskRejectedError
from daemon.model.instruments import SymbolInfo
from daemon.model.orders import NewOrder, OrderType, Side
from daemon.risk.state import TradingState, TradingStates

__all__ = [
    "ACCOUNT_HALTED",
    "REDUCE_ONLY_VIOLATION",
    "TRADING_HALTED",
    "UNKNOWN_SYMBOL",
    "WIDE",
    "Exposure",
    "RiskDecision",
    "RiskReason",
    "RiskRejectedError",
    "RiskRequest",
    "check_start",
]

UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
TRADING_HALTED = "TRADING_HALTED"
ACCOUNT_HALTED = "ACCOUNT_HALTED"
REDUCE_ONLY_VIOLATION = "REDUCE_ONLY_VIOLATION"

#: Wide arithmetic for quantities and notionals: exchange decimals never round here.
WIDE = decimal.Context(prec=80)


@attrs.frozen
class RiskReason:
    """One coded reason why risk refuses an order.

    Attributes:
        code: Stable machine code (``"PRICE_TICK"``, ``"ORDER_RATE_EXCEEDED"``, …).
        message: Human explanation with the numbers involved.
        filter_type: The venue filter behind it (``"LOT_SIZE"``), or ``None``
            for reasons that are not a venue filter.
    """

    code: str
    message: str
    filter_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form for the 422 answer and dead letters."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.filter_type is not None:
            out["filter_type"] = self.filter_type
        return out


def _reason_tuple(reasons: Iterable[RiskReason]) -> tuple[RiskReason, ...]:
    return tuple(reasons)


@attrs.frozen
class RiskDecision:
    """The outcome of a risk stage: accepted when ``reasons`` is empty."""

    reasons: tuple[RiskReason, ...] = attrs.field(default=(), converter=_reason_tuple)

    @classmethod
    def accept(cls) -> RiskDecision:
        """A decision without reasons."""
        return cls(())

    @classmethod
    def reject(cls, reasons: Iterable[RiskReason]) -> RiskDecision:
        """A decision with ``reasons`` (at least one)."""
        decision = cls(tuple(reasons))
        if not decision.reasons:
            raise ValueError("a rejection needs at least one reason")
        return decision

    @property
    def accepted(self) -> bool:
        """No reason to refuse."""
        return not self.reasons

    @property
    def rejected(self) -> bool:
        """At least one reason to refuse."""
        return bool(self.reasons)

    @property
    def codes(self) -> tuple[str, ...]:
        """The reason codes, in order."""
        return tuple(r.code for r in self.reasons)

    def raise_if_rejected(self) -> None:
        """Raise :class:`RiskRejectedError` with every reason when rejected."""
        if self.reasons:
            raise RiskRejectedError(self.reasons)

    def __add__(self, other: RiskDecision) -> RiskDecision:
        return RiskDecision(self.reasons + other.reasons)


def _account(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r}")


def _optional_price(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise ValueError(f"{attribute.name} must be a finite Decimal > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class RiskRequest:
    """One order as risk sees it: whose it is, what it is, and a price to judge it at.

    Attributes:
        account: The account that would place it.
        order: The order (its shape is already valid: :class:`NewOrder` checks
            that at construction).
        reference_price: A recent market price (e.g. the last trade or mid):
            the centre of the price bands for orders with a limit price, and
            the price orders without one are judged at (MARKET orders'
            notional and the base quantity of a ``quote_order_qty`` order).
    """

    account: str = attrs.field(validator=_account)
    order: NewOrder = attrs.field(validator=attrs.validators.instance_of(NewOrder))
    reference_price: Decimal | None = attrs.field(default=None, validator=_optional_price)

    @property
    def symbol(self) -> str:
        """The order's symbol."""
        return self.order.symbol

    @property
    def side(self) -> Side:
        """The order's side."""
        return self.order.side

    @property
    def client_order_id(self) -> str:
        """The order's client order id."""
        return self.order.client_order_id

    @property
    def quantity_estimated(self) -> bool:
        """The base quantity is an estimate (a ``quote_order_qty`` MARKET order)."""
        return self.order.quantity is None

    @property
    def base_quantity(self) -> Decimal | None:
        """The base quantity the order may trade, or ``None`` when it cannot be known.

        A ``quote_order_qty`` MARKET order has none of its own; it is
        estimated as ``quote_order_qty / reference_price`` (so it is unknown
        without a reference price).
        """
        if self.order.quantity is not None:
            return self.order.quantity
        if self.order.quote_order_qty is not None and self.reference_price is not None:
            return WIDE.divide(self.order.quote_order_qty, self.reference_price)
        return None

    @property
    def notional(self) -> Decimal | None:
        """``price * quantity`` in the quote asset, or ``None`` when it cannot be known.

        The limit price when there is one; otherwise the larger of the stop
        price and the reference price (larger is the conservative choice for
        a maximum). A ``quote_order_qty`` order's notional is that amount.
        """
        order = self.order
        if order.quote_order_qty is not None:
            return order.quote_order_qty
        if order.quantity is None:  # pragma: no cover - NewOrder forbids it
            return None
        price = order.price
        if price is None:
            known = [p for p in (order.stop_price, self.reference_price) if p is not None]
            price = max(known) if known else None
        if price is None:
            return None
        return WIDE.multiply(order.quantity, price)


@attrs.frozen
class Exposure:
    """One account's position in one symbol and what its open orders may add.

    ``position`` is signed base quantity (long > 0). ``open_buy_qty`` and
    ``open_sell_qty`` are the unfilled quantities of open orders (reserved or
    committed, not yet released) on each side: what could still trade.
    """

    position: Decimal = Decimal(0)
    open_buy_qty: Decimal = Decimal(0)
    open_sell_qty: Decimal = Decimal(0)

    def worst_case(self, side: Side, quantity: Decimal) -> Decimal:
        """The signed position if every open order on ``side`` and ``quantity`` more filled."""
        if side is Side.BUY:
            return WIDE.add(WIDE.add(self.position, self.open_buy_qty), quantity)
        return WIDE.subtract(WIDE.subtract(self.position, self.open_sell_qty), quantity)

    def reduces(self, side: Side, quantity: Decimal) -> bool:
        """Whether the order only reduces the position and cannot flip it.

        Worst case: the other open orders on the same side fill too, so two
        sells that each close a long cannot together turn it short.
        """
        if side is Side.BUY:
            return self.position < 0 and self.worst_case(side, quantity) <= 0
        return self.position > 0 and self.worst_case(side, quantity) >= 0


def _filter_problems(request: RiskRequest, info: SymbolInfo) -> list[RiskReason]:
    order = request.order
    problems = list(info.check_order(order, reference_price=request.reference_price))
    if order.type is OrderType.MARKET and order.quote_order_qty is not None:
        # A quote-quantity order *is* its notional: judge it against the NOTIONAL
        # filter with the same rules (a quantity of quote_order_qty at price 1).
        # Lot-size rules apply to the base quantity the venue derives, which is
        # not known yet, so only the notional problems are kept.
        problems.extend(
            p
            for p in info.filters.check(
                order_type=OrderType.MARKET,
                quantity=order.quote_order_qty,
                price=None,
                reference_price=Decimal(1),
            )
            if p.filter_type == "NOTIONAL"
        )
    return [RiskReason(p.code, p.message, p.filter_type) for p in problems]


def _state_problems(
    request: RiskRequest, states: TradingStates, exposure: Exposure
) -> list[RiskReason]:
    problems: list[RiskReason] = []
    account = request.account
    if states.global_state is TradingState.HALTED:
        problems.append(RiskReason(TRADING_HALTED, "trading is halted for all accounts"))
    if states.account_state(account) is TradingState.HALTED:
        problems.append(RiskReason(ACCOUNT_HALTED, f"trading is halted for account {account!r}"))
    if problems or states.effective(account) is not TradingState.REDUCING:
        return problems
    scope = "all accounts" if states.global_state is TradingState.REDUCING else repr(account)
    quantity = request.base_quantity
    if quantity is None:
        problems.append(
            RiskReason(
                REDUCE_ONLY_VIOLATION,
                f"{scope} may only reduce positions, and the base quantity of this order is "
                "unknown without a reference price",
            )
        )
    elif not exposure.reduces(request.side, quantity):
        problems.append(
            RiskReason(
                REDUCE_ONLY_VIOLATION,
                f"{scope} may only reduce positions: {request.side.value} {quantity} "
                f"{request.symbol} with position {exposure.position} (open buys "
                f"{exposure.open_buy_qty}, open sells {exposure.open_sell_qty}) would not "
                "reduce it without flipping",
            )
        )
    return problems


def check_start(
    request: RiskRequest,
    symbol_info: SymbolInfo | None,
    *,
    states: TradingStates,
    exposure: Exposure | None = None,
) -> RiskDecision:
    """The start stage: every venue-filter, symbol and trading-state problem of ``request``.

    Args:
        request: The order to judge.
        symbol_info: The venue's rules for ``request.symbol`` (``None`` when
            the venue does not list it: ``UNKNOWN_SYMBOL``).
        states: The operator's switches; only consulted, never changed.
        exposure: The account's position and open orders in the symbol
            (:meth:`daemon.risk.book.RiskBook.exposure`), needed to tell
            whether an order reduces under ``REDUCING``; flat when ``None``.

    Returns:
        Accepted, or rejected with all problems (filters first, then state).
    """
    problems: list[RiskReason] = []
    if symbol_info is None:
        problems.append(RiskReason(UNKNOWN_SYMBOL, f"the venue does not list {request.symbol}"))
    else:
        problems.extend(_filter_problems(request, symbol_info))
    problems.extend(_state_problems(request, states, exposure or Exposure()))
    return RiskDecision(tuple(problems))
