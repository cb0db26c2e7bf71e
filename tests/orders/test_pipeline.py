"""The order pipeline end to end: real store, real client, real simulator (127.0.0.1, port 0)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import attrs
import pytest
import trio

from daemon.errors import RiskRejectedError
from daemon.orders.gateway import IntentConflictError
from daemon.orders.intent import IntentValidationError, OrderIntent
from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState, transition
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.risk.state import TradingState
from daemon.store.orders import OrderStore
from daemon.store.sqlite import SqliteStore
from tests.helpers.orders import limit_request, market_request, running_pipeline, wait_state
from tests.helpers.sim import rest_client, running_sim, sim_config

S = OrderState


async def test_limit_order_is_recorded_sent_accepted_and_canceled(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            service = run.service
            first = await service.submit(limit_request("m-1"))
            assert first.created
            again = await service.submit(limit_request("m-1"))
            assert not again.created
            assert again.client_order_id == first.client_order_id
            accepted = await wait_state(service, first.client_order_id, S.ACCEPTED)
            assert accepted.venue_order_id is not None
            # An idle account takes the fast path: SENDING recorded with the intent.
            assert service.status()["entry"]["fast_path"] == 1
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
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
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
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db", limits=limits) as run,
        ):
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


# --------------------------------------------------------------------------- ambiguous outcomes


async def test_5xx_after_processing_is_unknown_then_adopted_never_resent(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            await sim.arm(
                kind="rest_error",
                method="POST",
                path="/api/v3/order",
                phase="after",
                status=503,
                count=1,
            )
            result = await run.service.submit(limit_request("u-1"))
            record = await wait_state(run.service, result.client_order_id, S.ACCEPTED)
            history = [
                h["to"] for h in (await run.service.details(record.client_order_id))["history"]
            ]
            assert history == ["PENDING", "SENDING", "UNKNOWN", "ACCEPTED"]
            assert len(await sim.audit(result.client_order_id)) == 1
            assert record.send_attempts == 1


async def test_5xx_before_processing_is_resent_with_the_same_id_after_proof(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            await sim.arm(
                kind="rest_error",
                method="POST",
                path="/api/v3/order",
                phase="before",
                status=503,
                count=1,
            )
            result = await run.service.submit(limit_request("r-1"))
            record = await wait_state(run.service, result.client_order_id, S.ACCEPTED)
            history = [
                h["to"] for h in (await run.service.details(record.client_order_id))["history"]
            ]
            assert history == ["PENDING", "SENDING", "UNKNOWN", "PENDING", "SENDING", "ACCEPTED"]
            assert record.send_attempts == 2
            assert len(await sim.audit(result.client_order_id)) == 1


async def test_timeout_after_processing_with_invisible_order_waits_for_the_grace(
    tmp_path: Path,
) -> None:
    """The order exists but queries cannot see it for a while: a "not found" inside the
    visibility grace proves nothing, so the id is not reused; the query finds it later."""
    with trio.fail_after(40):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            await sim.arm(kind="order_invisible", delay_s=1.5, count=1)
            await sim.arm(
                kind="rest_timeout",
                method="POST",
                path="/api/v3/order",
                phase="after",
                delay_s=3.0,
                count=1,
            )
            result = await run.service.submit(market_request("inv-1"))
            record = await wait_state(run.service, result.client_order_id, S.FILLED)
            history = [
                h["to"] for h in (await run.service.details(record.client_order_id))["history"]
            ]
            assert history == ["PENDING", "SENDING", "UNKNOWN", "FILLED"]
            assert len(await sim.audit(result.client_order_id)) == 1


# --------------------------------------------------------------------------- restarts


async def test_restart_resolves_sending_rows_and_sends_pending_ones(tmp_path: Path) -> None:
    """A row left SENDING by a crash becomes UNKNOWN and is resolved by query; PENDING rows
    are sent after start-up reconciliation; an order placed behind our back is reported."""

    path = tmp_path / "store.db"
    with trio.fail_after(40):
        async with running_sim(sim_config()) as sim:
            # Build the crash's leftovers by hand, in the real store.
            store = await SqliteStore.open(path)
            orders = OrderStore(store)
            sent = OrderIntent.from_request(limit_request("crash-1"))
            pending = OrderIntent.from_request(limit_request("crash-2", price="28000.00"))
            await orders.insert_intents(
                [IntentRecord.from_intent(i, venue="sim") for i in (sent, pending)]
            )
            await orders.apply_transition(
                sent.client_order_id,
                transition(S.PENDING, S.SENDING, reason="sending new order"),
            )
            await store.aclose()
            # The request did reach the venue before the "crash".
            async with rest_client(sim) as client:
                await client.new_order(sent.to_new_order())
                foreign = OrderIntent.from_request(limit_request("manual", price="27000.00"))
                order = foreign.to_new_order()
                await client.new_order(attrs.evolve(order, client_order_id="manual-order-1"))
            async with running_pipeline(sim, path) as run:
                adopted = await wait_state(run.service, sent.client_order_id, S.ACCEPTED)
                history = [
                    h["to"] for h in (await run.service.details(adopted.client_order_id))["history"]
                ]
                assert history == ["PENDING", "SENDING", "UNKNOWN", "ACCEPTED"]
                await wait_state(run.service, pending.client_order_id, S.ACCEPTED)
                assert len(await sim.audit(sent.client_order_id)) == 1
                assert len(await sim.audit(pending.client_order_id)) == 1
                status = run.service.status()
                unknown = status["reconcile"]["unknown_venue_orders"]
                assert [u["client_order_id"] for u in unknown] == ["manual-order-1"]
                assert unknown[0]["has_our_id_shape"] is False
                level, reason = run.service.check()
                assert level.value == "degraded" and "unknown to the store" in (reason or "")


async def test_halt_refuses_new_intents_and_keeps_accepted_ones(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            service = run.service
            first = await service.submit(limit_request("h-1"))
            await service.set_trading_state(TradingState.HALTED, "main", reason="test")
            with pytest.raises(RiskRejectedError) as halted:
                await service.submit(limit_request("h-2"))
            assert halted.value.codes == ("ACCOUNT_HALTED",)
            # Already accepted: still sent, and the same message id is still answered.
            await wait_state(service, first.client_order_id, S.ACCEPTED)
            assert not (await service.submit(limit_request("h-1"))).created
            await service.set_trading_state(TradingState.ACTIVE, "main", reason="test over")
            assert (await service.submit(limit_request("h-2"))).created


async def test_a_halt_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with trio.fail_after(30):
        async with running_sim(sim_config()) as sim:
            async with running_pipeline(sim, path) as run:
                answer = await run.service.set_trading_state(
                    TradingState.HALTED, None, reason="operator: venue incident"
                )
                assert answer["persisted"]
            async with running_pipeline(sim, path) as run:
                assert run.service.states.global_state is TradingState.HALTED
                with pytest.raises(RiskRejectedError) as halted:
                    await run.service.submit(limit_request("after-restart"))
                assert halted.value.codes == ("TRADING_HALTED",)


async def test_stop_leaves_unsent_work_pending_and_the_next_start_sends_it_once(
    tmp_path: Path,
) -> None:
    """With the venue down, accepted intents wait in their account's queue; a stop
    leaves them PENDING (durable), and the next start sends each exactly once."""
    path = tmp_path / "store.db"
    with trio.fail_after(40):
        async with running_sim(sim_config()) as sim:
            async with running_pipeline(sim, path) as run:
                run.venues.down = True
                ids = [
                    (
                        await run.service.submit(limit_request(f"d-{i}", price=f"2900{i}.00"))
                    ).client_order_id
                    for i in range(3)
                ]
                for coid in ids:
                    assert (await run.service.get(coid)).state is S.PENDING
            async with running_pipeline(sim, path) as run:
                for coid in ids:
                    record = await wait_state(run.service, coid, S.ACCEPTED)
                    assert record.send_attempts == 1
                    assert len(await sim.audit(coid)) == 1
                # Sent in submit order (one account: one queue).
                audit = await sim.audit()
                sent_order = [a["clientOrderId"] for a in audit if a["clientOrderId"] in ids]
                assert sent_order == ids
