"""Bench mode: pre-encoded trade frames with backpressure (``/sim/bench``).

Over real sockets (:func:`running_sim`, 127.0.0.1, port 0): the frames a plain
trio-websocket client receives — complete, in id order, raw and combined, the
same fields and encoding as the normal trade stream, decoded by tradingd's own
codec — the trades ``historicalTrades`` serves, the answers of the control
routes. In virtual time (``SimServer.run_market`` and in-memory streams, as in
``test_virtual_time.py``): pacing, backpressure against a slow reader, pings and
other streams between chunks, stopping, trades held back during generation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.testing
import wsproto.events
from trio_websocket import WebSocketConnection, open_websocket_url, wrap_client_stream
from wsproto.connection import Connection, ConnectionType

from daemon.http import HTTPError, Request
from daemon.model import Trade as ModelTrade
from daemon.venues.binance.codec import parse_stream_message
from daemon.venues.sim import benchfeed, streams
from daemon.venues.sim.benchfeed import STOP_GRACE_S, FrameBuffer, frame_header
from daemon.venues.sim.config import SYMBOL_PRESETS, MarketConfig, StreamsConfig
from daemon.venues.sim.server import SimServer, trio_clock_ms
from tests.helpers.sim import SimHarness, running_sim, sim_config
from tests.helpers.sim_api import TIMEOUT_S, make_config

EPOCH_MS = 1_700_000_000_000
BTC = SYMBOL_PRESETS["BTCUSDT"]
RAW = "/ws/btcusdt@trade"
COMBINED = "/stream?streams=btcusdt@trade"


# ------------------------------------------------------------------------------ helpers


async def post_bench(sim: SimHarness, body: Any) -> tuple[int, Any]:
    response = await sim.http.post("/sim/bench/trades", json=body)
    return response.status_code, response.json()


async def bench_doc(sim: SimHarness) -> dict[str, Any]:
    return await sim.control("GET", "/sim/bench")  # type: ignore[no-any-return]


async def wait_finished(sim: SimHarness) -> dict[str, Any]:
    async def finished() -> bool:
        return not (await bench_doc(sim))["running"]

    await sim.wait_until(finished)
    return await bench_doc(sim)


async def texts(ws: WebSocketConnection, n: int) -> list[str]:
    out = []
    for _ in range(n):
        message = await ws.get_message()
        assert isinstance(message, str)
        out.append(message)
    return out


@asynccontextmanager
async def virtual_sim(**overrides: Any) -> AsyncIterator[tuple[SimServer, trio.Nursery]]:
    server = SimServer(make_config(**overrides), wall_clock=trio_clock_ms(EPOCH_MS))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_market)
        try:
            yield server, nursery
        finally:
            nursery.cancel_scope.cancel()


async def connect(
    server: SimServer, nursery: trio.Nursery, resource: str, *, lockstep: bool = False
) -> WebSocketConnection:
    """A client over in-memory streams; ``lockstep``: no buffer at all (pure backpressure)."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client, remote = pair()
    nursery.start_soon(server.hub.handle_tcp, remote)
    ws = await wrap_client_stream(nursery, client, "sim", resource)  # type: ignore[arg-type]
    await connections(server, 1)
    return ws


async def connections(server: SimServer, n: int) -> None:
    """Wait (virtual time) until the hub has ``n`` connections attached."""
    while server.hub.connection_count != n:  # noqa: ASYNC110 - no event to wait on
        await trio.sleep(0.001)


async def control(server: SimServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A control request straight to the handler (no HTTP: virtual time)."""
    raw = b"" if body is None else json.dumps(body).encode()
    try:
        response = await server.rest(Request(method, path, body=raw))
    except HTTPError as exc:
        return exc.status, {"error": exc.message}
    return response.status, json.loads(response.body)


# ------------------------------------------------------------------------------ frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 200, 65535, 65536, 70000])
def test_frame_header_matches_wsproto(size: int) -> None:
    payload = "x" * size
    server = Connection(ConnectionType.SERVER)
    expected = server.send(wsproto.events.TextMessage(data=payload))
    assert frame_header(size) + payload.encode() == expected


def test_frame_buffer_spans_and_payloads() -> None:
    buffer = FrameBuffer()
    payloads = [b"a" * 10, b"b" * 130, b"c" * 70000, b"d"]
    for p in payloads:
        buffer.append(p)
    assert len(buffer) == 4
    assert list(streams.frame_payloads(buffer.span(0, 4))) == [p.decode() for p in payloads]
    assert list(streams.frame_payloads(buffer.span(1, 3))) == [p.decode() for p in payloads[1:3]]
    assert buffer.frames_per_chunk(10**9) >= 4


async def test_relies_on_trio_websocket_internals_without_extensions() -> None:
    """Fails when trio-websocket's write lock or stream move: bench mode would fall back."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config()) as sim:
            offer = [(b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits")]
            async with open_websocket_url(f"{sim.ws_url}{RAW}", extra_headers=offer) as ws:
                await sim.wait_for_stream_connections(1)
                (conn,) = sim.server.hub.subscribers("btcusdt@trade")
                assert isinstance(streams.direct_writer(conn.ws), streams.DirectWriter)
                assert dict(ws.handshake_headers).get(b"sec-websocket-extensions") is None
                status, _ = await post_bench(sim, {"symbol": "BTCUSDT", "count": 50})
                assert status == 202
                frames = [json.loads(t) for t in await texts(ws, 50)]
                assert [f["t"] for f in frames] == list(range(1, 51))


# ------------------------------------------------------------------------------ real sockets


async def test_frames_complete_in_order_raw_and_combined_like_the_normal_stream() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config()) as sim:
            async with (
                open_websocket_url(f"{sim.ws_url}{RAW}") as raw,
                open_websocket_url(f"{sim.ws_url}{COMBINED}") as combined,
            ):
                await sim.wait_for_stream_connections(2)
                # One trade the normal way, as the reference for fields and encoding.
                (normal_id,) = await sim.market_order("BUY", "0.001")
                normal = (await texts(raw, 1))[0]
                normal_combined = json.loads((await texts(combined, 1))[0])
                status, accepted = await post_bench(
                    sim, {"symbol": "BTCUSDT", "count": 3000, "rate": 0}
                )
                assert status == 202
                assert accepted == {
                    "symbol": "BTCUSDT",
                    "first_id": normal_id + 1,
                    "last_id": normal_id + 3000,
                    "count": 3000,
                    "rate": 0,
                    "connections": 2,
                }
                raw_texts = await texts(raw, 3000)
                combined_texts = await texts(combined, 3000)
            doc = await wait_finished(sim)
            published = await sim.published_trades(normal_id + 1, 3000)
            status_doc = await sim.status()
    assert doc["phase"] == "done" and doc["sent"] == [3000, 3000]
    assert doc["send_s"] >= 0 and doc["generated_s"] > 0
    assert status_doc["benchRunning"] is False and status_doc["benchFramesSent"] == 6000
    reference = json.loads(normal)
    ids = list(range(normal_id + 1, normal_id + 3001))
    for text, envelope_text in zip(raw_texts, combined_texts, strict=True):
        frame = json.loads(text)
        envelope = json.loads(envelope_text)
        # The same keys in the same order, the same types, the same compact encoding.
        assert list(frame) == list(reference)
        assert [type(v) for v in frame.values()] == [type(v) for v in reference.values()]
        assert json.dumps(frame, separators=(",", ":")) == text
        assert list(envelope) == list(normal_combined) == ["stream", "data"]
        assert envelope == {"stream": "btcusdt@trade", "data": frame}
        assert json.dumps(envelope, separators=(",", ":")) == envelope_text
    assert [json.loads(t)["t"] for t in raw_texts] == ids
    # tradingd's own codec reads both forms, and they are the venue's record of its trades.
    decoded = [parse_stream_message(t) for t in raw_texts]
    assert decoded == [parse_stream_message(t) for t in combined_texts]
    assert all(isinstance(t, ModelTrade) for t in decoded)
    assert [(t["id"], t["price"], t["qty"], t["time"], t["isBuyerMaker"]) for t in published] == [
        (json.loads(x)["t"], *_fields(x)) for x in raw_texts
    ]
    # Realistic values: near the last price, lot multiples, both sides.
    last = Decimal(reference["p"])
    lot = BTC.min_qty * BTC.lot_multiple
    for t in decoded:
        assert isinstance(t, ModelTrade)
        assert abs(t.price - last) <= 10 * BTC.tick_size
        assert t.price % BTC.tick_size == 0
        assert t.quantity % lot == 0 and t.quantity > 0
    assert {t.buyer_is_maker for t in decoded if isinstance(t, ModelTrade)} == {True, False}


def _fields(text: str) -> tuple[str, str, int, bool]:
    frame = json.loads(text)
    return frame["p"], frame["q"], frame["T"], frame["m"]


async def test_historical_trades_serve_the_bench_trades() -> None:
    config = sim_config(market=MarketConfig(paused=True, trade_retention=5000))
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(config) as sim:
            status, accepted = await post_bench(sim, {"symbol": "BTCUSDT", "count": 4000})
            assert status == 202 and accepted["connections"] == 0
            doc = await wait_finished(sim)
            assert doc["phase"] == "done" and doc["sent"] == []
            r = await sim.http.get(
                "/api/v3/historicalTrades",
                params={"symbol": "BTCUSDT", "fromId": 3990, "limit": 20},
            )
            assert r.status_code == 200, r.text
            assert [t["id"] for t in r.json()] == list(range(3990, 4001))
            market = await sim.market()
            assert market["symbols"]["BTCUSDT"]["lastTradeId"] == 4000
            # The engine's next trade continues after the bench's ids.
            assert await sim.market_order("SELL", "0.001") == [4001]


async def test_a_slow_consumer_is_not_dropped() -> None:
    """The normal path drops a client more than ``send_queue`` behind; bench mode waits."""
    config = sim_config(streams=StreamsConfig(send_queue=2))
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(config) as sim:
            async with open_websocket_url(f"{sim.ws_url}{RAW}") as ws:
                await sim.wait_for_stream_connections(1)
                status, _ = await post_bench(sim, {"symbol": "BTCUSDT", "count": 20000})
                assert status == 202
                frames = await texts(ws, 20000)
                assert not ws.closed
                assert (await sim.status())["streamConnections"] == 1
            assert [json.loads(f)["t"] for f in frames] == list(range(1, 20001))


async def test_refused_while_the_market_runs_or_a_run_is_going_and_delete_stops() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config()) as sim:
            await sim.set_market(paused=False)
            status, body = await post_bench(sim, {"symbol": "BTCUSDT", "count": 10})
            assert status == 409 and "paused" in body["error"]
            await sim.set_market(paused=True)
            async with open_websocket_url(f"{sim.ws_url}{RAW}") as ws:
                await sim.wait_for_stream_connections(1)
                body = {"symbol": "BTCUSDT", "count": 100_000, "rate": 1000}
                status, accepted = await post_bench(sim, body)
                assert status == 202
                await ws.get_message()
                status, busy = await post_bench(sim, {"symbol": "BTCUSDT", "count": 10})
                assert status == 409 and "DELETE /sim/bench" in busy["error"]
                stopped = await sim.control("DELETE", "/sim/bench")
                assert stopped["running"] is False and stopped["phase"] == "stopped"
                assert 0 < stopped["sent"][0] < 100_000
                # The connection is still good: a control request is answered.
                await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
                while True:
                    reply = json.loads(await ws.get_message())
                    if "id" in reply:
                        break
                assert reply == {"result": ["btcusdt@trade"], "id": 7}
                # A stopped run frees the bench; its ids stay taken.
                status, again = await post_bench(sim, {"symbol": "BTCUSDT", "count": 1})
                assert status == 202 and again["first_id"] == accepted["last_id"] + 1


async def test_idle_document_and_delete_without_a_run() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config()) as sim:
            idle = await bench_doc(sim)
            assert idle["running"] is False and idle["phase"] == "idle"
            assert idle["symbol"] is None and idle["sent"] == [] and idle["count"] == 0
            assert await sim.control("DELETE", "/sim/bench") == idle
            status_doc = await sim.status()
            assert status_doc["benchRunning"] is False and status_doc["benchFramesSent"] == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"count": 10}, "symbol"),
        ({"symbol": "NOPE", "count": 10}, "symbol"),
        ({"symbol": "btcusdt", "count": 10}, "symbol"),
        ({"symbol": "BTCUSDT"}, "count"),
        ({"symbol": "BTCUSDT", "count": 0}, "count"),
        ({"symbol": "BTCUSDT", "count": benchfeed.MAX_COUNT + 1}, "count"),
        ({"symbol": "BTCUSDT", "count": True}, "count"),
        ({"symbol": "BTCUSDT", "count": 1.5}, "count"),
        ({"symbol": "BTCUSDT", "count": 10, "rate": -1}, "rate"),
        ({"symbol": "BTCUSDT", "count": 10, "rate": "fast"}, "rate"),
        ({"symbol": "BTCUSDT", "count": 10, "speed": 1}, "unknown key"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_bodies_answer_400(body: Any, fragment: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config()) as sim:
            status, answer = await post_bench(sim, body)
            assert status == 400
            assert set(answer) == {"error"} and fragment in answer["error"]
            assert (await bench_doc(sim))["phase"] == "idle"


async def test_a_body_that_is_not_json_answers_400() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim(sim_config()) as sim:
            for content in (b"{count: 1", b"", b"\xff"):
                r = await sim.http.post("/sim/bench/trades", content=content)
                assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
            # JSON, but a number Python reads as infinity.
            huge = b'{"symbol": "BTCUSDT", "count": 10, "rate": 1e400}'
            r = await sim.http.post("/sim/bench/trades", content=huge)
            assert r.status_code == 400 and "rate" in r.json()["error"]
            assert (await bench_doc(sim))["phase"] == "idle"


# ------------------------------------------------------------------------------ virtual time


async def test_a_paced_rate_takes_the_expected_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with virtual_sim() as (server, nursery):
        ws = await connect(server, nursery, RAW)
        received: list[int] = []

        async def read() -> None:
            while len(received) < 1000:
                received.append(json.loads(await ws.get_message())["t"])

        nursery.start_soon(read)
        start = trio.current_time()
        status, _ = await control(
            server, "POST", "/sim/bench/trades", {"symbol": "BTCUSDT", "count": 1000, "rate": 2000}
        )
        assert status == 202
        # Frame k leaves at start + (k - 1) / rate, in 10 ms ticks: 501 by 0.25 s.
        await trio.sleep_until(start + 0.255)
        assert server.bench.snapshot()["sent"] == [501]
        await server.bench.current.done.wait()  # type: ignore[union-attr]
        doc = server.bench.snapshot()
        assert doc["started_at_s"] == pytest.approx(start, abs=1e-9)
        assert doc["finished_at_s"] - start == pytest.approx(0.5, abs=1e-6)
        assert doc["send_s"] == pytest.approx(0.5, abs=1e-6)
        await trio.sleep(0.01)
        assert received == list(range(1, 1001))


async def test_backpressure_against_a_reader_without_buffers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lockstep stream: every write waits for the reader, who takes 5 ms per message.

    The first chunk takes about 10 s to go through; the pings (every second)
    wait for it and go between two chunks, and are answered in time.
    """
    config = StreamsConfig(send_queue=1, ping_interval_s=1.0, pong_timeout_s=15.0)
    async with virtual_sim(streams=config) as (server, nursery):
        ws = await connect(server, nursery, RAW, lockstep=True)
        run = server.bench.start("BTCUSDT", 2000, 0)
        ids = []
        for i in range(2000):
            ids.append(json.loads(await ws.get_message())["t"])
            await trio.sleep(0.005)
            if i == 1000:
                assert run.running and run.sent[0] < 2000
        await run.done.wait()
        assert ids == list(range(1, 2001))
        assert run.sent == [2000] and not ws.closed
        assert server.hub.connection_count == 1


async def test_pings_and_other_streams_go_between_chunks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    streams_config = StreamsConfig(ping_interval_s=0.5, pong_timeout_s=0.2)
    async with virtual_sim(streams=streams_config) as (server, nursery):
        ws = await connect(server, nursery, "/stream?streams=btcusdt@trade/btcusdt@depth@100ms")
        run = server.bench.start("BTCUSDT", 300, 100)  # 3 s
        trades: list[int] = []
        depth: list[dict[str, Any]] = []

        async def read() -> None:
            while len(trades) < 300:
                message = json.loads(await ws.get_message())
                if message["stream"] == "btcusdt@trade":
                    trades.append(message["data"]["t"])
                else:
                    assert message["data"]["e"] == "depthUpdate"
                    depth.append(message["data"])

        async with trio.open_nursery() as readers:
            readers.start_soon(read)
            await trio.sleep(1.0)
            # A book change in the middle of the run: one depthUpdate between trade frames.
            server.engine.place_synthetic(
                "BTCUSDT", "BUY", Decimal("0.001"), price=Decimal("29000"), now_ms=0
            )
        assert trades == list(range(1, 301))
        # The seeded book's first flush, then the order placed at 1 s.
        assert len(depth) == 2 and depth[1]["b"] == [["29000.00000000", "0.00100000"]]
        await run.done.wait()
        assert run.finished_at_s is not None and run.started_at_s is not None
        assert run.finished_at_s - run.started_at_s == pytest.approx(2.99, abs=1e-6)
        assert not ws.closed  # six pings were answered in time


async def test_trades_made_during_generation_are_held_then_follow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with virtual_sim() as (server, nursery):
        ws = await connect(server, nursery, RAW)
        count = 3 * benchfeed.GENERATE_BATCH
        run = server.bench.start("BTCUSDT", count, 0)
        # Still generating: someone trades; the id comes after the run's.
        order = server.engine.place_synthetic("BTCUSDT", "SELL", Decimal("0.001"), now_ms=0)
        assert order.fills and order.fills[0].trade_id == count + 1
        await run.done.wait()
        log = server.trade_logs["BTCUSDT"]
        assert [t.id for t in log.from_id(count - 1, 10, audit=True)] == [
            count - 1,
            count,
            count + 1,
        ]
        ids = [json.loads(await ws.get_message())["t"] for _ in range(count + 1)]
        # Published as soon as generation ended, on the normal path: out of order.
        assert sorted(ids) == list(range(1, count + 2))
        assert [i for i in ids if i <= count] == list(range(1, count + 1))


async def test_delete_aborts_a_connection_stuck_in_a_chunk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with virtual_sim() as (server, nursery):
        ws = await connect(server, nursery, RAW, lockstep=True)
        run = server.bench.start("BTCUSDT", 5000, 0)
        await ws.get_message()  # the writer is now in its first chunk; nobody reads on
        began = trio.current_time()
        status, doc = await control(server, "DELETE", "/sim/bench")
        assert status == 200
        assert trio.current_time() - began == pytest.approx(STOP_GRACE_S)
        assert doc["phase"] == "stopped" and doc["running"] is False and run.sent == [0]
        await connections(server, 0)  # aborted: a frame may be cut in half


async def test_without_trio_websocket_internals_frames_go_one_by_one(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "direct_writer", lambda ws: None)
    async with virtual_sim() as (server, nursery):
        ws = await connect(server, nursery, COMBINED)
        run = server.bench.start("BTCUSDT", 500, 0)
        messages = [json.loads(await ws.get_message()) for _ in range(500)]
        await run.done.wait()
        assert [m["data"]["t"] for m in messages] == list(range(1, 501))
        assert run.sent == [500]
