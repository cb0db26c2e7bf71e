"""The user data stream over the simulator's WebSocket API, seen by a raw client.

Every change of the subscribed account's orders arrives as an
``executionReport`` in the order it happened (NEW, TRADE, CANCELED,
REJECTED, EXPIRED), whichever transport caused it, with
``outboundAccountPosition`` after balance changes; ``eventStreamTerminated``
ends a subscription.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from daemon.venues.sim.config import DOCS_API_KEY, StreamsConfig
from tests.helpers.sim_api import (
    OTHER_KEY,
    OTHER_SECRET,
    TIMEOUT_S,
    Api,
    ManualClock,
    api_for,
    make_config,
    running_sim_server,
)
from tests.helpers.sim_wsapi import WsApiClient, ws_api

#: Every field of user-data-stream.md's executionReport example, minus the
#: STP-only ``v``, plus ``W`` (working time, for orders that go on the book).
REPORT_FIELDS = frozenset(
    "e E s c S o f q p P F g C x X r i l z L n N T t I w m M O Z Y Q W V".split()  # noqa: SIM905
)


def _reports(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["e"] == "executionReport"]


def _is_report(x: str, **fields: Any) -> Any:
    def pred(event: dict[str, Any]) -> bool:
        return (
            event["e"] == "executionReport"
            and event["x"] == x
            and all(event.get(k) == v for k, v in fields.items())
        )

    return pred


async def _subscribe(client: WsApiClient) -> int:
    answer = await client.signed_call("userDataStream.subscribe.signature")
    assert answer["status"] == 200, answer
    assert set(answer["result"]) == {"subscriptionId"}
    return int(answer["result"]["subscriptionId"])


async def _clear_book(rest: Api) -> None:
    await rest.control("POST", "/sim/market/clear", {"symbol": "BTCUSDT"})


async def _market_order(rest: Api, side: str, quantity: str, price: str | None = None) -> Any:
    body = {"symbol": "BTCUSDT", "side": side, "quantity": quantity}
    if price is not None:
        body["price"] = price
    return await rest.control("POST", "/sim/market/order", body)


async def test_new_cancel_and_account_positions() -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(wall_clock=clock) as sim,
            ws_api(sim.ws_url, clock=clock) as client,
        ):
            assert await _subscribe(client) == 0
            placed = await client.signed_call(
                "order.place",
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="20000",
                newClientOrderId="mine-1",
            )
            order_id = placed["result"]["orderId"]
            events = await client.events_until(lambda e: e["e"] == "outboundAccountPosition")
            (new,) = _reports(events)
            assert set(new) == REPORT_FIELDS
            assert new | {"I": None} == {
                "e": "executionReport",
                "E": clock.ms,
                "s": "BTCUSDT",
                "c": "mine-1",
                "S": "BUY",
                "o": "LIMIT",
                "f": "GTC",
                "q": "0.01000000",
                "p": "20000.00000000",
                "P": "0.00000000",
                "F": "0.00000000",
                "g": -1,
                "C": "",
                "x": "NEW",
                "X": "NEW",
                "r": "NONE",
                "i": order_id,
                "l": "0.00000000",
                "z": "0.00000000",
                "L": "0.00000000",
                "n": "0",
                "N": None,
                "T": clock.ms,
                "t": -1,
                "I": None,
                "w": True,
                "m": False,
                "M": False,
                "O": clock.ms,
                "Z": "0.00000000",
                "Y": "0.00000000",
                "Q": "0.00000000",
                "W": clock.ms,
                "V": "NONE",
            }
            position = events[-1]
            assert position["E"] == clock.ms and position["u"] == clock.ms
            assert position["B"] == [{"a": "USDT", "f": "999800.00000000", "l": "200.00000000"}]

            clock.advance(1.5)
            canceled = await client.signed_call(
                "order.cancel", symbol="BTCUSDT", orderId=order_id, newClientOrderId="cx-1"
            )
            assert canceled["status"] == 200
            events = await client.events_until(lambda e: e["e"] == "outboundAccountPosition")
            (cancel,) = _reports(events)
            assert (cancel["x"], cancel["X"]) == ("CANCELED", "CANCELED")
            assert (cancel["c"], cancel["C"]) == ("cx-1", "mine-1")
            assert cancel["T"] == clock.ms and cancel["O"] == clock.ms - 1500
            assert cancel["w"] is False and cancel["I"] > new["I"]
            assert events[-1]["B"] == [{"a": "USDT", "f": "1000000.00000000", "l": "0.00000000"}]

            # Without newClientOrderId the cancel gets a generated id, the same in both places.
            again = await client.signed_call(
                "order.place",
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="20000",
            )
            cancel_answer = await client.signed_call(
                "order.cancel", symbol="BTCUSDT", orderId=again["result"]["orderId"]
            )
            report = (await client.events_until(_is_report("CANCELED")))[-1]
            assert report["c"] == cancel_answer["result"]["clientOrderId"]
            assert report["C"] == again["result"]["clientOrderId"]


async def test_a_resting_order_fills_from_the_market() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _clear_book(rest)
            await _subscribe(client)
            placed = await client.signed_call(
                "order.place",
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.02",
                price="30000",
                newClientOrderId="maker-1",
            )
            assert placed["result"]["status"] == "NEW"
            await client.events_until(lambda e: e["e"] == "outboundAccountPosition")

            first = await _market_order(rest, "SELL", "0.005")
            events = await client.events_until(lambda e: e["e"] == "outboundAccountPosition")
            (trade,) = _reports(events)
            assert (trade["x"], trade["X"]) == ("TRADE", "PARTIALLY_FILLED")
            assert trade["t"] == first["tradeIds"][0]
            assert (trade["l"], trade["L"], trade["z"]) == (
                "0.00500000",
                "30000.00000000",
                "0.00500000",
            )
            assert (trade["Y"], trade["Z"]) == ("150.00000000", "150.00000000")
            assert (trade["n"], trade["N"]) == ("0.00000500", "BTC")  # buyer pays in base
            assert trade["m"] is True and trade["w"] is True
            assert {b["a"] for b in events[-1]["B"]} == {"BTC", "USDT"}

            second = await _market_order(rest, "SELL", "0.015")
            filled = (await client.events_until(_is_report("TRADE")))[-1]
            assert (filled["X"], filled["z"], filled["Z"]) == (
                "FILLED",
                "0.02000000",
                "600.00000000",
            )
            assert filled["t"] == second["tradeIds"][0] and filled["w"] is False
            assert filled["c"] == "maker-1"

            status = await client.signed_call("order.status", symbol="BTCUSDT", orderId=filled["i"])
            assert status["result"]["status"] == "FILLED"
            trades = await client.signed_call("myTrades", symbol="BTCUSDT")
            assert [t["id"] for t in trades["result"]] == [trade["t"], filled["t"]]


async def test_a_taker_fills_then_expires() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _clear_book(rest)
            await _market_order(rest, "SELL", "0.01", price="30000")
            await _market_order(rest, "SELL", "0.01", price="30001")
            await _subscribe(client)
            placed = await client.signed_call(
                "order.place",
                symbol="BTCUSDT",
                side="BUY",
                type="MARKET",
                quantity="0.03",
                newClientOrderId="taker-1",
            )
            assert placed["result"]["status"] == "EXPIRED"
            events = await client.events_until(lambda e: e["e"] == "outboundAccountPosition")
            reports = _reports(events)
            assert [(r["x"], r["X"]) for r in reports] == [
                ("NEW", "NEW"),
                ("TRADE", "PARTIALLY_FILLED"),
                ("TRADE", "PARTIALLY_FILLED"),
                ("EXPIRED", "EXPIRED"),
            ]
            assert [r["L"] for r in reports[1:3]] == ["30000.00000000", "30001.00000000"]
            assert [r["z"] for r in reports[1:]] == ["0.01000000", "0.02000000", "0.02000000"]
            assert all(r["m"] is False and r["w"] is False for r in reports)
            assert reports[-1]["eR"] == "INSUFFICIENT_LIQUIDITY"
            assert "W" not in reports[0]  # a MARKET order never works on the book
            assert [r["t"] for r in reports[1:3]] == [
                f["tradeId"] for f in placed["result"]["fills"]
            ]

            # An IOC that fills fully: NEW, TRADE ... FILLED, no EXPIRED.
            await _market_order(rest, "SELL", "0.01", price="30002")
            await client.signed_call(
                "order.place",
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="IOC",
                quantity="0.01",
                price="30005",
            )
            reports = _reports(await client.events_until(_is_report("TRADE", X="FILLED")))
            assert [r["x"] for r in reports] == ["NEW", "TRADE"]

            # An IOC that cannot fill, and a FOK that cannot fill entirely: NEW, EXPIRED.
            for tif, reason in (
                ("IOC", "UNFILLED_IOC_QUANTITY_EXPIRED"),
                ("FOK", "UNFILLED_FOK_ORDER_EXPIRED"),
            ):
                await _market_order(rest, "SELL", "0.01", price="30010")
                await client.signed_call(
                    "order.place",
                    symbol="BTCUSDT",
                    side="BUY",
                    type="LIMIT",
                    timeInForce=tif,
                    quantity="0.02" if tif == "FOK" else "0.01",
                    price="30009",
                )
                reports = _reports(await client.events_until(_is_report("EXPIRED")))
                assert [r["x"] for r in reports] == ["NEW", "EXPIRED"]
                assert reports[-1]["eR"] == reason and reports[-1]["f"] == tif
                await _clear_book(rest)


async def test_rejections_reach_the_stream_but_not_duplicates() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _subscribe(client)
            broke = await client.signed_call(
                "order.place",
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="100",
                price="20000",
                newClientOrderId="too-big",
            )
            assert broke["error"]["code"] == -2010
            rejected = await client.event()
            event = rejected["event"]
            assert (event["x"], event["X"], event["r"]) == (
                "REJECTED",
                "REJECTED",
                "INSUFFICIENT_BALANCES",
            )
            assert event["c"] == "too-big" and event["i"] == -1 and "W" not in event

            await _clear_book(rest)
            await _market_order(rest, "SELL", "0.01", price="30000")
            taker = await client.signed_call(
                "order.place",
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT_MAKER",
                quantity="0.01",
                price="30000",
            )
            assert taker["error"]["code"] == -2010
            event = (await client.event())["event"]
            assert (event["x"], event["r"]) == ("REJECTED", "WOULD_MATCH_IMMEDIATELY")

            resting = dict(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="20000",
                newClientOrderId="dup",
            )
            assert (await client.signed_call("order.place", **resting))["status"] == 200
            await client.events_until(lambda e: e["e"] == "outboundAccountPosition")
            duplicate = await client.signed_call("order.place", **resting)
            assert duplicate["error"] == {"code": -2010, "msg": "Duplicate order sent."}
            # Filter failures never reach the engine: no event either.
            bad = await client.signed_call(
                "order.place", **dict(resting, price="1", newClientOrderId="f")
            )
            assert bad["error"]["code"] == -1013
            await client.no_event_for(0.2)


async def test_orders_from_rest_and_other_connections_produce_events() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as watcher,
            ws_api(sim.ws_url) as trader,
            ws_api(sim.ws_url, key=OTHER_KEY, secret=OTHER_SECRET) as stranger,
        ):
            await _subscribe(watcher)
            order = dict(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="20000",
            )
            # Another account's orders are not ours.
            assert (await stranger.signed_call("order.place", **order))["status"] == 200
            response = await rest.order(newClientOrderId="via-rest", **order)
            assert response.status_code == 200
            report = (await watcher.events_until(_is_report("NEW")))[-1]
            assert report["c"] == "via-rest" and report["i"] == response.json()["orderId"]
            await trader.signed_call("order.place", newClientOrderId="via-ws", **order)
            report = (await watcher.events_until(_is_report("NEW")))[-1]
            assert report["c"] == "via-ws"
            canceled = await rest.signed(
                "DELETE", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="via-ws"
            )
            assert canceled.status_code == 200
            report = (await watcher.events_until(_is_report("CANCELED")))[-1]
            assert (report["C"], report["c"]) == ("via-ws", canceled.json()["clientOrderId"])
            # Two subscriptions of one account (on two connections) both get the events.
            await _subscribe(trader)
            await rest.order(newClientOrderId="both", **order)
            for client in (watcher, trader):
                report = (await client.events_until(_is_report("NEW")))[-1]
                assert report["c"] == "both"
            assert not [e for e in watcher.events if e["event"].get("c") not in (None, "both")]


async def test_subscription_management() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            assert (await client.call("session.subscriptions"))["result"] == []
            assert await _subscribe(client) == 0
            again = await client.signed_call("userDataStream.subscribe.signature")
            assert again["error"] == {
                "code": -2035,
                "msg": "User Data Stream subscription already active.",
            }
            other = WsApiClient(client.ws, key=OTHER_KEY, secret=OTHER_SECRET)
            second = await other.signed_call("userDataStream.subscribe.signature")
            assert second["result"] == {"subscriptionId": 1}
            listing = await client.call("session.subscriptions")
            assert listing["result"] == [{"subscriptionId": 0}, {"subscriptionId": 1}]
            assert listing["rateLimits"][0]["count"] == 2 + 2 + 2 + 2 + 2 + 2

            missing = await client.call("userDataStream.unsubscribe", {"subscriptionId": 7})
            assert (missing["status"], missing["error"]["code"]) == (400, -2036)
            done = await client.call("userDataStream.unsubscribe", {"subscriptionId": 0})
            assert done["result"] == {}
            terminated = await client.event()
            assert terminated["subscriptionId"] == 0
            assert terminated["event"]["e"] == "eventStreamTerminated"
            assert set(terminated["event"]) == {"e", "E"}
            listing = await client.call("session.subscriptions")
            assert listing["result"] == [{"subscriptionId": 1}]

            await rest.order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="20000",
            )
            await client.no_event_for(0.2)  # no longer subscribed for the docs account

            everything = await client.call("userDataStream.unsubscribe")
            assert everything["result"] == {}
            terminated = await client.event()
            assert terminated["subscriptionId"] == 1
            assert terminated["event"]["e"] == "eventStreamTerminated"
            assert await _subscribe(client) == 2  # ids are not reused
            assert (await client.call("userDataStream.unsubscribe", {}))["result"] == {}


async def test_subscription_needs_a_valid_signature() -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(wall_clock=clock) as sim,
            ws_api(sim.ws_url, clock=clock) as client,
        ):
            params = client.signed()
            params["signature"] = "f" * 64
            bad = await client.call("userDataStream.subscribe.signature", params)
            assert (bad["status"], bad["error"]["code"]) == (400, -1022)
            stale = await client.signed_call(
                "userDataStream.subscribe.signature", timestamp=clock.ms - 60_000
            )
            assert stale["error"]["code"] == -1021
            no_key = await client.call(
                "userDataStream.subscribe.signature", {"timestamp": clock.ms, "signature": "0" * 64}
            )
            assert no_key["error"]["code"] == -1102
            extra = await client.signed_call("userDataStream.subscribe.signature", symbol="BTCUSDT")
            assert extra["error"]["code"] == -1104
            ok = await client.signed_call("userDataStream.subscribe.signature", recvWindow=1000)
            assert ok["result"] == {"subscriptionId": 0}


async def test_a_slow_subscriber_is_terminated_not_the_engine() -> None:
    """A full queue ends the subscription (eventStreamTerminated); the connection stays."""
    config = make_config(streams=StreamsConfig(send_queue=3))
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(config) as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _subscribe(client)
            armed = await rest.control("POST", "/sim/faults", {"kind": "userstream_stall"})
            for i in range(3):  # NEW + outboundAccountPosition each: 6 events > 3
                response = await rest.order(
                    symbol="BTCUSDT",
                    side="BUY",
                    type="LIMIT",
                    timeInForce="GTC",
                    quantity="0.01",
                    price="20000",
                    newClientOrderId=f"slow-{i}",
                )
                assert response.status_code == 200  # the engine never waits for the stream
            await rest.control("DELETE", f"/sim/faults/{armed['armed'][0]['id']}")
            terminated = await client.event()
            assert terminated["event"]["e"] == "eventStreamTerminated"
            assert (await client.call("session.subscriptions"))["result"] == []
            assert (await client.call("ping"))["status"] == 200
            assert await _subscribe(client) == 1


async def test_events_are_only_for_subscribed_accounts_balances_exact() -> None:
    """Balances in outboundAccountPosition are the account's, as the ledger has them."""
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _clear_book(rest)
            await _market_order(rest, "SELL", "0.01", price="30000")
            await _subscribe(client)
            await client.signed_call(
                "order.place", symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01"
            )
            position = (await client.events_until(lambda e: e["e"] == "outboundAccountPosition"))[
                -1
            ]
            balances = await rest.control("GET", "/sim/balances")
            mine = balances["accounts"][DOCS_API_KEY]
            for entry in position["B"]:
                assert Decimal(entry["f"]) == Decimal(mine[entry["a"]]["free"])
                assert Decimal(entry["l"]) == Decimal(mine[entry["a"]]["locked"])
            assert {e["a"] for e in position["B"]} == {"BTC", "USDT"}


async def test_a_closed_connection_leaves_no_subscription_behind() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as rest:
            for ending in ("client", "abort", "close"):
                async with ws_api(sim.ws_url) as client:
                    await _subscribe(client)
                    assert sim.users.subscription_count == 1
                    if ending != "client":
                        assert sim.ws_api.drop_all(ending) == 1  # type: ignore[arg-type]
                        with pytest.raises(ConnectionClosed):
                            await client.event()
                while sim.ws_api.connection_count:  # noqa: ASYNC110 - server-side state
                    await trio.sleep(0.01)
                assert sim.users.subscription_count == 0
                response = await rest.order(
                    symbol="BTCUSDT",
                    side="BUY",
                    type="LIMIT",
                    timeInForce="GTC",
                    quantity="0.01",
                    price="20000",
                )
                assert response.status_code == 200


async def test_the_market_generator_fills_a_resting_order() -> None:
    """The seeded market trading through the book fills a resting order: TRADE events follow."""
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server() as sim,
            api_for(sim) as rest,
            ws_api(sim.ws_url) as client,
        ):
            await _subscribe(client)
            market = await rest.control("GET", "/sim/market")
            best_bid = Decimal(market["symbols"]["BTCUSDT"]["bestBid"])
            best_ask = Decimal(market["symbols"]["BTCUSDT"]["bestAsk"])
            price = best_bid + Decimal("0.01")
            assert price < best_ask
            placed = await client.signed_call(
                "order.place",
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.001",
                price=str(price),
                newClientOrderId="resting",
            )
            assert placed["result"]["status"] == "NEW"
            await client.events_until(lambda e: e["e"] == "outboundAccountPosition")
            trades: list[dict[str, Any]] = []
            while not trades or trades[-1]["X"] != "FILLED":
                await rest.control("POST", "/sim/market", {"steps": 20})
                with trio.move_on_after(0.05):  # what those steps did arrives at once
                    while not trades or trades[-1]["X"] != "FILLED":
                        event = (await client.event())["event"]
                        if event["e"] == "executionReport":
                            assert (event["x"], event["c"]) == ("TRADE", "resting")
                            assert event["m"] is True
                            trades.append(event)
            assert sum(Decimal(t["l"]) for t in trades) == Decimal("0.001")
            published = await rest.control(
                "GET", f"/sim/trades?symbol=BTCUSDT&fromId={trades[0]['t']}&limit=1"
            )
            assert published["trades"][0]["id"] == trades[0]["t"]
            assert published["trades"][0]["price"] == trades[0]["L"]
