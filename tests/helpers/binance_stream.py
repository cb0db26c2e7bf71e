"""A WebSocket server on 127.0.0.1 for the Binance stream client's tests.

:func:`ws_server` serves a test's handler (one call per connection);
:func:`stream_config` points a :class:`~daemon.venues.binance.BinanceStream` at
it and :func:`running` runs the stream, yielding its events (:func:`take`).
The virtual clock for these tests is the ``loopback_clock`` fixture
(``tests/venues/conftest.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio_websocket

from daemon.venues.binance import BinanceConfig, BinanceStream, StreamEvent
from tests.helpers.venues import binance_config

Handler = Callable[[trio_websocket.WebSocketRequest, int], Awaitable[None]]


@asynccontextmanager
async def ws_server(handler: Handler) -> AsyncIterator[tuple[int, list[str]]]:
    """Serve ``handler(request, connection_number)``; yields (port, requested paths)."""
    paths: list[str] = []

    async def serve(request: trio_websocket.WebSocketRequest) -> None:
        paths.append(request.path)
        try:
            await handler(request, len(paths))
        except trio_websocket.ConnectionClosed:
            pass  # the client left: normal for these tests

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, serve, "127.0.0.1", 0, None)
        )
        yield server.port, paths
        nursery.cancel_scope.cancel()


def stream_config(port: int, **overrides: Any) -> BinanceConfig:
    """Client settings for a stream from ``ws_server`` (the REST URL is never used)."""
    fields: dict[str, Any] = {
        "rest_url": "http://127.0.0.1:1",
        "ws_url": f"ws://127.0.0.1:{port}",
        "stale_after_s": 30.0,
        "reconnect_initial_s": 1.0,
        "reconnect_max_s": 8.0,
        "connect_timeout_s": 5.0,
    }
    fields.update(overrides)
    return binance_config(**fields)


@asynccontextmanager
async def running(
    stream: BinanceStream, capacity: int = 100
) -> AsyncIterator[trio.MemoryReceiveChannel[StreamEvent]]:
    """Run ``stream`` for the duration of the block; yields its events."""
    send, receive = trio.open_memory_channel[StreamEvent](capacity)
    async with trio.open_nursery() as nursery:
        await nursery.start(stream.run, send)
        yield receive
        nursery.cancel_scope.cancel()


async def take(receive: trio.MemoryReceiveChannel[StreamEvent], n: int) -> list[StreamEvent]:
    """The next ``n`` events."""
    return [await receive.receive() for _ in range(n)]
