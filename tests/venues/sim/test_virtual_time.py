"""Timing, in virtual time: the market pace, depth cadences and the timed stream faults.

The simulator runs without listeners (``SimServer.run_market``) and stream
clients connect over in-memory streams to ``StreamHub.handle_tcp``, so nothing
waits on a real socket and ``autojump_clock`` gives exact times. The wall
clock follows Trio's (``trio_clock_ms``), so exchange timestamps are exact too.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from daemon.venues.sim.config import MarketConfig, StreamsConfig
from daemon.venues.sim.faults import FaultSpec
from daemon.venues.sim.server import SimServer, trio_clock_ms
from tests.helpers.sim_api import make_config

EPOCH_MS = 1_700_000_000_000


@asynccontextmanager
async def virtual_sim(**overrides: Any) -> AsyncIterator[tuple[SimServer, trio.Nursery]]:
    server = SimServer(make_config(**overrides), wall_clock=trio_clock_ms(EPOCH_MS))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_market)
        try:
            yield server, nursery
        finally:
            nursery.cancel_scope.cancel()


async def connect(server: SimServer, nursery: trio.Nursery, resource: str) -> WebSocketConnection:
    client, remote = trio.testing.memory_stream_pair()
    nursery.start_soon(server.hub.handle_tcp, remote)
    return await wrap_client_stream(nursery, client, "sim", resource)  # type: ignore[arg-type]


async def test_market_pace_is_exact(autojump_clock: trio.testing.MockClock) -> None:
    async with virtual_sim(market=MarketConfig(events_per_s=10)) as (server, _):
        start = trio.current_time()
        await trio.sleep(1.0 + 1e-6)
        assert server.market.events == 10
        server.market.pause()
        await trio.sleep(5)
        assert server.market.events == 10
        server.market.resume()
        await trio.sleep(0.5 + 1e-6)
        assert server.market.events == 15
        assert trio.current_time() - start == pytest.approx(6.5, abs=1e-5)


async def test_same_seed_same_market(autojump_clock: trio.testing.MockClock) -> None:
    async def run(seed: int) -> list[tuple[int, str, str, bool]]:
        market = MarketConfig(events_per_s=100, seed=seed)
        async with virtual_sim(market=market) as (server, _):
            await trio.sleep(3)
            log = server.trade_logs["BTCUSDT"]
            trades = log.from_id(0, 10_000, audit=True)
            return [(t.id, str(t.price), str(t.qty), t.buyer_is_maker) for t in trades]

    first, again, other = await run(7), await run(7), await run(8)
    assert len(first) > 20
    assert first == again
    assert first != other
    assert [t[0] for t in first] == list(range(1, len(first) + 1))


async def test_depth_cadences(autojump_clock: trio.testing.MockClock) -> None:
    async with virtual_sim(market=MarketConfig(events_per_s=50)) as (server, nursery):
        slow = await connect(server, nursery, "/ws/btcusdt@depth")
        fast = await connect(server, nursery, "/ws/btcusdt@depth@100ms")
        slow_events = [json.loads(await slow.get_message()) for _ in range(3)]
        fast_events = [json.loads(await fast.get_message()) for _ in range(5)]
    slow_times = [e["E"] for e in slow_events]
    assert [b - a for a, b in itertools.pairwise(slow_times)] == [1000, 1000]
    assert all(t % 1000 == 0 for t in slow_times)
    for events in (slow_events, fast_events):
        assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(events))
    assert all(e["E"] % 100 == 0 for e in fast_events)


async def test_ws_drop_every_n_seconds(autojump_clock: trio.testing.MockClock) -> None:
    drop = FaultSpec(kind="ws_drop", every_s=30.0, count=1)
    async with virtual_sim(faults=(drop,), market=MarketConfig(events_per_s=5)) as (
        server,
        nursery,
    ):
        await trio.sleep(10)
        ws = await connect(server, nursery, "/ws/btcusdt@trade")
        opened = trio.current_time()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.get_message()
        # Armed at 0, the connection opened at 10: it dies 30 s after it opened.
        assert trio.current_time() - opened == pytest.approx(30.0, abs=1e-3)
        assert info.value.reason.code == 1006
        # count=1: the next connection lives on.
        again = await connect(server, nursery, "/ws/btcusdt@trade")
        with trio.move_on_after(60):
            while True:
                await again.get_message()
        assert not again.closed


async def test_ws_stall_then_resume(autojump_clock: trio.testing.MockClock) -> None:
    async with virtual_sim(market=MarketConfig(events_per_s=20, trade_probability=0.5)) as (
        server,
        nursery,
    ):
        ws = await connect(server, nursery, "/ws/btcusdt@trade")
        first = json.loads(await ws.get_message())
        server.faults.arm(FaultSpec(kind="ws_stall", duration_s=5.0), trio.current_time())
        stalled_at = trio.current_time()
        after = json.loads(await ws.get_message())
        elapsed = trio.current_time() - stalled_at
        assert 5.0 <= elapsed < 6.0
        assert not ws.closed
        # The trades made during the stall were never sent: a gap the client must backfill.
        missed = server.trade_logs["BTCUSDT"].from_id(first["t"] + 1, 10_000)
        missed = [t for t in missed if t.id < after["t"]]
        assert len(missed) > 10
        stall_end_ms = EPOCH_MS + round((stalled_at + 5.0) * 1000)
        assert all(t.time_ms <= stall_end_ms for t in missed)
        assert after["T"] >= stall_end_ms


async def test_ws_shutdown_every_n_seconds(autojump_clock: trio.testing.MockClock) -> None:
    fault = FaultSpec(kind="ws_shutdown", every_s=10.0, grace_s=2.0, stream="btcusdt@depth")
    async with virtual_sim(faults=(fault,)) as (server, nursery):
        depth = await connect(server, nursery, "/stream?streams=btcusdt@depth")
        trades = await connect(server, nursery, "/ws/btcusdt@trade")  # not targeted
        start = trio.current_time()
        while True:
            message = json.loads(await depth.get_message())
            if message["stream"] == "!serverShutdown":
                break
        assert trio.current_time() - start == pytest.approx(10.0, abs=1e-3)
        assert message["data"] == {"e": "serverShutdown", "E": EPOCH_MS + 10_000}
        with pytest.raises(ConnectionClosed):
            while True:
                await depth.get_message()
        assert trio.current_time() - start == pytest.approx(12.0, abs=1e-3)
        assert not trades.closed


async def test_connection_lifetime_and_pings(autojump_clock: trio.testing.MockClock) -> None:
    streams = StreamsConfig(max_connection_s=100.0, ping_interval_s=20.0, pong_timeout_s=60.0)
    async with virtual_sim(streams=streams) as (server, nursery):
        ws = await connect(server, nursery, "/ws/btcusdt@depth")
        start = trio.current_time()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.get_message()
        assert trio.current_time() - start == pytest.approx(100.0, abs=1e-3)
        assert info.value.reason.code == 1000
