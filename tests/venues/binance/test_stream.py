"""BinanceStream against a real trio-websocket server on 127.0.0.1 (port 0).

Time is virtual: a MockClock that jumps only after every task has been
blocked for a while in *real* time, so loopback I/O (microseconds) always
completes before a jump, while the stream's timers (staleness, age, backoff)
run in exact virtual seconds.
"""

from __future__ import annotations

import json
import random

import pytest
import trio
import trio.testing
import trio_websocket

from daemon.model import DepthUpdate, Trade
from daemon.resilience import Jitter, RetryPolicy
from daemon.venues.base import StreamKind, Subscription
from daemon.venues.binance import (
    BinanceStream,
    BinanceVenue,
    DisconnectReason,
    MalformedFrame,
    StreamConnected,
    StreamDisconnected,
    StreamEvent,
)
from tests.helpers.binance_stream import running, stream_config, take, ws_server

from . import payloads as P

SEED = 3
VIRTUAL_LIMIT_S = 1000.0


def trade(trade_id: int, symbol: str = "BTCUSDT") -> str:
    return json.dumps({**P.TRADE_EVENT, "s": symbol, "t": trade_id})


def backoff_delays(n: int, initial_s: float = 1.0, max_s: float = 8.0) -> list[float]:
    """The delays a stream seeded with SEED waits after 1, 2, … n failures in a row."""
    policy = RetryPolicy(
        base_delay_s=initial_s, max_delay_s=max_s, jitter=Jitter.EQUAL, rng=random.Random(SEED)
    )
    return [policy.next_delay_s(i) for i in range(1, n + 1)]


# =========================================================================== delivery


async def test_raw_stream_delivers_trades_and_sends_nothing(
    loopback_clock: trio.testing.MockClock,
) -> None:
    heard: list[str | bytes] = []

    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await ws.send_message(trade(1))
        await ws.send_message(trade(2))
        with trio.move_on_after(20):  # the client must stay silent
            heard.append(await ws.get_message())
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, paths):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"], rng=random.Random(SEED))
            async with running(stream) as events:
                connected, first, second = await take(events, 3)
                await trio.sleep(25)
    assert paths == ["/ws/btcusdt@trade"]
    assert connected == StreamConnected("binance", stream.url, ("btcusdt@trade",), 1)
    assert not connected.reconnect
    assert isinstance(first, Trade) and isinstance(second, Trade)
    assert (first.trade_id, second.trade_id, first.symbol) == (1, 2, "BTCUSDT")
    assert heard == []
    assert stream.stats.messages == 2 and stream.stats.connections == 1


async def test_combined_stream_unwraps_envelopes(loopback_clock: trio.testing.MockClock) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await ws.send_message(json.dumps({"stream": "btcusdt@trade", "data": json.loads(trade(9))}))
        depth = {**P.DEPTH_EVENT, "s": "BTCUSDT"}
        await ws.send_message(json.dumps({"stream": "btcusdt@depth@100ms", "data": depth}).encode())
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, paths):
            venue = BinanceVenue(stream_config(port))
            stream = venue.market_stream(
                [
                    Subscription(StreamKind.TRADES, "BTCUSDT"),
                    Subscription(StreamKind.DEPTH, "BTCUSDT"),
                ]
            )
            async with running(stream) as events:
                _, got_trade, got_depth = await take(events, 3)
            await venue.aclose()
    assert paths == ["/stream?streams=btcusdt@trade/btcusdt@depth@100ms"]
    assert isinstance(got_trade, Trade) and got_trade.trade_id == 9
    assert isinstance(got_depth, DepthUpdate)
    assert (got_depth.first_update_id, got_depth.final_update_id) == (157, 160)


async def test_a_burst_is_delivered_in_order_through_a_small_queue(
    loopback_clock: trio.testing.MockClock,
) -> None:
    """The stream hands on what trio-websocket has received already without waiting per
    frame (stream.DRAIN_MAX at a time); a consumer queue of 3 still gets every event, in
    order, malformed frames in their place, and a serverShutdown inside a burst ends the
    connection at that frame (what follows it is not delivered from this connection)."""
    frames: list[str] = []
    for i in range(1, 601):
        frames.append(trade(i) if i % 97 else "{not json")
    frames.append(json.dumps({"e": "serverShutdown", "E": 1}))
    frames.extend(trade(i) for i in range(601, 610))  # after the shutdown: not delivered

    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        if n == 1:
            for frame in frames:
                await ws.send_message(frame)
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"], rng=random.Random(SEED))
            async with running(stream, capacity=3) as events:
                got = await take(events, 1 + 600 + 1 + 1)  # connected, 600, disconnected, connected
    assert isinstance(got[0], StreamConnected)
    body = got[1:601]
    for i, event in enumerate(body, start=1):
        if i % 97:
            assert isinstance(event, Trade) and event.trade_id == i, (i, event)
        else:
            assert isinstance(event, MalformedFrame), (i, event)
    assert isinstance(got[601], StreamDisconnected)
    assert got[601].reason is DisconnectReason.SERVER_SHUTDOWN
    assert isinstance(got[602], StreamConnected) and got[602].connection_number == 2
    assert stream.stats.messages == 601 and stream.stats.malformed == 6


async def test_trio_websocket_still_keeps_received_messages_where_the_drain_reads_them(
    loopback_clock: trio.testing.MockClock,
) -> None:
    """The drain reads trio-websocket's ``_recv_channel`` (not public API; without it the
    stream is correct but awaits every frame). If an upgrade moves it, this fails."""

    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await ws.send_message(trade(1))
        await ws.send_message(trade(2))
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with (
            ws_server(handler) as (port, _),
            trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws/x") as ws,
        ):
            first = await ws.get_message()
            await trio.sleep(1)  # the second frame arrives meanwhile
            channel = ws._recv_channel
            assert isinstance(channel, trio.MemoryReceiveChannel)
            second = channel.receive_nowait()
    assert (json.loads(first)["t"], json.loads(second)["t"]) == (1, 2)


class _LateFrames:
    """A connection whose frames arrive just as the staleness deadline passes: each
    ``get_message`` waits (shielded) past the deadline, then returns a frame."""

    def __init__(self, frames: list[str], wait_s: float) -> None:
        self.frames = frames
        self.wait_s = wait_s

    async def get_message(self) -> str:
        if not self.frames:
            await trio.sleep_forever()
        with trio.CancelScope(shield=True):
            await trio.sleep(self.wait_s)
        return self.frames.pop(0)


async def test_a_frame_that_ends_its_wait_as_the_deadline_passes_is_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The timed wait's cancel scope lives across waits; when its deadline passes in the
    instant a frame arrives, the frame is still handed on (outside that scope) and the
    connection is not called stale; the next quiet stretch is."""
    stream = BinanceStream(stream_config(1), ["btcusdt@trade"], rng=random.Random(SEED))
    late = _LateFrames([trade(1), trade(2)], wait_s=31.0)  # stale_after_s is 30
    send, receive = trio.open_memory_channel[StreamEvent](10)
    with trio.fail_after(VIRTUAL_LIMIT_S):
        reason, detail, got_data = await stream._pump(late, send, 1)  # type: ignore[arg-type]
    assert detail == "no message for 30s"
    got = [receive.receive_nowait() for _ in range(2)]
    assert [t.trade_id for t in got if isinstance(t, Trade)] == [1, 2]
    assert reason is DisconnectReason.STALE and got_data
    assert trio.current_time() == pytest.approx(31.0 + 31.0 + 30.0)


async def test_pings_are_answered(loopback_clock: trio.testing.MockClock) -> None:
    pongs: list[float] = []

    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        for i in range(3):
            with trio.fail_after(5):
                await ws.ping(f"hb{i}".encode())  # returns when the pong arrives
            pongs.append(trio.current_time())
        await ws.send_message(trade(1))
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"])
            async with running(stream) as events:
                _, got = await take(events, 2)
    assert isinstance(got, Trade)
    assert len(pongs) == 3


async def test_malformed_frames_are_surfaced_and_not_fatal(
    loopback_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await ws.send_message(b"\x00garbage")
        await ws.send_message('{"e":"aggTrade","E":1}')
        await ws.send_message(trade(5))
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"])
            async with running(stream) as events:
                _, bad1, bad2, good = await take(events, 4)
    assert isinstance(bad1, MalformedFrame) and bad1.raw == b"\x00garbage"
    assert bad1.malformed_total == 1 and bad1.connection_number == 1
    assert isinstance(bad2, MalformedFrame) and "aggTrade" in bad2.error
    assert bad2.malformed_total == 2
    assert isinstance(good, Trade) and good.trade_id == 5
    assert stream.stats.malformed == 2 and stream.stats.connections == 1


# =========================================================================== replacement


async def test_a_silent_stream_is_replaced(loopback_clock: trio.testing.MockClock) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await ws.send_message(trade(n))
        await trio.sleep_forever()  # then silence (the connection stays open)

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"], rng=random.Random(SEED))
            async with running(stream) as events:
                first = await take(events, 2)
                lost = await events.receive()
                lost_at = trio.current_time()
                again = await take(events, 2)
                again_at = trio.current_time()
    assert isinstance(first[1], Trade) and first[1].trade_id == 1
    assert isinstance(lost, StreamDisconnected)
    assert lost.reason is DisconnectReason.STALE and lost.connection_number == 1
    assert lost.duration_s == pytest.approx(30.0) and lost_at == pytest.approx(30.0)
    assert isinstance(again[0], StreamConnected) and again[0].reconnect
    assert again[0].connection_number == 2
    assert isinstance(again[1], Trade) and again[1].trade_id == 2
    # After a connection that delivered data, the first backoff step.
    (delay,) = backoff_delays(1)
    assert 0.5 <= delay <= 1.0
    assert again_at == pytest.approx(30.0 + delay)
    assert stream.stats.disconnects == {"stale": 1}


async def test_server_shutdown_reconnects_at_once(loopback_clock: trio.testing.MockClock) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await trio.sleep(5)
        if n == 1:
            await ws.send_message('{"e":"serverShutdown","E":1696933200000}')
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"])
            async with running(stream) as events:
                _, lost, back = await take(events, 3)
                back_at = trio.current_time()
    assert isinstance(lost, StreamDisconnected)
    assert lost.reason is DisconnectReason.SERVER_SHUTDOWN and "1696933200000" in lost.detail
    assert isinstance(back, StreamConnected) and back.connection_number == 2
    assert back_at == pytest.approx(5.0)  # no backoff


async def test_connections_are_retired_before_the_24h_cutoff(
    loopback_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        i = 0
        while True:
            await trio.sleep(10 if i == 0 else 20)  # t = 10, 30, 50, … (never at 100)
            await ws.send_message(trade(n * 1000 + i))
            i += 1

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(
                stream_config(port, max_connection_age_s=100.0), ["btcusdt@trade"]
            )
            async with running(stream) as events:
                seen: list[StreamEvent] = []
                while not any(isinstance(e, StreamConnected) and e.reconnect for e in seen):
                    seen.append(await events.receive())
                back_at = trio.current_time()
    lost = [e for e in seen if isinstance(e, StreamDisconnected)]
    assert len(lost) == 1 and lost[0].reason is DisconnectReason.MAX_AGE
    assert lost[0].duration_s == pytest.approx(100.0)
    assert back_at == pytest.approx(100.0)
    trades = [e.trade_id for e in seen if isinstance(e, Trade)]
    assert trades == [1000, 1001, 1002, 1003, 1004]  # 20 s apart: never stale


async def test_a_closed_connection_is_reported_and_replaced(
    loopback_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await ws.send_message(trade(n))
        if n == 1:
            await trio.sleep(3)
            await ws.aclose(code=1001, reason="going away")
            return
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"], rng=random.Random(SEED))
            async with running(stream) as events:
                _, _, lost, back, got = await take(events, 5)
                back_at = trio.current_time()
    assert isinstance(lost, StreamDisconnected) and lost.reason is DisconnectReason.CLOSED
    assert "1001" in lost.detail and "going away" in lost.detail
    assert isinstance(back, StreamConnected) and back.connection_number == 2
    assert isinstance(got, Trade) and got.trade_id == 2
    assert back_at == pytest.approx(3.0 + backoff_delays(1)[0])


async def test_connect_failures_back_off_exponentially_with_jitter(
    loopback_clock: trio.testing.MockClock,
) -> None:
    rejects = 6

    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        if n <= rejects:
            await request.reject(503)
            return
        ws = await request.accept()
        await ws.send_message(trade(1))
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, paths):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"], rng=random.Random(SEED))
            async with running(stream) as events:  # `start` returns once connected
                connected_at = trio.current_time()
                first, got = await take(events, 2)
    delays = backoff_delays(rejects)
    assert all(0 < d <= 8.0 for d in delays)
    assert delays[-1] >= 4.0  # capped at 8 with equal jitter: at least half of it
    assert connected_at == pytest.approx(sum(delays))
    assert len(paths) == rejects + 1
    assert stream.stats.connect_failures == rejects
    # The consumer sees one connection: failed attempts are not connections.
    assert isinstance(first, StreamConnected) and first.connection_number == 1
    assert isinstance(got, Trade)


async def test_connections_without_data_keep_backing_off(
    loopback_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        if n <= 2:
            await ws.aclose()  # accepted, then dropped before any data
            return
        await ws.send_message(trade(1))
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"], rng=random.Random(SEED))
            async with running(stream) as events:
                seen = await take(events, 6)
                done_at = trio.current_time()
    kinds = [type(e).__name__ for e in seen]
    assert kinds == [
        "StreamConnected",
        "StreamDisconnected",
        "StreamConnected",
        "StreamDisconnected",
        "StreamConnected",
        "Trade",
    ]
    d1, d2 = backoff_delays(2)
    assert done_at == pytest.approx(d1 + d2)


async def test_the_stream_stops_when_the_consumer_leaves(
    loopback_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        for i in range(100):
            await ws.send_message(trade(i))
        await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"])
            send, receive = trio.open_memory_channel[StreamEvent](0)
            async with trio.open_nursery() as nursery:
                await nursery.start(stream.run, send)
                await receive.receive()
                await receive.aclose()
            # The nursery closed by itself: run() returned.
    assert stream.stats.connections == 1
