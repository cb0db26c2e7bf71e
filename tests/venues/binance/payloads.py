"""Answer and frame shapes from Binance's Spot API documentation (shared by the tests)."""

from __future__ import annotations

import json
from typing import Any

# The worked signing example of the Binance Spot REST API docs ("SIGNED Endpoint Examples").
DOC_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
#: Example 1/2 (all parameters in the query string, or all in the body).
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
#: Example 3 (mixed): query "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC",
#: body "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559".
DOC_MIXED_QUERY = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
DOC_MIXED_BODY = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
DOC_MIXED_SIGNATURE = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"

SERVER_TIME: dict[str, Any] = {"serverTime": 1499827319559}

EXCHANGE_INFO: dict[str, Any] = {
    "timezone": "UTC",
    "serverTime": 1565246363776,
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ],
    "exchangeFilters": [],
    "symbols": [
        {
            "symbol": "ETHBTC",
            "status": "TRADING",
            "baseAsset": "ETH",
            "baseAssetPrecision": 8,
            "quoteAsset": "BTC",
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.00000100",
                    "maxPrice": "100000.00000000",
                    "tickSize": "0.00000100",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00100000",
                    "maxQty": "100000.00000000",
                    "stepSize": "0.00100000",
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": "1000.00000000",
                    "stepSize": "0.00000000",
                },
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10},
                {
                    "filterType": "PERCENT_PRICE_BY_SIDE",
                    "bidMultiplierUp": "5",
                    "bidMultiplierDown": "0.2",
                    "askMultiplierUp": "5",
                    "askMultiplierDown": "0.2",
                    "avgPriceMins": 5,
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "0.00010000",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT", "MARGIN"]],
            "defaultSelfTradePreventionMode": "NONE",
            "allowedSelfTradePreventionModes": ["NONE"],
        },
        {
            "symbol": "BNBBTC",
            "status": "HALT",
            "baseAsset": "BNB",
            "quoteAsset": "BTC",
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0",
                    "maxPrice": "0",
                    "tickSize": "0.0000001",
                },
                {"filterType": "MIN_NOTIONAL", "minNotional": "0.001", "applyToMarket": False},
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": "1.3000",
                    "multiplierDown": "0",
                    "avgPriceMins": 0,
                },
            ],
        },
    ],
}

DEPTH: dict[str, Any] = {
    "lastUpdateId": 1027024,
    "bids": [["4.00000000", "431.00000000"]],
    "asks": [["4.00000200", "12.00000000"]],
}

TRADES: list[dict[str, Any]] = [
    {
        "id": 28457,
        "price": "4.00000100",
        "qty": "12.00000000",
        "quoteQty": "48.000012",
        "time": 1499865549590,
        "isBuyerMaker": True,
        "isBestMatch": True,
    }
]

ORDER_ACK: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "orderId": 28,
    "orderListId": -1,
    "clientOrderId": "6gCrw2kRUAF9CvJDGP16IP",
    "transactTime": 1507725176595,
}

ORDER_RESULT: dict[str, Any] = {
    **ORDER_ACK,
    "price": "0.00000000",
    "origQty": "10.00000000",
    "executedQty": "10.00000000",
    "origQuoteOrderQty": "0.000000",
    "cummulativeQuoteQty": "10.00000000",
    "status": "FILLED",
    "timeInForce": "GTC",
    "type": "MARKET",
    "side": "SELL",
    "workingTime": 1507725176595,
    "selfTradePreventionMode": "NONE",
}

ORDER_FULL: dict[str, Any] = {
    **ORDER_RESULT,
    "fills": [
        {
            "price": "4000.00000000",
            "qty": "1.00000000",
            "commission": "4.00000000",
            "commissionAsset": "USDT",
            "tradeId": 56,
        },
        {
            "price": "3999.00000000",
            "qty": "5.00000000",
            "commission": "19.99500000",
            "commissionAsset": "USDT",
            "tradeId": 57,
        },
    ],
}

QUERY_ORDER: dict[str, Any] = {
    "symbol": "LTCBTC",
    "orderId": 1,
    "orderListId": -1,
    "clientOrderId": "myOrder1",
    "price": "0.1",
    "origQty": "1.0",
    "executedQty": "0.0",
    "cummulativeQuoteQty": "0.0",
    "status": "NEW",
    "timeInForce": "GTC",
    "type": "LIMIT",
    "side": "BUY",
    "stopPrice": "0.0",
    "icebergQty": "0.0",
    "time": 1499827319559,
    "updateTime": 1499827319559,
    "isWorking": True,
    "workingTime": 1499827319559,
    "origQuoteOrderQty": "0.000000",
    "selfTradePreventionMode": "NONE",
}

CANCEL_ORDER: dict[str, Any] = {
    "symbol": "LTCBTC",
    "origClientOrderId": "myOrder1",
    "orderId": 4,
    "orderListId": -1,
    "clientOrderId": "cancelMyOrder1",
    "transactTime": 1684804350068,
    "price": "2.00000000",
    "origQty": "1.00000000",
    "executedQty": "0.00000000",
    "cummulativeQuoteQty": "0.00000000",
    "status": "CANCELED",
    "timeInForce": "GTC",
    "type": "LIMIT",
    "side": "BUY",
    "selfTradePreventionMode": "NONE",
}

MY_TRADES: list[dict[str, Any]] = [
    {
        "symbol": "BNBBTC",
        "id": 28457,
        "orderId": 100234,
        "orderListId": -1,
        "price": "4.00000100",
        "qty": "12.00000000",
        "quoteQty": "48.000012",
        "commission": "10.10000000",
        "commissionAsset": "BNB",
        "time": 1499865549590,
        "isBuyer": True,
        "isMaker": False,
        "isBestMatch": True,
    }
]

ACCOUNT: dict[str, Any] = {
    "makerCommission": 15,
    "takerCommission": 15,
    "buyerCommission": 0,
    "sellerCommission": 0,
    "commissionRates": {"maker": "0.00150000", "taker": "0.00150000", "buyer": "0", "seller": "0"},
    "canTrade": True,
    "canWithdraw": True,
    "canDeposit": True,
    "brokered": False,
    "requireSelfTradePrevention": False,
    "preventSor": False,
    "updateTime": 123456789,
    "accountType": "SPOT",
    "balances": [
        {"asset": "BTC", "free": "4723846.89208129", "locked": "0.00000000"},
        {"asset": "LTC", "free": "4763368.68006011", "locked": "0.00000000"},
    ],
    "permissions": ["SPOT"],
    "uid": 354937868,
}

TRADE_EVENT: dict[str, Any] = {
    "e": "trade",
    "E": 1672515782136,
    "s": "BNBBTC",
    "t": 12345,
    "p": "0.001",
    "q": "100",
    "T": 1672515782136,
    "m": True,
    "M": True,
}

DEPTH_EVENT: dict[str, Any] = {
    "e": "depthUpdate",
    "E": 1672515782136,
    "s": "BNBBTC",
    "U": 157,
    "u": 160,
    "b": [["0.0024", "10"]],
    "a": [["0.0026", "100"]],
}


def dumps(obj: Any) -> bytes:
    """JSON bytes as a server would send them."""
    return json.dumps(obj, separators=(",", ":")).encode()
