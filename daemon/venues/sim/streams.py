"""WebSocket market streams, as ``stream.binance.com`` serves them.

* Raw streams at ``/ws/<stream>`` (payload as is) and combined streams at
  ``/stream?streams=<a>/<b>`` (``{"stream": "<a>", "data": <payload>}``);
  ``/ws`` and ``/stream`` with no stream, to ``SUBSCRIBE`` later.
* Streams: ``<symbol>@trade`` (real time) and ``<symbol>@depth@100ms`` /
  ``<symbol>@depth`` (1000 ms), symbols lower case. An unknown stream in the
  URL is refused with HTTP 400 (Binance would accept and stay silent; refusing
  makes a client bug visible).
* Live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` /
  ``SET_PROPERTY combined`` / ``GET_PROPERTY`` requests with ``{"result":
  ..., "id": ...}`` answers and ``{"code": n, "msg": ..., "id": ...}`` errors.
* The server pings every ``ping_interval_s``; a connection whose pong is
  ``pong_timeout_s`` late is dropped. Connections end after
  ``max_connection_s`` (24 h on Binance). ``serverShutdown`` (``{"e":
  "serverShutdown", "E": ms}``; combined: stream ``"!serverShutdown"``) is
  sent before a planned shutdown.
* A client too slow to drain its queue (``send_queue`` messages) is
  disconnected, as Binance does with slow consumers.

Bench mode (:mod:`daemon.venues.sim.benchfeed`) is the exception: it finds
the connections of a stream with :meth:`StreamHub.subscribers` and writes
pre-built frames with :meth:`_Connection.write_frames`, which *waits* for a
slow socket instead of dropping it. It writes under trio-websocket's own write
lock (``WebSocketConnection._stream_lock``, the lock its ``_send`` holds), one
chunk of whole frames at a time, so pings, pongs, other messages and the close
handshake never land inside a frame. Those are trio-websocket internals
(0.12): :func:`direct_writer` checks for them — and that no extension such as
permessage-deflate was negotiated — and without them ``write_frames`` falls
back to ``send_message`` per frame (correct, slower);
``tests/venues/sim/test_bench_mode.py`` fails if they change.

Other WebSocket services share the listener: :meth:`StreamHub.mount` hands
the handshakes for one path (the WebSocket API's ``/ws-api/v3``) to their
owner, which accepts or refuses them and runs the connection.

Every connection consults the :class:`~daemon.venues.sim.faults.FaultInjector`
per message and for its timers, so faults armed at run time hit live
connections. The hub owns the TCP listener (rather than using
``serve_websocket``) so that a connection can be *aborted* — the TCP stream
closed without a close frame — which is what a network drop looks like.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Final

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)
from wsproto.connection import ConnectionState

from daemon.decode import DecodeError, json_loads
from daemon.venues.sim.config import StreamsConfig
from daemon.venues.sim.faults import DropMode, FaultInjector, FaultSpec, hostile_frame
from daemon.venues.sim.market import WallClock

__all__ = ["DirectWriter", "Mount", "StreamHub", "direct_writer", "frame_payloads"]

log = logging.getLogger("tradingd.sim.streams")

#: Seconds a new TCP connection has to complete its WebSocket handshake.
HANDSHAKE_TIMEOUT_S: Final = 10.0
#: Seconds granted to a closing handshake before the TCP stream is just closed.
CLOSE_TIMEOUT_S: Final = 2.0
#: How often a connection re-reads the fault timers (they may change at run time).
TIMER_POLL_S: Final = 0.5
_STREAM_SUFFIXES: Final = ("@trade", "@depth", "@depth@100ms")
_ID_RE: Final = re.compile(r"^[A-Za-z0-9]{1,36}$")
#: Longest client request (``SUBSCRIBE`` of every stream is a few KB).
MAX_REQUEST_BYTES: Final = 64 * 1024


#: The owner of a mounted path: given a handshake (not yet answered) and its TCP
#: stream, it accepts or refuses it (within the handshake timeout) and returns
#: the connection to run, or ``None`` when refused.
Mount = Callable[
    [WebSocketRequest, trio.abc.Stream], Awaitable[Callable[[], Awaitable[None]] | None]
]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class DirectWriter:
    """trio-websocket's write lock and stream of one connection, for whole pre-built frames."""

    def __init__(self, ws: WebSocketConnection, lock: trio.StrictFIFOLock, stream: Any) -> None:
        self._ws = ws
        self._lock = lock
        self._stream: trio.abc.SendStream = stream
        self._proto: Any = ws._wsproto
        #: A write was cancelled part way: the peer may hold half a frame.
        self.cut = False

    async def write(self, frames: memoryview) -> bool:
        """Write ``frames`` under the connection's lock; ``False`` if it is closing or closed."""
        async with self._lock:
            # A close frame is made (state leaves OPEN) before its writer takes the lock:
            # nothing may follow it.
            if self._ws.closed is not None or self._proto.state is not ConnectionState.OPEN:
                return False
            try:
                await self._stream.send_all(frames)
            except trio.Cancelled:
                self.cut = True
                raise
            return True


def direct_writer(ws: WebSocketConnection) -> DirectWriter | None:
    """A :class:`DirectWriter` for ``ws``, or ``None`` if this trio-websocket lacks the
    internals it relies on, or if an extension (permessage-deflate) changes the framing."""
    lock = getattr(ws, "_stream_lock", None)
    stream = getattr(ws, "_stream", None)
    connection = getattr(getattr(ws, "_wsproto", None), "connection", None)
    extensions = getattr(getattr(connection, "_proto", None), "extensions", None)
    if (
        not isinstance(lock, trio.StrictFIFOLock)
        or not isinstance(stream, trio.abc.SendStream)
        or not isinstance(getattr(connection, "state", None), ConnectionState)
        or extensions != []
    ):
        return None
    return DirectWriter(ws, lock, stream)


def frame_payloads(frames: memoryview) -> Iterator[str]:
    """The texts of complete, unmasked, unfragmented text frames laid back to back."""
    data = frames.tobytes()
    at = 0
    while at < len(data):
        size, head = data[at + 1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(data[at + 2 : at + 4], "big"), 4
        elif size == 127:
            size, head = int.from_bytes(data[at + 2 : at + 10], "big"), 10
        yield data[at + head : at + head + size].decode()
        at += head + size


class _Closing(Exception):
    """Internal: end this connection (``mode`` says how)."""

    def __init__(self, mode: DropMode | None, reason: str) -> None:
        super().__init__(reason)
        self.mode = mode
        self.reason = reason


class _Connection:
    """One accepted WebSocket: its subscriptions, queue and tasks."""

    def __init__(
        self,
        hub: StreamHub,
        ws: WebSocketConnection,
        tcp: trio.abc.Stream,
        *,
        combined: bool,
        streams: Iterable[str],
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.tcp = tcp
        self.combined = combined
        self.streams: set[str] = set(streams)
        self.opened_at = trio.current_time()
        self.serial = next(hub.serials)
        self.send, self.receive = trio.open_memory_channel[str](hub.config.send_queue)
        self.cancel_scope = trio.CancelScope()
        self.end: _Closing | None = None
        try:
            self.peer = str(ws.remote)
        except OSError:  # the peer may be gone already
            self.peer = "?"
        self._nursery: trio.Nursery | None = None
        self._direct: DirectWriter | bool | None = False  # False: not looked up yet

    # -- called by the hub (synchronously) -----------------------------------------

    def offer(self, text: str) -> None:
        """Queue one outgoing message; a full queue ends the connection (slow consumer)."""
        try:
            self.send.send_nowait(text)
        except trio.WouldBlock:
            self.finish(_Closing("abort", "slow consumer"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def request_shutdown(self, grace_s: float) -> None:
        """Send ``serverShutdown`` now and close ``grace_s`` later (from any task)."""
        if self._nursery is None:
            self.finish(_Closing("close", "server shutdown"))
        else:
            self._nursery.start_soon(self.shutdown, grace_s)

    def finish(self, closing: _Closing) -> None:
        """End the connection (from any task)."""
        if self.end is None:
            self.end = closing
        self.cancel_scope.cancel()

    # -- bench mode (from the bench run's task) ---------------------------------------

    def is_open(self) -> bool:
        """Whether frames may still be written (not ending, not closing)."""
        return self.end is None and self.ws.closed is None

    async def write_frames(self, frames: memoryview) -> bool:
        """Write complete pre-built text frames, waiting for the socket (backpressure).

        ``False`` when the connection is closing or gone (write nothing more).
        Cancelled in the middle of a write, the connection is aborted: the peer
        may have half a frame, and nothing else may follow it.
        """
        if self._direct is False:
            self._direct = direct_writer(self.ws)
        direct = self._direct
        try:
            if isinstance(direct, DirectWriter):
                try:
                    return await direct.write(frames)
                except trio.Cancelled:
                    if direct.cut:
                        self.finish(_Closing("abort", "bench write cut short"))
                    raise
            for text in frame_payloads(frames):
                await self.ws.send_message(text)
            return True
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            self.finish(_Closing(None, "peer closed"))
            return False

    # -- tasks ------------------------------------------------------------------------

    async def run(self) -> None:
        hub = self.hub
        with self.cancel_scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._sender)
                nursery.start_soon(self._receiver)
                nursery.start_soon(self._pinger)
                nursery.start_soon(self._timers)
        closing = self.end or _Closing("close", "ended")
        hub.detach(self)
        log.debug("stream connection %s ends: %s", self.peer, closing.reason)
        if closing.mode == "abort":
            await trio.aclose_forcefully(self.tcp)
            return
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            await self.ws.aclose(1000 if closing.mode == "close" else 1001, closing.reason)
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.tcp)

    async def _sender(self) -> None:
        faults = self.hub.faults
        try:
            async for text in self.receive:
                verdict = faults.on_message(frozenset(self.streams), trio.current_time())
                if verdict.drop is not None:
                    self.finish(_Closing(verdict.drop, "fault: ws_drop"))
                    return
                if verdict.discard:
                    continue
                if verdict.delay_s:
                    await trio.sleep(verdict.delay_s)
                if verdict.malformed:
                    for variant in verdict.variants:
                        await self.ws.send_message(hostile_frame(variant, text))
                    if verdict.replace:
                        continue
                await self.ws.send_message(text)
        except ConnectionClosed:
            self.finish(_Closing(None, "peer closed"))

    async def _receiver(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                reply = self.hub.handle_request(self, message)
                if reply is not None:
                    await self.ws.send_message(_dumps(reply))
        except ConnectionClosed:
            self.finish(_Closing(None, "peer closed"))

    async def _pinger(self) -> None:
        config = self.hub.config
        try:
            while True:
                await trio.sleep(config.ping_interval_s)
                with trio.move_on_after(config.pong_timeout_s) as scope:
                    await self.ws.ping()
                if scope.cancelled_caught:
                    self.finish(_Closing("abort", "no pong"))
                    return
        except ConnectionClosed:
            self.finish(_Closing(None, "peer closed"))

    async def _timers(self) -> None:
        """Connection lifetime and the timed faults (``ws_drop``/``ws_shutdown`` every N s)."""
        hub = self.hub
        end_of_life = self.opened_at + hub.config.max_connection_s
        while True:
            now = trio.current_time()
            planned = hub.faults.connection_deadline(frozenset(self.streams), self.opened_at, now)
            deadline = end_of_life
            spec: FaultSpec | None = None
            if planned is not None and planned[0] < deadline:
                deadline, spec = planned
            if deadline > now:
                await trio.sleep_until(min(deadline, now + TIMER_POLL_S))
                continue
            if spec is None:
                self.finish(_Closing("close", "connection lifetime reached"))
                return
            hub.faults.record_timed_hit(spec)
            if spec.kind == "ws_drop":
                self.finish(_Closing(spec.mode, "fault: ws_drop every_s"))
                return
            await self.shutdown(spec.grace_s)
            return

    async def shutdown(self, grace_s: float) -> None:
        """Send ``serverShutdown``, wait ``grace_s``, then close."""
        event = {"e": "serverShutdown", "E": self.hub.clock()}
        text = _dumps({"stream": "!serverShutdown", "data": event} if self.combined else event)
        try:
            await self.ws.send_message(text)
        except ConnectionClosed:
            pass
        await trio.sleep(grace_s)
        self.finish(_Closing("close", "server shutdown"))


class StreamHub:
    """Subscriptions, publishing and the WebSocket listener of one simulator."""

    def __init__(
        self,
        symbols: Iterable[str],
        config: StreamsConfig,
        faults: FaultInjector,
        clock: WallClock,
    ) -> None:
        self.config = config
        self.faults = faults
        self.clock = clock
        self.valid_streams = frozenset(
            f"{symbol.lower()}{suffix}" for symbol in symbols for suffix in _STREAM_SUFFIXES
        )
        self._subscribers: dict[str, set[_Connection]] = {}
        self._connections: set[_Connection] = set()
        self._mounts: dict[str, Mount] = {}
        self.published = 0
        self.serials = itertools.count(1)

    def mount(self, path: str, owner: Mount) -> None:
        """Serve the WebSocket handshakes for ``path`` (any query) with ``owner``."""
        self._mounts[path] = owner

    # -- publishing -------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def has_subscribers(self, stream: str) -> bool:
        return bool(self._subscribers.get(stream))

    def subscribers(self, stream: str) -> list[_Connection]:
        """The connections subscribed to ``stream``, oldest first (bench mode's targets)."""
        return sorted(self._subscribers.get(stream, ()), key=lambda conn: conn.serial)

    def publish(self, stream: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` to every connection subscribed to ``stream``."""
        subscribers = self._subscribers.get(stream)
        if not subscribers:
            return
        raw: str | None = None
        combined: str | None = None
        for conn in list(subscribers):
            if conn.combined:
                combined = combined or _dumps({"stream": stream, "data": payload})
                conn.offer(combined)
            else:
                raw = raw or _dumps(payload)
                conn.offer(raw)
        self.published += 1

    # -- subscriptions ------------------------------------------------------------------

    def _subscribe(self, conn: _Connection, stream: str) -> None:
        conn.streams.add(stream)
        self._subscribers.setdefault(stream, set()).add(conn)

    def _unsubscribe(self, conn: _Connection, stream: str) -> None:
        conn.streams.discard(stream)
        subscribers = self._subscribers.get(stream)
        if subscribers is not None:
            subscribers.discard(conn)

    def attach(self, conn: _Connection) -> None:
        self._connections.add(conn)
        for stream in list(conn.streams):
            self._subscribe(conn, stream)

    def detach(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        for stream in list(conn.streams):
            subscribers = self._subscribers.get(stream)
            if subscribers is not None:
                subscribers.discard(conn)
        conn.send.close()

    def handle_request(self, conn: _Connection, message: str | bytes) -> dict[str, Any] | None:
        """Answer one client message (live subscription management)."""
        try:
            request = json_loads(message, what="request", max_bytes=MAX_REQUEST_BYTES)
        except DecodeError as exc:
            return {"code": 3, "msg": f"Invalid JSON: {exc}"}
        if not isinstance(request, dict):
            return {"code": 3, "msg": "Invalid JSON: expected an object"}
        request_id = request.get("id")
        if not (
            request_id is None
            or (isinstance(request_id, int) and not isinstance(request_id, bool))
            or (isinstance(request_id, str) and _ID_RE.fullmatch(request_id))
        ):
            return {"code": 2, "msg": "Invalid request: invalid 'id'", "id": None}
        method = request.get("method")
        params = request.get("params", [])
        if not isinstance(params, list):
            return {"code": 2, "msg": "Invalid request: params must be an array", "id": request_id}
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            bad = [s for s in params if not isinstance(s, str) or s not in self.valid_streams]
            if bad:
                return {
                    "code": 2,
                    "msg": f"Invalid request: unknown stream(s) {bad}",
                    "id": request_id,
                }
            if method == "SUBSCRIBE":
                if len(conn.streams | set(params)) > self.config.max_streams:
                    return {"code": 2, "msg": "Invalid request: too many streams", "id": request_id}
                for stream in params:
                    self._subscribe(conn, stream)
            else:
                for stream in params:
                    self._unsubscribe(conn, stream)
            return {"result": None, "id": request_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": request_id}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not params or params[0] != "combined":
                return {"code": 0, "msg": "Unknown property", "id": request_id}
            if method == "GET_PROPERTY":
                return {"result": conn.combined, "id": request_id}
            if len(params) != 2 or not isinstance(params[1], bool):
                return {"code": 1, "msg": "Invalid value type: expected Boolean", "id": request_id}
            conn.combined = params[1]
            return {"result": None, "id": request_id}
        return {
            "code": 2,
            "msg": f"Invalid request: unknown variant {method!r}, expected one of "
            "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
            "id": request_id,
        }

    # -- control --------------------------------------------------------------------------

    def drop_all(self, mode: DropMode = "abort") -> int:
        """End every connection now; returns how many there were."""
        connections = list(self._connections)
        for conn in connections:
            conn.finish(_Closing(mode, "dropped by control endpoint"))
        return len(connections)

    def shutdown_all(self, grace_s: float) -> int:
        """Send ``serverShutdown`` to every connection and close each ``grace_s`` later."""
        connections = list(self._connections)
        for conn in connections:
            conn.request_shutdown(grace_s)
        return len(connections)

    # -- serving ----------------------------------------------------------------------------

    def parse_target(self, target: str) -> tuple[bool, list[str]] | None:
        """``(combined, streams)`` for a request target, or ``None`` if it is not ours."""
        path, _, query = target.partition("?")
        if path in ("/ws", "/ws/"):
            return False, []
        if path.startswith("/ws/"):
            streams = [s for s in urllib.parse.unquote(path[len("/ws/") :]).split("/") if s]
            return False, streams
        if path in ("/stream", "/stream/"):
            values = urllib.parse.parse_qs(query).get("streams", [""])
            return True, [s for s in values[0].split("/") if s]
        return None

    async def _accept(
        self, request: WebSocketRequest
    ) -> tuple[WebSocketConnection, bool, list[str]] | None:
        """Accept a market stream handshake: ``(ws, combined, streams)``, or refuse it."""
        target = self.parse_target(request.path)
        if target is None:
            await request.reject(404, body=b"Not found")
            return None
        combined, streams = target
        bad = [s for s in streams if s not in self.valid_streams]
        if bad or len(streams) > self.config.max_streams:
            body = f"Invalid request: unknown or too many streams {bad}"
            await request.reject(400, body=body.encode())
            return None
        return await request.accept(), combined, streams

    async def handle_tcp(self, tcp: trio.abc.Stream) -> None:
        """Serve one TCP connection: handshake, then the stream session."""
        try:
            async with trio.open_nursery() as nursery:
                accepted: tuple[WebSocketConnection, bool, list[str]] | None = None
                mounted: Callable[[], Awaitable[None]] | None = None
                with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
                    request = await wrap_server_stream(nursery, tcp)
                    owner = self._mounts.get(request.path.partition("?")[0])
                    if owner is not None:
                        mounted = await owner(request, tcp)
                    else:
                        accepted = await self._accept(request)
                if mounted is not None:
                    try:
                        await mounted()
                    finally:
                        nursery.cancel_scope.cancel()
                    return
                if accepted is None:
                    nursery.cancel_scope.cancel()
                    return
                ws, combined, streams = accepted
                conn = _Connection(self, ws, tcp, combined=combined, streams=streams)
                self.attach(conn)
                try:
                    await conn.run()
                finally:
                    self.detach(conn)
                    nursery.cancel_scope.cancel()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("stream connection failed: %r", exc)
        except Exception:
            # A bug here must cost one connection, never the listener (and every client).
            log.exception("stream connection failed")
        finally:
            await trio.aclose_forcefully(tcp)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (``0`` = any) and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            sockname = listeners[0].socket.getsockname()
            bound = (str(sockname[0]), int(sockname[1]))
            log.info("sim streams listening on %s:%d", *bound)
            task_status.started(bound)
            await trio.serve_listeners(self.handle_tcp, listeners)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
