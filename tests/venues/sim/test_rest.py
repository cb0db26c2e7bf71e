"""Every REST endpoint and error code, with httpx2 against a simulator on 127.0.0.1.

The market is paused and its synthetic book replaced by known liquidity
(``/sim/market/clear`` + ``/sim/market/order``), so fills are exact.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio

from daemon.venues.sim.config import MarketConfig
from tests.helpers.sim_api import (
    LIMIT_BUY,
    OTHER_KEY,
    OTHER_SECRET,
    TIMEOUT_S,
    Api,
    api_for,
    make_config,
    running_sim_server,
)


def _d(text: str) -> Decimal:
    return Decimal(text)


async def _balances(api: Api, **kwargs: Any) -> dict[str, tuple[Decimal, Decimal]]:
    r = await api.signed("GET", "/api/v3/account", **kwargs)
    assert r.status_code == 200, r.text
    return {b["asset"]: (_d(b["free"]), _d(b["locked"])) for b in r.json()["balances"]}


async def _empty_book(api: Api, symbol: str = "BTCUSDT") -> None:
    await api.control("POST", "/sim/market/clear", {"symbol": symbol})


async def _liquidity(api: Api, side: str, price: str, qty: str, symbol: str = "BTCUSDT") -> None:
    await api.control(
        "POST",
        "/sim/market/order",
        {"symbol": symbol, "side": side, "quantity": qty, "price": price},
    )


# --------------------------------------------------------------------------- market data


async def test_ping_time_exchange_info() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            ping = await api.get("/api/v3/ping")
            assert (ping.status_code, ping.json()) == (200, {})
            assert ping.headers["X-MBX-USED-WEIGHT-1M"] == "1"
            t = await api.get("/api/v3/time")
            assert abs(t.json()["serverTime"] - api.clock()) < 5000
            assert t.headers["content-type"].startswith("application/json")
            info = await api.get("/api/v3/exchangeInfo")
            body = info.json()
            assert info.headers["X-MBX-USED-WEIGHT-1M"] == str(1 + 1 + 20)
            assert body["timezone"] == "UTC"
            assert {
                (r["rateLimitType"], r["interval"], r["intervalNum"], r["limit"])
                for r in body["rateLimits"]
            } == {
                ("REQUEST_WEIGHT", "MINUTE", 1, 6000),
                ("ORDERS", "SECOND", 10, 50),
                ("ORDERS", "DAY", 1, 160000),
                ("RAW_REQUESTS", "MINUTE", 5, 61000),
            }
            btc = next(s for s in body["symbols"] if s["symbol"] == "BTCUSDT")
            assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == (
                "TRADING",
                "BTC",
                "USDT",
            )
            filters = {f["filterType"]: f for f in btc["filters"]}
            assert filters["PRICE_FILTER"] == {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.01000000",
            }
            assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
            assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
            assert filters["NOTIONAL"]["applyMinToMarket"] is True
            assert filters["PERCENT_PRICE_BY_SIDE"] == {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            }
            one = await api.get("/api/v3/exchangeInfo", symbol="LTCBTC")
            assert [s["symbol"] for s in one.json()["symbols"]] == ["LTCBTC"]
            ltc = {f["filterType"]: f for f in one.json()["symbols"][0]["filters"]}
            # A disabled bound is written as "0", as Binance does.
            assert ltc["PERCENT_PRICE_BY_SIDE"]["bidMultiplierUp"] == "0"
            many = await api.get("/api/v3/exchangeInfo", symbols='["LTCBTC","BTCUSDT"]')
            assert [s["symbol"] for s in many.json()["symbols"]] == ["LTCBTC", "BTCUSDT"]
            for hostile in ("[" * 5000, "[[1]]", "9" * 5000, "[NaN]"):
                refused = await api.get("/api/v3/exchangeInfo", symbols=hostile)
                assert (refused.status_code, refused.json()["code"]) == (400, -1135)
            bad = await api.get("/api/v3/exchangeInfo", symbol="NOPE")
            assert (bad.status_code, bad.json()) == (400, {"code": -1121, "msg": "Invalid symbol."})
            unread = await api.get("/api/v3/ping", extra=1)
            assert unread.json()["code"] == -1104
            missing = await api.get("/api/v3/nothing")
            assert missing.status_code == 404


async def test_depth_and_trades() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            depth = await api.get("/api/v3/depth", symbol="BTCUSDT", limit=5)
            body = depth.json()
            assert depth.headers["X-MBX-USED-WEIGHT-1M"] == "5"
            assert body["lastUpdateId"] == sim.engine.update_id("BTCUSDT")
            assert len(body["bids"]) == 5 and len(body["asks"]) == 5
            bids = [_d(px) for px, _ in body["bids"]]
            asks = [_d(px) for px, _ in body["asks"]]
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
            assert bids[0] < asks[0]
            assert all(isinstance(q, str) and _d(q) > 0 for _, q in body["bids"])
            big = await api.get("/api/v3/depth", symbol="BTCUSDT", limit=1000)
            assert big.headers["X-MBX-USED-WEIGHT-1M"] == str(5 + 50)
            assert (await api.get("/api/v3/depth")).json()["code"] == -1102
            assert (await api.get("/api/v3/depth", symbol="XX")).json()["code"] == -1121
            # Trades: make three, read them back.
            await api.control("POST", "/sim/market", {"steps": 0})
            for _ in range(3):
                await api.control(
                    "POST",
                    "/sim/market/order",
                    {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.001"},
                )
            trades = (await api.get("/api/v3/trades", symbol="BTCUSDT", limit=2)).json()
            assert [t["id"] for t in trades] == [2, 3]
            assert set(trades[0]) == {
                "id",
                "price",
                "qty",
                "quoteQty",
                "time",
                "isBuyerMaker",
                "isBestMatch",
            }
            assert trades[0]["isBuyerMaker"] is False
            assert _d(trades[0]["quoteQty"]) == _d(trades[0]["price"]) * _d(trades[0]["qty"])
            too_many = await api.get("/api/v3/trades", symbol="BTCUSDT", limit=1001)
            assert too_many.json()["code"] == -1130


#: Each simulated endpoint's security type as Binance's ``rest-api.md`` shows it
#: next to the endpoint's name (none shown: ``NONE``). TRADE and USER_DATA are
#: signed; ``historicalTrades`` became NONE in 2023 (it was MARKET_DATA).
DOCUMENTED_SECURITY = {
    ("GET", "/api/v3/ping"): "NONE",
    ("GET", "/api/v3/time"): "NONE",
    ("GET", "/api/v3/exchangeInfo"): "NONE",
    ("GET", "/api/v3/depth"): "NONE",
    ("GET", "/api/v3/trades"): "NONE",
    ("GET", "/api/v3/historicalTrades"): "NONE",
    ("POST", "/api/v3/order"): "TRADE",
    ("DELETE", "/api/v3/order"): "TRADE",
    ("GET", "/api/v3/order"): "USER_DATA",
    ("GET", "/api/v3/openOrders"): "USER_DATA",
    ("GET", "/api/v3/myTrades"): "USER_DATA",
    ("GET", "/api/v3/account"): "USER_DATA",
}


async def test_every_endpoint_has_its_documented_security_type() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim:
            endpoints = sim.rest._endpoints
    assert set(endpoints) == set(DOCUMENTED_SECURITY)
    for key, documented in DOCUMENTED_SECURITY.items():
        expected = "NONE" if documented == "NONE" else "SIGNED"
        assert endpoints[key].security == expected, key


async def test_historical_trades_needs_no_key_and_honours_from_id() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            for _ in range(5):
                await api.control(
                    "POST",
                    "/sim/market/order",
                    {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.001"},
                )
            # Security type NONE: no key needed, and a key header is ignored.
            no_key = await api.get("/api/v3/historicalTrades", symbol="BTCUSDT", fromId=4)
            assert no_key.status_code == 200, no_key.text
            assert [t["id"] for t in no_key.json()] == [4, 5]
            for junk in ("not a key!", "Unknown0Key"):
                ignored = await api.http.get(
                    "/api/v3/historicalTrades",
                    params={"symbol": "BTCUSDT", "fromId": 5},
                    headers={"X-MBX-APIKEY": junk},
                )
                assert ignored.status_code == 200, ignored.text
                assert [t["id"] for t in ignored.json()] == [5]
            headers = {"X-MBX-APIKEY": api.key}
            r = await api.http.get(
                "/api/v3/historicalTrades",
                params={"symbol": "BTCUSDT", "fromId": 2, "limit": 2},
                headers=headers,
            )
            assert r.headers["X-MBX-USED-WEIGHT-1M"] == str(25 * 4)
            assert [t["id"] for t in r.json()] == [2, 3]
            latest = await api.http.get("/api/v3/historicalTrades", params={"symbol": "BTCUSDT"})
            assert [t["id"] for t in latest.json()] == [1, 2, 3, 4, 5]
            beyond = await api.http.get(
                "/api/v3/historicalTrades", params={"symbol": "BTCUSDT", "fromId": 99}
            )
            assert beyond.json() == []


async def test_historical_trades_older_than_retention_start_at_oldest_kept() -> None:
    config = make_config(market=MarketConfig(paused=True, trade_retention=3))
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(config) as sim, api_for(sim) as api:
            for _ in range(6):
                await api.control(
                    "POST",
                    "/sim/market/order",
                    {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.001"},
                )
            r = await api.http.get(
                "/api/v3/historicalTrades",
                params={"symbol": "BTCUSDT", "fromId": 1, "limit": 10},
                headers={"X-MBX-APIKEY": api.key},
            )
            assert [t["id"] for t in r.json()] == [4, 5, 6]  # a gap the client must detect
            audit = await api.control("GET", "/sim/trades?symbol=BTCUSDT&fromId=1")
            assert [t["id"] for t in audit["trades"]] == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------- orders


async def test_new_order_response_types_and_headers() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await _empty_book(api)
            ack = await api.order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="20000",
                newClientOrderId="ack-1",
                newOrderRespType="ACK",
            )
            assert ack.status_code == 200, ack.text
            assert set(ack.json()) == {
                "symbol",
                "orderId",
                "orderListId",
                "clientOrderId",
                "transactTime",
            }
            assert ack.json()["clientOrderId"] == "ack-1"
            assert ack.headers["X-MBX-ORDER-COUNT-10S"] == "1"
            assert ack.headers["X-MBX-ORDER-COUNT-1D"] == "1"
            result = await api.order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="20000.5",
                newOrderRespType="RESULT",
            )
            body = result.json()
            assert "fills" not in body
            assert (body["status"], body["price"], body["origQty"]) == (
                "NEW",
                "20000.50000000",
                "0.01000000",
            )
            assert len(body["clientOrderId"]) == 22  # generated, like Binance's
            assert result.headers["X-MBX-ORDER-COUNT-10S"] == "2"
            full = await api.order(
                symbol="BTCUSDT",
                side="SELL",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.005",
                price="30000",
            )
            assert full.json()["fills"] == []  # FULL is the LIMIT default
            maker = await api.order(
                symbol="BTCUSDT",
                side="SELL",
                type="LIMIT_MAKER",
                quantity="0.005",
                price="30001",
            )
            assert set(maker.json()) == {
                "symbol",
                "orderId",
                "orderListId",
                "clientOrderId",
                "transactTime",
            }
            ids = [r.json()["orderId"] for r in (ack, result, full, maker)]
            assert ids == sorted(ids) and len(set(ids)) == 4


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        ({"price": "20000.001"}, -1013, "Filter failure: PRICE_FILTER"),
        ({"price": "0.001"}, -1013, "Filter failure: PRICE_FILTER"),
        ({"price": "2000000"}, -1013, "Filter failure: PRICE_FILTER"),
        ({"quantity": "0.000015"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "0.000001"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "9001"}, -1013, "Filter failure: LOT_SIZE"),
        ({"quantity": "0.0001", "price": "20000"}, -1013, "Filter failure: NOTIONAL"),
        # Far from the market (about 30 000): outside the default 0.2x..5x bands.
        ({"price": "200000"}, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
        ({"price": "5000"}, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
        ({"side": "SELL", "price": "200000"}, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
        # PRICE_FILTER is judged first, then the bands, then LOT_SIZE.
        ({"price": "5000.001"}, -1013, "Filter failure: PRICE_FILTER"),
        ({"price": "5000", "quantity": "0.000015"}, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
        ({"quantity": "100", "price": "100000"}, -1013, "Filter failure: NOTIONAL"),
        ({"quantity": "100"}, -2010, "Account has insufficient balance for requested action."),
        ({"quantity": "0.000000001"}, -1111, "Parameter 'quantity' has too much precision."),
        ({"quantity": "1e-3"}, -1100, "Illegal characters found in parameter 'quantity'"),
        ({"quantity": "-1"}, -1100, "Illegal characters found in parameter 'quantity'"),
        ({"side": "HOLD"}, -1117, "Invalid side."),
        ({"type": "ICEBERG"}, -1116, "Invalid orderType."),
        ({"type": "STOP_LOSS"}, -2010, "Stop loss orders are not supported for this symbol."),
        ({"timeInForce": "GTX"}, -1115, "Invalid timeInForce."),
        ({"timeInForce": None}, -1102, "Mandatory parameter 'timeInForce'"),
        ({"price": None}, -1102, "Mandatory parameter 'price'"),
        ({"symbol": "NOPE"}, -1121, "Invalid symbol."),
        ({"newClientOrderId": "has space"}, -1100, "parameter 'newClientOrderId'"),
        ({"newClientOrderId": "x" * 37}, -1100, "parameter 'newClientOrderId'"),
        ({"newOrderRespType": "ALL"}, -1130, "newOrderRespType"),
        ({"stopPrice": "1"}, -1106, "Parameter 'stopPrice' sent when not required."),
        ({"bogus": "1"}, -1104, "Not all sent parameters were read"),
    ],
)
async def test_new_order_rejections(params: dict[str, Any], code: int, msg: str) -> None:
    request = {k: v for k, v in (LIMIT_BUY | params).items() if v is not None}
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            r = await api.order(**request)
            assert r.status_code == 400, r.text
            assert r.json()["code"] == code
            assert msg in r.json()["msg"]
            assert len(sim.audit) == 0


async def test_market_order_parameter_rules() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            base = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}
            neither = await api.order(**base)
            assert neither.json()["code"] == -1102
            assert neither.json()["msg"] == (
                "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
            )
            both = await api.order(**base, quantity="0.01", quoteOrderQty="100")
            assert both.json()["code"] == -1106
            priced = await api.order(**base, quantity="0.01", price="1")
            assert priced.json() == {
                "code": -1106,
                "msg": "Parameter 'price' sent when not required.",
            }
            tif = await api.order(**base, quantity="0.01", timeInForce="GTC")
            assert tif.json()["code"] == -1106
            tiny = await api.order(**base, quantity="0.0001")  # ~3 USDT < minNotional 5
            assert tiny.json() == {"code": -1013, "msg": "Filter failure: NOTIONAL"}
            dup_param = await api.http.post(
                "/api/v3/order?symbol=BTCUSDT&symbol=BTCUSDT", headers={"X-MBX-APIKEY": api.key}
            )
            assert dup_param.json()["code"] == -1101


async def test_matching_limit_rests_and_fills_when_market_crosses() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await _empty_book(api)
            before = await _balances(api)
            placed = await api.order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="25000",
                newClientOrderId="rest-1",
            )
            assert placed.json()["status"] == "NEW"
            locked = await _balances(api)
            assert locked["USDT"] == (before["USDT"][0] - 250, _d("250"))
            # The market sells 0.004 at 25000: a partial fill of our resting bid.
            sold = await api.control(
                "POST",
                "/sim/market/order",
                {
                    "symbol": "BTCUSDT",
                    "side": "SELL",
                    "quantity": "0.004",
                    "price": "25000",
                    "timeInForce": "IOC",
                },
            )
            assert sold["status"] == "FILLED" and len(sold["tradeIds"]) == 1
            partial = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="rest-1"
            )
            assert partial.json()["status"] == "PARTIALLY_FILLED"
            assert partial.json()["executedQty"] == "0.00400000"
            assert partial.json()["cummulativeQuoteQty"] == "100.00000000"
            # A market that does not reach our price does not fill us.
            await _liquidity(api, "SELL", "25000.01", "1")
            still = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", orderId=placed.json()["orderId"]
            )
            assert still.json()["executedQty"] == "0.00400000"
            # The market crosses: a synthetic sell below our bid trades at OUR price (maker).
            await api.control(
                "POST",
                "/sim/market/order",
                {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.006", "price": "24000"},
            )
            done = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", orderId=placed.json()["orderId"]
            )
            assert done.json()["status"] == "FILLED"
            assert done.json()["cummulativeQuoteQty"] == "250.00000000"
            trades = (await api.signed("GET", "/api/v3/myTrades", symbol="BTCUSDT")).json()
            assert [(t["price"], t["qty"], t["isMaker"], t["isBuyer"]) for t in trades] == [
                ("25000.00000000", "0.00400000", True, True),
                ("25000.00000000", "0.00600000", True, True),
            ]
            assert [t["commissionAsset"] for t in trades] == ["BTC", "BTC"]
            assert [t["commission"] for t in trades] == ["0.00000400", "0.00000600"]
            after = await _balances(api)
            assert after["USDT"] == (before["USDT"][0] - 250, _d("0"))
            assert after["BTC"][0] == before["BTC"][0] + _d("0.01") - _d("0.00001")
            by_order = await api.signed(
                "GET", "/api/v3/myTrades", symbol="BTCUSDT", orderId=placed.json()["orderId"]
            )
            assert by_order.headers["X-MBX-USED-WEIGHT-1M"]
            assert len(by_order.json()) == 2
            from_id = await api.signed(
                "GET", "/api/v3/myTrades", symbol="BTCUSDT", fromId=trades[1]["id"]
            )
            assert [t["id"] for t in from_id.json()] == [trades[1]["id"]]


async def test_market_orders_walk_the_book() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await _empty_book(api)
            await _liquidity(api, "SELL", "30000", "0.01")
            await _liquidity(api, "SELL", "30001", "0.01")
            await _liquidity(api, "SELL", "30002", "0.01")
            r = await api.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.015")
            body = r.json()
            assert body["status"] == "FILLED"
            assert [(f["price"], f["qty"]) for f in body["fills"]] == [
                ("30000.00000000", "0.01000000"),
                ("30001.00000000", "0.00500000"),
            ]
            assert [f["commissionAsset"] for f in body["fills"]] == ["BTC", "BTC"]
            assert body["cummulativeQuoteQty"] == "450.00500000"
            tids = [f["tradeId"] for f in body["fills"]]
            assert tids == [tids[0], tids[0] + 1]
            # quoteOrderQty: spend about 150 USDT at 30001 / 30002.
            q = await api.order(symbol="BTCUSDT", side="BUY", type="MARKET", quoteOrderQty="150")
            qb = q.json()
            assert qb["status"] == "FILLED"
            assert qb["origQuoteOrderQty"] == "150.00000000"
            assert _d(qb["cummulativeQuoteQty"]) <= 150
            assert qb["origQty"] == qb["executedQty"] == "0.00499000"
            # SELL into an empty bid side: nothing to take, the order expires.
            e = await api.order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.001")
            assert (e.json()["status"], e.json()["executedQty"]) == ("EXPIRED", "0.00000000")


async def test_limit_maker_ioc_fok() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await _empty_book(api)
            await _liquidity(api, "SELL", "30000", "0.01")
            take = await api.order(
                symbol="BTCUSDT", side="BUY", type="LIMIT_MAKER", quantity="0.01", price="30000"
            )
            assert take.json() == {"code": -2010, "msg": "Order would immediately match and take."}
            fok = await api.order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="FOK",
                quantity="0.02",
                price="30000",
            )
            assert (fok.json()["status"], fok.json()["fills"]) == ("EXPIRED", [])
            ioc = await api.order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="IOC",
                quantity="0.02",
                price="30000",
            )
            assert (ioc.json()["status"], ioc.json()["executedQty"]) == ("EXPIRED", "0.01000000")
            balances = await _balances(api)
            assert balances["USDT"][1] == 0  # nothing left locked by expired orders


async def test_query_cancel_open_orders_and_errors() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await _empty_book(api)
            a = await api.order(
                symbol="BTCUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="20000",
                newClientOrderId="a",
            )
            b = await api.order(
                symbol="LTCBTC",
                side="SELL",
                type="LIMIT",
                timeInForce="GTC",
                quantity="1",
                price="0.01",
                newClientOrderId="b",
            )
            assert b.status_code == 200, b.text
            by_id = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", orderId=a.json()["orderId"]
            )
            assert by_id.headers["X-MBX-USED-WEIGHT-1M"]
            order = by_id.json()
            assert order["clientOrderId"] == "a" and order["isWorking"] is True
            assert set(order) >= {
                "symbol",
                "orderId",
                "orderListId",
                "clientOrderId",
                "price",
                "origQty",
                "executedQty",
                "cummulativeQuoteQty",
                "status",
                "timeInForce",
                "type",
                "side",
                "stopPrice",
                "icebergQty",
                "time",
                "updateTime",
                "isWorking",
                "origQuoteOrderQty",
            }
            mismatch = await api.signed(
                "GET",
                "/api/v3/order",
                symbol="BTCUSDT",
                orderId=a.json()["orderId"],
                origClientOrderId="b",
            )
            assert mismatch.json() == {"code": -2013, "msg": "Order does not exist."}
            none = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="zz"
            )
            assert (none.status_code, none.json()["code"]) == (400, -2013)
            neither = await api.signed("GET", "/api/v3/order", symbol="BTCUSDT")
            assert neither.json()["code"] == -1102
            # Another account cannot see or cancel it.
            other = await api.signed(
                "GET",
                "/api/v3/order",
                symbol="BTCUSDT",
                orderId=a.json()["orderId"],
                key=OTHER_KEY,
                secret=OTHER_SECRET,
            )
            assert other.json()["code"] == -2013
            all_open = await api.signed("GET", "/api/v3/openOrders")
            assert all_open.headers["X-MBX-USED-WEIGHT-1M"]
            assert {o["clientOrderId"] for o in all_open.json()} == {"a", "b"}
            btc_open = await api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")
            assert [o["clientOrderId"] for o in btc_open.json()] == ["a"]
            cancel = await api.signed(
                "DELETE",
                "/api/v3/order",
                symbol="BTCUSDT",
                origClientOrderId="a",
                newClientOrderId="cancel-a",
            )
            cbody = cancel.json()
            assert (cbody["status"], cbody["origClientOrderId"], cbody["clientOrderId"]) == (
                "CANCELED",
                "a",
                "cancel-a",
            )
            again = await api.signed(
                "DELETE", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="a"
            )
            assert again.json() == {"code": -2011, "msg": "Unknown order sent."}
            gone = await api.signed("DELETE", "/api/v3/order", symbol="BTCUSDT", orderId=12345)
            assert gone.json()["code"] == -2011
            queried = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="a"
            )
            assert queried.json()["status"] == "CANCELED"
            balances = await _balances(api)
            assert balances["USDT"][1] == 0 and balances["LTC"][1] == 1


async def test_client_order_id_unique_only_among_open_orders() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await _empty_book(api)
            params = LIMIT_BUY | {"newClientOrderId": "intent-7"}
            first = await api.order(**params)
            assert first.status_code == 200
            dup = await api.order(**params)
            assert (dup.status_code, dup.json()) == (
                400,
                {"code": -2010, "msg": "Duplicate order sent."},
            )
            # The same id on another account or symbol is independent.
            other = await api.order(**params, key=OTHER_KEY, secret=OTHER_SECRET)
            assert other.status_code == 200
            # After a cancel, the id is free again: a NEW order.
            await api.signed(
                "DELETE", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="intent-7"
            )
            second = await api.order(**params)
            assert second.status_code == 200
            assert second.json()["orderId"] != first.json()["orderId"]
            # After a fill too: the market takes the second order, the id is reused once more.
            await api.control(
                "POST",
                "/sim/market/order",
                {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.02", "price": "20000"},
            )
            filled = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="intent-7"
            )
            assert filled.json()["status"] == "FILLED"
            third = await api.order(**params)
            assert third.status_code == 200
            latest = await api.signed(
                "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="intent-7"
            )
            assert latest.json()["orderId"] == third.json()["orderId"]
            assert latest.json()["status"] == "NEW"
            audit = await api.control("GET", f"/sim/audit?clientOrderId=intent-7&apiKey={api.key}")
            assert [o["orderId"] for o in audit["orders"]] == [
                first.json()["orderId"],
                second.json()["orderId"],
                third.json()["orderId"],
            ]


async def test_account_endpoint() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            r = await api.signed("GET", "/api/v3/account")
            body = r.json()
            assert r.headers["X-MBX-USED-WEIGHT-1M"] == "20"
            assert body["accountType"] == "SPOT" and body["canTrade"] is True
            assert body["makerCommission"] == 10
            assert body["commissionRates"]["taker"] == "0.00100000"
            assets = {b["asset"]: b for b in body["balances"]}
            assert assets["BTC"] == {"asset": "BTC", "free": "10.00000000", "locked": "0.00000000"}
            other = await api.signed("GET", "/api/v3/account", key=OTHER_KEY, secret=OTHER_SECRET)
            assert other.status_code == 200
