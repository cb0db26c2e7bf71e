"""Process-level proof of a full disk under the store: refuse new intents, keep the rest, recover.

The real programs run: ``tradingd sim`` with its market paused, and ``tradingd
run`` with one account on it, its ``state_dir`` (and so its SQLite store) on a
16 MiB tmpfs mounted for the test. Intents are accepted; a LIMIT BUY rests as
the best bid. Then a filler file takes every free byte of the tmpfs (written
until ENOSPC), and while the disk is full:

* new intents get ``503`` with a JSON error that starts with "disk full" and a
  ``Retry-After`` — never a 500. (A few may still be accepted first: SQLite
  reuses WAL space it already has, and such a commit is as durable as any;
  they are judged with the rest);
* ``/health`` answers 503, ``unhealthy``, its ``store`` check naming the
  file and the full disk, and ``tradingd status`` says so too.

The filler is removed and *nothing is submitted*: health must turn healthy by
itself (the store's write probe; the lease keeper, the other writer of a
quiet daemon, renews only every minute here). The disk is filled once more,
and someone else sells into the resting bid: the fill happens on the venue
while the daemon cannot store it; health is unhealthy, yet the systemd
watchdog keeps being fed (no restart cures a full disk). The filler goes
again, and the refused intents are submitted again with the same
``message_id`` (a new intent each: nothing was half recorded), and more
after them. The witnesses at the end: every accepted intent is ACCEPTED or
FILLED in the store, read read-only from outside; the simulator's audit log
holds exactly one venue order per accepted intent and no other; the fill
made while the disk was full is stored once, as the venue tells it; nothing
was restarted (not the order pipeline, not the daemon); ``PRAGMA
integrity_check`` says ``ok``.

Mounting needs root (CI runs as root); elsewhere the test is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers.orders_process import (
    ACCOUNT,
    DB_NAME,
    SYMBOL,
    ClientAnswer,
    OrderClient,
    OrderStoreReader,
    audit_orders,
    orders_config,
    venue_fills,
)
from tests.helpers.process import SECRET, WAIT_S, DaemonProcess, Harness, await_until, open_harness
from tests.helpers.sim import SimProcess, sim_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="mounting a tmpfs as the daemon's state_dir needs root (CI runs as root)",
    ),
]

BUDGET_S = 40.0
TMPFS_SIZE = "16m"
#: [orders]: short timeouts and a frequent reconciliation, so that what the store
#: could not take is read again from the venue within seconds.
ORDERS: dict[str, float | int | str] = {
    "send_timeout_s": 1.0,
    "section_deadline_s": 2.0,
    "drain_timeout_s": 3.0,
    "clock_skew_s": 0.0,
    "query_lag_s": 0.5,
    "unknown_retry_s": 0.2,
    "reconcile_interval_s": 2.0,
    "poll_interval_s": 0.5,
    "startup_reconcile_timeout_s": 15.0,
    # The lease keeper's renewals are writes too: far apart here, so that only the
    # store's write probe can tell that the disk has room again.
    "lease_renew_s": 60.0,
    "lease_ttl_s": 300.0,
}
CLIENT_TIMEOUT_S = 5.0
#: Resting intents accepted before the disk fills.
BEFORE = 3
#: New intents tried while the disk is full, until the first refusal.
MAX_TRIES_WHILE_FULL = 20
#: Far below the market: accepted, rests, never fills.
FAR_PRICE = "20000.00"
QTY = Decimal("0.00100")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (created 0700) for the block."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", os.fspath(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        done = subprocess.run(["umount", os.fspath(path)], check=False, capture_output=True)
        if done.returncode != 0:  # still busy (a daemon not reaped): detach it
            subprocess.run(["umount", "-l", os.fspath(path)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Write ``path`` until the file system says ENOSPC; the bytes written (blocking)."""
    written = 0
    with open(path, "wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += out.write(block) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def _limit(message_id: str, price: str = FAR_PRICE) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "account": ACCOUNT,
        "symbol": SYMBOL,
        "side": "BUY",
        "type": "LIMIT",
        "quantity": str(QTY),
        "price": price,
        "time_in_force": "GTC",
    }


async def test_a_full_disk_refuses_new_intents_loses_nothing_and_recovers(
    tmp_path: Path, sockdir: Path
) -> None:
    with trio.fail_after(BUDGET_S):
        async with (
            open_harness(tmp_path, sockdir) as h,
            sim_process(tmp_path, "--symbols", SYMBOL, "--paused") as sim,
        ):
            with tmpfs(h.state_dir, TMPFS_SIZE):
                h.config_path.write_text(
                    orders_config(
                        h, sim=sim, orders=ORDERS, recv_window_ms=1000, request_timeout_s=2.0
                    )
                )
                client = OrderClient(SECRET, request_timeout_s=CLIENT_TIMEOUT_S)
                try:
                    await _scenario(h, sim, client)
                finally:
                    await client.aclose()
                    await h.aclose()  # the daemon gone before the unmount


async def _scenario(h: Harness, sim: SimProcess, client: OrderClient) -> None:
    db = h.state_dir / DB_NAME
    reader = OrderStoreReader(db)
    d = await h.start()
    await d.wait_ready(timeout_s=WAIT_S + 10)
    client.base_url = await d.admin_url()
    accepted: dict[str, str] = {}  # message_id -> client_order_id

    async def submit(message_id: str, body: dict[str, Any]) -> ClientAnswer:
        answer = await client.submit(body)
        assert answer.status != 500 and answer.status != 0, (answer, d.log_tail())
        if answer.status in (200, 202):
            coid = str(answer.body["client_order_id"])
            assert accepted.setdefault(message_id, coid) == coid, answer
        return answer

    async def healthy() -> bool:
        code, body = await _health(client)
        return code == 200 and body["checks"]["store"]["level"] == "healthy"

    # Before: resting intents, and one bid someone will sell into.
    for i in range(BEFORE):
        assert (await submit(f"before-{i}", _limit(f"before-{i}"))).status == 202
    market = (await sim.status())["symbols"][SYMBOL]
    bid, ask = Decimal(market["bestBid"]), Decimal(market["bestAsk"])
    price = bid + Decimal("0.01")
    assert price < ask, market
    assert (await submit("bid", _limit("bid", str(price)))).status == 202
    await _until_states(reader, d, accepted.values(), {"ACCEPTED"})

    # The disk fills: new intents are refused, health says why.
    filler = h.state_dir / "filler"
    written = await trio.to_thread.run_sync(fill, filler)
    assert written > 0
    refused = await _until_refused(submit, "full")
    answer = refused[0][1]
    print(f"\nfiller {written} B; refused: {answer}")
    assert answer.body["error"].startswith("disk full: "), answer
    assert answer.retry_after_s is not None and answer.retry_after_s >= 1, answer
    health = await _health(client)
    assert health[0] == 503 and health[1]["level"] == "unhealthy", health
    store_check = health[1]["checks"]["store"]
    assert store_check["level"] == "unhealthy", health
    assert "disk full" in str(store_check) and DB_NAME in str(store_check), health
    status = await h.cli("status", "--config", os.fspath(h.config_path))
    assert "unhealthy" in status.stdout and "disk full" in status.stdout, status

    # Space again. Nothing is submitted and nothing else has to be written: health
    # comes back by itself.
    await trio.to_thread.run_sync(filler.unlink)
    await await_until(healthy, what="/health healthy again", timeout_s=WAIT_S, diag=d.diag)

    # Full once more, and the venue fills our bid while the daemon cannot store it.
    await trio.to_thread.run_sync(fill, filler)
    refused += await _until_refused(submit, "again")
    trade = await sim.control(
        "POST", "/sim/market/order", {"symbol": SYMBOL, "side": "SELL", "quantity": str(QTY)}
    )
    assert len(trade["tradeIds"]) == 1, trade
    after = len(d.notify.messages)
    await trio.sleep(1.0)  # the stream's event and a reconciliation fail to store it
    assert await trio.to_thread.run_sync(reader.fills) == []
    assert (await _health(client))[1]["checks"]["store"]["level"] == "unhealthy"
    # Unhealthy, but a restart cannot make room: systemd's watchdog keeps being fed.
    await d.notify.wait_for("WATCHDOG", "1", after=after, count=2, diag=d.diag)
    assert "no restart would cure it" in d.log()
    await trio.to_thread.run_sync(filler.unlink)
    await await_until(healthy, what="/health healthy again", timeout_s=WAIT_S, diag=d.diag)
    # The refused intents were not recorded: the same message ids are new intents now.
    for mid, _ in refused:
        assert mid not in accepted
        assert (await submit(mid, _limit(mid))).status == 202
    for i in range(2):
        assert (await submit(f"after-{i}", _limit(f"after-{i}"))).status == 202

    # Everything accepted reaches the venue once; the bid's fill is stored once.
    bid_coid = accepted["bid"]
    resting = [c for m, c in accepted.items() if m != "bid"]
    await _until_states(reader, d, resting, {"ACCEPTED"})
    await _until_states(reader, d, [bid_coid], {"FILLED"})
    audit = [a.client_order_id for a in await audit_orders(sim)]
    assert sorted(audit) == sorted(accepted.values()), (audit, accepted)
    assert len(set(audit)) == len(audit), audit
    venue = await venue_fills(sim, SYMBOL)
    stored = await trio.to_thread.run_sync(reader.fills)
    assert [f for _, f in stored] == venue and [c for c, _ in stored] == [bid_coid], (
        stored,
        venue,
    )
    # Nothing was restarted: not the order pipeline, not the daemon.
    assert not re.search(r"supervisor \S+: \S+ \(incarnation \d+\) failed", d.log()), d.log()
    assert len(h.daemons) == 1
    assert await d.stop(timeout_s=WAIT_S + 10) == 0, d.log_tail()
    check = await trio.to_thread.run_sync(_integrity, db)
    assert check == ["ok"], check


async def _until_refused(
    submit: Callable[[str, dict[str, Any]], Awaitable[ClientAnswer]], tag: str
) -> list[tuple[str, ClientAnswer]]:
    """New intents until one is refused (503), then one more; the refused ones.

    Intents before the first refusal may be accepted (202): SQLite reuses WAL
    space it already has, and such a commit is as durable as any.
    """
    for i in range(MAX_TRIES_WHILE_FULL):
        answer = await submit(f"{tag}-{i}", _limit(f"{tag}-{i}"))
        if answer.status == 503:
            break
        assert answer.status == 202, answer
    else:
        raise AssertionError(f"no refusal in {MAX_TRIES_WHILE_FULL} intents on a full disk")
    refused = [(f"{tag}-{i}", answer)]
    mid = f"{tag}-{MAX_TRIES_WHILE_FULL}"
    again = await submit(mid, _limit(mid))
    assert again.status == 503 and again.body["error"].startswith("disk full: "), again
    return [*refused, (mid, again)]


async def _health(client: OrderClient) -> tuple[int, Any]:
    return await client.get_json("/health")


async def _until_states(
    reader: OrderStoreReader, d: DaemonProcess, coids: Any, states: set[str]
) -> None:
    wanted = list(coids)

    async def reached() -> bool:
        if d.proc.returncode is not None:
            raise AssertionError(f"daemon exited with {d.proc.returncode}\n{d.diag()}")
        intents = await trio.to_thread.run_sync(reader.intents)
        return all(c in intents and intents[c].state in states for c in wanted)

    await await_until(
        reached, what=f"{len(wanted)} intent(s) in {states}", timeout_s=WAIT_S, diag=d.diag
    )


def _integrity(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]


#: Leases much shorter than the full disk below lasts (ttl > section_deadline_s + 2 x renew).
SHORT_LEASES: dict[str, float | int | str] = {
    **{k: v for k, v in ORDERS.items() if not k.startswith("lease_")},
    "lease_renew_s": 0.5,
    "lease_ttl_s": 4.0,
}
#: Longer than lease_ttl_s: the account's lease runs out while the disk is full.
LONG_FULL_S = 6.0


async def test_a_disk_full_for_longer_than_a_lease_recovers_in_place(
    tmp_path: Path, sockdir: Path
) -> None:
    """The lease keeper cannot renew on a full disk: the account's lease runs out and
    the daemon stops trading it (fencing). Once there is space, it takes the lease
    again and trades on — no restart, nothing lost, nothing sent twice."""
    with trio.fail_after(BUDGET_S):
        async with (
            open_harness(tmp_path, sockdir) as h,
            sim_process(tmp_path, "--symbols", SYMBOL, "--paused") as sim,
        ):
            with tmpfs(h.state_dir, TMPFS_SIZE):
                h.config_path.write_text(
                    orders_config(
                        h, sim=sim, orders=SHORT_LEASES, recv_window_ms=1000, request_timeout_s=2.0
                    )
                )
                client = OrderClient(SECRET, request_timeout_s=CLIENT_TIMEOUT_S)
                try:
                    await _long_full(h, sim, client)
                finally:
                    await client.aclose()
                    await h.aclose()


async def _long_full(h: Harness, sim: SimProcess, client: OrderClient) -> None:
    db = h.state_dir / DB_NAME
    reader = OrderStoreReader(db)
    d = await h.start()
    await d.wait_ready(timeout_s=WAIT_S + 10)
    client.base_url = await d.admin_url()
    accepted: list[str] = []
    for i in range(2):
        answer = await client.submit(_limit(f"before-{i}"))
        assert answer.status == 202, answer
        accepted.append(str(answer.body["client_order_id"]))
    await _until_states(reader, d, accepted, {"ACCEPTED"})
    filler = h.state_dir / "filler"
    await trio.to_thread.run_sync(fill, filler)
    await d.wait_log(r"not renewed before it ran out", timeout_s=WAIT_S)
    await trio.sleep(max(0.0, LONG_FULL_S - SHORT_LEASES["lease_ttl_s"]))  # type: ignore[operator]
    answer = await client.submit(_limit("while-full"))
    assert answer.status == 503, answer
    await trio.to_thread.run_sync(filler.unlink)

    async def taken() -> ClientAnswer | None:
        answer = await client.submit(_limit("after"))
        assert answer.status in (202, 503), answer
        return answer if answer.status == 202 else None

    after = await await_until(taken, what="an intent accepted again", poll_s=0.2, diag=d.diag)
    accepted.append(str(after.body["client_order_id"]))
    await _until_states(reader, d, accepted, {"ACCEPTED"})
    audit = [a.client_order_id for a in await audit_orders(sim)]
    assert sorted(audit) == sorted(accepted), (audit, accepted)
    assert not re.search(r"supervisor \S+: \S+ \(incarnation \d+\) failed", d.log()), d.log()
    assert len(h.daemons) == 1
    assert await d.stop(timeout_s=WAIT_S + 10) == 0, d.log_tail()
    assert await trio.to_thread.run_sync(_integrity, db) == ["ok"]
