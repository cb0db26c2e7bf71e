"""The lease keeper in virtual time: renewals, the send window, a takeover, a loss.

Two :class:`~daemon.orders.lease.AccountLeases` ("daemons" A and B) over one
real SQLite store, the store's clock standing in as Trio's (autojump): A
holds the account and renews it; when A's keeper stops (a frozen daemon), its
send window closes ``section_deadline_s`` before its lease ends by its own
clock, B takes the account once the lease has run out on the store's clock
and waits ``section_deadline_s + query_lag_s`` before it becomes active; A's
next renewal finds B's lease: lost, health degraded, its token gone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from daemon.config import OrdersConfig
from daemon.health import HealthLevel
from daemon.orders.gateway import EntryUnavailableError
from daemon.orders.lease import AccountLeases, LeaseState, default_instance_id
from daemon.store import inline_runner
from daemon.store.lease_store import LeaseStore
from daemon.store.sqlite import SqliteStore

SETTINGS = OrdersConfig(
    section_deadline_s=4.0, send_timeout_s=2.0, query_lag_s=1.0, lease_ttl_s=10.0, lease_renew_s=1.0
)


async def test_renew_freeze_takeover_and_loss(tmp_path: Path, autojump_clock: object) -> None:
    async with await SqliteStore.open(tmp_path / "s.db", runner=inline_runner) as store:
        leases = LeaseStore(store, server_clock=trio.current_time)
        a = AccountLeases(leases, SETTINGS, ["main"], owner="A")
        b = AccountLeases(leases, SETTINGS, ["main"], owner="B")
        await a.start()
        await b.start()
        assert a.state("main") is LeaseState.ACTIVE and a.tokens == {"main": 1}
        assert b.state("main") is LeaseState.STANDBY and b.tokens == {}
        assert a.begin() == {"main"} and b.begin() == frozenset()
        assert a.send_window("main") == pytest.approx(10 * 0.999 - 4.0)
        with pytest.raises(EntryUnavailableError, match="traded by daemon 'A'"):
            b.admit({"account": "main"})
        a.admit({"account": "main"})  # A trades it: no refusal
        async with trio.open_nursery() as nursery:
            a_scope = trio.CancelScope()

            async def a_keeper() -> None:
                with a_scope:
                    await a.run()

            nursery.start_soon(a_keeper)
            nursery.start_soon(b.run)
            await trio.sleep(30)  # A renews all along: B stays standby
            assert b.state("main") is LeaseState.STANDBY
            assert a.send_window("main") > 4.0 and a.rounds >= 29
            a_scope.cancel()  # A freezes
            frozen = trio.current_time()
            await trio.sleep(6.5)
            assert a.send_window("main") <= 0  # closed by A's own clock ...
            assert b.state("main") is LeaseState.STANDBY  # ... before the lease ends
            await b.changed.wait()  # B: taken over, then ready
            # A's last renewal came at most one period before the freeze; B took the lease
            # once it had run out, and became active section_deadline_s + query_lag_s later.
            waited = trio.current_time() - frozen
            renew = SETTINGS.lease_renew_s
            assert 10 - renew + 4 + 1 <= waited <= 10 + 4 + 1 + renew
            assert b.state("main") is LeaseState.ACTIVE and b.tokens == {"main": 2}
            assert b.takeovers == 1 and b.begin() == {"main"}
            status = b.snapshot()["accounts"]["main"]
            assert (status["state"], status["owner"], status["token"]) == ("active", "B", 2)
            # A wakes: its next renewal finds B's lease.
            nursery.start_soon(a.run)
            await a.changed.wait()
            assert a.state("main") is LeaseState.LOST and a.tokens == {}
            level, reason = a.check()
            assert level is HealthLevel.DEGRADED and reason is not None and "held by B" in reason
            assert a.send_window("main") == float("-inf")
            nursery.cancel_scope.cancel()
        await b.release()
        assert b.state("main") is LeaseState.STANDBY
        _, [row] = await leases.read()
        assert (
            row.owner == "B" and row.token == 2 and row.expires_at_ms <= trio.current_time() * 1000
        )


def test_the_default_instance_id_names_the_host_and_the_systemd_instance() -> None:
    plain = default_instance_id({})
    assert plain and "@" not in plain
    assert default_instance_id({"TRADINGD_INSTANCE": "eu-1"}) == f"{plain}@eu-1"


def test_the_lease_keys_are_checked_together() -> None:
    assert SETTINGS.lease_problems() == []
    bad = OrdersConfig(section_deadline_s=10.0, lease_ttl_s=12.0, lease_renew_s=3.0)
    [(key, message)] = bad.lease_problems()
    assert key == "lease_ttl_s" and "section_deadline_s + 2 x lease_renew_s (16)" in message
