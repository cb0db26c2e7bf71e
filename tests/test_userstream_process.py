"""Process-level proof of the user data stream (issue 15): pushed fills, a faulted stream, kill -9.

The real programs run: ``tradingd sim`` with its market paused, and ``tradingd
run`` with one account on it and the venue's user data stream on (the
default). One LIMIT BUY rests as the best bid; someone else's market SELL
orders (``POST /sim/market/order``) fill it in four parts, each under
different weather:

1. the stream is healthy: the fill is *pushed* (the state change's reason in
   the history says "user data stream"; polling is off while the stream is up
   and the periodic reconciliation is far away);
2. the subscription is terminated at that very event (``userstream_terminate``
   at the next event: the TRADE report is lost): the daemon subscribes again and
   its reconciliation reads the fill from the venue — the first fill comes back
   with it, and must not be counted twice;
3. the stream is stalled (``userstream_stall``: the report is held) and the
   daemon is ``SIGKILL``-ed before it could see the fill: the next start reads it;
4. subscriptions are terminated every second while the last part fills the
   order; the daemon is ``SIGKILL``-ed as soon as the fill is stored, and
   started once more.

Then the witnesses are compared: the venue's executions (signed ``myTrades``,
the standard library's HMAC), its audit log, and the daemon's SQLite file read
read-only. Every fill is stored exactly once on the intent, the executed
quantity and the position equal the venue's, and ``/status/full`` shows
``orders.user_streams.sim.fill_source`` ``"stream"`` whenever the stream is
subscribed. It runs over both order transports (``rest``, ``ws-api``): the
stream is the same WebSocket API subscription either way, the queries that
read a missed fill are not.
"""

from __future__ import annotations

import itertools
import os
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
import trio

from daemon.orders.state import TRANSITIONS, OrderState
from tests.helpers.orders_process import (
    ACCOUNT,
    DB_NAME,
    SYMBOL,
    VENUE,
    Fill,
    OrderClient,
    OrderStoreReader,
    audit_orders,
    orders_config,
    venue_fills,
)
from tests.helpers.process import (
    SECRET,
    WAIT_S,
    DaemonProcess,
    Harness,
    await_until,
    open_harness,
)
from tests.helpers.sim import SimProcess, sim_process

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("TD_USERSTREAM_SEED", "20250115"))

#: [orders]: short timeouts; the periodic reconciliation far apart, so that a
#: fill is read either from the stream or by the reconciliation that follows a
#: (re)subscription or a start — the paths under test.
ORDERS: dict[str, float | int | str] = {
    "send_timeout_s": 1.0,
    "section_deadline_s": 2.0,
    "drain_timeout_s": 3.0,
    "clock_skew_s": 0.0,
    "query_lag_s": 0.5,
    "unknown_retry_s": 0.2,
    "reconcile_interval_s": 60.0,
    "poll_interval_s": 0.5,
    "startup_reconcile_timeout_s": 15.0,
}
RECV_WINDOW_MS = 1000
VENUE_REQUEST_TIMEOUT_S = 2.0
CLIENT_TIMEOUT_S = 3.0

#: The order, and each part someone else sells into it.
ORDER_QTY = Decimal("0.002")
PART_QTY = Decimal("0.0005")
#: Longer than it takes to kill the daemon: the held report never reaches it.
STALL_S = 4.0
#: The last part fills while subscriptions end this often.
TERMINATE_EVERY_S = 1.0
BUDGET_S = 90.0

#: How the reason of a change the user data stream reported begins (daemon.orders.userstream).
STREAM_REASON = "user data stream"


@pytest.mark.parametrize("transport", ["rest", "ws-api"])
async def test_pushed_fills_survive_a_faulted_stream_and_kill_9(
    tmp_path: Path, sockdir: Path, transport: Literal["rest", "ws-api"]
) -> None:
    with trio.fail_after(BUDGET_S):
        async with (
            open_harness(tmp_path, sockdir) as h,
            sim_process(tmp_path, "--seed", str(SEED), "--symbols", SYMBOL, "--paused") as sim,
        ):
            h.config_path.write_text(
                orders_config(
                    h,
                    sim=sim,
                    orders=ORDERS,
                    recv_window_ms=RECV_WINDOW_MS,
                    request_timeout_s=VENUE_REQUEST_TIMEOUT_S,
                    order_transport=transport,
                )
            )
            client = OrderClient(SECRET, request_timeout_s=CLIENT_TIMEOUT_S)
            try:
                await _scenario(h, sim, client)
            finally:
                await client.aclose()


async def _scenario(h: Harness, sim: SimProcess, client: OrderClient) -> None:
    reader = OrderStoreReader(h.state_dir / DB_NAME)
    d = await _start(h, client)
    await _stream_subscribed(client, d)

    # The order: the best bid, one tick above the market's.
    market = (await sim.status())["symbols"][SYMBOL]
    bid, ask = Decimal(market["bestBid"]), Decimal(market["bestAsk"])
    price = bid + Decimal("0.01")
    assert price < ask, market
    answer = await client.submit(
        {
            "message_id": f"userstream-{SEED}",
            "account": ACCOUNT,
            "symbol": SYMBOL,
            "side": "BUY",
            "type": "LIMIT",
            "quantity": str(ORDER_QTY),
            "price": str(price),
            "time_in_force": "GTC",
        }
    )
    assert answer.status == 202, answer
    coid = str(answer.body["client_order_id"])
    await _until_state(reader, d, coid, "ACCEPTED")
    sold: list[int] = []

    # 1. Healthy stream: the fill is pushed.
    sold += await _sell_into_it(sim)
    await _until_fills(reader, d, coid, 1)
    history = await trio.to_thread.run_sync(reader.history)
    partial = [r for r in history[coid] if r.target == "PARTIALLY_FILLED"]
    assert partial and partial[0].reason.startswith(STREAM_REASON), history[coid]

    # 2. The subscription ends at the fill's report (lost); subscribing again reconciles.
    before = await _stream_status(client)
    await sim.arm(kind="userstream_terminate", count=1)
    sold += await _sell_into_it(sim)
    await _until_fills(reader, d, coid, 2)
    status = await _stream_subscribed(client, d)
    assert status["subscriptions"] > before["subscriptions"], status
    assert status["terminations"] >= 1, status
    # Not from the stream (its report was lost): from the reconciliation.
    assert status["applied"] == before["applied"], (before, status)
    await d.wait_log(r"user data stream of \S+ down \(terminated\)")

    # 3. The report is held back, and the daemon dies before seeing the fill.
    await sim.arm(kind="userstream_stall", duration_s=STALL_S)
    sold += await _sell_into_it(sim)
    await trio.sleep(0.5)  # a pushed report arrives in milliseconds: this one is held
    assert len(await trio.to_thread.run_sync(reader.fills)) == 2, d.log_tail()
    d = await _kill_and_restart(h, client, d)
    await _until_fills(reader, d, coid, 3)

    # 4. Subscriptions end every second while the order fills; kill -9 once it is stored.
    await sim.clear_faults()
    await _stream_subscribed(client, d)
    await sim.arm(kind="userstream_terminate", every_s=TERMINATE_EVERY_S)
    await d.wait_log(r"user data stream of \S+ down \(terminated\)")
    sold += await _sell_into_it(sim)
    await _until_state(reader, d, coid, "FILLED")
    d = await _kill_and_restart(h, client, d)
    await sim.clear_faults()
    await _stream_subscribed(client, d)
    # Give a second count of any fill (a late report, a reconciliation) time to land.
    await trio.sleep(1.0)

    _check(
        coid,
        sold=sold,
        venue=await venue_fills(sim, SYMBOL),
        audit=[a.client_order_id for a in await audit_orders(sim)],
        reader=reader,
        d=d,
    )
    assert await d.stop(timeout_s=WAIT_S + 15) == 0, d.log_tail()


def _check(
    coid: str,
    *,
    sold: list[int],
    venue: list[Fill],
    audit: list[str],
    reader: OrderStoreReader,
    d: DaemonProcess,
) -> None:
    """The store against the venue: every fill once, quantities and the position equal."""
    intents = reader.intents()
    stored = reader.fills()
    history = reader.history()[coid]
    path = [(r.source, r.target, r.reason) for r in history]
    diag = f"{path}\n{d.log_tail(30)}"
    print("\n" + "\n".join(f"  {a} -> {b}: {why}" for a, b, why in path), flush=True)
    assert audit == [coid], f"venue orders: {audit}"
    assert [f.trade_id for f in venue] == sorted(sold), (venue, sold)
    # Each execution once, on this intent, exactly as the venue tells it.
    assert [c for c, _ in stored] == [coid] * len(venue), (stored, diag)
    assert [f for _, f in stored] == venue, (stored, venue, diag)
    intent = intents[coid]
    assert intent.state == "FILLED", diag
    assert intent.venue_order_id == venue[0].order_id, (intent, venue)
    assert intent.send_attempts == 1, intent
    assert reader.executed()[coid] == ORDER_QTY == sum((f.quantity for f in venue), Decimal(0))
    assert reader.positions() == {(ACCOUNT, SYMBOL): ORDER_QTY}, reader.positions()
    # A legal path from PENDING to FILLED.
    assert (history[0].source, history[0].target) == (None, "PENDING"), path
    for before, row in itertools.pairwise(history):
        assert row.source == before.target, path
        assert row.source is not None
        assert OrderState(row.target) in TRANSITIONS[OrderState(row.source)], path


# --------------------------------------------------------------------------- steps


async def _start(h: Harness, client: OrderClient) -> DaemonProcess:
    d = await h.start()
    await d.wait_ready(timeout_s=WAIT_S + 10)
    client.base_url = await d.admin_url()
    return d


async def _kill_and_restart(h: Harness, client: OrderClient, d: DaemonProcess) -> DaemonProcess:
    d.send_signal(signal.SIGKILL)
    await d.wait_exit()
    client.base_url = None
    return await _start(h, client)


async def _sell_into_it(sim: SimProcess) -> list[int]:
    """Someone else sells one part at market: it trades with our bid only."""
    answer = await sim.control(
        "POST", "/sim/market/order", {"symbol": SYMBOL, "side": "SELL", "quantity": str(PART_QTY)}
    )
    trade_ids = [int(t) for t in answer["tradeIds"]]
    assert len(trade_ids) == 1, answer
    return trade_ids


async def _stream_status(client: OrderClient) -> dict[str, Any]:
    """``orders.user_streams.<venue>`` of ``/status/full``."""
    code, status = await client.get_json("/status/full")
    assert code == 200, status
    stream: dict[str, Any] = status["orders"]["user_streams"][VENUE]
    return stream


async def _stream_subscribed(client: OrderClient, d: DaemonProcess) -> dict[str, Any]:
    """Wait until ``/status/full`` shows the stream subscribed; it is then the fill source."""

    async def subscribed() -> dict[str, Any] | None:
        _check_alive(d)
        stream = await _stream_status(client)
        return stream if stream["subscribed"] else None

    stream = await await_until(
        subscribed, what="the user data stream subscribed", timeout_s=WAIT_S, diag=d.diag
    )
    assert stream["fill_source"] == "stream", stream
    return stream


async def _until_state(reader: OrderStoreReader, d: DaemonProcess, coid: str, state: str) -> None:
    async def reached() -> bool:
        _check_alive(d)
        return await trio.to_thread.run_sync(reader.state, coid) == state

    await await_until(reached, what=f"{coid} {state}", timeout_s=WAIT_S, poll_s=0.05, diag=d.diag)


async def _until_fills(reader: OrderStoreReader, d: DaemonProcess, coid: str, n: int) -> None:
    async def stored() -> bool:
        _check_alive(d)
        fills = await trio.to_thread.run_sync(reader.fills)
        assert len(fills) <= n, f"more fills stored than the venue made: {fills}"
        return len(fills) == n

    await await_until(
        stored, what=f"{n} fill(s) of {coid} stored", timeout_s=WAIT_S, poll_s=0.05, diag=d.diag
    )


def _check_alive(d: DaemonProcess) -> None:
    if d.proc.returncode is not None:
        raise AssertionError(f"daemon exited with {d.proc.returncode}\n{d.diag()}")
