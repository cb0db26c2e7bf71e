"""Order values: what we ask a venue for, and what the venue reports back.

Commands are imperative (:class:`NewOrder`); venue truth is a ``*Report``
(:class:`OrderReport`, :class:`FillReport`), as in nautilus_trader. The enums use
Binance's spellings because Binance's Spot API is tradingd's venue protocol
(docs/ARCHITECTURE.md §9 Outside surfaces); another venue maps onto them at its edge.

A :class:`NewOrder` validates its own shape at construction (client order id
format, required fields per order type, positive amounts), so a malformed
command cannot reach the wire. Exchange *filters* (tick size, step size,
notional) are checked separately by
:meth:`daemon.model.instruments.SymbolInfo.check_order`, which returns coded
problems for the risk gate instead of raising.
"""

from __future__ import annotations

import enum
import re
from decimal import Decimal
from typing import Any

import attrs

__all__ = [
    "CLIENT_ORDER_ID_MAX_LEN",
    "CLIENT_ORDER_ID_PATTERN",
    "AccountBalance",
    "AccountInfo",
    "FillReport",
    "NewOrder",
    "OrderFill",
    "OrderReport",
    "OrderResponseType",
    "OrderType",
    "Side",
    "TimeInForce",
    "VenueOrderStatus",
    "is_valid_client_order_id",
]

#: Binance's documented format for ``newClientOrderId``: ``^[a-zA-Z0-9-_]{1,36}$``.
CLIENT_ORDER_ID_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{1,36}\Z")
CLIENT_ORDER_ID_MAX_LEN = 36


def is_valid_client_order_id(value: str) -> bool:
    """Whether ``value`` is a valid Binance client order id (1 to 36 of ``[A-Za-z0-9_-]``)."""
    return isinstance(value, str) and CLIENT_ORDER_ID_PATTERN.match(value) is not None


class Side(enum.Enum):
    """Order side."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.Enum):
    """Order types of the Binance Spot API."""

    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP_LOSS = "STOP_LOSS"
    STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"

    @property
    def needs_price(self) -> bool:
        """Whether the type carries a limit ``price``."""
        return self in _PRICED

    @property
    def needs_time_in_force(self) -> bool:
        """Whether the type requires ``timeInForce`` (LIMIT_MAKER does not take one)."""
        return self in _WITH_TIF

    @property
    def needs_stop_price(self) -> bool:
        """Whether the type requires ``stopPrice``."""
        return self in _STOPS


_PRICED = frozenset(
    {OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT, OrderType.LIMIT_MAKER}
)
_WITH_TIF = frozenset({OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT})
_STOPS = frozenset(
    {
        OrderType.STOP_LOSS,
        OrderType.STOP_LOSS_LIMIT,
        OrderType.TAKE_PROFIT,
        OrderType.TAKE_PROFIT_LIMIT,
    }
)


class TimeInForce(enum.Enum):
    """How long a priced order stays on the book."""

    GTC = "GTC"  #: good till canceled
    IOC = "IOC"  #: immediate or cancel
    FOK = "FOK"  #: fill or kill


class OrderResponseType(enum.Enum):
    """``newOrderRespType``: how much the venue says in its answer to a new order.

    ``ACK`` has ids and the transaction time only (no status); ``RESULT`` adds
    the order's state; ``FULL`` adds the fills.
    """

    ACK = "ACK"
    RESULT = "RESULT"
    FULL = "FULL"


class VenueOrderStatus(enum.Enum):
    """An order's status as the venue reports it (Binance spellings)."""

    NEW = "NEW"
    PENDING_NEW = "PENDING_NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    PENDING_CANCEL = "PENDING_CANCEL"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"

    @property
    def is_terminal(self) -> bool:
        """The order is closed: it will not trade again, and its client id is free again."""
        return self in _TERMINAL

    @property
    def is_open(self) -> bool:
        """The order may still trade (or is about to be canceled)."""
        return not self.is_terminal


_TERMINAL = frozenset(
    {
        VenueOrderStatus.FILLED,
        VenueOrderStatus.CANCELED,
        VenueOrderStatus.REJECTED,
        VenueOrderStatus.EXPIRED,
        VenueOrderStatus.EXPIRED_IN_MATCH,
    }
)


def _client_order_id(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not is_valid_client_order_id(value):
        raise ValueError(
            f"{attribute.name} must be 1-{CLIENT_ORDER_ID_MAX_LEN} characters of "
            f"[A-Za-z0-9_-], got {value!r}"
        )


def _optional_positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise ValueError(f"{attribute.name} must be a finite Decimal > 0, got {value!r}")


def _symbol(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or not value.isalnum() or value != value.upper():
        raise ValueError(
            f"{attribute.name} must be an upper-case alphanumeric symbol, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class NewOrder:
    """A command to place one order.

    Attributes:
        symbol: Venue symbol, upper case (``"BTCUSDT"``).
        side: BUY or SELL.
        type: Order type; decides which of the fields below are required.
        client_order_id: Deterministic id derived from the intent's
            idempotency key (docs/ARCHITECTURE.md §4 Orders); sent as ``newClientOrderId``.
        quantity: Base quantity. Required except for a MARKET order given by
            ``quote_order_qty``.
        price: Limit price (LIMIT, LIMIT_MAKER, \\*_LIMIT types only).
        time_in_force: Required for LIMIT and \\*_LIMIT types; not allowed otherwise.
        stop_price: Trigger price of STOP_LOSS / TAKE_PROFIT types.
        quote_order_qty: MARKET only: spend (BUY) or receive (SELL) this much
            quote asset instead of a base quantity.

    Raises:
        ValueError: the order's shape is invalid for its type.
    """

    symbol: str = attrs.field(validator=_symbol)
    side: Side = attrs.field(validator=attrs.validators.instance_of(Side))
    type: OrderType = attrs.field(validator=attrs.validators.instance_of(OrderType))
    client_order_id: str = attrs.field(validator=_client_order_id)
    quantity: Decimal | None = attrs.field(default=None, validator=_optional_positive)
    price: Decimal | None = attrs.field(default=None, validator=_optional_positive)
    time_in_force: TimeInForce | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(TimeInForce)),
    )
    stop_price: Decimal | None = attrs.field(default=None, validator=_optional_positive)
    quote_order_qty: Decimal | None = attrs.field(default=None, validator=_optional_positive)

    def __attrs_post_init__(self) -> None:
        kind = self.type
        name = kind.value
        if kind is OrderType.MARKET:
            if (self.quantity is None) == (self.quote_order_qty is None):
                raise ValueError("a MARKET order needs exactly one of quantity and quote_order_qty")
        else:
            if self.quantity is None:
                raise ValueError(f"a {name} order needs a quantity")
            if self.quote_order_qty is not None:
                raise ValueError("quote_order_qty is only allowed on MARKET orders")
        if kind.needs_price and self.price is None:
            raise ValueError(f"a {name} order needs a price")
        if not kind.needs_price and self.price is not None:
            raise ValueError(f"a {name} order takes no price")
        if kind.needs_time_in_force and self.time_in_force is None:
            raise ValueError(f"a {name} order needs a time_in_force")
        if not kind.needs_time_in_force and self.time_in_force is not None:
            raise ValueError(f"a {name} order takes no time_in_force")
        if kind.needs_stop_price and self.stop_price is None:
            raise ValueError(f"a {name} order needs a stop_price")
        if not kind.needs_stop_price and self.stop_price is not None:
            raise ValueError(f"a {name} order takes no stop_price")


@attrs.frozen
class OrderFill:
    """One fill reported inside a ``FULL`` new-order answer."""

    price: Decimal
    quantity: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: int


@attrs.frozen(kw_only=True)
class OrderReport:
    """The venue's view of one order, from a new-order, query, cancel or open-orders answer.

    Which fields are known depends on the answer: an ``ACK`` to a new order
    carries only the ids and ``time_ms``; ``RESULT``/``FULL``, queries, cancels
    and open orders carry the order's state (``FULL`` also ``fills``). Unknown
    fields are ``None``.

    ``client_order_id`` is always the *order's* client id. (In a cancel answer
    Binance puts the order's id in ``origClientOrderId`` and the cancel
    request's own id in ``clientOrderId``; the codec takes care of that.)

    Attributes:
        venue: Venue name.
        symbol: Venue symbol.
        order_id: The venue's order id.
        client_order_id: The order's client order id.
        order_list_id: OCO/order-list id (-1 when none).
        status: Order status (``None`` in an ``ACK``).
        side: Order side.
        type: Order type.
        time_in_force: Time in force (``None`` where not applicable or not sent).
        price: Limit price (Binance sends ``0`` for MARKET orders).
        orig_qty: Ordered base quantity.
        executed_qty: Filled base quantity.
        cumulative_quote_qty: Filled quote quantity.
        orig_quote_order_qty: ``quoteOrderQty`` the order was placed with.
        stop_price: Trigger price (``0`` when none).
        time_ms: Creation time (``time`` of a query, ``transactTime`` of a new order or cancel).
        update_time_ms: Last update (queries and open orders).
        working_time_ms: When the order started working on the book.
        is_working: Whether the order is on the book (queries).
        fills: Fills of a ``FULL`` new-order answer.
    """

    venue: str
    symbol: str
    order_id: int
    client_order_id: str
    order_list_id: int = -1
    status: VenueOrderStatus | None = None
    side: Side | None = None
    type: OrderType | None = None
    time_in_force: TimeInForce | None = None
    price: Decimal | None = None
    orig_qty: Decimal | None = None
    executed_qty: Decimal | None = None
    cumulative_quote_qty: Decimal | None = None
    orig_quote_order_qty: Decimal | None = None
    stop_price: Decimal | None = None
    time_ms: int | None = None
    update_time_ms: int | None = None
    working_time_ms: int | None = None
    is_working: bool | None = None
    fills: tuple[OrderFill, ...] = ()


@attrs.frozen(kw_only=True)
class FillReport:
    """One of our own trades (``GET /api/v3/myTrades``); stored idempotently on ``trade_id``.

    Attributes:
        venue: Venue name.
        symbol: Venue symbol.
        trade_id: The venue's trade id (``id``).
        order_id: The order that traded.
        order_list_id: OCO/order-list id (-1 when none).
        price: Execution price.
        quantity: Base quantity (``qty``).
        quote_quantity: Quote quantity (``quoteQty``).
        commission: Commission charged.
        commission_asset: Asset the commission was charged in.
        time_ms: Trade time (epoch ms).
        is_buyer: We bought.
        is_maker: Our order was resting.
    """

    venue: str
    symbol: str
    trade_id: int
    order_id: int
    order_list_id: int = -1
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool


@attrs.frozen
class AccountBalance:
    """The balance of one asset: ``free`` to use, ``locked`` in open orders."""

    asset: str
    free: Decimal
    locked: Decimal

    @property
    def total(self) -> Decimal:
        """``free + locked``."""
        return self.free + self.locked


@attrs.frozen(kw_only=True)
class AccountInfo:
    """The account as the venue reports it (``GET /api/v3/account``).

    Attributes:
        venue: Venue name.
        can_trade: Whether the account may place orders.
        account_type: ``"SPOT"`` etc.
        update_time_ms: Last account update (epoch ms).
        balances: One entry per asset, in the venue's order.
        permissions: Account permissions (``("SPOT",)``).
    """

    venue: str
    can_trade: bool
    account_type: str
    update_time_ms: int
    balances: tuple[AccountBalance, ...]
    permissions: tuple[str, ...] = ()

    def balance(self, asset: str) -> AccountBalance:
        """The balance of ``asset`` (zero when the venue did not list it)."""
        for entry in self.balances:
            if entry.asset == asset:
                return entry
        return AccountBalance(asset, Decimal(0), Decimal(0))
