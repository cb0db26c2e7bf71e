"""On the wire first: a fast-path submitter is answered once its request is written.

Real store, real client, real simulator (127.0.0.1, port 0). The answer never
comes before the commit; it comes when the order's request has been written to
the venue connection, or after ``answer_hold_ms`` at the most.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

from daemon.orders.executor import SendSignals
from daemon.orders.service import Pipeline
from daemon.orders.state import OrderState
from daemon.resilience.ratelimit import SlidingWindowLimiter
from tests.helpers.orders import FAST, Running, limit_request, running_pipeline, wait_state
from tests.helpers.sim import running_sim, sim_config

S = OrderState


def _pipeline(run: Running) -> Pipeline:
    pipeline = run.service.pipeline
    assert pipeline is not None
    return pipeline


def _limiter(run: Running) -> SlidingWindowLimiter:
    limiter = run.venues._client.limiter
    assert limiter is not None
    return limiter  # type: ignore[no-any-return]


def test_send_signals_hand_one_event_per_intent() -> None:
    signals = SendSignals()
    first = signals.expect("a")
    assert signals.expect("a") is first and len(signals) == 1
    # A waiter that gives up removes only its own event.
    signals.forget("a", trio.Event())
    assert len(signals) == 1
    assert signals.take("a") is first and signals.take("a") is None
    again = signals.expect("a")
    assert again is not first
    signals.forget("a", first)  # an old waiter does not remove the new one
    assert signals.take("a") is again
    signals.forget("missing", again)
    assert len(signals) == 0


async def test_the_answer_comes_when_the_request_is_written_not_when_the_venue_answers(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(
                sim, tmp_path / "store.db", settings=attrs.evolve(FAST, answer_hold_ms=30_000.0)
            ) as run,
        ):
            # The venue takes the order and holds its answer for a second.
            await sim.arm(
                kind="rest_timeout",
                method="POST",
                path="/api/v3/order",
                phase="after",
                delay_s=1.0,
                count=1,
            )
            start = trio.current_time()
            result = await run.service.submit(limit_request("w-1"))
            assert trio.current_time() - start < 0.9
            assert result.created
            record = await run.service.get(result.client_order_id)
            assert record.state is S.SENDING  # committed and on the wire, not yet answered
            accepted = await wait_state(run.service, result.client_order_id, S.ACCEPTED)
            assert accepted.venue_order_id is not None
            assert len(await sim.audit(result.client_order_id)) == 1
            assert len(_pipeline(run).executor.send_signals) == 0


async def test_the_hold_waits_for_a_send_the_limiter_delays(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(
                sim, tmp_path / "store.db", settings=attrs.evolve(FAST, answer_hold_ms=30_000.0)
            ) as run,
        ):
            limiter = _limiter(run)
            limiter.freeze_for(1.0)
            frozen_until = limiter.frozen_until
            assert frozen_until is not None
            result = await run.service.submit(limit_request("w-2"))
            assert trio.current_time() >= frozen_until
            assert len(await sim.audit(result.client_order_id)) == 1
            await wait_state(run.service, result.client_order_id, S.ACCEPTED)


async def test_the_hold_is_bounded(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(
                sim, tmp_path / "store.db", settings=attrs.evolve(FAST, answer_hold_ms=50.0)
            ) as run,
        ):
            limiter = _limiter(run)
            limiter.freeze_for(2.0)
            frozen_until = limiter.frozen_until
            assert frozen_until is not None
            result = await run.service.submit(limit_request("w-3"))
            # Answered after the hold, while the send still waits for the limiter.
            assert trio.current_time() < frozen_until
            assert (await run.service.get(result.client_order_id)).state is S.SENDING
            assert await sim.audit(result.client_order_id) == []
            assert len(_pipeline(run).executor.send_signals) == 0  # the waiter cleaned up
            await wait_state(run.service, result.client_order_id, S.ACCEPTED)
            assert len(await sim.audit(result.client_order_id)) == 1


async def test_no_hold_answers_at_the_commit(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(
                sim, tmp_path / "store.db", settings=attrs.evolve(FAST, answer_hold_ms=0.0)
            ) as run,
        ):
            assert _pipeline(run).entry.send_signals is None
            limiter = _limiter(run)
            limiter.freeze_for(2.0)
            frozen_until = limiter.frozen_until
            assert frozen_until is not None
            result = await run.service.submit(limit_request("w-4"))
            assert trio.current_time() < frozen_until
            assert await sim.audit(result.client_order_id) == []
            await wait_state(run.service, result.client_order_id, S.ACCEPTED)
            assert len(await sim.audit(result.client_order_id)) == 1
