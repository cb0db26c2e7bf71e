"""The simulator's clock offset: ``GET``/``POST /sim/clock`` and ``clock_offset_ms``.

The client signs with its own (unskewed) clock; the simulator judges
``timestamp``/``recvWindow`` and stamps ``serverTime`` with the skewed one.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.helpers.sim_api import (
    LIMIT_BUY,
    TIMEOUT_S,
    ManualClock,
    api_for,
    make_config,
    running_sim_server,
)

TEN_MINUTES_MS = 600_000


async def test_offset_moves_server_time_and_the_recv_window() -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(make_config(), wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            assert await api.control("GET", "/sim/clock") == {
                "offset_ms": 0,
                "now_ms": clock.ms,
                "base_ms": clock.ms,
            }
            assert (await api.order(**LIMIT_BUY)).status_code == 200
            answer = await api.control("POST", "/sim/clock", {"offset_ms": TEN_MINUTES_MS})
            assert answer == {
                "offset_ms": TEN_MINUTES_MS,
                "now_ms": clock.ms + TEN_MINUTES_MS,
                "base_ms": clock.ms,
            }
            server_time = (await api.get("/api/v3/time")).json()["serverTime"]
            assert server_time == clock.ms + TEN_MINUTES_MS
            # Signed with the client's clock: ten minutes behind the venue's.
            late = await api.order(**LIMIT_BUY)
            assert late.status_code == 400
            assert late.json()["code"] == -1021
            # Signed with the venue's time, it is accepted; the order carries that time.
            placed = await api.order(**LIMIT_BUY, timestamp=server_time)
            assert placed.status_code == 200, placed.text
            assert placed.json()["transactTime"] == server_time
            # Back to no skew.
            await api.control("POST", "/sim/clock", {"offset_ms": 0})
            assert (await api.order(**LIMIT_BUY)).status_code == 200
            # A clock ahead of the venue's by more than 1 s is refused as well.
            await api.control("POST", "/sim/clock", {"offset_ms": -5000})
            assert (await api.order(**LIMIT_BUY)).json()["code"] == -1021


async def test_the_offset_flag_skews_from_the_start() -> None:
    clock = ManualClock()
    config = make_config(clock_offset_ms=-86_400_000)
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(config, wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            server_time = (await api.get("/api/v3/time")).json()["serverTime"]
            assert server_time == clock.ms - 86_400_000
            assert (await api.control("GET", "/sim/clock"))["offset_ms"] == -86_400_000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"offset_ms": 86_400_001}, "within ±86400000"),
        ({"offset_ms": -86_400_001}, "within ±86400000"),
        ({"offset_ms": 1.5}, "must be an integer"),
        ({"offset_ms": "100"}, "must be an integer"),
        ({"offset_ms": True}, "must be an integer"),
        ({}, "missing offset_ms"),
        ({"offset_ms": 1, "other": 2}, "unknown key"),
        ([1], "expected a JSON object"),
    ],
)
async def test_bad_offsets_are_400_and_change_nothing(body: Any, message: str) -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(make_config(), wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            await api.control("POST", "/sim/clock", {"offset_ms": 1234})
            response = await api.http.post("/sim/clock", json=body)
            assert response.status_code == 400
            assert message in response.json()["error"]
            assert (await api.control("GET", "/sim/clock"))["offset_ms"] == 1234


async def test_a_clock_moved_back_hides_no_order() -> None:
    """Order visibility runs on the venue's own clock, not the skewed one.

    Found by the torture runner: orders created while the clock was skewed
    ahead had their visibility stamped on the skewed clock, so once the skew
    was undone they stayed invisible to queries (order, openOrders, myTrades)
    for as long as the skew had been — a venue breaking its own visibility
    contract, which made the witness miss fills.
    """
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(make_config(), wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            await api.control("POST", "/sim/clock", {"offset_ms": TEN_MINUTES_MS})
            skewed = clock.ms + TEN_MINUTES_MS
            placed = await api.order(**LIMIT_BUY, timestamp=skewed)
            assert placed.status_code == 200, placed.text
            order_id = placed.json()["orderId"]
            await api.control("POST", "/sim/clock", {"offset_ms": 0})
            found = await api.signed("GET", "/api/v3/order", symbol="BTCUSDT", orderId=order_id)
            assert found.status_code == 200, found.text
            listed = await api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")
            assert [o["orderId"] for o in listed.json()] == [order_id]
