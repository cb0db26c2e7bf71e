"""The user data stream in the order pipeline: pushed fills, overlap without double counting,
and the stream as a second witness for orders of unknown outcome.

Pure parts first (:class:`StreamWitness`, :func:`judge_not_found`), then the real
pipeline over the real store, the real client and the simulator's WebSocket API
(127.0.0.1, port 0).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from daemon.config import OrdersConfig
from daemon.model.userstream import ExecutionReport, ExecutionType, UserStreamDown, UserStreamUp
from daemon.orders.intent import OrderIntent
from daemon.orders.records import IntentRecord
from daemon.orders.state import (
    DecisionKind,
    NotFound,
    NotFoundYet,
    OrderState,
    resolve_unknown,
)
from daemon.orders.userstream import StreamWitness, Witness, judge_not_found
from daemon.store.orders_fills import fills_for
from tests.helpers.orders import (
    FAST,
    Running,
    StreamingVenues,
    limit_request,
    market_request,
    running_pipeline,
    wait_state,
)
from tests.helpers.sim import SYMBOL, SimHarness, running_sim, sim_config

S = OrderState
T0_MS = 1_700_000_000_000

# --------------------------------------------------------------------------- pure


def _witness_up_since(ms: int) -> StreamWitness:
    witness = StreamWitness("v")
    witness.on_up(UserStreamUp(venue="v", since_ms=ms, subscription_id=0))
    return witness


def test_a_stream_down_during_the_window_is_no_witness() -> None:
    never = StreamWitness("v")
    assert never.verdict(sent_at_ms=T0_MS, window_end_ms=T0_MS + 5000, clock_skew_ms=0) is (
        Witness.NOT_WITNESSED
    )
    late = _witness_up_since(T0_MS + 1)  # subscribed only after the send
    assert late.verdict(sent_at_ms=T0_MS, window_end_ms=T0_MS + 5000, clock_skew_ms=0) is (
        Witness.NOT_WITNESSED
    )
    dropped = _witness_up_since(T0_MS - 1000)
    dropped.on_down(UserStreamDown(venue="v", at_ms=T0_MS + 10, reason="closed"))
    assert not dropped.up
    assert dropped.verdict(sent_at_ms=T0_MS, window_end_ms=T0_MS + 5000, clock_skew_ms=0) is (
        Witness.NOT_WITNESSED
    )


def test_subscribed_all_along_witnesses_only_once_it_delivered_past_the_window() -> None:
    witness = _witness_up_since(T0_MS - 1000)
    kwargs = {"sent_at_ms": T0_MS, "window_end_ms": T0_MS + 5000, "clock_skew_ms": 500}
    assert witness.verdict(**kwargs) is Witness.UNSURE  # a quiet account proves nothing
    witness.on_event(T0_MS + 5400)  # inside window + skew: still unsure
    assert witness.verdict(**kwargs) is Witness.UNSURE
    witness.on_event(T0_MS + 5500, "td1-other")
    assert witness.verdict(**kwargs) is Witness.WITNESSED
    assert witness.saw("td1-other") and not witness.saw("td1-mine")


def _record(sent_at_ms: int) -> IntentRecord:
    intent = OrderIntent.from_request(limit_request("w-1"))
    record = IntentRecord.from_intent(intent, venue="v")
    return attrs.evolve(record, state=S.UNKNOWN, sent_at_ms=sent_at_ms)


SETTINGS = OrdersConfig(
    section_deadline_s=4.0, clock_skew_s=0.5, query_lag_s=5.0, unwitnessed_hold_s=10.0
)
# Window: 4 + 0.5 (recvWindow) + 0.5 = 5 s; the full grace adds query_lag_s: 10 s.


@pytest.mark.parametrize(
    ("witness", "elapsed_s", "expected"),
    [
        (None, 9.9, NotFoundYet),
        (None, 10.0, NotFound),
        ("unsure", 9.9, NotFoundYet),
        ("unsure", 10.0, NotFound),
        ("witnessed", 4.9, NotFoundYet),
        ("witnessed", 5.0, NotFound),  # both agree: no query lag to wait for
        ("down", 10.0, NotFoundYet),  # the resend is held
        ("down", 19.9, NotFoundYet),
        ("down", 20.0, NotFound),
    ],
)
def test_the_grace_follows_the_witness(
    witness: str | None, elapsed_s: float, expected: type
) -> None:
    record = _record(T0_MS)
    w: StreamWitness | None = None
    if witness == "down":
        w = StreamWitness("v")
    elif witness is not None:
        w = _witness_up_since(T0_MS - 1)
        if witness == "witnessed":
            w.on_event(T0_MS + 5500)
    outcome = judge_not_found(
        SETTINGS, w, record, now_s=T0_MS / 1000 + elapsed_s, recv_window_ms=500
    )
    assert isinstance(outcome, expected)
    if witness == "down":
        assert w is not None
        assert (record.client_order_id in w.held) == (elapsed_s >= 10.0)


@pytest.mark.parametrize("witness", ["down", "unsure", "witnessed"])
@pytest.mark.parametrize("elapsed_s", [0.0, 10.0, 20.0, 3600.0])
def test_an_order_the_stream_reported_is_never_proven_absent(
    witness: str, elapsed_s: float
) -> None:
    """The stream's event proves existence: a query's "not found" is the venue lagging,
    however late it comes and whatever the stream did since."""
    record = _record(T0_MS)
    w = StreamWitness("v") if witness == "down" else _witness_up_since(T0_MS - 1)
    w.on_event(T0_MS + 100, record.client_order_id)
    if witness == "witnessed":
        w.on_event(T0_MS + 5500)
    if witness == "down":
        w.on_down(UserStreamDown(venue="v", at_ms=T0_MS + 200, reason="closed"))
    outcome = judge_not_found(
        SETTINGS, w, record, now_s=T0_MS / 1000 + elapsed_s, recv_window_ms=500
    )
    assert isinstance(outcome, NotFoundYet)
    assert outcome.reported
    assert outcome.remaining_s >= 0.0
    decision = resolve_unknown(outcome)
    assert decision.kind is DecisionKind.QUERY_AGAIN
    assert "user data stream reported it" in decision.reason
    assert not w.held  # not a held resend: no resend is coming at all


# --------------------------------------------------------------------------- pipeline

QUIET = attrs.evolve(FAST, poll_interval_s=3600.0, reconcile_interval_s=3600.0)


async def _clear_book(sim: SimHarness) -> None:
    await sim.control("POST", "/sim/market/clear", {"symbol": SYMBOL})


def _stream(run: Running) -> dict[str, Any]:
    stream: dict[str, Any] = run.service.status().get("user_streams", {}).get("sim", {})
    return stream


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (the caller's fail_after bounds it)."""
    while not condition():  # noqa: ASYNC110 - a state outside this test's control
        await trio.sleep(0.02)


async def _subscribed(run: Running) -> None:
    await _until(lambda: bool(_stream(run).get("subscribed")))


async def _stored_fills(run: Running, coid: str) -> list[Any]:
    return await run.store.read(lambda conn: fills_for(conn, coid))


async def test_fills_are_pushed_by_the_stream_with_polling_off(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "s.db", settings=QUIET, user_stream=True) as run,
        ):
            await _subscribed(run)
            await _clear_book(sim)
            result = await run.service.submit(
                limit_request("push-1", price="30000.00", quantity="0.020")
            )
            coid = result.client_order_id
            await wait_state(run.service, coid, S.ACCEPTED)
            first = await sim.market_order("SELL", "0.005")
            record = await wait_state(run.service, coid, S.PARTIALLY_FILLED)
            assert record.executed_qty == Decimal("0.005")
            second = await sim.market_order("SELL", "0.015")
            record = await wait_state(run.service, coid, S.FILLED)
            assert record.executed_qty == Decimal("0.020")
            fills = await _stored_fills(run, coid)
            assert sorted(f.trade_id for f in fills) == sorted(first + second)
            positions = await run.service.positions("main")
            assert positions[("main", SYMBOL)] == Decimal("0.020")
            stream = run.service.status()["user_streams"]["sim"]
            assert stream["fill_source"] == "stream"
            assert stream["applied"] >= 2 and stream["fetched"] == 0
            history = [h["reason"] for h in (await run.service.details(coid))["history"]]
            assert "user data stream: TRADE" in history
            families = {f.name: f for f in run.service.metrics()}
            (up,) = families["tradingd_orders_user_stream_subscribed"].samples
            (events,) = families["tradingd_orders_user_stream_events"].samples
            assert up.value == 1 and events.value >= 3  # NEW, TRADE, TRADE (and more)


async def test_stream_polling_and_replays_overlap_without_double_counting(
    tmp_path: Path,
) -> None:
    """Stream, fast polling and reconciliation all run; then every event of the order is
    replayed in shuffled orders, twice each: fills, quantities and position stay exact."""
    busy = attrs.evolve(FAST, poll_interval_s=0.05, reconcile_interval_s=0.3)
    with trio.fail_after(40):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "s.db", settings=busy, user_stream=True) as run,
        ):
            await _subscribed(run)
            await _clear_book(sim)
            result = await run.service.submit(
                limit_request("overlap-1", price="30000.00", quantity="0.050")
            )
            coid = result.client_order_id
            await wait_state(run.service, coid, S.ACCEPTED)
            trade_ids: list[int] = []
            for quantity in ("0.007", "0.011", "0.002", "0.013", "0.017"):
                trade_ids += await sim.market_order("SELL", quantity)
                await trio.sleep(0.03)
            record = await wait_state(run.service, coid, S.FILLED)
            # The venue's own view, turned into the events a stream would replay.
            venues = run.venues
            assert isinstance(venues, StreamingVenues)
            client = venues.venue_client
            report = await client.get_order(SYMBOL, client_order_id=coid)
            trades = await client.my_trades(SYMBOL, order_id=report.order_id)
            events = [
                ExecutionReport(
                    report=attrs.evolve(
                        report, executed_qty=sum((t.quantity for t in trades[: i + 1]), Decimal(0))
                    ),
                    execution_type=ExecutionType.TRADE,
                    event_time_ms=t.time_ms,
                    transaction_time_ms=t.time_ms,
                    fill=t,
                )
                for i, t in enumerate(trades)
            ]
            applier = run.service.pipeline.streams.appliers["sim"]  # type: ignore[union-attr]
            rng = random.Random(5)
            for _ in range(3):
                replay = events * 2
                rng.shuffle(replay)
                for event in replay:
                    await applier.apply(event)
            fills = await _stored_fills(run, coid)
            assert sorted(f.trade_id for f in fills) == sorted(trade_ids)
            assert len(fills) == len(trade_ids) == 5
            stored = await run.service.get(coid)
            assert stored.state is S.FILLED and stored.executed_qty == Decimal("0.050")
            positions = await run.service.positions("main")
            assert positions[("main", SYMBOL)] == Decimal("0.050")
            assert record.executed_qty == Decimal("0.050")


async def _audited(sim: SimHarness, coid: str, count: int) -> bool:
    return len(await sim.audit(coid)) >= count


async def _ambiguous_invisible_send(sim: SimHarness, invisible_s: float) -> None:
    """The next new order is processed but answered -1007, and queries cannot see it for
    ``invisible_s`` — far beyond ``query_lag_s``."""
    await sim.arm(kind="order_invisible", delay_s=invisible_s, count=1)
    await sim.arm(kind="rest_unknown", method="POST", path="/api/v3/order", count=1)


async def test_the_stream_proves_existence_of_an_order_queries_cannot_see(
    tmp_path: Path,
) -> None:
    """A lagging venue (visibility far beyond query_lag_s): the stream's NEW event proves
    the order exists at once, so the grace never runs out and nothing is resent."""
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "s.db", user_stream=True) as run,
        ):
            await _subscribed(run)
            await _ambiguous_invisible_send(sim, invisible_s=20.0)
            result = await run.service.submit(limit_request("lag-1", price="20000.00"))
            record = await wait_state(run.service, result.client_order_id, S.ACCEPTED)
            history = (await run.service.details(record.client_order_id))["history"]
            assert [h["to"] for h in history] == ["PENDING", "SENDING", "UNKNOWN", "ACCEPTED"]
            assert history[-1]["reason"] == "user data stream: NEW"
            assert len(await sim.audit(result.client_order_id)) == 1


async def test_with_the_stream_down_the_resend_is_held_past_the_grace(tmp_path: Path) -> None:
    """The same lagging venue with the stream down during the window: a query's "not
    found" after the visibility grace is not trusted alone; the resend is held for
    unwitnessed_hold_s, the order becomes visible meanwhile, and nothing is resent."""
    settings = attrs.evolve(FAST, unwitnessed_hold_s=10.0)  # grace 4.7 s, then the hold
    with trio.fail_after(40):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "s.db", settings=settings, user_stream=True) as run,
        ):
            await _subscribed(run)
            # Every new subscription fails from now on; the current one is ended.
            await sim.arm(
                kind="wsapi_error", method="userDataStream.subscribe.signature", status=503
            )
            await sim.arm(kind="userstream_terminate", every_s=0.1, count=1)
            await _until(lambda: not _stream(run)["subscribed"])
            await _ambiguous_invisible_send(sim, invisible_s=8.0)
            result = await run.service.submit(limit_request("held-1", price="20000.00"))
            coid = result.client_order_id
            record = await wait_state(run.service, coid, S.ACCEPTED)
            assert coid in run.service.status()["user_streams"]["sim"]["resends_held"]
            history = [h["to"] for h in (await run.service.details(coid))["history"]]
            assert history == ["PENDING", "SENDING", "UNKNOWN", "ACCEPTED"]
            assert record.send_attempts == 1
            assert len(await sim.audit(coid)) == 1


async def test_without_the_stream_the_lagging_venue_gets_a_duplicate(tmp_path: Path) -> None:
    """The negative control: no stream, visibility lag beyond the grace — the query's
    "not found" is taken as proof, the id is sent again, and the venue fills it twice.
    (This is the assumption the stream removes; the checker can see the duplicate.)"""
    with trio.fail_after(40):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "s.db") as run,
        ):
            await _ambiguous_invisible_send(sim, invisible_s=8.0)
            # A MARKET order fills at once; its id is free again at the venue, so the
            # resend is accepted as a second order (an open one would be -2010 duplicate).
            result = await run.service.submit(market_request("dup-1"))
            coid = result.client_order_id
            await sim.wait_until(lambda: _audited(sim, coid, 2))
            record = await run.service.get(coid)
            assert record.send_attempts == 2


async def test_orders_over_the_websocket_api(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(
                sim, tmp_path / "s.db", user_stream=True, order_transport="ws-api"
            ) as run,
        ):
            await _subscribed(run)
            limit = await run.service.submit(limit_request("ws-1", price="20000.00"))
            await wait_state(run.service, limit.client_order_id, S.ACCEPTED)
            market = await run.service.submit(market_request("ws-2"))
            filled = await wait_state(run.service, market.client_order_id, S.FILLED)
            assert filled.executed_qty > 0
            await run.service.cancel(limit.client_order_id)
            await wait_state(run.service, limit.client_order_id, S.CANCELED)
            for coid in (limit.client_order_id, market.client_order_id):
                (entry,) = await sim.audit(coid)
                assert entry["transport"] == "ws-api"
