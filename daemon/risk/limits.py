"""The main stage's limits: what one account may hold, and the check of an order against them.

An order that passes the start stage (:mod:`daemon.risk.checks`) is checked
against its account's :class:`RiskLimits` (looked up in the
:class:`LimitTable`); :class:`~daemon.risk.book.RiskBook` runs that check and
reserves in one synchronous step. The limits:

* **order rate** — at most ``max_orders_per_window`` orders per sliding
  ``order_window_s`` per account (a sliding log on the injected clock);
* **max notional per order** — ``price * quantity`` in the quote asset;
* **max open orders** per account (reserved + committed, not yet released);
* **max position** per account and symbol, in base quantity, counting the
  position *plus every open order on the same side* (the worst case if they
  all fill), so reservations can never add up past the limit.

All limits are evaluated together and every breach is reported
(:meth:`RiskLimits.breaches`, as :class:`~daemon.risk.checks.RiskReason`).

Reason codes of the main stage:

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

The defaults here are also the defaults of ``[risk]`` (:mod:`daemon.config`).
"""

from __future__ import annotations

import decimal
import math
import types
from collections.abc import Mapping
from decimal import Decimal

import attrs

from daemon.model.orders import Side
from daemon.risk.checks import Exposure, RiskReason, RiskRequest

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
    "LimitTable",
    "RiskLimits",
]

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

    def breaches(
        self, request: RiskRequest, *, orders_in_window: int, open_orders: int, exposure: Exposure
    ) -> list[RiskReason]:
        """Every one of these limits ``request`` would breach, given what its account holds.

        Args:
            request: The order.
            orders_in_window: Orders of the account counted in its order-rate
                window now.
            open_orders: Open orders of the account (reserved or committed).
            exposure: The account's position and open quantities in the
                order's symbol.
        """
        account = request.account
        problems: list[RiskReason] = []

        if (
            self.max_orders_per_window is not None
            and orders_in_window + 1 > self.max_orders_per_window
        ):
            problems.append(
                RiskReason(
                    ORDER_RATE_EXCEEDED,
                    f"account {account!r} placed {orders_in_window} orders in the last "
                    f"{self.order_window_s:g} s; the limit is {self.max_orders_per_window}",
                )
            )

        if self.max_order_notional is not None:
            notional = request.notional
            if notional is None:
                problems.append(
                    RiskReason(
                        NOTIONAL_UNKNOWN,
                        f"the order has no price to judge its notional against the limit "
                        f"{self.max_order_notional}; pass a reference price",
                    )
                )
            elif notional > self.max_order_notional:
                problems.append(
                    RiskReason(
                        ORDER_NOTIONAL_ABOVE_MAX,
                        f"notional {notional} exceeds the limit {self.max_order_notional} "
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

        if self.max_open_orders is not None and open_orders + 1 > self.max_open_orders:
            problems.append(
                RiskReason(
                    OPEN_ORDERS_EXCEEDED,
                    f"account {account!r} has {open_orders} open orders; the limit is "
                    f"{self.max_open_orders}",
                )
            )

        max_position = self.max_position_for(request.symbol)
        if max_position is not None and quantity is not None:
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
