"""Process level: two ``tradingd run`` sharing PostgreSQL and Redis; one frozen, then killed.

The real programs: ``tradingd sim``, and two daemons A and B (the harness of
:mod:`tests.helpers.process`), each configured with the same account, the
same PostgreSQL schema (``[store] backend = "postgres"``) and the same Redis
stream and consumer group (``[intake]``, one consumer each). A starts first
and trades the account; B is its standby. A producer ``XADD``s intents
(LIMIT orders that rest, and MARKET orders that fill at once: a second send
of one of those would be a second order).

Mid-flow A is frozen with ``SIGSTOP``: B takes the account over once A's
lease has expired on the database's clock (plus ``section_deadline_s`` +
``query_lag_s``), recovers A's intents as at a start (SENDING → UNKNOWN →
resolved by query), and goes on with the stream (its claim sweep takes over
the entries A had read). Then A is woken with ``SIGCONT``: its send window
has closed by its own clock, its renewal finds B's lease, it stops trading
the account and says so; then it is ``SIGKILL``-ed. At the end every entry is
acknowledged and every intent settled, and the witnesses agree: the
simulator's audit log holds **exactly one order per intent, and none is
missing**; nothing was dead-lettered; B's ``/status`` shows the account
active under B with the fencing token of its takeover.
"""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
import trio

from daemon.orders.intent import OrderIntent
from tests.helpers.leases import daemon_config, intake_table, redis_streams
from tests.helpers.orders_process import audit_orders
from tests.helpers.process import SECRET, WAIT_S, make_sockdir, open_harness, wait_until
from tests.helpers.sim import sim_process
from tests.store.pg import fresh_schema

pytestmark = pytest.mark.slow

SYMBOL = "BTCUSDT"
INTENTS = 30
PACE_S = 0.1
#: Freeze A once the store holds this many intents; wake it once it holds this many.
FREEZE_AT, WAKE_AT = 8, 18
SETTLED = {"ACCEPTED", "FILLED", "CANCELED", "REJECTED", "EXPIRED", "PARTIALLY_FILLED"}


def body(i: int) -> dict[str, Any]:
    order: dict[str, Any] = {
        "message_id": f"lease-{i}",
        "account": "main",
        "symbol": SYMBOL,
        "side": "BUY",
        "quantity": "0.00100",
    }
    if i % 4 == 3:
        order["type"] = "MARKET"
    else:
        order.update(type="LIMIT", price="20000.00", time_in_force="GTC")
    return order


def states(dsn: str) -> Counter[str]:
    """The stored intents by state (read with plain psycopg, from outside the daemons)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            rows = conn.execute("SELECT state, count(*) FROM order_intents GROUP BY state")
        except psycopg.errors.UndefinedTable:
            return Counter()
        return Counter({str(state): int(n) for state, n in rows.fetchall()})


async def stored(dsn: str) -> Counter[str]:
    return await trio.to_thread.run_sync(states, dsn)


async def test_two_daemons_one_frozen_then_killed_leave_one_order_per_intent(
    tmp_path: Path, sockdir: Path
) -> None:
    sock_b = make_sockdir()
    try:
        with fresh_schema() as dsn, redis_streams() as streams:
            await _scenario(tmp_path, sockdir, sock_b, dsn, streams)
    finally:
        shutil.rmtree(sock_b, ignore_errors=True)


async def _scenario(tmp_path: Path, sock_a: Path, sock_b: Path, dsn: str, streams: Any) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with trio.fail_after(60):
        async with (
            sim_process(tmp_path, "--symbols", SYMBOL) as sim,
            open_harness(tmp_path / "a", sock_a) as ha,
            open_harness(tmp_path / "b", sock_b) as hb,
            trio.open_nursery() as nursery,
        ):
            for h, name in ((ha, "A"), (hb, "B")):
                h.config_path.write_text(
                    daemon_config(
                        h, name=name, sim=sim, dsn=dsn, intake=intake_table(streams, name)
                    )
                )
            a = await ha.start_ready()
            b = await hb.start_ready()
            await b.wait_log(r"pipeline over accounts none \(not here: main\)")
            produced: list[bytes] = []

            async def produce() -> None:
                for i in range(INTENTS):
                    produced.append(await streams.add_intent(body(i)))
                    await trio.sleep(PACE_S)

            nursery.start_soon(produce)
            await _until(lambda c: sum(c.values()) >= FREEZE_AT, dsn, "A to store intents", a)
            a.send_signal(signal.SIGSTOP)  # frozen mid-flow, its lease and sockets held
            await b.wait_log(r"account main taken over from A \(token 2\)", timeout_s=WAIT_S)
            await _until(lambda c: sum(c.values()) >= WAKE_AT, dsn, "B to store intents", b)
            a.send_signal(signal.SIGCONT)  # wakes late: must not send, must stand down
            await a.wait_log(r"lease of account main lost", timeout_s=WAIT_S)
            a.send_signal(signal.SIGKILL)
            await a.wait_exit()
            await wait_until(lambda: len(produced) == INTENTS, what="the producer to finish")
            await _until(
                lambda c: sum(c.values()) == INTENTS and set(c) <= SETTLED,
                dsn,
                "every intent settled",
                b,
            )
            await wait_until(
                lambda: _acked(streams), what="every entry acknowledged", timeout_s=WAIT_S
            )
            status = await _status(await b.admin_url())
            assert await b.stop() == 0, b.diag()
            audit = await audit_orders(sim)
            a_log, b_log = a.log(), b.log()
    print(f"\n--- A (tail)\n{_tail(a_log)}\n--- B (tail)\n{_tail(b_log)}", flush=True)
    lease = status["orders"]["leases"]["accounts"]["main"]
    assert (lease["state"], lease["owner"], lease["token"]) == ("active", "B", 2), lease
    assert status["orders"]["leases"]["takeovers"] == 1
    wanted = {OrderIntent.from_request(body(i)).client_order_id for i in range(INTENTS)}
    per_id = Counter(order.client_order_id for order in audit)
    doubled = {coid: n for coid, n in per_id.items() if n > 1}
    assert not doubled, f"orders sent twice: {doubled}"
    assert set(per_id) == wanted, f"missing: {wanted - set(per_id)}, extra: {set(per_id) - wanted}"
    assert await streams.dead_letters() == []
    assert "this daemon stops trading it" in a_log


def _tail(log: str) -> str:
    wanted = ("lease", "taken over", "pipeline over", "UNKNOWN", "intake")
    return "\n".join(line for line in log.splitlines() if any(w in line for w in wanted))[-3000:]


def _acked(streams: Any) -> bool:
    groups = streams.client.xinfo_groups(streams.stream)
    last = streams.client.xrevrange(streams.stream, count=1)
    return bool(
        groups
        and last
        and groups[0]["last-delivered-id"] == last[0][0]
        and int(groups[0]["pending"]) == 0
    )


async def _until(check: Any, dsn: str, what: str, daemon: Any) -> None:
    deadline = trio.current_time() + WAIT_S
    while not check(await stored(dsn)):
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{daemon.diag()}")
        await trio.sleep(0.05)


async def _status(url: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        answer = await http.get(f"{url}/status/full", headers={"Authorization": f"Bearer {SECRET}"})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result
