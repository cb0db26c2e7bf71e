"""A small HTTP/1.1 server on loopback: h11 for the protocol, Trio for the I/O.

Its two users are the admin API (:mod:`daemon.admin`) and the exchange
simulator's REST API (:mod:`daemon.venues.sim.rest`). It knows neither: what
to serve, which requests are *priority*, and how it names itself in its log
lines and its busy answer are parameters of :func:`serve_http`.

Why not hypercorn: the admin API is a handful of endpoints on loopback, and what
matters is that it can never hurt the daemon. h11 is a sans-IO state machine,
so this module is only the thin Trio shell around it, and every limit is ours
and explicit:

* ``request_timeout_s`` bounds, separately, receiving a request (from its first
  byte — or from the accept, for a new connection — to the end of its body),
  running the handler, and sending the response. A slow client gets ``408``, a
  slow handler ``503``, a client that does not read its answer is dropped.
* ``idle_timeout_s`` bounds how long a kept-alive connection may sit between
  requests.
* ``head_timeout_s`` bounds the request head alone (``408``; a silent new
  connection is closed), so half-open connections cannot sit on a slot.
* ``max_body_bytes`` (``413``) and ``max_header_bytes`` (``431``) bound memory
  per connection; ``max_connections`` bounds connections (``503`` and close),
  ``max_connections_per_client`` what one peer address may hold of them.
* When the pool is full, the connection that has waited longest for a request
  head is evicted (``evict_waiting``), and a reserve of
  ``reserved_connections`` still serves ``priority`` requests (for the admin
  API: health and the operator's switches), so no local client can starve the
  operator. Refusals are logged as one summary line per interval, not one each.
* ``host_names`` checks the ``Host`` header on every request (``421``): a
  loopback server must not answer a browser page that rebound its own name.
* A handler that raises gets a generic ``500`` (the traceback goes to the log,
  never to the client) and the connection, and the server, carry on.
  :class:`~daemon.http.HTTPError` is how a handler answers with a deliberate
  error status.

Nothing here blocks: each connection is a Trio task, handlers are ``async``,
and cancelling :func:`serve_http` closes every connection.

Layers, bottom up: :class:`~daemon.http.Request` / :class:`~daemon.http.Response`
(values, :mod:`daemon.http.messages`) → :class:`~daemon.http.Router` (a
:data:`~daemon.http.Handler` that dispatches on method and path,
:mod:`daemon.http.routing`) → :func:`serve_http` (sockets, limits, keep-alive).
"""

from __future__ import annotations

import email.utils
import http
import logging
import math
import urllib.parse
from collections.abc import Callable, Collection

import attrs
import h11
import trio

from daemon.http.hostcheck import HostCheck
from daemon.http.messages import Handler, HTTPError, Request, Response, error_response

__all__ = ["DEFAULT_BUSY_MESSAGE", "DEFAULT_NAME", "SERVER_NAME", "serve_http"]

log = logging.getLogger("tradingd.http")

#: Value of the ``Server`` header.
SERVER_NAME = "tradingd"
#: How the server names itself in its log lines unless told otherwise.
DEFAULT_NAME = "HTTP"
#: The answer to a non-priority request on a reserve slot, unless told otherwise.
DEFAULT_BUSY_MESSAGE = "server busy: only priority requests are served right now"

#: Bytes asked of the socket per receive.
RECEIVE_BYTES = 65_536
#: Longest we keep reading (and discarding) from a client after answering with
#: ``Connection: close``, so that the kernel does not reset the connection (and
#: destroy our answer) because of unread request bytes.
LINGER_S = 1.0
#: Most bytes discarded during that lingering close.
LINGER_MAX_BYTES = 1_048_576
#: Most ``name=value`` pairs accepted in a query string.
MAX_QUERY_FIELDS = 100
#: Largest request body accepted on a reserve slot (a priority request, such as a
#: trading switch, is a few bytes).
RESERVE_MAX_BODY_BYTES = 4096

_NO_BODY_STATUSES = frozenset({204, 304})


@attrs.frozen(kw_only=True)
class _Limits:
    """The checked limits of one server.

    No field has a default: :func:`serve_http` passes every one (its keyword
    arguments hold the server's defaults; the admin API passes its limits
    from ``[admin]``).
    """

    max_connections: int
    request_timeout_s: float
    idle_timeout_s: float
    max_body_bytes: int
    max_header_bytes: int
    head_timeout_s: float
    max_connections_per_client: int
    reserved_connections: int
    evict_waiting: bool
    reject_log_interval_s: float

    def __attrs_post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        for name in (
            "request_timeout_s",
            "idle_timeout_s",
            "head_timeout_s",
            "reject_log_interval_s",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if self.max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {self.max_body_bytes}")
        if self.max_header_bytes < 256:
            raise ValueError(f"max_header_bytes must be >= 256, got {self.max_header_bytes}")
        for name in ("max_connections_per_client", "reserved_connections"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def linger_s(self) -> float:
        return min(LINGER_S, self.request_timeout_s)

    @property
    def head_s(self) -> float:
        """The deadline for a request head: never longer than the whole request's."""
        return min(self.head_timeout_s, self.request_timeout_s)


@attrs.define(eq=False)
class _Slot:
    """One admitted connection: which pool it is in, and whether it may be evicted now.

    ``waiting_since`` is set while the connection waits for (or reads) a
    request head — a new connection, a kept-alive one between requests, or a
    reserve connection until its whole request is in — and ``None`` while a
    request is being served. Only waiting connections are ever evicted.
    """

    host: str
    reserve: bool
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    waiting_since: float | None = None
    released: bool = False


class _RejectLog:
    """Counts refused and evicted connections; one summary line per interval, not one each."""

    def __init__(self, interval_s: float, max_connections: int, name: str = DEFAULT_NAME) -> None:
        self.interval_s = interval_s
        self.name = name
        self.max_connections = max_connections
        self.refused = 0
        self.evicted = 0
        self.reserved = 0
        self._since: float | None = None

    def count(self, kind: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        now = trio.current_time()
        if self._since is None:
            self._since = now
        elif now - self._since >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Log the counts since the last line, if any (called by the count and a timer)."""
        if not (self.refused or self.evicted or self.reserved):
            self._since = None
            return
        span = trio.current_time() - (self._since or trio.current_time())
        log.warning(
            "%s under connection pressure in the last %.1f s (max_connections=%d): "
            "%d connection(s) refused with 503, %d waiting connection(s) evicted, "
            "%d non-priority request(s) refused from the reserve",
            self.name,
            span,
            self.max_connections,
            self.refused,
            self.evicted,
            self.reserved,
        )
        self.refused = self.evicted = self.reserved = 0
        self._since = None


class _Reply(Exception):
    """Internal: answer with ``response`` and then close the connection.

    ``head_only`` is set when the request being refused was a ``HEAD`` (h11
    then forbids a body, even on an error).
    """

    def __init__(self, response: Response, request: h11.Request | None = None) -> None:
        super().__init__(response.status)
        self.response = response
        self.head_only = request is not None and request.method == b"HEAD"


def _http_date() -> str:
    return email.utils.formatdate(usegmt=True)


def _head_size(event: h11.Request) -> int:
    """Roughly the size of the request head on the wire (h11 only bounds incomplete heads)."""
    size = len(event.method) + len(event.target) + 13  # spaces, "HTTP/1.1", CRLF
    return size + sum(len(name) + len(value) + 4 for name, value in event.headers) + 2


def _peer(stream: trio.SocketStream) -> tuple[str, int] | None:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


def _build_request(event: h11.Request, body: bytes, client: tuple[str, int] | None) -> Request:
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


class _Server:
    """Per-``serve_http`` state: the handler, the limits and the connection counts.

    Admission, in order: the general pool (``max_connections``, at most
    ``max_connections_per_client`` per peer address when set); when it is full
    and ``evict_waiting`` is on, the connection that has waited longest for a
    request head is evicted to make room; else the reserve
    (``reserved_connections``, with the same eviction), where only
    ``priority`` requests are served and the whole request must arrive within
    the head deadline; else ``503`` without parsing.
    """

    def __init__(
        self,
        handler: Handler,
        limits: _Limits,
        *,
        priority: Callable[[str, str], bool] | None = None,
        host_check: Callable[[Request, bytes], None] | None = None,
        name: str = DEFAULT_NAME,
        busy_message: str = DEFAULT_BUSY_MESSAGE,
    ) -> None:
        self._handler = handler
        self._name = name
        self._busy_message = busy_message
        self._limits = limits
        self._priority = priority
        self._host_check = host_check
        self._slots: set[_Slot] = set()
        self._general = 0
        self._reserve = 0
        self._per_client: dict[str, int] = {}
        self._rejecting = 0
        self.pressure = _RejectLog(limits.reject_log_interval_s, limits.max_connections, name)

    # -- admission ---------------------------------------------------------------

    def _admit(self, host: str) -> _Slot | None:
        limits = self._limits
        per_client = limits.max_connections_per_client
        within_client = not per_client or self._per_client.get(host, 0) < per_client
        if within_client and (self._general < limits.max_connections or self._evict(reserve=False)):
            return self._take(host, reserve=False)
        if self._reserve < limits.reserved_connections or (
            limits.reserved_connections and self._evict(reserve=True)
        ):
            return self._take(host, reserve=True)
        return None

    def _take(self, host: str, *, reserve: bool) -> _Slot:
        slot = _Slot(host, reserve, waiting_since=trio.current_time())
        self._slots.add(slot)
        if reserve:
            self._reserve += 1
        else:
            self._general += 1
            self._per_client[host] = self._per_client.get(host, 0) + 1
        return slot

    def _release(self, slot: _Slot) -> None:
        if slot.released:
            return
        slot.released = True
        self._slots.discard(slot)
        if slot.reserve:
            self._reserve -= 1
        else:
            self._general -= 1
            left = self._per_client[slot.host] - 1
            if left:
                self._per_client[slot.host] = left
            else:
                del self._per_client[slot.host]

    def _evict(self, *, reserve: bool) -> bool:
        """Close the longest-waiting connection of a pool; ``False`` if none is waiting."""
        if not self._limits.evict_waiting:
            return False
        waiting = [s for s in self._slots if s.reserve == reserve and s.waiting_since is not None]
        if not waiting:
            return False
        victim = min(waiting, key=lambda s: s.waiting_since or 0.0)
        victim.scope.cancel()
        self._release(victim)  # its place is taken now, before the task notices
        self.pressure.count("evicted")
        return True

    # -- connection lifecycle ----------------------------------------------------

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        client = _peer(stream)
        slot = self._admit(client[0] if client else "")
        if slot is None:
            await self._reject(stream)
            return
        try:
            with slot.scope:
                if slot.reserve:
                    await self._serve_reserved(stream, slot, client)
                else:
                    await self._serve_connection(stream, slot, client)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("%s connection from %s dropped: %r", self._name, client, exc)
        except Exception:
            # A bug in this module, not in a handler; never let it reach the
            # nursery (that would take the whole server down with it).
            log.exception("%s connection from %s failed", self._name, client)
        finally:
            self._release(slot)
            await trio.aclose_forcefully(stream)

    async def _reject(self, stream: trio.SocketStream) -> None:
        """Answer ``503`` without parsing anything, then close (bounded in time and count)."""
        self.pressure.count("refused")
        if self._rejecting >= self._limits.max_connections:
            await trio.aclose_forcefully(stream)
            return
        self._rejecting += 1
        log.debug("%s: rejecting %s (no connection slot free)", self._name, _peer(stream))
        try:
            conn = h11.Connection(h11.SERVER)
            response = error_response(503, "too many connections", (("Retry-After", "1"),))
            with trio.move_on_after(self._limits.linger_s):
                await stream.send_all(self._render(conn, response, head_only=False, close=True))
                await self._linger(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._rejecting -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_reserved(
        self, stream: trio.SocketStream, slot: _Slot, client: tuple[str, int] | None
    ) -> None:
        """One request on a reserve slot: served only if it is a priority request, then close."""
        limits = self._limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        try:
            received = await self._receive(conn, stream, slot, first=True, reserve=True)
        except _Reply as reply:
            await self._send_and_close(conn, stream, reply.response, head_only=reply.head_only)
            return
        if received is None:
            return
        event, body = received
        head_only = event.method == b"HEAD"
        method = event.method.decode("ascii", "replace")
        path = event.target.decode("ascii", "replace").partition("?")[0]
        if self._priority is None or not self._priority(method, path):
            self.pressure.count("reserved")
            busy = error_response(503, self._busy_message, (("Retry-After", "1"),))
            await self._send_and_close(conn, stream, busy, head_only=head_only)
            return
        response, _ = await self._respond(event, body, client)
        await self._send_and_close(conn, stream, response, head_only=head_only)

    async def _linger(self, stream: trio.SocketStream) -> None:
        """Half-close, then discard what the client still sends until it closes too."""
        await stream.send_eof()
        discarded = 0
        with trio.move_on_after(self._limits.linger_s):
            while discarded <= LINGER_MAX_BYTES:
                data = await stream.receive_some(RECEIVE_BYTES)
                if not data:
                    return
                discarded += len(data)

    async def _serve_connection(
        self, stream: trio.SocketStream, slot: _Slot, client: tuple[str, int] | None
    ) -> None:
        limits = self._limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        first = True
        while True:
            # 1. Receive one complete request.
            try:
                received = await self._receive(conn, stream, slot, first=first)
            except _Reply as reply:
                log.debug("%s: refusing request from %s: %s", self._name, client, reply)
                await self._send_and_close(conn, stream, reply.response, head_only=reply.head_only)
                return
            if received is None:
                return
            first = False
            event, body = received

            # 2. Run the handler.
            start = trio.current_time()
            head_only = event.method == b"HEAD"
            response, close = await self._respond(event, body, client)

            # 3. Send the answer.
            if close:
                await self._send_and_close(conn, stream, response, head_only=head_only)
                return
            data = self._render(conn, response, head_only=head_only, close=False)
            with trio.move_on_after(limits.request_timeout_s) as scope:
                await stream.send_all(data)
            if scope.cancelled_caught:
                log.debug("%s: %s did not read its response in time; closing", self._name, client)
                return
            log.debug(
                "%s %s -> %d (%.1f ms)",
                event.method.decode("ascii", "replace"),
                event.target.decode("ascii", "replace").partition("?")[0],
                response.status,
                (trio.current_time() - start) * 1000,
            )
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                await self._close_gracefully(stream)
                return
            conn.start_next_cycle()

    async def _receive(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        slot: _Slot,
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
            _Reply: the request cannot be served: not HTTP/1.1 (400), too slow
                (408), body or head too large (413, 431).
        """
        limits = self._limits
        max_body = (
            min(limits.max_body_bytes, RESERVE_MAX_BODY_BYTES)
            if reserve
            else (limits.max_body_bytes)
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
                                conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                                or b""
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
                            raise _Reply(
                                error_response(431, "request header fields too large"), event
                            )
                        declared = _content_length(event)
                        if declared is not None and declared > max_body:
                            raise _Reply(_too_large(max_body), request)
                    elif isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > max_body:
                            raise _Reply(_too_large(max_body), request)
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
            raise _Reply(error_response(exc.error_status_hint, message), request) from None
        # Timed out.
        slot.waiting_since = None
        if started:
            raise _Reply(error_response(408, "request timeout"), request)
        return None

    async def _respond(
        self, event: h11.Request, body: bytes, client: tuple[str, int] | None
    ) -> tuple[Response, bool]:
        """Run the handler under the request deadline; returns ``(response, close)``."""
        method = event.method.decode("ascii", "replace")
        try:
            request = _build_request(event, body, client)
            if self._host_check is not None:
                self._host_check(request, event.http_version)
            with trio.move_on_after(self._limits.request_timeout_s) as scope:
                response = await self._handler(request)
            if scope.cancelled_caught:
                log.warning(
                    "%s: handler for %s %s exceeded %.3f s; answering 503",
                    self._name,
                    method,
                    request.path,
                    self._limits.request_timeout_s,
                )
                return error_response(503, "request timed out"), True
            if not isinstance(response, Response):
                raise TypeError(f"handler returned {type(response).__name__}, not Response")
        except HTTPError as exc:
            return error_response(exc.status, exc.message, exc.headers), False
        except Exception:
            log.exception(
                "%s: handler for %s %s raised",
                self._name,
                method,
                event.target.decode("ascii", "replace").partition("?")[0],
            )
            return error_response(500, "internal server error"), False
        return response, False

    # -- writing -----------------------------------------------------------------

    def _render(
        self, conn: h11.Connection, response: Response, *, head_only: bool, close: bool
    ) -> bytes:
        """Serialize ``response`` with h11; a response h11 refuses becomes a ``500``."""
        try:
            return _serialize(conn, response, head_only=head_only, close=close)
        except Exception:
            log.exception(
                "%s: handler returned an invalid response (%d)", self._name, response.status
            )
            if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                raise  # h11 already committed: nothing sane left to send
            fallback = error_response(500, "internal server error")
            return _serialize(conn, fallback, head_only=head_only, close=close)

    async def _send_and_close(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        response: Response,
        *,
        head_only: bool = False,
    ) -> None:
        data = self._render(conn, response, head_only=head_only, close=True)
        with trio.move_on_after(self._limits.request_timeout_s):
            await stream.send_all(data)
            await self._close_gracefully(stream)

    async def _close_gracefully(self, stream: trio.SocketStream) -> None:
        try:
            await self._linger(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _content_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


def _too_large(max_body_bytes: int) -> Response:
    return error_response(413, f"request body larger than {max_body_bytes} bytes")


def _serialize(conn: h11.Connection, response: Response, *, head_only: bool, close: bool) -> bytes:
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


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_connections: int = 64,
    request_timeout_s: float = 10.0,
    idle_timeout_s: float = 30.0,
    max_body_bytes: int = 1_048_576,
    max_header_bytes: int = 16384,
    head_timeout_s: float | None = None,
    max_connections_per_client: int = 0,
    reserved_connections: int = 0,
    priority: Callable[[str, str], bool] | None = None,
    evict_waiting: bool = False,
    host_names: Collection[str] | None = None,
    reject_log_interval_s: float = 10.0,
    name: str = DEFAULT_NAME,
    busy_message: str = DEFAULT_BUSY_MESSAGE,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` over HTTP/1.1 on ``host:port`` until cancelled.

    Binds first (``port=0`` picks a free port) and only then reports
    ``task_status.started((host, bound_port))``, so ``await nursery.start(...)``
    returns when connections are accepted. Each connection is a task; when this
    function is cancelled every connection is closed, in-flight handlers
    included.

    Args:
        handler: called once per request; see :class:`Router`.
        host: address to bind, e.g. ``"127.0.0.1"`` (see :func:`daemon.config.parse_listen`).
        port: TCP port; ``0`` for any free one.
        max_connections: open connections served at once (the general pool);
            more go to the reserve, or get ``503``.
        request_timeout_s: bound on receiving a request, on its handler, and on
            sending its response (each).
        idle_timeout_s: how long a kept-alive connection may wait for its next request.
        max_body_bytes: larger bodies get ``413``.
        max_header_bytes: larger request heads get ``431``.
        head_timeout_s: the request line and headers must arrive within this
            (from the accept, or from the first byte on a kept-alive
            connection); default ``request_timeout_s``. Slow heads get ``408``,
            silent connections are closed.
        max_connections_per_client: most general-pool connections per peer
            address (``0``: no separate limit); beyond it, the reserve.
        reserved_connections: extra connections, used when the general pool is
            full, that serve only ``priority`` requests (one each, then close);
            the whole request must arrive within ``head_timeout_s``.
        priority: ``priority(method, path)`` is true for the requests a reserve
            connection serves (for the admin API: health and the operator's
            switches).
        evict_waiting: when a pool is full, close its connection that has
            waited longest for a request head to admit the new one (so idle
            and half-open connections cannot hold every slot).
        host_names: when given, the ``Host`` header (and an absolute-form
            target) must name one of these hosts, with the bound port or none;
            else ``421``. Guards a loopback server against DNS rebinding.
        reject_log_interval_s: refused and evicted connections are logged as
            one summary line per interval, never one line each.
        name: how this server names itself in its log lines (e.g. ``"admin
            HTTP"``), so that two servers in one process can be told apart.
        busy_message: the ``503`` error message for a non-priority request on
            a reserve connection (it may say which requests are priority).
        task_status: receives the bound ``(host, port)``.

    Raises:
        OSError: the address cannot be bound (before ``started`` is reported).
        ValueError: a limit is out of range.
    """
    limits = _Limits(
        max_connections=max_connections,
        request_timeout_s=request_timeout_s,
        idle_timeout_s=idle_timeout_s,
        max_body_bytes=max_body_bytes,
        max_header_bytes=max_header_bytes,
        head_timeout_s=request_timeout_s if head_timeout_s is None else head_timeout_s,
        max_connections_per_client=max_connections_per_client,
        reserved_connections=reserved_connections,
        evict_waiting=evict_waiting,
        reject_log_interval_s=reject_log_interval_s,
    )
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        sockname = listeners[0].socket.getsockname()
        bound: tuple[str, int] = (str(sockname[0]), int(sockname[1]))
        check = None if host_names is None else HostCheck((*host_names, bound[0]), bound[1])
        server = _Server(
            handler,
            limits,
            priority=priority,
            host_check=check,
            name=name,
            busy_message=busy_message,
        )
        log.info("HTTP server listening on %s", _format_address(bound))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_flush_pressure, server.pressure)
            task_status.started(bound)
            await trio.serve_listeners(server.handle_stream, listeners)
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _flush_pressure(pressure: _RejectLog) -> None:
    """Log the last counts of a burst of refusals even when no new one comes."""
    while True:
        await trio.sleep(pressure.interval_s)
        pressure.flush()


def _format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
