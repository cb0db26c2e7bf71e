"""Each fault kind, armed through the control endpoint, seen by a plain client.

The point of each test is the venue-side truth: a fault *before* processing
leaves no order behind; a fault *after* processing leaves exactly one, which
the audit log and a query by client order id both show.
"""

from __future__ import annotations

import itertools
import json

import httpx2
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from daemon.venues.sim.config import LimitsConfig, MarketConfig
from daemon.venues.sim.faults import FaultInjector, FaultSpec, parse_fault_flag
from tests.helpers.sim_api import (
    LIMIT_BUY,
    TIMEOUT_S,
    Api,
    ManualClock,
    api_for,
    make_config,
    running_sim_server,
)

# --------------------------------------------------------------------------- pure


def test_fault_spec_validation() -> None:
    assert parse_fault_flag("kind=rest_error,phase=after,status=503,count=2") == FaultSpec(
        kind="rest_error", phase="after", status=503, count=2
    )
    assert parse_fault_flag('{"kind": "ws_delay", "delay_s": 0.5}').delay_s == 0.5
    for bad, why in (
        ("kind=nope", "unknown fault kind"),
        ("kind=rest_error,every_s=3", "does not take every_s"),
        ("kind=ws_drop", "needs every_s or a probability"),
        ("kind=rest_timeout", "needs delay_s"),
        ("kind=rest_error,count=0", "count must be >= 1"),
        ("kind=rest_error,probability=2", "probability"),
        ("kind=rest_error,status=200", "status"),
        ("kind=rest_error,colour=red", "unknown fault key"),
        ("kind=rest_error,count=two", "not a number"),
        ("kind=rest_unknown,phase=before", "phase 'after'"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_fault_flag(bad)


def test_injector_counts_matches_and_expiry() -> None:
    faults = FaultInjector(seed=1)
    spec = FaultSpec(kind="rest_error", method="POST", path="/api/v3/order", count=2)
    armed = faults.arm(spec, now=0.0)
    assert faults.take_rest("before", "GET", "/api/v3/order", 0.0) is None
    assert faults.take_rest("after", "POST", "/api/v3/order", 0.0) is None
    assert faults.take_rest("before", "POST", "/api/v3/order", 0.0) is spec
    assert armed.remaining == 1
    assert faults.take_rest("before", "POST", "/api/v3/order", 0.0) is spec
    assert faults.take_rest("before", "POST", "/api/v3/order", 0.0) is None
    assert faults.snapshot(0.0) == []
    timed = faults.arm(FaultSpec(kind="ws_stall", duration_s=2.0), now=10.0)
    assert faults.on_message(frozenset({"x@trade"}), 11.9).discard
    assert not faults.on_message(frozenset({"x@trade"}), 12.0).discard
    assert not faults.disarm(timed.id)  # already expired and dropped
    every = faults.arm(FaultSpec(kind="ws_malformed", every_n=3), now=0.0)
    hits = [faults.on_message(frozenset(), 0.0).malformed for _ in range(9)]
    assert hits == [False, False, True] * 3
    assert every.hits == 3


# --------------------------------------------------------------------------- REST


async def test_control_endpoint_formats() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            assert await api.control("GET", "/sim/faults") == {"faults": []}
            armed = await api.control(
                "POST",
                "/sim/faults",
                {
                    "faults": [
                        {"kind": "rest_error", "path": "/api/v3/order", "count": 2},
                        {"kind": "ws_delay", "delay_s": 0.5, "duration_s": 60},
                    ]
                },
            )
            listed = (await api.control("GET", "/sim/faults"))["faults"]
            assert listed == [
                {
                    "id": armed["armed"][0]["id"],
                    "kind": "rest_error",
                    "path": "/api/v3/order",
                    "count": 2,
                    "hits": 0,
                    "remaining": 2,
                },
                {
                    "id": armed["armed"][1]["id"],
                    "kind": "ws_delay",
                    "delay_s": 0.5,
                    "duration_s": 60.0,
                    "hits": 0,
                    "expires_in_s": pytest.approx(60.0, abs=1.0),
                },
            ]
            gone = await api.http.delete(f"/sim/faults/{armed['armed'][0]['id']}")
            assert gone.json() == {"disarmed": armed["armed"][0]["id"]}
            assert (await api.http.delete("/sim/faults/999")).status_code == 404
            assert await api.control("DELETE", "/sim/faults") == {"cleared": 1}
            bad = await api.http.post("/sim/faults", json={"kind": "rest_error", "colour": 1})
            assert bad.status_code == 400 and "colour" in bad.json()["error"]
            assert (await api.http.post("/sim/faults", json=[1])).status_code == 400


async def test_rest_error_before_processing_creates_nothing() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await api.arm(kind="rest_error", method="POST", path="/api/v3/order", count=1)
            r = await api.order(**LIMIT_BUY, newClientOrderId="before-1")
            assert r.status_code == 503
            assert r.json()["code"] == -1001
            assert await api.audit("before-1") == []
            q = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="before-1"
            )
            assert q.json()["code"] == -2013
            # count=1: the resend goes through, once.
            r2 = await api.order(**LIMIT_BUY, newClientOrderId="before-1")
            assert r2.status_code == 200
            assert len(await api.audit("before-1")) == 1


async def test_rest_error_after_processing_order_exists() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await api.arm(
                kind="rest_error", phase="after", method="POST", path="/api/v3/order", count=2
            )
            first = await api.order(**LIMIT_BUY, newClientOrderId="after-1")
            second = await api.order(**LIMIT_BUY, newClientOrderId="after-2")
            third = await api.order(**LIMIT_BUY, newClientOrderId="after-3")
            assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
            assert first.json() == {
                "code": -1000,
                "msg": "Unknown error, please check your request or try again later.",
            }
            for cid in ("after-1", "after-2", "after-3"):
                assert len(await api.audit(cid)) == 1
                found = await api.signed(
                    "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId=cid
                )
                assert found.json()["status"] == "NEW"
            # A blind resend of after-1 is a duplicate while it is open.
            blind = await api.order(**LIMIT_BUY, newClientOrderId="after-1")
            assert blind.json()["code"] == -2010
            # GET is unaffected (the fault targets POST).
            assert (await api.get("/api/v3/ping")).status_code == 200


async def test_rest_error_custom_body_and_status() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await api.arm(
                kind="rest_error",
                path="/api/v3/depth",
                status=502,
                body="<html>bad gateway</html>",
                count=1,
            )
            r = await api.get("/api/v3/depth", symbol="BTCUSDT")
            assert r.status_code == 502 and r.text == "<html>bad gateway</html>"
            await api.arm(kind="rest_error", path="/api/v3/depth", status=500, code=-1006, msg="x")
            r2 = await api.get("/api/v3/depth", symbol="BTCUSDT")
            assert (r2.status_code, r2.json()) == (500, {"code": -1006, "msg": "x"})


async def test_rest_unknown_is_minus_1007_after_processing() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await api.arm(kind="rest_unknown", phase="after", method="POST", count=1)
            r = await api.order(**LIMIT_BUY, newClientOrderId="unknown-1")
            assert r.status_code == 408
            assert r.json() == {
                "code": -1007,
                "msg": "Timeout waiting for response from backend server. Send status unknown; "
                "execution status unknown.",
            }
            found = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="unknown-1"
            )
            assert found.status_code == 200
            assert len(await api.audit("unknown-1")) == 1


@pytest.mark.parametrize(("phase", "exists"), [("before", False), ("after", True)])
async def test_rest_timeout(phase: str, exists: bool) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await api.arm(kind="rest_timeout", phase=phase, delay_s=0.6, method="POST", count=1)
            short = httpx2.AsyncClient(base_url=sim.rest_url or "", timeout=0.2)
            async with short:
                with pytest.raises(httpx2.ReadTimeout):
                    await Api(short).order(**LIMIT_BUY, newClientOrderId="slow-1")
            if phase == "before":
                await trio.sleep(0.6)  # the stalled request ends without being processed
            assert len(await api.audit("slow-1")) == (1 if exists else 0)
            # A patient client gets the real answer after the stall (phase after).
            await api.arm(kind="rest_timeout", phase=phase, delay_s=0.2, method="POST", count=1)
            late = await api.order(**LIMIT_BUY, newClientOrderId="slow-2")
            assert late.status_code == (200 if exists else 504)


async def test_rate_limit_burst_then_ban() -> None:
    clock = ManualClock()
    config = make_config(limits=LimitsConfig(ban_after_violations=2, ban_s=60))
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(config, wall_clock=clock) as sim,
            api_for(sim, clock=clock) as api,
        ):
            await api.arm(kind="rate_limit_burst", retry_after_s=5, count=1)
            r = await api.get("/api/v3/ping")
            assert (r.status_code, r.json()["code"], r.headers["Retry-After"]) == (429, -1003, "5")
            again = await api.get("/api/v3/time")  # did not wait: a violation
            assert (again.status_code, again.headers["Retry-After"]) == (429, "5")
            banned = await api.get("/api/v3/time")  # second violation: banned
            assert (banned.status_code, banned.json()["code"]) == (418, -1003)
            assert banned.headers["Retry-After"] == "60"
            assert "IP banned until" in banned.json()["msg"]
            clock.advance(59)
            assert (await api.get("/api/v3/ping")).headers["Retry-After"] == "1"
            clock.advance(1)
            assert (await api.get("/api/v3/ping")).status_code == 200


async def test_order_invisible_for_a_while() -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(wall_clock=clock) as sim, api_for(sim, clock=clock) as api:
            await api.control("POST", "/sim/market/clear", {"symbol": "BTCUSDT"})
            await api.arm(kind="order_invisible", delay_s=2.0, count=1)
            placed = await api.order(**LIMIT_BUY, newClientOrderId="ghost-1")
            assert placed.status_code == 200
            q = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="ghost-1"
            )
            assert q.json() == {"code": -2013, "msg": "Order does not exist."}
            assert (await api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json() == []
            # It exists nonetheless: a duplicate is refused, and the audit shows it.
            dup = await api.order(**LIMIT_BUY, newClientOrderId="ghost-1")
            assert dup.json()["code"] == -2010
            assert len(await api.audit("ghost-1")) == 1
            clock.advance(2)
            q2 = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="ghost-1"
            )
            assert q2.json()["status"] == "NEW"
            # count=1: the next order is visible at once.
            await api.order(**LIMIT_BUY, newClientOrderId="ghost-2")
            q3 = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="ghost-2"
            )
            assert q3.status_code == 200


async def test_config_visibility_delay() -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(make_config(order_visibility_delay_s=0.5), wall_clock=clock) as sim,
            api_for(sim, clock=clock) as api,
        ):
            await api.order(**LIMIT_BUY, newClientOrderId="lag-1")
            q = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="lag-1"
            )
            assert q.json()["code"] == -2013
            clock.advance(0.5)
            q2 = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="lag-1"
            )
            assert q2.status_code == 200


# --------------------------------------------------------------------------- streams (sockets)

LIVE = MarketConfig(events_per_s=400, trade_probability=0.5)


async def test_ws_malformed_every_n() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(make_config(market=LIVE)) as sim, api_for(sim) as api:
            await api.arm(kind="ws_malformed", every_n=3, stream="btcusdt@trade")
            async with open_websocket_url(f"{sim.ws_url}/ws/btcusdt@trade") as ws:
                frames = [await ws.get_message() for _ in range(12)]
            good, bad = [], 0
            for frame in frames:
                try:
                    good.append(json.loads(frame))
                except ValueError:
                    bad += 1
            assert bad == 3  # garbage before every third message; the message still follows
            ids = [t["t"] for t in good]
            assert ids == list(range(ids[0], ids[0] + len(ids)))


async def test_ws_malformed_replace_and_drop_probability() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(make_config(market=LIVE)) as sim, api_for(sim) as api:
            await api.arm(kind="ws_malformed", every_n=2, replace=True)
            async with open_websocket_url(f"{sim.ws_url}/ws/btcusdt@trade") as ws:
                frames = [await ws.get_message() for _ in range(10)]
            parsed = []
            for frame in frames:
                try:
                    parsed.append(json.loads(frame)["t"])
                except ValueError:
                    parsed.append(None)
            assert parsed[1::2] == [None] * 5
            # Replaced messages are lost: the ids jump.
            real = [t for t in parsed if t is not None]
            assert all(b - a == 2 for a, b in itertools.pairwise(real))
            await api.control("DELETE", "/sim/faults")
            await api.arm(kind="ws_drop", probability=0.2, mode="close")
            async with open_websocket_url(f"{sim.ws_url}/ws/btcusdt@trade") as ws:
                with pytest.raises(ConnectionClosed) as info:
                    for _ in range(10_000):
                        await ws.get_message()
                assert info.value.reason.code == 1000  # mode=close sends a close frame


async def test_ws_delay() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(make_config(market=LIVE)) as sim, api_for(sim) as api:
            await api.arm(kind="ws_delay", delay_s=0.3)
            async with open_websocket_url(f"{sim.ws_url}/ws/btcusdt@depth@100ms") as ws:
                event = json.loads(await ws.get_message())
                lag_ms = api.clock() - event["E"]
            assert lag_ms >= 300
