"""The WebSocket API and user data stream faults, armed like every other fault.

As for REST, the venue-side truth is the point: a fault *before* processing
leaves no order behind, a fault *after* processing leaves exactly one (the
audit log says so), whatever the client saw.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from daemon.venues.sim.config import loads
from daemon.venues.sim.faults import FaultSpec, parse_fault_flag
from tests.helpers.sim_api import TIMEOUT_S, Api, api_for, make_config, running_sim_server
from tests.helpers.sim_wsapi import WsApiClient, ws_api

ORDER: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.01",
    "price": "20000",
}


async def _arm(rest: Api, **spec: Any) -> dict[str, Any]:
    armed = await rest.control("POST", "/sim/faults", spec)
    return armed["armed"][0]  # type: ignore[no-any-return]


async def _audit(rest: Api, client_id: str) -> list[dict[str, Any]]:
    audit = await rest.control("GET", f"/sim/audit?clientOrderId={client_id}")
    return audit["orders"]  # type: ignore[no-any-return]


async def _place(client: WsApiClient, client_id: str) -> Any:
    return await client.send("order.place", client.signed(newClientOrderId=client_id, **ORDER))


# --------------------------------------------------------------------------- specs


def test_fault_specs_for_the_ws_api() -> None:
    assert parse_fault_flag("kind=wsapi_error,method=order.place,phase=after,status=503") == (
        FaultSpec(kind="wsapi_error", method="order.place", phase="after", status=503)
    )
    assert parse_fault_flag("kind=wsapi_delay,delay_s=0.5,count=1").delay_s == 0.5
    assert parse_fault_flag("kind=wsapi_drop,every_s=30,mode=close").every_s == 30
    assert parse_fault_flag("kind=userstream_stall,duration_s=2").duration_s == 2
    assert parse_fault_flag('{"kind": "userstream_terminate", "every_s": 5}').every_s == 5
    for bad, why in (
        ("kind=wsapi_delay", "needs delay_s"),
        ("kind=wsapi_drop,every_s=3,method=order.place", "every_s or method"),
        ("kind=wsapi_error,every_s=3", "does not take every_s"),
        ("kind=wsapi_no_answer,stream=btcusdt@trade", "does not take stream"),
        ("kind=userstream_stall,count=2", "does not take count"),
        ("kind=userstream_terminate,phase=after", "does not take phase"),
        ("kind=rest_error,method=order.place", "upper case"),
        ("kind=wsapi_error,method=", "must not be empty"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_fault_flag(bad)
    config = loads(
        """
        [[faults]]
        kind = "wsapi_no_answer"
        method = "order.place"
        phase = "after"
        count = 1

        [[faults]]
        kind = "userstream_terminate"
        every_s = 10
        """
    )
    assert [f.kind for f in config.faults] == ["wsapi_no_answer", "userstream_terminate"]


# --------------------------------------------------------------------------- requests


async def test_wsapi_drop_before_and_after_processing() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as rest:
            await _arm(rest, kind="wsapi_drop", method="order.place", count=1, mode="close")
            async with ws_api(sim.ws_url) as client:
                assert (await client.call("ping"))["status"] == 200  # other methods pass
                request_id = await _place(client, "drop-before")
                with pytest.raises(ConnectionClosed):
                    await client.answer(request_id)
            assert await _audit(rest, "drop-before") == []

            await _arm(rest, kind="wsapi_drop", method="order.place", phase="after", count=1)
            async with ws_api(sim.ws_url) as client:
                request_id = await _place(client, "drop-after")
                with pytest.raises(ConnectionClosed):
                    await client.answer(request_id)
            (entry,) = await _audit(rest, "drop-after")
            assert entry["transport"] == "ws-api"
            assert await rest.control("GET", "/sim/faults") == {"faults": []}


async def test_wsapi_drop_every_s() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as rest:
            await _arm(rest, kind="wsapi_drop", every_s=0.3, count=1)
            async with ws_api(sim.ws_url) as client:
                assert (await client.call("ping"))["status"] == 200
                started = trio.current_time()
                with pytest.raises(ConnectionClosed):
                    await client.event()
                assert trio.current_time() - started < 2
            assert (await rest.control("GET", "/sim/faults"))["faults"] == []  # used up
            async with ws_api(sim.ws_url) as client:
                await trio.sleep(0.5)
                assert (await client.call("ping"))["status"] == 200


async def test_wsapi_delay_lets_later_answers_overtake() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _arm(rest, kind="wsapi_delay", method="order.place", delay_s=0.3, count=1)
            placed = await _place(client, "slow-answer")
            pinged = await client.send("ping")
            answer = await client.answer(pinged)
            assert answer["status"] == 200
            assert placed not in client.answers  # not yet
            late = await client.answer(placed)
            assert late["status"] == 200 and late["result"]["clientOrderId"] == "slow-answer"
            ids = [f.get("id") for f in client.frames]
            assert ids.index(pinged) < ids.index(placed)


async def test_wsapi_no_answer_before_and_after() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _arm(rest, kind="wsapi_no_answer", method="order.place", count=1)
            lost = await _place(client, "unsent")
            assert (await client.call("ping"))["status"] == 200  # connection fine
            assert lost not in client.answers
            assert await _audit(rest, "unsent") == []

            await _arm(rest, kind="wsapi_no_answer", method="order.place", phase="after", count=1)
            ambiguous = await _place(client, "ambiguous")
            assert (await client.call("ping"))["status"] == 200
            assert ambiguous not in client.answers
            (entry,) = await _audit(rest, "ambiguous")  # processed: the order exists
            status = await client.signed_call(
                "order.status", symbol="BTCUSDT", origClientOrderId="ambiguous"
            )
            assert status["result"]["orderId"] == entry["orderId"]


async def test_wsapi_error_before_and_after() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _arm(rest, kind="wsapi_error", method="order.place", count=1)
            answer = await client.answer(await _place(client, "err-before"))
            assert answer["status"] == 503
            assert answer["error"]["code"] == -1001
            assert answer["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
            assert await _audit(rest, "err-before") == []

            await _arm(
                rest,
                kind="wsapi_error",
                method="order.place",
                phase="after",
                status=408,
                code=-1007,
                msg="Timeout waiting for response from backend server.",
                count=1,
            )
            answer = await client.answer(await _place(client, "err-after"))
            assert (answer["status"], answer["error"]["code"]) == (408, -1007)
            assert len(await _audit(rest, "err-after")) == 1

            await _arm(rest, kind="wsapi_error", phase="after", count=1)  # any method
            answer = await client.call("time")
            assert (answer["status"], answer["error"]["code"]) == (503, -1000)
            assert (await client.call("time"))["status"] == 200


async def test_order_invisible_applies_to_ws_api_queries_but_not_the_stream() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await client.signed_call("userDataStream.subscribe.signature")
            await _arm(rest, kind="order_invisible", delay_s=60, count=1)
            placed = await client.answer(await _place(client, "hidden"))
            assert placed["status"] == 200
            report = (await client.event())["event"]  # the stream sees it at once
            assert (report["x"], report["c"]) == ("NEW", "hidden")
            status = await client.signed_call(
                "order.status", symbol="BTCUSDT", origClientOrderId="hidden"
            )
            assert status["error"]["code"] == -2013
            open_orders = await client.signed_call("openOrders.status", symbol="BTCUSDT")
            assert open_orders["result"] == []
            trades = await client.signed_call("myTrades", symbol="BTCUSDT")
            assert trades["result"] == []


# --------------------------------------------------------------------------- user data stream


async def test_userstream_stall_holds_events_then_delivers_them_in_order() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await client.signed_call("userDataStream.subscribe.signature")
            await _arm(rest, kind="userstream_stall", duration_s=0.5)
            armed_at = trio.current_time()
            for i in range(3):
                assert (await client.answer(await _place(client, f"stalled-{i}")))["status"] == 200
            assert not client.events  # held
            reports = []
            while len(reports) < 3:
                event = (await client.event())["event"]
                if event["e"] == "executionReport":
                    reports.append(event)
            assert trio.current_time() - armed_at >= 0.45
            assert [r["c"] for r in reports] == ["stalled-0", "stalled-1", "stalled-2"]
            assert [r["I"] for r in reports] == sorted(r["I"] for r in reports)


async def test_userstream_terminate_at_the_next_event_and_every_s() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await client.signed_call("userDataStream.subscribe.signature")
            await _arm(rest, kind="userstream_terminate", count=1)
            await client.answer(await _place(client, "lost"))
            terminated = await client.event()
            assert terminated == {
                "subscriptionId": 0,
                "event": {"e": "eventStreamTerminated", "E": terminated["event"]["E"]},
            }
            assert (await client.call("session.subscriptions"))["result"] == []
            await client.no_event_for(0.2)  # the NEW that triggered it is lost

            again = await client.signed_call("userDataStream.subscribe.signature")
            assert again["result"] == {"subscriptionId": 1}
            await _arm(rest, kind="userstream_terminate", every_s=0.3, count=1)
            terminated = await client.event()
            assert terminated["subscriptionId"] == 1
            assert terminated["event"]["e"] == "eventStreamTerminated"
            assert (await client.call("ping"))["status"] == 200  # the connection stays


async def test_faults_from_the_config_file_are_armed_at_start() -> None:
    config = make_config(faults=(FaultSpec(kind="wsapi_error", method="time", status=500),))
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(config) as sim, ws_api(sim.ws_url) as client:
            answer = await client.call("time")
            assert (answer["status"], answer["error"]["code"]) == (500, -1001)
            assert (await client.call("ping"))["status"] == 200
