"""The JSON shapes of the simulator's answers, as Binance's REST API writes them.

Transport-neutral: a dict (or list) per answer, encoded by the transport. Prices,
quantities and balances are decimal strings with
:data:`~daemon.venues.sim.protocol.WIRE_DECIMALS` places.

* :func:`symbol_info` — one symbol of ``exchangeInfo`` (filters included);
* :func:`trade_json`, :func:`account_trade_json` — a public trade, an account's trade;
* :func:`order_json` — an order as a query (or, ``cancel=True``, a cancel) answers it;
* :func:`new_order_json` — the answer to a new order (``ACK``, ``RESULT``, ``FULL``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from daemon.venues.sim import protocol as p
from daemon.venues.sim.config import PercentPriceBySideConfig, SymbolConfig
from daemon.venues.sim.orderbook import AccountTrade, Order, Trade
from daemon.venues.sim.protocol import fmt

__all__ = [
    "account_trade_json",
    "new_order_json",
    "order_json",
    "percent_price_by_side",
    "symbol_info",
    "trade_json",
]


def symbol_info(s: SymbolConfig) -> dict[str, Any]:
    """One entry of ``exchangeInfo``'s ``symbols``."""
    return {
        "symbol": s.symbol,
        "status": "TRADING",
        "baseAsset": s.base_asset,
        "baseAssetPrecision": p.WIRE_DECIMALS,
        "quoteAsset": s.quote_asset,
        "quotePrecision": p.WIRE_DECIMALS,
        "quoteAssetPrecision": p.WIRE_DECIMALS,
        "baseCommissionPrecision": p.WIRE_DECIMALS,
        "quoteCommissionPrecision": p.WIRE_DECIMALS,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(s.min_price),
                "maxPrice": fmt(s.max_price),
                "tickSize": fmt(s.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(s.min_qty),
                "maxQty": fmt(s.max_qty),
                "stepSize": fmt(s.step_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(s.min_notional),
                "applyMinToMarket": s.apply_min_to_market,
                "maxNotional": fmt(s.max_notional),
                "applyMaxToMarket": s.apply_max_to_market,
                "avgPriceMins": s.avg_price_mins,
            },
            percent_price_by_side(s.percent_price_by_side),
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }


def percent_price_by_side(band: PercentPriceBySideConfig) -> dict[str, Any]:
    """The filter as Binance writes it: plain decimal strings, a disabled bound as "0"."""
    return {
        "filterType": "PERCENT_PRICE_BY_SIDE",
        "bidMultiplierUp": f"{band.bid_multiplier_up:f}",
        "bidMultiplierDown": f"{band.bid_multiplier_down:f}",
        "askMultiplierUp": f"{band.ask_multiplier_up:f}",
        "askMultiplierDown": f"{band.ask_multiplier_down:f}",
        "avgPriceMins": band.avg_price_mins,
    }


def trade_json(t: Trade) -> dict[str, Any]:
    """A public trade (``trades``, ``historicalTrades``, ``/sim/trades``)."""
    return {
        "id": t.id,
        "price": fmt(t.price),
        "qty": fmt(t.qty),
        "quoteQty": fmt(t.quote_qty),
        "time": t.time_ms,
        "isBuyerMaker": t.buyer_is_maker,
        "isBestMatch": True,
    }


def account_trade_json(t: AccountTrade) -> dict[str, Any]:
    """One of an account's trades (``myTrades``)."""
    return {
        "symbol": t.symbol,
        "id": t.id,
        "orderId": t.order_id,
        "orderListId": -1,
        "price": fmt(t.price),
        "qty": fmt(t.qty),
        "quoteQty": fmt(t.quote_qty),
        "commission": fmt(t.commission),
        "commissionAsset": t.commission_asset,
        "time": t.time_ms,
        "isBuyer": t.is_buyer,
        "isMaker": t.is_maker,
        "isBestMatch": True,
    }


def order_json(o: Order, *, cancel: bool = False) -> dict[str, Any]:
    """An order as a query answers it; ``cancel``: the fields a cancel answers with."""
    body: dict[str, Any] = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "price": fmt(o.price),
        "origQty": fmt(o.orig_qty),
        "executedQty": fmt(o.executed_qty),
        "cummulativeQuoteQty": fmt(o.cumm_quote_qty),
        "status": o.status,
        "timeInForce": o.time_in_force,
        "type": o.type,
        "side": o.side,
    }
    if cancel:
        body["origQuoteOrderQty"] = fmt(o.orig_quote_order_qty)
        body["selfTradePreventionMode"] = "NONE"
        return body
    body.update(
        {
            "stopPrice": fmt(Decimal(0)),
            "icebergQty": fmt(Decimal(0)),
            "time": o.time_ms,
            "updateTime": o.update_time_ms,
            "isWorking": True,
            "workingTime": o.time_ms,
            "origQuoteOrderQty": fmt(o.orig_quote_order_qty),
            "selfTradePreventionMode": "NONE",
        }
    )
    return body


def new_order_json(o: Order, resp_type: str, now_ms: int) -> dict[str, Any]:
    """The answer to a new order in ``resp_type`` (``ACK``, ``RESULT`` or ``FULL``)."""
    body: dict[str, Any] = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "transactTime": now_ms,
    }
    if resp_type == "ACK":
        return body
    body.update(
        {
            "price": fmt(o.price),
            "origQty": fmt(o.orig_qty),
            "executedQty": fmt(o.executed_qty),
            "origQuoteOrderQty": fmt(o.orig_quote_order_qty),
            "cummulativeQuoteQty": fmt(o.cumm_quote_qty),
            "status": o.status,
            "timeInForce": o.time_in_force,
            "type": o.type,
            "side": o.side,
            "workingTime": o.time_ms,
            "selfTradePreventionMode": "NONE",
        }
    )
    if resp_type == "FULL":
        body["fills"] = [
            {
                "price": fmt(f.price),
                "qty": fmt(f.qty),
                "commission": fmt(f.commission),
                "commissionAsset": f.commission_asset,
                "tradeId": f.trade_id,
            }
            for f in o.fills
        ]
    return body
