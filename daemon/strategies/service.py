"""Strategies as supervised children: a crash stays inside its strategy.

:class:`StrategiesService` turns the enabled ``[strategies.NAME]`` tables into
one supervisor named ``"strategies"``::

    strategies                        one_for_one, never escalates
    ├── strategy:quote                nested supervisor, TEMPORARY, not critical
    │   └── quote                     the strategy: PERMANENT, heartbeat_interval_s
    └── strategy:grid
        └── grid

Each strategy runs under its own nested supervisor whose restart intensity is
the strategy's (``max_restarts`` within ``restart_period_s``, with exponential
backoff between restarts). When a strategy exceeds it, its supervisor
escalates, and the parent sees a *temporary* child fail: it is not restarted
and is not counted toward the parent's intensity. So a broken strategy stays
stopped, and its siblings, the parent and — above all — the order pipeline
keep running. The daemon's health turns *degraded* (not unhealthy: systemd
must not restart the daemon for a strategy's bug).

Each incarnation gets a fresh :class:`~daemon.strategies.base.StrategyContext`
and a fresh instance. The child reports ready *before* constructing the
instance, so a constructor that raises is an ordinary crash (restarted with
backoff), and a slow or failing strategy never holds up the start of its
siblings or the daemon.

Lead wiring::

    specs = [StrategySpec.from_config(name, cfg) for name, cfg in config.strategies.items()]
    strategies = StrategiesService(                     # loads every class: a typo fails here
        specs, gateway=gateway, prices=MarketDataPrices(get_books), symbol_info=lookup
    )
    root_children.append(strategies.supervisor().as_child(critical=False))
    health.add_check("strategies", strategies.check)
    status["strategies"] = strategies.status()

Why the nested supervisors are *not* linked into the parent's status tree
(``ChildSpec.supervisor`` is left unset): :func:`daemon.health.supervisor_check`
rates any escalated supervisor in the tree as unhealthy, and an escalated
strategy supervisor stays escalated (its temporary child is never re-run), so
one broken strategy would stop the systemd watchdog and restart the daemon.
The parent's own view (a failed non-critical child: degraded) is the right
one; per-strategy detail comes from :meth:`StrategiesService.status`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs
import trio

from daemon.errors import ConfigError, UnexpectedExitError
from daemon.health import HealthLevel
from daemon.model.instruments import SymbolInfo
from daemon.orders.gateway import OrderGateway
from daemon.strategies.base import PriceSource, StrategyContext
from daemon.strategies.loader import load_strategies
from daemon.strategies.spec import StrategySpec
from daemon.supervise import (
    ChildContext,
    ChildFn,
    ChildSpec,
    ChildState,
    ChildStatus,
    EventKind,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEvent,
    SupervisorPolicy,
    SupervisorState,
    SupervisorStatus,
)

__all__ = [
    "STRATEGIES_SUPERVISOR",
    "STRATEGY_BACKOFF_INITIAL_S",
    "STRATEGY_BACKOFF_MAX_S",
    "STRATEGY_CLEANUP_TIMEOUT_S",
    "STRATEGY_START_TIMEOUT_S",
    "StrategiesService",
    "strategy_supervisor_name",
]

log = logging.getLogger("tradingd.strategies")

#: Name of the supervisor holding every strategy.
STRATEGIES_SUPERVISOR: Final = "strategies"
#: A strategy child reports ready at once (before its constructor runs).
STRATEGY_START_TIMEOUT_S: Final = 10.0
#: On stop a strategy's ``run`` is cancelled at once; its ``finally`` blocks get this long.
STRATEGY_CLEANUP_TIMEOUT_S: Final = 5.0
#: First restart delay of a crashed strategy; doubles per restart within the period.
STRATEGY_BACKOFF_INITIAL_S: Final = 1.0
#: Longest restart delay.
STRATEGY_BACKOFF_MAX_S: Final = 30.0


def strategy_supervisor_name(name: str) -> str:
    """``strategy:NAME``: the nested supervisor of one strategy."""
    return f"strategy:{name}"


@attrs.define
class _Runner:
    """The service's record of one configured strategy."""

    spec: StrategySpec
    cls: type | None
    nested: Supervisor | None = None
    stale_heartbeats: int = 0
    last_stale_at: float | None = None


class StrategiesService:
    """Every configured strategy, supervised (see the module docstring).

    Args:
        specs: All ``[strategies.NAME]`` tables (disabled ones are listed in
            status but neither loaded nor run).
        gateway: The in-process order entry every strategy gets.
        prices: Latest order-book views.
        symbol_info: ``symbol_info(symbol)`` → the venue's rules, or ``None``.
        on_event: Observer of every supervisor event of the subtree
            (the ``strategies`` supervisor and each ``strategy:NAME``).
        rng: Source of backoff jitter (seed it for reproducible tests).

    Raises:
        StrategyLoadError: a class cannot be loaded or its options are
            invalid (every problem of every strategy listed).
        ConfigError: two strategies share a name.
    """

    def __init__(
        self,
        specs: Iterable[StrategySpec],
        *,
        gateway: OrderGateway,
        prices: PriceSource,
        symbol_info: Callable[[str], SymbolInfo | None],
        on_event: Callable[[SupervisorEvent], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.specs: tuple[StrategySpec, ...] = tuple(specs)
        names = [spec.name for spec in self.specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError([f"strategies.{name}: defined more than once" for name in duplicates])
        self.gateway = gateway
        self.prices = prices
        self.symbol_info = symbol_info
        self._on_event = on_event
        self._rng = rng if rng is not None else random.Random()
        classes = load_strategies(self.specs)
        self._runners: dict[str, _Runner] = {
            spec.name: _Runner(spec, classes.get(spec.name)) for spec in self.specs
        }
        self._by_supervisor: dict[str, _Runner] = {}
        self._supervisor: Supervisor | None = None

    # ------------------------------------------------------------------ wiring

    @property
    def classes(self) -> Mapping[str, type]:
        """Enabled strategy name → its loaded class."""
        return {name: r.cls for name, r in self._runners.items() if r.cls is not None}

    def supervisor(self) -> Supervisor:
        """The ``strategies`` supervisor (built on first call, the same one after).

        ``one_for_one`` with every child temporary: it never restarts a
        strategy supervisor and so never escalates. Put it under the root as
        ``supervisor().as_child(critical=False)``.
        """
        if self._supervisor is None:
            children = [
                self._strategy_child(runner)
                for runner in self._runners.values()
                if runner.cls is not None
            ]
            self._supervisor = Supervisor(
                STRATEGIES_SUPERVISOR,
                children,
                SupervisorPolicy(strategy=Strategy.ONE_FOR_ONE, fail_fast_start=False),
                rng=random.Random(self._rng.random()),
                on_event=self._observe,
            )
        return self._supervisor

    def _strategy_child(self, runner: _Runner) -> ChildSpec:
        spec = runner.spec
        inner = ChildSpec(
            name=spec.name,
            fn=self._incarnation_fn(runner),
            restart=Restart.PERMANENT,
            start_timeout_s=STRATEGY_START_TIMEOUT_S,
            shutdown_grace_s=0.0,
            cleanup_timeout_s=STRATEGY_CLEANUP_TIMEOUT_S,
            heartbeat_interval_s=spec.heartbeat_interval_s,
            critical=False,
        )
        nested = Supervisor(
            strategy_supervisor_name(spec.name),
            [inner],
            SupervisorPolicy(
                strategy=Strategy.ONE_FOR_ONE,
                max_restarts=spec.max_restarts,
                period_s=spec.restart_period_s,
                backoff_initial_s=STRATEGY_BACKOFF_INITIAL_S,
                backoff_max_s=STRATEGY_BACKOFF_MAX_S,
                fail_fast_start=False,
            ),
            rng=random.Random(self._rng.random()),
            on_event=self._observe,
        )
        runner.nested = nested
        self._by_supervisor[nested.name] = runner
        child = nested.as_child(
            restart=Restart.TEMPORARY,
            start_timeout_s=STRATEGY_START_TIMEOUT_S,
            critical=False,
        )
        # Deliberately unlinked from the parent's status tree: see the module docstring.
        return attrs.evolve(child, supervisor=None)

    def _incarnation_fn(self, runner: _Runner) -> ChildFn:
        spec = runner.spec
        cls = runner.cls
        assert cls is not None

        async def run_strategy(
            ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            strategy_ctx = StrategyContext(
                name=spec.name,
                account=spec.account,
                options=spec.options,
                gateway=self.gateway,
                prices=self.prices,
                symbol_info=self.symbol_info,
                heartbeat_fn=ctx.heartbeat,
                heartbeat_interval_s=spec.heartbeat_interval_s,
            )
            # Ready before the constructor: its failure is a crash like any
            # other, and it never holds up the start of the siblings.
            task_status.started()
            strategy_ctx.log.info(
                "strategy %s (%s) starting, incarnation %d, run id %s",
                spec.name,
                spec.class_path,
                ctx.incarnation,
                strategy_ctx.run_id,
            )
            strategy = cls(strategy_ctx)
            await strategy.run()
            # Raised rather than returned, so that status shows why it is restarted.
            raise UnexpectedExitError(
                f"strategy {spec.name!r}: run() returned; a strategy runs until it is "
                f"stopped, so this counts as a crash"
            )

        return run_strategy

    def _observe(self, event: SupervisorEvent) -> None:
        runner = self._by_supervisor.get(event.supervisor)
        if event.kind is EventKind.STALE_HEARTBEAT and runner is not None:
            runner.stale_heartbeats += 1
            runner.last_stale_at = event.at
        if (
            event.supervisor == STRATEGIES_SUPERVISOR
            and event.child is not None
            and event.kind is EventKind.FAILED
        ):
            name = event.child.removeprefix("strategy:")
            log.error(
                "strategy %s stopped for good (restart intensity exceeded); the other "
                "strategies and the order pipeline keep running. Fix it and restart "
                "the daemon. Last error: %s",
                name,
                self._last_error(name),
            )
        if self._on_event is not None:
            self._on_event(event)

    # ------------------------------------------------------------------ status and health

    def _last_error(self, name: str) -> str | None:
        nested = self._runners[name].nested
        if nested is None:
            return None
        children = nested.status().children
        return children[0].last_error if children else None

    def _parent_children(self) -> dict[str, ChildStatus]:
        if self._supervisor is None:
            return {}
        return {child.name: child for child in self._supervisor.status().children}

    def _status_of(
        self, runner: _Runner, outer: ChildStatus | None
    ) -> tuple[dict[str, Any], ChildStatus | None]:
        spec = runner.spec
        base: dict[str, Any] = {
            "class": spec.class_path,
            "enabled": spec.enabled,
            "account": spec.account,
            "heartbeat_interval_s": spec.heartbeat_interval_s,
            "max_restarts": spec.max_restarts,
            "restart_period_s": spec.restart_period_s,
        }
        if runner.nested is None:
            base.update(
                state="disabled" if not spec.enabled else "not_started",
                restarts=0,
                incarnation=0,
                last_error=None,
                stopped_reason=None,
                heartbeat_age_s=None,
                heartbeat_stale=False,
                stale_heartbeats=runner.stale_heartbeats,
            )
            return base, None
        nested = runner.nested.status()
        inner = nested.children[0]
        base.update(
            state=_state(nested, inner, outer),
            restarts=inner.restarts,
            incarnation=inner.incarnation,
            last_error=inner.last_error,
            stopped_reason=(
                outer.last_error if outer is not None and outer.state is ChildState.FAILED else None
            ),
            heartbeat_age_s=inner.heartbeat_age_s,
            heartbeat_stale=inner.heartbeat_stale,
            stale_heartbeats=runner.stale_heartbeats,
        )
        return base, inner

    def status(self) -> dict[str, dict[str, Any]]:
        """JSON-able status per strategy name.

        ``state`` is ``disabled``, ``not_started``, ``starting``, ``running``,
        ``backoff`` (restarting after a crash), ``stopping``, ``stopped``,
        ``stuck`` or ``failed`` (stopped for good: restart intensity exceeded).
        Also ``restarts``, ``incarnation``, ``last_error`` (the strategy's last
        crash), ``stopped_reason`` (why it stays stopped), the heartbeat's age
        and staleness, and ``stale_heartbeats`` (how often it was found hung).
        """
        parent = self._parent_children()
        return {
            name: self._status_of(runner, parent.get(strategy_supervisor_name(name)))[0]
            for name, runner in self._runners.items()
        }

    def check(self) -> tuple[HealthLevel, str | None]:
        """Health: degraded while a strategy is stopped for good, stuck or hung.

        "Hung" covers a stale heartbeat right now and one found within the
        strategy's ``restart_period_s`` (its supervisor restarts a hung
        strategy at once, so the stale state itself rarely lasts). Never
        unhealthy: strategies are not what the daemon must keep alive.
        """
        now = _now()
        parent = self._parent_children()
        reasons: list[str] = []
        for name, runner in self._runners.items():
            if runner.nested is None:
                continue
            status, inner = self._status_of(runner, parent.get(strategy_supervisor_name(name)))
            state = status["state"]
            if state == "failed":
                reasons.append(
                    f"strategy {name} stopped for good after {status['restarts']} restart(s)"
                    f", last error: {status['last_error']}"
                )
                continue
            if state == "stuck":
                reasons.append(f"strategy {name} is stuck (ignores cancellation)")
            if inner is not None and inner.heartbeat_stale:
                age = inner.heartbeat_age_s
                age_text = f" {age:.1f}s" if age is not None else ""
                reasons.append(f"strategy {name}: heartbeat stale{age_text}")
            elif (
                runner.last_stale_at is not None
                and now is not None
                and now - runner.last_stale_at < runner.spec.restart_period_s
            ):
                reasons.append(
                    f"strategy {name} missed its heartbeat ({runner.stale_heartbeats} time(s), "
                    f"last {now - runner.last_stale_at:.1f}s ago) and was restarted"
                )
        if reasons:
            return HealthLevel.DEGRADED, "; ".join(reasons)
        return HealthLevel.HEALTHY, None


def _state(nested: SupervisorStatus, inner: ChildStatus, outer: ChildStatus | None) -> str:
    if nested.escalated or (outer is not None and outer.state is ChildState.FAILED):
        return "failed"
    if nested.state is SupervisorState.STOPPED and inner.state is ChildState.STOPPED:
        return "stopped" if inner.starts else "not_started"
    return inner.state.value


def _now() -> float | None:
    try:
        return trio.current_time()
    except RuntimeError:
        return None
