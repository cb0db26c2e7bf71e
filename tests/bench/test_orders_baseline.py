"""The WebSocket API baseline of ``tradingd bench orders`` (:mod:`daemon.bench.orders_baseline`).

Its signature is checked against the simulator's own verifier and against the
documented signing written out in :mod:`tests.helpers.sim_wsapi`; the
baseline itself runs against an in-process simulator, whose answer is then
confirmed by another connection (the order rests at the venue). No timing is
looked at.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from daemon.bench.common import BenchError
from daemon.bench.orders_baseline import (
    PRICE,
    QUANTITY,
    SYMBOL,
    WsBaseline,
    signed_order_params,
    ws_api_url,
)
from daemon.venues.sim import auth as simauth
from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY
from daemon.venues.sim.server import SimServer
from daemon.venues.sim.wsframes import param_strings, signature_payload
from tests.helpers.sim_api import TIMEOUT_S, running_sim_server
from tests.helpers.sim_wsapi import ws_api, ws_sign


def test_ws_baseline_signature_verifies_with_the_simulators_own_check() -> None:
    secret = "s3cr3t-for-the-bench"
    params = signed_order_params("benchKey", secret.encode(), "bench-base-7", 1_700_000_000_123)
    payload = signature_payload(param_strings(params))
    assert simauth.verify_signature(secret.encode(), [payload], str(params["signature"]))
    assert not simauth.verify_signature(b"another secret", [payload], str(params["signature"]))
    # The documented signing, written out independently, gives the same signature.
    assert ws_sign(secret, dict(params)) == params["signature"]
    assert (params["apiKey"], params["newClientOrderId"]) == ("benchKey", "bench-base-7")
    # Integers as JSON numbers, as in the documentation's examples.
    assert (params["timestamp"], params["recvWindow"]) == (1_700_000_000_123, 5000)
    assert (params["symbol"], params["type"], params["price"], params["quantity"]) == (
        SYMBOL,
        "LIMIT",
        PRICE,
        QUANTITY,
    )
    assert params["newOrderRespType"] == "FULL"


def test_ws_api_url_is_the_simulators_path() -> None:
    assert ws_api_url("ws://127.0.0.1:9000/") == "ws://127.0.0.1:9000/ws-api/v3"


def _ws_url(sim: SimServer) -> str:
    assert sim.ws_url is not None, "the simulator listens"
    return sim.ws_url


def _rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [
            (str(c), str(k)) for c, k in conn.execute("SELECT client_order_id, kind FROM orders")
        ]


async def test_ws_baseline_places_a_resting_order_between_two_commits(tmp_path: Path) -> None:
    db = tmp_path / "baseline.db"
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, trio.open_nursery() as nursery:
            url = ws_api_url(_ws_url(sim))
            baseline = WsBaseline(url, DOCS_API_KEY, DOCS_SECRET_KEY, db, nursery)
            try:
                await baseline.open()
                for coid in ("bench-base-0", "bench-base-1"):  # one connection, kept open
                    total, commits, request, statements = await baseline.one(coid)
                    assert 0 < commits < total and 0 < request < total and statements > 0
            finally:
                await baseline.aclose()
            async with ws_api(_ws_url(sim)) as client:
                answer = await client.call(
                    "order.status",
                    client.signed(symbol=SYMBOL, origClientOrderId="bench-base-1"),
                )
    assert answer["status"] == 200, answer
    assert answer["result"]["status"] == "NEW"
    assert answer["result"]["price"].rstrip("0") == PRICE.rstrip("0")
    assert await trio.to_thread.run_sync(_rows, db) == [
        ("bench-base-0", "intent"),
        ("bench-base-0", "answer"),
        ("bench-base-1", "intent"),
        ("bench-base-1", "answer"),
    ]


async def test_ws_baseline_refused_by_the_venue_is_a_bench_error(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim, trio.open_nursery() as nursery:
            url = ws_api_url(_ws_url(sim))
            baseline = WsBaseline(url, DOCS_API_KEY, "not-the-secret", tmp_path / "b.db", nursery)
            try:
                await baseline.open()
                with pytest.raises(BenchError, match="-1022"):
                    await baseline.one("bench-base-0")
            finally:
                await baseline.aclose()


async def test_ws_baseline_that_cannot_connect_is_a_bench_error(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server() as sim:
            url = _ws_url(sim) + "/no-such-path"
        async with trio.open_nursery() as nursery:  # the simulator is gone: nothing listens
            baseline = WsBaseline(url, DOCS_API_KEY, DOCS_SECRET_KEY, tmp_path / "b.db", nursery)
            try:
                with pytest.raises(BenchError, match="cannot connect"):
                    await baseline.open()
            finally:
                await baseline.aclose()
