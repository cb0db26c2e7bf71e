"""Pure, frozen, venue-neutral values: market data, orders, instruments.

Prices and quantities are :class:`~decimal.Decimal` everywhere (strings on the
wire), never floats. Modules: :mod:`.marketdata` (trades, depth, sequence
checks), :mod:`.orders` (commands and venue reports), :mod:`.instruments`
(symbol filters, rate-limit rules, exchange info), :mod:`.weights` (request
weights that depend on the request, shared by the client and the simulator).
"""

from __future__ import annotations

from daemon.model.instruments import (
    ExchangeInfo,
    OrderProblem,
    RateLimitInterval,
    RateLimitRule,
    RateLimitType,
    SymbolFilters,
    SymbolInfo,
)
from daemon.model.marketdata import (
    DepthContinuity,
    DepthSnapshot,
    DepthUpdate,
    Level,
    Trade,
    classify_depth_update,
    depth_continuous,
    trade_gap,
)
from daemon.model.orders import (
    AccountBalance,
    AccountInfo,
    FillReport,
    NewOrder,
    OrderFill,
    OrderReport,
    OrderResponseType,
    OrderType,
    Side,
    TimeInForce,
    VenueOrderStatus,
    is_valid_client_order_id,
)

__all__ = [
    "AccountBalance",
    "AccountInfo",
    "DepthContinuity",
    "DepthSnapshot",
    "DepthUpdate",
    "ExchangeInfo",
    "FillReport",
    "Level",
    "NewOrder",
    "OrderFill",
    "OrderProblem",
    "OrderReport",
    "OrderResponseType",
    "OrderType",
    "RateLimitInterval",
    "RateLimitRule",
    "RateLimitType",
    "Side",
    "SymbolFilters",
    "SymbolInfo",
    "TimeInForce",
    "Trade",
    "VenueOrderStatus",
    "classify_depth_update",
    "depth_continuous",
    "is_valid_client_order_id",
    "trade_gap",
]
