"""Shared helpers of the venue tests: a real simulator and the real client, wired together.

The interop tests (``tests/venues/test_interop.py``) run the project's Binance
client (:mod:`daemon.venues.binance`) against the bundled simulator
(:mod:`daemon.venues.sim`) over real sockets on 127.0.0.1 (ports 0). The two
share no code, so every passing test is evidence that both read the protocol
the same way.

:class:`SimHarness` keeps the simulator's control API (``/sim/...``) at hand —
faults, the audit log, the published trades, the synthetic market — through a
plain httpx2 client, so what the venue *really* did is read independently of
what the client under test believes. Nothing here is a pytest fixture: each
test builds the simulator it needs inside its own ``trio.fail_after``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import attrs
import httpx2
import trio

from daemon.secrets import Secret, SecretRef
from daemon.venues.binance import BinanceConfig, BinanceRestClient
from daemon.venues.sim.config import (
    DOCS_API_KEY,
    DOCS_SECRET_KEY,
    SYMBOL_PRESETS,
    AccountConfig,
    MarketConfig,
    SimConfig,
)
from daemon.venues.sim.server import SimServer

__all__ = [
    "SYMBOL",
    "SimHarness",
    "client_config",
    "rest_client",
    "running_sim",
    "secret",
    "sim_config",
]

SYMBOL = "BTCUSDT"
#: Polling interval of :meth:`SimHarness.wait_until` (a condition, never a guess).
POLL_S = 0.01


def secret(value: str, name: str = "SIM") -> Secret:
    """A :class:`~daemon.secrets.Secret` holding ``value`` (as if read from ``$name``)."""
    return Secret(ref=SecretRef("env", name), value=value)


def sim_config(**overrides: Any) -> SimConfig:
    """A simulator on ports 0 with BTCUSDT only, the market paused, one docs account."""
    fields: dict[str, Any] = {
        "rest_port": 0,
        "ws_port": 0,
        "market": MarketConfig(paused=True),
        "symbols": (SYMBOL_PRESETS[SYMBOL],),
        "accounts": (AccountConfig(),),
    }
    fields.update(overrides)
    return SimConfig(**fields)


@attrs.define
class SimHarness:
    """A running simulator plus a plain HTTP client of its control API."""

    server: SimServer
    http: httpx2.AsyncClient

    @property
    def rest_url(self) -> str:
        assert self.server.rest_url is not None
        return self.server.rest_url

    @property
    def ws_url(self) -> str:
        assert self.server.ws_url is not None
        return self.server.ws_url

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, path, json=body)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json()

    async def arm(self, **spec: Any) -> dict[str, Any]:
        """Arm one fault (``POST /sim/faults``); returns it with its id."""
        armed = await self.control("POST", "/sim/faults", spec)
        return armed["armed"][0]  # type: ignore[no-any-return]

    async def faults(self) -> list[dict[str, Any]]:
        return (await self.control("GET", "/sim/faults"))["faults"]  # type: ignore[no-any-return]

    async def audit(self, client_order_id: str | None = None) -> list[dict[str, Any]]:
        """Orders the venue accepted (all, or those with ``client_order_id``)."""
        path = "/sim/audit"
        if client_order_id is not None:
            path += f"?clientOrderId={client_order_id}"
        return (await self.control("GET", path))["orders"]  # type: ignore[no-any-return]

    async def status(self) -> dict[str, Any]:
        return await self.control("GET", "/sim/status")  # type: ignore[no-any-return]

    async def requests(self) -> int:
        """``/api/v3`` requests the simulator has received so far."""
        return int((await self.status())["requests"])

    async def published_trades(
        self, from_id: int, limit: int, symbol: str = SYMBOL
    ) -> list[dict[str, Any]]:
        """The venue's own record of its trades (``GET /sim/trades``)."""
        answer = await self.control(
            "GET", f"/sim/trades?symbol={symbol}&fromId={from_id}&limit={limit}"
        )
        return answer["trades"]  # type: ignore[no-any-return]

    async def market(self) -> dict[str, Any]:
        return await self.control("GET", "/sim/market")  # type: ignore[no-any-return]

    async def set_market(self, *, paused: bool | None = None, steps: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {"steps": steps}
        if paused is not None:
            body["paused"] = paused
        return await self.control("POST", "/sim/market", body)  # type: ignore[no-any-return]

    async def market_order(self, side: str, quantity: str, symbol: str = SYMBOL) -> list[int]:
        """A synthetic market order (someone else trading); returns the trade ids it made."""
        answer = await self.control(
            "POST",
            "/sim/market/order",
            {"symbol": symbol, "side": side, "quantity": quantity},
        )
        return answer["tradeIds"]  # type: ignore[no-any-return]

    async def balances(self, api_key: str = DOCS_API_KEY) -> dict[str, dict[str, Decimal]]:
        answer = await self.control("GET", "/sim/balances")
        return {
            asset: {k: Decimal(v) for k, v in amounts.items()}
            for asset, amounts in answer["accounts"][api_key].items()
        }

    @staticmethod
    async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
        """Poll ``condition()`` until it is true; the caller's ``fail_after`` bounds the wait.

        Polling, because the condition lives in another service (read over HTTP).
        """
        while not await condition():  # noqa: ASYNC110 - remote state, no event to wait on
            await trio.sleep(POLL_S)

    async def wait_for_stream_connections(self, n: int) -> None:
        """Wait until the simulator has attached ``n`` stream connections.

        A client's handshake completes a moment before the server side is
        subscribed, so a message published in between would not reach it.
        """

        async def attached() -> bool:
            return int((await self.status())["streamConnections"]) == n

        await self.wait_until(attached)


@asynccontextmanager
async def running_sim(
    config: SimConfig | None = None, *, wall_clock: Callable[[], int] | None = None
) -> AsyncIterator[SimHarness]:
    """A simulator on 127.0.0.1 (ports 0) for the duration of the block."""
    server = SimServer(config or sim_config(), wall_clock=wall_clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        assert server.rest_url is not None
        try:
            async with httpx2.AsyncClient(base_url=server.rest_url, timeout=10) as http:
                yield SimHarness(server, http)
        finally:
            nursery.cancel_scope.cancel()


def client_config(sim: SimHarness, **overrides: Any) -> BinanceConfig:
    """Client settings for tests: the sim's URLs and docs keys, short timeouts and delays."""
    fields: dict[str, Any] = {
        "name": "sim",
        "rest_url": sim.rest_url,
        "ws_url": sim.ws_url,
        "api_key": secret(DOCS_API_KEY, "SIM_KEY"),
        "api_secret": secret(DOCS_SECRET_KEY, "SIM_SECRET"),
        "request_timeout_s": 5.0,
        "connect_timeout_s": 2.0,
        "retry_base_delay_s": 0.01,
        "retry_max_delay_s": 0.05,
        "retry_max_elapsed_s": 5.0,
        "limiter_max_wait_s": 5.0,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
        "stale_after_s": 30.0,
    }
    fields.update(overrides)
    return BinanceConfig(**fields)


@asynccontextmanager
async def rest_client(
    sim: SimHarness,
    *,
    wall_clock_ms: Callable[[], int] | None = None,
    **overrides: Any,
) -> AsyncIterator[BinanceRestClient]:
    """The real REST client pointed at ``sim`` (seeded jitter)."""
    kwargs: dict[str, Any] = {"rng": random.Random(7)}
    if wall_clock_ms is not None:
        kwargs["wall_clock_ms"] = wall_clock_ms
    async with BinanceRestClient(client_config(sim, **overrides), **kwargs) as client:
        yield client
