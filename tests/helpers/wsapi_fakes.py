"""A scripted Binance WebSocket API on 127.0.0.1 for the WebSocket API client's tests.

:class:`FakeWsApi` serves ``/ws-api/v3`` with trio-websocket. It checks every
signed request as Binance does (params but ``signature`` sorted by name,
``k=v`` joined with ``&``, HMAC-SHA256 hex; ``apiKey`` must be the test key)
and answers ``-1022`` otherwise; each request is then answered by the
responder routed for its method (one per request, in turn, the last one
repeating), concurrently, so a slow answer does not hold up the next. A
responder returns an :class:`Answer`, or ``None`` for "never answer".

:class:`FakeRest` is the REST side the client syncs its clock with
(``GET /api/v3/time`` over ``httpx2.MockTransport``). :class:`StallProxy` is a
TCP relay that can freeze, so a connection stops answering pings.

The virtual clock for these tests is the ``loopback_clock`` fixture
(``tests/venues/conftest.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx2
import trio
import trio_websocket

from daemon.secrets import Secret, SecretRef
from daemon.venues.binance import BinanceConfig, BinanceRestClient
from tests.helpers.venues import binance_config

__all__ = [
    "API_KEY",
    "API_SECRET",
    "LOCAL_MS",
    "SERVER_AHEAD_MS",
    "Answer",
    "FakeConnection",
    "FakeRest",
    "FakeWsApi",
    "StallProxy",
    "error",
    "ok",
    "rest_client",
    "secret",
    "serving",
    "stall_proxy",
    "wsapi_config",
]

API_KEY = "wsapi-test-key-0123456789abcdef0123456789abcd"
API_SECRET = "wsapi-test-secret-fedcba9876543210fedcba98765"
LOCAL_MS = 1_700_000_000_000
SERVER_AHEAD_MS = 2_500


@attrs.define
class Answer:
    """What the fake answers one request with (``delay_s`` first)."""

    status: int = 200
    result: Any = attrs.field(factory=dict)
    error: dict[str, Any] | None = None
    rate_limits: list[dict[str, Any]] | None = None
    delay_s: float = 0.0


def ok(result: Any = None, **fields: Any) -> Answer:
    return Answer(result={} if result is None else result, **fields)


def error(code: int, msg: str, status: int = 400, **fields: Any) -> Answer:
    return Answer(status=status, result=None, error={"code": code, "msg": msg}, **fields)


Responder = Callable[[dict[str, Any], "FakeConnection"], "Answer | Awaitable[Answer | None] | None"]


@attrs.define(eq=False)
class FakeConnection:
    """One accepted client connection."""

    number: int
    ws: trio_websocket.WebSocketConnection
    frames: list[dict[str, Any]] = attrs.field(factory=list)

    async def send(self, obj: Any) -> None:
        """A JSON text frame (an event, garbage built by the test, …)."""
        await self.ws.send_message(obj if isinstance(obj, str | bytes) else json.dumps(obj))

    async def event(self, event: dict[str, Any], subscription_id: int | None = 0) -> None:
        frame: dict[str, Any] = {"event": event}
        if subscription_id is not None:
            frame["subscriptionId"] = subscription_id
        await self.send(frame)

    async def close(self) -> None:
        await self.ws.aclose()


class FakeWsApi:
    """The scripted server; ``port`` once :func:`serving` runs it."""

    def __init__(self, *, api_key: str = API_KEY, secret: str = API_SECRET) -> None:
        self.api_key = api_key
        self.secret = secret
        self.frames: list[dict[str, Any]] = []
        self.raw_frames: list[str | bytes] = []
        self.bad_signatures = 0
        self.connections: list[FakeConnection] = []
        self.routes: dict[str, list[Responder]] = {}
        self.connected = trio.Event()
        self.port = 0
        self.paths: list[str] = []
        self._changed = trio.Event()

    def route(self, method: str, *responders: Responder | Answer | None) -> None:
        """Answer ``method`` with these in turn (the last repeats); an Answer is constant."""
        self.routes[method] = [_responder(r) for r in responders]

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("method") == method]

    async def wait_connections(self, n: int) -> FakeConnection:
        """Wait until ``n`` connections were accepted; the ``n``-th."""
        await self._wait(lambda: len(self.connections) >= n)
        return self.connections[n - 1]

    async def wait_calls(self, method: str, n: int) -> dict[str, Any]:
        """Wait until ``n`` requests of ``method`` arrived; the ``n``-th."""
        await self._wait(lambda: len(self.calls(method)) >= n)
        return self.calls(method)[n - 1]

    async def _wait(self, condition: Callable[[], bool]) -> None:
        while True:
            changed = self._changed
            if condition():
                return
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        self.paths.append(request.path)
        websocket = await request.accept()
        conn = FakeConnection(len(self.connections) + 1, websocket)
        self.connections.append(conn)
        self.connected.set()
        self._notify()
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    message = await websocket.get_message()
                except trio_websocket.ConnectionClosed:
                    return  # answers in flight finish (or find the connection closed)
                self.raw_frames.append(message)
                frame = json.loads(message)
                self.frames.append(frame)
                conn.frames.append(frame)
                self._notify()
                nursery.start_soon(self._answer, frame, conn)

    async def _answer(self, frame: dict[str, Any], conn: FakeConnection) -> None:
        params = frame.get("params", {})
        answer: Answer | None
        if "signature" in params and not self.verify(params):
            self.bad_signatures += 1
            answer = error(-1022, "Signature for this request is not valid.")
        else:
            responders = self.routes.get(frame["method"])
            if responders is None:
                answer = error(-1000, f"no route for {frame['method']}")
            else:
                responder = responders.pop(0) if len(responders) > 1 else responders[0]
                got = responder(frame, conn)
                answer = await got if inspect.isawaitable(got) else got
        if answer is None:
            return
        if answer.delay_s:
            await trio.sleep(answer.delay_s)
        body: dict[str, Any] = {"id": frame["id"], "status": answer.status}
        if answer.error is not None:
            body["error"] = answer.error
        else:
            body["result"] = answer.result
        if answer.rate_limits is not None:
            body["rateLimits"] = answer.rate_limits
        try:
            await conn.send(body)
        except trio_websocket.ConnectionClosed:
            pass

    def verify(self, params: dict[str, Any]) -> bool:
        """Binance's rule for a signed request, read independently of the client's code."""
        if params.get("apiKey") != self.api_key:
            return False
        text = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
        expected = hmac.new(self.secret.encode(), text.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, str(params["signature"]).lower())


def _responder(value: Responder | Answer | None) -> Responder:
    if isinstance(value, Answer) or value is None:
        return lambda frame, conn: value
    return value


@asynccontextmanager
async def serving(fake: FakeWsApi) -> AsyncIterator[FakeWsApi]:
    """Run ``fake`` on 127.0.0.1 (port 0) for the duration of the block."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                fake.handler,
                "127.0.0.1",
                0,
                None,
                message_queue_size=64,
                max_message_size=1 << 20,
            )
        )
        fake.port = server.port
        yield fake
        nursery.cancel_scope.cancel()


class FakeRest:
    """The REST side: ``GET /api/v3/time`` answers local + ``server_ahead_ms``."""

    def __init__(self) -> None:
        self.local_ms = LOCAL_MS
        self.server_ahead_ms = SERVER_AHEAD_MS
        self.time_calls = 0

    def clock(self) -> int:
        return self.local_ms

    @property
    def server_ms(self) -> int:
        return self.local_ms + self.server_ahead_ms

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/api/v3/time":
            self.time_calls += 1
            return httpx2.Response(200, json={"serverTime": self.server_ms})
        return httpx2.Response(404, json={"code": -1000, "msg": "not here"})


def secret(value: str) -> Secret:
    return Secret(ref=SecretRef("env", "X"), value=value)


def wsapi_config(port: int, **overrides: Any) -> BinanceConfig:
    """Client settings pointing the WebSocket API at a local server (``ws_api_url`` derived)."""
    fields: dict[str, Any] = {
        "rest_url": "https://api.test",
        "ws_url": f"ws://127.0.0.1:{port}",
        "api_key": secret(API_KEY),
        "api_secret": secret(API_SECRET),
        "request_timeout_s": 5.0,
        "connect_timeout_s": 3.0,
        "reconnect_initial_s": 1.0,
        "reconnect_max_s": 8.0,
        "retry_base_delay_s": 0.5,
        "retry_max_delay_s": 1.0,
        "ws_api_ping_interval_s": 10.0,
    }
    fields.update(overrides)
    return binance_config(**fields)


def rest_client(rest: FakeRest, config: BinanceConfig) -> BinanceRestClient:
    return BinanceRestClient(
        config,
        transport=httpx2.MockTransport(rest.handler),
        wall_clock_ms=rest.clock,
        rng=random.Random(7),
    )


class StallProxy:
    """A TCP relay to ``target_port`` that stops relaying (both ways) once frozen."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.port = 0

    async def _pipe(self, source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        try:
            while True:
                data = await source.receive_some(65536)
                if not data:
                    break
                if self.frozen:
                    await trio.sleep_forever()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await sink.aclose()

    async def _relay(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, server)
            nursery.start_soon(self._pipe, server, client)


@asynccontextmanager
async def stall_proxy(target_port: int) -> AsyncIterator[StallProxy]:
    proxy = StallProxy(target_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy._relay, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        yield proxy
        nursery.cancel_scope.cancel()
