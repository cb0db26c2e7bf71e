"""Process level: ``tradingd run`` with the Redis intake, ``SIGKILL``-ed mid-flow and restarted.

The real programs: ``tradingd sim`` and ``tradingd run`` (the harness of
:mod:`tests.helpers.process`) with ``[intake]`` on a real Redis. A producer
``XADD``s intents (LIMIT orders that rest and MARKET orders that fill at
once: a second send of one of those would be a second order) while the
daemon is killed twice with ``SIGKILL`` at the moment the store holds new
intents — entries committed but perhaps not acknowledged, entries read but
not committed — and started again. Then, with every entry acknowledged and
every intent settled, the witnesses: the simulator's audit log holds exactly
one order per ``message_id`` and none is missing; nothing was dead-lettered;
the daemon's ``/status`` shows the intake.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.orders.intent import OrderIntent
from tests.helpers.orders_process import (
    ACCOUNT,
    DB_NAME,
    SYMBOL,
    OrderStoreReader,
    audit_orders,
    orders_config,
)
from tests.helpers.process import SECRET, WAIT_S, Harness, open_harness, wait_until
from tests.helpers.sim import sim_process
from tests.intake.support import Streams

pytestmark = pytest.mark.slow

INTENTS = 40
#: The producer's pause between two entries.
PACE_S = 0.08
#: Kill when the store holds this many more intents than at the (re)start.
KILL_AFTER = (8, 10)
#: Entries added only after the last kill (so the kills come while entries still arrive).
TAIL = 8
ORDERS = {
    "send_timeout_s": 1.0,
    "section_deadline_s": 2.0,
    "drain_timeout_s": 2.0,
    "clock_skew_s": 0.0,
    "query_lag_s": 0.3,
    "unknown_retry_s": 0.2,
    "reconcile_interval_s": 1.0,
    "poll_interval_s": 0.3,
    "startup_reconcile_timeout_s": 10.0,
}
SETTLED = {"ACCEPTED", "FILLED", "CANCELED", "REJECTED", "EXPIRED", "PARTIALLY_FILLED"}


def body(i: int) -> dict[str, Any]:
    order: dict[str, Any] = {
        "message_id": f"proc-{i}",
        "account": ACCOUNT,
        "symbol": SYMBOL,
        "side": "BUY",
        "quantity": "0.00100",
    }
    if i % 4 == 3:
        order["type"] = "MARKET"
    else:
        order.update(type="LIMIT", price="20000.00", time_in_force="GTC")
    return order


def intake_table(streams: Streams) -> str:
    q = json.dumps
    return f"""
[intake]
enabled = true
redis_url = {q(streams.url)}
stream = {q(streams.stream)}
group = {q(streams.group)}
dead_letter_stream = {q(streams.dead)}
consumer = "proc"
batch = 8
block_ms = 100
claim_idle_ms = 2000
claim_interval_s = 0.5
"""


async def test_killed_daemon_leaves_one_order_per_message_id(
    tmp_path: Path, sockdir: Path, streams: Streams
) -> None:
    with trio.fail_after(60):
        async with (
            open_harness(tmp_path, sockdir) as h,
            sim_process(tmp_path, "--symbols", SYMBOL) as sim,
            trio.open_nursery() as nursery,
        ):
            h.config_path.write_text(
                orders_config(h, sim=sim, orders=ORDERS, recv_window_ms=1000, request_timeout_s=2.0)
                + intake_table(streams)
            )
            reader = OrderStoreReader(h.state_dir / DB_NAME)
            produced: list[bytes] = []

            kills_done = trio.Event()

            async def produce() -> None:
                for i in range(INTENTS):
                    if i == INTENTS - TAIL:
                        await kills_done.wait()  # every kill lands mid-flow
                    produced.append(await streams.add_intent(body(i)))
                    await trio.sleep(PACE_S)

            daemon = await h.start_ready()
            nursery.start_soon(produce)
            for kill_after in KILL_AFTER:
                daemon = await _kill_mid_flow(h, daemon, reader, kill_after)
            kills_done.set()
            await wait_until(lambda: len(produced) == INTENTS, what="the producer to finish")
            await _wait_settled(streams, reader, daemon)
            url = await daemon.admin_url()
            status = await _status(url)
            assert daemon.proc.returncode is None
            assert await daemon.stop() == 0, daemon.diag()
            audit = await audit_orders(sim)
    intake = status["intake"]
    print(
        f"\nintake after {len(KILL_AFTER)} kills: {len(audit)} venue orders for {INTENTS} "
        f"intents; last incarnation: created {intake['created']}, duplicates "
        f"{intake['duplicates']}, recovered {intake['recovered']}, claimed {intake['claimed']}",
        flush=True,
    )
    assert intake["connected"] and intake["consumer"] == "proc", intake
    wanted = {OrderIntent.from_request(body(i)).client_order_id for i in range(INTENTS)}
    per_id = Counter(order.client_order_id for order in audit)
    doubled = {coid: n for coid, n in per_id.items() if n > 1}
    assert not doubled, f"orders sent twice: {doubled}"
    assert set(per_id) == wanted, f"missing: {wanted - set(per_id)}, extra: {set(per_id) - wanted}"
    assert await streams.dead_letters() == []


async def _kill_mid_flow(h: Harness, daemon: Any, reader: OrderStoreReader, more: int) -> Any:
    """``SIGKILL`` once ``more`` new intents are stored; start again; the new daemon."""
    base = sum((await trio.to_thread.run_sync(reader.state_counts)).values())

    async def grown() -> bool:
        counts = await trio.to_thread.run_sync(reader.state_counts)
        return sum(counts.values()) >= base + more

    await _await(grown, f"{more} more intents stored", daemon)
    daemon.send_signal(signal.SIGKILL)
    await daemon.wait_exit()
    return await h.start_ready()


async def _wait_settled(streams: Streams, reader: OrderStoreReader, daemon: Any) -> None:
    """Every entry read and acknowledged, every intent at a settled state."""

    async def done() -> bool:
        groups = await streams.call(lambda c: c.xinfo_groups(streams.stream))
        last = await streams.call(lambda c: c.xrevrange(streams.stream, count=1))
        if not groups or not last or groups[0]["last-delivered-id"] != last[0][0]:
            return False
        if int(groups[0]["pending"]) != 0:
            return False
        counts = await trio.to_thread.run_sync(reader.state_counts)
        return sum(counts.values()) == INTENTS and set(counts) <= SETTLED

    await _await(done, "every entry acknowledged and every intent settled", daemon)


async def _await(check: Any, what: str, daemon: Any) -> None:
    deadline = trio.current_time() + 2 * WAIT_S
    while not await check():
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{daemon.diag()}")
        await trio.sleep(0.05)


async def _status(url: str) -> dict[str, Any]:
    import httpx2  # noqa: PLC0415

    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        answer = await http.get(f"{url}/status/full", headers={"Authorization": f"Bearer {SECRET}"})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result
