"""The WebSocket API at ``<ws_url>/ws-api/v3``, as ``ws-api.binance.com`` serves it.

It is mounted on the simulator's WebSocket listener
(:meth:`daemon.venues.sim.streams.StreamHub.mount`) and serves, one JSON
request per text frame (:mod:`daemon.venues.sim.wsframes`):

* every operation of :class:`~daemon.venues.sim.api.SimApi` by its name —
  ``ping``, ``time``, ``exchangeInfo``, ``depth``, ``trades.recent``,
  ``trades.historical``, ``order.place``, ``order.cancel``, ``order.status``,
  ``openOrders.status``, ``myTrades``, ``account.status`` — with the REST
  side's parameters, checks, error codes, statuses, weights and ORDERS
  counting (the same code runs);
* ``userDataStream.subscribe.signature``, ``userDataStream.unsubscribe``
  (one subscription by ``subscriptionId``, or all) and
  ``session.subscriptions`` (weight 2 each); events are
  :mod:`daemon.venues.sim.userstream`'s.

SIGNED requests carry ``apiKey``, ``timestamp`` and ``signature`` among their
params; the signature covers every other parameter sorted by name
(:func:`~daemon.venues.sim.wsframes.signature_payload`). A missing ``apiKey``
is ``-1102``; the rest is :meth:`SimApi.authenticate`'s (``-2014``/``-2015``,
``-1022``, ``-1021``).

Per request, in order: the weight is charged to the client IP, shared with
REST (``429``/``418`` answers carry ``error.data`` with ``serverTime`` and
``retryAfter``; a banned client is disconnected after its answer), then the
``wsapi_*`` faults of phase ``before``, the method, the faults of phase
``after``, and ``wsapi_delay``. An unknown method answers
``-1020 This operation is not supported.`` (status 400). Answers carry
``rateLimits`` unless ``returnRateLimits`` is ``false`` in the request's
params or, as the default of every request, in the connection URL's query.
Connecting costs weight 2; an IP over its limit is refused at the handshake
(HTTP 429/418).

Requests are processed one at a time, in arrival order (each is atomic with
respect to the matching engine); a delayed answer is sent from its own task,
so later answers overtake it. The connection is pinged like a market stream
connection (``[streams]`` ``ping_interval_s``, ``pong_timeout_s``) and ends
after ``max_connection_s``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from daemon.venues.sim import protocol as p
from daemon.venues.sim.api import Headers, SimApi
from daemon.venues.sim.config import RateLimitConfig, StreamsConfig
from daemon.venues.sim.faults import DropMode, FaultInjector, FaultSpec
from daemon.venues.sim.limits import RateLimiter
from daemon.venues.sim.market import WallClock
from daemon.venues.sim.params import SIGNED, Params
from daemon.venues.sim.protocol import ApiError
from daemon.venues.sim.userstream import (
    SLOW_SUBSCRIBER,
    TERMINATE_TIMEOUT_S,
    Subscription,
    UserStreamHub,
    deliver,
)
from daemon.venues.sim.wsframes import (
    BadFrame,
    RateLimitReport,
    Request,
    answer,
    dumps,
    error_answer,
    param_strings,
    parse_request,
    signature_payload,
)

__all__ = ["PATH", "WsApi"]

log = logging.getLogger("tradingd.sim.wsapi")

#: Where the WebSocket API listens on the simulator's WebSocket port.
PATH: Final = "/ws-api/v3"
#: Weight of opening a connection, and of each user data stream request.
CONNECT_WEIGHT: Final = 2
SUBSCRIPTION_WEIGHT: Final = 2
#: Subscription ids one connection may use over its lifetime.
MAX_SUBSCRIPTION_IDS: Final = 65535
#: Seconds granted to a closing handshake before the TCP stream is just closed.
CLOSE_TIMEOUT_S: Final = 2.0
#: How often a connection re-reads the fault timers (they may change at run time).
TIMER_POLL_S: Final = 0.5
#: Error codes of the WebSocket API's own (``errors.md``).
UNSUPPORTED_OPERATION: Final = -1020
SUBSCRIPTION_ACTIVE: Final = -2035
SUBSCRIPTION_INACTIVE: Final = -2036
MAXIMUM_SUBSCRIPTION_IDS: Final = -2042
#: Parameters of the WebSocket API itself, never passed to an operation.
_WS_ONLY: Final = frozenset({"apiKey", "returnRateLimits"})


class _Closing(Exception):
    """Internal: end this connection (``mode`` says how; ``None``: the peer is gone)."""

    def __init__(self, mode: DropMode | None, reason: str) -> None:
        super().__init__(reason)
        self.mode = mode
        self.reason = reason


def _ip(remote: object) -> str:
    address = getattr(remote, "address", None)
    return str(address) if address is not None else str(remote)


def _retry_data(exc: ApiError, now_ms: int) -> dict[str, Any] | None:
    """``error.data`` of a 429/418 answer: ``serverTime`` and ``retryAfter`` (ms)."""
    retry_after = dict(exc.headers).get("Retry-After")
    if retry_after is None or not retry_after.isdigit():
        return None
    return {"serverTime": now_ms, "retryAfter": now_ms + int(retry_after) * 1000}


class WsApi:
    """The ``/ws-api/v3`` endpoint of one simulator: its methods and its connections."""

    def __init__(
        self,
        *,
        api: SimApi,
        limiter: RateLimiter,
        faults: FaultInjector,
        users: UserStreamHub,
        streams: StreamsConfig,
        rate_limits: Sequence[RateLimitConfig],
        clock: WallClock,
    ) -> None:
        self.api = api
        self.limiter = limiter
        self.faults = faults
        self.users = users
        self.streams = streams
        self.clock = clock
        self.rate_limits = RateLimitReport(rate_limits)
        self.sessions: set[_Session] = set()
        self.requests = 0

    @property
    def connection_count(self) -> int:
        return len(self.sessions)

    def drop_all(self, mode: DropMode = "abort") -> int:
        """End every WebSocket API connection now; returns how many there were."""
        sessions = list(self.sessions)
        for session in sessions:
            session.finish(_Closing(mode, "dropped"))
        return len(sessions)

    async def open(
        self, request: WebSocketRequest, tcp: trio.abc.Stream
    ) -> Callable[[], Awaitable[None]] | None:
        """Accept (or refuse, over its weight) one handshake; returns the session to run."""
        ip = _ip(request.remote)
        query = urllib.parse.parse_qs(request.path.partition("?")[2])
        return_rate_limits = query.get("returnRateLimits", ["true"])[0] != "false"
        try:
            self.limiter.admit(ip, CONNECT_WEIGHT, self.clock())
        except ApiError as exc:
            headers = [(k.encode(), v.encode()) for k, v in exc.headers]
            await request.reject(exc.status, extra_headers=headers, body=dumps(exc.body()).encode())
            return None
        ws = await request.accept()
        return _Session(self, ws, tcp, ip, return_rate_limits=return_rate_limits).run


class _Session:
    """One WebSocket API connection: its requests, its subscriptions and its timers."""

    def __init__(
        self,
        owner: WsApi,
        ws: WebSocketConnection,
        tcp: trio.abc.Stream,
        ip: str,
        *,
        return_rate_limits: bool,
    ) -> None:
        self.owner = owner
        self.ws = ws
        self.tcp = tcp
        self.ip = ip
        self.return_rate_limits = return_rate_limits
        self.opened_at = trio.current_time()
        self.cancel_scope = trio.CancelScope()
        self.end: _Closing | None = None
        self.streams = _UserStreams(self)
        self.nursery: trio.Nursery | None = None

    def finish(self, closing: _Closing) -> None:
        """End the connection (from any task)."""
        if self.end is None:
            self.end = closing
        self.cancel_scope.cancel()

    # -- tasks ----------------------------------------------------------------------

    async def run(self) -> None:
        owner = self.owner
        owner.sessions.add(self)
        try:
            with self.cancel_scope:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    nursery.start_soon(self._receiver)
                    nursery.start_soon(self._pinger)
                    nursery.start_soon(self._timers)
        finally:
            owner.sessions.discard(self)
            for sub in list(self.streams.by_id.values()):
                sub.stop("connection closed", discard=True)
        closing = self.end or _Closing("close", "ended")
        log.debug("ws-api connection %s ends: %s", self.ip, closing.reason)
        if closing.mode == "abort":
            await trio.aclose_forcefully(self.tcp)
            return
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            await self.ws.aclose(1000 if closing.mode == "close" else 1001, closing.reason)
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.tcp)

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_message(text)
        except ConnectionClosed:
            self.finish(_Closing(None, "peer closed"))
            raise

    async def _receiver(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                await self._handle(message)
        except ConnectionClosed:
            self.finish(_Closing(None, "peer closed"))

    async def _pinger(self) -> None:
        config = self.owner.streams
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
        """Lifetime, timed ``wsapi_drop`` and timed ``userstream_terminate``."""
        faults = self.owner.faults
        end_of_life = self.opened_at + self.owner.streams.max_connection_s
        while True:
            now = trio.current_time()
            deadline, spec, target = end_of_life, None, None
            planned = faults.wsapi_deadline(self.opened_at, now)
            if planned is not None and planned[0] < deadline:
                (deadline, spec), target = planned, None
            for sub in [s for s in self.streams.by_id.values() if s.active]:
                planned = faults.userstream_deadline(sub.started_at, now)
                if planned is not None and planned[0] < deadline:
                    (deadline, spec), target = planned, sub
            if deadline > now:
                await trio.sleep_until(min(deadline, now + TIMER_POLL_S))
                continue
            if spec is None:
                self.finish(_Closing("close", "connection lifetime reached"))
                return
            faults.record_timed_hit(spec)
            if target is None:
                log.info("fault wsapi_drop every_s: %s", spec.mode)
                self.finish(_Closing(spec.mode, "fault: wsapi_drop every_s"))
                return
            log.info("fault userstream_terminate every_s: subscription %d ends", target.id)
            target.stop("fault: userstream_terminate every_s", discard=True)

    async def _send_later(self, delay_s: float, text: str) -> None:
        await trio.sleep(delay_s)
        try:
            await self.send(text)
        except ConnectionClosed:
            pass

    # -- one request ------------------------------------------------------------------

    async def _handle(self, message: str | bytes) -> None:
        owner = self.owner
        owner.requests += 1
        try:
            request = parse_request(message)
        except BadFrame as bad:
            await self.send(dumps(bad.answer))
            return
        wanted = self.return_rate_limits
        flag = request.params.get("returnRateLimits")
        if isinstance(flag, bool):
            wanted = flag
        elif flag in ("true", "false"):
            wanted = flag == "true"
        op = owner.api.operations.get(request.method)
        if op is None and request.method not in _OWN_METHODS:
            unknown = ApiError(UNSUPPORTED_OPERATION, "This operation is not supported.")
            await self.send(dumps(error_answer(request.id, unknown)))
            return
        try:
            values = param_strings(request.params)
            bad_params: ApiError | None = None
        except ApiError as exc:
            values, bad_params = {}, exc
        # 1. weight
        try:
            if op is not None:
                usage = owner.api.admit(self.ip, op, values.get)
            else:
                usage = owner.limiter.admit(self.ip, SUBSCRIPTION_WEIGHT, owner.clock())
        except ApiError as exc:
            limits = owner.rate_limits.report(exc.headers) if wanted else None
            data = _retry_data(exc, owner.clock())
            await self.send(dumps(error_answer(request.id, exc, limits, data=data)))
            if exc.status == 418:
                self.finish(_Closing("close", "IP banned"))
            return
        # 2. faults before processing
        now = trio.current_time()
        fault = owner.faults.take_wsapi("before", request.method, now)
        if fault is not None and await self._fault(fault, request, usage, wanted, processed=False):
            return
        # 3. the method
        try:
            if bad_params is not None:
                raise bad_params
            if op is not None:
                result, headers = await self._operation(request, values)
            else:
                result, headers = self.streams.handle(request, values), ()
            text = dumps(answer(request.id, result, self._limits(wanted, headers, usage)))
        except ApiError as exc:
            limits = self._limits(wanted, exc.headers, usage)
            text = dumps(error_answer(request.id, exc, limits))
        # 4. faults after processing, delay
        now = trio.current_time()
        fault = owner.faults.take_wsapi("after", request.method, now)
        if fault is not None and await self._fault(fault, request, usage, wanted, processed=True):
            return
        delay_s = owner.faults.take_wsapi_delay(request.method, now)
        if delay_s > 0 and self.nursery is not None:
            log.info("fault wsapi_delay: answer to %s held %.3f s", request.method, delay_s)
            self.nursery.start_soon(self._send_later, delay_s, text)
            return
        await self.send(text)

    def _limits(
        self, wanted: bool, headers: Headers, usage: Headers
    ) -> list[dict[str, Any]] | None:
        return self.owner.rate_limits.report(headers, usage) if wanted else None

    async def _fault(
        self, fault: FaultSpec, request: Request, usage: Headers, wanted: bool, *, processed: bool
    ) -> bool:
        """Apply one ``wsapi_*`` fault; ``True`` when the real answer must not be sent."""
        phase = "after" if processed else "before"
        log.info("fault %s %s processing %s", fault.kind, phase, request.method)
        if fault.kind == "wsapi_drop":
            self.finish(_Closing(fault.mode, f"fault: wsapi_drop {phase} {request.method}"))
            return True
        if fault.kind == "wsapi_no_answer":
            return True
        default_code = p.UNKNOWN if processed else p.DISCONNECTED
        default_msg = (
            p.MSG_UNKNOWN_5XX
            if processed
            else "Internal error; unable to process your request. Please try again."
        )
        exc = ApiError(
            fault.code if fault.code is not None else default_code,
            fault.msg if fault.msg is not None else default_msg,
            fault.status or 503,
        )
        await self.send(dumps(error_answer(request.id, exc, self._limits(wanted, (), usage))))
        return True

    async def _operation(self, request: Request, values: dict[str, str]) -> tuple[Any, Headers]:
        """One :class:`SimApi` operation: its answer body and headers."""
        api = self.owner.api
        op = api.operations[request.method]
        params = Params({k: v for k, v in values.items() if k not in _WS_ONLY}, transport="ws-api")
        api_key = values.get("apiKey")
        if op.security == "SIGNED" and api_key is None:
            raise p.mandatory("apiKey")
        result = await api.call(
            op, params, api_key=api_key, payloads=lambda: [signature_payload(values)]
        )
        return result.body, result.headers

class _UserStreams:
    """The user data stream subscriptions of one connection (``userDataStream.*``)."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.by_id: dict[int, Subscription] = {}
        self._next_id = 0

    async def deliver(self, sub: Subscription) -> None:
        owner = self.session.owner
        try:
            await deliver(sub, self.session.send, owner.faults, owner.clock)
        except ConnectionClosed:
            pass
        finally:
            sub.stop("connection closed", discard=True)  # no-op unless cancelled
            self.by_id.pop(sub.id, None)

    async def watch_termination(self, sub: Subscription) -> None:
        """A slow subscriber's connection is aborted unless it takes ``eventStreamTerminated``."""
        with trio.move_on_after(TERMINATE_TIMEOUT_S):
            await sub.done.wait()
            return
        self.session.finish(_Closing("abort", SLOW_SUBSCRIBER))

    def ended(self, sub: Subscription) -> None:
        """Called synchronously, possibly from inside a matching engine operation: never raises."""
        self.session.owner.users.detach(sub)
        log.info("user data stream subscription %d ends: %s", sub.id, sub.end_reason)
        if sub.end_reason != SLOW_SUBSCRIBER:
            return
        try:
            if self.session.nursery is None:
                raise RuntimeError("not running")
            self.session.nursery.start_soon(self.watch_termination, sub)
        except RuntimeError:  # the connection is ending anyway
            self.session.finish(_Closing("abort", SLOW_SUBSCRIBER))

    def handle(self, request: Request, values: dict[str, str]) -> Any:
        """The user data stream methods."""
        params = Params({k: v for k, v in values.items() if k not in _WS_ONLY}, transport="ws-api")
        if request.method == "userDataStream.subscribe.signature":
            api_key = values.get("apiKey")
            if api_key is None:
                raise p.mandatory("apiKey")
            account = self.session.owner.api.authenticate(
                "SIGNED", api_key, params, lambda: [signature_payload(values)]
            )
            params.only(SIGNED)
            return {"subscriptionId": self.subscribe(account)}
        if request.method == "userDataStream.unsubscribe":
            params.only(frozenset({"subscriptionId"}))
            wanted = params.integer("subscriptionId")
            if wanted is None:
                targets = list(self.by_id.values())
            else:
                sub = self.by_id.get(wanted)
                if sub is None or not sub.active:
                    raise ApiError(
                        SUBSCRIPTION_INACTIVE, "User Data Stream subscription not active."
                    )
                targets = [sub]
            for sub in targets:
                sub.stop("unsubscribed", discard=False)
            return {}
        params.only(frozenset())  # session.subscriptions
        return [{"subscriptionId": i} for i, s in sorted(self.by_id.items()) if s.active]

    def subscribe(self, account: str) -> int:
        if any(s.active and s.account == account for s in self.by_id.values()):
            raise ApiError(SUBSCRIPTION_ACTIVE, "User Data Stream subscription already active.")
        if self._next_id >= MAX_SUBSCRIPTION_IDS or self.session.nursery is None:
            raise ApiError(
                MAXIMUM_SUBSCRIPTION_IDS, "Maximum subscription ID reached for this connection."
            )
        sub = Subscription(
            self._next_id,
            account,
            self.session.owner.streams.send_queue,
            self.ended,
        )
        self._next_id += 1
        self.by_id[sub.id] = sub
        self.session.owner.users.attach(sub)
        self.session.nursery.start_soon(self.deliver, sub)
        log.info("user data stream subscription %d for %s…", sub.id, account[:8])
        return sub.id


#: The WebSocket API's own methods (not :class:`SimApi` operations).
_OWN_METHODS: Final = frozenset(
    {"userDataStream.subscribe.signature", "userDataStream.unsubscribe", "session.subscriptions"}
)
