"""A raw Binance REST caller against the in-process simulator (the simulator's own tests).

The tests talk to the simulator the way any client would: httpx2 for REST,
trio-websocket for streams, and a signing helper written here from Binance's
documentation (not the simulator's own code, and not the client's), so a
signature bug on the server side cannot hide behind the same bug in the test.
:func:`running_sim_server` yields the bare :class:`~daemon.venues.sim.server.SimServer`
(two symbols, two accounts by default: :func:`make_config`); :func:`api_for` a
signing client of it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any

import attrs
import httpx2
import trio

from daemon.venues.sim.config import (
    DOCS_API_KEY,
    DOCS_SECRET_KEY,
    SYMBOL_PRESETS,
    AccountConfig,
    MarketConfig,
    SimConfig,
    StreamsConfig,
)
from daemon.venues.sim.server import SimServer
from tests.helpers.sim_control import SimControl

#: Outer bound for every I/O test; each takes well under a second.
TIMEOUT_S = 15

OTHER_KEY = "otherKey0123456789"
OTHER_SECRET = "otherSecret"

#: The parameters of a LIMIT BUY of 0.01 BTCUSDT at 20000 (GTC), far below the
#: market: it rests. Read-only; ``LIMIT_BUY | {...}`` for a variant.
LIMIT_BUY: MappingProxyType[str, str] = MappingProxyType(
    {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01",
        "price": "20000",
    }
)


class ManualClock:
    """A wall clock (ms) that only moves when told to."""

    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


def make_config(**overrides: Any) -> SimConfig:
    """A test config: ports 0, market paused, two accounts; fields overridable."""
    market = overrides.pop("market", MarketConfig(paused=True))
    streams = overrides.pop("streams", StreamsConfig())
    base: dict[str, Any] = {
        "rest_port": 0,
        "ws_port": 0,
        "market": market,
        "streams": streams,
        "symbols": (SYMBOL_PRESETS["BTCUSDT"], SYMBOL_PRESETS["LTCBTC"]),
        "accounts": (
            AccountConfig(),
            AccountConfig(api_key=OTHER_KEY, secret_key=OTHER_SECRET),
        ),
    }
    base.update(overrides)
    return SimConfig(**base)


@asynccontextmanager
async def running_sim_server(
    config: SimConfig | None = None, *, wall_clock: Callable[[], int] | None = None
) -> AsyncIterator[SimServer]:
    """A simulator on 127.0.0.1 (ports 0) for the duration of the block."""
    server = SimServer(config or make_config(), wall_clock=wall_clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def hmac_hex(secret: str, payload: str) -> str:
    """HMAC-SHA256 hex, exactly as the Binance docs compute it with openssl."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


@attrs.define
class Api(SimControl):
    """A minimal Binance REST caller for tests (and a client of the sim's control API)."""

    http: httpx2.AsyncClient
    key: str = DOCS_API_KEY
    secret: str = DOCS_SECRET_KEY
    clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000

    async def get(self, path: str, **params: Any) -> httpx2.Response:
        return await self.http.get(path, params={k: str(v) for k, v in params.items()})

    async def signed(
        self,
        method: str,
        path: str,
        *,
        in_body: bool = False,
        key: str | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
        **params: Any,
    ) -> httpx2.Response:
        """A SIGNED request: params + timestamp, HMAC over the encoded string."""
        fields = {k: str(v) for k, v in params.items()}
        fields["timestamp"] = str(self.clock() if timestamp is None else timestamp)
        query = urllib.parse.urlencode(fields)
        signature = hmac_hex(secret or self.secret, query)
        headers = {"X-MBX-APIKEY": key or self.key}
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return await self.http.request(
                method, path, content=f"{query}&signature={signature}", headers=headers
            )
        return await self.http.request(
            method, f"{path}?{query}&signature={signature}", headers=headers
        )

    async def order(self, **params: Any) -> httpx2.Response:
        return await self.signed("POST", "/api/v3/order", **params)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, path, json=body)
        assert response.status_code < 300, response.text
        return response.json()


@asynccontextmanager
async def api_for(server: SimServer, **kwargs: Any) -> AsyncIterator[Api]:
    assert server.rest_url is not None
    async with httpx2.AsyncClient(base_url=server.rest_url, timeout=10) as http:
        yield Api(http, **kwargs)
