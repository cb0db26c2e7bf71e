"""The WebSocket API's frames, sans I/O: requests in, answers out.

Everything :mod:`daemon.venues.sim.wsapi` needs to read one request frame and
write one answer, as ``web-socket-api.md`` specifies them:

* a request is one JSON object per text frame, ``{"id", "method", "params"}``;
  :func:`parse_request` decodes it with :func:`daemon.decode.json_loads`
  (size and depth limits, any decoding failure caught) and refuses, as an
  answer with ``"id": null`` and status 400, what Binance refuses before
  reading the request: a binary frame, malformed JSON, deep nesting, numbers
  beyond the int-string limit, a non-object (``-1135 Invalid JSON
  Request``) or an invalid ``id`` (``-1135``; an id is an integer, a string
  matching ``^[a-zA-Z0-9-_]{1,36}$``, or ``null``). A missing method answers
  ``-1102`` with the request's id;
* the method may carry a version prefix (``"v3/order.place"``);
* ``params`` values are JSON strings, numbers or booleans;
  :func:`param_strings` turns them into the strings a REST request would
  have carried (numbers exactly as written, booleans ``true``/``false``);
  anything else is ``-1135 JSON sent for parameter '…' is not valid``;
* :func:`signature_payload` is what a SIGNED request signs: every parameter
  but ``signature`` (``apiKey`` included), sorted by name, ``name=value``
  joined by ``&``, UTF-8, not URL-encoded;
* an answer is ``{"id", "status", "result" | "error", "rateLimits"}``;
  :func:`answer` builds it, :class:`RateLimitReport` turns the simulator's
  ``X-MBX-USED-WEIGHT-*``/``X-MBX-ORDER-COUNT-*`` values into ``rateLimits``
  (``ORDERS`` first, then ``REQUEST_WEIGHT``, as the docs show them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from daemon.decode import DecodeError, json_loads
from daemon.venues.sim import protocol as p
from daemon.venues.sim.config import RateLimitConfig
from daemon.venues.sim.protocol import ApiError

__all__ = [
    "INVALID_JSON",
    "BadFrame",
    "RateLimitReport",
    "Request",
    "RequestId",
    "answer",
    "dumps",
    "error_answer",
    "param_strings",
    "parse_request",
    "signature_payload",
]

#: -1135 INVALID_JSON.
INVALID_JSON: Final = -1135
#: Longest request frame read (an order is a few hundred bytes).
MAX_REQUEST_BYTES: Final = 64 * 1024
#: Deepest request accepted (``{"params": {...}}`` is 2).
MAX_REQUEST_DEPTH: Final = 4
_ID_RE: Final = re.compile(r"^[a-zA-Z0-9\-_]{1,36}$")
_MSG_BAD_ID: Final = (
    "Invalid 'id' in JSON request; expected an integer, a string matching "
    "'^[a-zA-Z0-9-_]{1,36}$', or null."
)
_INT64: Final = 2**63

RequestId = int | str | None


class _NumberText(str):
    """A JSON number with a fraction or exponent, kept as written (``"0.01"``, ``"1e5"``)."""


def dumps(obj: Any) -> str:
    """Compact JSON, as the answers are written."""
    return json.dumps(obj, separators=(",", ":"))


@attrs.frozen
class Request:
    """One decoded request: its id, its method (version prefix removed) and raw params."""

    id: RequestId
    method: str
    params: Mapping[str, Any]


class BadFrame(Exception):
    """A frame refused before its method is known; ``answer`` is what to send back."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer["error"]["msg"])
        self.answer = answer


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool | _NumberText):
        return False
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def parse_request(message: str | bytes) -> Request:
    """Decode one request frame.

    Raises:
        BadFrame: the frame is refused; its ``answer`` says why.
    """
    if not isinstance(message, str):
        raise BadFrame(error_answer(None, ApiError(INVALID_JSON, "Invalid JSON Request")))
    try:
        request = json_loads(
            message,
            what="request",
            max_bytes=MAX_REQUEST_BYTES,
            max_depth=MAX_REQUEST_DEPTH,
            parse_float=_NumberText,
        )
    except DecodeError:
        raise BadFrame(error_answer(None, ApiError(INVALID_JSON, "Invalid JSON Request"))) from None
    if not isinstance(request, dict):
        raise BadFrame(error_answer(None, ApiError(INVALID_JSON, "Invalid JSON Request")))
    request_id = request.get("id")
    if not _valid_id(request_id):
        raise BadFrame(error_answer(None, ApiError(INVALID_JSON, _MSG_BAD_ID)))
    method = request.get("method")
    if not isinstance(method, str) or not method or isinstance(method, _NumberText):
        raise BadFrame(error_answer(request_id, p.mandatory("method")))
    params = request.get("params", {})
    if not isinstance(params, dict):
        raise BadFrame(
            error_answer(
                request_id, ApiError(INVALID_JSON, "JSON sent for parameter 'params' is not valid")
            )
        )
    return Request(request_id, method.removeprefix("v3/"), params)


def param_strings(params: Mapping[str, Any]) -> dict[str, str]:
    """The parameters as a REST request would have carried them (strings).

    Raises:
        ApiError: -1135 for a value that is not a string, number or boolean.
    """
    out: dict[str, str] = {}
    for name, value in params.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, str | int):  # strings, integers, other numbers as written
            out[name] = str(value)
        else:
            raise ApiError(INVALID_JSON, f"JSON sent for parameter '{name}' is not valid")
    return out


def signature_payload(params: Mapping[str, str]) -> bytes:
    """What a SIGNED request signs: ``name=value`` of every parameter but ``signature``, sorted."""
    return "&".join(
        f"{name}={params[name]}" for name in sorted(params) if name != "signature"
    ).encode("utf-8")


def answer(
    request_id: RequestId, result: Any, rate_limits: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A successful answer (``rateLimits`` only when given)."""
    out: dict[str, Any] = {"id": request_id, "status": 200, "result": result}
    if rate_limits is not None:
        out["rateLimits"] = rate_limits
    return out


def error_answer(
    request_id: RequestId,
    exc: ApiError,
    rate_limits: list[dict[str, Any]] | None = None,
    *,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An error answer: ``{"id", "status", "error": {"code", "msg"[, "data"]}[, "rateLimits"]}``."""
    error: dict[str, Any] = exc.body()
    if data is not None:
        error["data"] = data
    out: dict[str, Any] = {"id": request_id, "status": exc.status, "error": error}
    if rate_limits is not None:
        out["rateLimits"] = rate_limits
    return out


class RateLimitReport:
    """Turns the rate-limit header values of one request into ``rateLimits`` entries."""

    def __init__(self, rate_limits: Iterable[RateLimitConfig]) -> None:
        prefixes = {"ORDERS": "X-MBX-ORDER-COUNT-", "REQUEST_WEIGHT": "X-MBX-USED-WEIGHT-"}
        self._entries: dict[str, dict[str, Any]] = {}
        for kind in ("ORDERS", "REQUEST_WEIGHT"):
            for spec in rate_limits:
                if spec.type != kind:
                    continue
                suffix = f"{spec.interval_num}{p.INTERVAL_LETTERS[spec.interval]}"
                self._entries[(prefixes[kind] + suffix).lower()] = {
                    "rateLimitType": kind,
                    "interval": spec.interval,
                    "intervalNum": spec.interval_num,
                    "limit": spec.limit,
                }

    def report(self, *header_sets: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """``rateLimits`` for the given headers (the counts they carry), in the docs' order."""
        counts: dict[str, int] = {}
        for headers in header_sets:
            for name, value in headers:
                key = name.lower()
                if key in self._entries and value.isdigit():
                    counts[key] = int(value)
        return [
            {**entry, "count": counts[key]} for key, entry in self._entries.items() if key in counts
        ]
