"""The order pipeline end to end: real store, real client, real simulator (127.0.0.1, port 0)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import trio

from daemon.errors import RiskRejectedError
from daemon.orders.gateway import IntentConflictError
from daemon.orders.intent import IntentValidationError
from daemon.orders.state import OrderState
from daemon.risk.limits import LimitTable, RiskLimits
from tests.orders.harness import limit_request, market_request, running_pipeline, wait_state
from tests.venues.conftest import running_sim, sim_config

S = OrderState


async def test_limit_order_is_recorded_sent_accepted_and_canceled(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_sim(sim_config()) as sim, running_pipeline(
            sim, tmp_path / "store.db"
        ) as run:
            service = run.service
            first = await service.submit(limit_request("m-1"))
            assert first.created
            again = await service.submit(limit_request("m-1"))
            assert not again.created
            assert again.client_order_id == first.client_order_id
            accepted = await wait_state(service, first.client_order_id, S.ACCEPTED)
            assert accepted.venue_order_id is not None
            audit = await sim.audit(first.client_order_id)
            assert len(audit) == 1
            await service.cancel(first.client_order_id)
            done = await wait_state(service, first.client_order_id, S.CANCELED)
            assert done.cancel_requested_at_ms is not None
            details = await service.details(first.client_order_id)
            states = [h["to"] for h in details["history"]]
            assert states == ["PENDING", "SENDING", "ACCEPTED", "CANCELED"]
            with pytest.raises(IntentConflictError):
                await service.submit(limit_request("m-1", price="29001.00"))


async def test_market_order_fills_and_moves_the_position(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_sim(sim_config()) as sim, running_pipeline(
            sim, tmp_path / "store.db"
        ) as run:
            service = run.service
            result = await service.submit(market_request("mk-1", quantity="0.010"))
            filled = await wait_state(service, result.client_order_id, S.FILLED)
            assert filled.executed_qty == Decimal("0.010")
            details = await service.details(result.client_order_id)
            assert sum(Decimal(f["quantity"]) for f in details["fills"]) == Decimal("0.010")
            positions = await service.positions("main")
            assert positions[("main", "BTCUSDT")] == Decimal("0.010")
            assert len(await sim.audit(result.client_order_id)) == 1


async def test_bad_requests_and_risk_rejects(tmp_path: Path) -> None:
    limits = LimitTable(default=RiskLimits(max_orders_per_window=None, max_open_orders=1))
    with trio.fail_after(30):
        async with running_sim(sim_config()) as sim, running_pipeline(
            sim, tmp_path / "store.db", limits=limits
        ) as run:
            service = run.service
            with pytest.raises(IntentValidationError) as bad:
                await service.submit({"message_id": "x", "account": "nobody"})
            assert len(bad.value.problems) >= 4
            with pytest.raises(IntentValidationError) as unknown:
                await service.submit(limit_request("x", account="other"))
            assert [p.code for p in unknown.value.problems] == ["UNKNOWN_ACCOUNT"]
            with pytest.raises(RiskRejectedError) as tick:
                await service.submit(limit_request("t-1", price="29000.001"))
            assert tick.value.codes == ("PRICE_TICK",)
            await service.submit(limit_request("o-1"))
            with pytest.raises(RiskRejectedError) as full:
                await service.submit(limit_request("o-2"))
            assert full.value.codes == ("OPEN_ORDERS_EXCEEDED",)
