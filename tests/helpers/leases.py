"""Several order services over one shared store, for the account-lease tests.

:func:`running_daemon` runs one :class:`~daemon.orders.service.OrdersService`
(a "daemon": its own instance id, its own store connection, its own venue
client) as the child of a supervisor, over the real simulator. Several of
them over the same store (one SQLite file, or one PostgreSQL schema) share
its ``account_leases``. :func:`open_shared` opens one more connection to that
store; :func:`wait_for` polls a condition of a running daemon.

For the process-level test (``tests/test_leases_process.py``): the
configuration of one daemon of a shared deployment (:func:`daemon_config`,
:func:`intake_table`) and a private Redis stream (:func:`redis_streams`).
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from daemon.config import OrdersConfig
from daemon.orders.service import OrdersService
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.store.postgres import PostgresStore
from daemon.store.sqlite import SqliteStore
from daemon.supervise import ChildSpec, Supervisor, SupervisorPolicy
from daemon.venues.binance import BinanceVenue
from tests.helpers.orders import StaticVenues
from tests.helpers.sim import SimHarness, client_config
from tests.helpers.supervision import supervising

__all__ = [
    "LEASED",
    "PROCESS_ORDERS",
    "Daemon",
    "daemon_config",
    "intake_table",
    "open_shared",
    "redis_streams",
    "running_daemon",
    "wait_for",
]

#: Short leases and sections: a takeover within a few seconds.
LEASED = OrdersConfig(
    send_timeout_s=0.5,
    section_deadline_s=1.0,
    clock_skew_s=0.0,
    query_lag_s=0.2,
    unknown_retry_s=0.1,
    poll_interval_s=0.1,
    reconcile_interval_s=1.0,
    startup_reconcile_timeout_s=5.0,
    drain_timeout_s=1.0,
    lease_ttl_s=2.0,
    lease_renew_s=0.2,
)


@attrs.define
class Daemon:
    name: str
    service: OrdersService
    venues: StaticVenues
    store: SqliteStore | PostgresStore


async def open_shared(where: Path | str) -> SqliteStore | PostgresStore:
    """One more connection to the shared store: a SQLite file, or a PostgreSQL DSN."""
    if isinstance(where, Path):
        return await SqliteStore.open(where)
    return await PostgresStore.open(where)


@asynccontextmanager
async def running_daemon(
    sim: SimHarness,
    where: Path | str,
    name: str,
    *,
    settings: OrdersConfig = LEASED,
    accounts: dict[str, str] | None = None,
) -> AsyncIterator[Daemon]:
    """A daemon named ``name`` over the shared store ``where``; stopped gracefully on exit."""
    client = BinanceVenue(client_config(sim, recv_window_ms=500), rng=random.Random(3))
    store = await open_shared(where)
    try:
        await client.sync_time()
        venues = StaticVenues("sim", client, await client.exchange_info(), 500)

        async def open_store() -> Any:
            return store

        service = OrdersService(
            attrs.evolve(settings, instance_id=name),
            accounts or {"main": "sim"},
            LimitTable(default=RiskLimits(max_orders_per_window=None)),
            venues,
            open_store,
        )
        sup = Supervisor(
            f"daemon-{name}",
            [ChildSpec("orders", service.run, start_timeout_s=30, shutdown_grace_s=10)],
            SupervisorPolicy(max_restarts=0),
        )
        async with supervising(sup):
            yield Daemon(name, service, venues, store)
    finally:
        await client.aclose()
        await store.aclose()


async def wait_for(condition: Callable[[], bool], *, poll_s: float = 0.02) -> None:
    """Poll ``condition`` until true (the caller's ``fail_after`` bounds it)."""
    while not condition():  # noqa: ASYNC110 (state of other tasks: polled)
        await trio.sleep(poll_s)


# --------------------------------------------------------------------------- process level

#: ``[orders]`` of the process test: short sections and leases (a takeover in ~5 s).
PROCESS_ORDERS: dict[str, float | int | str] = {
    "send_timeout_s": 1.0,
    "section_deadline_s": 1.5,
    "drain_timeout_s": 2.0,
    "clock_skew_s": 0.0,
    "query_lag_s": 0.3,
    "unknown_retry_s": 0.2,
    "reconcile_interval_s": 1.0,
    "poll_interval_s": 0.3,
    "startup_reconcile_timeout_s": 10.0,
    "lease_ttl_s": 3.0,
    "lease_renew_s": 0.3,
}


def daemon_config(
    h: Any, *, name: str, sim: Any, dsn: str, intake: str, orders: dict[str, Any] | None = None
) -> str:
    """One daemon of the shared deployment: PostgreSQL ``dsn``, the sim as its venue, one
    account, ``[orders] instance_id = name``, and the ``[intake]`` table given."""
    from tests.helpers.sim import venue_table  # noqa: PLC0415 (process tests only)

    q = json.dumps  # a JSON string (or number) is valid TOML for these values
    table = {**PROCESS_ORDERS, **(orders or {}), "instance_id": name}
    orders_table = "\n".join(f"{key} = {q(value)}" for key, value in table.items())
    venue = venue_table(h.tmp_path / "secrets", sim.rest_url, sim.ws_url, name="sim")
    return (
        h.config_text(level="info", shutdown_timeout_s=15.0)
        + f"""
[store]
backend = "postgres"
dsn = {q(dsn)}

[orders]
{orders_table}

[risk]
max_orders_per_window = 0
max_open_orders = 0

{venue}recv_window_ms = 1000
user_stream = true
request_timeout_s = 2.0

[accounts.main]
venue = "sim"
{intake}"""
    )


@contextmanager
def redis_streams() -> Iterator[Any]:
    """A uuid-named stream, group and dead-letter stream on the test Redis (deleted after);
    skipped without Redis, failed instead under ``TRADINGD_REQUIRE_SERVICES=1``."""
    import redis  # noqa: PLC0415

    from tests.intake.support import Streams  # noqa: PLC0415

    url = os.environ.get("TRADINGD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        reason = f"Redis is not reachable at {url}: {exc}"
        if os.environ.get("TRADINGD_REQUIRE_SERVICES") == "1":
            pytest.fail(f"TRADINGD_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:12]
    streams = Streams(
        client,
        url=url,
        stream=f"td-test:{tag}:intents",
        group=f"td-test-{tag}",
        dead=f"td-test:{tag}:dead",
    )
    try:
        yield streams
    finally:
        client.delete(streams.stream, streams.dead)
        client.close()


def intake_table(streams: Any, consumer: str) -> str:
    """``[intake]`` of one daemon: the shared stream and group, its own consumer name."""
    q = json.dumps
    return f"""
[intake]
enabled = true
redis_url = {q(streams.url)}
stream = {q(streams.stream)}
group = {q(streams.group)}
dead_letter_stream = {q(streams.dead)}
consumer = {q(consumer)}
batch = 8
block_ms = 100
claim_idle_ms = 1500
claim_interval_s = 0.5
"""
