"""Writing one response onto a connection: h11's events, the standard headers, the fallback.

:func:`render` serializes a :class:`~daemon.http.messages.Response` with h11
(``Date``, ``Server`` and ``Content-Length`` added; ``Connection: close`` when
the connection ends after it); a response h11 refuses becomes a generic
``500``, never a broken connection.
"""

from __future__ import annotations

import email.utils
import http
import logging

import h11

from daemon.http.messages import Response, error_response

__all__ = ["SERVER_NAME", "render", "serialize"]

log = logging.getLogger("tradingd.http")

#: Value of the ``Server`` header.
SERVER_NAME = "tradingd"

_NO_BODY_STATUSES = frozenset({204, 304})


def _http_date() -> str:
    return email.utils.formatdate(usegmt=True)


def render(
    conn: h11.Connection, response: Response, *, head_only: bool, close: bool, name: str
) -> bytes:
    """Serialize ``response`` with h11; a response h11 refuses becomes a ``500``."""
    try:
        return serialize(conn, response, head_only=head_only, close=close)
    except Exception:
        log.exception("%s: handler returned an invalid response (%d)", name, response.status)
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            raise  # h11 already committed: nothing sane left to send
        fallback = error_response(500, "internal server error")
        return serialize(conn, fallback, head_only=head_only, close=close)


def serialize(conn: h11.Connection, response: Response, *, head_only: bool, close: bool) -> bytes:
    """``response`` as bytes on the wire: h11's events, with the standard headers added."""
    status = response.status
    body = b"" if status in _NO_BODY_STATUSES else response.body
    headers: list[tuple[bytes, bytes]] = []
    names: set[str] = set()
    for name, value in response.headers:
        lower = name.lower()
        if lower in ("content-length", "transfer-encoding"):
            continue
        if lower == "connection":
            close = close or "close" in value.lower()
            continue
        names.add(lower)
        headers.append((name.encode("ascii"), value.encode("latin-1")))
    if "date" not in names:
        headers.append((b"Date", _http_date().encode("ascii")))
    if "server" not in names:
        headers.append((b"Server", SERVER_NAME.encode("ascii")))
    if status not in _NO_BODY_STATUSES:
        headers.append((b"Content-Length", str(len(body)).encode("ascii")))
    if close:
        headers.append((b"Connection", b"close"))
    try:
        reason = http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        reason = b""
    event = h11.Response(status_code=status, headers=headers, reason=reason)
    out = [conn.send(event) or b""]
    if body and not head_only:
        out.append(conn.send(h11.Data(data=body)) or b"")
    out.append(conn.send(h11.EndOfMessage()) or b"")
    return b"".join(out)
