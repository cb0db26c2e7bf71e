"""The daemon: the supervision tree, its lifecycle, signals and reload.

::

    Daemon.run()
    ├── signal loop        SIGTERM/SIGINT → graceful stop; 2nd → hard stop; SIGHUP → reload
    └── root supervisor    (one_for_one)
        ├── health         loop-lag probe, watchdog pings (only while healthy), STATUS=
        ├── housekeeping   state_dir watch, heartbeat (critical)
        ├── control        Unix socket: reload / status / fault hooks
        ├── admin          loopback HTTP: /health /status /metrics
        ├── venues         (one_for_one) one link per [venues.NAME]: time sync, exchangeInfo
        └── data           (rest_for_one) store → market data (feed, ingest writer, snapshots)

Lifecycle: the tree is started child by child (``nursery.start``: started
means ready) under ``daemon.start_timeout_s``; only then ``READY=1``. A stop
request sends ``STOPPING=1`` and asks the root supervisor to stop its children
in reverse order; whatever is still running after ``daemon.shutdown_timeout_s``
is cancelled. Exit status: 0 after a clean stop, 1 after an escalation or a
failed start (with ``ERRNO=`` sent first), 130 after a hard stop.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import attrs
import trio

from daemon import __version__, logs
from daemon import config as configmod
from daemon.admin.api import AdminAPI
from daemon.admin.server import serve_admin_http
from daemon.channels import Queues
from daemon.config import Config
from daemon.control import Args, serve_control, shown
from daemon.errors import ConfigError, ControlError, EscalationError, SecretError
from daemon.faults import FAULT_KINDS, Faults
from daemon.health import (
    BlockedLoopReporter,
    HealthLevel,
    HealthModel,
    HealthThresholds,
    LagProbe,
    SlowStepInstrument,
    WatchdogStats,
    run_watchdog,
    supervisor_check,
)
from daemon.housekeeping import DiskState, Housekeeping
from daemon.marketdata.service import MarketDataService
from daemon.marketdata.settings import MarketDataSettings
from daemon.metrics import MetricFamily, Registry
from daemon.notify import Notifier
from daemon.orders.control import handle_orders_command
from daemon.orders.service import LinkVenues, OrdersService
from daemon.orders.settings import OrdersSettings
from daemon.secrets import Secret, redact_document, redact_urls_in_text, resolve
from daemon.store.service import StoreService
from daemon.strategies import MarketDataPrices, StrategiesService, StrategySpec
from daemon.supervise import (
    ChildContext,
    ChildSpec,
    Strategy,
    Supervisor,
    SupervisorEvent,
    SupervisorPolicy,
)
from daemon.venues.link import VenueLink

log = logging.getLogger("tradingd.app")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_HARD_STOP = 130
#: After a hard stop, time the tree gets to unwind before the process exits anyway.
HARD_STOP_GRACE_S = 5.0
#: Period of EXTEND_TIMEOUT_USEC messages while a long start or drain progresses.
EXTEND_EVERY_S = 5.0


@attrs.frozen
class ReloadResult:
    """Outcome of one reload, as answered to ``tradingd reload``."""

    ok: bool
    origin: str
    errors: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()
    restart_required: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "origin": self.origin,
            "errors": list(self.errors),
            "applied": list(self.applied),
            "restart_required": list(self.restart_required),
        }


def policy_from(config: Config, strategy: Strategy = Strategy.ONE_FOR_ONE) -> SupervisorPolicy:
    sup = config.supervision
    return SupervisorPolicy(
        strategy=strategy,
        max_restarts=sup.max_restarts,
        period_s=sup.period_s,
        backoff_initial_s=sup.backoff_initial_s,
        backoff_max_s=sup.backoff_max_s,
    )


def thresholds_from(config: Config) -> HealthThresholds:
    return HealthThresholds(
        lag_degraded_ms=config.health.lag_degraded_ms,
        lag_unhealthy_ms=config.health.lag_unhealthy_ms,
    )


class Daemon:
    """One tradingd process.

    Args:
        config: the validated configuration.
        notifier: the sd_notify channel (a no-op one outside systemd).
        config_path: the file to re-read on reload; None for an embedded
            configuration (``tradingd demo``), which cannot be reloaded.
        on_admin_bound: called with (host, port) once the admin API listens.
        extra_children: children started after the built-in ones (the
            services later layers add: store, market data, orders, ...).
    """

    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier,
        config_path: Path | None = None,
        on_admin_bound: Callable[[str, int], None] | None = None,
        extra_children: Sequence[ChildSpec] = (),
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.config_path = config_path
        self._on_admin_bound = on_admin_bound
        self.state = "starting"
        self.started_wall = time.time()
        self.metrics = Registry()
        self.queues = Queues()
        self.faults = Faults(enabled=config.testing.fault_injection)
        self.disk = DiskState(min_free_mb=config.health.min_free_disk_mb)
        self.lag_probe = LagProbe(
            interval_s=config.health.lag_probe_interval_s, window_s=config.health.lag_window_s
        )
        self.instrument = SlowStepInstrument(threshold_ms=config.health.slow_step_ms)
        self.health = HealthModel(thresholds_from(config), lag_probe=self.lag_probe)
        self.watchdog_stats = WatchdogStats()
        self.venue_links = {
            name: VenueLink(name, venue) for name, venue in sorted(config.venues.items())
        }
        self.store_service = StoreService(config)
        self.marketdata: tuple[MarketDataService, Supervisor] | None = None
        self.orders = self._build_orders(config)
        self.strategies = self._build_strategies(config)
        self.admin_address: tuple[str, int] | None = None
        self.admin_token: Secret | None = None
        self.last_reload: ReloadResult | None = None
        self._reload_lock = trio.Lock()
        self._root_scope = trio.CancelScope()
        self._root_done = trio.Event()
        self._exit_error: BaseException | None = None
        self._stop_started = False
        self._hard_stop = False
        self._events: list[dict[str, Any]] = []
        self.root = Supervisor(
            "root",
            [*self._children(), *extra_children],
            policy_from(config),
            on_event=self._on_event,
        )
        self.health.add_check("supervision", supervisor_check(self.root.status))
        self.health.add_check("state_dir", self.disk.check)
        self.health.add_check("lifecycle", self._lifecycle_check)
        for name, link in self.venue_links.items():
            self.health.add_check(f"venue:{name}", link.check)
        self.health.add_check("store", self.store_service.check)
        if self.orders is not None:
            self.health.add_check("orders", self.orders.check)
            self.metrics.register_collector(self.orders.metrics)
        if self.strategies is not None:
            self.health.add_check("strategies", self.strategies.check)
        self._counters()

    # ------------------------------------------------------------------ orders

    def _build_orders(self, config: Config) -> OrdersService | None:
        """The order pipeline, when ``[accounts]`` are configured."""
        if not config.accounts:
            return None
        return OrdersService(
            OrdersSettings.from_config(config.orders),
            {name: account.venue for name, account in config.accounts.items()},
            config.limit_table(),
            LinkVenues(self.venue_links),
            self.store_service.wait_store,
            reference_price=self._reference_price,
        )

    def _build_strategies(self, config: Config) -> StrategiesService | None:
        """Enabled strategies; their classes are imported here (a typo fails the start)."""
        specs = [StrategySpec.from_config(name, s) for name, s in config.strategies.items()]
        if not any(spec.enabled for spec in specs):
            return None
        if self.orders is None:
            raise ConfigError("strategies need at least one [accounts.NAME] to trade on")
        return StrategiesService(
            specs,
            gateway=self.orders,
            prices=MarketDataPrices(self._books),
            symbol_info=self._symbol_info,
            on_event=self._on_event,
        )

    def _books(self) -> Any:
        return self.marketdata[0].books if self.marketdata is not None else None

    def _symbol_info(self, symbol: str) -> Any:
        for link in self.venue_links.values():
            info = link.exchange_info
            if info is not None and symbol in info.symbols:
                return info.symbols[symbol]
        return None

    def _reference_price(self, venue: str, symbol: str) -> Any:
        """A recent price: the captured book's mid while it is in sync.

        Pre-trade risk judges MARKET orders' notional by it and centres the
        price bands (PERCENT_PRICE_BY_SIDE) on it; without it (the symbol is
        not captured) the bands are left to the venue.
        """
        if self.marketdata is None:
            return None
        service = self.marketdata[0]
        if service.venue != venue or symbol not in service.books:
            return None
        view = service.books[symbol].latest.value
        return view.mid if view.in_sync else None

    # ------------------------------------------------------------------ tree

    def _children(self) -> list[ChildSpec]:
        cfg = self.config
        grace = cfg.supervision.child_shutdown_grace_s
        housekeeping = Housekeeping(
            state_dir=cfg.daemon.state_dir,
            interval_s=cfg.health.heartbeat_interval_s,
            disk=self.disk,
            faults=self.faults,
        )
        children = [
            ChildSpec("health", self._run_health, shutdown_grace_s=grace),
            ChildSpec(
                "housekeeping",
                housekeeping.run,
                shutdown_grace_s=grace,
                heartbeat_interval_s=cfg.health.heartbeat_interval_s,
                heartbeat_tolerance=cfg.health.heartbeat_tolerance,
            ),
            ChildSpec("control", self._run_control, shutdown_grace_s=grace),
        ]
        if cfg.admin.listen:
            children.append(
                ChildSpec("admin", self._run_admin, shutdown_grace_s=grace, critical=False)
            )
        if self.venue_links:
            venues = Supervisor(
                "venues",
                [
                    ChildSpec(f"link:{name}", link.run, shutdown_grace_s=grace, critical=False)
                    for name, link in self.venue_links.items()
                ],
                policy_from(cfg),
                on_event=self._on_event,
            )
            children.append(venues.as_child(critical=False))
        data = Supervisor(
            "data",
            self._data_children(),
            policy_from(cfg, Strategy.REST_FOR_ONE),
            on_event=self._on_event,
        )
        children.append(data.as_child())
        if self.strategies is not None:
            # After the pipeline: strategies start once orders are reconciled and
            # stop first. A failing strategy only degrades health (see StrategiesService).
            children.append(self.strategies.supervisor().as_child(critical=False))
        return children

    def _data_children(self) -> list[ChildSpec]:
        """The store first; what uses it after (rest_for_one restarts them with it)."""
        grace = self.config.supervision.child_shutdown_grace_s
        children = [ChildSpec("store", self.store_service.run, shutdown_grace_s=grace)]
        if self.orders is not None:
            # After the store (rest_for_one: a store restart restarts the pipeline over
            # the new store), before market data (a capture restart leaves orders alone).
            s = self.orders.settings
            children.append(
                ChildSpec(
                    "orders",
                    self.orders.run,
                    start_timeout_s=s.startup_reconcile_timeout_s + 10.0,
                    shutdown_grace_s=grace + s.drain_timeout_s + s.section_deadline_s,
                )
            )
        if self.config.marketdata.venue:
            settings = MarketDataSettings.from_config(self.config.marketdata)
            children.append(
                ChildSpec(
                    "marketdata",
                    self._run_marketdata,
                    # Reverse-order stop of the feed, then the writer's drain.
                    shutdown_grace_s=grace + settings.drain_timeout_s + 5.0,
                    start_timeout_s=60.0,
                )
            )
        return children

    async def _run_marketdata(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """One incarnation of market-data capture: a nested supervisor over the service.

        Built per incarnation because it binds the store that is open now (a store
        restart restarts this child with the new one: rest_for_one).
        """
        name = self.config.marketdata.venue
        store = await self.store_service.wait_store()
        settings = MarketDataSettings.from_config(self.config.marketdata)
        service = MarketDataService(
            name, self.venue_links[name], store, store.dead_letters, self.queues, settings
        )
        sup = Supervisor(
            "marketdata", service.children(), policy_from(self.config), on_event=self._on_event
        )
        check_name = f"marketdata:{name}"
        tree_check = f"marketdata-tree:{name}"
        self.marketdata = (service, sup)
        self.health.add_check(check_name, service.check)
        self.health.add_check(tree_check, supervisor_check(sup.status))
        self.metrics.register_collector(service.metrics)
        ctx.add_stop_callback(sup.request_stop)
        try:
            await sup.run(task_status=task_status)
        finally:
            self.health.remove_check(check_name)
            self.health.remove_check(tree_check)
            self.metrics.unregister_collector(service.metrics)
            for queue in (service.trades_queue, service.stream_queue):
                self.queues.remove(queue.name)
            self.queues.remove(f"marketdata.{name}.depth")

    async def _run_health(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.lag_probe.run)
            await nursery.start(
                lambda task_status: run_watchdog(
                    self.notifier,
                    self.health,
                    status_fn=self.status_line,
                    status_interval_s=lambda: self.config.health.status_interval_s,
                    stats=self.watchdog_stats,
                    task_status=task_status,
                )
            )
            task_status.started()
            await ctx.wait_stop_requested()
            nursery.cancel_scope.cancel()

    async def _run_control(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        path = self.config.control_socket_path()
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, self._control)
            log.info("control socket %s", path)
            task_status.started()
            await ctx.wait_stop_requested()
            nursery.cancel_scope.cancel()

    async def _run_admin(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        host, port = configmod.parse_listen(self.config.admin.listen)
        api = AdminAPI(self)
        admin = self.config.admin
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
            self.admin_address = (bound[0], bound[1])
            log.info("admin API on http://%s:%d/", bound[0], bound[1])
            if self._on_admin_bound is not None:
                self._on_admin_bound(bound[0], bound[1])
            task_status.started()
            await ctx.wait_stop_requested()
            nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Run until stopped; returns the process exit status."""
        await self._resolve_secrets()
        trio.lowlevel.add_instrument(self.instrument)
        reporter = BlockedLoopReporter(
            self.instrument, threshold_s=self.config.health.blocked_loop_report_s
        )
        reporter.start()
        try:
            return await self._run()
        finally:
            reporter.stop()
            trio.lowlevel.remove_instrument(self.instrument)

    async def _run(self) -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signal_loop)
            start_timeout = self.config.daemon.start_timeout_s
            nursery.start_soon(self._extend_while, "starting", start_timeout)
            try:
                with trio.fail_after(start_timeout):
                    await nursery.start(self._run_root)
            except trio.TooSlowError:
                log.error("the supervision tree did not start within %gs", start_timeout)
                self._exit_error = TimeoutError(f"start took longer than {start_timeout:g}s")
            except Exception as exc:
                # An escalation recorded by _run_root is the real cause; the
                # "returned without calling started()" error is only its echo.
                if self._exit_error is None:
                    log.error("start failed: %s", _describe(exc))
                    self._exit_error = exc
            if self._exit_error is None and not self._stop_started:
                self.state = "running"
                self.notifier.ready(self.status_line())
                log.info("tradingd %s ready (pid %d)", __version__, os.getpid())
                await self._root_done.wait()
            nursery.cancel_scope.cancel()
        return self._exit_code()

    async def _run_root(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with self._root_scope:
                await self.root.run(task_status=task_status)
        except EscalationError as exc:
            log.critical("%s", exc)
            for failure in exc.failures:
                log.error("  %r", failure)
            self._exit_error = exc
        finally:
            self._root_done.set()

    def _exit_code(self) -> int:
        if self._exit_error is not None:
            code = _errno_for(self._exit_error)
            self.notifier.errno(code)
            self.notifier.status(f"failed: {_describe(self._exit_error)}"[:200])
            return EXIT_FAILURE
        if self._hard_stop:
            return EXIT_HARD_STOP
        log.info("stopped cleanly")
        return EXIT_OK

    def request_stop(self, reason: str) -> None:
        """Graceful stop: STOPPING=1, reverse-order stop, cancel after the timeout."""
        if self._stop_started:
            return
        self._stop_started = True
        self.state = "stopping"
        timeout = self.config.daemon.shutdown_timeout_s
        log.info("stopping (%s); draining for at most %gs", reason, timeout)
        self.notifier.stopping(f"stopping ({reason})")
        self._root_scope.deadline = trio.current_time() + timeout
        self.root.request_stop()

    def hard_stop(self, reason: str) -> None:
        """Stop now: cancel everything; exit even if a task cannot be cancelled."""
        self._hard_stop = True
        self._stop_started = True
        self.state = "stopping"
        log.warning("hard stop (%s): cancelling all work now", reason)
        self.notifier.stopping(f"hard stop ({reason})")
        self._root_scope.cancel()

    async def _signal_loop(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        nursery.start_soon(self.reload, name)
                    elif not self._stop_started:
                        self.request_stop(name)
                        timeout = self.config.daemon.shutdown_timeout_s
                        nursery.start_soon(self._extend_while, "stopping", timeout)
                        # Past the drain deadline everything is cancelled; a task
                        # that cannot even be cancelled must not keep us alive.
                        nursery.start_soon(
                            self._exit_if_stuck, timeout + HARD_STOP_GRACE_S, EXIT_FAILURE
                        )
                    else:
                        self.hard_stop(f"second {name}")
                        nursery.start_soon(self._exit_if_stuck, HARD_STOP_GRACE_S, EXIT_HARD_STOP)

    async def _exit_if_stuck(self, delay_s: float, code: int) -> None:
        await trio.sleep(delay_s)
        if not self._root_done.is_set():
            children = list(_walk_children(self.root.status()))
            # The ones being stopped are the ones holding the exit up.
            holding = [
                f"{path} ({child.state.value})"
                for path, child in children
                if child.state.value in ("stopping", "stuck")
            ]
            unfinished = holding or [
                f"{path} ({child.state.value})"
                for path, child in children
                if child.state.value not in ("stopped", "failed")
            ]
            log.critical(
                "tasks did not finish %gs after a %s: %s; exiting now",
                delay_s,
                "hard stop" if code == EXIT_HARD_STOP else "stop request",
                ", ".join(unfinished) or "none found in the tree",
            )
            if code != EXIT_HARD_STOP:
                self.notifier.errno(errno.ETIMEDOUT)
            logging.shutdown()
            os._exit(code)

    async def _extend_while(self, state: str, budget_s: float) -> None:
        """EXTEND_TIMEOUT_USEC while a long start or drain is still progressing."""
        deadline = trio.current_time() + budget_s
        while self.state == state and trio.current_time() < deadline:
            remaining = deadline - trio.current_time()
            self.notifier.extend_timeout(min(remaining, EXTEND_EVERY_S) + EXTEND_EVERY_S)
            await trio.sleep(min(EXTEND_EVERY_S, remaining))

    # ------------------------------------------------------------------ reload

    async def reload(self, origin: str) -> ReloadResult:
        """Re-read the config file; apply what can change live, name the rest."""
        async with self._reload_lock:
            result = await self._reload(origin)
            self.last_reload = result
            return result

    async def _reload(self, origin: str) -> ReloadResult:
        if self.config_path is None:
            log.warning("reload (%s) ignored: running on an embedded configuration", origin)
            return ReloadResult(False, origin, errors=("no configuration file to reload",))
        self.notifier.reloading(f"reloading ({origin})")
        try:
            new, token = await trio.to_thread.run_sync(_load_checked, self.config_path)
        except ConfigError as exc:
            return self._reject_reload(origin, exc.problems)
        except Exception as exc:
            # A reload must never take the daemon down: whatever the file provoked
            # (the loader turns every known failure into ConfigError), the answer is
            # "rejected, still running on the previous configuration".
            log.error("reload (%s): unexpected failure loading the config", origin, exc_info=True)
            problem = f"{self.config_path}: could not be loaded ({type(exc).__name__})"
            return self._reject_reload(origin, (problem,))
        changes = configmod.diff(self.config, new)
        self._apply_live(new, changes.live)
        # Re-read on every reload: rotating the token file (same reference) and
        # reloading must take effect, not only a changed reference.
        self.admin_token = token
        for key in changes.restart:
            log.warning("reload: %s changed; takes effect after a restart", key)
        log.info(
            "reload (%s) applied: %s",
            origin,
            ", ".join(changes.live) or "no live changes",
        )
        result = ReloadResult(True, origin, applied=changes.live, restart_required=changes.restart)
        self.notifier.ready(self.status_line(result))
        return result

    def _reject_reload(self, origin: str, problems: Sequence[str]) -> ReloadResult:
        log.error("reload (%s) rejected, still running on the previous configuration:", origin)
        for problem in problems:
            log.error("  %s", problem)
        result = ReloadResult(False, origin, errors=tuple(problems))
        self.notifier.ready(self.status_line(result))
        return result

    def _apply_live(self, new: Config, keys: tuple[str, ...]) -> None:
        merged = configmod.apply_live(self.config, new, keys)
        self.config = merged
        if self.orders is not None:
            self.orders.apply_config(
                OrdersSettings.from_config(merged.orders), merged.limit_table()
            )
        logs.apply(merged.logging)
        self.health.thresholds = thresholds_from(merged)
        self.lag_probe.interval_s = merged.health.lag_probe_interval_s
        self.lag_probe.window_s = merged.health.lag_window_s
        self.instrument.threshold_ms = merged.health.slow_step_ms
        self.disk.min_free_mb = merged.health.min_free_disk_mb

    async def _resolve_secrets(self) -> None:
        """Read the admin token (file I/O: in a worker thread)."""
        self.admin_token = await trio.to_thread.run_sync(_admin_token, self.config)

    # ------------------------------------------------------------------ control

    async def _control(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one control-socket request (``cmd`` is a non-empty string).

        Arguments of the wrong type or range raise :class:`RequestError`,
        which the server answers ``ok: false`` listing every problem.
        """
        cmd = message["cmd"]
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid(), "version": __version__}
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "reload":
            return (await self.reload("control socket")).to_dict()
        if cmd == "dead-letters":
            return await self._dead_letters(message)
        if cmd in ("trading", "orders"):
            return await handle_orders_command(self.orders, message)
        if cmd == "fault":
            return self._fault(message)
        return {"ok": False, "error": f"unknown command {shown(cmd)}"}

    def _fault(self, message: dict[str, Any]) -> dict[str, Any]:
        args = Args(message, known=("kind", "seconds"))
        kind = args.string("kind", required=True)
        seconds = args.number("seconds", lo=0.001, hi=3600.0, default=30.0)
        args.check()
        if kind not in FAULT_KINDS:
            return {"ok": False, "error": f"unknown fault {shown(kind)}; one of {FAULT_KINDS}"}
        try:
            self.faults.check_allowed()
        except PermissionError as exc:
            return {"ok": False, "error": str(exc)}
        if kind == "block-loop":
            assert seconds is not None
            # Answer first, then block: the CLI should not be the one left hanging.
            trio.lowlevel.spawn_system_task(self._delayed_block, seconds)
        else:
            self.faults.arm_hang_heartbeat()
        return {"ok": True, "fault": kind}

    async def _dead_letters(self, message: dict[str, Any]) -> dict[str, Any]:
        """list / show / purge the durable dead letters (``tradingd dead-letters``)."""
        action = message.get("action")
        if action == "list":
            args = Args(message, known=("action", "source", "after_id", "limit"))
            source = args.string("source")
            after_id = args.integer("after_id")
            # One page: at most 1000 letters (payloads can be large).
            limit = args.integer("limit", lo=1, hi=1000, default=100)
        elif action == "show":
            args = Args(message, known=("action", "id"))
            letter_id = args.integer("id", required=True)
        elif action == "purge":
            args = Args(message, known=("action", "ids", "source", "failed_before", "all"))
            ids = args.integers("ids")
            source = args.string("source")
            before = args.number("failed_before", lo=-1e12, hi=1e12)
            everything = args.flag("all")
        else:
            return {
                "ok": False,
                "error": f"unknown dead-letters action {shown(action)} (one of: list, show, purge)",
            }
        args.check()
        store = self.store_service.store
        if store is None:
            return {"ok": False, "error": "the store is not open"}
        letters = store.dead_letters
        if action == "list":
            assert limit is not None
            found = await letters.list(source=source, after_id=after_id, limit=limit)
            return {"ok": True, "letters": [letter.to_dict() for letter in found]}
        if action == "show":
            assert letter_id is not None
            letter = await letters.get(letter_id)
            if letter is None:
                return {"ok": False, "error": f"no dead letter {letter_id}"}
            return {"ok": True, "letter": letter.to_dict()}
        if not (ids or source or before is not None or everything):
            return {"ok": False, "error": "say which letters: ids, source, age, or all"}
        count = await letters.purge(letter_ids=ids, source=source, failed_before=before)
        log.info("purged %d dead letter(s) on request", count)
        return {"ok": True, "purged": count}

    async def _delayed_block(self, seconds: float) -> None:
        await trio.sleep(0.2)
        await self.faults.block_loop(seconds)

    # ------------------------------------------------------------------ status

    def _lifecycle_check(self) -> tuple[HealthLevel, str | None]:
        if self.state == "starting":
            return HealthLevel.DEGRADED, "starting"
        if self.state == "stopping":
            return HealthLevel.DEGRADED, "stopping"
        return HealthLevel.HEALTHY, None

    def _on_event(self, event: SupervisorEvent) -> None:
        self._events.append(
            {
                "kind": event.kind,
                "supervisor": event.supervisor,
                "child": event.child,
                "error": _describe(event.error) if event.error is not None else None,
                "at": round(event.at, 3),
            }
        )
        del self._events[:-50]
        self._event_counter.inc(kind=event.kind, child=event.child or "")

    def status_line(self, reload: ReloadResult | None = None) -> str:
        """The one-line systemd STATUS=."""
        report = self.health.evaluate()
        tree = self.root.status()
        running = sum(1 for c in tree.children if c.state.value == "running")
        stats = self.lag_probe.stats()
        line = (
            f"{self.state}, {report.level.value}; children {running}/{len(tree.children)} up; "
            f"restarts {tree.total_restarts}; loop lag p99 {stats.p99_ms:.0f}ms"
        )
        last = reload or self.last_reload
        if last is not None and not last.ok:
            line += f"; reload REJECTED ({len(last.errors)} errors), running on previous config"
        if report.level is not HealthLevel.HEALTHY and report.reasons:
            line += f"; {report.reasons[0]}"
        return redact_urls_in_text(line)

    def status_summary(self) -> dict[str, Any]:
        """``GET /status`` (no token): health, lifecycle, supervision, lag and queues.

        Also market-data capture (public data: counts, lag, gaps). Nothing here
        tells what an account holds or intends: orders, positions, switches,
        venues and the rest are in :meth:`status` (``GET /status/full`` with
        the token, and ``tradingd status``). Credentials in URLs are masked.
        """
        report = self.health.evaluate()
        stats = self.lag_probe.stats()
        summary = {
            "version": __version__,
            "pid": os.getpid(),
            "state": self.state,
            "uptime_s": round(time.time() - self.started_wall, 3),
            "config": self.config.source,
            "health": report.to_dict(),
            "supervision": self.root.status().to_dict(),
            "loop_lag": attrs.asdict(stats),
            "queues": self.queues.snapshot(),
            "marketdata": self._marketdata_status(),
            "notify": self._notify_status(),
            "full": "GET /status/full with the bearer token",
        }
        return cast(dict[str, Any], redact_document(summary))

    def _notify_status(self) -> dict[str, Any]:
        return {
            "enabled": self.notifier.enabled,
            "watchdog_interval_s": self.notifier.watchdog_interval_s,
            "watchdog": attrs.asdict(self.watchdog_stats),
        }

    def status(self) -> dict[str, Any]:
        """The whole status document: ``GET /status/full`` (token) and ``tradingd status``.

        Every URL in it has its credentials masked (:func:`daemon.secrets.redact_document`).
        """
        report = self.health.evaluate()
        stats = self.lag_probe.stats()
        doc = {
            "version": __version__,
            "pid": os.getpid(),
            "state": self.state,
            "uptime_s": round(time.time() - self.started_wall, 3),
            "config": self.config.source,
            "health": report.to_dict(),
            "supervision": self.root.status().to_dict(),
            "loop_lag": attrs.asdict(stats),
            "slow_steps": self.instrument.report(),
            "queues": self.queues.snapshot(),
            "venues": {name: link.status() for name, link in self.venue_links.items()},
            "store": self.store_service.status(),
            "marketdata": self._marketdata_status(),
            "orders": self.orders.status() if self.orders is not None else None,
            "strategies": self.strategies.status() if self.strategies is not None else None,
            "admin": {"listen": self.config.admin.listen, "bound": self.admin_address},
            "last_reload": self.last_reload.to_dict() if self.last_reload else None,
            "recent_events": list(self._events[-20:]),
            "notify": self._notify_status(),
        }
        return cast(dict[str, Any], redact_document(doc))

    def _marketdata_status(self) -> dict[str, Any] | None:
        if self.marketdata is None:
            return None
        service, sup = self.marketdata
        return {service.venue: {**service.status(), "supervision": sup.status().to_dict()}}

    def _counters(self) -> None:
        m = self.metrics
        self._event_counter = m.counter(
            "tradingd_supervisor_events", "Supervisor events by kind and child.", ("kind", "child")
        )
        m.register_collector(self._collect)

    def _collect(self) -> Any:
        report = self.health.evaluate()
        stats = self.lag_probe.stats()
        families = [
            MetricFamily.gauge("tradingd_up", "1 while the daemon runs.", [((), 1.0)]),
            MetricFamily.gauge(
                "tradingd_uptime_seconds",
                "Seconds since the process started.",
                [((), time.time() - self.started_wall)],
            ),
            MetricFamily.gauge(
                "tradingd_health",
                "Health level: 0 healthy, 1 degraded, 2 unhealthy.",
                [((), float(_LEVEL_VALUE[report.level]))],
            ),
            MetricFamily.gauge(
                "tradingd_loop_lag_milliseconds",
                "Event-loop lag (sleep drift) over the probe window.",
                [
                    ((("quantile", "0.5"),), stats.p50_ms),
                    ((("quantile", "0.99"),), stats.p99_ms),
                    ((("quantile", "1"),), stats.max_ms),
                ],
            ),
        ]
        restarts: list[tuple[tuple[tuple[str, str], ...], float]] = []
        states: list[tuple[tuple[tuple[str, str], ...], float]] = []
        for path, child in _walk_children(self.root.status()):
            restarts.append(((("child", path),), float(child.restarts)))
            states.append(((("child", path), ("state", child.state.value)), 1.0))
        families.append(
            MetricFamily.counter(
                "tradingd_child_restarts", "Restarts of each supervised child.", restarts
            )
        )
        families.append(
            MetricFamily.gauge("tradingd_child_state", "Current state of each child.", states)
        )
        wd = self.watchdog_stats
        families.append(
            MetricFamily.counter(
                "tradingd_watchdog_pings",
                "systemd watchdog pings by outcome (suppressed while unhealthy).",
                [
                    ((("outcome", "sent"),), float(wd.pings_sent)),
                    ((("outcome", "failed"),), float(wd.pings_failed)),
                    ((("outcome", "suppressed"),), float(wd.pings_suppressed)),
                ],
            )
        )
        depth = [((("queue", q["name"]),), float(q["depth"])) for q in self.queues.snapshot()]
        cap = [((("queue", q["name"]),), float(q["capacity"])) for q in self.queues.snapshot()]
        families.append(MetricFamily.gauge("tradingd_queue_depth", "Items queued.", depth))
        families.append(MetricFamily.gauge("tradingd_queue_capacity", "Queue capacity.", cap))
        return families


_LEVEL_VALUE = {HealthLevel.HEALTHY: 0, HealthLevel.DEGRADED: 1, HealthLevel.UNHEALTHY: 2}


def _walk_children(status: Any, prefix: str = "") -> Any:
    for child in status.children:
        path = f"{prefix}{status.name}/{child.name}"
        yield path, child
        if getattr(child, "supervisor", None) is not None:
            yield from _walk_children(child.supervisor, f"{prefix}{status.name}/")


def _load_checked(path: Path) -> tuple[Config, Secret | None]:
    """Load a config, run the environment checks, read the token (blocking; reload).

    Every problem of the file and of the environment is in the one ConfigError.
    """
    new, problems = configmod.check_file(path)
    if problems or new is None:
        raise ConfigError(problems)
    try:
        return new, _admin_token(new)
    except SecretError as exc:  # changed between the check and the read
        raise ConfigError([f"{new.source}: admin.token: {exc}"]) from None


def _admin_token(config: Config) -> Secret | None:
    ref = config.admin.token
    return resolve(ref) if ref is not None else None


def _root_cause(exc: BaseException) -> BaseException:
    """Follow escalations (to their last failure) and ``raise … from`` chains."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, EscalationError) and exc.failures:
            exc = exc.failures[-1].error
        elif isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            break
    return exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _errno_for(exc: BaseException) -> int:
    """An errno for systemd's ERRNO=, from the root cause of a failure."""
    cause = _root_cause(exc)
    if cause is not exc:
        code = _errno_for(cause)
        if code != errno.ENOTRECOVERABLE:
            return code
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, TimeoutError | trio.TooSlowError):
        return errno.ETIMEDOUT
    if isinstance(exc, ConfigError | SecretError):
        return errno.EINVAL
    if isinstance(exc, ControlError):
        return errno.EADDRINUSE
    return errno.ENOTRECOVERABLE
