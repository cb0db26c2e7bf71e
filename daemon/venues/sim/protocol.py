"""The Binance Spot wire conventions the simulator speaks, in one place.

This module is the simulator's own reading of the public Binance Spot API
documentation (REST ``/api/v3``, WebSocket market streams). It deliberately
shares no protocol code with the client in :mod:`daemon.venues.binance` (whose
sans-IO half, :mod:`daemon.venues.binance.codec`, serves only the client's
REST and stream shells): the point of the simulator is to prove the client
against the *protocol*, and a shared helper would let a misunderstanding on
one side cancel out on the other. What the simulator does share with the
daemon is protocol-neutral: the HTTP server (:mod:`daemon.http`), the JSON
decoder (:mod:`daemon.decode`) and the TOML schema (:mod:`daemon.tomlschema`),
plus one documented number table, the depth weight by ``limit``
(:func:`daemon.model.weights.depth_weight`, re-exported here), which is a
figure of the docs rather than a reading of the wire rules.

What lives here: the error codes and messages (``{"code": -2010, "msg": ...}``
with the HTTP status Binance uses for each), decimal parsing and formatting
(prices and quantities are decimal *strings* on the wire, never floats), and
the request weights of the endpoints the simulator serves.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from daemon.model.weights import depth_weight

__all__ = [
    "DECIMAL_RE",
    "INT_RE",
    "ApiError",
    "depth_weight",
    "fmt",
    "parse_decimal",
]

#: What Binance accepts for a DECIMAL parameter (the ``legal range`` it quotes in -1100).
DECIMAL_RE: Final = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
#: What Binance accepts for a LONG/INT parameter.
INT_RE: Final = re.compile(r"^[0-9]{1,20}$")
#: Legal client order ids (Binance quotes this pattern in its -1100 message).
CLIENT_ORDER_ID_RE: Final = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
#: Decimals printed for prices, quantities and balances (``baseAssetPrecision`` 8).
WIRE_DECIMALS: Final = 8
#: Largest ``recvWindow`` Binance accepts, in milliseconds.
MAX_RECV_WINDOW_MS: Final = 60_000
#: ``recvWindow`` when the request does not send one.
DEFAULT_RECV_WINDOW_MS: Final = 5_000
#: A request may be at most this far ahead of the server clock (ms).
MAX_CLOCK_AHEAD_MS: Final = 1_000


class ApiError(Exception):
    """A Binance error answer: ``{"code": code, "msg": msg}`` with HTTP ``status``.

    Raised anywhere below the REST routes and turned into the response once, at
    the edge (:mod:`daemon.venues.sim.rest`). It is not a
    :class:`~daemon.errors.TradingdError`: it is the simulator *answering* a
    client, not the daemon failing. ``headers`` carry ``Retry-After`` for 429/418.
    """

    def __init__(
        self,
        code: int,
        msg: str,
        status: int = 400,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON error body, exactly Binance's shape."""
        return {"code": self.code, "msg": self.msg}


# ----------------------------------------------------------------------------- error catalogue
# Codes and messages as published in Binance's errors.md; statuses as the REST API answers them.

UNKNOWN: Final = -1000
DISCONNECTED: Final = -1001
TOO_MANY_REQUESTS: Final = -1003
TIMEOUT: Final = -1007
INVALID_MESSAGE: Final = -1013
TOO_MANY_ORDERS: Final = -1015
INVALID_TIMESTAMP: Final = -1021
INVALID_SIGNATURE: Final = -1022
ILLEGAL_CHARS: Final = -1100
TOO_MANY_PARAMETERS: Final = -1101
MANDATORY_PARAM: Final = -1102
UNREAD_PARAMETERS: Final = -1104
PARAM_EMPTY: Final = -1105
PARAM_NOT_REQUIRED: Final = -1106
BAD_PRECISION: Final = -1111
INVALID_TIF: Final = -1115
INVALID_ORDER_TYPE: Final = -1116
INVALID_SIDE: Final = -1117
BAD_SYMBOL: Final = -1121
INVALID_PARAMETER: Final = -1130
NEW_ORDER_REJECTED: Final = -2010
CANCEL_REJECTED: Final = -2011
NO_SUCH_ORDER: Final = -2013
BAD_API_KEY_FMT: Final = -2014
REJECTED_MBX_KEY: Final = -2015

MSG_TIMEOUT: Final = (
    "Timeout waiting for response from backend server. Send status unknown; "
    "execution status unknown."
)
MSG_INSUFFICIENT_BALANCE: Final = "Account has insufficient balance for requested action."
MSG_DUPLICATE_ORDER: Final = "Duplicate order sent."
MSG_UNKNOWN_ORDER: Final = "Unknown order sent."
MSG_NO_SUCH_ORDER: Final = "Order does not exist."
MSG_WOULD_TAKE: Final = "Order would immediately match and take."
MSG_BAD_SIGNATURE: Final = "Signature for this request is not valid."
MSG_OUTSIDE_RECV_WINDOW: Final = "Timestamp for this request is outside of the recvWindow."
MSG_AHEAD_OF_SERVER: Final = "Timestamp for this request was 1000ms ahead of the server's time."
MSG_BAD_KEY_FORMAT: Final = "API-key format invalid."
MSG_REJECTED_KEY: Final = "Invalid API-key, IP, or permissions for action."
MSG_INVALID_SYMBOL: Final = "Invalid symbol."
MSG_UNKNOWN_5XX: Final = "Unknown error, please check your request or try again later."


def mandatory(name: str) -> ApiError:
    """-1102 for a missing, empty or malformed mandatory parameter."""
    return ApiError(
        MANDATORY_PARAM,
        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
    )


def either_mandatory(first: str, second: str) -> ApiError:
    """-1102 when one of two parameters must be sent and neither was."""
    return ApiError(
        MANDATORY_PARAM, f"Param '{first}' or '{second}' must be sent, but both were empty/null!"
    )


def not_required(name: str) -> ApiError:
    """-1106 for a parameter the order type does not take."""
    return ApiError(PARAM_NOT_REQUIRED, f"Parameter '{name}' sent when not required.")


def illegal_chars(name: str, legal: str) -> ApiError:
    """-1100 for a value outside the parameter's legal pattern."""
    return ApiError(
        ILLEGAL_CHARS, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    )


def filter_failure(filter_type: str) -> ApiError:
    """-1013 ``Filter failure: <FILTER>``: the request did not reach the matching engine."""
    return ApiError(INVALID_MESSAGE, f"Filter failure: {filter_type}")


def order_rejected(msg: str) -> ApiError:
    """-2010 NEW_ORDER_REJECTED with the matching engine's message."""
    return ApiError(NEW_ORDER_REJECTED, msg)


# ----------------------------------------------------------------------------- decimals


def parse_decimal(name: str, raw: str) -> Decimal:
    """Parse a DECIMAL parameter the way Binance validates it (no sign, no exponent).

    Raises:
        ApiError: -1100 with Binance's legal-range pattern.
    """
    if not DECIMAL_RE.fullmatch(raw):
        raise illegal_chars(name, DECIMAL_RE.pattern)
    try:
        return Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the pattern already guarantees it
        raise illegal_chars(name, DECIMAL_RE.pattern) from None


def parse_int(name: str, raw: str) -> int:
    """Parse a LONG/INT parameter (digits only).

    Raises:
        ApiError: -1100 with the legal-range pattern.
    """
    if not INT_RE.fullmatch(raw):
        raise illegal_chars(name, INT_RE.pattern)
    return int(raw)


def fmt(value: Decimal, decimals: int = WIRE_DECIMALS) -> str:
    """Format a decimal the way Binance prints prices and quantities (``"4.00000100"``)."""
    return f"{value:.{decimals}f}"


def decimals_of(value: Decimal) -> int:
    """Number of digits after the decimal point that ``value`` was written with."""
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


# ----------------------------------------------------------------------------- weights

#: Request weight of each endpoint (method, path), as the current Binance docs list them.
WEIGHTS: Final[dict[tuple[str, str], int]] = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/trades"): 25,
    ("GET", "/api/v3/historicalTrades"): 25,
    ("POST", "/api/v3/order"): 1,
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
    ("GET", "/api/v3/account"): 20,
}
#: ``GET /api/v3/openOrders``: with and without ``symbol``.
OPEN_ORDERS_WEIGHT: Final = (6, 80)
#: ``GET /api/v3/myTrades``: without and with ``orderId``.
MY_TRADES_WEIGHT: Final = (20, 5)
#: Most levels ``GET /api/v3/depth`` returns; larger limits are truncated.
MAX_DEPTH_LIMIT: Final = 5000


#: Interval names of ``rateLimits`` and the letter used in ``X-MBX-*`` header names.
INTERVAL_LETTERS: Final[dict[str, str]] = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}
#: Milliseconds in one unit of each interval.
INTERVAL_MS: Final[dict[str, int]] = {
    "SECOND": 1_000,
    "MINUTE": 60_000,
    "HOUR": 3_600_000,
    "DAY": 86_400_000,
}
