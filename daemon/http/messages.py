"""What a handler of :func:`daemon.http.serve_http` receives and returns: values, no I/O.

:class:`Request` (one received request, body included), :class:`Response`
(what a handler answers), :class:`HTTPError` (a deliberate error status) and
:func:`error_response` (the ``{"error": message}`` body every error has).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from daemon.decode import DecodeError, json_loads

__all__ = [
    "MAX_JSON_DEPTH",
    "HTTPError",
    "Handler",
    "Request",
    "Response",
    "error_response",
]

#: Deepest nesting accepted in a JSON request body (the admin API's bodies nest 2 levels).
MAX_JSON_DEPTH = 16

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """Store mappings read-only, so a :class:`Request` is a value like any other."""
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value))


class HTTPError(Exception):
    """Raised by a handler (or the router) to answer with an error status.

    The server turns it into ``{"error": message}`` with ``status`` and the extra
    ``headers`` (e.g. ``Allow``, ``Retry-After``); the connection stays usable.
    Any *other* exception from a handler is a bug and becomes a generic ``500``.
    """

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"HTTPError status must be 4xx or 5xx, got {status}")
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)


@attrs.frozen
class Request:
    """One received request, body included (no streaming).

    Attributes:
        method: upper-case method, e.g. ``"GET"``.
        path: the request target's path, still percent-encoded (so ``%2F`` in an
            order id cannot be mistaken for a separator); no query string.
        query: every value of every query parameter, in order of appearance.
        raw_query: the query string exactly as received (no ``?``), for
            byte-exact uses such as verifying a signature over it.
        absolute_authority: the ``host[:port]`` of an absolute-form target
            (``GET http://host/path``), else ``None``.
        headers: lower-case header names; repeated headers joined with ``", "``.
        body: the complete request body.
        client: the peer's ``(host, port)``, when known.
        path_params: ``{name}`` segments of the matched route, percent-decoded;
            filled by :class:`Router`.
    """

    method: str
    path: str
    query: Mapping[str, tuple[str, ...]] = attrs.field(default=_EMPTY, converter=_frozen_mapping)
    headers: Mapping[str, str] = attrs.field(default=_EMPTY, converter=_frozen_mapping)
    body: bytes = b""
    client: tuple[str, int] | None = None
    path_params: Mapping[str, str] = attrs.field(default=_EMPTY, converter=_frozen_mapping)
    raw_query: str = ""
    absolute_authority: str | None = None

    def query_value(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``, or ``default``."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """Decode the body as JSON.

        ``NaN`` and ``Infinity`` are refused: they are not JSON, and a
        non-finite price or quantity must never get past the API.

        Any failure of decoding (not UTF-8, not JSON, nested deeper than
        :data:`MAX_JSON_DEPTH`, numbers beyond the int-string limit) is a
        ``400`` that says what is wrong.

        Raises:
            HTTPError: ``400`` when the body is empty or cannot be decoded.
        """
        if not self.body:
            raise HTTPError(400, "request body is empty; expected JSON")
        try:
            return json_loads(self.body, what="request body", max_depth=MAX_JSON_DEPTH)
        except DecodeError as exc:
            # Says what is wrong and where, never echoes the payload.
            raise HTTPError(400, str(exc)) from None


@attrs.frozen
class Response:
    """What a handler returns. ``Content-Length``, ``Date`` and ``Server`` are added by the server.

    ``headers`` must not carry framing (``Content-Length``/``Transfer-Encoding``):
    the server sets those from ``body``. ``Connection: close`` is honoured.
    """

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
        """A compact JSON response (``application/json``)."""
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
        return cls(status, body, (("Content-Type", "application/json"), *headers))

    @classmethod
    def text(
        cls, s: str, status: int = 200, content_type: str = "text/plain; charset=utf-8"
    ) -> Response:
        """A text response, UTF-8 encoded."""
        return cls(status, s.encode(), (("Content-Type", content_type),))


def error_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """The JSON body every error of this server has: ``{"error": message}``."""
    return Response.json({"error": message}, status=status, headers=headers)


#: What the server calls for each request.
Handler = Callable[[Request], Awaitable[Response]]
