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
This module is the connection lifecycle and :func:`serve_http`; who gets a
connection is :mod:`daemon.http.admission`, reading a request
:mod:`daemon.http.reading`, writing a response :mod:`daemon.http.writing`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import h11
import trio

from daemon.http.admission import ConnectionPool, RejectLog, ServerLimits, Slot, flush_pressure
from daemon.http.hostcheck import HostCheck
from daemon.http.messages import Handler, HTTPError, Request, Response, error_response
from daemon.http.reading import RECEIVE_BYTES, Reply, build_request, peer, receive_request
from daemon.http.writing import render

__all__ = ["DEFAULT_BUSY_MESSAGE", "DEFAULT_NAME", "serve_http"]

log = logging.getLogger("tradingd.http")

#: How the server names itself in its log lines unless told otherwise.
DEFAULT_NAME = "HTTP"
#: The answer to a non-priority request on a reserve slot, unless told otherwise.
DEFAULT_BUSY_MESSAGE = "server busy: only priority requests are served right now"
#: Most bytes discarded while lingering before a close (for at most
#: :data:`~daemon.http.admission.LINGER_S`).
LINGER_MAX_BYTES = 1_048_576


class _Server:
    """Per-``serve_http`` state: the handler, the limits and the connection pool.

    Each accepted connection is admitted to the pool
    (:class:`~daemon.http.admission.ConnectionPool`: the general pool, else the
    reserve, else ``503`` without parsing), then served: requests one after
    another on a general slot, one priority request on a reserve slot.
    """

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
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
        self.pool = ConnectionPool(
            limits, RejectLog(limits.reject_log_interval_s, limits.max_connections, name)
        )
        self._rejecting = 0

    # -- connection lifecycle ----------------------------------------------------

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        client = peer(stream)
        slot = self.pool.admit(client[0] if client else "")
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
            self.pool.release(slot)
            await trio.aclose_forcefully(stream)

    async def _reject(self, stream: trio.SocketStream) -> None:
        """Answer ``503`` without parsing anything, then close (bounded in time and count)."""
        self.pool.pressure.count("refused")
        if self._rejecting >= self._limits.max_connections:
            await trio.aclose_forcefully(stream)
            return
        self._rejecting += 1
        log.debug("%s: rejecting %s (no connection slot free)", self._name, peer(stream))
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
        self, stream: trio.SocketStream, slot: Slot, client: tuple[str, int] | None
    ) -> None:
        """One request on a reserve slot: served only if it is a priority request, then close."""
        limits = self._limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        try:
            received = await receive_request(conn, stream, slot, limits, first=True, reserve=True)
        except Reply as reply:
            await self._send_and_close(conn, stream, reply.response, head_only=reply.head_only)
            return
        if received is None:
            return
        event, body = received
        head_only = event.method == b"HEAD"
        method = event.method.decode("ascii", "replace")
        path = event.target.decode("ascii", "replace").partition("?")[0]
        if self._priority is None or not self._priority(method, path):
            self.pool.pressure.count("reserved")
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
        self, stream: trio.SocketStream, slot: Slot, client: tuple[str, int] | None
    ) -> None:
        limits = self._limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        first = True
        while True:
            # 1. Receive one complete request.
            try:
                received = await receive_request(conn, stream, slot, limits, first=first)
            except Reply as reply:
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

    async def _respond(
        self, event: h11.Request, body: bytes, client: tuple[str, int] | None
    ) -> tuple[Response, bool]:
        """Run the handler under the request deadline; returns ``(response, close)``."""
        method = event.method.decode("ascii", "replace")
        try:
            request = build_request(event, body, client)
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
        return render(conn, response, head_only=head_only, close=close, name=self._name)

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
    limits = ServerLimits(
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
            nursery.start_soon(flush_pressure, server.pool.pressure)
            task_status.started(bound)
            await trio.serve_listeners(server.handle_stream, listeners)
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


def _format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
