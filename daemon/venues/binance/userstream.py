"""The Binance user data stream: our account's events over the WebSocket API, kept subscribed.

Binance retired the ``listenKey`` stream; account events now come on a
WebSocket API connection after a signed ``userDataStream.subscribe.signature``
request (``web-socket-api.md``, "User Data Stream requests";
``user-data-stream.md`` for the events). :class:`UserDataStream` keeps such a
subscription alive and feeds a channel the caller owns::

    send, receive = trio.open_memory_channel[UserStreamEvent](1000)
    stream = UserDataStream(rest_client)        # or BinanceVenue.user_data_stream()
    await nursery.start(stream.run, send)       # returns once first subscribed
    async for event in receive:
        match event:
            case UserStreamUp():       ...      # a witness from since_ms: reconcile the gap
            case ExecutionReport():    ...      # one order change (and its fill), in order
            case AccountPosition() | BalanceUpdate(): ...
            case StreamTerminated():   ...      # the venue ended the subscription
            case UserStreamDown():     ...      # no witness until the next UserStreamUp

**The witness contract.** :class:`~daemon.model.userstream.UserStreamUp`
carries ``since_ms``, the local wall clock when the subscription's answer
arrived: every event of the account from then on is delivered, in order, until
a :class:`~daemon.model.userstream.UserStreamDown`. Between a ``Down`` and the
next ``Up`` events are lost for good; the consumer reconciles (open orders,
recent trades) to cover the window.

**What it does by itself.**

* subscribes (signed with the API key and ``timestamp``, the venue clock it
  shares with the REST client; ``-1021`` re-syncs and resends once) and
  emits ``UserStreamUp``;
* forwards ``executionReport``, ``outboundAccountPosition``,
  ``balanceUpdate`` and ``eventStreamTerminated`` events of its subscription
  in arrival order; other event types (``listStatus``,
  ``externalLockUpdate``, …) are counted and dropped;
* on ``eventStreamTerminated``: forwards it, emits ``UserStreamDown("terminated")``
  and subscribes again on the same connection;
* checks liveness by WebSocket ping/pong every ``ws_api_ping_interval_s`` (an
  account without orders is silent for hours, so silence proves nothing); no
  pong within ``request_timeout_s`` → ``UserStreamDown("stalled")``;
* on a lost connection (``"closed"``), ``serverShutdown``
  (``"server_shutdown"``) or ``max_connection_age_s`` (``"max_age"``) emits
  ``UserStreamDown`` and reconnects — at once after a shutdown or the age
  limit, else with backoff (``reconnect_initial_s`` doubling to
  ``reconnect_max_s``, equal jitter, reset once a subscription succeeds);
* treats frames as hostile: one that cannot be decoded is counted
  (``malformed``) and logged sparingly; the stream goes on.

A subscription refused for a reason that waiting cannot fix — the API key
(``-2014/-2015``), the signature (``-1022``), missing credentials — ends
:meth:`UserDataStream.run` with that error for its supervisor to see. Any
other failure is retried with the backoff.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import trio

from daemon.errors import (
    ApiKeyRejectedError,
    SignatureError,
    TradingdError,
    VenueRequestError,
)
from daemon.model.userstream import (
    StreamTerminated,
    UserStreamDown,
    UserStreamEvent,
    UserStreamUp,
)
from daemon.resilience import Jitter, RetryPolicy
from daemon.secrets import Secret
from daemon.venues.binance.codec import wsapi as ws
from daemon.venues.binance.codec.marketdata import ServerShutdown
from daemon.venues.binance.rest import BinanceRestClient
from daemon.venues.binance.wssession import (
    CONNECTION_ERRORS,
    SessionClosed,
    WsApiSession,
    WsApiStats,
    open_session,
    scrub,
)

__all__ = ["UserDataStream"]

log = logging.getLogger("tradingd.venues.binance.userstream")

#: Subscription errors that a retry cannot fix: they end ``run`` (the supervisor sees them).
_FATAL = (ApiKeyRejectedError, SignatureError, VenueRequestError)
#: Endings after which the next connection is made at once (not a failure).
_PROMPT = frozenset({"server_shutdown", "max_age"})


class _ConsumerGone(Exception):
    """Internal: the consumer closed its end of the channel."""


class UserDataStream:
    """One account's user data stream, kept subscribed across connections.

    Args:
        rest: The venue's REST client: its config (credentials) and the venue
            clock and limits it shares (``rest.clock``, ``rest.limits``).
        rng: Jitter source of the reconnect backoff (seed it in tests).
    """

    def __init__(self, rest: BinanceRestClient, *, rng: random.Random | None = None) -> None:
        self._rest = rest
        self._clock = rest.clock
        self._config = rest.config
        self.venue = rest.config.name
        self.stats = WsApiStats()
        self._backoff = RetryPolicy(
            name=f"{self.venue}.userstream",
            base_delay_s=self._config.reconnect_initial_s,
            max_delay_s=self._config.reconnect_max_s,
            jitter=Jitter.EQUAL,
            rng=rng if rng is not None else random.Random(),
        )
        self._connected = False
        self._subscription_id: int | None = None
        self._subscribed_since_ms: int | None = None
        self._subscriptions = 0
        self._events = 0
        self._ignored = 0
        self._reconnects = 0
        self._last_event_ms: int | None = None
        self._last_error: str | None = None
        self._downs: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"UserDataStream({self.venue!r}, {self._config.ws_api_url!r})"

    @property
    def subscribed(self) -> bool:
        """Whether events flow now (between a ``UserStreamUp`` and the next ``Down``)."""
        return self._subscribed_since_ms is not None

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``/status``."""
        return {
            "venue": self.venue,
            "url": self._config.ws_api_url,
            "connected": self._connected,
            "subscribed": self.subscribed,
            "subscribed_since_ms": self._subscribed_since_ms,
            "subscription_id": self._subscription_id,
            "subscriptions": self._subscriptions,
            "events": self._events,
            "ignored": self._ignored,
            "last_event_ms": self._last_event_ms,
            "reconnects": self._reconnects,
            "malformed": self.stats.malformed,
            "downs": dict(self._downs),
            "last_error": self._last_error,
            "connection": self.stats.snapshot(),
        }

    async def run(
        self,
        send: trio.MemorySendChannel[UserStreamEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, subscribe, forward events to ``send``, reconnect forever; until cancelled.

        Reports started (``nursery.start``) after the first subscription.
        Closes ``send`` when it ends (pass a clone if the channel is shared).
        Returns quietly if the consumer closes its receiving end.

        Raises:
            ApiKeyRejectedError, SignatureError, VenueRequestError: the venue
                refused the subscription for a reason a retry cannot fix.
        """
        started = False

        def mark_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        failures = 0
        first = True
        async with send:
            while True:
                if not first:
                    self._reconnects += 1
                first = False
                try:
                    reason, subscribed = await self._connection(send, mark_started)
                except _ConsumerGone:
                    log.info("%s: user stream consumer closed its channel; stopping", self.venue)
                    return
                if reason in _PROMPT:
                    failures = 0
                    continue
                failures = 1 if subscribed else failures + 1
                delay = self._backoff.next_delay_s(failures)
                log.warning(
                    "%s: user data stream reconnecting in %.3fs (%s)",
                    self.venue,
                    delay,
                    self._last_error or reason,
                )
                await trio.sleep(delay)

    async def _connection(
        self, send: trio.MemorySendChannel[UserStreamEvent], mark_started: Callable[[], None]
    ) -> tuple[str, bool]:
        """One connection, its subscriptions and their events; ``(why it ended, subscribed)``."""
        events_send, events_receive = trio.open_memory_channel[ws.WsEvent](
            self._config.stream_queue_size
        )
        subscribed = False
        try:
            async with open_session(self._rest, stats=self.stats, events=events_send) as session:
                self._connected = True
                retire_at = trio.current_time() + self._config.max_connection_age_s
                with events_receive:
                    while True:
                        subscription = await self._subscribe(session)
                        if subscription is None:
                            return "subscribe_failed", subscribed
                        subscribed = True
                        mark_started()  # first: the starter may be the channel's reader
                        await self._up(send, *subscription)
                        reason, detail = await self._pump(
                            session, events_receive, send, subscription[0], retire_at
                        )
                        await self._down(send, reason, detail)
                        if reason != "terminated":
                            return reason, subscribed
        except (*CONNECTION_ERRORS, TradingdError) as exc:
            if isinstance(exc, _FATAL):
                raise
            detail = scrub(f"{type(exc).__name__}: {exc}", *self._secrets())
            if subscribed:  # a close handshake failed after the Down was emitted
                return "closed", subscribed
            self.stats.connect_failures += 1
            self._last_error = detail
            log.warning("%s: user data stream connection failed (%s)", self.venue, detail)
            return "connect_failed", subscribed
        finally:
            self._connected = False

    async def _subscribe(self, session: WsApiSession) -> tuple[int, int] | None:
        """``userDataStream.subscribe.signature``; ``(subscription id, answer's wall ms)``.

        ``None`` when it failed for a reason a new connection may fix.
        """
        spec = ws.subscribe_signature_request()
        try:
            reply = await session.request(spec)
            subscription_id = ws.read_result(
                reply.answer, spec.method, self.venue, ws.subscription_result
            )
        except _FATAL:
            raise
        except (SessionClosed, TradingdError) as exc:
            self._last_error = scrub(f"{type(exc).__name__}: {exc}", *self._secrets())
            log.warning("%s: user data stream subscribe failed (%s)", self.venue, self._last_error)
            return None
        return subscription_id, reply.received_ms

    async def _pump(
        self,
        session: WsApiSession,
        receive: trio.MemoryReceiveChannel[ws.WsEvent],
        send: trio.MemorySendChannel[UserStreamEvent],
        subscription_id: int,
        retire_at: float,
    ) -> tuple[str, str]:
        """Forward one subscription's events until it ends; returns ``(reason, detail)``."""
        while True:
            frame: ws.WsEvent | None = None
            with trio.move_on_at(retire_at):
                try:
                    frame = await receive.receive()
                except trio.EndOfChannel:  # the session retired: everything before is read
                    return session.retire_reason or "closed", session.retire_detail
            if frame is None:
                age = self._config.max_connection_age_s
                return "max_age", f"connection age reached {age:g}s"
            event = frame.event
            # serverShutdown never gets here: the session retires on it.
            if frame.subscription_id not in (None, subscription_id) or isinstance(
                event, ws.OtherEvent | ServerShutdown
            ):
                self._ignored += 1
                continue
            self._events += 1
            self._last_event_ms = self._clock.wall_clock_ms()
            await self._emit(send, event)
            if isinstance(event, StreamTerminated):
                return "terminated", f"eventStreamTerminated (E={event.event_time_ms})"

    async def _up(
        self, send: trio.MemorySendChannel[UserStreamEvent], subscription_id: int, since_ms: int
    ) -> None:
        self._subscriptions += 1
        self._subscription_id = subscription_id
        self._subscribed_since_ms = since_ms
        self._last_error = None
        log.info(
            "%s: user data stream subscribed (subscription %d, since %d)",
            self.venue,
            subscription_id,
            since_ms,
        )
        await self._emit(
            send,
            UserStreamUp(venue=self.venue, since_ms=since_ms, subscription_id=subscription_id),
        )

    async def _down(
        self, send: trio.MemorySendChannel[UserStreamEvent], reason: str, detail: str
    ) -> None:
        self._subscribed_since_ms = None
        self._subscription_id = None
        self._downs[reason] = self._downs.get(reason, 0) + 1
        log.warning("%s: user data stream down: %s (%s)", self.venue, reason, detail)
        await self._emit(
            send, UserStreamDown(venue=self.venue, at_ms=self._clock.wall_clock_ms(), reason=reason)
        )

    async def _emit(
        self, send: trio.MemorySendChannel[UserStreamEvent], event: UserStreamEvent
    ) -> None:
        try:
            await send.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _ConsumerGone from None

    def _secrets(self) -> tuple[Secret | None, ...]:
        return (self._config.api_key, self._config.api_secret)
