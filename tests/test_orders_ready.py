"""READY=1 follows start-up reconciliation of the order pipeline (real ``tradingd run``).

Two runs of the real daemon with one ``[accounts.main]``:

* against a running simulator, the daemon reports READY only once start-up
  reconciliation is done: the first ``/status`` after READY already shows the
  pipeline reconciled and sending enabled;
* against a venue that cannot be reached, the start waits (with
  ``EXTEND_TIMEOUT_USEC``) for ``startup_reconcile_timeout_s``, then reports
  READY with sending held back and health saying why — entry still records
  intents, nothing is sent.
"""

from __future__ import annotations

import socket

import httpx2
import pytest
import trio

from tests.helpers.process import SECRET, WAIT_S, Harness, http_get
from tests.helpers.sim import sim_process, venue_table

pytestmark = pytest.mark.slow

STARTUP_RECONCILE_S = 3.0


def orders_config(h: Harness, rest_url: str, ws_url: str) -> str:
    venue = venue_table(h.tmp_path / "secrets", rest_url, ws_url)
    return f"""
[store]
path = "orders.db"

{venue}request_timeout_s = 2.0

[orders]
startup_reconcile_timeout_s = {STARTUP_RECONCILE_S}
send_timeout_s = 1.0
section_deadline_s = 2.0

[accounts.main]
venue = "sim"
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def status_of(h: Harness) -> dict:  # type: ignore[type-arg]
    answer = await h.control({"cmd": "status"})
    return answer["status"]  # type: ignore[no-any-return]


async def test_ready_comes_after_startup_reconciliation(h: Harness) -> None:
    async with sim_process(h.tmp_path) as sim:
        h.write_config()
        with h.config_path.open("a") as f:
            f.write(orders_config(h, sim.rest_url, sim.ws_url))
        daemon = await h.start()
        await daemon.wait_ready()
        orders = (await status_of(h))["orders"]
        assert orders["running"] is True
        assert orders["reconcile"]["reconciled"] is True, orders
        assert orders["reconcile"]["sending_enabled"] is True
        # Entry works through the admin API with the token.
        base = await daemon.admin_url()
        async with httpx2.AsyncClient(trust_env=False, timeout=10) as client:
            body = {
                "message_id": "ready-1",
                "account": "main",
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "quantity": "0.01",
                "price": "29000.00",
                "time_in_force": "GTC",
            }
            refused = await client.post(f"{base}/orders", json=body)
            assert refused.status_code == 401
            headers = {"Authorization": f"Bearer {SECRET}"}
            answer = await client.post(f"{base}/orders", json=body, headers=headers)
            assert answer.status_code == 202, answer.text
            coid = answer.json()["client_order_id"]
            with trio.fail_after(WAIT_S):
                while True:
                    got = await client.get(f"{base}/orders/{coid}", headers=headers)
                    if got.json()["order"]["state"] == "ACCEPTED":
                        break
                    await trio.sleep(0.05)
        assert len((await sim.control("GET", f"/sim/audit?clientOrderId={coid}"))["orders"]) == 1


async def test_unreachable_venue_delays_ready_then_holds_sending(h: Harness) -> None:
    port = closed_port()
    h.write_config()
    with h.config_path.open("a") as f:
        f.write(orders_config(h, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"))
    started = trio.current_time()
    daemon = await h.start()
    ready_at = await daemon.wait_ready(timeout_s=WAIT_S + STARTUP_RECONCILE_S)
    waited = daemon.notify.messages[ready_at].at - started
    assert waited >= STARTUP_RECONCILE_S, daemon.diag()
    extends = daemon.notify.where("EXTEND_TIMEOUT_USEC")
    assert extends and extends[0] < ready_at, daemon.diag()
    orders = (await status_of(h))["orders"]
    assert orders["reconcile"]["sending_enabled"] is False
    health = (await http_get(f"{await daemon.admin_url()}/health")).json()
    assert any("not reconciled" in reason for reason in health["reasons"]), health
    assert "start-up reconciliation did not finish" in daemon.log()
