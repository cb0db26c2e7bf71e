"""The admin API in process: a :class:`Host` standing in for the daemon, and raw requests.

:class:`Host` is what :class:`~daemon.admin.api.AdminAPI` reads from the daemon
and nothing else; :func:`idle_service` a real orders service whose pipeline is
not running. :func:`admin_server` serves the API with the daemon's connection
policy on 127.0.0.1 port 0; :func:`request`/:func:`one_request` speak raw
HTTP/1.1 to it and :func:`hold_half_open` is one slow-loris attacker slot.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from daemon.admin.api import AdminAPI
from daemon.admin.server import serve_admin_http
from daemon.health import HealthModel
from daemon.metrics import Registry
from daemon.orders.service import OrdersService
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.secrets import Secret
from tests.helpers.orders import FAST
from tests.helpers.raw_http import raw_connection
from tests.helpers.sim import secret

#: The admin token of :class:`Host` (and of :func:`request` with ``token=True``).
TOKEN = "s3cret-admin-token-value"

#: A request head that never ends (no blank line): the connection holds a slot.
HALF_OPEN = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@attrs.define
class Host:
    """What :class:`AdminAPI` reads from the daemon, and nothing else."""

    orders: OrdersService | None
    admin_token: Secret | None = attrs.field(factory=lambda: secret(TOKEN, "ADMIN_TOKEN"))
    state: str = "running"
    health: HealthModel = attrs.field(factory=HealthModel)
    metrics: Registry = attrs.field(factory=Registry)

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "positions": "guarded"}

    def status_summary(self) -> dict[str, Any]:
        return {"state": self.state}


def idle_service() -> OrdersService:
    """A real service whose pipeline is not running (as while it starts or restarts)."""

    async def open_store() -> Any:
        raise AssertionError("never run")

    return OrdersService(
        FAST,
        {"main": "sim"},
        LimitTable(default=RiskLimits(max_orders_per_window=None)),
        venues=None,
        open_store=open_store,
    )


@asynccontextmanager
async def admin_server(
    host: Host | None = None, **overrides: Any
) -> AsyncIterator[tuple[tuple[str, int], AdminAPI]]:
    """The admin API served with the daemon's connection policy; yields ``(address, api)``."""
    api = AdminAPI(host or Host(orders=idle_service()))
    options: dict[str, Any] = {
        "max_connections": 8,
        "reserved_connections": 2,
        "head_timeout_s": 0.5,
        "reject_log_interval_s": 10.0,
        "priority": api.is_priority,
        "evict_waiting": True,
        "host_names": ("127.0.0.1", "localhost", "::1"),
        **overrides,
    }
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(serve_admin_http, api.handle, "127.0.0.1", 0, **options)
        )
        try:
            yield address, api
        finally:
            nursery.cancel_scope.cancel()


def request(
    method: str, target: str, address: tuple[str, int], *, body: bytes = b"", token: bool = False
) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\n"
    if token:
        head += f"Authorization: Bearer {TOKEN}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def one_request(address: tuple[str, int], data: bytes) -> Any:
    async with raw_connection(address) as c:
        await c.send(data)
        return await c.read_response()


async def hold_half_open(address: tuple[str, int], opened: list[int]) -> None:
    """One attacker slot: a head that never ends, re-opened whenever the server closes it."""
    while True:
        try:
            stream = await trio.open_tcp_stream(*address)
        except OSError:
            await trio.sleep(0.01)
            continue
        async with stream:
            try:
                await stream.send_all(HALF_OPEN)
                opened[0] += 1
                while await stream.receive_some(4096):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
