"""Error answers: the venue's ``{"code", "msg"}`` and status → the project's exception tree.

:func:`error_from_response` reads a REST error answer (HTTP status, body,
``Retry-After``); :func:`error_from_code` is the map itself, from a status,
a code and a message already read, so that a WebSocket API codec (whose
error frames carry ``status`` and ``{"code", "msg"}`` in the frame) maps its
errors the same way. :func:`parse_error_body` never raises: an error body
that cannot be read is text, and the status alone decides the error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from daemon.decode import DecodeError, json_loads
from daemon.errors import (
    ApiKeyRejectedError,
    CancelRejectedError,
    DuplicateOrderError,
    FilterFailureError,
    ForbiddenError,
    OrderNotFoundError,
    OrderRejectedError,
    SignatureError,
    TimestampOutOfWindowError,
    VenueError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRejectedError,
    VenueUnavailableError,
)
from daemon.venues.binance.codec.decoding import (
    INT64_MAX,
    INT64_MIN,
    MAX_BODY_BYTES,
    MAX_BODY_DEPTH,
    clean,
)
from daemon.venues.binance.codec.ratelimits import find_header, read_retry_after

__all__ = [
    "DUPLICATE_ORDER_MESSAGE",
    "error_from_code",
    "error_from_response",
    "is_rate_limited",
    "parse_error_body",
]

#: Codes meaning "not processed, try again later".
_OVERLOAD_CODES = frozenset({-1001, -1008})
#: Codes meaning "sent, status unknown".
_UNKNOWN_CODES = frozenset({-1000, -1006, -1007})
#: Codes meaning "rate limited" (like HTTP 429).
_RATE_LIMIT_CODES = frozenset({-1003, -1015})
#: The -2010 message of a client order id that is already an open order's.
DUPLICATE_ORDER_MESSAGE = "Duplicate order sent."
_FILTER_FAILURE = re.compile(r"Filter failure:\s*([A-Z_]+)")


def parse_error_body(body: bytes | str) -> tuple[int | None, str | None]:
    """``(code, msg)`` of a Binance error body, or ``(None, text)`` when it is not one.

    Non-JSON bodies (a WAF's HTML page) give their first characters as the
    message, whitespace collapsed. Never raises: a body that cannot be decoded
    (deep nesting, huge numbers, bad UTF-8, a code beyond 64 bits) is read as
    text, so the HTTP status alone decides the error.
    """
    try:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    except Exception:
        return None, None
    try:
        obj = json_loads(
            text, what="error body", max_bytes=MAX_BODY_BYTES, max_depth=MAX_BODY_DEPTH
        )
    except DecodeError:
        return None, (clean(text) or None)
    if isinstance(obj, dict):
        code = obj.get("code")
        msg = obj.get("msg")
        code_ok = (
            isinstance(code, int) and not isinstance(code, bool) and INT64_MIN <= code <= INT64_MAX
        )
        return (
            code if code_ok else None,
            clean(msg) if isinstance(msg, str) else None,
        )
    return None, clean(text) or None


def error_from_response(
    status: int,
    body: bytes | str,
    headers: Iterable[tuple[str, str]],
    *,
    venue: str,
    endpoint: str,
    mutating: bool,
    now: dt.datetime | None = None,
) -> VenueError:
    """Map an error answer to the exception tree, keeping the venue's code and message.

    ==============================================  =====================================
    answer                                          exception
    ==============================================  =====================================
    HTTP 429 / 418, or code -1003 / -1015           :class:`VenueRateLimitedError`
                                                    (``Retry-After`` in ``retry_after_s``;
                                                    ``banned`` for 418)
    -1000 / -1006 / -1007, or HTTP 5xx              order request (``mutating``):
                                                    :class:`VenueOutcomeUnknownError`;
                                                    query: :class:`VenueUnavailableError`
    HTTP 403                                        :class:`ForbiddenError` (WAF)
    -1001 / -1008 (overload, not processed)         :class:`VenueUnavailableError`
    -2010 "Duplicate order sent."                   :class:`DuplicateOrderError`
    -1013, -2010 "Filter failure: X"                :class:`FilterFailureError`
    -2010                                           :class:`OrderRejectedError`
    -2013                                           :class:`OrderNotFoundError`
    -2011                                           :class:`CancelRejectedError`
    -1021                                           :class:`TimestampOutOfWindowError`
    -1022                                           :class:`SignatureError`
    -2014 / -2015                                   :class:`ApiKeyRejectedError`
    anything else                                   :class:`VenueRejectedError`
    ==============================================  =====================================

    A 5xx is checked before the code: Binance says the execution status of a
    5xx is unknown whatever the body, and for an order that means "may exist".

    Args:
        status: HTTP status (>= 400 expected).
        body: The answer's body.
        headers: The answer's headers (``Retry-After`` is read: capped at
            :data:`.ratelimits.MAX_RETRY_AFTER_S`, ignored when it cannot be parsed).
        venue: Venue name for the error.
        endpoint: ``"POST /api/v3/order"`` (no query string: it holds the signature).
        mutating: Whether the request could change state (POST/DELETE).
        now: Wall clock for an HTTP-date ``Retry-After`` (UTC now by default).
    """
    code, msg = parse_error_body(body)
    retry_after: float | None = None
    if is_rate_limited(status, code):
        retry_after = read_retry_after(
            find_header(headers, "Retry-After"), now or dt.datetime.now(dt.UTC)
        )
    return error_from_code(
        status,
        code,
        msg,
        venue=venue,
        endpoint=endpoint,
        mutating=mutating,
        retry_after_s=retry_after,
    )


def is_rate_limited(status: int, code: int | None) -> bool:
    """Whether an error answer says "rate limited" (HTTP 429 or 418, code -1003 or -1015)."""
    return status in (429, 418) or code in _RATE_LIMIT_CODES


def error_from_code(
    status: int,
    code: int | None,
    msg: str | None,
    *,
    venue: str,
    endpoint: str,
    mutating: bool,
    retry_after_s: float | None = None,
) -> VenueError:
    """The map of :func:`error_from_response`, from a status, code and message already read.

    Args:
        status: HTTP status, or the status of a WebSocket API error frame.
        code: The venue's error code, ``None`` when the answer had none.
        msg: The venue's message, already cleaned (as :func:`parse_error_body` does).
        venue: Venue name for the error.
        endpoint: What was called, without parameters (``"POST /api/v3/order"``).
        mutating: Whether the request could change state.
        retry_after_s: How long a rate-limited caller must wait, when the venue
            said (already capped: :func:`.ratelimits.read_retry_after`).
    """
    fields: dict[str, Any] = {
        "venue": venue,
        "code": code,
        "venue_message": msg,
        "http_status": status,
        "endpoint": endpoint,
    }
    detail = f"HTTP {status}" + (f", code {code}" if code is not None else "")
    if msg:
        detail += f": {msg}"

    def text(summary: str) -> str:
        return f"{venue} {endpoint}: {summary} ({detail})"

    if is_rate_limited(status, code):
        banned = status == 418
        summary = "IP banned for exceeding rate limits" if banned else "rate limited"
        if retry_after_s is not None:
            summary += f", retry after {retry_after_s:g}s"
        return VenueRateLimitedError(
            text(summary), retry_after_s=retry_after_s, banned=banned, **fields
        )
    if status >= 500 or code in _UNKNOWN_CODES:
        if mutating:
            return VenueOutcomeUnknownError(
                text("outcome unknown, the request may have taken effect"), **fields
            )
        return VenueUnavailableError(text("venue error"), **fields)
    if status == 403:
        return ForbiddenError(text("forbidden by the venue's firewall"), **fields)
    if code in _OVERLOAD_CODES:
        return VenueUnavailableError(text("venue overloaded, not processed"), **fields)
    if code == -2010:
        if msg is not None and msg.strip().lower() == DUPLICATE_ORDER_MESSAGE.lower():
            return DuplicateOrderError(text("duplicate client order id of an open order"), **fields)
        match = _FILTER_FAILURE.search(msg or "")
        if match is not None:
            return FilterFailureError(
                text("order failed a filter"), filter_type=match.group(1), **fields
            )
        return OrderRejectedError(text("new order rejected"), **fields)
    if code == -1013:
        match = _FILTER_FAILURE.search(msg or "")
        return FilterFailureError(
            text("order failed a filter"),
            filter_type=match.group(1) if match else None,
            **fields,
        )
    if code == -2013:
        return OrderNotFoundError(text("order does not exist"), **fields)
    if code == -2011:
        return CancelRejectedError(text("cancel rejected"), **fields)
    if code == -1021:
        return TimestampOutOfWindowError(text("timestamp outside recvWindow"), **fields)
    if code == -1022:
        return SignatureError(text("signature rejected"), **fields)
    if code in (-2014, -2015):
        return ApiKeyRejectedError(text("API key rejected"), **fields)
    return VenueRejectedError(text("request rejected"), **fields)
