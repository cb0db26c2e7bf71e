"""The daemon: the composition root, its supervision tree, its lifecycle and reload.

::

    Daemon.run()
    ├── signal loop        SIGTERM/SIGINT → graceful stop; 2nd → hard stop; SIGHUP → reload
    └── root supervisor    (one_for_one)
        ├── health         loop-lag probe, watchdog pings (only while healthy), STATUS=
        ├── housekeeping   state_dir watch, heartbeat (critical)
        ├── control        Unix socket: reload / status / dead letters / orders / fault hooks
        ├── admin          loopback HTTP: /health /status /metrics /orders
        ├── venues         (one_for_one) one link per [venues.NAME]: time sync, exchangeInfo
        ├── data           (rest_for_one) store → orders → market data (feed, writer, snapshots)
        └── strategies     (one_for_one) one nested supervisor per enabled strategy

Here: :class:`Daemon` builds the components and the tree and hands each what
it uses; :class:`Lifecycle` runs it (start, stop, signals, exit status);
:class:`Reloader` re-reads the configuration. What the daemon answers and
shows lives next door: :mod:`daemon.control_commands` (the control socket),
:mod:`daemon.status` (status documents, ``STATUS=``), :mod:`daemon.app_metrics`
(its own ``/metrics`` families) and :mod:`daemon.children` (the children that
wire a server, a probe or the capture to it, and the venue links' supervisor);
what it builds for trading (the order pipeline over the venue links, the
strategies) in :mod:`daemon.app_trading`.

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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon import __version__, app_metrics, logs
from daemon import config as configmod
from daemon.app_trading import (
    build_intake,
    build_orders,
    build_strategies,
    intake_child,
    orders_child,
)
from daemon.channels import Queues
from daemon.children import (
    AdminChild,
    ControlChild,
    HealthChild,
    MarketDataChild,
    venues_supervisor,
)
from daemon.config import Config, DaemonConfig
from daemon.control_commands import ControlCommands
from daemon.errors import ConfigError, ControlError, EscalationError, SecretError
from daemon.faults import Faults
from daemon.health import (
    BlockedLoopReporter,
    HealthLevel,
    HealthModel,
    HealthThresholds,
    LagProbe,
    SlowStepInstrument,
    WatchdogStats,
    supervisor_check,
)
from daemon.housekeeping import DiskState, Housekeeping
from daemon.marketdata.service import MarketDataService
from daemon.metrics import Registry
from daemon.notify import Notifier
from daemon.resilience import DeadLetterStore
from daemon.secrets import Secret, resolve
from daemon.status import EventLog, describe, full_status, status_line, status_summary
from daemon.store.backup import BackupJobs
from daemon.store.service import Store, StoreService
from daemon.supervise import (
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
    """One tradingd process: the composition root.

    It builds every component once (health, venue links, store, order
    pipeline, strategies, capture), wires them together and into the
    supervision tree, and hands the lifecycle to :class:`Lifecycle` and
    reloads to :class:`Reloader`. Its attributes are what the admin API, the
    status documents and the metrics read.

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
        self.capture = MarketDataChild(
            wait_store=self.store_service.wait_owner,
            make_service=self._marketdata_service,
            policy=lambda: policy_from(self.config),
            health=self.health,
            metrics=self.metrics,
            queues=self.queues,
            on_event=self._on_event,
        )
        self.orders = build_orders(
            config, self.venue_links, self.store_service.wait_owner, self.capture.reference_price
        )
        self.strategies = build_strategies(
            config, self.orders, self.venue_links, self.capture.books, self._on_event
        )
        self.intake = build_intake(config, self.orders)
        self.admin_address: tuple[str, int] | None = None
        self.admin_token: Secret | None = None
        self.reloader = Reloader(
            config_path,
            notifier,
            current=lambda: self.config,
            apply=self._apply_live,
            status_line=self.status_line,
        )
        self.events = EventLog()
        self.control = ControlCommands(
            status=self.status,
            reload=self.reload,
            dead_letters=self._dead_letters,
            orders=self.orders,
            trades=lambda: getattr(self.store_service.owner, "market", None),
            db=BackupJobs(lambda: self.store_service.owner),
            faults=self.faults,
            block_loop=self._delayed_block,
        )
        #: The control socket's handler, under the name tests call it by.
        self._control = self.control.handle
        self.root = Supervisor(
            "root",
            [*self._children(), *extra_children],
            policy_from(config),
            on_event=self._on_event,
        )
        self.lifecycle = Lifecycle(
            self.root,
            notifier,
            settings=lambda: self.config.daemon,
            status_line=self.status_line,
            reload=self.reload,
        )
        self.health.add_check("supervision", supervisor_check(self.root.status))
        self.health.add_check("state_dir", self.disk.check)
        self.health.add_check("lifecycle", self.lifecycle.check)
        for name, link in self.venue_links.items():
            self.health.add_check(f"venue:{name}", link.check)
        self.health.add_check("store", self.store_service.check)
        if self.orders is not None:
            self.health.add_check("orders", self.orders.check)
            self.metrics.register_collector(self.orders.metrics)
        if self.strategies is not None:
            self.health.add_check("strategies", self.strategies.check)
        if self.intake is not None:
            self.health.add_check("intake", self.intake.check)
            self.metrics.register_collector(self.intake.metrics)
        self._count_event = app_metrics.register(self)

    # ------------------------------------------------------------------ components

    @property
    def marketdata(self) -> tuple[MarketDataService, Supervisor] | None:
        """The capture's current service and nested supervisor, if it has started."""
        return self.capture.current

    def _dead_letters(self) -> DeadLetterStore | None:
        store = self.store_service.owner
        return store.dead_letters if store is not None else None

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
        health = HealthChild(
            self.lag_probe,
            self.notifier,
            self.health,
            status_line=self.status_line,
            status_interval_s=lambda: self.config.health.status_interval_s,
            stats=self.watchdog_stats,
        )
        control = ControlChild(self.config.control_socket_path, self.control.handle)
        children = [
            ChildSpec("health", health.run, shutdown_grace_s=grace),
            ChildSpec(
                "housekeeping",
                housekeeping.run,
                shutdown_grace_s=grace,
                heartbeat_interval_s=cfg.health.heartbeat_interval_s,
                heartbeat_tolerance=cfg.health.heartbeat_tolerance,
            ),
            ChildSpec("control", control.run, shutdown_grace_s=grace),
        ]
        if cfg.admin.listen:
            admin = AdminChild(self, lambda: self.config.admin, self._admin_bound)
            children.append(ChildSpec("admin", admin.run, shutdown_grace_s=grace, critical=False))
        if self.venue_links:
            venues = venues_supervisor(self.venue_links, policy_from(cfg), grace, self._on_event)
            children.append(venues.as_child(critical=False))
        data = Supervisor(
            "data",
            self._data_children(),
            policy_from(cfg, Strategy.REST_FOR_ONE),
            on_event=self._on_event,
        )
        children.append(data.as_child())
        if self.intake is not None:
            # After the pipeline: stopped first, so its last submissions are answered.
            children.append(intake_child(self.intake, cfg.supervision.child_shutdown_grace_s))
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
            children.append(orders_child(self.orders, grace))
        if self.config.marketdata.venue:
            settings = self.config.marketdata
            children.append(
                ChildSpec(
                    "marketdata",
                    self.capture.run,
                    # Reverse-order stop of the feed, then the writer's drain.
                    shutdown_grace_s=grace + settings.drain_timeout_s + 5.0,
                    start_timeout_s=60.0,
                )
            )
        return children

    def _marketdata_service(self, store: Store) -> MarketDataService:
        """A new capture service over ``store`` (one per incarnation of ``marketdata``)."""
        name = self.config.marketdata.venue
        settings = self.config.marketdata
        return MarketDataService(
            name, self.venue_links[name], store, store.dead_letters, self.queues, settings
        )

    def _admin_bound(self, host: str, port: int) -> None:
        self.admin_address = (host, port)
        if self._on_admin_bound is not None:
            self._on_admin_bound(host, port)

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> str:
        """``starting``, ``running`` or ``stopping`` (:attr:`Lifecycle.state`)."""
        return self.lifecycle.state

    async def run(self) -> int:
        """Run until stopped; returns the process exit status."""
        await self._resolve_secrets()
        trio.lowlevel.add_instrument(self.instrument)
        reporter = BlockedLoopReporter(
            self.instrument, threshold_s=self.config.health.blocked_loop_report_s
        )
        reporter.start()
        try:
            return await self.lifecycle.run()
        finally:
            reporter.stop()
            trio.lowlevel.remove_instrument(self.instrument)

    def request_stop(self, reason: str) -> None:
        """Graceful stop (:meth:`Lifecycle.request_stop`)."""
        self.lifecycle.request_stop(reason)

    def hard_stop(self, reason: str) -> None:
        """Stop now (:meth:`Lifecycle.hard_stop`)."""
        self.lifecycle.hard_stop(reason)

    # ------------------------------------------------------------------ reload

    @property
    def last_reload(self) -> ReloadResult | None:
        """The outcome of the last reload, if any (:attr:`Reloader.last`)."""
        return self.reloader.last

    async def reload(self, origin: str) -> ReloadResult:
        """Re-read the config file; apply what can change live, name the rest."""
        return await self.reloader.reload(origin)

    def _apply_live(self, new: Config, keys: tuple[str, ...], token: Secret | None) -> None:
        """Hand the live keys of an accepted reload to the components that read them."""
        merged = configmod.apply_live(self.config, new, keys)
        self.config = merged
        if self.orders is not None:
            self.orders.apply_config(merged.orders, merged.limit_table())
        logs.apply(merged.logging)
        self.health.thresholds = thresholds_from(merged)
        self.lag_probe.interval_s = merged.health.lag_probe_interval_s
        self.lag_probe.window_s = merged.health.lag_window_s
        self.instrument.threshold_ms = merged.health.slow_step_ms
        self.disk.min_free_mb = merged.health.min_free_disk_mb
        # Re-read on every reload: rotating the token file (same reference) and
        # reloading must take effect, not only a changed reference.
        self.admin_token = token

    async def _resolve_secrets(self) -> None:
        """Read the admin token (file I/O: in a worker thread)."""
        self.admin_token = await trio.to_thread.run_sync(_admin_token, self.config)

    async def _delayed_block(self, seconds: float) -> None:
        """The ``block-loop`` fault: after the answer is sent, block the loop.

        A method of the daemon on purpose: the blocked-loop report and the slow
        steps name the task by it (``daemon.app.Daemon._delayed_block``).
        """
        await trio.sleep(0.2)
        await self.faults.block_loop(seconds)

    # ------------------------------------------------------------------ status

    def status_line(self, reload: ReloadResult | None = None) -> str:
        """The one-line systemd STATUS= (:func:`daemon.status.status_line`)."""
        return status_line(self, reload)

    def status_summary(self) -> dict[str, Any]:
        """``GET /status`` without the token (:func:`daemon.status.status_summary`)."""
        return status_summary(self)

    def status(self) -> dict[str, Any]:
        """``GET /status/full`` and ``tradingd status`` (:func:`daemon.status.full_status`)."""
        return full_status(self)

    def _on_event(self, event: SupervisorEvent) -> None:
        self.events.record(event)
        self._count_event(event)


class Lifecycle:
    """The life of one daemon: ``starting`` → ``running`` → ``stopping``, and its exit status.

    It starts the root supervisor child by child under
    ``daemon.start_timeout_s`` and sends ``READY=1`` only then; it turns
    SIGTERM/SIGINT into a graceful stop (reverse-order, cancelled after
    ``daemon.shutdown_timeout_s``), a second one into a hard stop, SIGHUP into
    a reload; it keeps systemd's start/stop timeout extended while the start
    or the drain progresses, and exits the process anyway if a task cannot
    even be cancelled.

    Args:
        root: the root supervisor.
        notifier: the sd_notify channel.
        settings: the ``[daemon]`` section now (read at each use: reloads).
        status_line: the ``STATUS=`` line sent with ``READY=1``.
        reload: re-read the configuration (SIGHUP), given the signal's name.
    """

    def __init__(
        self,
        root: Supervisor,
        notifier: Notifier,
        *,
        settings: Callable[[], DaemonConfig],
        status_line: Callable[[], str],
        reload: Callable[[str], Awaitable[object]],
    ) -> None:
        self.root = root
        self.notifier = notifier
        self._settings = settings
        self._status_line = status_line
        self._reload = reload
        self.state = "starting"
        self._root_scope = trio.CancelScope()
        self._root_done = trio.Event()
        self._exit_error: BaseException | None = None
        self._stop_started = False
        self._hard_stop = False

    def check(self) -> tuple[HealthLevel, str | None]:
        """The ``lifecycle`` health check: degraded while starting or stopping."""
        if self.state == "starting":
            return HealthLevel.DEGRADED, "starting"
        if self.state == "stopping":
            return HealthLevel.DEGRADED, "stopping"
        return HealthLevel.HEALTHY, None

    async def run(self) -> int:
        """Start the tree under the start deadline, wait for its end; the exit status."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signal_loop)
            start_timeout = self._settings().start_timeout_s
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
                    log.error("start failed: %s", describe(exc))
                    self._exit_error = exc
            if self._exit_error is None and not self._stop_started:
                self.state = "running"
                self.notifier.ready(self._status_line())
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
            self.notifier.status(f"failed: {describe(self._exit_error)}"[:200])
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
        timeout = self._settings().shutdown_timeout_s
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
                        nursery.start_soon(self._reload, name)
                    elif not self._stop_started:
                        self.request_stop(name)
                        timeout = self._settings().shutdown_timeout_s
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
            children = list(self.root.status().walk())
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


class Reloader:
    """``tradingd reload`` and SIGHUP: re-read the file, apply what can change live.

    One reload at a time. The file and the environment are checked in a
    worker thread (:func:`_load_checked`); a rejected file changes nothing and
    the daemon keeps running on the configuration it has. An accepted one is
    compared with the running configuration (:func:`daemon.config.diff`): the
    live keys go to ``apply`` with the token read again, the others are
    logged as taking effect after a restart. Either way ``READY=1`` is sent
    with a fresh ``STATUS=`` line.

    Args:
        config_path: the file; None for an embedded configuration (``tradingd
            demo``), whose reloads are refused.
        notifier: the sd_notify channel (``RELOADING=1``, ``READY=1``).
        current: the running configuration.
        apply: takes an accepted configuration, its live keys and the token.
        status_line: the ``STATUS=`` line, given the outcome just decided.
    """

    def __init__(
        self,
        config_path: Path | None,
        notifier: Notifier,
        *,
        current: Callable[[], Config],
        apply: Callable[[Config, tuple[str, ...], Secret | None], None],
        status_line: Callable[[ReloadResult], str],
    ) -> None:
        self.config_path = config_path
        self.notifier = notifier
        self._current = current
        self._apply = apply
        self._status_line = status_line
        #: The outcome of the last reload (shown in the status), if any.
        self.last: ReloadResult | None = None
        self._lock = trio.Lock()

    async def reload(self, origin: str) -> ReloadResult:
        """Re-read the config file; apply what can change live, name the rest."""
        async with self._lock:
            result = await self._reload(origin)
            self.last = result
            return result

    async def _reload(self, origin: str) -> ReloadResult:
        if self.config_path is None:
            log.warning("reload (%s) ignored: running on an embedded configuration", origin)
            return ReloadResult(False, origin, errors=("no configuration file to reload",))
        self.notifier.reloading(f"reloading ({origin})")
        try:
            new, token = await trio.to_thread.run_sync(_load_checked, self.config_path)
        except ConfigError as exc:
            return self._reject(origin, exc.problems)
        except Exception as exc:
            # A reload must never take the daemon down: whatever the file provoked
            # (the loader turns every known failure into ConfigError), the answer is
            # "rejected, still running on the previous configuration".
            log.error("reload (%s): unexpected failure loading the config", origin, exc_info=True)
            problem = f"{self.config_path}: could not be loaded ({type(exc).__name__})"
            return self._reject(origin, (problem,))
        changes = configmod.diff(self._current(), new)
        self._apply(new, changes.live, token)
        for key in changes.restart:
            log.warning("reload: %s changed; takes effect after a restart", key)
        log.info(
            "reload (%s) applied: %s",
            origin,
            ", ".join(changes.live) or "no live changes",
        )
        result = ReloadResult(True, origin, applied=changes.live, restart_required=changes.restart)
        self.notifier.ready(self._status_line(result))
        return result

    def _reject(self, origin: str, problems: Sequence[str]) -> ReloadResult:
        log.error("reload (%s) rejected, still running on the previous configuration:", origin)
        for problem in problems:
            log.error("  %s", problem)
        result = ReloadResult(False, origin, errors=tuple(problems))
        self.notifier.ready(self._status_line(result))
        return result


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
