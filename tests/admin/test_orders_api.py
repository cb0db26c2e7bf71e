"""The order routes of the admin API, over the real HTTP server on 127.0.0.1 port 0.

Behind the routes runs the real order pipeline (real store, real Binance
client, real simulator; :mod:`tests.helpers.orders`), so every status code
here is what a client of the daemon would see. The host object is a small
real stand-in for :class:`daemon.app.Daemon`: the attributes
:class:`~daemon.admin.api.AdminHost` names, with a real health model and
metrics registry.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import attrs
import httpx2
import trio

from daemon.admin.api import MAX_ORDER_BODY_BYTES, AdminAPI
from daemon.http import serve_http
from daemon.orders.control import NO_ACCOUNTS
from daemon.orders.state import OrderState
from daemon.risk.limits import LimitTable, RiskLimits
from tests.helpers.admin import TOKEN, Host, idle_service
from tests.helpers.orders import FAST, limit_request, market_request, running_pipeline, wait_state
from tests.helpers.sim import running_sim, sim_config

TIMEOUT_S = 30
AUTH = {"Authorization": f"Bearer {TOKEN}"}
S = OrderState

ORDER_ROUTES = [
    ("POST", "/orders"),
    ("GET", "/orders"),
    ("GET", "/orders/td1-abc"),
    ("POST", "/orders/td1-abc/cancel"),
    ("GET", "/positions"),
    ("GET", "/trading"),
    ("POST", "/trading/halt"),
    ("POST", "/trading/resume"),
    ("POST", "/trading/reduce-only"),
]


@asynccontextmanager
async def serving(host: Host) -> AsyncIterator[httpx2.AsyncClient]:
    """The admin API of ``host`` on a free port; yields a client (no auth header by default)."""
    api = AdminAPI(host)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(functools.partial(serve_http, api.handle, "127.0.0.1", 0))
        try:
            async with httpx2.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as client:
                yield client
        finally:
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- auth, config


async def test_every_order_route_needs_the_bearer_token() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(Host(orders=idle_service())) as client:
            for method, path in ORDER_ROUTES:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                    r = await client.request(method, path, headers=headers, json={})
                    assert r.status_code == 401, (method, path, headers)
                    assert r.json() == {"error": "missing or invalid bearer token"}
                    assert r.headers["www-authenticate"] == "Bearer"
            # The read-only endpoints stay open, as before; the full status is guarded.
            assert (await client.get("/status")).json() == {"state": "running"}
            assert (await client.get("/status/full")).status_code == 401
            full = await client.get("/status/full", headers=AUTH)
            assert full.json() == {"state": "running", "positions": "guarded"}
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
        async with serving(Host(orders=idle_service(), admin_token=None)) as client:
            for method, path in ORDER_ROUTES:
                r = await client.request(method, path, headers=AUTH)
                assert r.status_code == 403, (method, path)
                assert "[admin] token" in r.json()["error"]


async def test_without_accounts_every_order_route_is_503() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(Host(orders=None)) as client:
            for method, path in ORDER_ROUTES:
                r = await client.request(method, path, headers=AUTH, json={})
                assert (r.status_code, r.json()) == (503, {"error": NO_ACCOUNTS}), (method, path)
                assert "retry-after" not in r.headers  # configuration, not a passing condition


async def test_pipeline_not_running_is_503_with_retry_after_but_switches_work() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serving(Host(orders=idle_service())) as client:
            for method, path in [
                ("POST", "/orders"),
                ("GET", "/orders"),
                ("GET", "/orders/td1-abc"),
                ("POST", "/orders/td1-abc/cancel"),
                ("GET", "/positions"),
            ]:
                body = limit_request("m-1") if path == "/orders" else None
                r = await client.request(method, path, headers=AUTH, json=body)
                assert r.status_code == 503, (method, path)
                assert r.headers["retry-after"] == "1"
                assert r.json()["retry_after_s"] == 1.0
                assert "not running" in r.json()["error"]
            # A halt must work exactly when the pipeline is in trouble.
            r = await client.post("/trading/halt", headers=AUTH, json={"reason": "restart"})
            assert r.status_code == 200
            body = r.json()
            assert body["states"]["global"]["state"] == "HALTED"
            assert body["states"]["global"]["reason"] == "restart"
            assert body["persisted"] is False  # no store yet; memory holds it
            assert body["effective"] == {"main": "HALTED"}


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
            serving(Host(orders=run.service)) as client,
        ):
            padded = {**limit_request("big"), "pad": "x" * MAX_ORDER_BODY_BYTES}
            r = await client.post("/orders", headers=AUTH, json=padded)
            assert r.status_code == 413
            assert r.json() == {"error": f"request body larger than {MAX_ORDER_BODY_BYTES} bytes"}
            r = await client.post("/trading/halt", headers=AUTH, content=b" " * 70_000)
            assert r.status_code == 413
            assert run.service.states.global_state.value == "ACTIVE"
            assert await run.service.list_orders() == []


# --------------------------------------------------------------------------- entry


async def test_submit_is_202_then_200_and_conflict_is_409(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
            serving(Host(orders=run.service)) as client,
        ):
            r = await client.post("/orders", headers=AUTH, json=limit_request("h-1"))
            assert r.status_code == 202
            first = r.json()
            assert first["created"] is True
            coid = first["client_order_id"]
            assert first["order"]["client_order_id"] == coid
            assert first["order"]["message_id"] == "h-1"
            assert first["order"]["price"] == "29000.00"
            assert first["state"] in {"PENDING", "SENDING", "ACCEPTED"}
            # Durable before the answer: the store has it.
            assert [o.client_order_id for o in await run.service.list_orders()] == [coid]

            r = await client.post("/orders", headers=AUTH, json=limit_request("h-1"))
            assert r.status_code == 200
            again = r.json()
            assert (again["client_order_id"], again["created"]) == (coid, False)

            r = await client.post(
                "/orders", headers=AUTH, json=limit_request("h-1", price="29001.00")
            )
            assert r.status_code == 409
            assert r.json()["client_order_id"] == coid
            assert r.json()["fields"] == ["price"]
            assert coid in r.json()["error"]
            assert len(await run.service.list_orders()) == 1
            await wait_state(run.service, coid, S.ACCEPTED)
            assert len(await sim.audit(coid)) == 1


async def test_invalid_requests_are_400_with_every_problem(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
            serving(Host(orders=run.service)) as client,
        ):
            for raw in (b"{not json", b"", b'{"quantity": NaN}'):
                r = await client.post("/orders", headers=AUTH, content=raw)
                assert r.status_code == 400, raw
                body = r.json()
                assert [p["code"] for p in body["problems"]] == ["INVALID_JSON"]
                assert body["error"] == body["problems"][0]["message"]

            r = await client.post("/orders", headers=AUTH, json=["not", "an", "object"])
            assert r.status_code == 400
            assert [p["code"] for p in r.json()["problems"]] == ["NOT_AN_OBJECT"]

            bad = {"message_id": "x", "account": "main", "side": "UP", "quantity": 1.5, "x": 1}
            r = await client.post("/orders", headers=AUTH, json=bad)
            assert r.status_code == 400
            problems = {(p["code"], p["field"]) for p in r.json()["problems"]}
            assert {
                ("UNKNOWN_FIELD", "x"),
                ("MISSING_FIELD", "symbol"),
                ("MISSING_FIELD", "type"),
                ("INVALID_CHOICE", "side"),
                ("DECIMAL_NOT_STRING", "quantity"),
            } <= problems
            assert r.json()["error"] == f"invalid order intent ({len(problems)} problem(s))"

            r = await client.post("/orders", headers=AUTH, json=limit_request("u", account="zz"))
            assert r.status_code == 400
            assert [p["code"] for p in r.json()["problems"]] == ["UNKNOWN_ACCOUNT"]
            assert await run.service.list_orders() == []


async def test_risk_rejects_are_422_with_coded_reasons(tmp_path: Path) -> None:
    limits = LimitTable(default=RiskLimits(max_orders_per_window=None, max_open_orders=1))
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db", limits=limits) as run,
            serving(Host(orders=run.service)) as client,
        ):
            r = await client.post(
                "/orders", headers=AUTH, json=limit_request("t", price="29000.001")
            )
            assert r.status_code == 422
            reasons = r.json()["reasons"]
            assert [x["code"] for x in reasons] == ["PRICE_TICK"]
            assert reasons[0]["filter_type"] == "PRICE_FILTER"
            assert reasons[0]["message"]
            assert "PRICE_TICK" in r.json()["error"]
            assert (await client.post("/orders", headers=AUTH, json=limit_request("o1"))).is_success
            r = await client.post("/orders", headers=AUTH, json=limit_request("o2"))
            assert r.status_code == 422
            assert [x["code"] for x in r.json()["reasons"]] == ["OPEN_ORDERS_EXCEEDED"]


async def test_saturated_account_queue_is_503_with_retry_after(tmp_path: Path) -> None:
    settings = attrs.evolve(FAST, account_queue_capacity=1, shards=1)
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db", settings=settings) as run,
            serving(Host(orders=run.service)) as client,
        ):
            run.venues.down = True  # the worker holds one order; the queue fills behind it
            statuses = []
            for n in range(5):
                r = await client.post("/orders", headers=AUTH, json=limit_request(f"s-{n}"))
                statuses.append(r.status_code)
                if r.status_code == 503:
                    break
            assert statuses[-1] == 503, statuses
            assert set(statuses[:-1]) == {202}
            body = r.json()
            assert "full" in body["error"]
            assert r.headers["retry-after"] == str(max(1, math.ceil(body["retry_after_s"])))
            run.venues.down = False
            accepted = await run.service.list_orders()
            assert len(accepted) == len(statuses) - 1  # the refused one was never recorded
            for record in accepted:
                await wait_state(run.service, record.client_order_id, S.ACCEPTED)


# --------------------------------------------------------------------------- reading, cancel


async def test_get_list_cancel_positions(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
            serving(Host(orders=run.service)) as client,
        ):
            limit = (await client.post("/orders", headers=AUTH, json=limit_request("l-1"))).json()
            lid = limit["client_order_id"]
            r = await client.post("/orders", headers=AUTH, json=market_request("m-1"))
            mid = r.json()["client_order_id"]
            await wait_state(run.service, lid, S.ACCEPTED)
            await wait_state(run.service, mid, S.FILLED)

            # One order: intent, history, fills.
            r = await client.get(f"/orders/{mid}", headers=AUTH)
            assert r.status_code == 200
            details = r.json()
            assert details["order"]["state"] == "FILLED"
            assert details["order"]["venue_order_id"] is not None
            assert [h["to"] for h in details["history"]][:3] == ["PENDING", "SENDING", "ACCEPTED"]
            assert sum(Decimal(f["quantity"]) for f in details["fills"]) == Decimal("0.010")
            assert all(f["client_order_id"] == mid for f in details["fills"])

            r = await client.get("/orders/td1-doesnotexist", headers=AUTH)
            assert r.status_code == 404
            assert r.json()["client_order_id"] == "td1-doesnotexist"
            for bad in ("x" * 37, "bad%20id", "caf%C3%A9"):
                r = await client.get(f"/orders/{bad}", headers=AUTH)
                assert r.status_code == 400, bad
                assert "client order id must match" in r.json()["error"]

            # Listing: newest first, filters, strict parameters.
            r = await client.get("/orders", headers=AUTH)
            assert [o["client_order_id"] for o in r.json()["orders"]] == [mid, lid]
            r = await client.get("/orders", headers=AUTH, params={"state": "open"})
            assert [o["client_order_id"] for o in r.json()["orders"]] == [lid]
            r = await client.get(
                "/orders",
                headers=AUTH,
                params=[("state", "filled,canceled"), ("state", "REJECTED")],
            )
            assert [o["client_order_id"] for o in r.json()["orders"]] == [mid]
            r = await client.get("/orders", headers=AUTH, params={"limit": "1"})
            assert [o["client_order_id"] for o in r.json()["orders"]] == [mid]
            r = await client.get("/orders", headers=AUTH, params={"account": "other"})
            assert r.json() == {"orders": []}
            for params, needle in (
                ({"state": "bogus"}, "unknown order state(s) 'bogus'"),
                ({"limit": "0"}, "limit must be in 1..1000"),
                ({"limit": "ten"}, "limit must be a decimal integer"),
                ({"acount": "main"}, "unknown query parameter(s) 'acount'"),
            ):
                r = await client.get("/orders", headers=AUTH, params=params)
                assert r.status_code == 400, params
                assert needle in r.json()["error"]

            # Positions come from fills.
            r = await client.get("/positions", headers=AUTH, params={"account": "main"})
            [position] = r.json()["positions"]
            assert (position["account"], position["symbol"]) == ("main", "BTCUSDT")
            assert Decimal(position["quantity"]) == Decimal("0.010")  # a string, never a float
            r = await client.get("/positions", headers=AUTH, params={"account": "other"})
            assert r.json() == {"positions": []}

            # Cancel: 202 while open, then 200 with the finished order unchanged.
            r = await client.post(f"/orders/{lid}/cancel", headers=AUTH)
            assert r.status_code == 202
            assert r.json()["cancel_requested"] is True
            assert r.json()["order"]["cancel_requested_at_ms"] is not None
            await wait_state(run.service, lid, S.CANCELED)
            r = await client.post(f"/orders/{lid}/cancel", headers=AUTH)
            assert r.status_code == 200
            assert (r.json()["state"], r.json()["cancel_requested"]) == ("CANCELED", False)
            r = await client.post(f"/orders/{mid}/cancel", headers=AUTH)
            assert (r.status_code, r.json()["state"]) == (200, "FILLED")
            r = await client.post("/orders/td1-nope/cancel", headers=AUTH)
            assert r.status_code == 404
            assert len(await sim.audit(lid)) == 1


# --------------------------------------------------------------------------- trading switches


async def test_halt_refuses_entry_and_resume_restores_it(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
            serving(Host(orders=run.service)) as client,
        ):
            r = await client.get("/trading", headers=AUTH)
            assert r.status_code == 200
            assert r.json()["effective"] == {"main": "ACTIVE"}

            # Global halt (no body at all).
            r = await client.post("/trading/halt", headers=AUTH)
            assert r.status_code == 200
            assert r.json()["states"]["global"]["state"] == "HALTED"
            assert r.json()["persisted"] is True
            r = await client.post("/orders", headers=AUTH, json=limit_request("h-1"))
            assert r.status_code == 422
            assert [x["code"] for x in r.json()["reasons"]] == ["TRADING_HALTED"]
            r = await client.post("/trading/resume", headers=AUTH, json={})
            assert r.json()["states"]["global"]["state"] == "ACTIVE"

            # One account, with a reason.
            r = await client.post(
                "/trading/halt", headers=AUTH, json={"account": "main", "reason": "fat finger"}
            )
            assert r.status_code == 200
            assert r.json()["states"]["accounts"]["main"]["reason"] == "fat finger"
            assert (await client.get("/trading", headers=AUTH)).json()["effective"] == {
                "main": "HALTED"
            }
            r = await client.post("/orders", headers=AUTH, json=limit_request("h-2"))
            assert [x["code"] for x in r.json()["reasons"]] == ["ACCOUNT_HALTED"]

            # Bad switch requests.
            for body, needle in (
                ({"account": "nobody"}, "unknown account 'nobody'"),
                ({"acount": "main"}, "unknown field 'acount'"),
                ({"reason": 5}, "reason must be a string"),
                ({"reason": "x" * 501}, "longer than 500"),
                (["main"], "expected a JSON object"),
            ):
                r = await client.post("/trading/resume", headers=AUTH, json=body)
                assert r.status_code == 400, body
                assert needle in r.json()["error"]
            r = await client.post("/trading/resume", headers=AUTH, content=b"{nope")
            assert r.status_code == 400
            assert run.service.states.account_state("main").value == "HALTED"

            r = await client.post("/trading/resume", headers=AUTH, json={"account": "main"})
            assert r.json()["effective"] == {"main": "ACTIVE"}
            r = await client.post("/orders", headers=AUTH, json=limit_request("h-3"))
            assert r.status_code == 202

            # Reduce-only: a flat account cannot open a position.
            r = await client.post("/trading/reduce-only", headers=AUTH, json={"account": "main"})
            assert r.json()["effective"] == {"main": "REDUCING"}
            r = await client.post("/orders", headers=AUTH, json=market_request("h-4"))
            assert r.status_code == 422
            assert [x["code"] for x in r.json()["reasons"]] == ["REDUCE_ONLY_VIOLATION"]

            # The halted and refused submissions left no intent behind.
            assert [o.message_id for o in await run.service.list_orders()] == ["h-3"]
