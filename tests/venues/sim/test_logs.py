"""Trade log retention, depth batches and the audit log."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from daemon.venues.sim.audit import AuditLog
from daemon.venues.sim.market import DepthBatcher, TradeLog
from daemon.venues.sim.orderbook import BookChange, Trade
from tests.helpers.sim_api import LIMIT_BUY, TIMEOUT_S, api_for, running_sim_server


def _trade(trade_id: int) -> Trade:
    return Trade("BTCUSDT", trade_id, Decimal("1"), Decimal("2"), Decimal("2"), trade_id, False)


def test_trade_log_retention_and_from_id() -> None:
    log = TradeLog("BTCUSDT", retention=3, audit_retention=5)
    for i in range(1, 13):
        log.append(_trade(i))
    assert [t.id for t in log.recent(10)] == [10, 11, 12]
    assert [t.id for t in log.recent(2)] == [11, 12]
    assert log.oldest_id() == 10 and log.oldest_id(audit=True) == 8
    assert [t.id for t in log.from_id(1, 10)] == [10, 11, 12]  # older than retention: oldest kept
    assert [t.id for t in log.from_id(11, 10)] == [11, 12]
    assert log.from_id(13, 10) == []
    assert [t.id for t in log.from_id(1, 2, audit=True)] == [8, 9]
    with pytest.raises(ValueError, match="after 12"):
        log.append(_trade(14))  # a gap is a bug


def test_trade_log_compacts_without_losing_order() -> None:
    log = TradeLog("BTCUSDT", retention=10, audit_retention=10)
    for i in range(1, 1001):
        log.append(_trade(i))
    assert len(log) == 10
    assert [t.id for t in log.from_id(0, 100, audit=True)] == list(range(991, 1001))


def test_depth_batcher_chains_update_ids() -> None:
    batcher = DepthBatcher("BTCUSDT")
    assert batcher.flush(1) is None
    batcher.record(BookChange("BTCUSDT", 5, ((Decimal("10"), Decimal("1")),), ()))
    batcher.record(
        BookChange(
            "BTCUSDT",
            6,
            ((Decimal("10"), Decimal("0")), (Decimal("11"), Decimal("2"))),
            ((Decimal("12"), Decimal("3")),),
        )
    )
    event = batcher.flush(1000)
    assert event == {
        "e": "depthUpdate",
        "E": 1000,
        "s": "BTCUSDT",
        "U": 5,
        "u": 6,
        "b": [["11.00000000", "2.00000000"], ["10.00000000", "0.00000000"]],
        "a": [["12.00000000", "3.00000000"]],
    }
    assert batcher.flush(1100) is None
    batcher.record(BookChange("BTCUSDT", 7, (), ((Decimal("12"), Decimal("0")),)))
    assert batcher.flush(1200) is not None
    with pytest.raises(ValueError, match="update id 9 after 7"):
        batcher.record(BookChange("BTCUSDT", 9, (), ()))


def test_audit_log_filters_and_bound() -> None:
    audit = AuditLog(retention=3)
    for i in range(5):
        audit.record(
            time_ms=i,
            api_key="k" if i % 2 else "j",
            symbol="BTCUSDT",
            order_id=i,
            client_order_id=f"c{i % 2}",
            status="NEW",
            params={"symbol": "BTCUSDT", "signature": "secret"},
        )
    assert len(audit) == 3
    assert [r.seq for r in audit.query()] == [3, 4, 5]
    assert [r.order_id for r in audit.query(api_key="k")] == [3]
    assert [r.order_id for r in audit.query(client_order_id="c0")] == [2, 4]
    assert [r.seq for r in audit.query(from_seq=4, limit=1)] == [4]
    assert audit.query()[0].params == {"symbol": "BTCUSDT"}  # never the signature


async def test_audit_endpoint_lists_exactly_the_accepted_orders() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, api_for(sim) as api:
            await api.control("POST", "/sim/market/clear", {"symbol": "BTCUSDT"})
            ok = await api.order(**LIMIT_BUY, newClientOrderId="audit-1")
            off_tick = LIMIT_BUY | {"price": "20000.001"}
            rejected = await api.order(**off_tick, newClientOrderId="audit-2")
            assert rejected.json()["code"] == -1013
            dup = await api.order(**LIMIT_BUY, newClientOrderId="audit-1")
            assert dup.json()["code"] == -2010
            audit = await api.control("GET", "/sim/audit")
            assert len(audit["orders"]) == 1
            record = audit["orders"][0]
            assert record["orderId"] == ok.json()["orderId"]
            assert record["clientOrderId"] == "audit-1"
            assert record["apiKey"] == api.key
            assert record["status"] == "NEW"
            assert isinstance(record["time"], int)
            assert record["params"]["price"] == "20000"
            assert "signature" not in record["params"]
            assert "timestamp" in record["params"]
            assert (await api.control("GET", "/sim/audit?symbol=LTCBTC"))["orders"] == []
            status = await api.control("GET", "/sim/status")
            assert status["auditRecords"] == 1
            balances = await api.control("GET", "/sim/balances")
            assert balances["accounts"][api.key]["USDT"]["locked"] == "200.00000000"
            bad = await api.http.get("/sim/trades?symbol=NOPE")
            assert bad.status_code == 400
