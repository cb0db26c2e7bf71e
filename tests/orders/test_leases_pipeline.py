"""Two order pipelines over one store: one account, one trader at a time, and a takeover.

Two real :class:`~daemon.orders.service.OrdersService` ("daemons" A and B,
each with its own store connection and venue client) share one store and the
real simulator. A starts first and trades the account; B is its standby
(entry refuses the account there). Then A is cut off from the store's lease
table (its renewals hang, as for a paused or partitioned daemon): its send
window closes by its own clock before its lease runs out on the store's, so
an intent it records meanwhile stays PENDING; B takes the account over once
A's lease has expired (plus ``section_deadline_s`` + ``query_lag_s``) and
sends it. When A's renewal finally gets through it finds B's lease, stops
trading the account (health degraded, saying why), and its writes are
fenced off. The simulator's audit shows exactly one order per intent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.errors import LeaseLostError
from daemon.health import HealthLevel
from daemon.orders.gateway import EntryUnavailableError
from daemon.orders.lease import LeaseState
from daemon.orders.state import OrderState
from daemon.orders.state import transition as step
from daemon.store.orders import OrderStore
from tests.helpers.leases import LEASED, running_daemon, wait_for
from tests.helpers.orders import limit_request, wait_state
from tests.helpers.sim import running_sim, sim_config
from tests.store.pg import fresh_schema

S = OrderState


@pytest.fixture(params=["sqlite", "postgres"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Path | str]:
    """Where the daemons' store is: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield tmp_path / "store.db"
        return
    with fresh_schema() as dsn:
        yield dsn


def lease_of(daemon: Any) -> dict[str, Any]:
    return daemon.service.status()["leases"]["accounts"]["main"]  # type: ignore[no-any-return]


async def test_one_trader_per_account_and_a_takeover_after_the_lease(
    shared: Path | str,
) -> None:
    with trio.fail_after(45):
        async with (
            running_sim(sim_config()) as sim,
            running_daemon(sim, shared, "A") as a,
            running_daemon(sim, shared, "B") as b,
        ):
            assert lease_of(a)["state"] == "active" and lease_of(a)["owner"] == "A"
            await wait_for(lambda: lease_of(b)["owner"] == "A")
            assert lease_of(b)["state"] == "standby" and lease_of(b)["token"] == 1
            # A trades the account; B refuses it (503: another daemon trades it).
            first = await a.service.submit(limit_request("m-1"))
            await wait_state(a.service, first.client_order_id, S.ACCEPTED)
            with pytest.raises(EntryUnavailableError, match="traded by daemon 'A'"):
                await b.service.submit(limit_request("m-b"))

            # A's renewals hang (paused / cut off from the lease table).
            assert a.service.leases is not None
            keeper = a.service.leases
            resume = trio.Event()
            real_claim = keeper.store.claim

            async def hung_claim(*args: Any, **kwargs: Any) -> Any:
                await resume.wait()
                return await real_claim(*args, **kwargs)

            keeper.store.claim = hung_claim  # type: ignore[method-assign]
            # Its send window closes by its own clock, before the store's expiry.
            await wait_for(lambda: keeper.send_window("main") <= 0)
            assert lease_of(b)["owner"] == "A"  # still A's on the store
            late = await a.service.submit(limit_request("m-2"))
            assert late.created  # recorded (A's token is still valid) ...
            await trio.sleep(0.3)
            assert (await a.service.get(late.client_order_id)).state is S.PENDING
            assert await sim.audit(late.client_order_id) == []  # ... but not sent

            # B takes over after A's expiry + section_deadline_s + query_lag_s,
            # recovers the account's intents and sends the PENDING one, once.
            assert b.service.leases is not None
            leases_b = b.service.leases
            await wait_for(lambda: leases_b.trades("main") and b.service.pipeline is not None)
            assert lease_of(b)["state"] == "active" and lease_of(b)["token"] == 2
            assert leases_b.takeovers == 1
            sent = await wait_state(b.service, late.client_order_id, S.ACCEPTED)
            assert sent.send_attempts == 1
            second = await b.service.submit(limit_request("m-3"))
            await wait_state(b.service, second.client_order_id, S.ACCEPTED)

            # A's write with its stale token changes nothing.
            stale = OrderStore(a.store)
            stale.sql = a.service._order_store.sql  # type: ignore[union-attr]
            with pytest.raises(LeaseLostError):
                await stale.apply_transition(
                    first.client_order_id,
                    step(S.ACCEPTED, S.CANCELED, reason="a paused daemon wakes up"),
                )
            # A wakes up: its renewal finds B's lease; it stops trading the account.
            resume.set()
            await wait_for(lambda: keeper.state("main") is LeaseState.LOST)
            level, reason = a.service.check()
            assert level is HealthLevel.DEGRADED and reason is not None
            assert "lease lost" in reason and "main" in reason
            with pytest.raises(EntryUnavailableError):
                await a.service.submit(limit_request("m-4"))
            for coid in (first.client_order_id, late.client_order_id, second.client_order_id):
                assert len(await sim.audit(coid)) == 1
            assert (await b.service.get(first.client_order_id)).state is S.ACCEPTED


async def test_a_clean_stop_hands_the_account_over(shared: Path | str) -> None:
    """A stops gracefully: it releases its lease, and B takes over without waiting
    for the ttl (only section_deadline_s + query_lag_s after the release)."""
    with trio.fail_after(30):
        async with running_sim(sim_config()) as sim, running_daemon(sim, shared, "B") as b:
            async with running_daemon(sim, shared, "A") as a:
                # B started first here: it trades; A is the standby.
                assert lease_of(a)["state"] == "standby"
            # A had nothing to release; B keeps the account.
            assert lease_of(b)["state"] == "active"
        async with running_sim(sim_config()) as sim, running_daemon(sim, shared, "A") as a:
            # B's clean stop released the lease: A may take it at once, and waits
            # section_deadline_s + query_lag_s before touching its orders.
            began = trio.current_time()
            await wait_for(lambda: lease_of(a)["state"] == "active")
            assert trio.current_time() - began < LEASED.lease_ttl_s
            stats = a.service.status()["leases"]
            assert stats["takeovers"] == 1 and lease_of(a)["token"] == 2
