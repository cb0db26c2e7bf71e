"""The children that wire a server, a probe or a capture to the daemon.

:class:`~daemon.app.Daemon` decides the shape of the tree (which child, in
which order, with which grace and heartbeat); the services run themselves
(``Housekeeping.run``, ``VenueLink.run``, ``StoreService.run``, ...). The
children here only connect one to the daemon, and each gets what it uses,
explicitly:

* :class:`HealthChild` — the loop-lag probe and the systemd watchdog
  (``WATCHDOG=1`` only while not unhealthy, ``STATUS=`` every
  ``health.status_interval_s``).
* :class:`ControlChild` — :func:`daemon.control.serve_control` on the Unix
  control socket, answering with
  :meth:`~daemon.control_commands.ControlCommands.handle`.
* :class:`AdminChild` — the admin HTTP API (:func:`serve_admin_http` over
  :class:`~daemon.admin.api.AdminAPI`), loopback only.
* :class:`MarketDataChild` — ``data/marketdata``: per incarnation, a
  :class:`~daemon.marketdata.service.MarketDataService` over the store open
  now, under its own nested supervisor, with its health checks, metrics and
  queues registered while it runs; the captured books and reference prices
  are read from it.
* :func:`venues_supervisor` — ``venues``: one
  :class:`~daemon.venues.link.VenueLink` child per ``[venues.NAME]``, none
  critical (a venue down degrades health, it does not stop the daemon).

Each one's ``run`` is a :class:`~daemon.supervise.ChildFn`: ready
(``task_status.started()``) once it serves (its server listens, its nested
supervisor has started), and it returns when the supervisor asks it to stop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path

import attrs
import trio

from daemon import config as configmod
from daemon.admin.api import AdminAPI, AdminHost
from daemon.admin.server import serve_admin_http
from daemon.channels import Queues
from daemon.config import AdminConfig
from daemon.control import Handler, serve_control
from daemon.health import HealthModel, LagProbe, WatchdogStats, run_watchdog, supervisor_check
from daemon.marketdata.book import LocalBook
from daemon.marketdata.service import MarketDataService
from daemon.metrics import Registry
from daemon.notify import Notifier
from daemon.store.service import Store
from daemon.supervise import (
    ChildContext,
    ChildSpec,
    Supervisor,
    SupervisorEvent,
    SupervisorPolicy,
)
from daemon.venues.link import VenueLink

__all__ = ["AdminChild", "ControlChild", "HealthChild", "MarketDataChild", "venues_supervisor"]

# The daemon's logger: these lines read as they did when the children were
# methods of the daemon.
log = logging.getLogger("tradingd.app")


@attrs.frozen
class HealthChild:
    """``health``: the loop-lag probe and the watchdog pings, with ``STATUS=`` lines."""

    lag_probe: LagProbe
    notifier: Notifier
    health: HealthModel
    status_line: Callable[[], str]
    #: Read each time (a reload may change ``health.status_interval_s``).
    status_interval_s: Callable[[], float]
    stats: WatchdogStats

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.lag_probe.run)
            await nursery.start(
                lambda task_status: run_watchdog(
                    self.notifier,
                    self.health,
                    status_fn=self.status_line,
                    status_interval_s=self.status_interval_s,
                    stats=self.stats,
                    task_status=task_status,
                )
            )
            task_status.started()
            await ctx.wait_stop_requested()
            nursery.cancel_scope.cancel()


@attrs.frozen
class ControlChild:
    """``control``: the Unix control socket (the path is read at each start)."""

    socket_path: Callable[[], Path]
    handler: Handler

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        path = self.socket_path()
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, self.handler)
            log.info("control socket %s", path)
            task_status.started()
            await ctx.wait_stop_requested()
            nursery.cancel_scope.cancel()


@attrs.frozen
class AdminChild:
    """``admin``: the admin HTTP API on ``[admin] listen`` (read at each start).

    ``on_bound`` is called with the bound (host, port) before the child
    reports ready (``listen`` may ask for port 0).
    """

    host: AdminHost
    settings: Callable[[], AdminConfig]
    on_bound: Callable[[str, int], None]

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        admin = self.settings()
        host, port = configmod.parse_listen(admin.listen)
        api = AdminAPI(self.host)
        async with trio.open_nursery() as nursery:
            try:
                bound = await nursery.start(
                    lambda task_status: serve_admin_http(
                        api.handle,
                        host,
                        port,
                        max_connections=admin.max_connections,
                        max_connections_per_client=admin.max_connections_per_client,
                        reserved_connections=admin.reserved_connections,
                        head_timeout_s=admin.head_timeout_s,
                        reject_log_interval_s=admin.reject_log_interval_s,
                        priority=api.is_priority,
                        evict_waiting=True,
                        host_names=("127.0.0.1", "localhost", "::1", host),
                        task_status=task_status,
                    )
                )
            except OSError as exc:
                raise OSError(
                    exc.errno, f"admin API cannot listen on {host}:{port}: {exc.strerror}"
                ) from exc
            log.info("admin API on http://%s:%d/", bound[0], bound[1])
            self.on_bound(bound[0], bound[1])
            task_status.started()
            await ctx.wait_stop_requested()
            nursery.cancel_scope.cancel()


class MarketDataChild:
    """``data/marketdata``: one incarnation of capture, a nested supervisor over the service.

    Built per incarnation because it binds the store that is open now (a store
    restart restarts this child with the new one: ``rest_for_one``).

    Args:
        wait_store: the store, once open.
        make_service: a new service over that store.
        policy: the nested supervisor's policy now.
        health: gets ``marketdata:NAME`` and ``marketdata-tree:NAME`` while it runs.
        metrics: gets the service's collector while it runs.
        queues: the registry its queues are removed from when it ends.
        on_event: the nested supervisor's events.
    """

    def __init__(
        self,
        *,
        wait_store: Callable[[], Awaitable[Store]],
        make_service: Callable[[Store], MarketDataService],
        policy: Callable[[], SupervisorPolicy],
        health: HealthModel,
        metrics: Registry,
        queues: Queues,
        on_event: Callable[[SupervisorEvent], None],
    ) -> None:
        self._wait_store = wait_store
        self._make_service = make_service
        self._policy = policy
        self._health = health
        self._metrics = metrics
        self._queues = queues
        self._on_event = on_event
        #: The last incarnation's service and supervisor (None before the first).
        self.current: tuple[MarketDataService, Supervisor] | None = None

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        store = await self._wait_store()
        service = self._make_service(store)
        name = service.venue
        sup = Supervisor("marketdata", service.children(), self._policy(), on_event=self._on_event)
        check_name = f"marketdata:{name}"
        tree_check = f"marketdata-tree:{name}"
        self.current = (service, sup)
        self._health.add_check(check_name, service.check)
        self._health.add_check(tree_check, supervisor_check(sup.status))
        self._metrics.register_collector(service.metrics)
        ctx.add_stop_callback(sup.request_stop)
        try:
            await sup.run(task_status=task_status)
        finally:
            self._health.remove_check(check_name)
            self._health.remove_check(tree_check)
            self._metrics.unregister_collector(service.metrics)
            for queue in (service.trades_queue, service.stream_queue):
                self._queues.remove(queue.name)
            self._queues.remove(f"marketdata.{name}.depth")

    def books(self) -> Mapping[str, LocalBook] | None:
        """The captured books by symbol (None before the first incarnation)."""
        return self.current[0].books if self.current is not None else None

    def reference_price(self, venue: str, symbol: str) -> Decimal | None:
        """A recent price: the captured book's mid while it is in sync.

        Pre-trade risk judges MARKET orders' notional by it and centres the
        price bands (PERCENT_PRICE_BY_SIDE) on it; without it (the symbol is
        not captured) the bands are left to the venue.
        """
        if self.current is None:
            return None
        service = self.current[0]
        if service.venue != venue or symbol not in service.books:
            return None
        view = service.books[symbol].latest.value
        return view.mid if view.in_sync else None


def venues_supervisor(
    links: Mapping[str, VenueLink],
    policy: SupervisorPolicy,
    grace_s: float,
    on_event: Callable[[SupervisorEvent], None],
) -> Supervisor:
    """``venues``: a supervisor over one non-critical child per venue link."""
    return Supervisor(
        "venues",
        [
            ChildSpec(f"link:{name}", link.run, shutdown_grace_s=grace_s, critical=False)
            for name, link in links.items()
        ],
        policy,
        on_event=on_event,
    )
