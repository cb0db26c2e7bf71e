"""The simulator's WebSocket API (``/ws-api/v3``) seen by a raw client: methods, errors, frames.

The client is a plain trio-websocket connection (:mod:`tests.helpers.sim_wsapi`),
signing as ``web-socket-api.md`` documents, on 127.0.0.1 under ``fail_after``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from daemon.venues.sim.config import (
    DOCS_API_KEY,
    DOCS_SECRET_KEY,
    LimitsConfig,
    RateLimitConfig,
)
from daemon.venues.sim.wsframes import signature_payload
from tests.helpers.sim_api import (
    OTHER_KEY,
    TIMEOUT_S,
    ManualClock,
    api_for,
    make_config,
    running_sim_server,
)
from tests.helpers.sim_wsapi import WsApiClient, ws_api, ws_sign

LIMIT_BUY: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.01",
    "price": "20000",
}


def _weight(answer: dict[str, Any]) -> int:
    (entry,) = [r for r in answer["rateLimits"] if r["rateLimitType"] == "REQUEST_WEIGHT"]
    return int(entry["count"])


# --------------------------------------------------------------------------- signature


def test_hmac_matches_the_docs_examples() -> None:
    """web-socket-api.md "SIGNED request example (HMAC)": payload and signature, both examples."""
    ascii_params = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01000000",
        "price": "52000.00",
        "recvWindow": "100",
        "timestamp": "1645423376532",
        "apiKey": DOCS_API_KEY,
        "signature": "ignored",
    }
    payload = signature_payload(ascii_params)
    assert payload == (
        b"apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price=52000.00"
        b"&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT&timeInForce=GTC"
        b"&timestamp=1645423376532&type=LIMIT"
    )
    expected = "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
    assert hmac.new(DOCS_SECRET_KEY.encode(), payload, hashlib.sha256).hexdigest() == expected
    unicode_params = {
        **ascii_params,
        "symbol": "\uff11\uff12\uff13\uff14\uff15\uff16",  # the docs: fullwidth 123456
        "side": "BUY",
        "quantity": "1.00000000",
        "price": "0.10000000",
        "recvWindow": "5000",
    }
    payload = signature_payload(unicode_params)
    digest = hmac.new(DOCS_SECRET_KEY.encode(), payload, hashlib.sha256).hexdigest()
    assert digest == "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"
    # The test client signs the same way (typed JSON values included).
    typed = {k: v for k, v in ascii_params.items() if k != "signature"}
    typed.update(recvWindow=100, timestamp=1645423376532)
    assert ws_sign(DOCS_SECRET_KEY, typed) == expected


async def test_the_docs_example_order_is_accepted_as_signed() -> None:
    """The docs' example request, sent verbatim (typed values), passes the signature check."""
    clock = ManualClock(1645423376532)
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(wall_clock=clock) as sim, ws_api(sim.ws_url) as client:
            params = {
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.01000000",
                "price": "52000.00",
                "recvWindow": 100,
                "timestamp": 1645423376532,
                "apiKey": DOCS_API_KEY,
                "signature": "AA1B5712C094BC4E57C05A1A5C1FD8D88DCD628338EA863FEC7B88E59FE2DB24",
            }
            answer = await client.call("order.place", params)
            # The signature (upper case here) and the timestamp pass.
            assert answer["status"] == 200, answer
            assert answer["result"]["status"] == "NEW"


# --------------------------------------------------------------------------- framing


async def test_ping_time_and_rate_limits() -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(wall_clock=clock) as sim, ws_api(sim.ws_url) as client:
            ping = await client.call("ping")
            assert ping == {
                "id": 1,
                "status": 200,
                "result": {},
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                        "count": 3,  # connecting costs 2
                    }
                ],
            }
            assert list(ping) == ["id", "status", "result", "rateLimits"]
            server_time = await client.call("time", {})
            assert server_time["result"] == {"serverTime": clock.ms}
            assert _weight(server_time) == 4
            versioned = await client.call("v3/ping")
            assert versioned["status"] == 200


async def test_ids_are_echoed_and_invalid_ids_refused() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, ws_api(sim.ws_url) as client:
            for request_id in (7, "abc-DEF_123", None, 0, -5, 2**63 - 1, "x" * 36):
                answer = await client.call("ping", request_id=request_id)
                assert answer["id"] == request_id and answer["status"] == 200
            for bad in ("has space", "x" * 37, 1.5, True, 2**63, [1], {"a": 1}, ""):
                await client.send("ping", request_id=bad)
                answer = await client.answer(None)
                assert answer["status"] == 400 and answer["error"]["code"] == -1135
                assert "Invalid 'id'" in answer["error"]["msg"]
            assert (await client.call("ping", request_id="still-up"))["status"] == 200


async def test_return_rate_limits_in_params_and_url() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim:
            async with ws_api(sim.ws_url) as client:
                answer = await client.call("time", {"returnRateLimits": False})
                assert "rateLimits" not in answer and answer["status"] == 200
                assert "rateLimits" in await client.call("time")
                failed = await client.call("order.status", {"returnRateLimits": False})
                assert "rateLimits" not in failed and failed["status"] == 400
            async with ws_api(sim.ws_url, "returnRateLimits=false") as client:
                assert "rateLimits" not in await client.call("ping")
                assert "rateLimits" in await client.call("ping", {"returnRateLimits": True})
                # Signed requests may carry it too; it is part of the signed payload.
                answer = await client.signed_call("order.place", returnRateLimits=True, **LIMIT_BUY)
                assert answer["status"] == 200
                kinds = [r["rateLimitType"] for r in answer["rateLimits"]]
                assert kinds == ["ORDERS", "ORDERS", "REQUEST_WEIGHT"]
                assert [r["count"] for r in answer["rateLimits"][:2]] == [1, 1]


HOSTILE_FRAMES: list[str | bytes] = [
    "not json",
    '{"id": 1, "method": "ping"',
    "[1, 2, 3]",
    '"ping"',
    "null",
    "[" * 100_000 + "]" * 100_000,
    '{"id": 1, "method": "ping", "params": {"a": ' + "[" * 50 + "]" * 50 + "}}",
    '{"id": ' + "9" * 5000 + ', "method": "ping"}',
    '{"id": 1, "method": "ping", "params": {"x": NaN}}',
    b"\xff\xfe\x00 binary",
    b'{"id": 1, "method": "ping"}',
    '{"id": 1, "method": "ping", "pad": "' + "x" * 70_000 + '"}',
]


@pytest.mark.parametrize("frame", HOSTILE_FRAMES, ids=range(len(HOSTILE_FRAMES)))
async def test_hostile_frames_are_refused_and_the_connection_survives(frame: str | bytes) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, ws_api(sim.ws_url) as client:
            await client.send_raw(frame)
            answer = await client.answer(None)
            assert answer["status"] == 400
            assert answer["error"]["code"] == -1135
            assert (await client.call("ping"))["status"] == 200


async def test_malformed_requests_with_an_id() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, ws_api(sim.ws_url) as client:
            unknown = await client.call("order.teleport")
            assert unknown["status"] == 400
            assert unknown["error"] == {"code": -1020, "msg": "This operation is not supported."}
            await client.send_raw(json.dumps({"id": "m1"}))
            missing = await client.answer("m1")
            assert (missing["status"], missing["error"]["code"]) == (400, -1102)
            await client.send_raw(json.dumps({"id": "m2", "method": 5}))
            assert (await client.answer("m2"))["error"]["code"] == -1102
            await client.send_raw(json.dumps({"id": "p1", "method": "ping", "params": [1]}))
            assert (await client.answer("p1"))["error"]["code"] == -1135
            for value in (None, [1], {"a": 1}):
                answer = await client.call("depth", {"symbol": "BTCUSDT", "limit": value})
                assert (answer["status"], answer["error"]["code"]) == (400, -1135)
                assert "'limit'" in answer["error"]["msg"]
            # A parseable but absurd integer (4000 digits) is just a bad value.
            big = client.signed(symbol="BTCUSDT", orderId=1)
            big["timestamp"] = 10**3999
            huge = await client.call("order.status", big)
            assert (huge["status"], huge["error"]["code"]) in ((400, -1022), (400, -1102))
            unread = await client.call("ping", {"x": 1})
            assert unread["error"]["code"] == -1104
            depth = await client.call("depth", {"symbol": "BTCUSDT", "limit": 5})
            assert depth["status"] == 200 and _weight(depth) > 0


# --------------------------------------------------------------------------- trading


async def test_order_lifecycle_over_the_ws_api() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            placed = await client.signed_call(
                "order.place", newClientOrderId="ws-1", newOrderRespType="FULL", **LIMIT_BUY
            )
            assert placed["status"] == 200, placed
            result = placed["result"]
            assert result["clientOrderId"] == "ws-1" and result["status"] == "NEW"
            assert result["fills"] == []
            counts = {(r["interval"], r["intervalNum"]): r["count"] for r in placed["rateLimits"]}
            assert counts[("SECOND", 10)] == 1 and counts[("DAY", 1)] == 1
            order_id = result["orderId"]

            status = await client.signed_call(
                "order.status", symbol="BTCUSDT", origClientOrderId="ws-1"
            )
            assert status["result"]["orderId"] == order_id
            assert status["result"]["status"] == "NEW"
            assert _weight(status) - _weight(placed) == 4

            open_orders = await client.signed_call("openOrders.status", symbol="BTCUSDT")
            assert [o["clientOrderId"] for o in open_orders["result"]] == ["ws-1"]

            canceled = await client.signed_call(
                "order.cancel", symbol="BTCUSDT", orderId=order_id, newClientOrderId="ws-cx"
            )
            assert canceled["status"] == 200
            assert canceled["result"]["clientOrderId"] == "ws-cx"
            assert canceled["result"]["origClientOrderId"] == "ws-1"
            assert canceled["result"]["status"] == "CANCELED"

            trades = await client.signed_call("myTrades", symbol="BTCUSDT")
            assert trades["result"] == []
            account = await client.signed_call("account.status", omitZeroBalances="true")
            assert account["status"] == 200
            assert {b["asset"] for b in account["result"]["balances"]} >= {"BTC", "USDT"}

            # The audit log says how the order came.
            audit = await rest.control("GET", "/sim/audit?clientOrderId=ws-1")
            (entry,) = audit["orders"]
            assert entry["transport"] == "ws-api"
            assert entry["orderId"] == order_id
            assert "apiKey" not in entry["params"] and "signature" not in entry["params"]
            placed_rest = await rest.order(newClientOrderId="rest-1", **LIMIT_BUY)
            assert placed_rest.status_code == 200
            audit = await rest.control("GET", "/sim/audit?clientOrderId=rest-1")
            assert audit["orders"][0]["transport"] == "rest"


async def test_error_codes_match_the_rest_side() -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(wall_clock=clock) as sim,
            ws_api(sim.ws_url, clock=clock) as client,
        ):
            params = client.signed(**LIMIT_BUY)
            params["signature"] = "0" * 64
            bad_sig = await client.call("order.place", params)
            assert (bad_sig["status"], bad_sig["error"]["code"]) == (400, -1022)

            tampered = client.signed(**LIMIT_BUY)
            tampered["quantity"] = "0.02"
            assert (await client.call("order.place", tampered))["error"]["code"] == -1022

            stale = await client.signed_call("order.place", timestamp=clock.ms - 6000, **LIMIT_BUY)
            assert (stale["status"], stale["error"]["code"]) == (400, -1021)
            window = await client.signed_call(
                "order.status",
                symbol="BTCUSDT",
                orderId=1,
                timestamp=clock.ms - 6000,
                recvWindow=10000,
            )
            assert window["error"]["code"] == -2013  # inside the larger window

            no_key = dict(LIMIT_BUY, timestamp=clock.ms, signature="0" * 64)
            missing = await client.call("order.place", no_key)
            assert (missing["status"], missing["error"]["code"]) == (400, -1102)
            assert "apiKey" in missing["error"]["msg"]
            other = WsApiClient(client.ws, key="nosuchkey123", secret="x", clock=clock)
            unknown_key = await other.signed_call("order.status", symbol="BTCUSDT", orderId=1)
            assert (unknown_key["status"], unknown_key["error"]["code"]) == (401, -2015)
            client.answers.update(other.answers)

            bad_filter = await client.signed_call(
                "order.place", **dict(LIMIT_BUY, price="20000.001")
            )
            assert bad_filter["error"] == {"code": -1013, "msg": "Filter failure: PRICE_FILTER"}

            broke = await client.signed_call("order.place", **dict(LIMIT_BUY, quantity="100"))
            assert broke["status"] == 400
            assert broke["error"] == {
                "code": -2010,
                "msg": "Account has insufficient balance for requested action.",
            }
            assert [r["rateLimitType"] for r in broke["rateLimits"]][:1] == ["ORDERS"]

            cancel = await client.signed_call("order.cancel", symbol="BTCUSDT", orderId=999)
            assert cancel["error"] == {"code": -2011, "msg": "Unknown order sent."}
            query = await client.signed_call("order.status", symbol="BTCUSDT", orderId=999)
            assert query["error"] == {"code": -2013, "msg": "Order does not exist."}
            neither = await client.signed_call("order.status", symbol="BTCUSDT")
            assert neither["error"]["code"] == -1102
            symbol = await client.signed_call("openOrders.status", symbol="NOPE")
            assert symbol["error"]["code"] == -1121


async def test_rate_limit_429_then_418_and_the_ban_refuses_connections() -> None:
    clock = ManualClock(1_700_000_000_000)
    config = make_config(
        rate_limits=(RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, 5),),
        limits=LimitsConfig(ban_after_violations=2, ban_s=60),
    )
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(config, wall_clock=clock) as sim:
            async with ws_api(sim.ws_url) as client:
                for expected in (3, 4, 5):
                    assert _weight(await client.call("ping")) == expected
                limited = await client.call("ping")
                assert limited["status"] == 429
                assert limited["error"]["code"] == -1003
                data = limited["error"]["data"]
                assert data["serverTime"] == clock.ms and data["retryAfter"] > clock.ms
                assert _weight(limited) == 5
                again = await client.call("ping")
                assert again["status"] == 429  # first violation
                banned = await client.call("ping")
                assert banned["status"] == 418
                assert banned["error"]["code"] == -1003
                assert "banned until" in banned["error"]["msg"]
                with pytest.raises(ConnectionClosed):
                    await client.call("ping")  # a banned client is disconnected
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(f"{sim.ws_url}/ws-api/v3"):
                    pass
            assert info.value.status_code == 418


async def test_orders_count_is_per_account_and_shared_with_rest() -> None:
    config = make_config(
        rate_limits=(
            RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, 6000),
            RateLimitConfig("ORDERS", "SECOND", 10, 2),
        )
    )
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(config) as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            assert (await rest.order(**LIMIT_BUY)).status_code == 200
            second = await client.signed_call("order.place", **LIMIT_BUY)
            assert second["rateLimits"][0]["count"] == 2
            third = await client.signed_call("order.place", **LIMIT_BUY)
            assert (third["status"], third["error"]["code"]) == (429, -1015)
            other = WsApiClient(client.ws, key=OTHER_KEY, secret="otherSecret")
            fine = await other.signed_call("order.place", **LIMIT_BUY)
            assert fine["status"] == 200  # another account has its own count
