"""WebSocket API shapes from Binance's docs (``web-socket-api.md``, ``user-data-stream.md``)."""

from __future__ import annotations

from typing import Any

# "SIGNED request example (HMAC)" of web-socket-api.md.
DOC_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_TIMESTAMP = 1645423376532
#: The ASCII example: its parameters, payload and signature.
DOC_ASCII_PARAMS: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "side": "SELL",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.01000000",
    "price": "52000.00",
    "recvWindow": 100,
    "timestamp": DOC_TIMESTAMP,
    "apiKey": DOC_API_KEY,
}
DOC_ASCII_PAYLOAD = (
    "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price=52000.00"
    "&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT&timeInForce=GTC"
    "&timestamp=1645423376532&type=LIMIT"
)
DOC_ASCII_SIGNATURE = "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
#: The non-ASCII example (full-width digits as the symbol).
DOC_UNICODE_SYMBOL = "\uff11\uff12\uff13\uff14\uff15\uff16"
DOC_UNICODE_PARAMS: dict[str, Any] = {
    "symbol": DOC_UNICODE_SYMBOL,
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "1.00000000",
    "price": "0.10000000",
    "recvWindow": 5000,
    "timestamp": DOC_TIMESTAMP,
    "apiKey": DOC_API_KEY,
}
DOC_UNICODE_PAYLOAD = (
    "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price=0.10000000"
    f"&quantity=1.00000000&recvWindow=5000&side=BUY&symbol={DOC_UNICODE_SYMBOL}"
    "&timeInForce=GTC&timestamp=1645423376532&type=LIMIT"
)
DOC_UNICODE_SIGNATURE = "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"

RATE_LIMITS: list[dict[str, Any]] = [
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50, "count": 12},
    {
        "rateLimitType": "ORDERS",
        "interval": "DAY",
        "intervalNum": 1,
        "limit": 160000,
        "count": 4043,
    },
    {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
        "count": 321,
    },
]

#: "Response format": a successful order.place (RESULT).
PLACE_RESULT: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "orderId": 12510053279,
    "orderListId": -1,
    "clientOrderId": "a097fe6304b20a7e4fc436",
    "transactTime": 1655716096505,
    "price": "0.10000000",
    "origQty": "10.00000000",
    "executedQty": "0.00000000",
    "origQuoteOrderQty": "0.000000",
    "cummulativeQuoteQty": "0.00000000",
    "status": "NEW",
    "timeInForce": "GTC",
    "type": "LIMIT",
    "side": "BUY",
    "workingTime": 1655716096505,
    "selfTradePreventionMode": "NONE",
}
PLACE_ANSWER: dict[str, Any] = {
    "id": "e2a85d9f-07a5-4f94-8d5f-789dc3deb097",
    "status": 200,
    "result": PLACE_RESULT,
    "rateLimits": RATE_LIMITS,
}
#: "Response format": a failed one.
FAILED_ANSWER: dict[str, Any] = {
    "id": "e2a85d9f-07a5-4f94-8d5f-789dc3deb097",
    "status": 400,
    "error": {"code": -2010, "msg": "Account has insufficient balance for requested action."},
    "rateLimits": RATE_LIMITS,
}
#: "IP limits": banned until 1659146400000.
BANNED_ANSWER: dict[str, Any] = {
    "id": "fc93a61a-a192-4cf4-bb2a-a8f0f0c51e06",
    "status": 418,
    "error": {
        "code": -1003,
        "msg": "Way too much request weight used; IP banned until 1659146400000. Please use "
        "WebSocket Streams for live updates to avoid bans.",
        "data": {"serverTime": 1659142907531, "retryAfter": 1659146400000},
    },
    "rateLimits": [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": 6000,
            "count": 2411,
        }
    ],
}
#: "Cancel order (TRADE)": an individual order canceled.
CANCEL_RESULT: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "origClientOrderId": "4d96324ff9d44481926157",
    "orderId": 12569099453,
    "orderListId": -1,
    "clientOrderId": "91fe37ce9e69c90d6358c0",
    "transactTime": 1684804350068,
    "price": "23416.10000000",
    "origQty": "0.00847000",
    "executedQty": "0.00001000",
    "origQuoteOrderQty": "0.000000",
    "cummulativeQuoteQty": "0.23416100",
    "status": "CANCELED",
    "timeInForce": "GTC",
    "type": "LIMIT",
    "side": "SELL",
    "stopPrice": "0.00000000",
    "trailingDelta": 0,
    "icebergQty": "0.00000000",
    "strategyId": 37463720,
    "strategyType": 1000000,
    "selfTradePreventionMode": "NONE",
}
#: "Account trade history (USER_DATA)".
MY_TRADES_RESULT: list[dict[str, Any]] = [
    {
        "symbol": "BTCUSDT",
        "id": 1650422481,
        "orderId": 12569099453,
        "orderListId": -1,
        "price": "23416.10000000",
        "qty": "0.00635000",
        "quoteQty": "148.69223500",
        "commission": "0.00000000",
        "commissionAsset": "BNB",
        "time": 1660801715793,
        "isBuyer": False,
        "isMaker": True,
        "isBestMatch": True,
    },
    {
        "symbol": "BTCUSDT",
        "id": 1650422482,
        "orderId": 12569099453,
        "orderListId": -1,
        "price": "23416.50000000",
        "qty": "0.00212000",
        "quoteQty": "49.64298000",
        "commission": "0.00000000",
        "commissionAsset": "BNB",
        "time": 1660801715793,
        "isBuyer": False,
        "isMaker": True,
        "isBestMatch": True,
    },
]

# user-data-stream.md
ACCOUNT_POSITION: dict[str, Any] = {
    "e": "outboundAccountPosition",
    "E": 1564034571105,
    "u": 1564034571073,
    "B": [{"a": "ETH", "f": "10000.000000", "l": "0.000000"}],
}
BALANCE_UPDATE: dict[str, Any] = {
    "e": "balanceUpdate",
    "E": 1573200697110,
    "a": "BTC",
    "d": "100.00000000",
    "T": 1573200697068,
}
EXECUTION_REPORT: dict[str, Any] = {
    "e": "executionReport",
    "E": 1499405658658,
    "s": "ETHBTC",
    "c": "mUvoqJxFIILMdfAW5iGSOW",
    "S": "BUY",
    "o": "LIMIT",
    "f": "GTC",
    "q": "1.00000000",
    "p": "0.10264410",
    "P": "0.00000000",
    "F": "0.00000000",
    "g": -1,
    "C": "",
    "x": "NEW",
    "X": "NEW",
    "r": "NONE",
    "i": 4293153,
    "l": "0.00000000",
    "z": "0.00000000",
    "L": "0.00000000",
    "n": "0",
    "N": None,
    "T": 1499405658657,
    "t": -1,
    "v": 3,
    "I": 8641984,
    "w": True,
    "m": False,
    "M": False,
    "O": 1499405658657,
    "Z": "0.00000000",
    "Y": "0.00000000",
    "Q": "0.00000000",
    "W": 1499405658657,
    "V": "NONE",
}
TERMINATED: dict[str, Any] = {"e": "eventStreamTerminated", "E": 1728973001334}
LIST_STATUS: dict[str, Any] = {
    "e": "listStatus",
    "E": 1564035303637,
    "s": "ETHBTC",
    "g": 2,
    "c": "OCO",
    "l": "EXEC_STARTED",
    "L": "EXECUTING",
    "r": "NONE",
    "C": "F4QN4G8DlFATFlIUQ0cjdD",
    "T": 1564035303625,
    "O": [
        {"s": "ETHBTC", "i": 17, "c": "AJYsMjErWJesZvqlJCTUgL"},
        {"s": "ETHBTC", "i": 18, "c": "bfYPSQdLoqAJeNrOr9adzq"},
    ],
}
EXTERNAL_LOCK: dict[str, Any] = {
    "e": "externalLockUpdate",
    "E": 1581557507324,
    "a": "NEO",
    "d": "10.00000000",
    "T": 1581557507268,
}


def trade_report(**changes: Any) -> dict[str, Any]:
    """An executionReport of a partial fill of EXECUTION_REPORT's order."""
    return {
        **EXECUTION_REPORT,
        "x": "TRADE",
        "X": "PARTIALLY_FILLED",
        "l": "0.40000000",
        "z": "0.40000000",
        "L": "0.10264410",
        "n": "0.00000040",
        "N": "ETH",
        "t": 5501,
        "I": 8641985,
        "m": True,
        "Z": "0.04105764",
        "Y": "0.04105764",
        **changes,
    }


def cancel_report(**changes: Any) -> dict[str, Any]:
    """An executionReport of EXECUTION_REPORT's order canceled by a request named ``cancel-1``."""
    return {
        **EXECUTION_REPORT,
        "x": "CANCELED",
        "X": "CANCELED",
        "c": "cancel-1",
        "C": EXECUTION_REPORT["c"],
        "w": False,
        **changes,
    }


def wrapped(event: dict[str, Any], subscription_id: int | None = 0) -> dict[str, Any]:
    """An event as the WebSocket API delivers it."""
    if subscription_id is None:
        return {"event": event}
    return {"subscriptionId": subscription_id, "event": event}
