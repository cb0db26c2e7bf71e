"""A raw Binance WebSocket API client for the simulator's own tests.

Written here from ``web-socket-api.md`` (not the simulator's code, not the
daemon's client): one trio-websocket connection to ``<ws_url>/ws-api/v3``,
requests ``{"id", "method", "params"}`` matched to their answers by id, and
user data stream events (``{"subscriptionId", "event"}``) kept aside in
arrival order. SIGNED params are signed the documented way: every param but
``signature`` sorted by name, ``name=value`` joined by ``&``, not encoded,
HMAC-SHA256 hex.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY


def ws_sign(secret: str, params: dict[str, Any]) -> str:
    """The documented HMAC signature of ``params`` (``signature`` itself excluded)."""
    payload = "&".join(f"{k}={_text(params[k])}" for k in sorted(params) if k != "signature")
    return hmac.new(secret.encode(), payload.encode("utf-8"), hashlib.sha256).hexdigest()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class WsApiClient:
    """One WebSocket API connection, with answers by id and events in order."""

    def __init__(
        self,
        ws: WebSocketConnection,
        *,
        key: str = DOCS_API_KEY,
        secret: str = DOCS_SECRET_KEY,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.ws = ws
        self.key = key
        self.secret = secret
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._ids = itertools.count(1)
        self.answers: dict[Any, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque()
        #: Every frame received, in order (answers and events).
        self.frames: list[dict[str, Any]] = []

    def signed(self, **params: Any) -> dict[str, Any]:
        """``params`` plus ``apiKey``, ``timestamp`` and their ``signature``."""
        out = dict(params)
        out.setdefault("apiKey", self.key)
        out.setdefault("timestamp", self.clock())
        out["signature"] = ws_sign(self.secret, out)
        return out

    async def send(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        """Send one request; returns its id (``request_id=`` to choose one, even ``None``)."""
        request_id = kw["request_id"] if "request_id" in kw else next(self._ids)
        request: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        await self.ws.send_message(json.dumps(request))
        return request_id

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send_message(frame)

    async def _read(self) -> dict[str, Any]:
        frame = json.loads(await self.ws.get_message())
        self.frames.append(frame)
        if "event" in frame and "status" not in frame:
            self.events.append(frame)
        else:
            self.answers[frame.get("id")] = frame
        return frame

    async def answer(self, request_id: Any) -> dict[str, Any]:
        """The answer to ``request_id`` (events read meanwhile are kept)."""
        while request_id not in self.answers:
            await self._read()
        return self.answers.pop(request_id)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return await self.answer(await self.send(method, params, **kw))

    async def signed_call(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.call(method, self.signed(**params))

    async def event(self) -> dict[str, Any]:
        """The next user data stream event frame (``{"subscriptionId", "event"}``)."""
        while not self.events:
            await self._read()
        return self.events.popleft()

    async def events_until(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Event payloads up to and including the first for which ``pred`` holds."""
        out: list[dict[str, Any]] = []
        while True:
            event = (await self.event())["event"]
            out.append(event)
            if pred(event):
                return out

    async def no_event_for(self, seconds: float) -> None:
        """Assert that no event arrives for ``seconds``."""
        with trio.move_on_after(seconds):
            event = await self.event()
            raise AssertionError(f"unexpected event {event}")


@asynccontextmanager
async def ws_api(ws_url: str, query: str = "", **kwargs: Any) -> AsyncIterator[WsApiClient]:
    """A :class:`WsApiClient` on ``<ws_url>/ws-api/v3[?query]`` for the block."""
    url = f"{ws_url}/ws-api/v3" + (f"?{query}" if query else "")
    async with open_websocket_url(url) as ws:
        yield WsApiClient(ws, **kwargs)
