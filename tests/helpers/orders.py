"""The real order pipeline over a real store and the real simulator, for tests.

:func:`running_pipeline` starts an :class:`~daemon.orders.service.OrdersService`
as the child of a real :class:`~daemon.supervise.Supervisor`, over a
:class:`~daemon.store.sqlite.SqliteStore` in a temporary directory and the
project's Binance client pointed at a simulator on 127.0.0.1 — the same parts
the daemon wires, minus the HTTP admin API. :class:`StaticVenues` is the
venue access: the real client and the exchangeInfo it loaded.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon.config import OrdersConfig
from daemon.model.instruments import ExchangeInfo
from daemon.orders.ledger import OrderVenue
from daemon.orders.records import IntentRecord
from daemon.orders.service import OrdersService
from daemon.orders.state import OrderState
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.store.sqlite import SqliteStore
from daemon.supervise import ChildSpec, Supervisor, SupervisorPolicy
from daemon.venues.binance import BinanceVenue, UserDataStream
from tests.helpers.sim import SYMBOL, SimHarness, client_config
from tests.helpers.supervision import supervising

__all__ = ["Running", "StaticVenues", "running_pipeline", "wait_state"]


class StaticVenues:
    """Venue access over one live client (``None`` while ``down`` is set)."""

    def __init__(self, name: str, client: Any, info: ExchangeInfo, recv_window_ms: int = 5000):
        self.name = name
        self._client = client
        self.info = info
        self.window = recv_window_ms
        self._up = trio.Event()
        self._up.set()

    @property
    def down(self) -> bool:
        return not self._up.is_set()

    @down.setter
    def down(self, value: bool) -> None:
        if value and self._up.is_set():
            self._up = trio.Event()
        elif not value:
            self._up.set()

    def client(self, venue: str) -> OrderVenue | None:
        assert venue == self.name, venue
        return None if self.down else self._client  # type: ignore[no-any-return]

    async def wait_client(self, venue: str) -> OrderVenue:
        await self._up.wait()
        return self._client  # type: ignore[no-any-return]

    def exchange_info(self, venue: str) -> ExchangeInfo | None:
        return self.info if venue == self.name else None

    def recv_window_ms(self, venue: str) -> int:
        return self.window


class StreamingVenues(StaticVenues):
    """:class:`StaticVenues` with the venue's user data stream, and optionally
    the WebSocket API as the order client (``orders``)."""

    def __init__(
        self,
        name: str,
        client: BinanceVenue,
        info: ExchangeInfo,
        recv_window_ms: int = 5000,
        *,
        orders: Any = None,
        user_stream: bool = True,
    ) -> None:
        super().__init__(name, orders if orders is not None else client, info, recv_window_ms)
        self.venue_client = client
        self.streaming = user_stream

    def user_stream_enabled(self, venue: str) -> bool:
        return venue == self.name and self.streaming

    def user_stream(self, venue: str) -> UserDataStream | None:
        if self.down or not self.streaming:
            return None
        return self.venue_client.user_data_stream()


@attrs.define
class Running:
    service: OrdersService
    venues: StaticVenues
    store: SqliteStore
    supervisor: Supervisor


FAST = OrdersConfig(
    send_timeout_s=2.0,
    section_deadline_s=4.0,
    clock_skew_s=0.0,
    query_lag_s=0.2,
    unknown_retry_s=0.1,
    poll_interval_s=0.1,
    reconcile_interval_s=1.0,
    startup_reconcile_timeout_s=5.0,
    drain_timeout_s=2.0,
)


@asynccontextmanager
async def running_pipeline(
    sim: SimHarness,
    path: Path,
    *,
    settings: OrdersConfig = FAST,
    limits: LimitTable | None = None,
    accounts: dict[str, str] | None = None,
    recv_window_ms: int = 500,
    user_stream: bool = False,
    order_transport: str = "rest",
) -> AsyncIterator[Running]:
    """The pipeline over ``path`` (a store file) and ``sim``; stopped gracefully on exit.

    ``user_stream`` runs the account's user data stream; ``order_transport =
    "ws-api"`` sends orders over the WebSocket API.
    """
    config = client_config(sim, recv_window_ms=recv_window_ms)
    client = BinanceVenue(config, rng=random.Random(3))
    store = await SqliteStore.open(path)
    try:
        await client.sync_time()
        info = await client.exchange_info()
        async with trio.open_nursery() as connections:
            orders = None
            if order_transport == "ws-api":
                orders = client.ws_api_orders()
                await connections.start(orders.run)
            venues: StaticVenues = (
                StreamingVenues(
                    "sim", client, info, recv_window_ms, orders=orders, user_stream=user_stream
                )
                if user_stream or orders is not None
                else StaticVenues("sim", client, info, recv_window_ms)
            )
            async with _pipeline(venues, store, settings, limits, accounts) as running:
                yield running
            connections.cancel_scope.cancel()
    finally:
        await client.aclose()
        await store.aclose()


@asynccontextmanager
async def _pipeline(
    venues: StaticVenues,
    store: SqliteStore,
    settings: OrdersConfig,
    limits: LimitTable | None,
    accounts: dict[str, str] | None,
) -> AsyncIterator[Running]:
    """The order service over ``venues`` and ``store`` as the child of a supervisor."""

    async def open_store() -> SqliteStore:
        return store

    service = OrdersService(
        settings,
        accounts or {"main": "sim"},
        limits or LimitTable(default=RiskLimits(max_orders_per_window=None)),
        venues,
        open_store,
    )
    sup = Supervisor(
        "test",
        [ChildSpec("orders", service.run, start_timeout_s=30, shutdown_grace_s=10)],
        SupervisorPolicy(max_restarts=0),
    )
    async with supervising(sup):
        yield Running(service, venues, store, sup)


async def wait_state(
    service: OrdersService, client_order_id: str, *states: OrderState
) -> IntentRecord:
    """Poll until the order is in one of ``states`` (the caller's fail_after bounds it)."""
    while True:
        record = await service.get(client_order_id)
        if record.state in states:
            return record
        await trio.sleep(0.01)


def limit_request(
    message_id: str,
    *,
    side: str = "BUY",
    price: str = "29000.00",
    quantity: str = "0.010",
    account: str = "main",
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "account": account,
        "symbol": SYMBOL,
        "side": side,
        "type": "LIMIT",
        "quantity": quantity,
        "price": price,
        "time_in_force": "GTC",
    }


def market_request(
    message_id: str, *, side: str = "BUY", quantity: str = "0.010", account: str = "main"
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "account": account,
        "symbol": SYMBOL,
        "side": side,
        "type": "MARKET",
        "quantity": quantity,
    }
