"""Instruments: symbol rules (filters), venue rate-limit rules, exchange info.

The symbol filters are the venue's own pre-trade checks (Binance
``exchangeInfo``: ``PRICE_FILTER``, ``LOT_SIZE``, ``MARKET_LOT_SIZE``,
``NOTIONAL``/``MIN_NOTIONAL``, ``MAX_NUM_ORDERS``). Checking them locally
(:meth:`SymbolInfo.check_order`) turns a round trip that would end in
``-1013 Filter failure`` into a coded reject before anything is sent, which is
the cheap first stage of the risk gate (docs/ARCHITECTURE.md §4 Orders). The arithmetic is exact
:class:`~decimal.Decimal` and follows Binance's documented rules:

* ``PRICE_FILTER``: ``minPrice <= price <= maxPrice`` and ``price % tickSize == 0``
  (each part disabled when its value is 0);
* ``LOT_SIZE``: ``minQty <= quantity <= maxQty`` and
  ``(quantity - minQty) % stepSize == 0``;
* ``NOTIONAL``: ``minNotional <= price * quantity <= maxNotional``, applied to
  MARKET orders only when ``applyMinToMarket``/``applyMaxToMarket`` say so, at
  a reference (average) price; ``MIN_NOTIONAL`` is the older minimum-only form;
* price bands, judged against a reference price (the venue's average price
  over ``avgPriceMins`` minutes; the caller supplies its best estimate) and
  only for orders that carry a limit price (a MARKET order has none to judge):
  ``PERCENT_PRICE``: ``avg * multiplierDown <= price <= avg * multiplierUp``;
  ``PERCENT_PRICE_BY_SIDE``: the same with ``bidMultiplier…`` for a BUY and
  ``askMultiplier…`` for a SELL. Both bounds are inclusive.

Why bands matter locally: they move with the market, so an order that passed
a minute ago can fail now; a fat-fingered price (a BUY at 10x the market)
is caught here with the numbers in the message rather than as a bare
``Filter failure: PERCENT_PRICE_BY_SIDE`` from the venue.
"""

from __future__ import annotations

import decimal
import enum
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_UP, Decimal

import attrs

from daemon.model.orders import NewOrder, OrderType, Side

__all__ = [
    "ExchangeInfo",
    "OrderProblem",
    "RateLimitInterval",
    "RateLimitRule",
    "RateLimitType",
    "SymbolFilters",
    "SymbolInfo",
]

#: Exact arithmetic for filter checks: enough digits that no product of two
#: exchange decimals is ever rounded.
_EXACT = decimal.Context(prec=80, traps=[decimal.InvalidOperation, decimal.Inexact])
#: Wide arithmetic for rounding onto a grid (division may be inexact there).
_WIDE = decimal.Context(prec=80)


class RateLimitType(enum.Enum):
    """What a venue rate limit counts."""

    REQUEST_WEIGHT = "REQUEST_WEIGHT"  #: sum of endpoint weights (per IP)
    ORDERS = "ORDERS"  #: new orders (per account)
    RAW_REQUESTS = "RAW_REQUESTS"  #: requests, whatever their weight (per IP)


class RateLimitInterval(enum.Enum):
    """The unit of a rate-limit interval; ``letter`` is its ``X-MBX-*`` header suffix."""

    SECOND = "SECOND"
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"

    @property
    def seconds(self) -> int:
        """Length of one unit in seconds."""
        return _INTERVAL_S[self]

    @property
    def letter(self) -> str:
        """The letter used in usage headers: ``S``, ``M``, ``H``, ``D``."""
        return self.value[0]

    @classmethod
    def from_letter(cls, letter: str) -> RateLimitInterval:
        """The interval of a header suffix letter (case-insensitive)."""
        for member in cls:
            if member.letter == letter.upper():
                return member
        raise ValueError(f"unknown rate-limit interval letter {letter!r}")


_INTERVAL_S = {
    RateLimitInterval.SECOND: 1,
    RateLimitInterval.MINUTE: 60,
    RateLimitInterval.HOUR: 3600,
    RateLimitInterval.DAY: 86400,
}


@attrs.frozen
class RateLimitRule:
    """One entry of ``exchangeInfo.rateLimits``: at most ``limit`` per ``interval_num`` intervals.

    Example: ``REQUEST_WEIGHT`` 6000 per 1 MINUTE, reported by the venue in
    the header ``X-MBX-USED-WEIGHT-1M``.
    """

    type: RateLimitType
    interval: RateLimitInterval
    interval_num: int
    limit: int

    def __attrs_post_init__(self) -> None:
        if self.interval_num < 1:
            raise ValueError(f"interval_num must be >= 1, got {self.interval_num}")
        if self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    @property
    def period_s(self) -> float:
        """The window length in seconds."""
        return float(self.interval_num * self.interval.seconds)

    @property
    def suffix(self) -> str:
        """The usage-header suffix, e.g. ``"1M"``, ``"10S"``, ``"1D"``."""
        return f"{self.interval_num}{self.interval.letter}"

    @property
    def window_name(self) -> str:
        """A unique limiter window name, e.g. ``"REQUEST_WEIGHT:1M"``."""
        return f"{self.type.value}:{self.suffix}"


@attrs.frozen
class OrderProblem:
    """One reason an order would be refused, coded for the risk gate and logs.

    Attributes:
        code: Stable machine code (``"PRICE_TICK"``, ``"QTY_BELOW_MIN"``, …).
        filter_type: The venue filter that would refuse it (``"PRICE_FILTER"``),
            or ``None`` for symbol-level problems.
        message: Human explanation with the numbers involved.
    """

    code: str
    filter_type: str | None
    message: str


def _on_grid(value: Decimal, base: Decimal, step: Decimal) -> bool:
    try:
        return _EXACT.remainder(_EXACT.subtract(value, base), step) == 0
    except decimal.DecimalException:
        return False


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


#: Rounding is about the (possibly negative) offset from the grid's base, so
#: "down" and "up" mean towards minus and plus infinity there.
_DIRECTED = {ROUND_DOWN: ROUND_FLOOR, ROUND_UP: ROUND_CEILING}


def _snap_to_grid(value: Decimal, base: Decimal, step: Decimal, rounding: str) -> Decimal:
    steps = _WIDE.divide(_WIDE.subtract(value, base), step).quantize(
        Decimal(1), rounding=_DIRECTED.get(rounding, rounding), context=_WIDE
    )
    result = max(Decimal(0), _WIDE.add(base, _WIDE.multiply(steps, step)))
    # Keep the grid's exponent so "0.10" stays "0.10" and never becomes "1E-1".
    exponent = min(_exponent(step), _exponent(base), 0)
    return result.quantize(Decimal(1).scaleb(exponent), context=_WIDE)


@attrs.frozen(kw_only=True)
class SymbolFilters:
    """The filters of one symbol; ``None`` means the venue does not enforce that part.

    Attributes:
        tick_size: Price increment (``PRICE_FILTER.tickSize``).
        min_price: Lowest price.
        max_price: Highest price.
        step_size: Quantity increment (``LOT_SIZE.stepSize``), counted from ``min_qty``.
        min_qty: Smallest quantity.
        max_qty: Largest quantity.
        market_step_size: ``MARKET_LOT_SIZE.stepSize`` for MARKET orders.
        market_min_qty: ``MARKET_LOT_SIZE.minQty``.
        market_max_qty: ``MARKET_LOT_SIZE.maxQty``.
        min_notional: Smallest ``price * quantity`` (``NOTIONAL`` or ``MIN_NOTIONAL``).
        apply_min_to_market: Whether ``min_notional`` applies to MARKET orders.
        max_notional: Largest ``price * quantity`` (``NOTIONAL`` only).
        apply_max_to_market: Whether ``max_notional`` applies to MARKET orders.
        max_num_orders: ``MAX_NUM_ORDERS``: open orders allowed on the symbol.
        multiplier_up: ``PERCENT_PRICE.multiplierUp``: highest price as a
            multiple of the reference price.
        multiplier_down: ``PERCENT_PRICE.multiplierDown``: lowest price as a
            multiple of the reference price.
        percent_price_avg_mins: ``PERCENT_PRICE.avgPriceMins``: minutes the
            venue averages its reference over (0: the last price); reported
            so a caller can choose its reference price, not used by :meth:`check`.
        bid_multiplier_up: ``PERCENT_PRICE_BY_SIDE.bidMultiplierUp`` (BUY orders).
        bid_multiplier_down: ``PERCENT_PRICE_BY_SIDE.bidMultiplierDown`` (BUY orders).
        ask_multiplier_up: ``PERCENT_PRICE_BY_SIDE.askMultiplierUp`` (SELL orders).
        ask_multiplier_down: ``PERCENT_PRICE_BY_SIDE.askMultiplierDown`` (SELL orders).
        percent_price_by_side_avg_mins: ``PERCENT_PRICE_BY_SIDE.avgPriceMins``
            (reported, like ``percent_price_avg_mins``).
    """

    tick_size: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    step_size: Decimal | None = None
    min_qty: Decimal | None = None
    max_qty: Decimal | None = None
    market_step_size: Decimal | None = None
    market_min_qty: Decimal | None = None
    market_max_qty: Decimal | None = None
    min_notional: Decimal | None = None
    apply_min_to_market: bool = True
    max_notional: Decimal | None = None
    apply_max_to_market: bool = False
    max_num_orders: int | None = None
    multiplier_up: Decimal | None = None
    multiplier_down: Decimal | None = None
    percent_price_avg_mins: int | None = None
    bid_multiplier_up: Decimal | None = None
    bid_multiplier_down: Decimal | None = None
    ask_multiplier_up: Decimal | None = None
    ask_multiplier_down: Decimal | None = None
    percent_price_by_side_avg_mins: int | None = None

    def round_price(self, price: Decimal, rounding: str = ROUND_DOWN) -> Decimal:
        """``price`` moved onto the tick grid (down by default; any ``decimal`` rounding).

        Unchanged when there is no tick size.
        """
        if self.tick_size is None:
            return price
        return _snap_to_grid(price, Decimal(0), self.tick_size, rounding)

    def round_quantity(
        self, quantity: Decimal, rounding: str = ROUND_DOWN, *, market: bool = False
    ) -> Decimal:
        """``quantity`` moved onto the step grid (from ``min_qty``), down by default.

        ``market=True`` uses ``MARKET_LOT_SIZE`` where the symbol has one. A
        quantity below ``min_qty`` rounds down to a grid point below it (or
        0), which :meth:`check` then reports as ``QTY_BELOW_MIN``.
        """
        step, base = self._lot(market)[:2]
        if step is None:
            return quantity
        return _snap_to_grid(quantity, base or Decimal(0), step, rounding)

    def _lot(self, market: bool) -> tuple[Decimal | None, Decimal | None, Decimal | None, str]:
        if market and (
            self.market_step_size is not None
            or self.market_min_qty is not None
            or self.market_max_qty is not None
        ):
            return (
                self.market_step_size,
                self.market_min_qty,
                self.market_max_qty,
                "MARKET_LOT_SIZE",
            )
        return self.step_size, self.min_qty, self.max_qty, "LOT_SIZE"

    def check(
        self,
        *,
        order_type: OrderType,
        quantity: Decimal | None,
        price: Decimal | None,
        stop_price: Decimal | None = None,
        reference_price: Decimal | None = None,
        side: Side | None = None,
    ) -> tuple[OrderProblem, ...]:
        """Every filter problem of an order with these numbers (empty: passes).

        Args:
            order_type: The order's type (MARKET orders use the market lot
                rules and the ``applyTo…Market`` switches).
            quantity: Base quantity (``None`` for a quote-quantity MARKET order).
            price: Limit price (``None`` for MARKET/STOP_LOSS/TAKE_PROFIT).
            stop_price: Trigger price, checked against the price filter too.
            reference_price: A recent (average) market price. For orders
                without a limit price, the price the notional is judged at;
                for orders with one, the centre of the price bands
                (``PERCENT_PRICE``, ``PERCENT_PRICE_BY_SIDE``). Without it
                neither is checked: a band around an unknown price means nothing.
            side: The order's side, which picks the ``bid…`` or ``ask…``
                multipliers of ``PERCENT_PRICE_BY_SIDE``; without it only
                ``PERCENT_PRICE`` (which has one band for both sides) applies.
        """
        problems: list[OrderProblem] = []
        for label, value in (("price", price), ("stop price", stop_price)):
            if value is not None:
                problems.extend(self._check_price(label, value))
        if price is not None and reference_price is not None:
            problems.extend(self._check_bands(price, reference_price, side))
        if quantity is not None:
            problems.extend(self._check_quantity(quantity, market=order_type is OrderType.MARKET))
        notional_price = price if price is not None else reference_price
        if quantity is not None and notional_price is not None:
            problems.extend(
                self._check_notional(
                    _EXACT.multiply(quantity, notional_price),
                    market=price is None,
                )
            )
        return tuple(problems)

    def _check_price(self, label: str, price: Decimal) -> list[OrderProblem]:
        problems = []
        code = "PRICE" if label == "price" else "STOP_PRICE"
        if self.min_price is not None and price < self.min_price:
            problems.append(
                OrderProblem(
                    f"{code}_BELOW_MIN",
                    "PRICE_FILTER",
                    f"{label} {price} is below the minimum {self.min_price}",
                )
            )
        if self.max_price is not None and price > self.max_price:
            problems.append(
                OrderProblem(
                    f"{code}_ABOVE_MAX",
                    "PRICE_FILTER",
                    f"{label} {price} is above the maximum {self.max_price}",
                )
            )
        if self.tick_size is not None and not _on_grid(price, Decimal(0), self.tick_size):
            problems.append(
                OrderProblem(
                    f"{code}_TICK",
                    "PRICE_FILTER",
                    f"{label} {price} is not a multiple of the tick size {self.tick_size}",
                )
            )
        return problems

    def _bands(self, side: Side | None) -> list[tuple[str, Decimal | None, Decimal | None]]:
        """``(filter type, down multiplier, up multiplier)`` of each band that applies."""
        bands = []
        if self.multiplier_down is not None or self.multiplier_up is not None:
            bands.append(("PERCENT_PRICE", self.multiplier_down, self.multiplier_up))
        if side is Side.BUY:
            down, up = self.bid_multiplier_down, self.bid_multiplier_up
        elif side is Side.SELL:
            down, up = self.ask_multiplier_down, self.ask_multiplier_up
        else:
            down = up = None
        if down is not None or up is not None:
            bands.append(("PERCENT_PRICE_BY_SIDE", down, up))
        return bands

    def _check_bands(
        self, price: Decimal, reference: Decimal, side: Side | None
    ) -> list[OrderProblem]:
        problems = []
        which = f"{side.value} " if side is not None else ""
        for filter_type, down, up in self._bands(side):
            if up is not None:
                high = _EXACT.multiply(reference, up)
                if price > high:
                    problems.append(
                        OrderProblem(
                            "PRICE_ABOVE_BAND",
                            filter_type,
                            f"{which}price {price} is above {high} = {up} x the reference "
                            f"price {reference} ({filter_type})",
                        )
                    )
            if down is not None:
                low = _EXACT.multiply(reference, down)
                if price < low:
                    problems.append(
                        OrderProblem(
                            "PRICE_BELOW_BAND",
                            filter_type,
                            f"{which}price {price} is below {low} = {down} x the reference "
                            f"price {reference} ({filter_type})",
                        )
                    )
        return problems

    def _check_quantity(self, quantity: Decimal, *, market: bool) -> list[OrderProblem]:
        step, low, high, name = self._lot(market)
        problems = []
        if low is not None and quantity < low:
            problems.append(
                OrderProblem(
                    "QTY_BELOW_MIN", name, f"quantity {quantity} is below the minimum {low}"
                )
            )
        if high is not None and quantity > high:
            problems.append(
                OrderProblem(
                    "QTY_ABOVE_MAX", name, f"quantity {quantity} is above the maximum {high}"
                )
            )
        if step is not None and not _on_grid(quantity, low or Decimal(0), step):
            problems.append(
                OrderProblem(
                    "QTY_STEP",
                    name,
                    f"quantity {quantity} is not min_qty {low or 0} plus a multiple of the "
                    f"step size {step}",
                )
            )
        return problems

    def _check_notional(self, notional: Decimal, *, market: bool) -> list[OrderProblem]:
        problems = []
        if (
            self.min_notional is not None
            and (not market or self.apply_min_to_market)
            and notional < self.min_notional
        ):
            problems.append(
                OrderProblem(
                    "NOTIONAL_BELOW_MIN",
                    "NOTIONAL",
                    f"notional {notional} is below the minimum {self.min_notional}",
                )
            )
        if (
            self.max_notional is not None
            and (not market or self.apply_max_to_market)
            and notional > self.max_notional
        ):
            problems.append(
                OrderProblem(
                    "NOTIONAL_ABOVE_MAX",
                    "NOTIONAL",
                    f"notional {notional} is above the maximum {self.max_notional}",
                )
            )
        return problems


#: The symbol status in which orders are accepted.
TRADING = "TRADING"


@attrs.frozen(kw_only=True)
class SymbolInfo:
    """One symbol of ``exchangeInfo``.

    Attributes:
        symbol: Venue symbol (``"BTCUSDT"``).
        status: ``TRADING``, ``HALT``, ``BREAK``, … (kept as the venue's string,
            so a status the venue adds later does not break decoding).
        base_asset: ``"BTC"``.
        quote_asset: ``"USDT"``.
        base_asset_precision: Decimals of the base asset.
        quote_asset_precision: Decimals of the quote asset.
        order_types: Order types the symbol allows (the venue's strings).
        filters: The symbol's filters.
    """

    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    base_asset_precision: int = 8
    quote_asset_precision: int = 8
    order_types: frozenset[str] = frozenset()
    filters: SymbolFilters = SymbolFilters()

    @property
    def is_trading(self) -> bool:
        """Whether the venue currently accepts orders on the symbol."""
        return self.status == TRADING

    def round_price(self, price: Decimal, rounding: str = ROUND_DOWN) -> Decimal:
        """See :meth:`SymbolFilters.round_price`."""
        return self.filters.round_price(price, rounding)

    def round_quantity(
        self, quantity: Decimal, rounding: str = ROUND_DOWN, *, market: bool = False
    ) -> Decimal:
        """See :meth:`SymbolFilters.round_quantity`."""
        return self.filters.round_quantity(quantity, rounding, market=market)

    def check_order(
        self, order: NewOrder, *, reference_price: Decimal | None = None
    ) -> tuple[OrderProblem, ...]:
        """Every reason the venue would refuse ``order`` on this symbol (empty: none).

        Symbol-level problems (``SYMBOL_MISMATCH``, ``SYMBOL_NOT_TRADING``,
        ``ORDER_TYPE_NOT_ALLOWED``) come first, then the filter problems of
        :meth:`SymbolFilters.check` (with the order's side, so both price-band
        filters apply when ``reference_price`` is given).
        """
        problems: list[OrderProblem] = []
        if order.symbol != self.symbol:
            problems.append(
                OrderProblem(
                    "SYMBOL_MISMATCH", None, f"order is for {order.symbol}, not {self.symbol}"
                )
            )
        if not self.is_trading:
            problems.append(
                OrderProblem(
                    "SYMBOL_NOT_TRADING", None, f"{self.symbol} is {self.status}, not TRADING"
                )
            )
        if self.order_types and order.type.value not in self.order_types:
            problems.append(
                OrderProblem(
                    "ORDER_TYPE_NOT_ALLOWED",
                    None,
                    f"{order.type.value} orders are not allowed on {self.symbol}",
                )
            )
        problems.extend(
            self.filters.check(
                order_type=order.type,
                quantity=order.quantity,
                price=order.price,
                stop_price=order.stop_price,
                reference_price=reference_price,
                side=order.side,
            )
        )
        return tuple(problems)


@attrs.frozen(kw_only=True)
class ExchangeInfo:
    """``GET /api/v3/exchangeInfo``: rate limits and symbols.

    Attributes:
        venue: Venue name.
        timezone: The venue's timezone (``"UTC"``).
        server_time_ms: The venue's clock when it answered.
        rate_limits: The venue's rate-limit rules (for the client's limiter).
        symbols: Symbol rules, by symbol.
    """

    venue: str
    timezone: str
    server_time_ms: int
    rate_limits: tuple[RateLimitRule, ...]
    symbols: Mapping[str, SymbolInfo]

    def symbol(self, name: str) -> SymbolInfo:
        """The rules of ``name``.

        Raises:
            KeyError: the venue did not list the symbol.
        """
        return self.symbols[name]
