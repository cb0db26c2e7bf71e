"""WebSocket streams over real sockets: payloads, envelopes, depth consistency, control.

Clients are plain ``trio_websocket`` connections written here (not the
project's Binance client), all on 127.0.0.1 under ``fail_after``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx2
import pytest
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from daemon.venues.sim import serve_sim
from daemon.venues.sim.config import MarketConfig, StreamsConfig
from tests.helpers.sim_api import TIMEOUT_S, Api, api_for, make_config, running_sim_server

LIVE = MarketConfig(events_per_s=400, trade_probability=0.5)


async def _wait_for_connections(api: Api, n: int) -> None:
    """The server side of a WebSocket is attached a moment after the client's handshake."""
    for _ in range(1000):
        if (await api.control("GET", "/sim/status"))["streamConnections"] >= n:
            return
        await trio.sleep(0.005)
    raise AssertionError(f"{n} stream connections never showed up")


async def _messages(ws: trio_websocket.WebSocketConnection, n: int) -> list[Any]:
    return [json.loads(await ws.get_message()) for _ in range(n)]


async def test_raw_trade_stream_matches_published_trades() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(make_config(market=LIVE)) as sim, api_for(sim) as api:
            async with open_websocket_url(f"{sim.ws_url}/ws/btcusdt@trade") as ws:
                trades = await _messages(ws, 25)
            assert {t["e"] for t in trades} == {"trade"}
            assert {t["s"] for t in trades} == {"BTCUSDT"}
            ids = [t["t"] for t in trades]
            assert ids == list(range(ids[0], ids[0] + 25)), "trade ids must be sequential"
            for t in trades:
                assert isinstance(t["p"], str) and isinstance(t["q"], str)
                assert Decimal(t["p"]) > 0 and Decimal(t["q"]) > 0
                assert isinstance(t["m"], bool) and t["M"] is True
                assert t["E"] >= t["T"]
            published = await api.control(
                "GET", f"/sim/trades?symbol=BTCUSDT&fromId={ids[0]}&limit=25"
            )
            assert [
                (t["id"], t["price"], t["qty"], t["time"], t["isBuyerMaker"])
                for t in published["trades"]
            ] == [(t["t"], t["p"], t["q"], t["T"], t["m"]) for t in trades]


async def test_combined_stream_envelopes() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(make_config(market=LIVE)) as sim:
            url = f"{sim.ws_url}/stream?streams=btcusdt@trade/ltcbtc@depth@100ms"
            async with open_websocket_url(url) as ws:
                seen: dict[str, dict[str, Any]] = {}
                while len(seen) < 2:
                    message = json.loads(await ws.get_message())
                    assert set(message) == {"stream", "data"}
                    seen[message["stream"]] = message["data"]
            assert seen["btcusdt@trade"]["e"] == "trade"
            depth = seen["ltcbtc@depth@100ms"]
            assert depth["e"] == "depthUpdate" and depth["s"] == "LTCBTC"
            assert depth["U"] <= depth["u"]
            assert all(isinstance(px, str) and isinstance(q, str) for px, q in depth["b"])


def _apply(book: dict[str, dict[Decimal, Decimal]], event: dict[str, Any]) -> None:
    for side, key in (("bids", "b"), ("asks", "a")):
        for px, q in event[key]:
            if Decimal(q) == 0:
                book[side].pop(Decimal(px), None)
            else:
                book[side][Decimal(px)] = Decimal(q)


async def test_depth_stream_chains_with_the_rest_snapshot() -> None:
    """Binance's local order book recipe, run against the simulator, must reproduce its book."""
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(make_config(market=LIVE)) as sim, api_for(sim) as api:
            async with open_websocket_url(f"{sim.ws_url}/ws/btcusdt@depth@100ms") as ws:
                buffered = [json.loads(await ws.get_message())]
                snapshot = (await api.get("/api/v3/depth", symbol="BTCUSDT", limit=5000)).json()
                last = snapshot["lastUpdateId"]
                book = {
                    side: {Decimal(px): Decimal(q) for px, q in snapshot[side]}
                    for side in ("bids", "asks")
                }
                applied_u: int | None = None
                paused_at: int | None = None
                started = trio.current_time()
                while True:
                    event = buffered.pop(0) if buffered else json.loads(await ws.get_message())
                    if event["u"] <= last:
                        continue
                    if applied_u is None:
                        assert event["U"] <= last + 1 <= event["u"], (event["U"], last)
                    else:
                        assert event["U"] == applied_u + 1, "gap or overlap in the diff stream"
                    _apply(book, event)
                    applied_u = event["u"]
                    if paused_at is None and trio.current_time() - started > 0.5:
                        state = await api.control("POST", "/sim/market", {"paused": True})
                        paused_at = state["symbols"]["BTCUSDT"]["lastUpdateId"]
                    if paused_at is not None and applied_u >= paused_at:
                        break
            assert applied_u == paused_at
            final = (await api.get("/api/v3/depth", symbol="BTCUSDT", limit=5000)).json()
            assert final["lastUpdateId"] == applied_u
            assert book["bids"] == {Decimal(px): Decimal(q) for px, q in final["bids"]}
            assert book["asks"] == {Decimal(px): Decimal(q) for px, q in final["asks"]}


async def test_live_subscription_requests() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(make_config(market=LIVE)) as sim:
            async with open_websocket_url(f"{sim.ws_url}/ws") as ws:
                await ws.send_message(
                    json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
                )
                reply = json.loads(await ws.get_message())
                assert reply == {"result": None, "id": 1}
                await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "q2"}))
                # Trades may arrive before the answer; skip them.
                while True:
                    message = json.loads(await ws.get_message())
                    if "id" in message:
                        break
                    assert message["e"] == "trade"
                assert message == {"result": ["btcusdt@trade"], "id": "q2"}
                await ws.send_message(
                    json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 3})
                )
                await ws.send_message(
                    json.dumps({"method": "SUBSCRIBE", "params": ["nope@trade"], "id": 4})
                )
                await ws.send_message("{not json")
                await ws.send_message(
                    json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 5})
                )
                replies = []
                while len(replies) < 4:
                    message = json.loads(await ws.get_message())
                    if "e" not in message:
                        replies.append(message)
            assert replies[0] == {"result": None, "id": 3}
            assert (replies[1]["code"], replies[1]["id"]) == (2, 4)
            assert replies[2]["code"] == 3
            assert replies[3] == {"result": False, "id": 5}


async def test_bad_stream_urls_are_refused() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim:
            for path, status in (
                ("/ws/btcusdt@nope", 400),
                ("/ws/BTCUSDT@trade", 400),  # stream names are lower case
                ("/stream?streams=btcusdt@trade/xx@trade", 400),
                ("/elsewhere", 404),
            ):
                with pytest.raises(ConnectionRejected) as info:
                    async with open_websocket_url(f"{sim.ws_url}{path}"):
                        pass
                assert info.value.status_code == status


async def test_server_shutdown_event_then_close() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as api,
            open_websocket_url(f"{sim.ws_url}/ws/btcusdt@trade") as raw,
            open_websocket_url(f"{sim.ws_url}/stream?streams=btcusdt@trade") as combined,
        ):
            await _wait_for_connections(api, 2)
            notified = await api.control("POST", "/sim/streams/shutdown", {"grace_s": 0.05})
            assert notified == {"notified": 2}
            event = json.loads(await raw.get_message())
            assert event["e"] == "serverShutdown" and isinstance(event["E"], int)
            wrapped = json.loads(await combined.get_message())
            assert wrapped["stream"] == "!serverShutdown"
            assert wrapped["data"]["e"] == "serverShutdown"
            with pytest.raises(ConnectionClosed):
                await raw.get_message()
            with pytest.raises(ConnectionClosed):
                await combined.get_message()


async def test_control_drop_aborts_connections() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as api,
            open_websocket_url(f"{sim.ws_url}/ws/btcusdt@trade") as ws,
        ):
            await _wait_for_connections(api, 1)
            assert await api.control("POST", "/sim/streams/drop", {}) == {"dropped": 1}
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1006  # no close frame: an abort


async def test_client_that_ignores_pings_is_dropped() -> None:
    config = make_config(streams=StreamsConfig(ping_interval_s=0.05, pong_timeout_s=0.1))
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(config) as sim:
            assert sim.ws_url is not None
            host, port = sim.ws_url.removeprefix("ws://").split(":")
            # A hand-made handshake, and then never a pong.
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(
                b"GET /ws/btcusdt@trade HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            received = b""
            start = trio.current_time()
            async with stream:
                while data := await stream.receive_some(65536):
                    received += data
            assert received.startswith(b"HTTP/1.1 101")
            assert b"\x89" in received  # at least one ping frame (opcode 0x9)
            assert trio.current_time() - start >= 0.15
            # A client that answers pings (trio-websocket does) stays connected.
            async with open_websocket_url(f"{sim.ws_url}/ws/btcusdt@trade") as ws:
                await trio.sleep(0.5)
                assert not ws.closed


async def test_serve_sim_as_fast_as_possible_stays_responsive() -> None:
    """Benchmark mode (events_per_s = 0): the market runs flat out, REST still answers."""
    config = make_config(market=MarketConfig(events_per_s=0, batch=64))
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            rest_url, ws_url = await nursery.start(serve_sim, config)
            assert rest_url.startswith("http://127.0.0.1:") and ws_url.startswith("ws://127.0.0.1:")
            async with httpx2.AsyncClient(base_url=rest_url) as http:
                async with open_websocket_url(f"{ws_url}/ws/btcusdt@trade") as ws:
                    first = json.loads(await ws.get_message())["t"]
                    second = json.loads(await ws.get_message())["t"]
                    assert second == first + 1
                await trio.sleep(0.3)
                with trio.fail_after(1):
                    assert (await http.get("/api/v3/ping")).status_code == 200
                status = (await http.get("/sim/status")).json()
                assert status["events"] > 1000
                trades = (await http.get("/sim/trades", params={"symbol": "BTCUSDT"})).json()
                ids = [t["id"] for t in trades["trades"]]
                assert ids == list(range(1, len(ids) + 1))
            nursery.cancel_scope.cancel()
