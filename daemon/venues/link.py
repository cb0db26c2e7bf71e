"""Venue links: one supervised child per ``[venues.NAME]`` keeping its REST side verified.

A link owns the venue's client (:class:`~daemon.venues.binance.BinanceVenue`),
measures the server time offset, loads ``exchangeInfo`` (symbol filters and
the venue's rate limits, which the client then enforces) and refreshes both
periodically. Later layers (market data, orders) take the client from here.

Why the link reports ready *before* the venue answers: an exchange that is
down when the daemon starts must not fail the daemon's start (the supervisor
fails fast on start errors). The link keeps trying with bounded, jittered
backoff instead, and health says ``degraded: venue NAME unreachable`` until
it succeeds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import attrs
import trio
from trio_util import AsyncValue

from daemon.config import VenueConfig
from daemon.errors import TradingdError
from daemon.health import HealthLevel
from daemon.model.instruments import ExchangeInfo
from daemon.secrets import Secret, resolve
from daemon.supervise import ChildContext
from daemon.venues.binance import BinanceVenue, BinanceWsApiOrders, UserDataStream
from daemon.venues.binance.config import BinanceConfig, derive_ws_api_url

log = logging.getLogger("tradingd.venues")

#: How often a healthy link re-measures the time offset and reloads exchangeInfo.
REFRESH_INTERVAL_S = 300.0
#: Backoff after a failed refresh: initial and cap (jittered ±20 %).
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 60.0


def binance_config(
    name: str, venue: VenueConfig, environ: Mapping[str, str] | None = None
) -> BinanceConfig:
    """The client configuration of ``[venues.NAME]`` with its secrets resolved (blocking)."""
    key: Secret | None = resolve(venue.api_key, environ) if venue.api_key else None
    secret: Secret | None = resolve(venue.api_secret, environ) if venue.api_secret else None
    ws_url = venue.ws_url.rstrip("/")
    return BinanceConfig(
        name=name,
        rest_url=venue.rest_url.rstrip("/"),
        ws_url=ws_url,
        # "" means derived from ws_url (BinanceConfig's docstring says how).
        ws_api_url=venue.ws_api_url.rstrip("/") or derive_ws_api_url(ws_url),
        api_key=key,
        api_secret=secret,
        recv_window_ms=venue.recv_window_ms,
        request_timeout_s=venue.request_timeout_s,
        stale_after_s=venue.stale_after_s,
    )


@attrs.define
class VenueLink:
    """The supervised connection to one venue."""

    name: str
    config: VenueConfig
    refresh_interval_s: float = REFRESH_INTERVAL_S
    retry_initial_s: float = RETRY_INITIAL_S
    retry_max_s: float = RETRY_MAX_S
    rng: random.Random = attrs.field(factory=random.Random)
    #: "connecting", "up" or "down"; tasks can wait on it (``await link.state.wait_value("up")``).
    state: AsyncValue = attrs.field(factory=lambda: AsyncValue("connecting"))
    client: BinanceVenue | None = None
    #: The order calls over the WebSocket API (``order_transport = "ws-api"``), else ``None``.
    ws_orders: BinanceWsApiOrders | None = None
    exchange_info: ExchangeInfo | None = None
    last_error: str | None = None
    last_ok_at: float | None = None  # wall clock, for /status
    failures: int = 0
    _up: trio.Event = attrs.field(factory=trio.Event)

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = await trio.to_thread.run_sync(binance_config, self.name, self.config)
        client = BinanceVenue(config, rng=self.rng)
        self.client = client
        self._up = trio.Event()
        self.state.value = "connecting"
        try:
            async with trio.open_nursery() as nursery:
                if self.config.order_transport == "ws-api":
                    ws_orders = client.ws_api_orders()
                    await nursery.start(ws_orders.run)
                    self.ws_orders = ws_orders
                task_status.started()
                await self._refresh_loop(ctx, client)
                nursery.cancel_scope.cancel()
        finally:
            self.client = None
            self.ws_orders = None
            # A later wait_up() waits for the next incarnation's client.
            self._up = trio.Event()
            with trio.move_on_after(2, shield=True):
                await client.aclose()

    async def _refresh_loop(self, ctx: ChildContext, client: BinanceVenue) -> None:
        delay = self.retry_initial_s
        while not ctx.stop_requested:
            ok = await self._refresh(client)
            if ok:
                delay = self.retry_initial_s
                wait = self.refresh_interval_s
            else:
                wait = delay * self.rng.uniform(0.8, 1.2)
                delay = min(delay * 2, self.retry_max_s)
            with trio.move_on_after(wait):
                await ctx.wait_stop_requested()

    @property
    def order_client(self) -> BinanceVenue | BinanceWsApiOrders | None:
        """Where orders go: the WebSocket API client or the REST one (``None`` while down)."""
        if self.config.order_transport == "ws-api":
            return self.ws_orders if self.client is not None else None
        return self.client

    @property
    def user_stream_enabled(self) -> bool:
        """``user_stream`` is on and the venue has keys to sign the subscription with."""
        return self.config.user_stream and self.config.api_key is not None

    def user_stream(self) -> UserDataStream | None:
        """A new user data stream over the current client, or ``None`` while down/disabled."""
        client = self.client
        if client is None or not self.user_stream_enabled or self.state.value != "up":
            return None
        return client.user_data_stream()

    async def wait_up(self) -> BinanceVenue:
        """Wait until the venue answered once (this incarnation); returns its client."""
        while True:
            up = self._up
            await up.wait()
            if self.client is not None and up is self._up:
                return self.client

    async def _refresh(self, client: BinanceVenue) -> bool:
        try:
            offset_ms = await client.sync_time()
            info = await client.exchange_info()
        except TradingdError as exc:
            self.failures += 1
            message = f"{type(exc).__name__}: {exc}"
            if self.state.value != "down" or message != self.last_error:
                log.warning("venue %s unreachable: %s", self.name, message)
            self.state.value = "down"
            self.last_error = message
            return False
        if self.state.value != "up":
            log.info(
                "venue %s up: %d symbols, clock offset %s ms",
                self.name,
                len(info.symbols),
                offset_ms,
            )
        self.state.value = "up"
        self.exchange_info = info
        self.last_ok_at = time.time()
        self._up.set()
        return True

    def check(self) -> tuple[HealthLevel, str | None]:
        """Health: degraded while the venue has not answered or stopped answering."""
        if self.state.value == "up":
            return HealthLevel.HEALTHY, None
        if self.state.value == "connecting":
            return HealthLevel.DEGRADED, f"venue {self.name}: connecting"
        return HealthLevel.DEGRADED, f"venue {self.name} unreachable: {self.last_error}"

    def status(self) -> dict[str, Any]:
        """JSON-able state for ``/status`` (no secrets: the config shows references only)."""
        client = self.client
        return {
            "name": self.name,
            "protocol": self.config.protocol,
            "rest_url": self.config.rest_url,
            "ws_url": self.config.ws_url,
            "order_transport": self.config.order_transport,
            "user_stream": self.user_stream_enabled,
            "state": self.state.value,
            "last_error": self.last_error,
            "last_ok_at": self.last_ok_at,
            "failures": self.failures,
            "symbols": len(self.exchange_info.symbols) if self.exchange_info else None,
            "client": client.snapshot() if client is not None else None,
            "ws_api_orders": self.ws_orders.snapshot() if self.ws_orders is not None else None,
        }
