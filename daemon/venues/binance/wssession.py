"""One Binance WebSocket API connection: requests matched to answers by id.

:func:`open_session` connects to ``config.ws_api_url`` (after taking the
documented 2 request weight of a connection) and yields a
:class:`WsApiSession` whose two tasks run for the duration of the block:

* the **reader** matches each answer to the request with its ``id``,
  corrects the shared limiter with the answer's ``rateLimits``, hands user
  data stream events to the ``events`` channel in arrival order, and turns a
  ``serverShutdown`` event into a retirement (stop taking requests; the
  owner opens a new connection). A frame that cannot be decoded is counted
  and logged, sparingly, never fatal: if it was an answer, its request times
  out (for an order, "outcome unknown");
* the **pinger** sends a WebSocket ping every ``ws_api_ping_interval_s``;
  no pong within ``request_timeout_s`` retires the session as ``stalled``.

Per request (:meth:`WsApiSession.call`), in the REST client's order::

    time sync (signed only)  →  rate limiter  →  frame (id, timestamp, signature)
        →  send  →  answer by id (bounded)  →  errors  →  model

* **Shared with REST.** The venue clock (:class:`~.clock.VenueClock`) and
  the rate-limit admission (:class:`~.admission.VenueLimits`) are the same
  objects the REST client uses (``rest.clock``, ``rest.limits``): Binance
  counts request weight per IP and orders per account, whatever the
  transport. ``timestamp`` is the local wall clock plus the measured offset;
  a ``-1021`` answer re-syncs the shared clock and the request is re-signed
  and sent **once** more (a ``-1021`` is refused before processing:
  resending cannot duplicate).
* **Never a blind resend.** No answer within ``request_timeout_s``, or the
  connection lost while a *mutating* request (``order.place``,
  ``order.cancel``) is outstanding → :class:`~daemon.errors.VenueOutcomeUnknownError`;
  for a query → :class:`~daemon.errors.VenueUnavailableError` (transient).
* **Errors** are the REST map (:func:`.codec.wsapi.answer_error`); a 429/418
  with ``retryAfter`` freezes the shared limiter. Messages name the venue and
  the method, never the frame (it carries the API key and the signature);
  the venue's own text is scrubbed of the key, the secret and signatures.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio
import trio_websocket

from daemon.errors import (
    TimestampOutOfWindowError,
    VenueDecodeError,
    VenueError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRequestError,
    VenueUnavailableError,
)
from daemon.secrets import Secret
from daemon.venues.binance.admission import VenueLimits
from daemon.venues.binance.clock import VenueClock
from daemon.venues.binance.codec import wsapi as ws
from daemon.venues.binance.codec.decoding import show
from daemon.venues.binance.codec.marketdata import ServerShutdown
from daemon.venues.binance.config import BinanceConfig
from daemon.venues.binance.rest import BinanceRestClient

__all__ = [
    "CONNECTION_ERRORS",
    "Reply",
    "SessionClosed",
    "WsApiSession",
    "WsApiStats",
    "open_session",
    "scrub",
]

log = logging.getLogger("tradingd.venues.binance.wsapi")

T = TypeVar("T")

_REDACTED = "***"
#: An HMAC-SHA256 hex signature, wherever a message might echo one.
_HEX_SIGNATURE = re.compile(r"\b[0-9A-Fa-f]{64}\b")
#: Malformed frames are logged individually up to this many, then every
#: ``_LOG_EVERY``-th, so an injected flood cannot flood the log.
_LOG_FIRST = 10
_LOG_EVERY = 1000

#: Exceptions of trio-websocket and the network that mean "the connection failed".
CONNECTION_ERRORS = (
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    OSError,
    trio.BrokenResourceError,
)


def scrub(text: str, *secrets: Secret | None) -> str:
    """``text`` with the revealed ``secrets`` and anything shaped like a signature masked."""
    for secret in secrets:
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), _REDACTED)
    return _HEX_SIGNATURE.sub(_REDACTED, text)


@attrs.define
class WsApiStats:
    """Counters of a WebSocket API client across its connections; ``snapshot()`` is JSON-able."""

    connections: int = 0
    connect_failures: int = 0
    requests: int = 0
    answers: int = 0
    timeouts: int = 0
    lost_in_flight: int = 0
    late_answers: int = 0
    malformed: int = 0
    pong_timeouts: int = 0
    server_shutdowns: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the counters."""
        return attrs.asdict(self)


class SessionClosed(Exception):
    """Internal: the session's connection is gone (the request was provably not sent)."""


@attrs.define
class _Pending:
    """One request waiting for its answer."""

    done: trio.Event = attrs.field(factory=trio.Event)
    answer: ws.WsAnswer | None = None
    received_ms: int = 0
    #: Why the connection ended before the answer came (set with ``done``).
    lost: str | None = None


class _PendingTable:
    """The requests of one connection waiting for their answers, by request id."""

    __slots__ = ("_idle", "_ids", "_waiting")

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Pending] = {}
        self._idle = trio.Event()

    def __len__(self) -> int:
        return len(self._waiting)

    def next_id(self) -> int:
        """The id of the next request on this connection."""
        return next(self._ids)

    def add(self, request_id: int) -> _Pending:
        """Wait for the answer to ``request_id``: the entry it will be put in."""
        pending = self._waiting[request_id] = _Pending()
        return pending

    def close(self, request_id: int) -> None:
        """The request stopped waiting (answered, timed out or lost)."""
        self._waiting.pop(request_id, None)
        if not self._waiting:
            self._idle.set()

    def deliver(self, answer: ws.WsAnswer, wall_clock_ms: Callable[[], int]) -> bool:
        """Hand ``answer`` (arrived now) to the request with its id; ``False`` if none waits."""
        pending = self._waiting.get(answer.id) if isinstance(answer.id, int) else None
        if pending is None:
            return False
        pending.answer = answer
        pending.received_ms = wall_clock_ms()
        pending.done.set()
        return True

    def lose_all(self, why: str) -> None:
        """The connection is gone: every request still waiting learns ``why`` now."""
        self._idle.set()
        for pending in self._waiting.values():
            if not pending.done.is_set():
                pending.lost = why
                pending.done.set()

    async def wait_change(self) -> None:
        """Wait until the table empties or :meth:`lose_all` is called."""
        self._idle = trio.Event()
        await self._idle.wait()


@attrs.frozen
class Reply:
    """A successful answer and the local wall clock (ms) when it arrived."""

    answer: ws.WsAnswer
    received_ms: int


def _close_detail(exc: trio_websocket.ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "connection closed"
    text = f"close code {reason.code} ({reason.name})"
    return f"{text}: {reason.reason}" if reason.reason else text


class WsApiSession:
    """One WebSocket API connection: requests matched to answers by id.

    Made by :func:`open_session`, which runs its reader and pinger. ``events``
    (when given) receives the user data stream events in arrival order and is
    closed when the session ends, after the last event: a consumer that
    reads it to the end has seen everything the connection delivered.
    """

    def __init__(
        self,
        config: BinanceConfig,
        clock: VenueClock,
        limits: VenueLimits,
        websocket: trio_websocket.WebSocketConnection,
        *,
        stats: WsApiStats,
        number: int,
        events: trio.MemorySendChannel[ws.WsEvent] | None = None,
        on_retire: Callable[[WsApiSession], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._limits = limits
        self._on_retire = on_retire
        self.venue = config.name
        self._ws = websocket
        self._stats = stats
        self.number = number
        self._events = events
        self._pending = _PendingTable()
        #: Why the session ended or should be replaced (``None`` while usable).
        self.retire_reason: str | None = None
        self.retire_detail = ""
        self.retired = trio.Event()
        #: The venue has shown signs of life on this connection (an answer or a pong).
        self.proven = False
        self._closed = False

    @property
    def usable(self) -> bool:
        """Whether new requests may be sent on this connection."""
        return self.retire_reason is None and not self._closed

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    # ------------------------------------------------------------------ requests

    async def call(
        self,
        spec: ws.WsRequestSpec,
        read: Callable[[Any], T],
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> T:
        """Send ``spec``, wait for its answer, read the result with ``read``.

        ``on_sent`` is called once, when the frame has been written (the venue
        may act from then on).

        Raises:
            VenueOutcomeUnknownError: a mutating request may have taken effect.
            VenueUnavailableError: not sent (no connection), or a query lost.
            VenueDecodeError: a query's answer could not be read.
            VenueError: the venue's error answer, mapped as REST maps it.
        """
        reply = await self.request(spec, on_sent=on_sent)
        try:
            return ws.read_result(reply.answer, spec.method, self.venue, read)
        except VenueDecodeError as exc:
            if not spec.mutating:
                raise
            raise VenueOutcomeUnknownError(
                f"{self.venue} {spec.endpoint}: the answer could not be decoded; the request "
                "may have taken effect",
                venue=self.venue,
                http_status=reply.answer.status,
                endpoint=spec.endpoint,
            ) from exc

    async def request(
        self, spec: ws.WsRequestSpec, *, on_sent: Callable[[], None] | None = None
    ) -> Reply:
        """:meth:`call` without reading the result; a ``-1021`` re-syncs and resends once."""
        once = _Once(on_sent)
        try:
            return await self._exchange(spec, once)
        except TimestampOutOfWindowError:
            if not spec.signed:
                raise
            await self._clock.resync_after_timestamp_error(spec.endpoint)
            return await self._exchange(spec, once)

    async def _exchange(self, spec: ws.WsRequestSpec, on_sent: _Once) -> Reply:
        """One request and its answer: sync, acquire, sign, send, wait, map."""
        if spec.signed:
            self._credentials(spec)  # before anything is spent on it
            await self._clock.ensure_synced()
        await self._limits.acquire(spec.weight, spec.order_count, spec.endpoint)
        if not self.usable:
            raise SessionClosed(self.retire_detail or "connection closed")
        request_id = self._pending.next_id()
        frame = self._frame(spec, request_id)  # after the wait: the timestamp must be fresh
        pending = self._pending.add(request_id)
        self._stats.requests += 1
        timeout_s = self._config.request_timeout_s
        sent = False
        try:
            with trio.move_on_after(timeout_s) as scope:
                try:
                    await self._ws.send_message(frame)
                except trio_websocket.ConnectionClosed as exc:
                    pending.lost = f"connection closed while sending ({_close_detail(exc)})"
                else:
                    sent = True
                    on_sent()
                    await pending.done.wait()
        finally:
            self._pending.close(request_id)
        if scope.cancelled_caught:
            self._stats.timeouts += 1
            if not sent:  # cut off inside a write: the connection cannot be trusted
                self.retire("stalled", f"a send did not complete within {timeout_s:g}s")
            raise self._no_answer(spec, f"no answer within {timeout_s:g}s")
        if pending.answer is None:
            self._stats.lost_in_flight += 1
            raise self._no_answer(spec, pending.lost or "connection closed")
        answer = pending.answer
        if not answer.ok:
            error = ws.answer_error(
                answer,
                venue=self.venue,
                endpoint=spec.endpoint,
                mutating=spec.mutating,
                now_ms=self._clock.venue_time_ms(),
                scrub=self._scrub,
            )
            if isinstance(error, VenueRateLimitedError) and error.retry_after_s is not None:
                self._limits.freeze(error.retry_after_s, error)
            raise error
        return Reply(answer, pending.received_ms)

    def _credentials(self, spec: ws.WsRequestSpec) -> tuple[str, str]:
        config = self._config
        if config.api_key is None or config.api_secret is None:
            raise VenueRequestError(
                f"{self.venue} {spec.endpoint}: needs api_key and api_secret in the venue's "
                "configuration",
                venue=self.venue,
                endpoint=spec.endpoint,
            )
        return config.api_key.reveal(), config.api_secret.reveal()

    def _frame(self, spec: ws.WsRequestSpec, request_id: int) -> str:
        if not spec.signed:
            return ws.request_frame(spec, request_id)
        api_key, api_secret = self._credentials(spec)
        return ws.request_frame(
            spec,
            request_id,
            api_key=api_key,
            api_secret=api_secret,
            timestamp_ms=self._clock.venue_time_ms(),
            recv_window_ms=self._config.recv_window_ms,
        )

    def _no_answer(self, spec: ws.WsRequestSpec, why: str) -> VenueError:
        """No answer came: for an order "outcome unknown", for a query "unavailable"."""
        why = self._scrub(why)
        fields: dict[str, Any] = {"venue": self.venue, "endpoint": spec.endpoint}
        if spec.mutating:
            return VenueOutcomeUnknownError(
                f"{self.venue} {spec.endpoint}: {why} after sending; the request may have "
                "taken effect",
                **fields,
            )
        return VenueUnavailableError(f"{self.venue} {spec.endpoint}: {why}", **fields)

    def _scrub(self, text: str) -> str:
        return scrub(text, self._config.api_key, self._config.api_secret)

    # ------------------------------------------------------------------ tasks

    async def read_frames(self) -> None:
        """The reader task: answers to their requests, events to the channel, until closed."""
        detail = "connection closed"
        try:
            while True:
                try:
                    message = await self._ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    detail = _close_detail(exc)
                    return
                await self._dispatch(message)
        finally:
            self.end("closed", self._scrub(detail))

    async def _dispatch(self, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                raise VenueDecodeError(
                    f"{self.venue}: ws-api frame: a binary frame (only JSON text is spoken)",
                    raw=message,
                    venue=self.venue,
                )
            frame = ws.parse_frame(message, venue=self.venue)
        except VenueDecodeError as exc:
            self._malformed(str(exc))
            return
        except Exception as exc:  # a decoding bug must cost one frame, never the connection
            self._malformed(f"could not be decoded ({type(exc).__name__}; a bug)")
            return
        if isinstance(frame, ws.WsAnswer):
            self._answer(frame)
        elif isinstance(frame.event, ServerShutdown):
            self._stats.server_shutdowns += 1
            self.retire("server_shutdown", f"serverShutdown event (E={frame.event.event_time_ms})")
        elif self._events is not None:
            try:
                await self._events.send(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._events = None  # the consumer left; answers still flow

    def _answer(self, answer: ws.WsAnswer) -> None:
        self._stats.answers += 1
        self.proven = True
        self._limits.observe_usage(answer.rate_limits)
        if not self._pending.deliver(answer, self._clock.wall_clock_ms):
            # Its caller timed out (or the venue echoed an id we never sent).
            self._stats.late_answers += 1
            late = self._stats.late_answers
            if late <= _LOG_FIRST or late % _LOG_EVERY == 0:
                log.info(
                    "%s: ws-api answer #%d to no waiting request (id %s, status %d)",
                    self.venue,
                    late,
                    show(answer.id),
                    answer.status,
                )

    def _malformed(self, error: str) -> None:
        self._stats.malformed += 1
        total = self._stats.malformed
        if total <= _LOG_FIRST or total % _LOG_EVERY == 0:
            log.warning("%s: malformed ws-api frame #%d: %s", self.venue, total, error)

    async def ping_forever(self) -> None:
        """The pinger task: a ping every interval; no pong in time retires the session."""
        config = self._config
        while self.usable:
            await trio.sleep(config.ws_api_ping_interval_s)
            with trio.move_on_after(config.request_timeout_s) as scope:
                try:
                    await self._ws.ping()
                except trio_websocket.ConnectionClosed:
                    return  # the reader reports it
                self.proven = True
            if scope.cancelled_caught:
                self._stats.pong_timeouts += 1
                self.retire("stalled", f"no pong within {config.request_timeout_s:g}s")
                return

    # ------------------------------------------------------------------ lifecycle

    def retire(self, reason: str, detail: str) -> None:
        """Stop taking requests: the connection should be replaced (the first reason stays).

        Requests in flight still get their answers while the connection lasts;
        the events channel is closed now (its buffered events stay readable).
        """
        first = self.retire_reason is None
        if first:
            self.retire_reason = reason
            self.retire_detail = detail
            log.info("%s: ws-api connection %d retiring: %s", self.venue, self.number, detail)
        if self._events is not None:
            self._events.close()
            self._events = None
        self.retired.set()
        if first and self._on_retire is not None:
            self._on_retire(self)

    def end(self, reason: str, detail: str) -> None:
        """The connection is gone: every outstanding request learns it now."""
        self._closed = True
        self.retire(reason, detail)
        self._pending.lose_all(f"connection lost ({detail})")

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until no request is in flight, so none is cut off by a close."""
        with trio.move_on_after(timeout_s):
            while self._pending and not self._closed:
                await self._pending.wait_change()


class _Once:
    """``on_sent`` called at most once across a request and its ``-1021`` resend."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[], None] | None) -> None:
        self._fn = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


@asynccontextmanager
async def _websocket(config: BinanceConfig) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """``open_websocket_url`` whose connect phase really ends at ``connect_timeout_s``.

    trio-websocket raises its ``ConnectionTimeout`` on time but then waits for
    its reader task, which against a peer that accepted TCP and went silent
    lingers for a minute. An outer deadline, lifted once connected, cancels
    that too.
    """
    connected = False
    with trio.CancelScope(deadline=trio.current_time() + config.connect_timeout_s) as scope:
        async with trio_websocket.open_websocket_url(
            config.ws_api_url,
            message_queue_size=config.stream_queue_size,
            max_message_size=ws.MAX_WS_FRAME_BYTES,
            connect_timeout=config.connect_timeout_s * 2,  # the outer deadline comes first
            disconnect_timeout=config.connect_timeout_s,
        ) as websocket:
            connected = True
            scope.deadline = math.inf
            yield websocket
    if scope.cancelled_caught and not connected:
        raise trio_websocket.ConnectionTimeout(
            f"no WebSocket handshake within {config.connect_timeout_s:g}s"
        )


@asynccontextmanager
async def open_session(
    rest: BinanceRestClient,
    *,
    stats: WsApiStats,
    events: trio.MemorySendChannel[ws.WsEvent] | None = None,
    on_retire: Callable[[WsApiSession], None] | None = None,
) -> AsyncIterator[WsApiSession]:
    """Connect to ``config.ws_api_url`` (after taking the connection's 2 weight), run it.

    The reader and the pinger run for the duration of the block; leaving it
    closes the connection (and fails whatever is still in flight).

    Raises:
        VenueRateLimitedError: the limiter did not admit the connection.
        trio_websocket.HandshakeError, OSError, …: connecting failed
            (:data:`CONNECTION_ERRORS`).
    """
    config = rest.config
    await rest.limits.acquire(ws.WEIGHT_CONNECT, 0, "ws-api connect")
    async with _websocket(config) as websocket:
        stats.connections += 1
        session = WsApiSession(
            config,
            rest.clock,
            rest.limits,
            websocket,
            stats=stats,
            number=stats.connections,
            events=events,
            on_retire=on_retire,
        )
        log.info("%s: ws-api connection %d up: %s", config.name, session.number, config.ws_api_url)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.read_frames)
                nursery.start_soon(session.ping_forever)
                try:
                    yield session
                finally:
                    session.end("closed", "closed by the client")
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The block's own exception, wrapped by the nursery: hand it on as
            # raised (the two tasks never raise), so callers catch it by type.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
