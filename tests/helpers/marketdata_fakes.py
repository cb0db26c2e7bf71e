"""A scripted venue and a service harness for capture tests under a virtual clock.

:class:`FakeExchange` is the venue's truth: a trade log per symbol (with a
retention, like ``historicalTrades``), a depth book with update ids, and the
live stream connections. :class:`FakeClient` is what the feed talks to
(REST calls answered from the exchange; ``market_stream`` gives a
:class:`FakeStream` that emits the same events as
:class:`~daemon.venues.binance.BinanceStream`). Everything runs in Trio
time, so tests under ``autojump_clock`` are exact and instant.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from daemon.channels import Queues
from daemon.config import MarketDataConfig
from daemon.errors import VenueUnavailableError
from daemon.marketdata import MarketDataService
from daemon.model.marketdata import DepthSnapshot, DepthUpdate, Trade
from daemon.store import SqliteStore, inline_runner
from daemon.supervise import Supervisor, SupervisorPolicy
from daemon.venues.base import Subscription
from daemon.venues.binance.stream import (
    DisconnectReason,
    MalformedFrame,
    StreamConnected,
    StreamDisconnected,
)
from daemon.venues.sim.server import trio_clock_ms
from tests.helpers.supervision import supervising

VENUE = "fake"
EPOCH_MS = 1_700_000_000_000
POLL_S = 0.01

_DROP = object()


class _Connection:
    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Any](math.inf)


class FakeExchange:
    """The venue's truth, in Trio time."""

    def __init__(
        self,
        symbols: Sequence[str] = ("BTCUSDT",),
        *,
        retention: int = 1_000_000,
        first_trade_id: int = 1,
        reconnect_delay_s: float = 0.1,
    ) -> None:
        self.symbols = tuple(symbols)
        self.retention = retention
        self.trades: dict[str, list[Trade]] = {s: [] for s in symbols}
        self.next_id = dict.fromkeys(symbols, first_trade_id)
        self.connections: list[_Connection] = []
        self.connects = 0
        self.reconnect_delay_s = reconnect_delay_s
        self.clock_ms = trio_clock_ms(EPOCH_MS)
        self.calls: dict[str, int] = {}
        #: The next N historicalTrades calls fail with a transient venue error.
        self.fail_historical = 0
        # Depth: one book per symbol, absolute levels, sequential update ids.
        self.update_id = dict.fromkeys(symbols, 1000)
        self.bids: dict[str, dict[Decimal, Decimal]] = {s: {} for s in symbols}
        self.asks: dict[str, dict[Decimal, Decimal]] = {s: {} for s in symbols}

    # -- trades -------------------------------------------------------------------

    def trade(self, symbol: str = "BTCUSDT", *, publish: bool = True) -> Trade:
        """Make the next trade; publish it on the live connections unless ``publish=False``."""
        tid = self.next_id[symbol]
        self.next_id[symbol] = tid + 1
        price = Decimal(30000) + Decimal(tid % 97) / 100
        qty = Decimal("0.001") * (tid % 7 + 1)
        now = self.clock_ms()
        trade = Trade(
            venue=VENUE,
            symbol=symbol,
            trade_id=tid,
            price=price,
            quantity=qty,
            quote_quantity=price * qty,
            buyer_is_maker=tid % 2 == 0,
            trade_time_ms=now,
            event_time_ms=now,
        )
        self.trades[symbol].append(trade)
        if publish:
            self.publish(trade)
        return trade

    def kept(self, symbol: str) -> list[Trade]:
        """Trades still served by ``historicalTrades``."""
        return self.trades[symbol][-self.retention :]

    # -- depth ----------------------------------------------------------------------

    def depth_change(self, symbol: str = "BTCUSDT", *, publish: bool = True) -> DepthUpdate:
        """Change one level and publish the diff event."""
        uid = self.update_id[symbol] + 1
        self.update_id[symbol] = uid
        price = Decimal(100 + uid % 5)
        qty = Decimal(uid % 3)
        side = self.bids[symbol] if uid % 2 else self.asks[symbol]
        if not uid % 2:
            price += 50
        if qty:
            side[price] = qty
        else:
            side.pop(price, None)
        levels = ((price, qty),)
        update = DepthUpdate(
            venue=VENUE,
            symbol=symbol,
            first_update_id=uid,
            final_update_id=uid,
            bids=levels if uid % 2 else (),
            asks=() if uid % 2 else levels,
            event_time_ms=self.clock_ms(),
        )
        if publish:
            self.publish(update)
        return update

    # -- streams ------------------------------------------------------------------

    def publish(self, event: object) -> None:
        for conn in self.connections:
            conn.send.send_nowait(event)

    def malformed(self, raw: str | bytes) -> None:
        self.publish(MalformedFrame(VENUE, self.connects, raw, "not JSON", 0))

    def drop(self) -> None:
        """End every live connection (the stream reconnects after ``reconnect_delay_s``)."""
        for conn in list(self.connections):
            conn.send.send_nowait(_DROP)
        self.connections.clear()

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1


class FakeStream:
    def __init__(self, exchange: FakeExchange, subscriptions: Sequence[Subscription]) -> None:
        self.exchange = exchange
        self.streams = tuple(f"{s.symbol.lower()}@{s.kind.value}" for s in subscriptions)

    async def run(
        self,
        send: trio.MemorySendChannel[Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        ex = self.exchange
        started = False
        async with send:
            while True:
                ex.connects += 1
                number = ex.connects
                conn = _Connection()
                ex.connections.append(conn)
                if not started:
                    started = True
                    task_status.started()
                opened = trio.current_time()
                await send.send(StreamConnected(VENUE, "fake://", self.streams, number))
                try:
                    async for event in conn.receive:
                        if event is _DROP:
                            break
                        await send.send(event)
                finally:
                    if conn in ex.connections:
                        ex.connections.remove(conn)
                await send.send(
                    StreamDisconnected(
                        VENUE,
                        number,
                        DisconnectReason.CLOSED,
                        "dropped",
                        trio.current_time() - opened,
                    )
                )
                await trio.sleep(ex.reconnect_delay_s)


class FakeClient:
    """The REST and stream client of a :class:`FakeExchange` (REST calls take 10 ms)."""

    name = VENUE
    time_offset_ms = 0

    def __init__(self, exchange: FakeExchange, *, latency_s: float = 0.01) -> None:
        self.exchange = exchange
        self.latency_s = latency_s

    def market_stream(self, subscriptions: Sequence[Subscription]) -> FakeStream:
        return FakeStream(self.exchange, subscriptions)

    async def historical_trades(
        self, symbol: str, from_id: int | None = None, limit: int = 500
    ) -> list[Trade]:
        ex = self.exchange
        ex._call("historical_trades")
        await trio.sleep(self.latency_s)
        if ex.fail_historical:
            ex.fail_historical -= 1
            raise VenueUnavailableError("fake: 503", venue=VENUE, http_status=503)
        kept = ex.kept(symbol)
        if not kept:
            return []
        start = 0 if from_id is None else max(0, from_id - kept[0].trade_id)
        return kept[start : start + limit]

    async def recent_trades(self, symbol: str, limit: int = 500) -> list[Trade]:
        self.exchange._call("recent_trades")
        await trio.sleep(self.latency_s)
        return self.exchange.kept(symbol)[-limit:]

    async def depth(self, symbol: str, limit: int = 100) -> DepthSnapshot:
        ex = self.exchange
        ex._call("depth")
        await trio.sleep(self.latency_s)
        return DepthSnapshot(
            venue=VENUE,
            symbol=symbol,
            last_update_id=ex.update_id[symbol],
            bids=tuple(sorted(ex.bids[symbol].items(), reverse=True))[:limit],
            asks=tuple(sorted(ex.asks[symbol].items()))[:limit],
        )


class StaticLink:
    """A venue link that is up from the start."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def wait_up(self) -> Any:
        return self.client


def settings(**overrides: Any) -> MarketDataConfig:
    fields: dict[str, Any] = {
        "symbols": ("BTCUSDT",),
        "chunk_size": 50,
        "trades_queue_capacity": 100,
        "flush_interval_s": 0.2,
        "snapshot_interval_s": 0,
        "backfill_limit": 10,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.5,
        "heartbeat_interval_s": 2.0,
        "lag_warn_s": 5.0,
        "book_snapshot_limit": 100,
    }
    fields.update(overrides)
    return MarketDataConfig(**fields)


async def open_store(path: Path) -> SqliteStore:
    """A store whose blocking calls run inline (deterministic under the virtual clock)."""
    return await SqliteStore.open(path, runner=inline_runner, wall_clock=lambda: EPOCH_MS / 1000)


@asynccontextmanager
async def running_service(
    store: Any,
    link: Any,
    config: MarketDataConfig,
    *,
    venue: str = VENUE,
    dead_letters: Any = None,
    wall_clock_ms: Callable[[], int] | None = None,
) -> AsyncIterator[MarketDataService]:
    """The service's children under a real one_for_one supervisor; stopped gracefully at exit."""
    service = MarketDataService(
        venue,
        link,
        store,
        dead_letters if dead_letters is not None else store.dead_letters,
        Queues(),
        config,
        wall_clock_ms=wall_clock_ms or trio_clock_ms(EPOCH_MS),
        rng=random.Random(5),
    )
    supervisor = Supervisor(
        "marketdata", service.children(), SupervisorPolicy(max_restarts=3, period_s=10)
    )
    service.supervisor = supervisor  # type: ignore[attr-defined]  # for assertions
    async with supervising(supervisor):
        yield service


async def wait_for(condition: Callable[[], Any], poll_s: float = POLL_S) -> None:
    """Poll ``condition()`` (sync or async) until truthy; the caller's fail_after bounds it."""
    while True:
        result = condition()
        if hasattr(result, "__await__"):
            result = await result
        if result:
            return
        await trio.sleep(poll_s)


def restarts(service: MarketDataService) -> dict[str, int]:
    """Restarts of each child of the service's supervisor (heartbeats, crashes)."""
    status = service.supervisor.status()  # type: ignore[attr-defined]
    return {child.name: child.restarts for child in status.children}


async def stored_ids(store: SqliteStore, symbol: str = "BTCUSDT", venue: str = VENUE) -> list[int]:
    return [t.trade_id for t in await store.market.trades(venue, symbol)]
