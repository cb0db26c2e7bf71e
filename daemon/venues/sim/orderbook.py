"""What the matching engine is made of: orders, trades, book sides and symbol filters.

Values the engine hands out (:class:`Order`, :class:`Fill`, :class:`Trade`,
:class:`AccountTrade`, :class:`BookChange`) and takes (:class:`NewOrder`); the
structures of one symbol's book (:class:`BookSide`: FIFO queues per price and
a sorted list of prices; :class:`SymbolBook`: both sides, the id counters and
the levels an operation changed); Binance's symbol filters
(:func:`check_filters`, ``-1013 Filter failure: …``); and the exact decimal
arithmetic they share (:data:`DECIMAL_CONTEXT`, :func:`mul`).

The engine itself — placing, matching, settling, cancelling — is
:mod:`daemon.venues.sim.matching`.
"""

from __future__ import annotations

import bisect
import decimal
from collections import deque
from collections.abc import Iterator
from decimal import Decimal
from typing import Final, Literal

import attrs

from daemon.venues.sim import protocol as p
from daemon.venues.sim.config import SymbolConfig

__all__ = [
    "DECIMAL_CONTEXT",
    "ZERO",
    "AccountTrade",
    "BookChange",
    "BookSide",
    "Fill",
    "NewOrder",
    "Order",
    "OrderStatus",
    "OrderType",
    "Side",
    "SymbolBook",
    "TimeInForce",
    "Trade",
    "check_filters",
    "crosses",
    "mul",
    "sym_asset",
]

Side = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET", "LIMIT_MAKER"]
TimeInForce = Literal["GTC", "IOC", "FOK"]
OrderStatus = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"]

ZERO: Final = Decimal(0)
#: Exact arithmetic for price x quantity (default precision 28 is too close for comfort).
DECIMAL_CONTEXT: Final = decimal.Context(prec=60)


@attrs.frozen
class NewOrder:
    """A validated ``POST /api/v3/order`` request, as the engine sees it."""

    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal | None = None
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    client_order_id: str | None = None


@attrs.frozen
class Fill:
    """One fill of an order, as listed in a ``FULL`` order response."""

    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int


@attrs.define
class Order:
    """An order the engine accepted (open, or closed and kept for queries)."""

    symbol: str
    order_id: int
    client_order_id: str
    account: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    price: Decimal
    orig_qty: Decimal
    time_ms: int
    orig_quote_order_qty: Decimal = ZERO
    executed_qty: Decimal = ZERO
    cumm_quote_qty: Decimal = ZERO
    status: OrderStatus = "NEW"
    update_time_ms: int = 0
    #: Funds this order holds locked (quote for BUY, base for SELL).
    locked: Decimal = ZERO
    #: Queries do not see the order before this wall-clock instant (fault injection).
    visible_at_ms: int = 0
    fills: list[Fill] = attrs.field(factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def visible(self, now_ms: int) -> bool:
        return now_ms >= self.visible_at_ms


@attrs.frozen
class Trade:
    """One public trade (a taker order matched one maker order)."""

    symbol: str
    id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    time_ms: int
    buyer_is_maker: bool


@attrs.frozen
class AccountTrade:
    """One side of a trade, as ``GET /api/v3/myTrades`` lists it."""

    symbol: str
    id: int
    order_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool


@attrs.frozen
class BookChange:
    """The levels one engine operation changed (new total quantity; zero = level gone)."""

    symbol: str
    update_id: int
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]


class BookSide:
    """One side of a book: FIFO queues per price and a sorted list of prices."""

    def __init__(self, *, descending: bool) -> None:
        self.descending = descending
        self.prices: list[Decimal] = []  # ascending
        self.levels: dict[Decimal, deque[Order]] = {}
        self.totals: dict[Decimal, Decimal] = {}

    def best(self) -> Decimal | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.descending else self.prices[0]

    def add(self, order: Order) -> None:
        level = self.levels.get(order.price)
        if level is None:
            bisect.insort(self.prices, order.price)
            level = self.levels[order.price] = deque()
            self.totals[order.price] = ZERO
        level.append(order)
        self.totals[order.price] += order.remaining

    def reduce(self, price: Decimal, qty: Decimal) -> None:
        self.totals[price] -= qty

    def remove(self, order: Order) -> None:
        level = self.levels[order.price]
        level.remove(order)
        self.totals[order.price] -= order.remaining
        if not level:
            self._drop_level(order.price)

    def pop_front(self, price: Decimal) -> None:
        level = self.levels[price]
        level.popleft()
        if not level:
            self._drop_level(price)

    def _drop_level(self, price: Decimal) -> None:
        del self.levels[price]
        del self.totals[price]
        index = bisect.bisect_left(self.prices, price)
        del self.prices[index]

    def top(self, limit: int) -> list[tuple[Decimal, Decimal]]:
        prices = reversed(self.prices) if self.descending else iter(self.prices)
        out: list[tuple[Decimal, Decimal]] = []
        for price in prices:
            if len(out) >= limit:
                break
            out.append((price, self.totals[price]))
        return out

    def walk(self) -> Iterator[tuple[Decimal, deque[Order]]]:
        """Levels from best to worst."""
        prices = list(reversed(self.prices)) if self.descending else list(self.prices)
        for price in prices:
            yield price, self.levels[price]


class SymbolBook:
    """One symbol's book: both sides, the next ids, and the levels changed since the last commit."""

    def __init__(self, config: SymbolConfig, first_trade_id: int, first_update_id: int) -> None:
        self.config = config
        self.bids = BookSide(descending=True)
        self.asks = BookSide(descending=False)
        self.next_trade_id = first_trade_id
        self.update_id = first_update_id - 1
        self.next_order_id = 1
        self.last_price: Decimal | None = None
        self.pending_bids: dict[Decimal, Decimal] = {}
        self.pending_asks: dict[Decimal, Decimal] = {}

    def side(self, side: Side) -> BookSide:
        return self.bids if side == "BUY" else self.asks

    def opposite(self, side: Side) -> BookSide:
        return self.asks if side == "BUY" else self.bids

    def touch(self, side: Side, price: Decimal) -> None:
        book_side = self.side(side)
        pending = self.pending_bids if side == "BUY" else self.pending_asks
        pending[price] = book_side.totals.get(price, ZERO)

    def reference_price(self) -> Decimal:
        if self.last_price is not None:
            return self.last_price
        bid, ask = self.bids.best(), self.asks.best()
        if bid is not None and ask is not None:
            return (bid + ask) / 2
        return self.config.start_price


def crosses(side: Side, limit: Decimal | None, level_price: Decimal) -> bool:
    """Whether a ``side`` order with ``limit`` (``None``: MARKET) takes ``level_price``."""
    if limit is None:
        return True
    return level_price <= limit if side == "BUY" else level_price >= limit


def mul(a: Decimal, b: Decimal) -> Decimal:
    """``a`` x ``b`` exactly (in :data:`DECIMAL_CONTEXT`)."""
    return DECIMAL_CONTEXT.multiply(a, b)


def check_filters(sym: SymbolConfig, order: NewOrder, reference_price: Decimal) -> None:
    """Binance's symbol filters, in its documented order.

    PRICE_FILTER, PERCENT_PRICE_BY_SIDE, LOT_SIZE, NOTIONAL: the first that
    fails is the one named in the error, as on the venue.

    ``reference_price`` stands in for Binance's average price: the notional
    of a MARKET order is judged at it, and the price bands are centred on it
    (bands apply only to orders with a price; bounds are inclusive).

    Raises:
        ApiError: ``-1013 Filter failure: <FILTER>``.
    """
    price = order.price
    if price is not None and (
        price < sym.min_price
        or price > sym.max_price
        or (price - sym.min_price) % sym.tick_size != 0
    ):
        raise p.filter_failure("PRICE_FILTER")
    if price is not None:
        down, up = sym.percent_price_by_side.band(order.side)
        if (up is not None and price > mul(reference_price, up)) or (
            down is not None and price < mul(reference_price, down)
        ):
            raise p.filter_failure("PERCENT_PRICE_BY_SIDE")
    qty = order.quantity
    if qty is not None and (
        qty < sym.min_qty or qty > sym.max_qty or (qty - sym.min_qty) % sym.step_size != 0
    ):
        raise p.filter_failure("LOT_SIZE")
    if order.type == "MARKET":
        notional = (
            order.quote_order_qty
            if order.quote_order_qty is not None
            else mul(reference_price, qty or ZERO)
        )
        if sym.apply_min_to_market and notional < sym.min_notional:
            raise p.filter_failure("NOTIONAL")
        if sym.apply_max_to_market and notional > sym.max_notional:
            raise p.filter_failure("NOTIONAL")
    elif price is not None and qty is not None:
        notional = mul(price, qty)
        if notional < sym.min_notional or notional > sym.max_notional:
            raise p.filter_failure("NOTIONAL")


def sym_asset(sym: SymbolConfig, side: Side) -> str:
    """The asset an order on ``side`` pays with (quote for BUY, base for SELL)."""
    return sym.quote_asset if side == "BUY" else sym.base_asset
