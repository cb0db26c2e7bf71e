"""Binance WebSocket market streams: a self-healing connection that feeds a channel.

:class:`BinanceStream` keeps one connection to a raw (``/ws/<stream>``) or
combined (``/stream?streams=a/b``) endpoint alive and pushes what arrives into
a bounded Trio memory channel that the caller owns::

    send, receive = trio.open_memory_channel[StreamEvent](1000)
    stream = BinanceStream(config, [trade_stream("BTCUSDT"), depth_stream("BTCUSDT")])
    await nursery.start(stream.run, send)        # returns once the first connection is up
    async for event in receive:
        match event:
            case Trade():              ...      # market data, in arrival order
            case DepthUpdate():        ...
            case StreamConnected():    ...      # (re)connected: a gap may exist, check ids
            case StreamDisconnected(): ...      # the book is stale until the next connect
            case MalformedFrame():     ...      # counted and surfaced; the stream goes on

**Backpressure.** ``run`` waits on ``send.send(...)`` when the channel is full
(it hands events on without waiting while there is room): when the consumer is slow
the stream stops reading, trio-websocket's bounded queue fills, and TCP pushes
back to the venue (which eventually drops a consumer that is far behind — a
reconnect, reported like any other). Staleness is measured only while waiting
for the venue, never while waiting for the consumer.

**What it does by itself.**

* answers the venue's pings (trio-websocket replies to every ping frame with
  a pong automatically) and sends nothing else: no subscribe messages, no
  pings of its own;
* treats a connection that delivers no message for ``stale_after_s`` as dead
  and replaces it;
* replaces a connection proactively after ``max_connection_age_s`` (before
  the venue's 24-hour cut-off), and promptly on a ``serverShutdown`` event;
* treats the venue as an untrusted peer: a frame that cannot be decoded
  (binary, truncated, nested 100,000 deep, huge numbers, …) becomes a
  :class:`MalformedFrame` and the stream goes on; a frame longer than
  :data:`~daemon.venues.binance.codec.MAX_FRAME_BYTES` or a text frame that
  is not UTF-8 is a protocol violation: the connection is closed (1009/1007)
  and replaced, like any other drop;
* reconnects after failures with bounded exponential backoff and jitter
  (``reconnect_initial_s`` doubling up to ``reconnect_max_s``, "equal jitter":
  half fixed, half random), resetting once a connection delivers data.

**What it leaves to the consumer.** Gap detection and repair: every
:class:`StreamConnected` after the first means messages may have been missed.
The pure helpers :func:`~daemon.model.marketdata.trade_gap` and
:func:`~daemon.model.marketdata.depth_continuous` (re-exported here) implement
Binance's rules (trade ids are sequential per symbol; a diff-depth update must
start at the previous ``u + 1``).
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import attrs
import trio
import trio_websocket

from daemon.errors import VenueDecodeError
from daemon.model.marketdata import (
    DepthUpdate,
    Trade,
    classify_depth_update,
    depth_continuous,
    trade_gap,
)
from daemon.resilience import Jitter, RetryPolicy
from daemon.venues.binance import codec
from daemon.venues.binance.config import BinanceConfig

__all__ = [
    "BinanceStream",
    "DisconnectReason",
    "MalformedFrame",
    "StreamConnected",
    "StreamDisconnected",
    "StreamEvent",
    "StreamStats",
    "classify_depth_update",
    "depth_continuous",
    "trade_gap",
]

log = logging.getLogger("tradingd.venues.binance.stream")

#: Malformed frames are logged individually up to this many, then every
#: ``_LOG_EVERY``-th, so an injected flood cannot flood the log.
_LOG_FIRST = 10
_LOG_EVERY = 1000
#: Frames handled in one go from what trio-websocket has received already,
#: before the stream waits (and so lets other tasks run) again.
DRAIN_MAX = 256


class DisconnectReason(enum.Enum):
    """Why a connection ended."""

    CLOSED = "closed"  #: the venue or the network closed it
    STALE = "stale"  #: no message for ``stale_after_s``
    MAX_AGE = "max_age"  #: proactive replacement before the 24-hour cut-off
    SERVER_SHUTDOWN = "server_shutdown"  #: the venue announced ``serverShutdown``


@attrs.frozen
class StreamConnected:
    """A connection is up. When ``reconnect`` is true, messages may have been missed.

    Attributes:
        venue: Venue name.
        url: The connection's URL (no secrets: streams are public).
        streams: The stream names it carries.
        connection_number: 1 for the first connection, then 2, 3, …
    """

    venue: str
    url: str
    streams: tuple[str, ...]
    connection_number: int

    @property
    def reconnect(self) -> bool:
        """Whether an earlier connection existed (so a gap is possible)."""
        return self.connection_number > 1


@attrs.frozen
class StreamDisconnected:
    """A connection ended; a new one is being made.

    Attributes:
        venue: Venue name.
        connection_number: Which connection ended.
        reason: Why.
        detail: Human detail (close code and reason, timeout, …).
        duration_s: How long the connection lived.
    """

    venue: str
    connection_number: int
    reason: DisconnectReason
    detail: str
    duration_s: float


@attrs.frozen
class MalformedFrame:
    """A frame that could not be decoded; the stream carries on.

    Attributes:
        venue: Venue name.
        connection_number: The connection it arrived on.
        raw: The frame as received (text or bytes), for a dead letter.
        error: Why it could not be decoded.
        malformed_total: Malformed frames seen by this stream so far.
    """

    venue: str
    connection_number: int
    raw: str | bytes
    error: str
    malformed_total: int


#: Everything :meth:`BinanceStream.run` sends to its channel.
StreamEvent = Trade | DepthUpdate | StreamConnected | StreamDisconnected | MalformedFrame


@attrs.define
class StreamStats:
    """Counters of one stream; ``snapshot()`` is JSON-able."""

    connections: int = 0
    connect_failures: int = 0
    messages: int = 0
    malformed: int = 0
    disconnects: dict[str, int] = attrs.field(factory=dict)
    last_message_at: float | None = None

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the counters."""
        return attrs.asdict(self)


class _ConsumerGone(Exception):
    """Internal: the consumer closed its end of the channel."""


class BinanceStream:
    """One logical market-data subscription, kept alive across connections.

    Args:
        config: Venue configuration (``ws_url``, staleness, age, backoff, timeouts).
        streams: Stream names, e.g. ``[codec.trade_stream("BTCUSDT"),
            codec.depth_stream("BTCUSDT")]``.
        combined: Force the combined endpoint (``None``: combined when there
            are several streams, raw for one).
        rng: Jitter source of the reconnect backoff (seed it in tests).
    """

    def __init__(
        self,
        config: BinanceConfig,
        streams: Sequence[str],
        *,
        combined: bool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self.venue = config.name
        self.streams = tuple(streams)
        self.url = codec.stream_url(config.ws_url, self.streams, combined=combined)
        self.stats = StreamStats()
        self._backoff = RetryPolicy(
            name=f"{config.name}.stream",
            base_delay_s=config.reconnect_initial_s,
            max_delay_s=config.reconnect_max_s,
            jitter=Jitter.EQUAL,
            rng=rng if rng is not None else random.Random(),
        )

    def __repr__(self) -> str:
        return f"BinanceStream({self.venue!r}, {self.url!r})"

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``/status``."""
        return {"venue": self.venue, "url": self.url, **self.stats.snapshot()}

    async def run(
        self,
        send: trio.MemorySendChannel[StreamEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, forward events to ``send``, reconnect forever; until cancelled.

        Reports started (``nursery.start``) once the first connection is up.
        Closes ``send`` when it ends (pass a clone if the channel is shared).
        Returns quietly if the consumer closes its receiving end.
        """
        started = False
        failures = 0
        async with send:
            while True:
                number = self.stats.connections + 1
                connected_at: float | None = None
                got_data = False
                reason = DisconnectReason.CLOSED
                detail = ""
                try:
                    async with trio_websocket.open_websocket_url(
                        self.url,
                        message_queue_size=self._config.stream_queue_size,
                        max_message_size=codec.MAX_FRAME_BYTES,
                        connect_timeout=self._config.connect_timeout_s,
                        disconnect_timeout=self._config.connect_timeout_s,
                    ) as ws:
                        connected_at = trio.current_time()
                        self.stats.connections = number
                        log.info("%s: stream connection %d up: %s", self.venue, number, self.url)
                        if not started:
                            started = True
                            task_status.started()
                        await self._emit(
                            send, StreamConnected(self.venue, self.url, self.streams, number)
                        )
                        reason, detail, got_data = await self._pump(ws, send, number)
                except _ConsumerGone:
                    log.info("%s: stream consumer closed its channel; stopping", self.venue)
                    return
                except trio_websocket.ConnectionClosed as exc:
                    reason, detail = DisconnectReason.CLOSED, _close_detail(exc)
                except (
                    trio_websocket.HandshakeError,
                    OSError,
                    trio.BrokenResourceError,
                ) as exc:
                    if connected_at is None:
                        self.stats.connect_failures += 1
                        failures += 1
                        delay = self._backoff.next_delay_s(failures)
                        log.warning(
                            "%s: stream connect failed (%s: %s); retrying in %.3fs",
                            self.venue,
                            type(exc).__name__,
                            exc,
                            delay,
                        )
                        await trio.sleep(delay)
                        continue
                    # The close handshake of a connection we were leaving anyway
                    # failed (e.g. a dead peer): keep the reason we had.
                    if not detail:
                        reason, detail = DisconnectReason.CLOSED, f"{type(exc).__name__}: {exc}"
                assert connected_at is not None
                duration = trio.current_time() - connected_at
                key = reason.value
                self.stats.disconnects[key] = self.stats.disconnects.get(key, 0) + 1
                try:
                    await self._emit(
                        send, StreamDisconnected(self.venue, number, reason, detail, duration)
                    )
                except _ConsumerGone:
                    return
                if reason in (DisconnectReason.MAX_AGE, DisconnectReason.SERVER_SHUTDOWN):
                    failures = 0
                    delay = 0.0
                else:
                    failures = 1 if got_data else failures + 1
                    delay = self._backoff.next_delay_s(failures)
                log.warning(
                    "%s: stream connection %d ended after %.1fs (%s: %s); reconnecting in %.3fs",
                    self.venue,
                    number,
                    duration,
                    reason.value,
                    detail,
                    delay,
                )
                await trio.sleep(delay)

    async def _emit(self, send: trio.MemorySendChannel[StreamEvent], event: StreamEvent) -> None:
        """Hand ``event`` on; wait only when the consumer's queue is full (backpressure)."""
        try:
            send.send_nowait(event)
            return
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _ConsumerGone from None
        try:
            await send.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _ConsumerGone from None

    async def _pump(
        self,
        ws: trio_websocket.WebSocketConnection,
        send: trio.MemorySendChannel[StreamEvent],
        number: int,
    ) -> tuple[DisconnectReason, str, bool]:
        """Forward frames until the connection should be replaced; returns why.

        The wait for the venue is timed by one cancel scope that lives across
        many waits (a scope per wait is a large share of the hot path): its
        deadline is set before each wait and lifted right after, so it can only
        ever interrupt the wait — never the hand-over to the consumer, which
        may take as long as backpressure needs. If the deadline passed in the
        instant between the wait's end and the lift (the scope is cancelled
        already, and would interrupt the next checkpoint), the frame in hand is
        handled outside that scope and a fresh one is opened.
        """
        config = self._config
        retire_at = trio.current_time() + config.max_connection_age_s
        got_data = False
        in_hand: str | bytes | None = None
        while True:
            if in_hand is not None:
                ended, data = await self._burst(ws, send, number, in_hand)
                got_data = got_data or data
                if ended is not None:
                    return ended[0], ended[1], got_data
                in_hand = None
            with trio.CancelScope() as scope:
                while True:
                    now = trio.current_time()
                    if now >= retire_at:
                        return (
                            DisconnectReason.MAX_AGE,
                            f"connection age reached {config.max_connection_age_s:g}s",
                            got_data,
                        )
                    scope.deadline = min(retire_at, now + config.stale_after_s)
                    message = await ws.get_message()
                    scope.deadline = math.inf
                    if scope.cancel_called:
                        in_hand = message
                        break
                    ended, data = await self._burst(ws, send, number, message)
                    got_data = got_data or data
                    if ended is not None:
                        return ended[0], ended[1], got_data
            if scope.cancelled_caught:
                if trio.current_time() >= retire_at:
                    continue  # the age check reports it
                return (
                    DisconnectReason.STALE,
                    f"no message for {config.stale_after_s:g}s",
                    got_data,
                )

    async def _burst(
        self,
        ws: trio_websocket.WebSocketConnection,
        send: trio.MemorySendChannel[StreamEvent],
        number: int,
        message: str | bytes,
    ) -> tuple[tuple[DisconnectReason, str] | None, bool]:
        """Handle ``message``, then what trio-websocket has received already.

        Without waiting, and without a checkpoint per message (the wait for the
        first one was one): a burst costs one task switch per :data:`DRAIN_MAX`
        frames, not two per frame. Returns why the connection ends (a
        ``serverShutdown``; ``None`` to go on) and whether data came.
        """
        self.stats.last_message_at = trio.current_time()
        got_data = False
        handled = 0
        current: str | bytes | None = message
        while current is not None:
            self.stats.messages += 1
            try:
                parsed = codec.parse_stream_message(current, venue=self.venue)
            except VenueDecodeError as exc:
                await self._malformed(send, number, current, str(exc))
                parsed = None
            except Exception as exc:  # a decoding bug must cost one frame, never the feed
                log.error(
                    "%s: unexpected %s decoding a frame (a bug; dead-lettered)",
                    self.venue,
                    type(exc).__name__,
                )
                error = f"{self.venue}: stream frame: could not be decoded ({type(exc).__name__})"
                await self._malformed(send, number, current, error)
                parsed = None
            if isinstance(parsed, codec.ServerShutdown):
                reason = (
                    DisconnectReason.SERVER_SHUTDOWN,
                    f"serverShutdown event (E={parsed.event_time_ms})",
                )
                return reason, got_data
            if parsed is not None:
                got_data = True
                await self._emit(send, parsed)
            handled += 1
            current = _received(ws) if handled < DRAIN_MAX else None
        return None, got_data

    async def _malformed(
        self,
        send: trio.MemorySendChannel[StreamEvent],
        number: int,
        message: str | bytes,
        error: str,
    ) -> None:
        self.stats.malformed += 1
        total = self.stats.malformed
        if total <= _LOG_FIRST or total % _LOG_EVERY == 0:
            log.warning("%s: malformed frame #%d: %s", self.venue, total, error)
        await self._emit(send, MalformedFrame(self.venue, number, message, error, total))


def _received(ws: trio_websocket.WebSocketConnection) -> str | bytes | None:
    """A message trio-websocket has received already, or ``None``; never waits.

    trio-websocket keeps received messages in a memory channel that
    ``get_message`` awaits (``_recv_channel``, not public API:
    ``tests/venues/binance/test_stream.py`` fails if it goes away; without it
    every message is awaited, which is correct, only slower). A closed or
    ended channel is ``None`` too: the next ``get_message`` raises
    ``ConnectionClosed`` as it should.
    """
    channel = getattr(ws, "_recv_channel", None)
    if channel is None:
        return None
    try:
        message: str | bytes = channel.receive_nowait()
    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
        return None
    return message


def _close_detail(exc: trio_websocket.ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "connection closed"
    text = f"close code {reason.code} ({reason.name})"
    return f"{text}: {reason.reason}" if reason.reason else text
