"""Reading one request off a connection: deadlines, size limits, and h11's event into a Request.

:func:`receive_request` drives h11 until one whole request (head and body)
is in, under the head, idle and request deadlines of
:class:`~daemon.http.admission.ServerLimits`, and refuses what cannot be
served by raising :class:`Reply` (``400``, ``408``, ``413``, ``431``): the
server answers with it and closes. :func:`build_request` turns h11's request
event into the :class:`~daemon.http.messages.Request` a handler sees.
"""

from __future__ import annotations

import urllib.parse

import h11
import trio

from daemon.http.admission import ServerLimits, Slot
from daemon.http.messages import HTTPError, Request, Response, error_response

__all__ = [
    "MAX_QUERY_FIELDS",
    "RECEIVE_BYTES",
    "RESERVE_MAX_BODY_BYTES",
    "Reply",
    "build_request",
    "peer",
    "receive_request",
]

#: Bytes asked of the socket per receive.
RECEIVE_BYTES = 65_536
#: Most ``name=value`` pairs accepted in a query string.
MAX_QUERY_FIELDS = 100
#: Largest request body accepted on a reserve slot (a priority request, such as a
#: trading switch, is a few bytes).
RESERVE_MAX_BODY_BYTES = 4096


class Reply(Exception):
    """Raised while reading a request: answer with ``response`` and then close the connection.

    ``head_only`` is set when the request being refused was a ``HEAD`` (h11
    then forbids a body, even on an error).
    """

    def __init__(self, response: Response, request: h11.Request | None = None) -> None:
        super().__init__(response.status)
        self.response = response
        self.head_only = request is not None and request.method == b"HEAD"


def _head_size(event: h11.Request) -> int:
    """Roughly the size of the request head on the wire (h11 only bounds incomplete heads)."""
    size = len(event.method) + len(event.target) + 13  # spaces, "HTTP/1.1", CRLF
    return size + sum(len(name) + len(value) + 4 for name, value in event.headers) + 2


def peer(stream: trio.SocketStream) -> tuple[str, int] | None:
    """The peer's ``(address, port)`` of ``stream``, or ``None`` when it is not known."""
    try:
        address = stream.socket.getpeername()
    except OSError:
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


def build_request(event: h11.Request, body: bytes, client: tuple[str, int] | None) -> Request:
    """Turn h11's request event into a :class:`Request` (raises ``HTTPError(400)``)."""
    target = event.target.decode("ascii", errors="replace")
    authority: str | None = None
    if target.startswith("/"):
        path, _, query_string = target.partition("?")
        path = path.partition("#")[0]
    elif "://" in target:  # absolute-form, as sent to proxies
        try:
            parts = urllib.parse.urlsplit(target)
        except ValueError:
            raise HTTPError(400, "request target is not a valid URL") from None
        path, query_string, authority = parts.path or "/", parts.query, parts.netloc
    else:  # "*" or authority-form: no route can match
        path, query_string = target, ""
    try:
        parsed = urllib.parse.parse_qs(
            query_string, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS
        )
    except ValueError:
        raise HTTPError(400, f"query string has more than {MAX_QUERY_FIELDS} fields") from None
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(
        method=event.method.decode("ascii", errors="replace"),
        path=path,
        query={k: tuple(v) for k, v in parsed.items()},
        headers=headers,
        body=body,
        client=client,
        raw_query=query_string,
        absolute_authority=authority,
    )


async def receive_request(
    conn: h11.Connection,
    stream: trio.SocketStream,
    slot: Slot,
    limits: ServerLimits,
    *,
    first: bool,
    reserve: bool = False,
) -> tuple[h11.Request, bytes] | None:
    """Read one request, head and body; ``None`` when the client closed or idled out.

    Deadlines: a new connection must deliver its request head within
    ``head_s`` of the accept, a kept-alive one within ``head_s`` of its first
    byte (it may idle ``idle_timeout_s`` before that); the body must be in
    within ``request_timeout_s`` of the same start. On a reserve slot the
    whole request must arrive within ``head_s``. While the head is awaited
    the slot is marked waiting (evictable).

    Raises:
        Reply: the request cannot be served: not HTTP/1.1 (400), too slow
            (408), body or head too large (413, 431).
    """
    max_body = (
        min(limits.max_body_bytes, RESERVE_MAX_BODY_BYTES) if reserve else (limits.max_body_bytes)
    )
    body_s = limits.head_s if reserve else limits.request_timeout_s
    # A new connection is expected to send its request now; a kept-alive one
    # may idle, but once a request has begun it must complete in time.
    started = bool(conn.trailing_data[0])
    on_request_clock = first or started
    now = trio.current_time()
    slot.waiting_since = now
    clock_start = now
    timeout_s = limits.head_s if on_request_clock else limits.idle_timeout_s
    request: h11.Request | None = None
    body = bytearray()
    try:
        with trio.move_on_after(timeout_s) as scope:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if conn.they_are_waiting_for_100_continue:
                        await stream.send_all(
                            conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                        )
                    data = await stream.receive_some(RECEIVE_BYTES)
                    if data and not started:
                        started = True
                        if not on_request_clock:
                            on_request_clock = True
                            clock_start = trio.current_time()
                            scope.deadline = clock_start + limits.head_s
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                    if not reserve:
                        slot.waiting_since = None  # a request is being served now
                    scope.deadline = clock_start + body_s
                    if _head_size(event) > limits.max_header_bytes:
                        raise Reply(error_response(431, "request header fields too large"), event)
                    declared = _content_length(event)
                    if declared is not None and declared > max_body:
                        raise Reply(_too_large(max_body), request)
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > max_body:
                        raise Reply(_too_large(max_body), request)
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    slot.waiting_since = None
                    return request, bytes(body)
                elif isinstance(event, h11.ConnectionClosed):
                    return None
                else:  # PAUSED cannot happen: we never read past a request's end.
                    raise RuntimeError(f"unexpected h11 event {event!r}")
    except h11.RemoteProtocolError as exc:
        slot.waiting_since = None
        message = f"bad request: {exc}"
        if exc.error_status_hint == 431:
            message = "request header fields too large"
        raise Reply(error_response(exc.error_status_hint, message), request) from None
    # Timed out.
    slot.waiting_since = None
    if started:
        raise Reply(error_response(408, "request timeout"), request)
    return None


def _content_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


def _too_large(max_body_bytes: int) -> Response:
    return error_response(413, f"request body larger than {max_body_bytes} bytes")
