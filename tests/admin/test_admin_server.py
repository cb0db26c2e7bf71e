"""The admin API on the shared HTTP server keeps its own name and busy answer.

:func:`daemon.admin.server.serve_admin_http` is what the daemon serves the
admin API with: its log lines say ``admin HTTP`` (the process test counts
them) and a non-priority request on the reserve is told which routes are
priority, exactly as before the server moved to :mod:`daemon.http`.
"""

from __future__ import annotations

import logging

import pytest
import trio

from daemon.admin.server import ADMIN_BUSY_MESSAGE, ADMIN_SERVER_NAME
from tests.helpers.admin import admin_server, one_request, request
from tests.helpers.raw_http import raw_connection

TIMEOUT_S = 20


async def test_busy_answer_names_the_priority_routes() -> None:
    assert ADMIN_BUSY_MESSAGE == (
        "server busy: only priority requests (health, status, trading switches) "
        "are served right now"
    )
    with trio.fail_after(TIMEOUT_S):
        server = admin_server(max_connections=1, reserved_connections=1, evict_waiting=False)
        async with server as (address, _api), raw_connection(address) as first:
            await first.send(request("GET", "/health", address))
            assert (await first.read_response()).status == 200  # holds the general slot
            r = await one_request(address, request("GET", "/metrics", address))
            assert r.status == 503
            assert r.json() == {"error": ADMIN_BUSY_MESSAGE}


async def test_log_lines_say_admin_http(caplog: pytest.LogCaptureFixture) -> None:
    assert ADMIN_SERVER_NAME == "admin HTTP"
    with trio.fail_after(TIMEOUT_S), caplog.at_level(logging.DEBUG, logger="tradingd.http"):
        server = admin_server(max_connections=1, reserved_connections=0, evict_waiting=False)
        async with server as (address, _api), raw_connection(address) as first:
            await first.send(request("GET", "/health", address))
            assert (await first.read_response()).status == 200  # holds the only slot
            r = await one_request(address, request("GET", "/health", address))
            assert r.status == 503
    assert any(r.getMessage().startswith("admin HTTP: rejecting ") for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
