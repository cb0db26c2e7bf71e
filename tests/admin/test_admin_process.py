"""The admin API of a real ``tradingd demo`` under a hostile local client (issue 13).

Process level: the daemon configures the server from ``[admin]`` (defaults:
64 connections, 8 reserved, 2 s head timeout), so this is what an operator
gets, not a test configuration.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
import trio

from tests.helpers.admin import hold_half_open
from tests.helpers.demo import Demo, running_demo

pytestmark = pytest.mark.slow

#: Default [admin] max_connections + reserved_connections: every slot there is.
ALL_SLOTS = 64 + 8


async def _timed(
    client: httpx2.AsyncClient, method: str, url: str, **kw: object
) -> httpx2.Response:
    with trio.fail_after(1.0):  # the operator's bound: answered within a second
        return await client.request(method, url, **kw)  # type: ignore[arg-type]


async def test_health_and_halt_answer_within_a_second_while_slots_are_held(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with running_demo(tmp_path) as demo, trio.open_nursery() as attackers:
            opened = [0]
            for _ in range(ALL_SLOTS):
                attackers.start_soon(hold_half_open, ("127.0.0.1", demo.port), opened)
            while opened[0] < ALL_SLOTS:  # noqa: ASYNC110 (a counter the attackers bump)
                await trio.sleep(0.01)
            # Fresh connections each time (no keep-alive): each one must win a slot.
            limits = httpx2.Limits(max_keepalive_connections=0)
            async with httpx2.AsyncClient(trust_env=False, timeout=5.0, limits=limits) as client:
                deadline = trio.current_time() + 4.5  # past two head timeouts (2 s)
                rounds = 0
                while trio.current_time() < deadline:
                    r = await _timed(client, "GET", f"{demo.base}/health")
                    assert r.status_code in (200, 503), r.text  # answered: healthy or not
                    assert "state" in r.json()
                    r = await _timed(
                        client,
                        "POST",
                        f"{demo.base}/trading/halt",
                        headers=demo.auth,
                        json={"reason": "drill"},
                    )
                    assert r.status_code == 200, r.text
                    rounds += 1
                    await trio.sleep(0.2)
            assert rounds >= 10
            assert opened[0] > ALL_SLOTS, "the attack re-opened its connections"
            attackers.cancel_scope.cancel()
        _assert_log_bounded(demo)


def _assert_log_bounded(demo: Demo) -> None:
    lines = [line for line in demo.stderr().splitlines() if "admin HTTP" in line]
    # One summary per [admin] reject_log_interval_s (10 s), never one per connection.
    assert len(lines) <= 2, lines[:5]


async def test_status_without_token_shows_no_orders_positions_or_venues(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with (
            running_demo(tmp_path) as demo,
            httpx2.AsyncClient(trust_env=False, timeout=5.0) as client,
        ):
            r = await client.get(f"{demo.base}/status")
            assert r.status_code == 200
            public = r.json()
            assert {"state", "health", "supervision", "loop_lag", "queues"} <= set(public)
            for guarded in ("orders", "strategies", "venues", "store", "admin", "recent_events"):
                assert guarded not in public, guarded
            assert "position" not in r.text and demo.token not in r.text
            assert (await client.get(f"{demo.base}/status/full")).status_code == 401
            r = await client.get(f"{demo.base}/status/full", headers=demo.auth)
            assert r.status_code == 200
            full = r.json()
            assert full["orders"] is not None and "sim" in full["venues"]
            assert demo.token not in r.text
            # The Host header must name this server (DNS rebinding).
            r = await client.get(f"{demo.base}/health", headers={"Host": "rebind.example"})
            assert r.status_code == 421
