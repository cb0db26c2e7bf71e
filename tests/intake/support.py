"""Helpers of the intake tests: the test's side of the streams, and the intake as a child."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import redis
import trio

from daemon.config import IntakeConfig
from daemon.intake import IntakeService
from daemon.orders.gateway import EntryUnavailableError, OrderGateway
from daemon.orders.ids import DEFAULT_PREFIX
from daemon.supervise import ChildSpec, Supervisor, SupervisorPolicy
from tests.helpers.supervision import supervising


@attrs.define
class Streams:
    """One test's stream, group and dead-letter stream, and a plain client on them.

    The client's calls block: the async methods run them in a thread.
    """

    client: redis.Redis
    url: str
    stream: str
    group: str
    dead: str

    def settings(self, **overrides: Any) -> IntakeConfig:
        """``[intake]`` on these names, fast: short BLOCK and backoff."""
        values: dict[str, Any] = {
            "enabled": True,
            "redis_url": self.url,
            "stream": self.stream,
            "group": self.group,
            "dead_letter_stream": self.dead,
            "consumer": "live",
            "block_ms": 50,
            "claim_idle_ms": 60_000,
            "claim_interval_s": 0.2,
            "retry_initial_s": 0.02,
            "retry_max_s": 0.2,
        }
        values.update(overrides)
        return IntakeConfig(**values)

    def add_sync(self, *fields: tuple[str | bytes, str | bytes]) -> bytes:
        """``XADD`` one entry with exactly these field/value pairs (repeats allowed)."""
        flat = [part for pair in fields for part in pair]
        entry_id: bytes = self.client.execute_command("XADD", self.stream, "*", *flat)
        return entry_id

    async def add(self, *fields: tuple[str | bytes, str | bytes]) -> bytes:
        return await trio.to_thread.run_sync(lambda: self.add_sync(*fields))

    async def add_intent(self, body: Mapping[str, Any]) -> bytes:
        """An entry as a producer writes it: ``intent`` = the ``POST /orders`` JSON body."""
        return await self.add(("intent", json.dumps(body)))

    async def call(self, fn: Callable[[redis.Redis], Any]) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(self.client))

    async def create_group(self) -> None:
        await self.call(lambda c: c.xgroup_create(self.stream, self.group, "0", mkstream=True))

    async def read_as(self, consumer: str, count: int = 100, cursor: str = ">") -> list[bytes]:
        """``XREADGROUP`` as another consumer (a producer-side stand-in): the ids read."""
        reply = await self.call(
            lambda c: c.xreadgroup(self.group, consumer, {self.stream: cursor}, count=count)
        )
        return [entry_id for _, entries in reply for entry_id, _ in entries]

    async def pending(self) -> int:
        """Entries pending in the group (0 once everything is acknowledged)."""
        summary = await self.call(lambda c: c.xpending(self.stream, self.group))
        return int(summary["pending"])

    async def dead_letters(self) -> list[dict[bytes, bytes]]:
        entries = await self.call(lambda c: c.xrange(self.dead))
        return [fields for _, fields in entries]


@asynccontextmanager
async def running_intake(
    settings: IntakeConfig, gateway: OrderGateway, *, id_prefix: str = DEFAULT_PREFIX
) -> AsyncIterator[IntakeService]:
    """The intake as the child of a real supervisor (no restarts: a crash fails the test)."""
    intake = IntakeService(settings, gateway, id_prefix=id_prefix)
    sup = Supervisor(
        "intake-test",
        [ChildSpec("intake", intake.run, shutdown_grace_s=5, heartbeat_interval_s=5)],
        SupervisorPolicy(max_restarts=0),
    )
    async with supervising(sup):
        yield intake
    assert sup.status().total_restarts == 0


async def wait_for(check: Callable[[], Any], what: str, poll_s: float = 0.01) -> Any:
    """Poll ``check`` (sync or async) until truthy; the caller's ``fail_after`` bounds it."""
    while True:
        result = check()
        if hasattr(result, "__await__"):
            result = await result
        if result:
            return result
        await trio.sleep(poll_s)


class FlakyGateway:
    """Order entry that answers 503 to the first ``refusals`` submissions, then delegates."""

    def __init__(self, inner: OrderGateway, refusals: int) -> None:
        self.inner = inner
        self.refusals = refusals
        self.calls = 0

    async def submit(self, request: Mapping[str, Any]) -> Any:
        self.calls += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise EntryUnavailableError("the store is down (test)", retry_after_s=0.05)
        return await self.inner.submit(request)

    async def get(self, client_order_id: str) -> Any:
        return await self.inner.get(client_order_id)

    async def cancel(self, client_order_id: str) -> Any:
        return await self.inner.cancel(client_order_id)

    async def open_orders(self, account: str | None = None) -> Any:
        return await self.inner.open_orders(account)


class RedisProxy:
    """A TCP proxy in front of Redis on 127.0.0.1 (port 0) that a test turns off and on.

    Off: connections are accepted and closed at once (the client sees the
    server go away). :meth:`cut` also closes the connections forwarding now.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.forwarding = False
        self.port = 0
        self._live: set[trio.SocketStream] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def cut(self) -> None:
        for stream in list(self._live):
            await stream.aclose()

    async def _handle(self, client: trio.SocketStream) -> None:
        if not self.forwarding:
            await client.aclose()
            return
        server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        self._live |= {client, server}
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                nursery.start_soon(self._pump, server, client, nursery.cancel_scope)
        finally:
            self._live -= {client, server}
            await client.aclose()
            await server.aclose()

    @staticmethod
    async def _pump(
        source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()
