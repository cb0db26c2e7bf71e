"""API keys, HMAC-SHA256 signatures and timing security, as Binance checks them.

For SIGNED (TRADE, USER_DATA) endpoints:

* the key comes in ``X-MBX-APIKEY``: missing or malformed → ``-2014 API-key
  format invalid.``, unknown → ``-2015 Invalid API-key, IP, or permissions for
  action.`` (both HTTP 401);
* ``signature`` is the hex HMAC-SHA256, keyed with the secret, of
  ``totalParams`` = the query string *concatenated* with the request body (no
  ``&`` between them), without the ``signature`` parameter itself; it is not
  case sensitive; a mismatch → ``-1022``;
* ``timestamp`` (ms) is mandatory and ``recvWindow`` defaults to 5000 (max
  60000): the request is valid when
  ``timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow``,
  else ``-1021``.

The query string is used exactly as received (``Request.raw_query``) with its
``signature`` parameter removed, and so is the body. Without a raw query (a
request built in a test), the query is rebuilt from the parsed parameters
with the usual encodings, which only matters outside ``[A-Za-z0-9._-]``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Final

from daemon.venues.sim import protocol as p
from daemon.venues.sim.accounts import Ledger
from daemon.venues.sim.protocol import ApiError

__all__ = [
    "check_api_key",
    "check_timestamp",
    "sign",
    "signature_payloads",
    "verify_signature",
]

_API_KEY_FORMAT: Final = re.compile(r"^[A-Za-z0-9]{1,100}$")
_HEX64: Final = re.compile(r"^[0-9a-fA-F]{64}$")
#: ``safe`` characters of the query encodings a client may plausibly have used.
_SAFE_SETS: Final = ("", "/", ":/", ":/@!$'()*,;=[]")


def sign(secret: bytes, payload: bytes) -> str:
    """Hex HMAC-SHA256 of ``payload`` keyed with ``secret`` (what a client sends)."""
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def check_api_key(header: str | None, ledger: Ledger) -> str:
    """Validate ``X-MBX-APIKEY``; returns the key.

    Raises:
        ApiError: -2014 missing/malformed, -2015 unknown (HTTP 401).
    """
    if header is None or not _API_KEY_FORMAT.fullmatch(header):
        raise ApiError(p.BAD_API_KEY_FMT, p.MSG_BAD_KEY_FORMAT, status=401)
    if not ledger.knows(header):
        raise ApiError(p.REJECTED_MBX_KEY, p.MSG_REJECTED_KEY, status=401)
    return header


def _strip_signature(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if k != "signature"]


def signature_payloads(
    query: Mapping[str, tuple[str, ...]], body: bytes, raw_query: str | None = None
) -> list[bytes]:
    """Candidate ``totalParams`` for a request: query string + raw body.

    Both keep their bytes; only their ``signature=…`` field is removed. With
    ``raw_query`` there is exactly one candidate.
    """
    queries: list[str] = []
    if raw_query:
        queries.append(
            "&".join(
                part for part in raw_query.split("&") if part and not part.startswith("signature=")
            )
        )
    else:
        pairs = _strip_signature([(k, v) for k, values in query.items() for v in values])
        for safe in _SAFE_SETS:
            for quote_via in (urllib.parse.quote_plus, urllib.parse.quote):
                encoded = urllib.parse.urlencode(pairs, safe=safe, quote_via=quote_via)
                if encoded not in queries:
                    queries.append(encoded)
    raw_body = b"&".join(
        part for part in body.split(b"&") if part and not part.startswith(b"signature=")
    )
    return [q.encode("ascii") + raw_body for q in queries]


def verify_signature(secret: bytes, payloads: list[bytes], signature: str) -> bool:
    """Whether ``signature`` (hex, any case) signs one of ``payloads`` with ``secret``."""
    if not _HEX64.fullmatch(signature):
        return False
    wanted = signature.lower()
    return any(hmac.compare_digest(sign(secret, payload), wanted) for payload in payloads)


def check_timestamp(timestamp: str | None, recv_window: str | None, server_ms: int) -> None:
    """Binance's timing security.

    Raises:
        ApiError: -1102 missing/malformed ``timestamp`` or ``recvWindow`` (> 60000),
            -1021 outside the window or more than 1 s ahead of the server.
    """
    if timestamp is None or not p.INT_RE.fullmatch(timestamp):
        raise p.mandatory("timestamp")
    ts = int(timestamp)
    window = Decimal(p.DEFAULT_RECV_WINDOW_MS)
    if recv_window is not None:
        # recvWindow may carry up to three decimals (microseconds).
        if not re.fullmatch(r"^[0-9]{1,20}(\.[0-9]{1,3})?$", recv_window):
            raise p.illegal_chars("recvWindow", r"^[0-9]{1,20}(\.[0-9]{1,3})?$")
        try:
            window = Decimal(recv_window)
        except InvalidOperation:  # pragma: no cover - the pattern guarantees it
            raise p.mandatory("recvWindow") from None
        if window > p.MAX_RECV_WINDOW_MS:
            raise ApiError(
                p.MANDATORY_PARAM,
                f"'recvWindow' contains unexpected value. Cannot be greater than "
                f"'{p.MAX_RECV_WINDOW_MS}'.",
            )
    if ts >= server_ms + p.MAX_CLOCK_AHEAD_MS:
        raise ApiError(p.INVALID_TIMESTAMP, p.MSG_AHEAD_OF_SERVER)
    if server_ms - ts > window:
        raise ApiError(p.INVALID_TIMESTAMP, p.MSG_OUTSIDE_RECV_WINDOW)
